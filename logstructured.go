package pagealloc

// Log-structured regions: rings for append-mostly data (value logs, blob
// logs, write-ahead logs of the caller's own), either laid out at Create
// beside the allocator state (Options.LogRegions) or carved from the heap
// later, one buddy page each (Device.CreateLog, Device.DropLog).
//
// A log is addressed by virtual positions that only grow; the byte at
// position v lives at ring offset v mod ring size. Three positions matter:
//
//	head ≤ durable tail ≤ tail
//
// Space before the head is free; [head, durable tail) holds entries a crash
// keeps; [durable tail, tail) holds reservations being written or waiting
// for the ones before them. Only head and durable tail are on disk, in the
// log table, and both change only through the journal.
//
// Append reserves a span at the tail under a short lock and does no I/O, so
// appenders never wait for each other's writes. The owner writes its
// payload in place and Commit writes the frame header (length, position,
// CRC of the payload); or the owner hands the payload to Log.Write, which
// copies header and payload into the file's writable mapping or, without
// one, stages them in a buffer. Commit then marks the span done.
// The durable tail may pass only a contiguous run of done spans whose
// bytes are in the file, since a crash must never expose a span whose
// bytes were not written; a Commit that finds no flush under way becomes
// the leader: it writes the staged frames of every span done so far,
// adjacent ones in one write, and journals the tail over them, so many
// appenders share one write, one transaction and, through group commit,
// one fsync. The journal syncs the payloads and headers before it writes
// the record that moves the tail, so the tail never points past bytes that
// are not durable.
//
// GC walks from the head over durable entries, asking the owner whether
// each is live. Dead entries and padding are passed over; a live entry is
// copied to the tail when the owner implements Relocator, and the owner
// repoints its reference in the same transaction that moves the head past
// the old copy, so that after a crash either both happened or neither did.
// Space passed by the head is reused only once that transaction is
// durable: before then a crash would bring the old head back, pointing at
// bytes a new append had overwritten.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"iter"
	"math"
	"math/bits"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pagealloc/pagealloc/internal/storage"
)

var (
	// ErrNotFound is returned by Device.Log and Device.DropLog for a name
	// no log carries, and by Log.Read for an offset where no durable entry
	// lies.
	ErrNotFound = errors.New("pagealloc: not found")

	// ErrNotReserved is returned by Log.Write, Log.Commit and Log.Cancel
	// for a reservation that is not live: already committed or cancelled,
	// made by another log or device, or the zero Reservation.
	ErrNotReserved = errors.New("pagealloc: not a live log reservation")
)

// GarbageChecker is the owner of a log's entries, asked by GC whether an
// entry is still needed.
type GarbageChecker interface {
	// IsLive reports whether the entry whose payload starts at device
	// offset off is still needed. entry is the payload as stored: GC does
	// not check it against its checksum, so that a dead entry costs only
	// its header, but checks it before relocating it. Decide by offset
	// where possible. entry aliases the device mapping and must not be
	// retained or written. GC calls IsLive from one goroutine at a time,
	// without a transaction open, inside its pass: IsLive must not call
	// this log's GC or Device.Close, which wait for the pass to end.
	//
	// GC may ask about an entry as soon as it is durable, which can be
	// before the Log.Commit that made it so has returned: an entry the
	// owner has not indexed yet must count as live. Index it before
	// Commit, or keep a set of entries on their way.
	IsLive(off int64, entry []byte) bool
}

// Relocator is a GarbageChecker that can repoint its references, which
// lets GC move a live entry from the head to the tail instead of stopping
// at it.
type Relocator interface {
	GarbageChecker

	// Relocate is told that the live entry at oldOff has been copied to
	// newOff. It must journal the owner's reference updates in tx (with
	// Txn.Write), the transaction that also moves the head past oldOff, so
	// that after a crash both or neither are found. It must neither end tx
	// nor call what would wait for tx or for the pass: Log.Commit, this
	// log's GC, Device.Begin, Update, Check, Inspect, WalkHeap, CreateLog,
	// DropLog or Close. An error rolls tx back: the head stays, the
	// copies are dropped (their room goes back to appends, unless a
	// reservation came after them or a tail was journaled over them: then
	// the next pass relocates their entries to them rather than copy them
	// again; after a reopen, when they hold part of the relocation reserve,
	// GC looks for them among the entries IsLive calls garbage, by their
	// bytes), and the owner must forget in-memory changes made for this
	// transaction. An entry the owner dropped since IsLive needs nothing:
	// its copy is garbage. Up to 64 relocations share a transaction,
	// whose record must fit in half the journal (see Txn.Commit), so keep
	// each one's writes small.
	// entry aliases the mapping, as for IsLive.
	// The copy at newOff is not durable before tx is: until Log.Commit
	// would have returned for it, Log.Read(newOff) returns ErrNotFound,
	// while the entry at oldOff still reads. An owner that repoints
	// readers to newOff in memory here (a RelocationsEnder) makes them
	// wait or retry at oldOff until RelocationsEnded(nil).
	// A Relocate that panics has tx rolled back, as an error would (a
	// RelocationsEnder hears of it), and the panic goes on to GC's caller:
	// in background GC, as in any goroutine, it ends the process.
	Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error
}

// RelocationsEnder is a Relocator that keeps in-memory state besides what
// Relocate journals: GC tells it how each transaction its Relocate calls
// wrote in ended, once it has. err is nil if the transaction committed,
// and the relocations hold; otherwise it is the error that rolled the
// transaction back (one a Relocate returned, or Commit's), and every
// Relocate call since the previous RelocationsEnded is void: the owner
// must undo what it changed in memory for them. GC calls it from the
// goroutine that called Relocate, inside its pass. When the transaction
// rolled back, it calls it from inside the rollback, before the device
// takes another transaction: none can see, or journal, the void
// relocations' changes before they are undone. So, as Relocate, it must
// not call what would wait for a transaction or for the pass (see
// Relocate). A commit is told after the writer is free, when another
// transaction may have begun: make the changes in Relocate, and undo
// them here, rather than make them here. A RelocationsEnded that panics
// when told of a rollback still lets the rollback end, then its panic
// goes on to GC's caller, as a Relocate's does.
type RelocationsEnder interface {
	Relocator
	RelocationsEnded(err error)
}

// LogOptions configures a log's garbage collection; see Log.SetOwner.
//
// GC copies every live entry it meets at the head to the tail, so its cost
// follows the share of the ring that is live: with half the entries live,
// each byte it reclaims costs about a byte relocated, and with most live,
// it relocates many bytes per byte reclaimed. Size the ring so that the
// live data fills a modest part of it.
type LogOptions struct {
	// GCThresholdBytes is the free space below which GC runs in the
	// background, until about twice as much is free. Zero means a quarter
	// of the ring; a negative value means never in the background, only
	// through Log.GC. It may not exceed the ring's size.
	GCThresholdBytes int64

	// RelocationReserveBytes is free space that appends leave to GC,
	// which needs room at the tail to relocate the live entry at the head
	// before it can reclaim anything behind it: an append that would
	// leave less fails with ErrNoSpace. Zero means an eighth of the ring
	// if the owner implements Relocator and none otherwise; a negative
	// value means none. Relocating an entry takes up to twice its frame
	// when the copy must skip the ring's end, so in a full ring GC can
	// move any entry up to half the reserve.
	RelocationReserveBytes int64
}

// LogStats is a snapshot of a log's positions and counters. Positions are
// virtual (monotonic byte counts since the log was created); counters
// count since Open. The relocation counters count the copies of GC
// transactions rolled back too, whether or not their room went back to
// the log.
type LogStats struct {
	SizeBytes   int64 // bytes of ring
	Head        int64 // oldest position not yet reclaimed
	DurableTail int64 // end of the entries a crash keeps
	Tail        int64 // end of the newest reservation
	UsedBytes   int64 // Tail - Head: entries, reservations and padding
	FreeBytes   int64 // SizeBytes - UsedBytes

	// PaddingBytes counts the bytes that appends and GC's copies
	// skipped at the ring's end, as they reserved them: padding given
	// back to appends (by Cancel, or with a rolled-back GC transaction's
	// copies) stays counted.
	PaddingBytes   int64
	GCRuns         int64 // GC passes begun
	ReclaimedBytes int64 // bytes the head moved over
	RelocatedBytes int64 // bytes GC's copies took at the tail, padding before them included
	Relocations    int64 // entries GC copied to the tail
}

// Entry is one durable entry, as Log.Entries yields it.
type Entry struct {
	Pos    int64  // virtual position of the entry's frame
	Next   int64  // position just past it: pass to Entries to resume after it
	Offset int64  // device offset of the payload, as Reservation.Offset gave it
	Data   []byte // the payload; valid until the iteration moves on
}

// Reservation is space reserved at a log's tail by Log.Append: the owner
// writes exactly Size bytes at Offset, then calls Log.Commit, or Log.Cancel
// to give the space up.
type Reservation struct {
	log   *Log
	start uint64 // where the span begins, padding included
	pos   uint64 // the frame's position
	size  int
	epoch uint64 // the log's epoch at Append: positions are reused after it
}

// Offset returns the device offset where the entry's bytes go, to be
// written with Device.WriteAt or through a writable Slice.
func (r Reservation) Offset() int64 {
	if r.log == nil {
		return 0
	}
	return r.log.payloadOff(r.pos)
}

// Size returns the payload bytes reserved.
func (r Reservation) Size() int { return r.size }

// Pos returns the virtual position of the entry's frame: Entry.Pos of the
// entry once committed.
func (r Reservation) Pos() int64 { return int64(r.pos) }

// spanState is how far a reserved span has come.
type spanState uint8

const (
	spanReserved spanState = iota // the owner may write the payload
	spanSealing                   // Commit or Cancel is writing the frame headers
	spanDone                      // headers written: the durable tail may pass it
)

// span is a reservation not yet passed by the committed prefix.
type span struct {
	start, pos, end uint64 // [start, pos) padding, [pos, end) the frame
	size            uint32 // payload bytes
	state           spanState
	cancelled       bool        // Cancel made it padding
	copy            bool        // GC's copy of an entry
	written         bool        // Log.Write wrote the headers for the payload now in place
	staged          stagedBytes // Log.Write's frame, header and payload, not yet written
}

// stagedBytes is a frame Log.Write staged: in a buffer of the device's
// frame pool when one is free, else on the heap (see staging). The zero
// value is no frame.
type stagedBytes struct {
	buf   *Buffer // nil: frame is on the heap
	frame []byte
}

// stageFrame returns room for a frame of n bytes.
func stageFrame(d *Device, n int) stagedBytes {
	if b := stage(d.staging.frames); b != nil {
		if n <= len(b.Bytes()) {
			return stagedBytes{buf: b, frame: b.Bytes()[:n]}
		}
		unstage(b)
	}
	return stagedBytes{frame: make([]byte, n)}
}

// release gives s's buffer back; s holds no frame afterwards.
func (s *stagedBytes) release() {
	unstage(s.buf)
	*s = stagedBytes{}
}

// stagedFrame is a frame Log.Write staged whose span is done, waiting for
// the flush leader to write it.
type stagedFrame struct {
	off int64 // device offset of the frame
	stagedBytes
}

// logSet is the device's logs: those laid out at Create, then those
// carved from the heap.
type logSet struct {
	mu   sync.Mutex             // held by CreateLog, DropLog and Close while they change the set
	list atomic.Pointer[[]*Log] // replaced, never changed: readers take no lock
}

// all returns the logs; the slice must not be changed.
func (s *logSet) all() []*Log {
	if s == nil {
		return nil
	}
	if p := s.list.Load(); p != nil {
		return *p
	}
	return nil
}

// set replaces the logs with list; s.mu is held.
func (s *logSet) set(list []*Log) { s.list.Store(&list) }

