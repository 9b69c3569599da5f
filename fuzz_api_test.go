package pagealloc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/bits"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

// An API input is a sequence of calls, each of apiCallBytes bytes; bytes
// past the last whole call, or past apiMaxCalls of them, are ignored:
//
//	0  1  the call (apiCall, modulo apiCalls)
//	1  1  the form: the low five bits pick the call's arguments (valid,
//	      or one kind of bad input), the high three the handle it goes
//	      through (see apiEnded)
//	2  1  which of the harness's things (pages, slots, logs,
//	      reservations, names) the call takes, modulo their number
//	3  1  a length, or a second pick
//	4  8  a number: a size, an offset, a raw Addr word, a perturbation
const (
	apiCallBytes = 12
	apiMaxCalls  = 160
)

// apiCall is the first byte of a call.
type apiCall byte

const (
	apiBegin     apiCall = iota // Device.Begin
	apiCommit                   // Txn.Commit
	apiRollback                 // Txn.Rollback
	apiAlloc                    // Txn.Alloc
	apiFree                     // Txn.Free
	apiTxWrite                  // Txn.Write
	apiWriteAt                  // Device.WriteAt
	apiRead                     // Device.ReadAt, Device.Slice, Txn.ReadAt
	apiSubpages                 // Device.Subpages
	apiSlotAlloc                // Subpages.Alloc
	apiSlotFree                 // Subpages.Free
	apiAppend                   // Log.Append
	apiLogWrite                 // Log.Write
	apiLogCommit                // Log.Commit
	apiLogCancel                // Log.Cancel
	apiLogRead                  // Log.Entries, Log.Read
	apiLogGC                    // Log.SetOwner, Log.GC
	apiCreateLog                // Device.CreateLog
	apiDropLog                  // Device.DropLog
	apiDevice                   // Sync, Check, Stats, Inspect, WalkHeap, Log, Root, Update
	apiReopen                   // Close, every call on the closed device, Open
	apiCalls
)

// The high three bits of a call's form say what the call goes through:
// mostly the open transaction and the current handles of classes and
// logs; these values pick a transaction that has ended, a handle from
// before a reopen or a DropLog, or no transaction at all.
const (
	apiEnded = 6 // an ended transaction, a stale class or log
	apiNil   = 7 // no transaction (Subpages.Alloc and Free)
)

// apiSeed builds an API input.
type apiSeed []byte

// call appends one call: form's low five bits with handle above them.
func (s apiSeed) call(c apiCall, form, handle, pick, length byte, num uint64) apiSeed {
	b := []byte{byte(c), form&31 | handle<<5, pick, length, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint64(b[4:], num)
	return append(s, b...)
}

// c appends a call with the default handle and no number.
func (s apiSeed) c(c apiCall, form, pick, length byte) apiSeed {
	return s.call(c, form, 0, pick, length, 0)
}

// FuzzAPI drives the public API of one small device with sequences of
// calls whose arguments come from the input: valid calls that build up
// state (pages of several sizes, slots of two classes, logs with entries,
// an open transaction), mixed with calls given garbage, perturbed or stale
// arguments. A model of what is live says what each call must return.
// After every call: no panic; an error, if any, is one of the package's
// and the one the documentation promises; a failed call changed nothing
// (the open transaction's state, the committed Stats, the logs' Stats).
// After every commit, every GC, and again after reopening at the end,
// Check passes and the live pages, slots, log entries and known bytes are
// the model's. Log owners may relocate, with GC's transactions committing
// or rolled back as the input has Relocate decide; GC never runs in the
// background, where when it ran would not follow from the input.
func FuzzAPI(f *testing.F) {
	opts := apiOptions(f)
	seeds := []apiSeed{
		{}, // create, reopen, check
		apiPagesSeed(),
		apiSlotsSeed(),
		apiLogSeed(),
		apiCarvedSeed(),
		apiReopenSeed(),
		apiDeviceSeed(),
		apiFullSeed(),
		apiTooLargeSeed(),
		apiRingSeed(),
		apiRelocateSeed(),
		apiBigRelocationsSeed(),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fuzzer has no limit of its own on one input's time: a
		// call that hangs ends the process, which the fuzzer records as
		// a failure with this input.
		hang := time.AfterFunc(time.Minute, func() {
			debug.SetTraceback("all")
			panic("FuzzAPI: an input still running after a minute")
		})
		defer hang.Stop()
		h := newAPIHarness(t, opts)
		for i := 0; i+apiCallBytes <= len(data) && i < apiMaxCalls*apiCallBytes; i += apiCallBytes {
			h.step(data[i : i+apiCallBytes])
		}
		h.finish()
	})
}

// apiOptions returns the options of FuzzAPI's device: 4 KiB to 64 KiB
// pages, the smallest journal, a 4 KiB log laid out at Create, and a
// capacity of eight max pages beyond the heap's metadata, so that the
// heap fills within a few dozen calls.
func apiOptions(tb testing.TB) Options {
	o, err := (&Options{MaxPageSize: 64 << 10, JournalSize: minJournalBytes, MaxSize: 64 << 20,
		LogRegions: []LogRegion{{Name: "fixed", Size: 4096}}}).withDefaults()
	if err != nil {
		tb.Fatal(err)
	}
	store := simstore.New(o.MaxSize)
	defer store.Close()
	d, err := createOn(store, o)
	if err != nil {
		tb.Fatal(err)
	}
	g := d.alloc.g
	if err := d.Close(); err != nil {
		tb.Fatal(err)
	}
	o.MaxSize = g.heapOff + alignUp(g.metaPad, g.maxPageBytes()) + 8*g.maxPageBytes()
	return o
}

// apiModel is what a transaction sees allocated: the caller's pages and
// sub-page slots.
type apiModel struct {
	pages map[Addr]bool
	slots map[Addr]bool
}

func (m apiModel) clone() apiModel {
	return apiModel{pages: cloneSet(m.pages), slots: cloneSet(m.slots)}
}

func cloneSet(s map[Addr]bool) map[Addr]bool {
	c := make(map[Addr]bool, len(s))
	for a := range s {
		c[a] = true
	}
	return c
}

// sortedAddrs returns the members of s in ascending order.
func sortedAddrs(s map[Addr]bool) []Addr {
	out := make([]Addr, 0, len(s))
	for a := range s {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// apiChunkBytes is the granule of apiBytes.
const apiChunkBytes = 4096

type apiChunk struct {
	data  [apiChunkBytes]byte
	valid [apiChunkBytes / 64]uint64
}

// apiBytes is the device bytes the model knows, by offset.
type apiBytes map[int64]*apiChunk

func (b apiBytes) set(off int64, p []byte) {
	for len(p) > 0 {
		ch := b[off/apiChunkBytes]
		if ch == nil {
			ch = new(apiChunk)
			b[off/apiChunkBytes] = ch
		}
		j := off % apiChunkBytes
		n := copy(ch.data[j:], p)
		for i := j; i < j+int64(n); i++ {
			ch.valid[i/64] |= 1 << (i % 64)
		}
		p, off = p[n:], off+int64(n)
	}
}

func (b apiBytes) get(o int64) (byte, bool) {
	ch := b[o/apiChunkBytes]
	if ch == nil {
		return 0, false
	}
	j := o % apiChunkBytes
	return ch.data[j], ch.valid[j/64]>>(j%64)&1 != 0
}

// forget drops what the model knows of [off, off+n).
func (b apiBytes) forget(off, n int64) {
	for base := off &^ (apiChunkBytes - 1); base < off+n; base += apiChunkBytes {
		ch := b[base/apiChunkBytes]
		if ch == nil {
			continue
		}
		lo, hi := max(off, base)-base, min(off+n, base+apiChunkBytes)-base
		for w := lo / 64; w*64 < hi; w++ {
			from, to := max(lo, w*64)-w*64, min(hi, w*64+64)-w*64
			ch.valid[w] &^= spanMask(int(from), int(to))
		}
	}
}

// each calls fn for every known byte in [off, off+n).
func (b apiBytes) each(off, n int64, fn func(o int64, c byte)) {
	for base := off &^ (apiChunkBytes - 1); base < off+n; base += apiChunkBytes {
		ch := b[base/apiChunkBytes]
		if ch == nil {
			continue
		}
		for w, word := range ch.valid {
			for m := word; m != 0; m &= m - 1 {
				o := base + int64(w*64+bits.TrailingZeros64(m))
				if o >= off && o < off+n {
					fn(o, ch.data[o-base])
				}
			}
		}
	}
}

// merge sets in b every byte o knows.
func (b apiBytes) merge(o apiBytes) {
	for k, ch := range o {
		for w, word := range ch.valid {
			for m := word; m != 0; m &= m - 1 {
				j := int64(w*64 + bits.TrailingZeros64(m))
				b.set(k*apiChunkBytes+j, ch.data[j:j+1])
			}
		}
	}
}

// apiLog is a log as the model sees it.
type apiLog struct {
	name    string
	l       *Log
	carved  bool
	ring    region
	entries []*apiEntry // committed and not reclaimed, in order
	live    []*apiRes   // live reservations, in order
	pending []*apiEntry // GC's copies the durable tail has not passed, in order
	owner   apiOwnerKind
	reserve int64 // RelocationReserveBytes in force
}

// apiOwnerKind is what the owner the harness gave a log implements.
type apiOwnerKind int

const (
	ownerNone      apiOwnerKind = iota // no owner: GC is refused
	ownerChecker                       // a GarbageChecker: GC stops at a live entry
	ownerRelocator                     // a Relocator: GC moves live entries
	ownerEnder                         // a RelocationsEnder: told how each transaction ended
)

// apiEntry is a committed entry.
type apiEntry struct {
	pos, next, off int64
	data           []byte
	dead           bool // the owner lets GC reclaim it
}

type apiResState int

const (
	resLive      apiResState = iota
	resCommitted             // Log.Commit returned nil
	resCancelled             // Log.Cancel returned nil
	resLost                  // its device was closed, or its log dropped, while live
)

// apiRes is a reservation from Log.Append.
type apiRes struct {
	r     Reservation
	l     *Log
	lg    *apiLog
	state apiResState
	data  []byte // the payload as the device holds it
}

// apiLogStatus is the state of a *Log handle.
type apiLogStatus int

const (
	logOpen    apiLogStatus = iota
	logDropped              // DropLog removed it
	logStale                // its device was closed
)

// apiOwner answers GC for a log from the model.
type apiOwner struct {
	h  *apiHarness
	lg *apiLog
}

func (o apiOwner) IsLive(off int64, entry []byte) bool {
	for _, e := range o.lg.entries {
		if e.off == off {
			if !bytes.Equal(e.data, entry) {
				o.h.t.Errorf("GC asked about the entry at %d with %d bytes unlike the %d committed", off, len(entry), len(e.data))
			}
			live := !e.dead
			if p := o.h.pass; p != nil {
				p.asked(e, live)
			}
			return live
		}
	}
	o.h.t.Errorf("GC asked about offset %d of log %q, where no committed entry starts", off, o.lg.name)
	return true
}

// apiRelocator is an apiOwner that follows its entries when GC moves them;
// what each Relocate call does comes from the GC call's input.
type apiRelocator struct{ apiOwner }

func (o apiRelocator) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	return o.h.pass.relocate(tx, oldOff, newOff, entry)
}

// apiEnder is an apiRelocator told how each of GC's transactions ended.
type apiEnder struct{ apiRelocator }

func (o apiEnder) RelocationsEnded(err error) {
	switch {
	case err == nil:
		o.h.pass.noTxn("RelocationsEnded(nil)")
	case !errors.Is(err, ErrFailed): // a failed write ends it after the writer's release
		o.h.pass.inTxn("RelocationsEnded of a rolled-back transaction")
	}
	o.h.pass.ended(err)
}

// apiHarness runs one input.
type apiHarness struct {
	t     *testing.T
	opts  Options
	store *simstore.Store
	d     *Device
	geo   superblock
	g     heapGeometry
	calls int
	what  string // the call under way, for messages

	m       apiModel // committed
	known   apiBytes // committed bytes the model knows
	tx      *Txn     // the open transaction, or nil
	w       apiModel // as tx sees it
	txBytes apiBytes // what tx journaled
	ended   []*Txn   // transactions that have ended, newest last

	classes      []*Subpages // by slot size, current handles
	staleClasses []*Subpages
	parents      []region // every sub-page parent seen
	seen         []Addr   // every page and slot handed out
	freed        []Addr   // every page and slot freed

	logs   []*apiLog
	status map[*Log]apiLogStatus
	stale  []*Log    // handles of dropped logs and of closed devices
	res    []*apiRes // recent reservations, newest last
	pass   *apiPass  // the Log.GC call under way, if any
	stamp  byte
}

func newAPIHarness(t *testing.T, opts Options) *apiHarness {
	h := &apiHarness{t: t, opts: opts, status: map[*Log]apiLogStatus{},
		m: apiModel{pages: map[Addr]bool{}, slots: map[Addr]bool{}}, known: apiBytes{}}
	h.store = simstore.New(opts.MaxSize)
	d, err := createOn(h.store, opts)
	if err != nil {
		h.store.Close()
		t.Fatal(err)
	}
	h.setDevice(d)
	t.Cleanup(func() {
		// A fatal check may leave a transaction open, which Close
		// would wait for.
		if h.tx != nil && !h.tx.done {
			h.tx.Rollback()
		}
		h.d.Close()
		h.store.Close()
	})
	return h
}

// setDevice makes d the harness's device and takes the handles of its
// logs and classes.
func (h *apiHarness) setDevice(d *Device) {
	h.d, h.geo, h.g = d, d.geometry, d.alloc.g
	for _, lg := range h.logs {
		l, err := d.Log(lg.name)
		if err != nil {
			h.fatalf("the log %q after reopening: %v", lg.name, err)
		}
		lg.l, lg.live, lg.pending, lg.owner, lg.reserve = l, nil, nil, ownerNone, 0
		h.status[l] = logOpen
	}
	if h.logs == nil {
		l, err := d.Log("fixed")
		if err != nil {
			h.fatalf("the fixed log: %v", err)
		}
		h.logs = []*apiLog{{name: "fixed", l: l, ring: l.ring}}
		h.status[l] = logOpen
	}
	for i, s := range h.classes {
		n, err := d.Subpages(int(s.SlotBytes()))
		if err != nil {
			h.fatalf("the %d-byte class after reopening: %v", s.SlotBytes(), err)
		}
		h.classes[i] = n
	}
}

func (h *apiHarness) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("call %d, %s: %s", h.calls, h.what, fmt.Sprintf(format, args...))
}