// Log is one log-structured region of a device, returned by Device.Log or
// Device.CreateLog. Its methods are safe for concurrent use. After
// Device.DropLog, they return ErrClosed.
type Log struct {
	d       *Device
	name    string
	ring    region
	size    uint64              // ring.size
	slotOff int64               // device offset of the log's table slot
	carved  bool                // the ring is a heap page (CreateLog)
	dropper atomic.Pointer[Txn] // DropLog's transaction, which alone may free the ring's page

	mu   sync.Mutex
	cond sync.Cond // signalled when a position below moves, and on close

	head         uint64 // the head a crash keeps: bytes before it may be reused
	tail         uint64 // where the next reservation starts
	committedEnd uint64 // end of the contiguous run of done spans
	writtenEnd   uint64 // end of the run of done spans whose bytes are in the file
	loggedTail   uint64 // tail written by the newest committed transaction
	durableTail  uint64 // tail of a transaction known durable

	spans []span // spans[first:] are reservations past committedEnd, in order
	first int

	// cancelledFrom is where the run of cancelled spans that ends at
	// committedEnd begins (committedEnd if the last span passed was not
	// cancelled). Cancel gives such a run at the tail back to appends,
	// and bumps epoch, so that the reservations it ended cannot be taken
	// for the new ones at their positions.
	cancelledFrom uint64
	// cancelledBeforeCopy holds, by a GC copy's start, the cancelledFrom
	// its passing replaced: the cancelled run the copy buried, which goes
	// back to appends with the copy if a chunk gives the copy back. Every
	// chunk clears it as it ends. An orphan (a copy a chunk that rolled
	// back could not give back, waiting behind a reservation) may pass
	// between chunks: its record stays until the next chunk ends, and
	// holds as long as the tail is past the copy, which only
	// retractCopies moves below it. nil when empty.
	cancelledBeforeCopy map[uint64]uint64
	epoch               uint64
	// staleBelow: a position below it may hold, where a padding goes now,
	// the header of a frame once written for that very position and then
	// given up: by the process before a crash or Close (past the tail it
	// had journaled), or by a Cancel or a GC chunk that gave the tail
	// back. Read and Entries check the frame an offset points at, not the
	// chain of frames that leads there, so each padding written below it
	// has such headers cleared first (clearStale). Written under mu, it
	// only grows.
	staleBelow atomic.Uint64

	staged      []stagedFrame // frames below committedEnd not yet written, in order
	stagedSpare []stagedFrame // the other half of a double buffer: writeStaged's
	writeMu     sync.Mutex    // held by writeStaged: writtenEnd moves in order
	batch       []byte        // writeStaged's buffer for adjacent frames; under writeMu

	flushing     bool            // a leader is journaling the tail
	waiters      []*waiter       // Commits waiting for the durable tail
	leader       *Txn            // the leader's transaction, once begun
	txTails      map[*Txn]uint64 // tail each open transaction journals
	closed       bool            // the device is closing
	owner        GarbageChecker  // nil: GC has no one to ask
	reloc        Relocator       // owner, if it relocates
	gcGoal       uint64          // background GC runs below this free space; 0: never
	reserveBytes uint64          // free space only GC's copies may take
	stopGC       context.CancelFunc
	gcCtx        context.Context
	gcDone       chan struct{} // closed when the background goroutine ends; nil if none
	kick         chan struct{} // wakes the background goroutine
	gcMu         gcLock        // one GC pass at a time: the head has one mover
	padBytes     atomic.Int64
	closing      atomic.Bool // l.closed, for GC to poll without the lock

	gcRuns, reclaimed, relocatedBytes, relocations atomic.Int64

	// orphans are GC's copies that a chunk which did not commit could not
	// give back (see retractCopies), by the position of the entry each
	// copies: the next pass relocates that entry to its copy rather than
	// copy it again. Used by GC alone, under gcMu.
	orphans map[uint64]span
	// Where adoptCopy looks for orphans the process did not make (GC
	// alone, under gcMu): searchedAt is the position of the entry it last
	// looked through the ring for, plus one (0: none yet); adoptAt is
	// where the copy of the next live entry should follow the last one it
	// adopted (0: no such run); openSearched says whether the first entry
	// GC had to copy since Open has been looked for.
	searchedAt, adoptAt uint64
	openSearched        bool

	// Recycled so that appending costs no allocation.
	waiterPool sync.Pool // *waiter
}

// Log returns the log region called name, laid out at Create by
// Options.LogRegions or carved by CreateLog. Every call with one name
// returns the same *Log, until the log is dropped.
func (d *Device) Log(name string) (*Log, error) {
	if d.unmade() {
		return nil, errNil("Device")
	}
	if d.closed.Load() {
		return nil, ErrClosed
	}
	for _, l := range d.logs.all() {
		if l.name == name {
			return l, nil
		}
	}
	return nil, fmt.Errorf("%w: no log region %q", ErrNotFound, name)
}

// CreateLog carves a log called name out of the heap: its ring is one
// buddy page of at least sizeBytes, rounded up to a power of two no
// smaller than MinPageSize (Log.Stats reports the size), allocated in the
// same transaction that records the log in the device's carved log table.
// It returns once that transaction is durable: after a crash the log is
// found, empty or with the entries committed since, and its page is
// allocated. A ring is one contiguous page, so sizeBytes may not exceed
// MaxPageSize. CreateLog reads the page once, to clear any frame header
// a former owner (a dropped log) left in it.
//
// Names are shared with the logs laid out at Create. CreateLog fails with
// ErrInvalidArgument for a name that is empty, longer than 32 bytes or
// holds a zero byte, or a size below 1; ErrTooLarge above MaxPageSize;
// ErrExists when a log of that name exists; ErrNoSpace when the heap has
// no page of that size or all 64 carved log slots are taken; ErrVersion on
// a device of format version 1, which has no carved log table. A failed
// CreateLog changes nothing. It begins a transaction, so it must not be
// called while the calling goroutine holds one open.
func (d *Device) CreateLog(name string, sizeBytes int64) (*Log, error) {
	if d.unmade() {
		return nil, errNil("Device")
	}
	if err := d.usable(); err != nil {
		return nil, err
	}
	switch {
	case !validLogName(name):
		return nil, fmt.Errorf("%w: log name %q is not 1 to %d bytes without zero bytes", ErrInvalidArgument, name, logNameMaxBytes)
	case sizeBytes < 1:
		return nil, fmt.Errorf("%w: log %q of %d bytes", ErrInvalidArgument, name, sizeBytes)
	case sizeBytes > d.geometry.maxPage:
		return nil, fmt.Errorf("%w: log %q of %d bytes: a carved ring is one page, at most MaxPageSize %d", ErrTooLarge, name, sizeBytes, d.geometry.maxPage)
	case d.geometry.version < carvedLogsVersion:
		return nil, fmt.Errorf("%w: the device has format version %d; carving logs needs version %d", ErrVersion, d.geometry.version, carvedLogsVersion)
	}
	set := d.logs
	set.mu.Lock()
	defer set.mu.Unlock()
	for _, l := range set.all() {
		if l.name == name {
			return nil, fmt.Errorf("%w: log %q", ErrExists, name)
		}
	}
	tx, err := d.Begin()
	if err != nil {
		return nil, err
	}
	// The set holds every carved log: CreateLog and DropLog change the
	// table only with set.mu held. A free slot is all zero.
	tableOff := d.geometry.state.off + carvedLogTableOff
	slot := -1
	var b [logSlotBytes]byte
	for i := range carvedLogLimit {
		tx.read(b[:], tableOff+int64(i)*logSlotBytes)
		if allZero(b[:]) {
			slot = i
			break
		}
	}
	if slot < 0 {
		tx.Rollback()
		return nil, fmt.Errorf("%w: all %d carved log slots are taken", ErrNoSpace, carvedLogLimit)
	}
	a, err := tx.Alloc(sizeBytes)
	if err != nil {
		tx.Rollback()
		return nil, err
	}
	if err := d.clearFrameHeaders(a.Offset(), a.Size()); err != nil {
		tx.Rollback()
		return nil, err
	}
	s := logSlot{name: name, ring: region{a.Offset(), a.Size()}}
	encodeLogSlot(b[:], s)
	slotOff := tableOff + int64(slot)*logSlotBytes
	tx.write(slotOff, b[:], kindMeta)
	l := newLog(d, s, slotOff)
	l.carved = true
	l.staleBelow.Store(0) // the page holds no header now
	// Into the set as the transaction commits, with the writer slot
	// still held: from then on the ring is guarded as the log's.
	tx.join(&onCommit{func() { set.set(append(slices.Clone(set.all()), l)) }})
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return l, nil
}

// clearFrameHeaders zeroes the magic of every header that checks in
// [off, +n), a page CreateLog takes for a ring: a dropped log's frames, or
// bytes a page's owner wrote, must not read as the new log's entries where
// a padding of its leaves them, at whatever lap its positions reach theirs.
// The journal syncs the writes before the transaction that makes the log.
func (d *Device) clearFrameHeaders(off, n int64) error {
	var zero [4]byte
	for p := off; p+logFrameHeaderBytes <= off+n; p += 8 {
		if !isLogFrameHeader(d.view[p : p+logFrameHeaderBytes]) {
			continue
		}
		if _, err := d.store.WriteAt(zero[:], p); err != nil {
			return d.fail(err)
		}
		markUserDirty(d)
	}
	return nil
}

// onCommit is a participant that runs f when its transaction commits,
// with the writer slot still held.
type onCommit struct{ f func() }

func (p *onCommit) prepare(*Txn) error { return nil }
func (p *onCommit) committed(*Txn)     { p.f() }
func (p *onCommit) rolledBack(*Txn)    {}

// DropLog removes the log called name, which CreateLog carved, and frees
// its page in the same transaction that clears its slot in the carved log
// table; it returns once that is durable. The page is handed out again
// only after that, as any freed page. The *Log's methods return ErrClosed
// from then on (those that would write return ErrFailed once the device
// has failed); its entries are gone.
//
// DropLog fails with ErrNotFound for a name no log carries,
// ErrInvalidArgument for a log laid out at Create, and ErrInUse while the
// log has a reservation not yet durable (commit or cancel it first), a
// Commit waiting, or a GC pass under way. A failed DropLog changes
// nothing, unless the device failed (ErrFailed) while committing it: then
// the log is closed as well. It begins a transaction, so it must not be
// called while the calling goroutine holds one open.
func (d *Device) DropLog(name string) error {
	if d.unmade() {
		return errNil("Device")
	}
	if err := d.usable(); err != nil {
		return err
	}
	set := d.logs
	set.mu.Lock()
	defer set.mu.Unlock()
	var l *Log
	for _, m := range set.all() {
		if m.name == name {
			l = m
		}
	}
	switch {
	case l == nil:
		return fmt.Errorf("%w: no log region %q", ErrNotFound, name)
	case !l.carved:
		return fmt.Errorf("%w: log %q was laid out at Create; only logs from CreateLog can be dropped", ErrInvalidArgument, name)
	case !l.gcMu.TryLock():
		return fmt.Errorf("%w: log %q is being collected", ErrInUse, name)
	}
	l.mu.Lock()
	if l.committedEnd == l.tail && l.durableTail < l.tail && !l.flushing && len(l.waiters) == 0 && !l.closed {
		// Every span is done, but the tail past the last Commit was
		// never journaled: cancelled spans (or a Commit yet to wait).
		// Journal it, as the next Commit would have.
		if err := l.waitDurableUpTo(l.tail, true); err != nil {
			l.gcMu.Unlock()
			return err
		}
		l.mu.Lock()
	}
	if l.tail != l.durableTail || l.flushing || len(l.waiters) > 0 || l.closed {
		closed := l.closed
		l.mu.Unlock()
		l.gcMu.Unlock()
		if closed {
			return ErrClosed
		}
		return fmt.Errorf("%w: log %q has reservations or commits under way", ErrInUse, name)
	}
	// From here Append, GC and readers stop, so that nothing touches the
	// page once it is freed.
	l.closed = true
	l.closing.Store(true)
	l.mu.Unlock()
	left := false
	err := d.Update(func(tx *Txn) error {
		l.dropper.Store(tx)
		// Out of the set as the transaction commits, with the writer
		// slot still held: once a checkpoint covers the free, the page
		// is someone else's, and must not be guarded as the log's.
		tx.join(&onCommit{func() {
			set.set(slices.DeleteFunc(slices.Clone(set.all()), func(m *Log) bool { return m == l }))
			l.dropper.Store(nil)
			left = true
		}})
		var zero [logSlotBytes]byte
		tx.write(l.slotOff, zero[:], kindMeta)
		return tx.Free(makeAddr(l.ring.off, uint(bits.TrailingZeros64(l.size))))
	})
	if err != nil && left {
		// The journal failed after the commit began: the device has
		// failed, and the log, out of the set, is stopped here.
		l.gcMu.Unlock()
		l.stop()
		return err
	}
	if err != nil {
		l.dropper.Store(nil)
		l.mu.Lock()
		l.closed = false
		l.closing.Store(false)
		l.mu.Unlock()
		l.gcMu.Unlock()
		return err
	}
	l.gcMu.Unlock()
	l.stop()
	return nil
}

// Name returns the name the log was created with.
func (l *Log) Name() string {
	if l.unmade() {
		return ""
	}
	return l.name
}