// want fails unless err is what the call must return: nil, or an error
// matching want, and in either case none but the package's.
func (h *apiHarness) want(err, want error) {
	switch {
	case want == nil && err != nil:
		h.fatalf("got %v, want success", err)
	case want != nil && !errors.Is(err, want):
		h.fatalf("got %v, want %v", err, want)
	}
	h.typed(err)
}

// wantOneOf fails unless err matches one of wants (nil included if given).
func (h *apiHarness) wantOneOf(err error, wants ...error) {
	for _, w := range wants {
		if w == nil && err == nil || w != nil && errors.Is(err, w) {
			h.typed(err)
			return
		}
	}
	h.fatalf("got %v, want one of %v", err, wants)
}

// typed fails unless err is nil or one of the package's errors.
func (h *apiHarness) typed(err error) {
	if err != nil && !typedError(err) {
		h.fatalf("untyped error %v", err)
	}
}

// pickIndex returns index x of n things, or -1 if there are none.
func pickIndex(x byte, n int) int {
	if n == 0 {
		return -1
	}
	return int(x) % n
}

// data returns n bytes for a write, different from call to call.
func (h *apiHarness) data(n int64, w uint64) []byte {
	h.stamp++
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(w>>(i%8*8)) ^ h.stamp + byte(i)
	}
	return p
}

// step decodes and makes one call.
func (h *apiHarness) step(b []byte) {
	h.calls++
	c := apiCall(b[0] % byte(apiCalls))
	form, handle := int(b[1]&31), int(b[1]>>5)
	x, y := b[2], b[3]
	w := binary.LittleEndian.Uint64(b[4:])
	switch c {
	case apiBegin:
		h.begin()
	case apiCommit:
		h.end(true, handle)
	case apiRollback:
		h.end(false, handle)
	case apiAlloc:
		h.alloc(form, handle, x, w)
	case apiFree:
		h.free(form, handle, x, w)
	case apiTxWrite:
		h.txWrite(form, handle, x, y, w)
	case apiWriteAt:
		h.writeAt(form, x, y, w)
	case apiRead:
		h.read(form, handle, x, y, w)
	case apiSubpages:
		h.subpages(form, w)
	case apiSlotAlloc:
		h.slotAlloc(handle, x)
	case apiSlotFree:
		h.slotFree(form, handle, x, y, w)
	case apiAppend:
		h.appendEntry(form, handle, x, w)
	case apiLogWrite:
		h.logWrite(form, handle, x, y, w)
	case apiLogCommit:
		h.logSeal(false, form, handle, x, y)
	case apiLogCancel:
		h.logSeal(true, form, handle, x, y)
	case apiLogRead:
		h.logRead(form, handle, x, y, w)
	case apiLogGC:
		h.logGC(form, handle, x, w)
	case apiCreateLog:
		h.createLog(form, x, w)
	case apiDropLog:
		h.dropLog(x)
	case apiDevice:
		h.device(form, x, w)
	case apiReopen:
		if h.tx == nil {
			h.reopen(x)
		}
	}
}

// finish ends the open transaction, reopens the device and checks it.
func (h *apiHarness) finish() {
	if h.tx != nil {
		h.end(true, 0)
	}
	h.reopen(0)
}

// ---------------------------------------------------------------------------
// Transactions.

func (h *apiHarness) begin() {
	if h.tx != nil {
		return // Begin would wait for the open transaction: one goroutine cannot
	}
	h.what = "Begin"
	tx, err := h.d.Begin()
	h.want(err, nil)
	h.tx, h.w, h.txBytes = tx, h.m.clone(), apiBytes{}
}

// txFor returns the transaction a call goes through: the open one, or
// with apiEnded (or none open) one that has ended; nil if neither.
func (h *apiHarness) txFor(handle int) (tx *Txn, open bool) {
	if h.tx != nil && handle != apiEnded {
		return h.tx, true
	}
	if n := len(h.ended); n > 0 {
		return h.ended[n-1], false
	}
	return nil, false
}

// closeTx records that the open transaction is over.
func (h *apiHarness) closeTx() {
	h.ended = append(h.ended, h.tx)
	if len(h.ended) > 4 {
		h.ended = h.ended[1:]
	}
	h.tx, h.w, h.txBytes = nil, apiModel{}, nil
}

// end commits or rolls back.
func (h *apiHarness) end(commit bool, handle int) {
	tx, open := h.txFor(handle)
	if tx == nil {
		return
	}
	if !open {
		h.what = "Commit or Rollback of an ended transaction"
		if commit {
			h.want(tx.Commit(), ErrTxDone)
		} else {
			h.want(tx.Rollback(), ErrTxDone)
		}
		return
	}
	if !commit {
		h.what = "Rollback"
		h.want(tx.Rollback(), nil)
		h.closeTx()
		h.verify()
		return
	}
	h.what = "Commit"
	err := tx.Commit()
	// Too large for the journal is the only refusal of a healthy
	// device: the transaction is rolled back.
	h.wantOneOf(err, nil, ErrTooLarge)
	if !tx.done {
		h.fatalf("the transaction is still open after Commit returned %v", err)
	}
	if err == nil {
		h.m = h.w
		h.known.merge(h.txBytes)
	}
	h.closeTx()
	h.verify()
}

// apiTxState is what a transaction has changed, as far as a failed call
// could change it.
type apiTxState struct {
	alloc     allocState
	classes   [subpageClassLimit]subpageClass
	lines     int
	all, user uint64 // digests of the dirty bytes, and of the caller's
}

func snapshotTx(tx *Txn) apiTxState {
	d := tx.d
	var s apiTxState
	s.alloc = d.alloc.last
	if d.alloc.tx == tx {
		s.alloc = d.alloc.work
	}
	set := &d.subpages
	s.classes = set.last
	if set.tx == tx {
		for m := set.touched; m != 0; m &= m - 1 {
			i := bits.TrailingZeros64(m)
			s.classes[i] = set.work[i]
		}
	}
	s.lines = tx.lines.len()
	for _, r := range tx.lines.slots {
		if r.l != nil {
			s.all += lineDigest(r.idx, r.l, r.l.dirty)
			s.user += lineDigest(r.idx, r.l, r.l.dirty&r.l.user)
		}
	}
	return s
}

// lineDigest hashes the bytes of l at idx that mask selects, and the kind
// of each.
func lineDigest(idx int64, l *line, mask uint64) uint64 {
	if mask == 0 {
		return 0
	}
	f := fnv.New64a()
	var b [8 * 4]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(idx))
	binary.LittleEndian.PutUint64(b[8:], mask)
	binary.LittleEndian.PutUint64(b[16:], l.link&mask)
	binary.LittleEndian.PutUint64(b[24:], l.user&mask)
	f.Write(b[:])
	for m := mask; m != 0; m &= m - 1 {
		f.Write(l.data[bits.TrailingZeros64(m):][:1])
	}
	return f.Sum64()
}

// unchanged fails unless a failed call left tx as it was. A call refused
// for want of space may have released pending pages and slots on the way
// (the device's business, not the caller's): then only what the caller
// holds must be the same.
func (h *apiHarness) unchanged(tx *Txn, before apiTxState, err error) {
	after := snapshotTx(tx)
	if !errors.Is(err, ErrNoSpace) {
		switch {
		case after.alloc != before.alloc:
			h.fatalf("failed with %v but changed the allocator state: %+v, was %+v", err, after.alloc, before.alloc)
		case after.classes != before.classes:
			i := 0
			for after.classes[i] == before.classes[i] {
				i++
			}
			h.fatalf("failed with %v but changed sub-page class %d: %+v, was %+v", err, i, after.classes[i], before.classes[i])
		case after != before:
			h.fatalf("failed with %v but changed the transaction's writes: %d lines, was %d", err, after.lines, before.lines)
		}
		return
	}
	if after.alloc.allocPages != before.alloc.allocPages || after.alloc.allocBytes != before.alloc.allocBytes ||
		after.alloc.frontier != before.alloc.frontier || after.user != before.user {
		h.fatalf("failed with %v but changed what the transaction holds: %+v, was %+v", err, after.alloc, before.alloc)
	}
	for i := range after.classes {
		if a, b := after.classes[i], before.classes[i]; a.used != b.used || a.parents != b.parents || a.slotBytes != b.slotBytes {
			h.fatalf("failed with %v but changed sub-page class %d: %+v, was %+v", err, i, a, b)
		}
	}
}

// ---------------------------------------------------------------------------
// Pages.

// pageSize is the page Alloc(size) hands out.
func (h *apiHarness) pageSize(size int64) int64 {
	p := h.g.pageBytes(0)
	for p < size {
		p <<= 1
	}
	return p
}

func (h *apiHarness) alloc(form, handle int, x byte, w uint64) {
	var size int64
	switch form % 8 {
	case 0, 1:
		size = 1 + int64(w%8192)
	case 2, 3:
		size = 1 + int64(w%uint64(h.g.maxPageBytes()))
	case 4:
		size = 0
	case 5:
		size = []int64{-1, math.MinInt64, -int64(w >> 1)}[x%3]
	case 6:
		size = []int64{h.g.maxPageBytes() + 1, math.MaxInt64, h.g.maxPageBytes() + 1 + int64(w>>2)}[x%3]
	case 7:
		size = h.g.pageBytes(int(x) % (h.g.maxOrder + 1))
	}
	tx, open := h.txFor(handle)
	if tx == nil {
		return
	}
	h.what = fmt.Sprintf("Alloc(%d)", size)
	if !open {
		_, err := tx.Alloc(size)
		h.want(err, ErrTxDone)
		return
	}
	before := snapshotTx(tx)
	a, err := tx.Alloc(size)
	switch {
	case size < 1:
		h.want(err, ErrInvalidArgument)
	case size > h.g.maxPageBytes():
		h.want(err, ErrTooLarge)
	default:
		h.wantOneOf(err, nil, ErrNoSpace)
	}
	if err != nil {
		h.unchanged(tx, before, err)
		return
	}
	if a.Size() != h.pageSize(size) || a.Offset()&(a.Size()-1) != 0 || a.Offset() < h.g.heapOff || a.Offset()+a.Size() > h.g.capacity {
		h.fatalf("got %v, want an aligned page of %d bytes in the heap [%d, %d)", a, h.pageSize(size), h.g.heapOff, h.g.capacity)
	}
	h.mustBeFree(region{a.Offset(), a.Size()}, a)
	h.w.pages[a] = true
	h.gained(a)
}

// mustBeFree fails if r, just handed out as a, overlaps anything the model
// holds: a page or slot of the open transaction or of the committed state
// (a page freed meanwhile is pending, not free), a carved ring.
func (h *apiHarness) mustBeFree(r region, a Addr) {
	h.mustMissPages(r, a, "which overlaps")
	for _, m := range []apiModel{h.m, h.w} {
		for b := range m.slots {
			if r.overlaps(b.Offset(), b.Size()) {
				h.fatalf("handed out %v, which overlaps the slot %v, held", a, b)
			}
		}
	}
}

// mustMissPages fails if r, handed out as a (itself, or the parent of a
// slot: where says which), overlaps a page the model holds or a carved
// ring.
func (h *apiHarness) mustMissPages(r region, a Addr, where string) {
	for _, m := range []apiModel{h.m, h.w} {
		for b := range m.pages {
			if r.overlaps(b.Offset(), b.Size()) {
				h.fatalf("handed out %v, %s %v, held", a, where, b)
			}
		}
	}
	for _, lg := range h.logs {
		if lg.ring.overlaps(r.off, r.size) {
			h.fatalf("handed out %v, %s the ring of log %q", a, where, lg.name)
		}
	}
}

// gained records a page or slot the open transaction was handed: its bytes
// are undefined.
func (h *apiHarness) gained(a Addr) {
	h.seen = append(h.seen, a)
	h.known.forget(a.Offset(), a.Size())
	h.txBytes.forget(a.Offset(), a.Size())
}

// pickAddr returns an Addr for Free to be given, by form: one the model
// holds, one it held, one near them, or a word from the input.
func (h *apiHarness) pickAddr(form int, x byte, w uint64) Addr {
	from := func(as []Addr) (Addr, bool) {
		if i := pickIndex(x, len(as)); i >= 0 {
			return as[i], true
		}
		return 0, false
	}
	var a Addr
	ok := false
	switch form % 12 {
	case 0, 1:
		if h.tx != nil {
			a, ok = from(sortedAddrs(h.w.pages))
		}
	case 2:
		if h.tx != nil {
			a, ok = from(sortedAddrs(h.w.slots))
		}
	case 3:
		a, ok = from(sortedAddrs(h.m.pages)) // freed by the open transaction, perhaps
	case 4:
		a, ok = from(h.freed)
	case 5: // a page or slot the open transaction holds, perturbed
		if h.tx != nil {
			if a, ok = from(slices.Concat(sortedAddrs(h.w.pages), sortedAddrs(h.w.slots))); ok {
				a = perturbAddr(a, w, h.g.pageBytes(0))
			}
		}
	case 6: // any page or slot handed out, perturbed
		if a, ok = from(h.seen); ok {
			a = perturbAddr(a, w, h.g.pageBytes(0))
		}
	case 7:
		a, ok = Addr(w), true
	case 8: // a carved ring
		var rings []Addr
		for _, lg := range h.logs {
			if lg.carved {
				rings = append(rings, makeAddr(lg.ring.off, uint(bits.TrailingZeros64(uint64(lg.ring.size)))))
			}
		}
		a, ok = from(rings)
	case 9: // a sub-page parent
		if i := pickIndex(x, len(h.parents)); i >= 0 {
			p := h.parents[i]
			a, ok = makeAddr(p.off, uint(bits.TrailingZeros64(uint64(p.size)))), true
		}
	case 10:
		a, ok = []Addr{0, addrSizeMask, Addr(1) << 63, Addr(h.g.heapOff) | 12, Addr(h.geo.root.off) | 12}[x%5], true
	case 11: // a page of the open transaction's own
		if h.tx != nil {
			var mine []Addr
			for _, b := range sortedAddrs(h.w.pages) {
				if !h.m.pages[b] {
					mine = append(mine, b)
				}
			}
			a, ok = from(mine)
		}
	}
	if !ok {
		return Addr(w)
	}
	return a
}