// SetOwner names the owner GC asks about liveness, and starts background
// GC unless opts says otherwise. A nil opts means defaults. If owner also
// implements Relocator, GC moves live entries from the head to the tail;
// otherwise it stops at the first live one. A nil owner stops GC: GC then
// returns ErrInvalidArgument, as it does before any owner is set. Options
// whose GCThresholdBytes exceeds the ring's size, or whose
// RelocationReserveBytes reaches it, are ErrInvalidArgument.
func (l *Log) SetOwner(owner GarbageChecker, opts *LogOptions) error {
	if l.unmade() {
		return errNil("Log")
	}
	var o LogOptions
	if opts != nil {
		o = *opts
	}
	if o.GCThresholdBytes > int64(l.size) || o.RelocationReserveBytes >= int64(l.size) {
		return fmt.Errorf("%w: GCThresholdBytes %d or RelocationReserveBytes %d not below the ring's %d bytes", ErrInvalidArgument, o.GCThresholdBytes, o.RelocationReserveBytes, l.size)
	}
	if l.d.closed.Load() {
		return ErrClosed
	}
	threshold := uint64(0)
	switch {
	case o.GCThresholdBytes == 0:
		threshold = l.size / 4
	case o.GCThresholdBytes > 0:
		threshold = uint64(o.GCThresholdBytes)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.owner = owner
	l.reloc, _ = owner.(Relocator)
	l.gcGoal = threshold
	if owner == nil {
		l.gcGoal = 0
	}
	switch {
	case o.RelocationReserveBytes > 0:
		l.reserveBytes = uint64(o.RelocationReserveBytes)
	case o.RelocationReserveBytes == 0 && l.reloc != nil:
		l.reserveBytes = l.size / 8
	default:
		l.reserveBytes = 0
	}
	if owner != nil && threshold > 0 && l.gcDone == nil && !l.d.opts.ReadOnly {
		l.gcDone = make(chan struct{})
		go l.collectInBackground(l.gcDone)
	}
	if owner != nil && threshold > 0 && l.size-(l.tail-l.head) < threshold {
		l.kickGC()
	}
	return nil
}

// Append reserves room at the tail for an entry of sizeBytes and returns
// where to write it. It does no I/O (it may wait for the log's lock while
// another call writes a staged entry under it, which is rare). It fails
// with ErrInvalidArgument for a size below 1, with ErrNoSpace when the ring
// has no room now (GC may make some: see Log.GC), and with ErrTooLarge when
// the entry could never fit. An entry larger than half the ring may find no
// room even in an empty ring, since it cannot wrap around the ring's end.
// Append takes entries larger than half the relocation reserve
// (LogOptions.RelocationReserveBytes), but GC may have no room to move
// one that reaches the head live in a full ring: then nothing behind it
// is reclaimed until the owner lets it go. Size the reserve for the
// largest entry that stays live.
func (l *Log) Append(sizeBytes int) (Reservation, error) {
	if l.unmade() {
		return Reservation{}, errNil("Log")
	}
	if err := l.d.usable(); err != nil {
		return Reservation{}, err
	}
	if sizeBytes <= 0 {
		return Reservation{}, fmt.Errorf("%w: entry of %d bytes", ErrInvalidArgument, sizeBytes)
	}
	if int64(sizeBytes) > l.maxPayloadBytes() {
		return Reservation{}, fmt.Errorf("%w: entry of %d bytes, log %q takes at most %d", ErrTooLarge, sizeBytes, l.name, l.maxPayloadBytes())
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return Reservation{}, ErrClosed
	}
	if uint64(logFrameBytes(int64(sizeBytes)))+l.reserveBytes > l.size {
		l.mu.Unlock()
		return Reservation{}, fmt.Errorf("%w: entry of %d bytes, log %q keeps %d of its %d bytes for GC", ErrTooLarge, sizeBytes, l.name, l.reserveBytes, l.size)
	}
	s, err := l.reserveLocked(uint32(sizeBytes), l.reserveBytes)
	if err != nil || (l.gcGoal > 0 && l.size-(l.tail-l.head) < l.gcGoal) {
		l.kickGC()
	}
	epoch := l.epoch
	l.mu.Unlock()
	if err != nil {
		return Reservation{}, err
	}
	return Reservation{log: l, start: s.start, pos: s.pos, size: sizeBytes, epoch: epoch}, nil
}

// Commit seals the entry r reserved, whose bytes the caller has written,
// and returns once the durable tail covers it: after a crash it is found
// intact. An entry committed before the ones reserved ahead of it waits for
// them. Commit must not be called while the caller holds a Txn.
func (l *Log) Commit(r Reservation) error {
	if l.unmade() {
		return errNil("Log")
	}
	if r.log == l && l.d.usable() == nil {
		l.mu.Lock()
		if i := l.liveLocked(r, spanReserved); i >= 0 && (l.spans[i].staged.frame != nil || l.spans[i].written) {
			// Write staged or wrote the whole frame: nothing to write here.
			l.spans[i].state = spanDone
			end := l.spans[i].end
			l.advanceLocked()
			if !l.retractableLocked() {
				return l.waitDurableLocked(end)
			}
			l.mu.Unlock()
			l.retractCancelled()
			return l.waitDurable(end)
		}
		l.mu.Unlock()
	}
	s, err := l.seal(r, false)
	if err != nil {
		return err
	}
	l.mu.Lock()
	retract := l.retractableLocked()
	l.mu.Unlock()
	if retract {
		l.retractCancelled()
	}
	return l.waitDurable(s.end)
}

// Write gives p, the whole entry, for r's offset, along with the frame's
// header, whose checksum comes from p rather than from the device. Where
// the file has a writable mapping (a real file on Linux), header and
// payload are copied into it: the page cache, as a write would fill it,
// without a system call. Elsewhere an entry of up to 64 KiB is copied and
// staged, and the Commit that flushes the tail over it writes it together
// with the entries next to it, so that many small entries cost one write;
// a larger one is written now, as is one after a padding that needs a
// header (24 bytes or more skipped at the ring's end). Either way the
// journal syncs the bytes before the tail that covers them. p must be
// exactly r.Size() bytes and may be reused once Write returns. Commit
// must still follow. Writing into the entry again with Device.WriteAt
// afterwards is allowed, and makes Commit rewrite the header.
func (l *Log) Write(r Reservation, p []byte) error {
	if l.unmade() {
		return errNil("Log")
	}
	if r.log != l {
		return fmt.Errorf("%w: the reservation is not from log %q", ErrNotReserved, l.name)
	}
	if len(p) != r.size {
		return fmt.Errorf("%w: %d bytes for an entry of %d", ErrInvalidArgument, len(p), r.size)
	}
	if err := l.d.usable(); err != nil {
		return err
	}
	if l.d.mapsHome || len(p) > logJoinedWriteMaxBytes || r.pos-r.start >= logFrameHeaderBytes {
		// Through the file's writable mapping if there is one; else
		// large, or after padding that needs a header: written now.
		return l.writeNow(r, p)
	}
	// Build the frame before taking the lock, so that appenders do not
	// wait for the copy and the checksum. Close waits for the staging
	// buffer to be handed over (lifeMu), and gives back the staged ones.
	l.d.lifeMu.RLock()
	defer l.d.lifeMu.RUnlock()
	st := stageFrame(l.d, int(logFrameBytes(int64(len(p)))))
	frame := st.frame
	putLogFrame(frame, logFrame{pos: r.pos, frameBytes: int64(len(frame)), payloadBytes: uint32(len(p)), payloadCRC: crc32.Checksum(p, castagnoli)})
	clear(frame[logFrameHeaderBytes+copy(frame[logFrameHeaderBytes:], p):])
	l.mu.Lock()
	i := l.liveLocked(r, spanReserved)
	if i < 0 {
		closed := l.closed
		l.mu.Unlock()
		st.release()
		if closed {
			return ErrClosed
		}
		return fmt.Errorf("%w: position %d of log %q", ErrNotReserved, r.pos, l.name)
	}
	l.spans[i].staged.release()
	l.spans[i].staged = st
	l.mu.Unlock()
	return nil
}

// writeNow is Write for an entry written at once, header and payload.
func (l *Log) writeNow(r Reservation, p []byte) error {
	l.mu.Lock()
	i := l.liveLocked(r, spanReserved)
	if i < 0 {
		closed := l.closed
		l.mu.Unlock()
		if closed {
			return ErrClosed
		}
		return fmt.Errorf("%w: position %d of log %q", ErrNotReserved, r.pos, l.name)
	}
	// Sealing keeps Commit, Cancel and WriteAt off the span meanwhile.
	l.spans[i].state = spanSealing
	s := l.spans[i]
	l.mu.Unlock()

	crc := crc32.Checksum(p, castagnoli)
	err := l.writeMapped(s, p, crc)
	if errors.Is(err, errUnmapped) {
		err = l.writeHeaders(s, false, p, crc)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	i = l.findLocked(s.start)
	l.spans[i].state = spanReserved
	l.spans[i].written = err == nil
	// An earlier Write's staged frame, if any, is stale now.
	l.spans[i].staged.release()
	return err
}

// liveLocked returns the index in l.spans of the span r reserved if it is
// in state, or -1; l.mu is held.
func (l *Log) liveLocked(r Reservation, state spanState) int {
	if l.closed {
		return -1
	}
	i := l.findLocked(r.start)
	if i < 0 || l.spans[i].state != state || l.spans[i].pos != r.pos || r.epoch != l.epoch {
		return -1
	}
	return i
}

// Cancel gives up the space r reserved: it becomes padding, which lets the
// entries after it become durable. Cancelled space at the tail, with no
// reservation after it, goes back to Append as soon as every reservation
// before it is committed or cancelled: at once if they are, else at the
// Commit or Cancel of the last of them. So a ring filled by reservations
// that were all cancelled takes new entries without GC. Space that a
// flush of the tail has already passed (a Commit's, under way beside the
// Cancel) stays padding, for GC to reclaim. Its bytes are never returned
// as an entry.
func (l *Log) Cancel(r Reservation) error {
	if l.unmade() {
		return errNil("Log")
	}
	if _, err := l.seal(r, true); err != nil {
		return err
	}
	l.retractCancelled()
	return nil
}

// retractCancelled gives the cancelled spans at the tail back to appends
// when no reservation is left after them and no staged write claims
// them: nothing there is durable or will be, and a reopen would drop
// them too. Otherwise only a tail journaled over them would let GC pass
// them, and with no Commit to come a full ring would stay full.
func (l *Log) retractCancelled() {
	// writtenEnd holds still while writeMu is held: no writeStaged is
	// about to claim the spans.
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.retractableLocked() {
		return
	}
	to := max(l.cancelledFrom, l.writtenEnd)
	l.raiseStaleBelow(l.tail)
	l.tail, l.committedEnd, l.cancelledFrom = to, to, to
	l.epoch++
	// A DropLog waiting for the old tail would wait for good: no flush
	// will journal a tail past the new one.
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		if w.end > to {
			w.wake <- wakeUp{retry: true}
		} else {
			kept = append(kept, w)
		}
	}
	clear(l.waiters[len(kept):])
	l.waiters = kept
}

// retractableLocked reports whether retractCancelled would give space
// back now; l.mu is held. Commit asks first, so that a commit with no
// cancelled space behind it does not wait for writeMu.
func (l *Log) retractableLocked() bool {
	to := max(l.cancelledFrom, l.writtenEnd)
	return !l.closed && l.first == len(l.spans) && l.committedEnd == l.tail && to < l.tail
}

// Stats returns the log's positions and counters; after Close, or
// DropLog, those it had then.
func (l *Log) Stats() LogStats {
	if l.unmade() {
		return LogStats{}
	}
	l.mu.Lock()
	s := LogStats{
		SizeBytes:   int64(l.size),
		Head:        int64(l.head),
		DurableTail: int64(l.durableTail),
		Tail:        int64(l.tail),
		UsedBytes:   int64(l.tail - l.head),
	}
	l.mu.Unlock()
	s.FreeBytes = s.SizeBytes - s.UsedBytes
	s.PaddingBytes = l.padBytes.Load()
	s.GCRuns = l.gcRuns.Load()
	s.ReclaimedBytes = l.reclaimed.Load()
	s.RelocatedBytes = l.relocatedBytes.Load()
	s.Relocations = l.relocations.Load()
	return s
}

// durableSpan returns the head and the durable tail: what Entries and
// Read may read. A closed device or a dropped log is ErrClosed.
func (l *Log) durableSpan() (head, end uint64, err error) {
	l.mu.Lock()
	head, end, closed := l.head, l.durableTail, l.closed
	l.mu.Unlock()
	if closed || l.d.closed.Load() {
		return 0, 0, ErrClosed
	}
	return head, end, nil
}

// Entries walks the durable entries from position from (from the head if
// from lies before it) to the durable tail as of the call (or as of a GC
// pass that reclaims the entry being read, which moves the walk on to the
// durable tail it made and may so show entries committed since the call),
// checking each against its checksum. A failed check yields an error and
// ends the walk, as does a from between the head and the durable tail where
// no frame starts (ErrInvalidArgument): pass a position Entry.Next or
// Reservation.Pos gave. A from at or past the durable tail yields nothing,
// whatever it is. An entry that GC relocates during the walk may be seen
// twice, at its old and new position, but a live entry is never missed. As
// with Read, a from inside an entry whose payload holds a whole forged
// frame, header and checksum, walks from that frame.
func (l *Log) Entries(from int64) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		if l.unmade() {
			yield(Entry{}, errNil("Log"))
			return
		}
		head, end, err := l.durableSpan()
		if err != nil {
			yield(Entry{}, err)
			return
		}
		pos := head
		userPos := from > 0 && uint64(from) > head
		if userPos {
			pos = uint64(from)
		}
		var buf []byte
		for pos < end {
			f, data, err := l.readFrame(pos, end, buf)
			if err == nil && userPos && f.frameBytes < logFrameHeaderBytes {
				err = l.paddingStartsAt(head, pos)
			}
			if err != nil && userPos {
				// As Read tells them apart: no frame starting at the
				// caller's position is the caller's mistake, not damage.
				var noFrame bool
				if noFrame, err = l.frameFailure(head, pos, err); noFrame {
					err = fmt.Errorf("%w: no entry starts at position %d", ErrInvalidArgument, pos)
				}
			}
			if errors.Is(err, errReclaimed) {
				// GC passed pos while it was read. Entries it moved now
				// lie before the durable tail it made durable with the
				// head, so the walk goes on there.
				l.mu.Lock()
				pos, end = max(pos, l.head), max(end, l.durableTail)
				l.mu.Unlock()
				userPos = false
				continue
			}
			if err != nil {
				yield(Entry{}, err)
				return
			}
			userPos = false
			if data != nil {
				buf = data[:0]
			}
			next := pos + uint64(f.frameBytes)
			if !f.padding {
				e := Entry{Pos: int64(pos), Next: int64(next), Offset: l.payloadOff(pos), Data: data}
				if !yield(e, nil) {
					return
				}
			}
			pos = next
		}
	}
}

// Read returns a copy of the payload of the durable entry whose payload
// starts at device offset off (as Reservation.Offset gave it), checked
// against its checksum. It fails with ErrNotFound when no durable entry
// starts there: never written, not yet durable, reclaimed, or inside
// another entry. Pass offsets that Reservation.Offset or Entries gave: a
// payload that holds a whole forged frame, header and checksum, reads as
// an entry at the offset inside it.
func (l *Log) Read(off int64) ([]byte, error) {
	if l.unmade() {
		return nil, errNil("Log")
	}
	head, end, err := l.durableSpan()
	if err != nil {
		return nil, err
	}
	notFound := fmt.Errorf("%w: no durable entry of log %q at offset %d", ErrNotFound, l.name, off)
	phys := off - logFrameHeaderBytes - l.ring.off
	if phys < 0 || phys >= l.ring.size || phys%8 != 0 {
		return nil, notFound
	}
	pos, ok := latestBefore(end, uint64(phys), l.size)
	if !ok || pos < head {
		return nil, notFound
	}
	f, data, err := l.readFrame(pos, end, nil)
	switch {
	case errors.Is(err, errReclaimed) || err == nil && f.padding:
		return nil, notFound
	case err != nil:
		noFrame, err := l.frameFailure(head, pos, err)
		if noFrame || errors.Is(err, errReclaimed) {
			return nil, notFound
		}
		return nil, err
	}
	return data, nil
}

// frameFailure tells what err, the failure to read a frame at pos, a
// durable position from head on, means: noFrame if no frame starts there
// (bytes inside a frame are no damage), else the damage where one does,
// or why the walk of the headers could not tell (errReclaimed once GC has
// passed pos, ErrClosed), or err itself when it is no frame check's. Bytes
// that are no frame header at all (no magic, another position) are damage
// only where a frame surely starts: past a damaged header, an offset
// inside an entry would read as damage too.
func (l *Log) frameFailure(head, pos uint64, err error) (noFrame bool, _ error) {
	switch {
	case errors.Is(err, ErrCorrupt):
		starts, serr := l.startsFrame(head, pos, !errors.Is(err, errNoFrame))
		if serr != nil {
			return false, serr
		}
		if !starts {
			return true, nil
		}
		return false, err
	case errors.Is(err, errNoFrame): // paddingStartsAt's
		return true, nil
	}
	return false, err
}

// paddingStartsAt returns nil if the implicit padding to the ring's end
// starts at pos, a durable position from head on: with no room for a
// header, only a walk from the head tells whether a frame starts there.
// Otherwise it returns errReclaimed if the head passed pos meanwhile, or
// why not.
func (l *Log) paddingStartsAt(head, pos uint64) error {
	starts, err := l.startsFrame(head, pos, true)
	if err != nil || starts {
		return err
	}
	return fmt.Errorf("%w: position %d is inside a frame", errNoFrame, pos)
}

// startsFrame reports whether a frame starts at pos, a durable position
// from head on, by walking the frame headers from head: Read asks it where
// what it found fails a check, which is a damaged frame only if one starts
// there. A header that fails before pos leaves the question open, and the
// answer is open, true to have the damage reported. When GC moves the head
// past the frame just read, the walk goes on from the new head, a frame
// start; once the head passes pos it is errReclaimed. A device closed or
// a log dropped meanwhile is ErrClosed.
func (l *Log) startsFrame(head, pos uint64, open bool) (bool, error) {
	d := l.d
	d.lifeMu.RLock()
	defer d.lifeMu.RUnlock()
	p := head
	for p < pos {
		if d.closed.Load() {
			return false, ErrClosed
		}
		f, err := l.frameAt(p)
		l.mu.Lock()
		now, dropped := l.head, l.closed
		l.mu.Unlock()
		switch {
		case dropped:
			return false, ErrClosed
		case now > pos:
			return false, errReclaimed
		case now > p:
			p = now // what was read at p may be gone
			continue
		case err != nil:
			return open, nil
		}
		p += uint64(f.frameBytes)
	}
	return p == pos, nil
}

// GC reclaims space at the head now: it walks the entries that were
// durable when it was called, passing dead ones and relocating live ones
// if the owner implements Relocator, until it meets a live entry it cannot
// move or, for lack of room, cannot copy. A live entry whose bytes fail
// their checksum is not copied: GC stops there and returns the
// *CorruptError (background GC stops there silently, and GC reports it).
// GC waits for a pass already under way, and, to make relocated copies
// durable, for the appends reserved before them to commit; when ctx ends
// first, it returns ctx's error (a pass of its own stops at its next
// step, its copies given back). A log with no owner (SetOwner) is
// ErrInvalidArgument. Do not call it while holding an uncommitted
// Reservation of this log. A pass that moves the head begins a
// transaction, so GC must not be called while the calling goroutine
// holds one open. A nil ctx is context.Background().
func (l *Log) GC(ctx context.Context) error {
	if l.unmade() {
		return errNil("Log")
	}
	if err := l.d.usable(); err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	return l.collect(ctx, true)
}

// maxPayloadBytes is the largest payload a frame of this ring can carry.
func (l *Log) maxPayloadBytes() int64 {
	return min(int64(l.size)-logFrameHeaderBytes, logMaxPayloadBytes)
}

// payloadOff returns the device offset of the payload of the frame at pos.
func (l *Log) payloadOff(pos uint64) int64 {
	return l.ring.off + int64(pos%l.size) + logFrameHeaderBytes
}

// frameOff returns the device offset of the frame at pos.
func (l *Log) frameOff(pos uint64) int64 { return l.ring.off + int64(pos%l.size) }

// kickGC wakes the background goroutine if it sleeps; l.mu is held.
func (l *Log) kickGC() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// logPosLimit bounds a log's positions: they are handed out as int64
// (Reservation.Pos, Entry.Pos, LogStats), and a tail near 2^64 would wrap
// past zero, below the head. No log appends 2^62 bytes in its life; a
// larger position read from the device is corrupt (openLogs).
const logPosLimit = 1 << 62

// reserveLocked reserves a frame for size payload bytes at the tail,
// preceded by padding if it would cross the ring's end, leaving at least
// keepBytes free; l.mu is held.
func (l *Log) reserveLocked(size uint32, keepBytes uint64) (span, error) {
	if l.tail > logPosLimit {
		// openLogs refuses such a tail: only a log that appended 2^62
		// bytes gets here.
		return span{}, corruptf(l.slotOff+logSlotTailOff, "log", "log %q tail at most %d, found %d", l.name, uint64(logPosLimit), l.tail)
	}
	frame := uint64(logFrameBytes(int64(size)))
	phys := l.tail % l.size
	pad := uint64(0)
	if phys+frame > l.size {
		pad = l.size - phys
	}
	if used := l.tail - l.head; used+pad+frame+keepBytes > l.size {
		return span{}, fmt.Errorf("%w: log %q has %d of %d bytes free, an entry of %d bytes needs %d and %d stay free for GC", ErrNoSpace, l.name, l.size-used, l.size, size, pad+frame, keepBytes)
	}
	s := span{start: l.tail, pos: l.tail + pad, end: l.tail + pad + frame, size: size}
	l.tail = s.end
	l.spans = append(l.spans, s)
	l.padBytes.Add(int64(pad))
	return s, nil
}

// findLocked returns the index in l.spans of the live span starting at
// start, or -1; l.mu is held.
func (l *Log) findLocked(start uint64) int {
	live := l.spans[l.first:]
	i := sort.Search(len(live), func(i int) bool { return live[i].start >= start })
	if i == len(live) || live[i].start != start {
		return -1
	}
	return l.first + i
}

// advanceLocked moves committedEnd over the done spans at the front and
// drops them; l.mu is held. Commits that were waiting for those spans may
// now be flushed, and GC may be waiting for its copies to be passed.
func (l *Log) advanceLocked() {
	moved := false
	for l.first < len(l.spans) && l.spans[l.first].state == spanDone {
		s := &l.spans[l.first]
		if s.staged.frame != nil {
			l.staged = append(l.staged, stagedFrame{off: l.frameOff(s.pos), stagedBytes: s.staged})
			s.staged = stagedBytes{}
		}
		l.committedEnd = s.end
		if !s.cancelled {
			if s.copy && l.cancelledFrom < s.start {
				if l.cancelledBeforeCopy == nil {
					l.cancelledBeforeCopy = make(map[uint64]uint64)
				}
				l.cancelledBeforeCopy[s.start] = l.cancelledFrom
			}
			l.cancelledFrom = s.end
		}
		l.first++
		moved = true
	}
	if l.first == len(l.spans) {
		l.spans, l.first = l.spans[:0], 0
	} else if l.first >= 64 && l.first >= len(l.spans)/2 {
		n := copy(l.spans, l.spans[l.first:])
		l.spans, l.first = l.spans[:n], 0
	}
	if moved {
		l.electLocked()
		l.cond.Broadcast()
	}
}

// seal writes the frame headers of the span r reserved, as an entry or,
// when cancelling, as padding, and marks the span done.
func (l *Log) seal(r Reservation, cancel bool) (span, error) {
	if r.log != l {
		return span{}, fmt.Errorf("%w: the reservation is not from log %q", ErrNotReserved, l.name)
	}
	if err := l.d.usable(); err != nil {
		return span{}, err
	}
	l.mu.Lock()
	i := l.liveLocked(r, spanReserved)
	if i < 0 {
		closed := l.closed
		l.mu.Unlock()
		if closed {
			return span{}, ErrClosed
		}
		return span{}, fmt.Errorf("%w: position %d of log %q", ErrNotReserved, r.pos, l.name)
	}
	l.spans[i].state = spanSealing
	s := l.spans[i]
	l.mu.Unlock()

	var err error
	if cancel || !s.written && s.staged.frame == nil {
		err = l.writeHeaders(s, cancel, nil, 0)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	i = l.findLocked(s.start) // spans may have moved in the slice
	if err != nil {
		l.spans[i].state = spanReserved
		return span{}, err
	}
	if cancel {
		l.spans[i].staged.release()
		l.spans[i].cancelled = true
	}
	l.spans[i].state = spanDone
	l.advanceLocked()
	return s, nil
}

// errRelocatePanicked is what a RelocationsEnder is told when a Relocate
// call panicked and GC rolled its transaction back.
var errRelocatePanicked = errors.New("pagealloc: Relocate panicked")

// errUnmapped says that writeMapped could not write: the store has no
// writable mapping, or the filesystem could not back a page of it.
var errUnmapped = errors.New("pagealloc: no writable mapping")

// writeMapped copies the whole frame of span s, payload p with checksum
// crc, and the padding header before it if it needs one, into the file
// through its writable mapping: the page cache, as a write would, without
// a system call. The journal's sync makes the bytes durable as it does
// written ones. It returns errUnmapped, having perhaps copied part of the
// frame, where writeHeaders must write it instead.
func (l *Log) writeMapped(s span, p []byte, crc uint32) error {
	d := l.d
	d.lifeMu.RLock()
	defer d.lifeMu.RUnlock()
	if d.closed.Load() {
		return ErrClosed
	}
	if d.homeView == nil {
		return errUnmapped
	}
	// A page the filesystem cannot back (out of space) faults; copyMapped
	// recovers, and writeHeaders's write then reports the error.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if pad := s.pos - s.start; pad >= logFrameHeaderBytes {
		if err := l.clearStale(s.start, s.pos, true); err != nil {
			return err
		}
		if !putFrameMapped(d.homeView[l.frameOff(s.start):], logFrame{padding: true, frameBytes: int64(pad), pos: s.start}) {
			return errUnmapped
		}
	}
	off := l.frameOff(s.pos)
	if !copyMapped(d.homeView[off+logFrameHeaderBytes:], p) ||
		!putFrameMapped(d.homeView[off:], logFrame{pos: s.pos, frameBytes: int64(s.end - s.pos), payloadBytes: s.size, payloadCRC: crc}) {
		return errUnmapped
	}
	// After the copies, as in writeHeaders.
	markUserDirty(d)
	return nil
}