// perturbAddr returns a changed in one of the ways w picks: its offset
// moved by a page or a slot, or into itself, or a bit of it flipped; its
// size bits up, down or replaced.
func perturbAddr(a Addr, w uint64, minPage int64) Addr {
	off, shift := a.Offset(), uint(a&addrSizeMask)
	switch w % 8 {
	case 0:
		off += minPage
	case 1:
		off -= minPage
	case 2:
		off += a.Size() / 2
	case 3:
		shift++
	case 4:
		shift--
	case 5:
		shift = uint(w>>8) & addrSizeMask
	case 6:
		off ^= 1 << (6 + (w>>8)%40)
	case 7:
		off += a.Size()
	}
	return Addr(uint64(off)&^addrSizeMask | uint64(shift&addrSizeMask))
}

func (h *apiHarness) free(form, handle int, x byte, w uint64) {
	tx, open := h.txFor(handle)
	if tx == nil {
		return
	}
	a := h.pickAddr(form, x, w)
	h.what = fmt.Sprintf("Free(%v)", a)
	if !open {
		h.want(tx.Free(a), ErrTxDone)
		return
	}
	before := snapshotTx(tx)
	err := tx.Free(a)
	if !h.w.pages[a] {
		h.want(err, ErrInvalidFree)
		h.unchanged(tx, before, err)
		return
	}
	h.want(err, nil)
	delete(h.w.pages, a)
	h.freed = append(h.freed, a)
}

// ---------------------------------------------------------------------------
// Writes and reads.

// pickSpan returns a range for a write or read, by form: inside a page or
// slot the model holds, the root area, across a page's end, at the file's
// end, at the edge of a region of the layout, in a parent's header, in a
// reservation's payload, in a carved ring, at a raw offset, in a freed
// page; its length from y (see spanLen).
func (h *apiHarness) pickSpan(form int, x, y byte, w uint64, journaled bool) (off, n int64) {
	n = spanLen(y, w)
	within := func(r region) int64 { // an offset inside r that leaves n bytes if it can
		if n >= 0 && n <= r.size && y&1 == 0 {
			return r.off + int64(w%uint64(r.size-n+1))
		}
		return r.off + int64(w%uint64(r.size))
	}
	addrRegion := func(as []Addr) (region, bool) {
		if i := pickIndex(x, len(as)); i >= 0 {
			return region{as[i].Offset(), as[i].Size()}, true
		}
		return region{}, false
	}
	v := h.view(journaled)
	root := h.geo.root
	switch form % 12 {
	case 0, 1:
		if r, ok := addrRegion(sortedAddrs(v.pages)); ok {
			return within(r), n
		}
	case 2:
		if r, ok := addrRegion(sortedAddrs(v.slots)); ok {
			return within(r), n
		}
	case 3:
		return within(root), n
	case 4: // across the end of a page
		if r, ok := addrRegion(h.seen); ok {
			k := 1 + int64(w%64)
			return r.end() - k, max(n, k+1)
		}
	case 5: // the file's end
		return h.d.size.Load() - int64(w%128), n
	case 6: // the edges of the layout
		edges := []int64{0, superblockSlotBytes, root.off, root.end(), h.geo.journal.off, h.geo.journal.end(),
			h.geo.state.off, h.geo.logs.off, h.logs[0].ring.off, h.logs[0].ring.end(), h.g.heapOff, h.g.heapOff + h.g.metaPad}
		return edges[int(x)%len(edges)] - 32 + int64(w%64), n
	case 7: // a sub-page parent's header and first slots
		if i := pickIndex(x, len(h.parents)); i >= 0 {
			return h.parents[i].off + int64(w%256), n
		}
	case 8: // a reservation's payload
		if len(h.res) > 0 {
			r := h.pickRes(x % byte(len(h.res)))
			if r.state == resLive && y&1 == 0 && n >= 0 && int(n) <= r.r.Size() {
				return r.r.Offset() + int64(w%uint64(r.r.Size()-int(n)+1)), n
			}
			return r.r.Offset() - 8 + int64(w%uint64(r.r.Size()+16)), n
		}
	case 9: // a log's ring
		return within(h.logs[pickIndex(x, len(h.logs))].ring), n
	case 10:
		return int64(w), n
	case 11:
		if r, ok := addrRegion(h.freed); ok {
			return within(r), n
		}
	}
	return within(root), n
}

// spanLen is the length y picks: mostly short, sometimes up to a page or
// a max page, zero, negative or huge.
func spanLen(y byte, w uint64) int64 {
	switch {
	case y < 160:
		return int64(y % 65)
	case y < 224:
		return 1 + int64(w>>32)%4096
	case y < 240:
		return 4096 << (y % 5)
	case y < 248:
		return -1 - int64(y%4)
	default:
		return math.MaxInt64 - int64(y%4)
	}
}

// writeLen bounds a length for a buffer to write or read.
func writeLen(n int64) int64 { return min(max(n, 0), 1<<17) }

func (h *apiHarness) view(journaled bool) apiModel {
	if journaled && h.tx != nil {
		return h.w
	}
	return h.m
}

// liveParents returns the parents of the slots in m.
func liveParents(m apiModel) []region {
	var out []region
	for a := range m.slots {
		if p := (region{parentOf(a), a.Size() * subpageSlotsPerParent}); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// expectWrite returns what a write of n bytes at off must return, journaled
// by the open transaction or in place, and whether the model is sure of it.
// The caller may write its root area (journaled only), a page it holds, a
// slot's bytes in a parent it holds a slot of, and (in place only) a live
// reservation's payload; nothing else, and nothing across two of them.
// Where a parent the model holds no slot of may still be, it cannot say.
func (h *apiHarness) expectWrite(journaled bool, off, n int64) (error, bool) {
	size := h.d.size.Load()
	switch {
	case off < 0 || n < 0 || off > size-n:
		return ErrOutOfRange, true
	case n == 0:
		return nil, false
	case h.geo.root.contains(off, n):
		if journaled {
			return nil, true
		}
		return ErrProtected, true
	case !journaled && h.inLiveReservation(off, n):
		return nil, true
	case off < h.g.heapOff:
		return ErrProtected, true
	}
	for _, lg := range h.logs {
		if lg.ring.overlaps(off, n) {
			return ErrProtected, true
		}
	}
	v := h.view(journaled)
	for a := range v.pages {
		if (region{a.Offset(), a.Size()}).contains(off, n) {
			return nil, true
		}
	}
	parents := liveParents(v)
	for _, p := range parents {
		if p.contains(off, n) {
			switch {
			case off < p.off+subpageHeaderBytes:
				return ErrProtected, true
			case off >= p.off+p.size/subpageSlotsPerParent:
				return nil, true
			}
			return nil, false // the rest of slot 0
		}
	}
	for a := range v.pages {
		if (region{a.Offset(), a.Size()}).overlaps(off, n) {
			return ErrProtected, true
		}
	}
	for _, p := range slices.Concat(parents, h.parents) {
		if p.overlaps(off, n) {
			return nil, false
		}
	}
	return ErrProtected, true
}

// inLiveReservation reports whether [off, off+n) lies inside the payload
// of one live reservation.
func (h *apiHarness) inLiveReservation(off, n int64) bool {
	for _, lg := range h.logs {
		for _, r := range lg.live {
			if (region{r.r.Offset(), int64(r.r.Size())}).contains(off, n) {
				return true
			}
		}
	}
	return false
}

func (h *apiHarness) txWrite(form, handle int, x, y byte, w uint64) {
	tx, open := h.txFor(handle)
	if tx == nil {
		return
	}
	off, n := h.pickSpan(form, x, y, w, true)
	p := h.data(writeLen(n), w)
	if y >= 240 && y < 248 {
		p = nil
	}
	h.what = fmt.Sprintf("Txn.Write(%d, %d bytes)", off, len(p))
	if !open {
		h.want(tx.Write(off, p), ErrTxDone)
		return
	}
	want, sure := h.expectWrite(true, off, int64(len(p)))
	before := snapshotTx(tx)
	err := tx.Write(off, p)
	if sure {
		h.want(err, want)
	} else {
		h.wantOneOf(err, nil, ErrProtected)
	}
	if err != nil {
		h.unchanged(tx, before, err)
		return
	}
	h.txBytes.set(off, p)
	got := make([]byte, len(p))
	if _, err := tx.ReadAt(got, off); len(p) > 0 && (err != nil || !bytes.Equal(got, p)) {
		h.fatalf("the transaction reads back other bytes (%v)", err)
	}
}

func (h *apiHarness) writeAt(form int, x, y byte, w uint64) {
	off, n := h.pickSpan(form, x, y, w, false)
	p := h.data(writeLen(n), w)
	if y >= 240 && y < 248 {
		p = nil
	}
	h.what = fmt.Sprintf("WriteAt(%d bytes, %d)", len(p), off)
	want, sure := h.expectWrite(false, off, int64(len(p)))
	var before []byte
	if off >= 0 && off <= h.d.size.Load()-int64(len(p)) {
		before = make([]byte, len(p))
		h.d.ReadAt(before, off)
	}
	var txBefore apiTxState
	if h.tx != nil {
		txBefore = snapshotTx(h.tx)
	}
	wrote, err := h.d.WriteAt(p, off)
	if sure {
		h.want(err, want)
	} else {
		h.wantOneOf(err, nil, ErrProtected)
	}
	if h.tx != nil {
		h.unchanged(h.tx, txBefore, errors.New("none")) // WriteAt is not the transaction's
	}
	got := make([]byte, len(before))
	if before != nil {
		h.d.ReadAt(got, off)
	}
	if err != nil {
		if wrote != 0 || !bytes.Equal(got, before) {
			h.fatalf("failed with %v but wrote %d bytes", err, wrote)
		}
		return
	}
	if wrote != len(p) || !bytes.Equal(got, p) {
		h.fatalf("wrote %d bytes and ReadAt finds other bytes", wrote)
	}
	h.known.set(off, p)
	for _, lg := range h.logs {
		for _, r := range lg.live {
			if o := off - r.r.Offset(); o >= 0 && o+int64(len(p)) <= int64(r.r.Size()) {
				copy(r.data[o:], p)
			}
		}
	}
}

// liveRegions returns what m holds, and the root area.
func (h *apiHarness) liveRegions(m apiModel) []region {
	out := []region{h.geo.root}
	for _, s := range []map[Addr]bool{m.pages, m.slots} {
		for a := range s {
			out = append(out, region{a.Offset(), a.Size()})
		}
	}
	return out
}

// checkKnown fails unless got, the n bytes at off, hold every byte the
// model knows in the parts of the range that live says are held; layers
// are the bytes known, the later over the earlier.
func (h *apiHarness) checkKnown(what string, got []byte, off int64, live []region, layers ...apiBytes) {
	for _, r := range live {
		lo, hi := max(r.off, off), min(r.end(), off+int64(len(got)))
		if lo >= hi {
			continue
		}
		for i, b := range layers {
			b.each(lo, hi-lo, func(o int64, c byte) {
				for _, above := range layers[i+1:] {
					if _, ok := above.get(o); ok {
						return
					}
				}
				if got[o-off] != c {
					h.fatalf("%s: the byte at %d is %#x, want %#x", what, o, got[o-off], c)
				}
			})
		}
	}
}

func (h *apiHarness) read(form, handle int, x, y byte, w uint64) {
	journaled := handle == 4 || handle == 5
	off, n := h.pickSpan(form, x, y, w, journaled)
	size := h.d.size.Load()
	switch handle {
	case 0, 1, 7:
		p := make([]byte, writeLen(n))
		h.what = fmt.Sprintf("ReadAt(%d bytes, %d)", len(p), off)
		got, err := h.d.ReadAt(p, off)
		h.checkRead(got, err, off, int64(len(p)), size)
		if err == nil || errors.Is(err, io.EOF) {
			h.checkKnown(h.what, p[:got], off, h.liveRegions(h.m), h.known)
		}
	case 2, 3:
		h.what = fmt.Sprintf("Slice(%d, %d)", off, n)
		s, err := h.d.Slice(off, n)
		if off < 0 || n < 0 || off > size-n {
			h.want(err, ErrOutOfRange)
			return
		}
		h.want(err, nil)
		if int64(len(s)) != n || int64(cap(s)) != n {
			h.fatalf("a slice of %d bytes, capacity %d", len(s), cap(s))
		}
		h.checkKnown(h.what, s, off, h.liveRegions(h.m), h.known)
	default: // 4, 5: the open transaction; apiEnded: one that has ended
		tx, open := h.txFor(handle)
		if tx == nil {
			return
		}
		p := make([]byte, writeLen(n))
		h.what = fmt.Sprintf("Txn.ReadAt(%d bytes, %d)", len(p), off)
		got, err := tx.ReadAt(p, off)
		if !open {
			h.want(err, ErrTxDone)
			return
		}
		h.checkRead(got, err, off, int64(len(p)), size)
		if err == nil || errors.Is(err, io.EOF) {
			h.checkKnown(h.what, p[:got], off, h.liveRegions(h.w), h.known, h.txBytes)
		}
	}
}

// checkRead fails unless a read of n bytes at off from a device of size
// bytes returned what io.ReaderAt says it must.
func (h *apiHarness) checkRead(got int, err error, off, n, size int64) {
	switch {
	case off < 0:
		h.want(err, ErrOutOfRange)
	case off >= size:
		if got != 0 || err != io.EOF {
			h.fatalf("got %d bytes and %v, want none and io.EOF", got, err)
		}
	case off+n > size:
		if int64(got) != size-off || err != io.EOF {
			h.fatalf("got %d bytes and %v, want %d and io.EOF", got, err, size-off)
		}
	default:
		if int64(got) != n || err != nil {
			h.fatalf("got %d bytes and %v, want %d", got, err, n)
		}
	}
}

// ---------------------------------------------------------------------------
// Sub-pages.

// apiSlotSizes are the slot sizes Subpages is asked for: the valid ones
// first.
var apiSlotSizes = []int{64, 1024, 256, 0, -64, 32, 96, 100, 2048, 4096, 1 << 30, math.MinInt}

func (h *apiHarness) subpages(form int, w uint64) {
	size := apiSlotSizes[form%len(apiSlotSizes)]
	if form >= len(apiSlotSizes) {
		size = int(int64(w))
	}
	valid := size >= 64 && size <= int(h.g.maxPageBytes()/subpageSlotsPerParent) && size&(size-1) == 0
	i := slices.IndexFunc(h.classes, func(s *Subpages) bool { return s.SlotBytes() == int64(size) })
	if valid && i < 0 && h.tx != nil {
		return // creating a class begins a transaction: one goroutine cannot
	}
	h.what = fmt.Sprintf("Subpages(%d)", size)
	before := h.d.Stats()
	s, err := h.d.Subpages(size)
	if !valid {
		h.want(err, ErrInvalidArgument)
		h.sameStats(before)
		return
	}
	h.want(err, nil)
	if s.SlotBytes() != int64(size) {
		h.fatalf("a class of %d-byte slots", s.SlotBytes())
	}
	if i < 0 {
		h.classes = append(h.classes, s)
		if h.tx == nil {
			h.verify()
		}
	}
}

// sameStats fails unless the committed allocator state is before. The
// file's size is not part of it: a transaction rolled back may have grown
// the file (growth is not journaled), and the frontier still says how much
// of it the heap holds.
func (h *apiHarness) sameStats(before Stats) {
	after := h.d.Stats()
	after.FileSize = before.FileSize
	if !reflect.DeepEqual(after, before) {
		h.fatalf("failed but changed Stats: %+v, was %+v", after, before)
	}
}

// classFor returns the class a slot call goes through: a current one, or
// with apiEnded one from before a reopen; nil if there is none.
func (h *apiHarness) classFor(handle int, x byte) (*Subpages, bool) {
	if handle == apiEnded-1 && len(h.staleClasses) > 0 {
		return h.staleClasses[pickIndex(x, len(h.staleClasses))], false
	}
	if i := pickIndex(x, len(h.classes)); i >= 0 {
		return h.classes[i], true
	}
	return nil, false
}

// slotTx returns the transaction a slot call passes, and the error the
// call must return before looking further, if any.
func (h *apiHarness) slotTx(s *Subpages, current bool, handle int) (*Txn, error, bool) {
	switch {
	case handle == apiNil:
		return nil, ErrInvalidArgument, true
	case handle == apiEnded || h.tx == nil:
		tx, _ := h.txFor(apiEnded)
		if tx == nil {
			return nil, nil, false
		}
		return tx, ErrTxDone, true
	case !current:
		return h.tx, ErrInvalidArgument, true // a transaction of another device
	}
	return h.tx, nil, true
}

func (h *apiHarness) slotAlloc(handle int, x byte) {
	s, current := h.classFor(handle, x)
	if s == nil {
		return
	}
	tx, refused, ok := h.slotTx(s, current, handle)
	if !ok {
		return
	}
	h.what = fmt.Sprintf("Subpages(%d).Alloc", s.SlotBytes())
	if refused != nil {
		_, err := s.Alloc(tx)
		h.want(err, refused)
		return
	}
	before := snapshotTx(tx)
	a, err := s.Alloc(tx)
	h.wantOneOf(err, nil, ErrNoSpace)
	if err != nil {
		h.unchanged(tx, before, err)
		return
	}
	p := region{parentOf(a), s.SlotBytes() * subpageSlotsPerParent}
	if a.Size() != s.SlotBytes() || a.Offset() == p.off || a.Offset()&(a.Size()-1) != 0 || p.off < h.g.heapOff || p.end() > h.g.capacity {
		h.fatalf("got %v, want a slot of %d bytes past the header of a parent in the heap", a, s.SlotBytes())
	}
	if h.w.slots[a] || h.m.slots[a] {
		h.fatalf("handed out %v, held already", a)
	}
	h.mustMissPages(p, a, "in a parent overlapping")
	for b := range h.w.slots {
		if q := (region{parentOf(b), b.Size() * subpageSlotsPerParent}); q != p && q.overlaps(p.off, p.size) {
			h.fatalf("handed out %v in a parent overlapping that of %v", a, b)
		}
	}
	h.w.slots[a] = true
	if !slices.Contains(h.parents, p) {
		h.parents = append(h.parents, p)
	}
	h.gained(a)
}

func (h *apiHarness) slotFree(form, handle int, x, y byte, w uint64) {
	s, current := h.classFor(handle, y)
	if s == nil {
		return
	}
	tx, refused, ok := h.slotTx(s, current, handle)
	if !ok {
		return
	}
	a := h.pickAddr(form, x, w)
	h.what = fmt.Sprintf("Subpages(%d).Free(%v)", s.SlotBytes(), a)
	if refused != nil {
		h.want(s.Free(tx, a), refused)
		return
	}
	before := snapshotTx(tx)
	err := s.Free(tx, a)
	if !h.w.slots[a] || a.Size() != s.SlotBytes() {
		h.want(err, ErrInvalidFree)
		h.unchanged(tx, before, err)
		return
	}
	h.want(err, nil)
	delete(h.w.slots, a)
	h.freed = append(h.freed, a)
}

// ---------------------------------------------------------------------------
// Logs.

// logFor returns the log a call goes through: a current one, or with
// apiEnded a dropped one or one of a closed device; nil if there is none.
func (h *apiHarness) logFor(handle int, x byte) (*Log, *apiLog) {
	if handle == apiEnded && len(h.stale) > 0 {
		return h.stale[pickIndex(x, len(h.stale))], nil
	}
	lg := h.logs[pickIndex(x, len(h.logs))]
	return lg.l, lg
}

// logStats returns the Stats of every log, for a failed call to leave as
// they were.
func (h *apiHarness) logStats() []LogStats {
	var out []LogStats
	for _, lg := range h.logs {
		out = append(out, lg.l.Stats())
	}
	return out
}

func (h *apiHarness) sameLogStats(before []LogStats) {
	if after := h.logStats(); !slices.Equal(after, before) {
		h.fatalf("failed but changed the logs' Stats: %+v, were %+v", after, before)
	}
}

func (h *apiHarness) appendEntry(form, handle int, x byte, w uint64) {
	l, lg := h.logFor(handle, x)
	ring := int64(l.Stats().SizeBytes)
	var size int
	switch form % 8 {
	case 0, 1, 2:
		size = 1 + int(w%200)
	case 3:
		size = 1 + int(w%uint64(ring))
	case 4:
		size = []int{0, -1, math.MinInt}[w%3]
	case 5:
		size = int(ring) - logFrameHeaderBytes - int(w%16) // about the largest
	case 6:
		size = []int{int(ring), math.MaxInt, 1 << 30}[w%3]
	case 7:
		size = int(ring)/2 - int(w%64)
	}
	h.what = fmt.Sprintf("Append(%d) to %q", size, l.Name())
	before := h.logStats()
	r, err := l.Append(size)
	frame := logFrameBytes(int64(size))
	if lg == nil { // dropped, or its device closed
		switch {
		case size < 1:
			h.wantOneOf(err, ErrClosed, ErrInvalidArgument)
		case int64(size) > ring-logFrameHeaderBytes:
			h.wantOneOf(err, ErrClosed, ErrTooLarge)
		default:
			h.want(err, ErrClosed)
		}
		h.sameLogStats(before)
		return
	}
	st := before[slices.Index(h.logs, lg)]
	phys := st.Tail % ring
	pad := int64(0)
	if size > 0 && phys+frame > ring {
		pad = ring - phys
	}
	switch {
	case size < 1:
		h.want(err, ErrInvalidArgument)
	case int64(size) > ring-logFrameHeaderBytes || frame+lg.reserve > ring:
		h.want(err, ErrTooLarge)
	case st.UsedBytes+pad+frame+lg.reserve > ring:
		h.want(err, ErrNoSpace)
	default:
		h.want(err, nil)
	}
	if err != nil {
		h.sameLogStats(before)
		return
	}
	if r.Size() != size || r.Pos() != st.Tail+pad || r.Offset() != lg.ring.off+r.Pos()%ring+logFrameHeaderBytes {
		h.fatalf("got a reservation of %d bytes at %d (offset %d), want %d bytes at %d", r.Size(), r.Pos(), r.Offset(), size, st.Tail+pad)
	}
	if after := l.Stats(); after.Tail != r.Pos()+frame || after.PaddingBytes != st.PaddingBytes+pad {
		h.fatalf("the tail is %d with %d bytes of padding, want %d and %d", after.Tail, after.PaddingBytes, r.Pos()+frame, st.PaddingBytes+pad)
	}
	res := &apiRes{r: r, l: l, lg: lg, data: make([]byte, size)}
	h.d.ReadAt(res.data, r.Offset())
	lg.live = append(lg.live, res)
	h.res = append(h.res, res)
	if len(h.res) > 24 {
		h.res = h.res[1:]
	}
}

// pickRes returns a reservation: one the harness made (live, committed,
// cancelled or lost), the newest for x = 0, or the zero Reservation.
func (h *apiHarness) pickRes(x byte) *apiRes {
	if i := pickIndex(x, len(h.res)+1); i < len(h.res) {
		return h.res[len(h.res)-1-i]
	}
	return &apiRes{state: resLost}
}

// resLog returns the log a reservation call goes through, by y: the
// reservation's own, or another.
func (h *apiHarness) resLog(res *apiRes, handle int, y byte) *Log {
	if handle == apiEnded && len(h.stale) > 0 {
		return h.stale[pickIndex(y, len(h.stale))]
	}
	if res.l != nil && y%4 != 0 {
		return res.l
	}
	return h.logs[pickIndex(y/4, len(h.logs))].l
}

// resRefusal returns the error a call with res through l must return
// before looking further, if any.
func (h *apiHarness) resRefusal(res *apiRes, l *Log) error {
	switch {
	case res.l != l:
		return ErrNotReserved
	case h.status[l] != logOpen:
		return ErrClosed
	case res.state != resLive:
		return ErrNotReserved
	}
	return nil
}

// payload returns n bytes for an entry, shaped by mode: patterned, zero,
// holding a copy of a frame header of lg's (changed in a byte or not), or
// the entry magic at every 8 bytes.
func (h *apiHarness) payload(mode int, n int, w uint64, lg *apiLog) []byte {
	p := h.data(int64(n), w)
	switch mode % 4 {
	case 1:
		clear(p)
	case 2:
		if lg == nil || len(lg.entries) == 0 || n < logFrameHeaderBytes {
			break
		}
		e := lg.entries[int(w>>8)%len(lg.entries)]
		at := int(w>>16) % (n/8 - 2) * 8
		h.d.ReadAt(p[at:at+logFrameHeaderBytes], e.off-logFrameHeaderBytes)
		if w>>40&1 != 0 {
			p[at+int(w>>24)%logFrameHeaderBytes] ^= 1 << (w >> 32 % 8)
		}
	case 3:
		for i := 0; i+4 <= n; i += 8 {
			binary.LittleEndian.PutUint32(p[i:], logEntryMagic)
		}
	}
	return p
}

func (h *apiHarness) logWrite(form, handle int, x, y byte, w uint64) {
	res := h.pickRes(x)
	l := h.resLog(res, handle, y)
	n := res.r.Size()
	switch form % 8 {
	case 5:
		n++
	case 6:
		n--
	case 7:
		n = 0
	}
	p := h.payload(form/8, max(n, 0), w, res.lg)
	if n == 0 && form%2 == 0 {
		p = nil
	}
	h.what = fmt.Sprintf("Log(%q).Write(reservation of %d bytes at %d, %d bytes)", l.Name(), res.r.Size(), res.r.Pos(), len(p))
	before := h.logStats()
	err := l.Write(res.r, p)
	want := h.resRefusal(res, l)
	switch {
	case res.l != l:
	case len(p) != res.r.Size():
		// Refused for its length, or, on a closed log, for that.
		if want == ErrClosed {
			h.wantOneOf(err, ErrInvalidArgument, ErrClosed)
			h.sameLogStats(before)
			return
		}
		want = ErrInvalidArgument
	}
	h.want(err, want)
	if err != nil {
		h.sameLogStats(before)
		return
	}
	res.data = p
}

// logSeal commits or cancels a reservation.
func (h *apiHarness) logSeal(cancel bool, form, handle int, x, y byte) {
	var res *apiRes
	var l *Log
	if form%4 == 0 { // the oldest live reservation of a log, through it
		lg := h.logs[pickIndex(x, len(h.logs))]
		if len(lg.live) == 0 {
			return
		}
		res, l = lg.live[0], lg.l
	} else {
		res = h.pickRes(x)
		l = h.resLog(res, handle, y)
	}
	want := h.resRefusal(res, l)
	if !cancel && want == nil && (h.tx != nil || res.lg.live[0] != res) {
		// Commit waits for the reservations ahead of it, and journals
		// the tail: one goroutine holding them, or a transaction,
		// would wait for ever.
		return
	}
	verb := "Commit"
	if cancel {
		verb = "Cancel"
	}
	h.what = fmt.Sprintf("Log(%q).%s(reservation of %d bytes at %d)", l.Name(), verb, res.r.Size(), res.r.Pos())
	before := h.logStats()
	var err error
	if cancel {
		err = l.Cancel(res.r)
	} else {
		err = l.Commit(res.r)
	}
	h.want(err, want)
	if err != nil {
		h.sameLogStats(before)
		return
	}
	lg := res.lg
	lg.live = slices.DeleteFunc(lg.live, func(r *apiRes) bool { return r == res })
	if cancel {
		res.state = resCancelled
		return
	}
	res.state = resCommitted
	h.settle(lg) // GC's copies before it are durable now too
	e := &apiEntry{pos: res.r.Pos(), next: res.r.Pos() + logFrameBytes(int64(res.r.Size())), off: res.r.Offset(), data: res.data}
	lg.entries = append(lg.entries, e)
	got, err := l.Read(e.off)
	h.what += ", then Read"
	h.want(err, nil)
	if !bytes.Equal(got, e.data) {
		h.fatalf("read back %d other bytes", len(got))
	}
	if st := l.Stats(); st.DurableTail < e.next {
		h.fatalf("the durable tail %d is short of the committed entry's end %d", st.DurableTail, e.next)
	}
	h.verify()
}

func (h *apiHarness) logRead(form, handle int, x, y byte, w uint64) {
	l, lg := h.logFor(handle, x)
	if form%2 == 0 {
		h.entries(l, lg, form/2, y, w)
		return
	}
	var off int64
	var e *apiEntry
	if lg != nil && len(lg.entries) > 0 {
		e = lg.entries[len(lg.entries)-1-pickIndex(y, len(lg.entries))] // the newest for y = 0
	}
	switch k := form / 2 % 8; {
	case k < 2 && e != nil:
		off = e.off
	case k < 4 && e != nil:
		off = e.off + 8*(1+int64(w%64)) // inside the entry, or past it
	case k == 4:
		if r := h.pickRes(y); r.l != nil {
			off = r.r.Offset()
		}
	case k == 5:
		off = l.ring.off + int64(w%uint64(l.ring.size+64)) - 32
	default:
		off = int64(w)
	}
	h.what = fmt.Sprintf("Log(%q).Read(%d)", l.Name(), off)
	got, err := l.Read(off)
	if lg == nil {
		h.want(err, ErrClosed)
		return
	}
	for _, e := range lg.entries {
		if e.off == off {
			h.want(err, nil)
			if !bytes.Equal(got, e.data) {
				h.fatalf("got %d other bytes", len(got))
			}
			return
		}
		if pos := e.pos + off - e.off; pos > e.pos && pos < e.next && lg.forged(pos) {
			h.typed(err) // read as the frame that header begins, as the doc allows
			return
		}
	}
	h.want(err, ErrNotFound)
}

// forged reports whether the payload of one of lg's entries holds, at
// position pos, a frame header of that position: left there by a frame
// written and lost, or copied into the payload. Entries and Read take it
// for a frame.
func (lg *apiLog) forged(pos int64) bool {
	size := lg.ring.size
	for _, e := range lg.entries {
		k := pos - e.pos - logFrameHeaderBytes
		if k < 0 || k+logFrameHeaderBytes > int64(len(e.data)) {
			continue
		}
		if _, err := parseLogFrame(e.data[k:k+logFrameHeaderBytes], uint64(pos), size-pos%size, 0); err == nil {
			return true
		}
	}
	return false
}

// entries walks a log from a position picked by kind and checks what it
// yields against the model.
func (h *apiHarness) entries(l *Log, lg *apiLog, kind int, y byte, w uint64) {
	st := l.Stats()
	var from int64
	var e *apiEntry
	if lg != nil && len(lg.entries) > 0 {
		e = lg.entries[len(lg.entries)-1-pickIndex(y, len(lg.entries))] // the newest for y = 0
	}
	switch kind % 8 {
	case 0:
		from = 0
	case 1:
		from = st.Head
	case 2:
		if e != nil {
			from = e.pos
		}
	case 3:
		if e != nil {
			from = e.pos + 8*(1+int64(w%uint64((e.next-e.pos)/8))) // inside it, or at its end
		}
	case 4:
		from = st.DurableTail + int64(w%3)*8
	case 5:
		if r := h.pickRes(y); r.l != nil {
			from = r.r.Pos()
		}
	case 6:
		from = -int64(w % 1000)
	case 7:
		from = int64(w)
	}
	h.what = fmt.Sprintf("Log(%q).Entries(%d)", l.Name(), from)
	var got []Entry
	var err error
	for en, e := range l.Entries(from) {
		if e != nil {
			err = e
			break
		}
		got = append(got, Entry{Pos: en.Pos, Next: en.Next, Offset: en.Offset, Data: slices.Clone(en.Data)})
	}
	if lg == nil {
		h.want(err, ErrClosed)
		return
	}
	var want []*apiEntry
	inside := false
	for _, e := range lg.entries {
		if e.pos >= from || from <= st.Head {
			want = append(want, e)
		}
		inside = inside || from > e.pos && from < e.next
	}
	if inside {
		if lg.forged(from) {
			h.typed(err) // the walk starts at that header, as the doc allows
			return
		}
		h.want(err, ErrInvalidArgument)
		return
	}
	h.typed(err)
	if err != nil {
		if from >= st.Head && from < st.DurableTail && !slices.ContainsFunc(lg.entries, func(e *apiEntry) bool { return e.pos == from }) {
			return // not an entry's position: padding, or inside padding
		}
		h.fatalf("got %v", err)
	}
	if len(got) != len(want) {
		h.fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i, e := range want {
		if g := got[i]; g.Pos != e.pos || g.Next != e.next || g.Offset != e.off || !bytes.Equal(g.Data, e.data) {
			h.fatalf("entry %d is at %d..%d offset %d with %d bytes, want %d..%d offset %d with %d", i, g.Pos, g.Next, g.Offset, len(g.Data), e.pos, e.next, e.off, len(e.data))
		}
	}
}

// logGC sets a log's owner, marks an entry dead, or collects.
func (h *apiHarness) logGC(form, handle int, x byte, w uint64) {
	l, lg := h.logFor(handle, x)
	size := l.Stats().SizeBytes
	h.what = fmt.Sprintf("Log(%q)", l.Name())
	switch form % 8 {
	case 0, 1: // the model's owner, background GC off
		o := &LogOptions{GCThresholdBytes: -1}
		switch w % 5 {
		case 1:
			o.RelocationReserveBytes = int64(w>>8) % size
		case 2:
			o.RelocationReserveBytes = -int64(w >> 8 % 100)
		case 3:
			o.RelocationReserveBytes = size + int64(w>>8%2)
		case 4:
			o.GCThresholdBytes = size + 1 + int64(w>>8%100)
		}
		kind := []apiOwnerKind{ownerChecker, ownerRelocator, ownerEnder, ownerEnder}[form/8]
		var owner GarbageChecker = apiOwner{h, lg}
		switch kind {
		case ownerRelocator:
			owner = apiRelocator{apiOwner{h, lg}}
		case ownerEnder:
			owner = apiEnder{apiRelocator{apiOwner{h, lg}}}
		}
		h.what += fmt.Sprintf(".SetOwner(%T, %+v)", owner, *o)
		err := l.SetOwner(owner, o)
		switch {
		case o.RelocationReserveBytes >= size || o.GCThresholdBytes > size:
			h.want(err, ErrInvalidArgument)
		case lg == nil:
			h.want(err, ErrClosed)
		default:
			h.want(err, nil)
			lg.owner, lg.reserve = kind, max(o.RelocationReserveBytes, 0)
			if o.RelocationReserveBytes == 0 && kind >= ownerRelocator {
				lg.reserve = size / 8 // the default for a Relocator
			}
		}
	case 2: // no owner
		h.what += ".SetOwner(nil, nil)"
		err := l.SetOwner(nil, nil)
		if lg == nil {
			h.want(err, ErrClosed)
			return
		}
		h.want(err, nil)
		lg.owner, lg.reserve = ownerNone, 0
	case 3, 4: // the owner lets an entry go
		if lg != nil && len(lg.entries) > 0 {
			lg.entries[int(w%uint64(len(lg.entries)))].dead = true
		}
	case 5, 6, 7:
		if h.tx != nil {
			return // GC runs transactions of its own
		}
		if lg != nil && lg.owner >= ownerRelocator && len(lg.live) > 0 && form%8 != 7 {
			return // GC's copies would wait for the reservations before them
		}
		h.gc(l, lg, form, w)
	}
}

// errAPIRelocate is what a failing Relocate returns, or panics with.
var errAPIRelocate = errors.New("the owner's Relocate fails")

// gc runs Log.GC: with a context, none, or a cancelled one, by form; w
// says what the owner's Relocate calls do, and form whether a failing
// one panics.
func (h *apiHarness) gc(l *Log, lg *apiLog, form int, w uint64) {
	ctx := context.Background()
	kind := form % 8
	cancelled := kind == 7
	if cancelled {
		c, cancel := context.WithCancel(ctx)
		cancel()
		ctx = c
	}
	if kind == 6 {
		ctx = nil
	}
	h.what = fmt.Sprintf("Log(%q).GC(cancelled %v, Relocate outcomes %#x)", l.Name(), cancelled, w)
	before := h.d.Stats()
	st := l.Stats()
	if lg != nil {
		h.pass = &apiPass{h: h, lg: lg, w: w, panics: form/8 == 3, tail: st.Tail}
	}
	err, recovered := runGC(l, ctx)
	p := h.pass
	h.pass = nil
	switch {
	case lg == nil:
		h.want(err, ErrClosed)
		return
	case lg.owner == ownerNone:
		h.want(err, ErrInvalidArgument)
		h.sameStats(before)
		return
	case p.problem != "":
		h.fatalf("%s", p.problem)
	case recovered != nil && (recovered != errAPIRelocate || !p.failed || !p.panics):
		panic(recovered)
	}
	head := st.DurableTail
	if p.stopped != nil {
		head = p.stopped.pos
	}
	switch {
	case p.failed && p.panics:
		if recovered == nil {
			h.fatalf("got %v, want Relocate's panic to reach GC's caller", err)
		}
		head = p.txHead
		p.rolledBack()
	case p.failed:
		if !errors.Is(err, errAPIRelocate) {
			h.fatalf("got %v, want the error Relocate returned", err)
		}
		head = p.txHead
		p.rolledBack()
	case cancelled && st.Head != st.DurableTail:
		if !errors.Is(err, context.Canceled) {
			h.fatalf("got %v, want context.Canceled", err)
		}
		head = st.Head
	case p.tooLarge(err):
		head = p.txHead
		p.rolledBack()
	default:
		h.want(err, nil)
	}
	if p.tx != nil {
		if lg.owner == ownerEnder {
			h.fatalf("GC returned without RelocationsEnded for its last transaction")
		}
		// A plain Relocator learns how the last transaction ended from
		// what GC returned.
		switch {
		case p.failed:
			p.ended(errAPIRelocate)
		case err != nil:
			p.ended(err)
		default:
			p.ended(nil)
		}
		if p.problem != "" {
			h.fatalf("%s", p.problem)
		}
	}
	h.collected(l, lg, p, st, head)
}

// runGC runs l.GC and returns what it returned, or what it panicked with.
func runGC(l *Log, ctx context.Context) (err error, recovered any) {
	defer func() { recovered = recover() }()
	return l.GC(ctx), nil
}

// collected checks a log after GC against the model, the head GC must
// have left at head: no live entry before it, the tail past every copy GC
// made and the counters agreeing, every relocated entry durable at its new
// place; then the model forgets the entries before the head.
func (h *apiHarness) collected(l *Log, lg *apiLog, p *apiPass, st LogStats, head int64) {
	after := l.Stats()
	switch {
	case after.Head != head:
		h.fatalf("the head is at %d after GC, want %d", after.Head, head)
	case after.Tail != p.tail:
		h.fatalf("the tail is at %d after GC, want %d past its copies", after.Tail, p.tail)
	case after.Relocations-st.Relocations != int64(p.copies):
		h.fatalf("Stats counts %d relocations, want the %d copies GC made", after.Relocations-st.Relocations, p.copies)
	case after.RelocatedBytes-st.RelocatedBytes != p.tail+p.retracted-st.Tail:
		h.fatalf("Stats counts %d bytes relocated, want the %d its copies took", after.RelocatedBytes-st.RelocatedBytes, p.tail+p.retracted-st.Tail)
	case after.PaddingBytes-st.PaddingBytes != p.pads:
		h.fatalf("Stats counts %d bytes of padding more, want the %d before GC's copies", after.PaddingBytes-st.PaddingBytes, p.pads)
	case after.ReclaimedBytes-st.ReclaimedBytes != head-st.Head:
		h.fatalf("Stats counts %d bytes reclaimed, want %d", after.ReclaimedBytes-st.ReclaimedBytes, head-st.Head)
	}
	for _, e := range lg.entries {
		if e.pos < head && !e.dead {
			h.fatalf("GC moved the head to %d past the live entry at %d", head, e.pos)
		}
	}
	lg.entries = slices.DeleteFunc(lg.entries, func(e *apiEntry) bool { return e.pos < head })
	h.settle(lg)
	for _, e := range lg.pending {
		if !e.dead {
			h.fatalf("the entry relocated to %d is not durable: the durable tail is %d", e.pos, after.DurableTail)
		}
	}
	h.verify()
}

// settle moves GC's copies that the durable tail has passed into the
// entries.
func (h *apiHarness) settle(lg *apiLog) {
	end := lg.l.Stats().DurableTail
	n := 0
	for n < len(lg.pending) && lg.pending[n].next <= end {
		n++
	}
	lg.entries = append(lg.entries, lg.pending[:n]...)
	lg.pending = slices.Delete(lg.pending, 0, n)
}

// apiPass is one Log.GC call as the owner's callbacks follow it: GC asks
// about the entries from the head on; for each live one it copies it to
// the tail, if the owner relocates and there is room, or else stops; it
// tells the owner of a chunk's copies in one transaction, which moves the
// head past them.
type apiPass struct {
	h         *apiHarness
	lg        *apiLog
	w         uint64    // what the Relocate calls do, three bits each
	panics    bool      // a failing Relocate panics rather than return an error
	calls     int       // Relocate calls so far
	txCalls   int       // Relocate calls in tx
	txWrote   int       // bytes tx's Relocate calls journaled
	allocs    []Addr    // pages tx's Relocate calls allocated
	tail      int64     // where the next copy goes
	copies    int       // copies made
	pads      int64     // padding before them
	txStart   int64     // where tx's copies start, padding included
	retracted int64     // bytes of copies given back when tx rolled back
	stopped   *apiEntry // the live entry last found with no room for its copy
	queue     []apiMove // copies Relocate has not been told of yet, in order
	tx        *Txn      // the transaction of the latest Relocate calls, until it is known to have ended
	txHead    int64     // the head while tx is open
	moves     []apiMove // relocations that stand once tx commits
	bytes     apiBytes  // what tx's Relocate calls journaled
	failed    bool      // a Relocate failed, which ends GC
	problem   string    // the first breach of the contract a callback saw
}

// apiMove is a copy of a live entry; start is where its span starts,
// padding included.
type apiMove struct {
	from, to *apiEntry
	start    int64
}

// fail records a breach of the contract: the callbacks run inside GC,
// which a fatal check would leave half way, so gc reports it on return.
func (p *apiPass) fail(format string, args ...any) {
	if p.problem == "" {
		p.problem = fmt.Sprintf(format, args...)
	}
}

// sawHead checks the head GC left while asking about or relocating the
// entry at pos: at or before it, and never inside an entry.
func (p *apiPass) sawHead(head, pos int64) {
	if head > pos {
		p.fail("GC at the entry at %d with the head past it at %d", pos, head)
	}
	for _, e := range p.lg.entries {
		if head > e.pos && head < e.next {
			p.fail("the head at %d is inside the entry at %d..%d", head, e.pos, e.next)
		}
	}
}

// noTxn checks that GC calls the owner's callback what with no
// transaction open: the writer slot is free.
func (p *apiPass) noTxn(what string) {
	if !writerFree(p.h.d) {
		p.fail("%s called with a transaction open", what)
	}
}

// inTxn checks that GC calls the owner's callback what before the
// rolled-back transaction gives up the writer slot, so that no other
// transaction sees what the callback is to undo.
func (p *apiPass) inTxn(what string) {
	if writerFree(p.h.d) {
		p.fail("%s called after the transaction gave up the writer", what)
	}
}

// asked follows IsLive's answer about e: a live entry is copied to the
// tail if the owner relocates and the ring has room for the copy beside
// what the head keeps, and otherwise stops GC.
func (p *apiPass) asked(e *apiEntry, live bool) {
	p.noTxn("IsLive")
	st := p.lg.l.Stats()
	p.sawHead(st.Head, e.pos)
	if !live {
		return
	}
	if p.lg.owner < ownerRelocator {
		p.stopped = e
		return
	}
	if st.Tail != p.tail {
		p.fail("GC asked about the entry at %d with the tail at %d, want %d", e.pos, st.Tail, p.tail)
	}
	size, frame := p.lg.ring.size, e.next-e.pos
	pad := int64(0)
	if phys := p.tail % size; phys+frame > size {
		pad = size - phys
	}
	if p.tail-st.Head+pad+frame > size {
		p.stopped = e
		return
	}
	pos := p.tail + pad
	to := &apiEntry{pos: pos, next: pos + frame, off: p.lg.ring.off + pos%size + logFrameHeaderBytes, data: e.data, dead: true}
	p.queue = append(p.queue, apiMove{from: e, to: to, start: p.tail})
	p.tail, p.stopped = to.next, nil
	p.copies, p.pads = p.copies+1, p.pads+pad
	p.lg.pending = append(p.lg.pending, to)
}

// relocate is the owner's Relocate: it checks that it is told of the next
// copy made, then by three bits of the input keeps the entry (0 to 2),
// keeps it with a reference journaled in a page the harness holds (3) or
// in one tx allocates (4), finds it dropped since IsLive (5), keeps it
// with up to 16 KiB journaled (6), or fails (7).
func (p *apiPass) relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	if p.tx != tx {
		p.begun(tx)
	}
	if len(p.queue) == 0 {
		p.fail("Relocate(%d, %d) with no copy made", oldOff, newOff)
		return nil
	}
	m := p.queue[0]
	p.queue = p.queue[1:]
	if oldOff != m.from.off || newOff != m.to.off || !bytes.Equal(entry, m.from.data) {
		p.fail("Relocate(%d, %d, %d bytes), want the entry at %d copied to %d", oldOff, newOff, len(entry), m.from.off, m.to.off)
	}
	if got, err := p.lg.l.Read(oldOff); err != nil || !bytes.Equal(got, m.from.data) {
		p.fail("Relocate(%d, %d): Read at the old offset: %d bytes, %v", oldOff, newOff, len(got), err)
	}
	if p.txCalls++; p.txCalls > gcRelocationsMax {
		p.fail("%d Relocate calls in one transaction, want at most %d", p.txCalls, gcRelocationsMax)
	}
	outcome := p.w >> (uint(p.calls*3) % 61) & 7
	p.calls++
	switch outcome {
	case 5: // dropped since IsLive: the copy is garbage
		m.from.dead = true
		return nil
	case 7:
		p.failed = true
		if p.panics {
			panic(errAPIRelocate)
		}
		return errAPIRelocate
	case 3:
		p.write(tx, apiRef(newOff))
	case 4: // in a page of its own, allocated by tx
		p.allocRef(tx, newOff)
	case 6: // more than a reference: a few such may not fit the journal
		p.write(tx, nil)
	}
	p.moves = append(p.moves, m)
	return nil
}

// begun starts following tx, GC's next transaction. A plain Relocator
// knows by it that the previous one committed: GC goes on only then.
func (p *apiPass) begun(tx *Txn) {
	if p.tx != nil {
		if p.lg.owner == ownerEnder {
			p.fail("Relocate in a new transaction before RelocationsEnded for the last")
		}
		p.ended(nil)
	}
	p.tx, p.bytes, p.txCalls, p.txWrote, p.allocs = tx, apiBytes{}, 0, 0, nil
	p.txHead = p.lg.l.Stats().Head
	if len(p.queue) > 0 {
		p.sawHead(p.txHead, p.queue[0].from.pos)
		p.txStart = p.queue[0].start
	}
}

// rolledBack follows GC's last transaction rolled back: the copies made
// for it go, and their room goes back to the log, which nothing reserved
// after them (GC runs only with no reservation left) and no tail covers
// (the transaction before journaled the tail before they were made).
func (p *apiPass) rolledBack() {
	p.retracted = p.tail - p.txStart
	p.tail = p.txStart
	p.lg.pending = slices.DeleteFunc(p.lg.pending, func(e *apiEntry) bool { return e.pos >= p.txStart })
}

// write journals b in tx (up to 16 KiB of new bytes if b is nil) at a
// place in a page the harness holds, if it holds one, as an owner
// repoints its index.
func (p *apiPass) write(tx *Txn, b []byte) {
	pages := sortedAddrs(p.h.m.pages)
	if len(pages) == 0 {
		return
	}
	k := p.w ^ uint64(p.calls)*0x9e3779b97f4a7c15
	k ^= k >> 29
	a := pages[k%uint64(len(pages))]
	if b == nil {
		b = p.h.data(min(a.Size(), 16<<10), k)
	}
	// Successive writes of a transaction go one after the other.
	slot := k>>8 + uint64(p.txWrote/8)
	off := a.Offset() + int64(slot%uint64((a.Size()-int64(len(b)))/8+1))*8
	if err := tx.Write(off, b); err != nil {
		p.fail("Relocate's Txn.Write(%d, %d bytes) into the page %v: %v", off, len(b), a, err)
		return
	}
	p.bytes.set(off, b)
	p.txWrote += len(b)
	got := make([]byte, len(b))
	if _, err := tx.ReadAt(got, off); err != nil || !bytes.Equal(got, b) {
		p.fail("Relocate's transaction reads back other bytes at %d (%v)", off, err)
	}
}

// apiRef is a reference to the entry at off, as an owner keeps it.
func apiRef(off int64) []byte {
	return binary.LittleEndian.AppendUint64(nil, uint64(off))
}

// allocRef journals a reference to newOff in a page that tx allocates,
// which the harness holds once tx commits; without room for one, in a
// page the harness holds.
func (p *apiPass) allocRef(tx *Txn, newOff int64) {
	a, err := tx.Alloc(1)
	if errors.Is(err, ErrNoSpace) {
		p.write(tx, apiRef(newOff))
		return
	}
	if err != nil {
		p.fail("Relocate's Txn.Alloc(1): %v", err)
		return
	}
	for _, b := range slices.Concat(sortedAddrs(p.h.m.pages), p.allocs) {
		if a.Offset() < b.Offset()+b.Size() && b.Offset() < a.Offset()+a.Size() {
			p.fail("Relocate's Txn.Alloc handed out %v, which overlaps %v, held", a, b)
		}
	}
	p.allocs = append(p.allocs, a)
	ref := apiRef(newOff)
	if err := tx.Write(a.Offset(), ref); err != nil {
		p.fail("Relocate's Txn.Write into the page %v it allocated: %v", a, err)
		return
	}
	p.bytes.set(a.Offset(), ref)
	p.txWrote += len(ref)
}

// tooLarge reports whether err is Commit's refusal of tx for its size,
// which only a transaction that journaled more than a few references may
// meet.
func (p *apiPass) tooLarge(err error) bool {
	return errors.Is(err, ErrTooLarge) && p.txWrote > 8<<10
}

// ended is RelocationsEnded, or what a plain Relocator learns otherwise:
// err nil means tx committed, and its relocations stand, each copy
// durable and readable, the old one behind the head; otherwise tx rolled
// back, because a Relocate failed or Commit found it too large, and the
// head stayed.
func (p *apiPass) ended(err error) {
	if p.tx == nil {
		p.fail("RelocationsEnded(%v) with no Relocate since the last", err)
		return
	}
	st := p.lg.l.Stats()
	switch {
	case err == nil && p.failed:
		p.fail("RelocationsEnded(nil) after Relocate failed")
	case err == nil:
		for _, m := range p.moves {
			m.from.dead, m.to.dead = true, false
			got, rerr := p.lg.l.Read(m.to.off)
			if st.Head <= m.from.pos || rerr != nil || !bytes.Equal(got, m.to.data) {
				p.fail("the relocation of %d to %d holds with the head at %d; Read at the new offset: %d bytes, %v", m.from.pos, m.to.pos, st.Head, len(got), rerr)
			}
		}
		for _, a := range p.allocs {
			p.h.m.pages[a] = true
			p.h.seen = append(p.h.seen, a)
			p.h.known.forget(a.Offset(), a.Size())
		}
		p.h.known.merge(p.bytes)
	case !p.tooLarge(err) && (!p.failed || !errors.Is(err, errAPIRelocate) && !(p.panics && errors.Is(err, errRelocatePanicked))):
		p.fail("RelocationsEnded(%v), want nil, Relocate's failure or, for %d bytes journaled, ErrTooLarge", err, p.txWrote)
	case st.Head != p.txHead:
		p.fail("the head moved from %d to %d in the transaction Relocate's failure rolled back", p.txHead, st.Head)
	}
	p.tx, p.moves, p.bytes, p.allocs = nil, nil, nil, nil
}

// apiLogNames are the names CreateLog and DropLog are given.
var apiLogNames = []string{"c0", "c1", "c2", "fixed", "", strings.Repeat("n", 33), "a\x00b", strings.Repeat("n", 32), "none"}

func (h *apiHarness) createLog(form int, x byte, w uint64) {
	if h.tx != nil {
		return // CreateLog begins a transaction: one goroutine cannot
	}
	name := apiLogNames[pickIndex(x, len(apiLogNames))]
	maxPage := h.g.maxPageBytes()
	var size int64
	switch form % 6 {
	case 0, 1:
		size = 1 + int64(w%uint64(maxPage))
	case 2:
		size = -int64(w % 2)
	case 3:
		size = []int64{maxPage + 1, math.MaxInt64, math.MinInt64}[w%3]
	case 4:
		size = maxPage
	case 5:
		size = 1 + int64(w%8192)
	}
	h.what = fmt.Sprintf("CreateLog(%q, %d)", name, size)
	before, logsBefore := h.d.Stats(), h.logStats()
	l, err := h.d.CreateLog(name, size)
	exists := slices.ContainsFunc(h.logs, func(lg *apiLog) bool { return lg.name == name })
	switch {
	case name == "" || len(name) > logNameMaxBytes || strings.IndexByte(name, 0) >= 0 || size < 1:
		h.want(err, ErrInvalidArgument)
	case size > maxPage:
		h.want(err, ErrTooLarge)
	case exists:
		h.want(err, ErrExists)
	default:
		h.wantOneOf(err, nil, ErrNoSpace)
	}
	if err != nil {
		h.sameStats(before)
		h.sameLogStats(logsBefore)
		if _, err := h.d.Log(name); !exists && !errors.Is(err, ErrNotFound) {
			h.fatalf("after a failed CreateLog, Log(%q) returns %v", name, err)
		}
		return
	}
	ring := region{l.ring.off, l.ring.size}
	if ring.size != h.pageSize(size) || l.Stats().SizeBytes != ring.size || l.Name() != name {
		h.fatalf("a log %q of %d bytes (Stats %d), want %d", l.Name(), ring.size, l.Stats().SizeBytes, h.pageSize(size))
	}
	a := makeAddr(ring.off, uint(bits.TrailingZeros64(uint64(ring.size))))
	h.mustBeFree(ring, a)
	h.logs = append(h.logs, &apiLog{name: name, l: l, carved: true, ring: ring})
	h.status[l] = logOpen
	h.known.forget(ring.off, ring.size)
	h.verify()
}

func (h *apiHarness) dropLog(x byte) {
	if h.tx != nil {
		return // DropLog begins a transaction: one goroutine cannot
	}
	name := apiLogNames[pickIndex(x, len(apiLogNames))]
	h.what = fmt.Sprintf("DropLog(%q)", name)
	before, logsBefore := h.d.Stats(), h.logStats()
	err := h.d.DropLog(name)
	i := slices.IndexFunc(h.logs, func(lg *apiLog) bool { return lg.name == name })
	switch {
	case i < 0:
		h.want(err, ErrNotFound)
	case !h.logs[i].carved:
		h.want(err, ErrInvalidArgument)
	case len(h.logs[i].live) > 0:
		h.want(err, ErrInUse)
	default:
		h.want(err, nil)
	}
	if err != nil {
		h.sameStats(before)
		h.sameLogStats(logsBefore)
		return
	}
	lg := h.logs[i]
	h.logs = slices.Delete(h.logs, i, i+1)
	h.status[lg.l] = logDropped
	h.stale = append(h.stale, lg.l)
	if _, err := h.d.Log(name); !errors.Is(err, ErrNotFound) {
		h.fatalf("Log(%q) returns %v after DropLog", name, err)
	}
	h.verify()
}

// ---------------------------------------------------------------------------
// The device.

// errAPIFn is what Update's function returns to have it roll back.
var errAPIFn = errors.New("the function's own error")

func (h *apiHarness) device(form int, x byte, w uint64) {
	idle := h.tx == nil
	switch form % 12 {
	case 0:
		h.what = "Sync"
		h.want(h.d.Sync(), nil)
	case 1:
		if idle {
			h.what = "Check"
			h.want(h.d.Check(), nil)
		}
	case 2:
		h.what = "Stats"
		st := h.d.Stats()
		if st.FileSize > st.Capacity || st.Frontier > st.FileSize || st.Capacity != h.g.capacity {
			h.fatalf("Stats %+v", st)
		}
	case 3:
		if idle {
			h.what = "Inspect"
			ins, err := h.d.Inspect()
			h.want(err, nil)
			if len(ins.Logs) != len(h.logs) || len(ins.SubpageClasses) != len(h.classes) {
				h.fatalf("%d logs and %d classes, want %d and %d", len(ins.Logs), len(ins.SubpageClasses), len(h.logs), len(h.classes))
			}
		}
	case 4:
		h.what = "WalkHeap(nil)"
		h.want(h.d.WalkHeap(nil), ErrInvalidArgument)
		if idle {
			h.what = "WalkHeap"
			n := 0
			h.want(h.d.WalkHeap(func(e HeapExtent) bool { n++; return n < int(x) }), nil)
		}
	case 5:
		name := apiLogNames[pickIndex(x, len(apiLogNames))]
		h.what = fmt.Sprintf("Log(%q)", name)
		l, err := h.d.Log(name)
		if i := slices.IndexFunc(h.logs, func(lg *apiLog) bool { return lg.name == name }); i >= 0 {
			h.want(err, nil)
			if l != h.logs[i].l {
				h.fatalf("another *Log than before")
			}
		} else {
			h.want(err, ErrNotFound)
		}
	case 6:
		h.what = "Root"
		if off, size := h.d.Root(); off != h.geo.root.off || size != h.geo.root.size {
			h.fatalf("got [%d, +%d), want [%d, +%d)", off, size, h.geo.root.off, h.geo.root.size)
		}
	case 7:
		h.what = "Update(nil)"
		h.want(h.d.Update(nil), ErrInvalidArgument)
	default:
		if idle {
			h.update(form%12-8, 1+int64(w%uint64(h.g.maxPageBytes())))
		}
	}
}

// update runs Update with a function that allocates a page of size bytes,
// then by kind: returns an error of its own, returns nil, commits the
// transaction itself, or panics.
func (h *apiHarness) update(kind int, size int64) {
	h.what = fmt.Sprintf("Update(kind %d, Alloc(%d))", kind, size)
	before := h.d.Stats()
	var got Addr
	var inner *Txn
	panicked := false
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r != errAPIFn {
					panic(r)
				}
				panicked = true
			}
		}()
		return h.d.Update(func(tx *Txn) error {
			inner = tx
			a, err := tx.Alloc(size)
			if err != nil {
				return err
			}
			got = a
			switch kind {
			case 0:
				return errAPIFn
			case 2:
				return tx.Commit()
			case 3:
				panic(errAPIFn)
			}
			return nil
		})
	}()
	if inner != nil {
		h.ended = append(h.ended, inner)
	}
	if inner != nil && !inner.done {
		h.fatalf("the transaction is still open after Update returned")
	}
	switch {
	case got == 0:
		h.want(err, ErrNoSpace)
	case kind == 0:
		if err != errAPIFn {
			h.fatalf("got %v, want the function's error", err)
		}
	case kind == 3:
		if !panicked {
			h.fatalf("the panic did not reach the caller")
		}
	case kind == 2:
		h.want(err, ErrTxDone) // the function's Commit succeeded
	default:
		h.want(err, nil)
	}
	if committed := got != 0 && (kind == 1 || kind == 2); committed {
		h.mustBeFree(region{got.Offset(), got.Size()}, got)
		h.m.pages[got] = true
		h.seen = append(h.seen, got)
		h.known.forget(got.Offset(), got.Size())
	} else {
		h.sameStats(before)
	}
	h.verify()
}