// putFrameMapped encodes f's header into dst, a writable mapping of the
// file, recovering from a fault as copyMapped does. Encoding in place
// spares a header buffer, which the checksum would make escape.
func putFrameMapped(dst []byte, f logFrame) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	putLogFrame(dst, f)
	return true
}

// markUserDirty records that the caller's bytes were written since the
// last sync, so that the journal syncs them before its next record. It
// looks first: a flag already set is cleared only by a journal write that
// syncs after clearing it, which covers these bytes too; and not writing
// it spares appenders on every core a fight over its cache line.
func markUserDirty(d *Device) {
	if !d.userDirty.Load() {
		d.userDirty.Store(true)
	}
}

// logJoinedWriteMaxBytes is the largest payload written in one write with
// its header, through a copy.
const logJoinedWriteMaxBytes = 64 << 10

// writeHeaders writes the headers of span s: padding before the frame
// if it needs a header, then the frame's. An entry's checksum is computed
// from the payload the owner wrote in place, unless the payload is given
// in copied, with its checksum (Log.Write; GC's copies): then the payload
// goes out too, small ones in the same write as the header.
func (l *Log) writeHeaders(s span, cancel bool, copied []byte, copiedCRC uint32) error {
	d := l.d
	d.lifeMu.RLock()
	defer d.lifeMu.RUnlock()
	if d.closed.Load() && copied == nil {
		// The mapping goes away once Close has the lock; GC is stopped
		// before then.
		return ErrClosed
	}
	if d.view == nil {
		// Close has ended, and closed the store: a Log.Write whose
		// writeMapped found no writable mapping before it.
		return ErrClosed
	}
	var hdr [logFrameHeaderBytes]byte
	if pad := s.pos - s.start; pad >= logFrameHeaderBytes {
		if err := l.clearStale(s.start, s.pos, false); err != nil {
			return err
		}
		putLogFrame(hdr[:], logFrame{padding: true, frameBytes: int64(pad), pos: s.start})
		if _, err := d.store.WriteAt(hdr[:], l.frameOff(s.start)); err != nil {
			return d.fail(err)
		}
	}
	f := logFrame{pos: s.pos, frameBytes: int64(s.end - s.pos), payloadBytes: s.size}
	frame := hdr[:]
	switch {
	case cancel:
		if err := l.clearStale(s.pos, s.end, false); err != nil {
			return err
		}
		f = logFrame{padding: true, frameBytes: f.frameBytes, pos: s.pos}
	case copied != nil && len(copied) > logJoinedWriteMaxBytes:
		// Copying a large payload behind its header would cost more
		// than the second write saves.
		f.payloadCRC = copiedCRC
		if _, err := d.store.WriteAt(copied, l.payloadOff(s.pos)); err != nil {
			return d.fail(err)
		}
	case copied != nil:
		f.payloadCRC = copiedCRC
		staged := stage(d.staging.frames) // or the heap: see staging
		defer unstage(staged)
		frame = append(append(staged.bytesOr(nil)[:0], hdr[:]...), copied...)
	default:
		off := l.payloadOff(s.pos)
		f.payloadCRC = crc32.Checksum(d.view[off:off+int64(s.size)], castagnoli)
	}
	putLogFrame(frame, f)
	if _, err := d.store.WriteAt(frame, l.frameOff(s.pos)); err != nil {
		return d.fail(err)
	}
	// After the writes, not before: the journal clears the flag when it
	// syncs, and a write that lands after that sync must leave it set.
	markUserDirty(d)
	return nil
}

// raiseStaleBelow records that positions up to tail, which the tail is
// about to give back, may hold headers of frames given up; l.mu is held.
func (l *Log) raiseStaleBelow(tail uint64) {
	if tail > l.staleBelow.Load() {
		l.staleBelow.Store(tail)
	}
}

// clearStale zeroes the magic of every header that checks inside the
// padding about to be written from position from to to, below staleBelow:
// a frame given up there would otherwise read as durable once the tail
// passed the padding. The padding's own header, at from, is written over
// anyway. It writes through the writable mapping if mapped, returning
// errUnmapped where that fails, else through the store. l.d.lifeMu is held
// to read, and the device is open.
func (l *Log) clearStale(from, to uint64, mapped bool) error {
	d := l.d
	var zero [4]byte
	for pos := from + 8; pos < min(to, l.staleBelow.Load()); pos += 8 {
		phys := int64(pos % l.size)
		if phys+logFrameHeaderBytes > l.ring.size {
			break // a padding never wraps
		}
		off := l.ring.off + phys
		if !isLogFrameHeader(d.view[off : off+logFrameHeaderBytes]) {
			continue
		}
		if mapped {
			if !copyMapped(d.homeView[off:], zero[:]) {
				return errUnmapped
			}
		} else if _, err := d.store.WriteAt(zero[:], off); err != nil {
			return d.fail(err)
		}
	}
	return nil
}

// stopErrLocked returns why waiting on this log must end, or nil; l.mu is
// held.
func (l *Log) stopErrLocked() error {
	if f := l.d.failure.Load(); f != nil {
		return f
	}
	if l.closed {
		return ErrClosed
	}
	return nil
}

// waiter is a Commit (or DropLog) waiting for the durable tail to pass
// end.
type waiter struct {
	end  uint64
	wake chan wakeUp // buffered: the waker never blocks
}

// wakeUp tells a waiter to return err, to lead the next flush, or, after
// a retraction gave back the space its end lies in, to look again.
type wakeUp struct {
	lead  bool
	retry bool
	err   error
}

// waitDurable returns once the durable tail reaches end. The first Commit
// that finds nothing being flushed leads: it journals the tail over every
// span done so far. The rest wait on a channel of their own, so that one
// durable tail wakes just the commits it covers; and a transaction that
// commits in memory hands the lead to a waiter it leaves behind (see
// electLocked), whose record can then join the journal's next group while
// this one syncs.
func (l *Log) waitDurable(end uint64) error {
	l.mu.Lock()
	return l.waitDurableLocked(end)
}

// waitDurableLocked is waitDurable with l.mu held, which it releases.
func (l *Log) waitDurableLocked(end uint64) error {
	return l.waitDurableUpTo(end, false)
}

// waitDurableUpTo is waitDurableLocked; with doneOnly (DropLog's wait)
// it waits for no more than the spans done: a reservation made meanwhile
// is for DropLog to refuse, not to wait for while it holds the logs' lock.
func (l *Log) waitDurableUpTo(end uint64, doneOnly bool) error {
	for {
		// A Commit's end never passes the tail, but DropLog waits for
		// the whole tail, and cancelled space in it may be retracted
		// meanwhile: nothing past the tail will become durable.
		end = min(end, l.tail)
		if doneOnly {
			end = min(end, l.committedEnd)
		}
		if l.durableTail >= end {
			l.mu.Unlock()
			return nil
		}
		if err := l.stopErrLocked(); err != nil {
			l.mu.Unlock()
			return err
		}
		if l.flushing || l.loggedTail >= end || l.committedEnd < end {
			w := l.waiterPool.Get().(*waiter)
			w.end = end
			l.waiters = append(l.waiters, w)
			l.mu.Unlock()
			// Every wake-up removes w from l.waiters first, so w is
			// free to reuse once received from.
			u := <-w.wake
			l.waiterPool.Put(w)
			if u.retry {
				l.mu.Lock()
				continue
			}
			if !u.lead {
				return u.err
			}
			l.mu.Lock()
		}
		l.flushing = true
		l.mu.Unlock()
		if err := l.flushTail(); err != nil {
			return err
		}
		l.mu.Lock()
	}
}

// electLocked hands the lead, if no one holds it, to a waiter whose span
// is done but not yet journaled; l.mu is held.
func (l *Log) electLocked() {
	if l.flushing {
		return
	}
	for i, w := range l.waiters {
		if w.end > l.loggedTail && w.end <= l.committedEnd {
			l.flushing = true
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			w.wake <- wakeUp{lead: true}
			return
		}
	}
}

// wakeLocked releases the waiters the durable tail now covers, or all of
// them with err; l.mu is held.
func (l *Log) wakeLocked(err error) {
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		switch {
		case err != nil:
			w.wake <- wakeUp{err: err}
		case w.end <= l.durableTail:
			w.wake <- wakeUp{}
		default:
			kept = append(kept, w)
		}
	}
	clear(l.waiters[len(kept):])
	l.waiters = kept
}

// flushTail writes the frames staged for every span done so far, journals
// the tail over them and waits for it to be durable.
func (l *Log) flushTail() error {
	// Let the appenders that are ready run first: their spans get done
	// and join this flush rather than each leading one of their own,
	// which costs a write and a transaction apiece when the disk is fast.
	runtime.Gosched()
	err := l.writeStaged()
	var tx *Txn
	if err == nil {
		tx, err = l.d.Begin()
	}
	if err != nil {
		l.mu.Lock()
		l.flushing = false
		l.wakeLocked(err)
		l.mu.Unlock()
		return err
	}
	l.mu.Lock()
	l.leader = tx
	l.mu.Unlock()
	tx.join(l)
	err = tx.Commit()
	l.finish(tx, err, nil)
	return err
}

// logBatchMaxBytes bounds the bytes of adjacent staged frames that
// writeStaged joins into one write.
const logBatchMaxBytes = 1 << 20

// writeStaged writes the frames staged below the committed end, adjacent
// ones in one write, and moves writtenEnd to that end: every span below it
// is then in the file, and a transaction may journal the tail there.
func (l *Log) writeStaged() error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	// Held from taking the frames to giving their buffers back, so that
	// Close finds every staged frame either still staged or returned.
	l.d.lifeMu.RLock()
	defer l.d.lifeMu.RUnlock()
	l.mu.Lock()
	frames, end := l.staged, l.committedEnd
	l.staged = l.stagedSpare[:0]
	l.mu.Unlock()
	err := l.writeFrames(frames)
	for i := range frames {
		frames[i].release()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stagedSpare = frames[:0]
	if err != nil {
		return err
	}
	l.writtenEnd = max(l.writtenEnd, end)
	return nil
}

// releaseStaged gives back the buffers of the frames staged and not
// written, at Close.
func (l *Log) releaseStaged() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.spans {
		l.spans[i].staged.release()
	}
	for i := range l.staged {
		l.staged[i].release()
	}
	l.staged = l.staged[:0]
}

// writeFrames writes frames, which are in ring order; runs of adjacent
// frames go out in one write, through a copy. l.writeMu and d.lifeMu (to
// read) are held.
func (l *Log) writeFrames(frames []stagedFrame) error {
	if len(frames) == 0 {
		return nil
	}
	d := l.d
	if d.closed.Load() {
		return ErrClosed
	}
	for len(frames) > 0 {
		// The run of frames that follow each other in the file.
		n, runBytes := 1, len(frames[0].frame)
		for n < len(frames) && frames[n].off == frames[0].off+int64(runBytes) && runBytes+len(frames[n].frame) <= logBatchMaxBytes {
			runBytes += len(frames[n].frame)
			n++
		}
		out := frames[0].frame
		if n > 1 {
			out = l.batch[:0]
			for _, f := range frames[:n] {
				out = append(out, f.frame...)
			}
			l.batch = out[:0]
		}
		if _, err := d.store.WriteAt(out, frames[0].off); err != nil {
			return d.fail(err)
		}
		frames = frames[n:]
	}
	// After the writes, as in writeHeaders.
	markUserDirty(d)
	return nil
}

// finish adopts what tx made durable: its tail, and the head GC moved to
// when newHead is not nil.
func (l *Log) finish(tx *Txn, err error, newHead *uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leader == tx {
		// Still leading: tx wrote nothing, so committed never ran.
		l.leader, l.flushing = nil, false
	}
	if tail, ok := l.txTails[tx]; ok && err == nil {
		// Groups become durable in order: every earlier tail is too.
		l.durableTail = max(l.durableTail, tail)
	}
	delete(l.txTails, tx)
	if err == nil && newHead != nil {
		l.reclaimed.Add(int64(*newHead - l.head))
		l.head = *newHead
	}
	if err != nil && l.d.failure.Load() != nil {
		// Nothing more will become durable.
		l.wakeLocked(err)
	} else {
		l.wakeLocked(nil)
		l.electLocked()
	}
	l.cond.Broadcast()
}