// reopen closes the device, checks that every call on it and its handles
// is refused, opens it again and checks it against the model.
func (h *apiHarness) reopen(x byte) {
	h.what = "Close"
	h.want(h.d.Close(), nil)
	h.want(h.d.Close(), nil) // idempotent
	old := h.d
	h.closedCalls(x)
	for _, lg := range h.logs {
		h.status[lg.l] = logStale
		h.stale = append(h.stale, lg.l)
		for _, r := range lg.live {
			r.state = resLost
		}
	}
	h.staleClasses = append(h.staleClasses, h.classes...)
	img, err := h.store.Image(h.store.Ops(), nil)
	if err != nil {
		h.fatalf("image: %v", err)
	}
	h.store.Close()
	h.store = img
	h.what = "Open"
	d, err := openOn(img, &Options{})
	if err != nil {
		h.fatalf("%v", err)
	}
	h.setDevice(d)
	if d == old {
		h.fatalf("the same device")
	}
	h.verify()
}

// apiRefusal is a call on a closed device, what it returned and what it
// must return.
type apiRefusal struct {
	what      string
	err, want error
}

// closedCalls makes the calls of every kind on the closed device, its
// handles and ended transactions: each must be refused, and none panic.
func (h *apiHarness) closedCalls(x byte) {
	d := h.d
	off := h.geo.root.off
	calls := []apiRefusal{
		{"Begin", errOf(d.Begin()), ErrClosed},
		{"WriteAt", errOf(d.WriteAt([]byte{1}, off)), ErrClosed},
		{"ReadAt", errOf(d.ReadAt(make([]byte, 1), off)), ErrClosed},
		{"Slice", errOf(d.Slice(off, 1)), ErrClosed},
		{"Sync", d.Sync(), ErrClosed},
		{"Check", d.Check(), ErrClosed},
		{"Inspect", errOf(d.Inspect()), ErrClosed},
		{"WalkHeap", d.WalkHeap(func(HeapExtent) bool { return true }), ErrClosed},
		{"WalkHeap(nil)", d.WalkHeap(nil), ErrInvalidArgument},
		{"Subpages", errOf(d.Subpages(64)), ErrClosed},
		{"CreateLog", errOf(d.CreateLog("c9", 4096)), ErrClosed},
		{"DropLog", d.DropLog(h.logs[pickIndex(x, len(h.logs))].name), ErrClosed},
		{"Log", errOf(d.Log("fixed")), ErrClosed},
		{"Update", d.Update(func(*Txn) error { return nil }), ErrClosed},
		{"Update(nil)", d.Update(nil), ErrInvalidArgument},
	}
	for _, lg := range h.logs {
		l := lg.l
		calls = append(calls,
			apiRefusal{"Log.Append", errOf(l.Append(8)), ErrClosed},
			apiRefusal{"Log.Read", errOf(l.Read(l.ring.off + logFrameHeaderBytes)), ErrClosed},
			apiRefusal{"Log.GC", l.GC(context.Background()), ErrClosed},
			apiRefusal{"Log.SetOwner", l.SetOwner(nil, nil), ErrClosed})
		for _, e := range l.Entries(0) {
			calls = append(calls, apiRefusal{"Log.Entries", e, ErrClosed})
			break
		}
		for _, r := range lg.live {
			calls = append(calls,
				apiRefusal{"Log.Write", l.Write(r.r, make([]byte, r.r.Size())), ErrClosed},
				apiRefusal{"Log.Commit", l.Commit(r.r), ErrClosed},
				apiRefusal{"Log.Cancel", l.Cancel(r.r), ErrClosed})
		}
		_ = l.Stats()
	}
	for _, s := range h.classes {
		calls = append(calls, apiRefusal{"Subpages.Alloc(nil)", errOf(s.Alloc(nil)), ErrInvalidArgument})
		_ = s.Stats()
	}
	for _, tx := range h.ended {
		calls = append(calls,
			apiRefusal{"Txn.Alloc", errOf(tx.Alloc(4096)), ErrTxDone},
			apiRefusal{"Txn.Write", tx.Write(off, []byte{1}), ErrTxDone},
			apiRefusal{"Txn.Commit", tx.Commit(), ErrTxDone})
		for _, s := range h.classes {
			calls = append(calls, apiRefusal{"Subpages.Alloc", errOf(s.Alloc(tx)), ErrTxDone})
		}
	}
	_, _ = d.Stats(), d.Close()
	for _, c := range calls {
		h.what = c.what + " on a closed device"
		h.want(c.err, c.want)
	}
}