// prepare journals the tail over every span done and written so far, if
// it moved: a transaction that joins the log always carries the freshest
// tail.
func (l *Log) prepare(tx *Txn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.writtenEnd > l.loggedTail {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], l.writtenEnd)
		tx.write(l.slotOff+logSlotTailOff, b[:], kindMeta)
		l.txTails[tx] = l.writtenEnd
	}
	return nil
}

// committed records the tail tx journals, or else the tail journaled
// before it, which is durable once tx is, and, if tx was the leader's,
// hands the lead on.
func (l *Log) committed(tx *Txn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if tail, ok := l.txTails[tx]; ok {
		l.loggedTail = tail
	} else if l.loggedTail > l.durableTail {
		// The transaction that journaled loggedTail is durable once tx
		// is, perhaps before its committer adopts the tail: GC's
		// transaction must not move the head past entries it copied
		// while the copies are not yet below the durable tail.
		l.txTails[tx] = l.loggedTail
	}
	if l.leader == tx {
		l.leader, l.flushing = nil, false
	}
	l.electLocked()
}

// rolledBack forgets the tail tx would have journaled.
func (l *Log) rolledBack(tx *Txn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.txTails, tx)
}

// errReclaimed says the head passed a frame while it was being read, so
// the bytes read may belong to a newer entry.
var errReclaimed = errors.New("pagealloc: log entry reclaimed while read")

// readFrame reads the frame at pos, below end, into buf and checks it. It
// copies first and checks the head after, so bytes a concurrent append
// overwrote are never returned: space is reused only after the head has
// passed it, and the head only grows. For padding it returns no data.
func (l *Log) readFrame(pos, end uint64, buf []byte) (logFrame, []byte, error) {
	d := l.d
	d.lifeMu.RLock()
	defer d.lifeMu.RUnlock()
	if d.closed.Load() {
		return logFrame{}, nil, ErrClosed
	}
	at := l.frameOff(pos)
	f, err := l.frameAt(pos)
	var data []byte
	if err == nil && !f.padding {
		off := at + logFrameHeaderBytes
		data = append(buf[:0], d.view[off:off+int64(f.payloadBytes)]...)
	}
	l.mu.Lock()
	reclaimed, dropped := l.head > pos, l.closed
	l.mu.Unlock()
	if dropped {
		// DropLog may have freed the page while it was read.
		return logFrame{}, nil, ErrClosed
	}
	if reclaimed {
		return logFrame{}, nil, errReclaimed
	}
	if err != nil {
		return f, nil, err
	}
	if pos+uint64(f.frameBytes) > end {
		return f, nil, corruptf(at, "log frame", "a frame ending by the durable tail %d, found one ending at %d", end, pos+uint64(f.frameBytes))
	}
	if !f.padding {
		if got := crc32.Checksum(data, castagnoli); got != f.payloadCRC {
			return f, nil, corruptf(at, "log entry", "payload checksum %#08x, computed %#08x", f.payloadCRC, got)
		}
	}
	return f, data, nil
}

// frameAt parses the frame header at pos, as the mapping holds it now;
// the caller holds lifeMu and checks afterwards that the head has not
// passed pos meanwhile.
func (l *Log) frameAt(pos uint64) (logFrame, error) {
	at := l.frameOff(pos)
	room := int64(l.size - pos%l.size)
	var hdr [logFrameHeaderBytes]byte
	if room >= logFrameHeaderBytes {
		copy(hdr[:], l.d.view[at:])
	}
	return parseLogFrame(hdr[:], pos, room, at)
}

// latestBefore returns the largest position below end that lands on ring
// offset phys, if there is one.
func latestBefore(end, phys, size uint64) (uint64, bool) {
	pos := end - end%size + phys
	if pos >= end {
		if pos < size {
			return 0, false
		}
		pos -= size
	}
	return pos, true
}

// reservedFor reports whether [off, off+n) lies inside the payload of a
// span the caller may still write. An error is the device's failure, met
// writing the span's staged frame.
func (l *Log) reservedFor(off, n int64) (bool, error) {
	phys := uint64(off - l.ring.off)
	l.mu.Lock()
	defer l.mu.Unlock()
	pos, ok := latestBefore(l.tail, phys, l.size)
	if !ok {
		return false, nil
	}
	live := l.spans[l.first:]
	i := sort.Search(len(live), func(i int) bool { return live[i].pos > pos }) - 1
	if i < 0 {
		return false, nil
	}
	s := &live[i]
	from := s.pos + logFrameHeaderBytes
	if s.state != spanReserved || pos < from || pos+uint64(n) > from+uint64(s.size) {
		return false, nil
	}
	if s.staged.frame != nil {
		// The caller changes a staged entry in place: the staged bytes go
		// first, under the lock so that nothing else writes the span.
		// Rare; Commit then checksums what the file holds.
		_, err := l.d.store.WriteAt(s.staged.frame, l.frameOff(s.pos))
		s.staged.release()
		if err != nil {
			return false, l.d.fail(err)
		}
	}
	s.written = false // the header Log.Write wrote no longer matches
	return true, nil
}

// logWritable reports whether the caller may write n bytes at off inside
// the log regions or a carved ring: unjournaled, inside the payload of a
// live reservation.
func (d *Device) logWritable(off, n int64, journaled bool) error {
	if !journaled {
		for _, l := range d.logs.all() {
			if !l.ring.contains(off, n) {
				continue
			}
			if ok, err := l.reservedFor(off, n); err != nil || ok {
				return err
			}
		}
	}
	return fmt.Errorf("%w: [%d, +%d) is not inside the payload of a live log reservation", ErrProtected, off, n)
}

// inCarvedLog reports whether [off, +n) touches the ring of a carved log,
// whose page is the log's, not the caller's.
func (d *Device) inCarvedLog(off, n int64) bool {
	for _, l := range d.logs.all() {
		if l.carved && l.ring.overlaps(off, n) {
			return true
		}
	}
	return false
}

// carvedLogAt returns the carved log whose ring is the page at off, unless
// tx is DropLog's transaction freeing it, or nil.
func (d *Device) carvedLogAt(tx *Txn, off int64) *Log {
	for _, l := range d.logs.all() {
		if l.carved && l.ring.off == off && l.dropper.Load() != tx {
			return l
		}
	}
	return nil
}

// Garbage collection.

const (
	// gcRelocationsMax bounds the relocations of one GC transaction, so
	// that the owner's reference updates stay far below the journal's
	// largest record.
	gcRelocationsMax = 64
)

// relocation is one live entry copied by GC, waiting for the transaction
// that repoints the owner and moves the head past the old copy.
type relocation struct {
	oldOff, newOff int64
	entry          []byte // the old copy in the mapping
	from           uint64 // the old copy's position
	copied         span   // the new copy's span, padding before it included
}

// collectInBackground runs GC whenever an append finds free space below
// the threshold, until the device closes. It never polls: with nothing
// appended, nothing can make the ring fuller.
func (l *Log) collectInBackground(done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-l.gcCtx.Done():
			return
		case <-l.kick:
		}
		_ = l.collect(l.gcCtx, false)
	}
}

// collect runs one GC pass. A full pass walks every entry durable when it
// began; otherwise it stops once about twice the threshold is free.
func (l *Log) collect(ctx context.Context, full bool) error {
	if err := l.gcMu.lockOr(ctx); err != nil {
		return err
	}
	defer l.gcMu.Unlock()
	if l.closing.Load() {
		// Close may have waited for passes already and unmapped.
		return ErrClosed
	}
	l.mu.Lock()
	owner, reloc, limit, goal := l.owner, l.reloc, l.durableTail, min(2*l.gcGoal, l.size)
	l.mu.Unlock()
	if owner == nil {
		return fmt.Errorf("%w: log %q has no owner to ask which entries are live (SetOwner)", ErrInvalidArgument, l.name)
	}
	if full {
		goal = l.size
	}
	// Wake a wait below when ctx ends.
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	l.gcRuns.Add(1)
	for {
		more, err := l.collectChunk(ctx, owner, reloc, limit, goal)
		if err != nil || !more {
			return err
		}
	}
}

// collectChunk advances the head from where it is toward limit in one
// transaction, and reports whether another chunk should follow.
func (l *Log) collectChunk(ctx context.Context, owner GarbageChecker, reloc Relocator, limit, goal uint64) (more bool, err error) {
	l.mu.Lock()
	head := l.head
	l.mu.Unlock()
	for from := range l.orphans {
		if from < head { // the head passed the entry: its copy is garbage
			delete(l.orphans, from)
		}
	}
	pos := head
	var relocs []relocation
	// Copies this chunk made are given back on every way out but its
	// commit: an error, a callback (IsLive, Relocate) that panicked.
	committed := false
	defer func() {
		if !committed && len(relocs) > 0 {
			l.retractCopies(relocs)
		}
		// The chunk's copies have passed or were given back (orphans
		// aside; see cancelledBeforeCopy).
		l.mu.Lock()
		l.cancelledBeforeCopy = nil
		l.mu.Unlock()
	}()
	copiedTail := uint64(0) // end of the last copy: the tail the transaction must carry
	var walkErr error
	// An orphan this chunk relocates to lies ahead of the head, perhaps
	// below limit: the owner holds it live only once the chunk commits.
	orphanFrom := ^uint64(0)
walk:
	for pos < limit {
		l.mu.Lock()
		free := l.size - (l.tail - pos)
		l.mu.Unlock()
		switch {
		case l.closing.Load():
			walkErr = ErrClosed
			break walk
		case ctx.Err() != nil:
			walkErr = ctx.Err()
			break walk
		case free >= goal:
			break walk
		case len(relocs) == gcRelocationsMax || pos-head >= l.size/4 || pos >= orphanFrom:
			// Commit now, so appends need not wait for the whole pass.
			more = true
			break walk
		}
		f, entry, err := l.gcFrame(pos, limit)
		if err != nil {
			walkErr = err
			break walk
		}
		next := pos + uint64(f.frameBytes)
		if f.padding || !owner.IsLive(l.payloadOff(pos), entry) {
			pos = next
			continue
		}
		if reloc == nil {
			break walk
		}
		s, orphaned := l.orphans[pos]
		if !orphaned {
			s, orphaned = l.adoptCopy(owner, f, entry, next, limit, false)
		}
		if !orphaned {
			s, err = l.copyEntry(f, entry)
			if errors.Is(err, ErrNoSpace) && pos == head {
				if s, orphaned = l.adoptCopy(owner, f, entry, next, limit, true); orphaned {
					err = nil
				}
			}
		}
		switch {
		case errors.Is(err, ErrNoSpace):
			// Committing what this chunk passed frees room to retry in;
			// with nothing passed there is none to gain.
			more = pos > head
			break walk
		case errors.Is(err, ErrCorrupt):
			// Keep what was passed; the damaged entry stops GC here
			// until the owner lets it go.
			walkErr = err
			break walk
		case err != nil:
			return false, err
		case orphaned:
			// Copied by a chunk that did not commit, and still ahead of
			// the head, as the entry is: the bytes are the entry's.
			delete(l.orphans, pos)
			orphanFrom = min(orphanFrom, s.start)
		}
		copiedTail = max(copiedTail, s.end)
		relocs = append(relocs, relocation{oldOff: l.payloadOff(pos), newOff: l.payloadOff(s.pos), entry: entry, from: pos, copied: s})
		pos = next
	}
	if pos > head {
		if err := l.commitChunk(ctx, reloc, relocs, copiedTail, pos); err != nil {
			return false, err
		}
		committed = true
	}
	return more && walkErr == nil, walkErr
}