// errOf returns the error of a call's two results.
func errOf[T any](_ T, err error) error { return err }

// verify checks the committed device against the model: Check passes; the
// allocated pages are the model's and the carved rings, the allocated
// slots the model's; Stats agrees; the known bytes read back, through
// ReadAt and Slice; every log holds the model's entries.
func (h *apiHarness) verify() {
	h.what += ", then the check of committed state"
	slots, _, pages, err := subpageSlots(h.d)
	if err != nil {
		h.fatalf("%v", err)
	}
	want := cloneSet(h.m.pages)
	for _, lg := range h.logs {
		if lg.carved {
			want[makeAddr(lg.ring.off, uint(bits.TrailingZeros64(uint64(lg.ring.size))))] = true
		}
	}
	if got := sortedAddrs(pages); !slices.Equal(got, sortedAddrs(want)) {
		h.fatalf("allocated pages %v, want %v", got, sortedAddrs(want))
	}
	if got := sortedAddrs(slots); !slices.Equal(got, sortedAddrs(h.m.slots)) {
		h.fatalf("allocated slots %v, want %v", got, sortedAddrs(h.m.slots))
	}
	st := h.d.Stats()
	used, count := int64(0), int64(len(want))
	for a := range want {
		used += a.Size()
	}
	for _, s := range h.classes {
		cs := s.Stats()
		n := int64(0)
		for a := range h.m.slots {
			if a.Size() == s.SlotBytes() {
				n++
			}
		}
		if cs.SlotsUsed != n {
			h.fatalf("the %d-byte class counts %d slots used, want %d", s.SlotBytes(), cs.SlotsUsed, n)
		}
		count += cs.Parents
		used += cs.Parents * cs.ParentBytes
	}
	if st.AllocatedPages != count || st.UsedBytes != used {
		h.fatalf("Stats counts %d pages of %d bytes allocated, want %d of %d", st.AllocatedPages, st.UsedBytes, count, used)
	}
	live := h.liveRegions(h.m)
	for _, r := range live {
		got := make([]byte, r.size)
		if _, err := h.d.ReadAt(got, r.off); err != nil {
			h.fatalf("ReadAt [%d, +%d): %v", r.off, r.size, err)
		}
		h.checkKnown("ReadAt", got, r.off, live, h.known)
		s, err := h.d.Slice(r.off, r.size)
		if err != nil {
			h.fatalf("Slice [%d, +%d): %v", r.off, r.size, err)
		}
		h.checkKnown("Slice", s, r.off, live, h.known)
	}
	for _, lg := range h.logs {
		h.entries(lg.l, lg, 0, 0, 0)
		for _, e := range lg.entries {
			if got, err := lg.l.Read(e.off); err != nil || !bytes.Equal(got, e.data) {
				h.fatalf("Log(%q).Read(%d): %d bytes, %v", lg.name, e.off, len(got), err)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Seeds: one or more for each kind of call.

func apiPagesSeed() apiSeed {
	return apiSeed{}.
		c(apiBegin, 0, 0, 0).
		call(apiAlloc, 0, 0, 0, 0, 99).
		call(apiAlloc, 2, 0, 0, 0, 20000).
		call(apiAlloc, 7, 0, 0, 0, 0).
		call(apiAlloc, 7, 0, 4, 0, 0).
		call(apiTxWrite, 0, 0, 1, 16, 7).   // inside a page of the transaction's
		call(apiWriteAt, 0, 0, 1, 16, 7).   // the same, in place: not committed yet
		call(apiTxWrite, 4, 0, 0, 8, 3).    // across a page's end
		call(apiTxWrite, 3, 0, 0, 32, 100). // the root area
		call(apiWriteAt, 3, 0, 0, 32, 100). // the root area, in place
		call(apiRead, 0, 4, 0, 16, 5).      // Txn.ReadAt
		c(apiCommit, 0, 0, 0).
		call(apiWriteAt, 0, 0, 2, 40, 9).  // committed now
		call(apiRead, 0, 0, 2, 40, 9).     // ReadAt
		call(apiRead, 0, 2, 2, 40, 9).     // Slice
		call(apiRead, 5, 0, 0, 200, 3).    // at the file's end
		call(apiRead, 10, 2, 0, 245, 1).   // Slice of a negative length
		call(apiWriteAt, 6, 0, 3, 20, 40). // the journal's edge
		c(apiBegin, 0, 0, 0).
		call(apiFree, 0, 0, 1, 0, 0). // a live page
		call(apiFree, 3, 0, 1, 0, 0). // the same: a double free
		call(apiFree, 5, 0, 0, 0, 3). // size bits one higher
		call(apiFree, 5, 0, 1, 0, 4). // size bits one lower: the first half
		call(apiFree, 5, 0, 2, 0, 4).
		call(apiFree, 5, 0, 2, 0, 2).          // inside a page
		call(apiFree, 6, 0, 1, 0, 0).          // a page's neighbour
		call(apiFree, 7, 0, 0, 0, 0xdeadbeef). // a raw word
		call(apiFree, 10, 0, 2, 0, 0).         // in block metadata's page
		call(apiTxWrite, 11, 0, 0, 8, 1).      // into the freed page
		call(apiWriteAt, 11, 0, 0, 8, 1).      // in place: still committed
		call(apiAlloc, 4, 0, 0, 0, 0).
		call(apiAlloc, 5, 0, 1, 0, 0).
		call(apiAlloc, 6, 0, 1, 0, 0).
		call(apiTxWrite, 10, 0, 0, 8, 1<<40). // a raw offset
		c(apiCommit, 0, 0, 0).
		call(apiAlloc, 0, apiEnded, 0, 0, 10). // use after Commit
		call(apiFree, 0, apiEnded, 0, 0, 0).
		call(apiTxWrite, 3, apiEnded, 0, 8, 0).
		call(apiRead, 3, apiEnded, 0, 8, 0).
		call(apiCommit, 0, apiEnded, 0, 0, 0).
		call(apiRollback, 0, apiEnded, 0, 0, 0).
		c(apiBegin, 0, 0, 0).
		call(apiAlloc, 1, 0, 0, 0, 5000).
		c(apiRollback, 0, 0, 0)
}

func apiSlotsSeed() apiSeed {
	return apiSeed{}.
		c(apiSubpages, 0, 0, 0). // 64
		c(apiSubpages, 2, 0, 0). // 256
		c(apiSubpages, 3, 0, 0). // 0
		c(apiSubpages, 7, 0, 0). // 100
		c(apiSubpages, 8, 0, 0). // 2048: above MaxPageSize / 64
		c(apiSubpages, 10, 0, 0).
		c(apiBegin, 0, 0, 0).
		call(apiSlotAlloc, 0, 0, 0, 0, 0).
		call(apiSlotAlloc, 0, 0, 0, 0, 0).
		call(apiSlotAlloc, 0, 0, 1, 0, 0).
		call(apiSlotAlloc, 0, 0, 1, 0, 0).
		call(apiTxWrite, 2, 0, 0, 8, 3).        // inside a slot
		call(apiTxWrite, 7, 0, 0, 8, 3).        // a parent's header
		call(apiSlotFree, 2, 0, 0, 1, 0).       // a slot of the other class
		call(apiFree, 2, 0, 0, 0, 0).           // a slot through the page API
		call(apiSlotFree, 9, 0, 0, 0, 0).       // a parent through the slot API
		call(apiFree, 9, 0, 0, 0, 0).           // a parent through the page API
		call(apiSlotFree, 5, 0, 0, 0, 7).       // a slot's neighbour
		call(apiSlotAlloc, 0, apiNil, 0, 0, 0). // no transaction
		c(apiCommit, 0, 0, 0).
		call(apiWriteAt, 2, 0, 1, 20, 4).
		call(apiWriteAt, 7, 0, 1, 4, 70).
		c(apiBegin, 0, 0, 0).
		call(apiSlotFree, 2, 0, 0, 0, 0).
		call(apiSlotFree, 4, 0, 0, 0, 0). // a double free
		call(apiSlotAlloc, 0, apiEnded, 0, 0, 0).
		c(apiCommit, 0, 0, 0).
		call(apiSlotFree, 2, apiEnded, 0, 0, 0)
}

func apiLogSeed() apiSeed {
	return apiSeed{}.
		call(apiAppend, 0, 0, 0, 0, 40).
		call(apiLogWrite, 0, 0, 0, 1, 5). // the whole payload
		call(apiAppend, 1, 0, 0, 0, 100).
		call(apiWriteAt, 8, 0, 1, 16, 3). // inside the payload, in place
		call(apiTxWrite, 8, 0, 1, 16, 3). // journaled: refused
		call(apiAppend, 2, 0, 0, 0, 77).
		call(apiLogWrite, 5, 0, 0, 1, 0). // one byte too many
		call(apiLogCommit, 0, 0, 0, 0, 0).
		call(apiLogCommit, 0, 0, 0, 0, 0).
		call(apiLogCancel, 0, 0, 0, 0, 0).
		call(apiLogCommit, 1, 0, 0, 1, 0). // cancelled: not reserved
		call(apiLogCommit, 1, 0, 3, 1, 0). // the zero Reservation
		call(apiLogCancel, 1, 0, 0, 1, 0). // committed
		call(apiLogWrite, 0, 0, 0, 1, 0).
		call(apiAppend, 3, 0, 0, 0, 5000).
		call(apiAppend, 4, 0, 0, 0, 1).
		call(apiAppend, 6, 0, 0, 0, 1).
		call(apiAppend, 5, 0, 0, 0, 0).
		call(apiLogRead, 1, 0, 0, 0, 0). // Read an entry
		call(apiLogRead, 5, 0, 0, 1, 2). // inside it
		call(apiLogRead, 9, 0, 0, 0, 0). // a reservation's offset
		call(apiLogRead, 0, 0, 0, 0, 0). // Entries(0)
		call(apiLogRead, 6, 0, 0, 0, 0). // Entries from inside an entry
		call(apiLogRead, 8, 0, 0, 0, 0). // past the durable tail
		call(apiLogGC, 5, 0, 0, 0, 0).   // no owner
		call(apiLogGC, 0, 0, 0, 0, 0).
		call(apiLogGC, 3, 0, 0, 0, 0).
		call(apiLogGC, 5, 0, 0, 0, 0).
		call(apiLogGC, 0, 0, 0, 0, 3). // a reserve as large as the ring
		call(apiLogGC, 7, 0, 0, 0, 0). // a cancelled context
		call(apiLogGC, 2, 0, 0, 0, 0)
}

func apiCarvedSeed() apiSeed {
	return apiSeed{}.
		call(apiCreateLog, 0, 0, 0, 0, 5000).
		call(apiCreateLog, 0, 0, 0, 0, 5000). // exists
		call(apiCreateLog, 0, 0, 3, 0, 4096). // the fixed log's name
		call(apiCreateLog, 0, 0, 4, 0, 4096). // empty
		call(apiCreateLog, 0, 0, 5, 0, 4096). // too long
		call(apiCreateLog, 0, 0, 6, 0, 4096). // a zero byte
		call(apiCreateLog, 2, 0, 1, 0, 0).
		call(apiCreateLog, 3, 0, 1, 0, 0).
		call(apiCreateLog, 4, 0, 7, 0, 0).
		call(apiAppend, 0, 0, 1, 0, 50).
		call(apiLogWrite, 0, 0, 0, 1, 1).
		c(apiDropLog, 0, 0, 0). // a live reservation
		call(apiLogCommit, 0, 0, 1, 0, 0).
		call(apiAppend, 0, 0, 2, 0, 50).
		call(apiLogCommit, 1, 0, 0, 4, 0). // through another log
		call(apiLogCancel, 0, 0, 2, 0, 0).
		call(apiWriteAt, 9, 0, 1, 16, 0). // into the ring
		call(apiFree, 8, 0, 0, 0, 0).     // the ring through Free
		call(apiBegin, 0, 0, 0, 0, 0).
		call(apiFree, 8, 0, 0, 0, 0).
		c(apiRollback, 0, 0, 0).
		c(apiDropLog, 0, 0, 0).
		c(apiDropLog, 3, 0, 0). // the fixed log
		c(apiDropLog, 8, 0, 0). // none such
		call(apiAppend, 0, apiEnded, 0, 0, 8).
		call(apiLogRead, 1, apiEnded, 0, 0, 0).
		call(apiLogRead, 0, apiEnded, 0, 0, 0).
		call(apiLogGC, 5, apiEnded, 0, 0, 0).
		call(apiLogCommit, 1, apiEnded, 1, 0, 0).
		call(apiLogWrite, 0, apiEnded, 1, 0, 0).
		call(apiDevice, 5, 0, 0, 0, 0).
		call(apiDevice, 5, 0, 3, 0, 0)
}

func apiReopenSeed() apiSeed {
	return apiSeed{}.
		c(apiSubpages, 0, 0, 0).
		c(apiBegin, 0, 0, 0).
		call(apiAlloc, 0, 0, 0, 0, 3000).
		call(apiSlotAlloc, 0, 0, 0, 0, 0).
		call(apiTxWrite, 0, 0, 0, 30, 8).
		call(apiTxWrite, 3, 0, 0, 30, 9).
		c(apiCommit, 0, 0, 0).
		call(apiAppend, 0, 0, 0, 0, 30).
		call(apiAppend, 0, 0, 0, 0, 30).
		call(apiLogCommit, 0, 0, 0, 0, 0).
		c(apiReopen, 0, 0, 0).
		call(apiAppend, 0, apiEnded, 0, 0, 8).
		call(apiLogCommit, 1, 0, 1, 1, 0). // from before the reopen
		call(apiLogCommit, 1, apiEnded, 1, 0, 0).
		c(apiBegin, 0, 0, 0).
		call(apiSlotAlloc, 0, apiEnded-1, 0, 0, 0). // a class of the closed device
		call(apiSlotFree, 2, apiEnded-1, 0, 0, 0).
		call(apiSlotFree, 2, 0, 0, 0, 0).
		c(apiCommit, 0, 0, 0).
		c(apiReopen, 0, 0, 0)
}

func apiDeviceSeed() apiSeed {
	s := apiSeed{}
	for form := byte(0); form < 12; form++ {
		s = s.call(apiDevice, form, 0, 3, 0, 4096)
	}
	return s.c(apiBegin, 0, 0, 0).
		c(apiDevice, 0, 0, 0).
		c(apiDevice, 7, 0, 0).
		c(apiDevice, 1, 0, 0). // not with a transaction open
		c(apiRollback, 0, 0, 0)
}

func apiFullSeed() apiSeed {
	s := apiSeed{}.c(apiSubpages, 1, 0, 0).c(apiBegin, 0, 0, 0)
	for range 12 {
		s = s.call(apiAlloc, 7, 0, 4, 0, 0)
	}
	s = s.call(apiSlotAlloc, 0, 0, 0, 0, 0).c(apiCommit, 0, 0, 0).
		call(apiCreateLog, 4, 0, 0, 0, 0)
	for i := range 8 {
		s = s.c(apiBegin, 0, 0, 0).call(apiFree, 0, 0, byte(i), 0, 0).c(apiCommit, 0, 0, 0)
	}
	return s.c(apiBegin, 0, 0, 0).
		call(apiAlloc, 7, 0, 4, 0, 0).
		call(apiAlloc, 7, 0, 4, 0, 0).
		c(apiCommit, 0, 0, 0)
}

func apiTooLargeSeed() apiSeed {
	return apiSeed{}.
		c(apiBegin, 0, 0, 0).
		call(apiAlloc, 7, 0, 4, 0, 0).
		call(apiTxWrite, 0, 0, 0, 234, 0). // a whole max page
		c(apiCommit, 0, 0, 0)
}

func apiRingSeed() apiSeed {
	s := apiSeed{}.call(apiLogGC, 0, 0, 0, 0, 0)
	for i := range 20 {
		s = s.call(apiAppend, 0, 0, 0, 0, 150+uint64(i)*13).
			call(apiLogWrite, byte(i%4)*8, 0, 0, 1, uint64(i)*0x0101010101).
			call(apiLogCommit, 0, 0, 0, 0, 0).
			call(apiLogRead, 5, 0, 0, 0, 1). // inside the newest entry
			call(apiLogGC, 3, 0, 0, 0, uint64(i)).
			call(apiLogGC, 5, 0, 0, 0, 0)
	}
	return s
}

// apiOutcomes packs what successive Relocate calls do (see
// apiPass.relocate) into a GC call's number.
func apiOutcomes(outcomes ...uint64) uint64 {
	w := uint64(0)
	for i, o := range outcomes {
		w |= o << (3 * i)
	}
	return w
}

// apiRelocateSeed has GC relocate through a Relocator, then a
// RelocationsEnder: entries kept, kept with a reference journaled in a
// page, dropped since IsLive, and Relocate failing and panicking.
func apiRelocateSeed() apiSeed {
	s := apiSeed{}.c(apiBegin, 0, 0, 0).call(apiAlloc, 0, 0, 0, 0, 99).c(apiCommit, 0, 0, 0)
	entries := func(s apiSeed, n int) apiSeed {
		for i := range n {
			s = s.call(apiAppend, 0, 0, 0, 0, 60+uint64(i)*29).
				call(apiLogWrite, 0, 0, 0, 1, uint64(i)).
				call(apiLogCommit, 0, 0, 0, 0, 0)
			if i%3 == 0 {
				s = s.call(apiLogGC, 3, 0, 0, 0, uint64(i)) // the owner lets one go
			}
		}
		return s
	}
	s = s.call(apiLogGC, 1<<3, 0, 0, 0, 0) // a Relocator
	s = entries(s, 8).call(apiLogGC, 5, 0, 0, 0, apiOutcomes(0, 3, 5, 0, 4, 0, 0, 0))
	s = entries(s, 4).
		call(apiLogGC, 5, 0, 0, 0, apiOutcomes(3, 7)). // rolled back
		call(apiLogGC, 6, 0, 0, 0, 0)
	s = s.call(apiLogGC, 2<<3, 0, 0, 0, 0) // a RelocationsEnder
	s = entries(s, 6).
		call(apiLogGC, 5, 0, 0, 0, apiOutcomes(3, 0, 7)).
		call(apiLogGC, 5|3<<3, 0, 0, 0, apiOutcomes(0, 7)). // panics
		call(apiLogGC, 5, 0, 0, 0, apiOutcomes(3, 3, 5, 3, 3, 3, 3, 3))
	return entries(s, 10).call(apiLogGC, 5, 0, 0, 0, 0).call(apiLogRead, 0, 0, 0, 0, 0)
}

// apiBigRelocationsSeed has Relocate calls journal 16 KiB each into a max
// page: their transaction is too large for the journal, and rolled back.
func apiBigRelocationsSeed() apiSeed {
	s := apiSeed{}.call(apiCreateLog, 4, 0, 0, 0, 0).
		c(apiBegin, 0, 0, 0).call(apiAlloc, 7, 0, 4, 0, 0).c(apiCommit, 0, 0, 0).
		call(apiLogGC, 1|2<<3, 0, 1, 0, 0) // a RelocationsEnder
	for i := range 6 {
		s = s.call(apiAppend, 0, 0, 1, 0, 150+uint64(i)).call(apiLogCommit, 0, 0, 1, 0, 0)
	}
	return s.call(apiLogGC, 5, 0, 1, 0, apiOutcomes(6, 6, 6, 6, 6)).
		call(apiLogGC, 5, 0, 1, 0, apiOutcomes(6))
}