// retractCopies gives the room of copies whose chunk did not commit back
// to the log: the newest of them, back to the first span that is not one
// of them, if no transaction has journaled a tail over them. They are
// garbage no one refers to, and in a ring filled to its relocation reserve
// they took the reserve: left in place, they would keep the next pass from
// copying the same live entries again, and the head, which only GC moves,
// from ever moving. The copies it cannot give back become orphans, which
// the next pass relocates their entries to instead of copying them again.
func (l *Log) retractCopies(relocs []relocation) {
	// writtenEnd holds still while writeMu is held (see retractCancelled).
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	// journaledPast reports whether a tail past pos was journaled, or
	// will be by a transaction on its way.
	journaledPast := func(pos uint64) bool {
		if l.loggedTail > pos || l.durableTail > pos {
			return true
		}
		for _, tail := range l.txTails {
			if tail > pos {
				return true
			}
		}
		return false
	}
	to := l.tail
	for i := len(relocs) - 1; i >= 0 && relocs[i].copied.end == to; i-- {
		to = relocs[i].copied.start
	}
	if journaledPast(to) {
		to = l.tail
	}
	for _, r := range relocs {
		if r.copied.start < to {
			if l.orphans == nil {
				l.orphans = make(map[uint64]span)
			}
			l.orphans[r.from] = r.copied
		}
	}
	if to == l.tail {
		return
	}
	if from, ok := l.cancelledBeforeCopy[to]; ok && !journaledPast(from) {
		// The first copy given back had passed cancelled spans, at the
		// tail again: they go back too, as Cancel would have given
		// them, and so does the epoch.
		to = from
		l.epoch++
	}
	// The copies may still wait behind a reservation before them.
	n := len(l.spans)
	for n > l.first && l.spans[n-1].start >= to {
		n--
	}
	l.spans = l.spans[:n]
	l.raiseStaleBelow(l.tail)
	l.tail = to
	l.committedEnd = min(l.committedEnd, to)
	l.writtenEnd = min(l.writtenEnd, to)
	l.cancelledFrom = min(l.cancelledFrom, to)
	// Unless cancelled space went too, the epoch stays: no Reservation
	// names a copy, and those before them are still live.
	l.cond.Broadcast()
}

// adoptCopyRun is how many frames adoptCopy reads past the last copy it
// adopted for the next one: a pass's copies follow each other, with at
// most the reservations of appends between them.
const adoptCopyRun = 2 * gcRelocationsMax

// adoptCopy looks for an orphan of the live entry f that the process did
// not make: a durable entry past it, from next to limit, with the same
// bytes, that the owner does not hold live. Orphans are kept in memory
// only, so those of a chunk that failed before a crash or Close are
// garbage entries like any other after Open, as are the copies of a pass
// a crash cut short once another transaction journaled a tail over them.
// In a ring filled to its relocation reserve they hold the room the next
// pass needs, and copying their entries again would leave it held: the
// first entry GC has to copy after Open, if the reserve is not all free,
// looks through the ring for its copy, as does one that is stuck (no room
// for its copy at the head) once per position; after each copy found, the
// next live entry looks for its own just past it, and the run ends at the
// first that finds none. Any such entry will do, whoever wrote it:
// relocating the entry to it changes no byte the owner reads.
func (l *Log) adoptCopy(owner GarbageChecker, f logFrame, entry []byte, next, limit uint64, stuck bool) (span, bool) {
	from, frames := l.adoptAt, adoptCopyRun
	l.adoptAt = 0
	firstSinceOpen := !stuck && !l.openSearched
	searchedAt := l.searchedAt
	switch {
	case stuck && l.searchedAt == f.pos+1:
		return span{}, false // the entries past it have not changed
	case stuck, firstSinceOpen && l.reserveTaken():
		from, frames = next, math.MaxInt
		searchedAt = f.pos + 1
	case from <= f.pos: // not in a run
		l.openSearched = l.openSearched || !stuck
		return span{}, false
	}
	found, ok := span{}, false
	for pos := from; pos < limit && frames > 0; frames-- {
		g, other, err := l.gcFrame(pos, limit)
		if err != nil {
			break
		}
		s := span{start: pos, pos: pos, end: pos + uint64(g.frameBytes), size: g.payloadBytes, state: spanDone}
		if !g.padding && g.payloadBytes == f.payloadBytes && g.payloadCRC == f.payloadCRC &&
			bytes.Equal(other, entry) && !l.isOrphan(pos) && !owner.IsLive(l.payloadOff(pos), other) {
			found, ok = s, true
			break
		}
		pos = s.end
	}
	// Recorded once the search has ended: one that an IsLive which
	// panicked cut short is made again by the next pass.
	l.openSearched = l.openSearched || !stuck
	l.searchedAt = searchedAt
	if ok {
		l.adoptAt = found.end
	}
	return found, ok
}

// isOrphan reports whether the copy at pos is already an orphan of some
// entry. There are few orphans, and this is asked only of a match.
func (l *Log) isOrphan(pos uint64) bool {
	for _, s := range l.orphans {
		if s.pos == pos {
			return true
		}
	}
	return false
}

// reserveTaken reports whether less than the relocation reserve is free.
func (l *Log) reserveTaken() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size-(l.tail-l.head) < l.reserveBytes
}

// gcFrame returns the frame at pos, its header checked, and for an entry
// its payload in the mapping, unchecked: GC then costs a header per dead
// entry, not a pass over its bytes, and copyEntry checks what it moves.
// Only GC moves the head, so the bytes stay put while the pass uses them.
func (l *Log) gcFrame(pos, limit uint64) (logFrame, []byte, error) {
	at := l.frameOff(pos)
	room := int64(l.size - pos%l.size)
	var hdr []byte
	if room >= logFrameHeaderBytes {
		hdr = l.d.view[at : at+logFrameHeaderBytes]
	}
	f, err := parseLogFrame(hdr, pos, room, at)
	if err != nil {
		return f, nil, err
	}
	if pos+uint64(f.frameBytes) > limit {
		return f, nil, corruptf(at, "log frame", "a frame ending by the durable tail %d, found one ending at %d", limit, pos+uint64(f.frameBytes))
	}
	if f.padding {
		return f, nil, nil
	}
	off := at + logFrameHeaderBytes
	return f, l.d.view[off : off+int64(f.payloadBytes) : off+int64(f.payloadBytes)], nil
}

// copyEntry copies a live entry to a new span at the tail and marks it
// done: it becomes durable with the next tail the journal writes.
func (l *Log) copyEntry(f logFrame, entry []byte) (span, error) {
	// A copy with a fresh header must not launder a damaged payload.
	if got := crc32.Checksum(entry, castagnoli); got != f.payloadCRC {
		return span{}, corruptf(l.frameOff(f.pos), "log entry", "payload checksum %#08x, computed %#08x", f.payloadCRC, got)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return span{}, ErrClosed
	}
	s, err := l.reserveLocked(f.payloadBytes, 0)
	if err == nil {
		// The copy is GC's to write, not a reservation of the caller's:
		// WriteAt into it is refused (reservedFor).
		c := &l.spans[l.findLocked(s.start)]
		c.state, c.copy = spanSealing, true
	}
	l.mu.Unlock()
	if err != nil {
		return span{}, err
	}
	err = l.writeHeaders(s, false, entry, f.payloadCRC)
	l.mu.Lock()
	defer l.mu.Unlock()
	i := l.findLocked(s.start)
	if err != nil {
		// The device has failed; the span stays undone and blocks the
		// tail, which is the safe way to stop.
		return span{}, err
	}
	l.spans[i].state = spanDone
	l.advanceLocked()
	l.relocations.Add(1)
	l.relocatedBytes.Add(int64(s.end - s.start))
	return s, nil
}

// commitChunk journals newHead together with the owner's relocations. The
// copies must be durable with it, so it first waits until every span
// before them is done: only then can the tail pass them.
func (l *Log) commitChunk(ctx context.Context, reloc Relocator, relocs []relocation, copiedTail, newHead uint64) error {
	l.mu.Lock()
	for l.committedEnd < copiedTail {
		if err := l.stopErrLocked(); err != nil {
			l.mu.Unlock()
			return err
		}
		if err := ctx.Err(); err != nil {
			l.mu.Unlock()
			return err
		}
		l.cond.Wait()
	}
	l.mu.Unlock()
	// The copies are written; staged appends before them may not be.
	if err := l.writeStaged(); err != nil {
		return err
	}
	tx, err := l.d.Begin()
	if err != nil {
		return err
	}
	var end *relocationsEnd
	if ender, ok := reloc.(RelocationsEnder); ok && len(relocs) > 0 {
		end = &relocationsEnd{ender: ender}
		tx.join(end)
	}
	defer func() {
		if !tx.done {
			// A Relocate panicked: roll back as for an error, and let
			// the panic go on to GC's caller.
			tx.abort(errRelocatePanicked)
		}
	}()
	for _, r := range relocs {
		if err := reloc.Relocate(tx, r.oldOff, r.newOff, r.entry); err != nil {
			err = tx.abort(fmt.Errorf("pagealloc: relocating the log entry at %d to %d: %w", r.oldOff, r.newOff, err))
			end.repanic()
			return err
		}
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], newHead)
	tx.write(l.slotOff+logSlotHeadOff, b[:], kindMeta)
	tx.join(l)
	err = tx.Commit()
	l.finish(tx, err, &newHead)
	end.repanic()
	if end != nil && !end.told {
		end.ender.RelocationsEnded(err) // committed, or failed on its way to disk
	}
	return err
}

// relocationsEnd tells a RelocationsEnder that GC's transaction rolled
// back from inside the rollback, before another transaction can begin and
// see, or journal, what the void relocations changed in the owner's memory.
type relocationsEnd struct {
	ender RelocationsEnder
	told  bool
	// panicked is what RelocationsEnded panicked with, if it did: kept
	// until the rollback has ended and given the writer slot back, then
	// passed on to GC's caller (repanic).
	panicked any
}

func (e *relocationsEnd) prepare(*Txn) error { return nil }
func (e *relocationsEnd) committed(*Txn)     {}

func (e *relocationsEnd) rolledBack(tx *Txn) {
	e.told = true
	cause := tx.cause
	if cause == nil { // not reached: GC rolls back only through abort
		cause = ErrTxDone
	}
	defer func() { e.panicked = recover() }()
	e.ender.RelocationsEnded(cause)
}

// repanic passes on the panic of RelocationsEnded during a rollback, if
// there was one; e may be nil.
func (e *relocationsEnd) repanic() {
	if e != nil && e.panicked != nil {
		panic(e.panicked)
	}
}

// Layout, open and close.

// logRegionsBytes returns the bytes the log regions of a new device take:
// the table, then each ring.
func logRegionsBytes(regions []LogRegion) (int64, error) {
	if len(regions) == 0 {
		return 0, nil
	}
	total := logTableBytes(len(regions))
	seen := make(map[string]bool, len(regions))
	for _, r := range regions {
		switch {
		case !validLogName(r.Name):
			return 0, fmt.Errorf("%w: log name %q is not 1 to %d bytes without zero bytes", ErrInvalidArgument, r.Name, logNameMaxBytes)
		case seen[r.Name]:
			return 0, fmt.Errorf("%w: log name %q given twice", ErrInvalidArgument, r.Name)
		case r.Size <= 0 || r.Size%4096 != 0:
			return 0, fmt.Errorf("%w: log %q size %d is not a positive multiple of 4 KiB", ErrInvalidArgument, r.Name, r.Size)
		case r.Size > maxRegionBytes-total:
			return 0, fmt.Errorf("%w: log regions of more than %d bytes", ErrTooLarge, int64(maxRegionBytes))
		}
		seen[r.Name] = true
		total += r.Size
	}
	return total, nil
}

// validLogName reports whether name can name a log: 1 to 32 bytes, none
// of them zero (the table pads names with zeroes).
func validLogName(name string) bool {
	return name != "" && len(name) <= logNameMaxBytes && strings.IndexByte(name, 0) < 0
}

// logSlotsFor lays out the rings of regions after the table at logs.off.
func logSlotsFor(logs region, regions []LogRegion) []logSlot {
	slots := make([]logSlot, len(regions))
	off := logs.off + logTableBytes(len(regions))
	for i, r := range regions {
		slots[i] = logSlot{name: r.Name, ring: region{off, r.Size}}
		off += r.Size
	}
	return slots
}

// initLogRegions writes the log table of a new device. The rings are left
// as they are: frames carry their position and checksum, and nothing past
// a durable tail is ever read.
func initLogRegions(store storage.Storage, logs region, regions []LogRegion) error {
	if len(regions) == 0 {
		return nil
	}
	slots := logSlotsFor(logs, regions)
	table := make([]byte, logTableBytes(len(slots)))
	encodeLogTable(table, slots)
	_, err := store.WriteAt(table, logs.off)
	return err
}

// openLogs loads the log table of an opened device, then the carved log
// table. Entries between head and durable tail need no check here: the
// journal synced them before the tail that covers them, and readers check
// each one's checksum.
func (d *Device) openLogs() error {
	d.logs = &logSet{}
	var list []*Log
	if logs := d.geometry.logs; logs.size != 0 {
		slots, err := readLogTable(logs, func(p []byte, off int64) error {
			_, err := d.ReadAt(p, off)
			return err
		})
		if err != nil {
			return err
		}
		for i, s := range slots {
			list = append(list, newLog(d, s, logs.off+logTableHeaderBytes+int64(i)*logSlotBytes))
		}
	}
	if d.geometry.version >= carvedLogsVersion {
		tableOff := d.geometry.state.off + carvedLogTableOff
		table := make([]byte, carvedLogLimit*logSlotBytes)
		if _, err := d.ReadAt(table, tableOff); err != nil {
			return err
		}
		slots, used, err := decodeCarvedLogTable(table, &d.geometry, tableOff)
		if err != nil {
			return err
		}
		fixed := len(list)
		for i, s := range slots {
			if !used[i] {
				continue
			}
			slotOff := tableOff + int64(i)*logSlotBytes
			for _, m := range list[:fixed] {
				if m.name == s.name {
					return corruptf(slotOff, "carved log table", "names unique among all logs, found %q twice", s.name)
				}
			}
			// Reads of the ring go straight to the mapping: a ring
			// outside the heap's allocated pages would fault there.
			g := &d.alloc.g
			order := bits.TrailingZeros64(uint64(s.ring.size)) - int(g.minShift)
			if s.ring.off < g.heapOff || s.ring.end() > d.alloc.last.frontier || s.ring.end() > d.readableEnd() ||
				d.committedPageState(g, order, s.ring.off) != stateAllocated {
				return corruptf(slotOff, "carved log table", "slot %d (log %q) ring [%d, +%d) to be an allocated page of the heap", i, s.name, s.ring.off, s.ring.size)
			}
			// A read-only device reads zeroes past the end of a file
			// that a crash left short of the frontier, but not through
			// the mapping, where a log's reads go. Only its entries are
			// read, and the journal synced them, with the file's
			// growth under them, before the tail that covers them.
			if end := s.liveEnd(); end > d.size.Load() {
				return corruptf(slotOff, "carved log table", "slot %d (log %q) entries between head %d and tail %d inside the file's %d bytes, found them ending at offset %d", i, s.name, s.head, s.tail, d.size.Load(), end)
			}
			// The page must be the log's alone: the log writes it in
			// place, unjournaled, and DropLog frees it.
			if d.subpageParentAt(nil, s.ring.off, s.ring.size) {
				return corruptf(slotOff, "carved log table", "slot %d (log %q) ring [%d, +%d) to be the log's alone, found a sub-page parent", i, s.name, s.ring.off, s.ring.size)
			}
			for _, m := range list[fixed:] {
				if m.ring.overlaps(s.ring.off, s.ring.size) {
					return corruptf(slotOff, "carved log table", "slot %d (log %q) ring [%d, +%d) owned by no other log, found it shared with %q", i, s.name, s.ring.off, s.ring.size, m.name)
				}
			}
			l := newLog(d, s, slotOff)
			l.carved = true
			list = append(list, l)
		}
	}
	d.logs.set(list)
	return nil
}

// gcLock is a mutex whose holder may be waited for until a context ends:
// a GC with a deadline must not wait past it for another pass.
type gcLock chan struct{}

func (g gcLock) Lock()   { g <- struct{}{} }
func (g gcLock) Unlock() { <-g }

func (g gcLock) TryLock() bool {
	select {
	case g <- struct{}{}:
		return true
	default:
		return false
	}
}

// lockOr takes g, or returns ctx's error if ctx ends first. A free g is
// taken even if ctx has ended.
func (g gcLock) lockOr(ctx context.Context) error {
	if g.TryLock() {
		return nil
	}
	select {
	case g <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newLog returns the log of table slot s, stored at slotOff.
func newLog(d *Device, s logSlot, slotOff int64) *Log {
	l := &Log{
		d:             d,
		gcMu:          make(gcLock, 1),
		name:          s.name,
		ring:          s.ring,
		size:          uint64(s.ring.size),
		slotOff:       slotOff,
		head:          s.head,
		tail:          s.tail,
		committedEnd:  s.tail,
		cancelledFrom: s.tail,
		writtenEnd:    s.tail,
		loggedTail:    s.tail,
		durableTail:   s.tail,
		txTails:       make(map[*Txn]uint64),
		kick:          make(chan struct{}, 1),
	}
	// The process before this one handed out positions up to a ring's
	// length past the head it had then, which is at most this one.
	l.staleBelow.Store(s.head + uint64(s.ring.size))
	l.cond.L = &l.mu
	l.waiterPool.New = func() any { return &waiter{wake: make(chan wakeUp, 1)} }
	l.gcCtx, l.stopGC = context.WithCancel(context.Background())
	return l
}

// closeLogs stops the logs' background GC and wakes every waiter, before
// the device closes.
func (d *Device) closeLogs() {
	if d.logs == nil {
		return
	}
	// A CreateLog or DropLog under way finishes first (its transaction
	// fails once the device is closed).
	d.logs.mu.Lock()
	defer d.logs.mu.Unlock()
	for _, l := range d.logs.all() {
		l.stop()
	}
}

// wakeFailed wakes every Commit waiting on one of the logs with err, the
// device's failure, and every GC pass waiting for spans to be done, which
// then finds the failure: nothing becomes durable any more.
func (s *logSet) wakeFailed(err error) {
	for _, l := range s.all() {
		l.mu.Lock()
		l.wakeLocked(err)
		l.cond.Broadcast()
		l.mu.Unlock()
	}
}

// stop ends the log's use: its waiters are woken with ErrClosed, and its
// background GC and any GC pass under way have stopped when it returns.
func (l *Log) stop() {
	l.mu.Lock()
	l.closed = true
	l.closing.Store(true)
	done := l.gcDone
	l.wakeLocked(ErrClosed)
	l.cond.Broadcast()
	l.mu.Unlock()
	l.stopGC()
	if done != nil {
		<-done
	}
	// A pass that a caller of GC runs reads the mapping too: wait for
	// it, as it stops at its next step now.
	l.gcMu.Lock()
	l.gcMu.Unlock()
}

// readLogTable reads with read and decodes the table of the logs laid
// out at Create in the log regions logs. It reads the slots a page at a
// time, and only while each names the ring that follows the one before:
// a damaged count then costs the slots that chain, not count of them
// (one flipped bit can make it millions, and the checksum that refuses
// it covers every one of them).
func readLogTable(logs region, read func(p []byte, off int64) error) ([]logSlot, error) {
	var hdr [logTableHeaderBytes]byte
	if err := read(hdr[:], logs.off); err != nil {
		return nil, err
	}
	what := "log table"
	count := int64(binary.LittleEndian.Uint32(hdr[logTableCountOff:]))
	if count > (logs.size-logTableHeaderBytes)/logSlotBytes {
		return nil, corruptf(logs.off, what, "at most %d logs, found %d", (logs.size-logTableHeaderBytes)/logSlotBytes, count)
	}
	n := logTableHeaderBytes + count*logSlotBytes
	table := append(make([]byte, 0, min(n, 4096)), hdr[:]...)
	next := logs.off + logTableBytes(int(count))
	for at := int64(len(table)); at < n; {
		end := min(n, at+4096)
		table = slices.Grow(table, int(end-at))[:end]
		if err := read(table[at:], logs.off+at); err != nil {
			return nil, err
		}
		for ; at < end; at += logSlotBytes {
			ring := getRegion(table[at+logSlotRingOff:])
			if !ringFollows(ring, next, logs) {
				return nil, corruptf(logs.off+at, what, "%d logs, slot %d naming the ring at %d that follows the one before, found [%d, +%d)", count, (at-logTableHeaderBytes)/logSlotBytes, next, ring.off, ring.size)
			}
			next = ring.end()
		}
	}
	return decodeLogTable(table, logs)
}

// checkLogTable checks the table of the logs laid out at Create as Open
// does: positions a log could have reached, rings where Create put them.
func (c *checker) checkLogTable() {
	logs := c.d.geometry.logs
	if logs.size == 0 {
		return
	}
	slots, err := readLogTable(logs, func(p []byte, off int64) error { c.tx.read(p, off); return nil })
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	for _, l := range c.d.logs.all() {
		if i := (l.slotOff - logs.off - logTableHeaderBytes) / logSlotBytes; !l.carved && i < int64(len(slots)) {
			c.checkLogPositions(l, slots[i], "log table")
		}
	}
}

// checkLogPositions checks open log l's positions against its slot s as
// the writer sees it, and against each other. A transaction that journals
// a tail or a head holds the writer, and the log adopts the tail as it
// commits (loggedTail) but the head, and the durable tail, only once it is
// durable; appends move the tail past it, and a retraction gives back only
// space past every tail journaled. In memory, the positions follow each
// other: the head, the durable tail, the tail last journaled, the end of
// the frames written, the end of the spans done (at or after the start of
// its run of cancelled spans) and the tail, no further apart than the
// ring's size, with the reservations not yet passed covering the space
// between the end of the spans done and the tail, each where the one
// before it ends.
func (c *checker) checkLogPositions(l *Log, s logSlot, what string) {
	l.mu.Lock()
	head, tail, logged, durable := l.head, l.tail, l.loggedTail, l.durableTail
	written, committed, cancelled := l.writtenEnd, l.committedEnd, l.cancelledFrom
	open := l.spans[l.first:]
	gap, bad := -1, span{} // the first reservation not yet passed that starts elsewhere than where the one before it ends
	last := committed      // where the reservations not yet passed end
	for i, sp := range open {
		if gap < 0 && (sp.start != last || sp.end <= sp.start) {
			gap, bad = i, sp
		}
		last = sp.end
	}
	reservations := len(open)
	l.mu.Unlock()
	if s.tail != logged || durable > logged || tail < logged || head > s.head || head > durable {
		c.report(l.slotOff, what, "log %q with head %d and tail %d to agree with the log open on it (head at most the slot's, tail at least it, the tail it last journaled the slot's, its durable tail at most that), found head %d, tail %d, journaled tail %d, durable tail %d", l.name, s.head, s.tail, head, tail, logged, durable)
	}
	if logged > written || written > committed || cancelled > committed || committed > tail || tail-head > l.size {
		c.report(l.slotOff, what, "log %q open with its positions in order, the tail at most %d bytes past the head: head %d, journaled tail %d, written to %d, cancelled from %d, done to %d, tail %d", l.name, l.size, head, logged, written, cancelled, committed, tail)
	}
	switch {
	case gap >= 0:
		c.report(l.slotOff, what, "log %q open with its %d reservations not yet passed following each other from %d, where its spans are done, found reservation %d on [%d, %d)", l.name, reservations, committed, gap, bad.start, bad.end)
	case last != tail:
		c.report(l.slotOff, what, "log %q open with its %d reservations not yet passed ending at its tail %d, found them ending at %d", l.name, reservations, tail, last)
	}
}

// checkCarvedLogs checks the carved log table: every used slot names a
// ring that is an allocated page of exactly its size, owned by no other
// log, and agrees with the log open on it.
func (c *checker) checkCarvedLogs() {
	d := c.d
	if d.geometry.version < carvedLogsVersion {
		return
	}
	what := "carved log table"
	tableOff := d.geometry.state.off + carvedLogTableOff
	table := make([]byte, carvedLogLimit*logSlotBytes)
	c.tx.read(table, tableOff)
	slots, used, err := decodeCarvedLogTable(table, &d.geometry, tableOff)
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	// CreateLog and DropLog change the set as their transactions commit,
	// under the writer slot Check holds: the set matches the table.
	open := make(map[int64]*Log)
	for _, l := range d.logs.all() {
		if l.carved {
			open[l.slotOff] = l
		}
	}
	for i, s := range slots {
		slotOff := tableOff + int64(i)*logSlotBytes
		l := open[slotOff]
		delete(open, slotOff)
		if !used[i] {
			if l != nil {
				c.report(slotOff, what, "slot %d to hold open log %q, found it unused", i, l.name)
			}
			continue
		}
		order := bits.TrailingZeros64(uint64(s.ring.size)) - int(c.g.minShift)
		switch {
		case s.ring.end() > c.st.frontier || c.tx.pageState(c.g, order, s.ring.off) != stateAllocated:
			c.report(slotOff, what, "slot %d (log %q) ring [%d, +%d) to be an allocated page of that size", i, s.name, s.ring.off, s.ring.size)
		case c.d.subpageParentAt(c.tx, s.ring.off, s.ring.size):
			c.report(slotOff, what, "slot %d (log %q) ring [%d, +%d) to be the log's alone, found it a sub-page parent", i, s.name, s.ring.off, s.ring.size)
		}
		for j := range i {
			if used[j] && slots[j].ring.overlaps(s.ring.off, s.ring.size) {
				c.report(slotOff, what, "slot %d (log %q) ring [%d, +%d) owned by no other log, found it shared with %q", i, s.name, s.ring.off, s.ring.size, slots[j].name)
			}
		}
		if l != nil && (l.name != s.name || l.ring != s.ring) {
			c.report(slotOff, what, "slot %d to hold open log %q on [%d, +%d), found %q on [%d, +%d)", i, l.name, l.ring.off, l.ring.size, s.name, s.ring.off, s.ring.size)
		} else if l != nil {
			c.checkLogPositions(l, s, what)
		}
	}
	for off, l := range open {
		c.report(off, what, "a slot for open log %q", l.name)
	}
}
