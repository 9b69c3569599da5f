package pagealloc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

// The sub-page allocator carves buddy pages ("parents") into 64 equal
// slots for objects smaller than a page. Each parent keeps, in a one-line
// header in its slot 0 (format.go, "Sub-pages"), a mask of its allocated
// slots and a mask of its pending ones. Parents of one slot size form a
// class. The parents of a class that have a free slot sit on a doubly
// linked partial list threaded through their headers, so that Alloc takes
// the head's lowest free slot in O(1) whatever the number of parents.
//
// No reuse before the free is safe: Free turns an allocated slot into a
// pending one, and the parent joins its class's pending queue (a FIFO,
// also threaded through the headers) stamped with the freeing transaction.
// A pending slot becomes free only once a checkpoint covers that
// transaction, for the reason the buddy allocator waits for one (see
// allocator.releasePending): before it, a crash may roll the free back, and
// replay may write the old owner's journaled bytes (Txn.Write) over the
// slot. Releasing is lazy and O(1) per operation: a parent's covered
// pending slots are released whenever its header is in hand anyway
// (releaseInPlace); up to subpageReleaseBudget queued parents are looked
// at (and a bounded number more that were released in place already, see
// release) when Alloc finds no free slot, or when Free finds many slots
// pending (subpagePendingShare); and each Free looks at the head of one other
// class's queue, in turn (drainOther), as does each transaction that
// reaches the buddy allocator before any sub-page operation
// (drainForPages), so that an idle class drains too; Close drains every
// queue (drainSubpages). A parent whose last allocated
// slot is released goes back to the buddy allocator, as one more deferred
// free, unless an Alloc needs it. After Open everything durable is
// covered, so the queues drain from the first operations on.
//
// A page is a parent because a bit in its block's metadata says so, not
// because of what it holds: user writes can reach neither that bit nor a
// parent's header (heapWritable refuses them with ErrProtected), so a
// caller's page holding a copy of a header is never taken for a parent.
// Nothing stops a caller writing a slot it does not own inside a parent,
// though: the parent is one allocated page.
//
// Every header, link and bit change is a journaled kindMeta write: the
// parent is an allocated page for as long as it holds a header, and the
// buddy allocator's pending queue keeps it from a new owner until no
// journal record that wrote it can be replayed.

// subpageFullMask is a mask with every slot set.
const subpageFullMask = ^uint64(0)

// subpageEmptyMask is the allocated mask of a parent with only its header.
const subpageEmptyMask = uint64(1)

// subpageReleaseBudget is how many queued parents an Alloc or Free may
// look at: more than the one parent a Free can queue, so that the queues
// shrink whenever checkpoints cover them, and few, so that every operation
// stays O(1).
const subpageReleaseBudget = 4

// subpagePendingShare: Free walks the pending queue only while more than
// one slot in subpagePendingShare of the class's allocated ones is
// pending. Below, pending slots are released when their parent is touched
// anyway, when Alloc finds no free slot, or by another class's Free
// (drainOther): a walk reads headers nothing else needs, a cache miss
// each in a large class.
const subpagePendingShare = 8

// subpageCheckpointBytes is how many bytes of pending slots make the
// allocator ask for a checkpoint, beside more pending than allocated.
const subpageCheckpointBytes = 4 << 20

// Subpages is one size class of the sub-page allocator: slots of one
// power-of-two size, carved 64 to a parent page from the buddy allocator.
// Get one with Device.Subpages. Its methods are safe for concurrent use
// through distinct transactions, as transactions are serialized.
type Subpages struct {
	d           *Device
	index       int   // entry in the class table
	slotShift   uint  // log2 of the slot size
	parentBytes int64 // the buddy page holding 64 slots
}

// SubpageStats describes one class's committed state.
type SubpageStats struct {
	SlotBytes   int64 // bytes in a slot
	ParentBytes int64 // bytes in a parent page (64 slots, one of them the header)
	Parents     int64 // parent pages held from the buddy allocator
	SlotsUsed   int64 // slots allocated
	// SlotsPending are slots freed but not reusable until a checkpoint
	// covers the transaction that freed them.
	SlotsPending int64
	SlotsFree    int64 // slots free in the parents held
	// OverheadBytes is the parent space not in allocated slots: the
	// header slot of every parent plus its free and pending slots.
	OverheadBytes int64
}

// subpageClass is the in-memory copy of one class table entry.
type subpageClass struct {
	slotBytes          int64
	head               int64 // partial list
	parents            int64
	used               int64
	pendHead, pendTail int64 // pending queue
	pending            int64
	pendSeq            uint64 // the newest transaction that made a slot pending

	// headSeq is not stored: the pending queue's head was stamped with at
	// least this transaction (0: not known), so that no operation reads
	// the head again until a checkpoint covers it.
	headSeq uint64

	// newer and older are not stored either: they count the pending
	// slots a checkpoint may yet make free, which alone count towards
	// asking for one (committed). Covered ones wait for a walk of the
	// queue instead, and pendSeq, the newest stamp, cannot tell them
	// apart: one slot freed since the last checkpoint would make every
	// pending slot of the class count, and each commit ask for a
	// checkpoint that frees nothing more. newer are the slots stamped
	// after transaction newerAfter, older those stamped after olderAfter
	// up to newerAfter; a checkpoint covers the rest, as it covers
	// everything durable after Open, where both counts start at 0. Each
	// Free and release keeps them in O(1) (recount), and they move on
	// when a checkpoint covers newerAfter (cover).
	newer, older           int64
	newerAfter, olderAfter uint64
}

// uncovered returns the count of c's uncovered pending slots that holds
// the slots stamped seq, or nil for a stamp a checkpoint covers (or 0, no
// stamp): such slots are counted nowhere.
func (c *subpageClass) uncovered(seq uint64) *int64 {
	switch {
	case seq > c.newerAfter:
		return &c.newer
	case seq > c.olderAfter:
		return &c.older
	}
	return nil
}

// recount moves the pending slots of mask, stamped was, to the count of
// those stamped seq: 0 for was when they were not pending, 0 for seq when
// they are pending no more.
func (c *subpageClass) recount(mask uint64, was, seq uint64) {
	n := int64(bits.OnesCount64(mask))
	if count := c.uncovered(was); count != nil {
		*count -= n
	}
	if count := c.uncovered(seq); count != nil {
		*count += n
	}
}

// cover moves c's counts of uncovered pending slots on now that a
// checkpoint covers every transaction up to covered, newest being the
// last committed one (no slot is stamped later): once it reaches
// newerAfter the older slots are covered, and the newer become the older;
// they are covered too if it reaches newest. A checkpoint that covers
// only some of the slots counted leaves them counted until the next one
// covers the rest: the counts err towards asking for a checkpoint, never
// towards leaving out a slot one would free.
func (c *subpageClass) cover(covered, newest uint64) {
	if covered < c.newerAfter {
		return
	}
	c.older, c.olderAfter = c.newer, c.newerAfter
	c.newer, c.newerAfter = 0, newest
	if covered >= newest {
		c.older, c.olderAfter = 0, newest
	}
}

// uncoveredBytes returns how many bytes c's uncovered pending slots hold.
func (c *subpageClass) uncoveredBytes() int64 { return (c.newer + c.older) * c.slotBytes }

// stored returns the fields the class table holds, in the order of
// subpageClassFields.
func (c *subpageClass) stored() [8]int64 {
	return [8]int64{c.slotBytes, c.head, c.parents, c.used, c.pendHead, c.pendTail, c.pending, int64(c.pendSeq)}
}

// subpageClassFields are the offsets of the fields stored returns, in its
// order.
var subpageClassFields = [8]int64{
	subpageClassSlotOff, subpageClassHeadOff, subpageClassParentsOff, subpageClassUsedOff,
	subpageClassPendHeadOff, subpageClassPendTailOff, subpageClassPendingOff, subpageClassPendSeqOff,
}

func decodeSubpageClass(e []byte) subpageClass {
	var f [8]int64
	for i, off := range subpageClassFields {
		f[i] = int64(binary.LittleEndian.Uint64(e[off:]))
	}
	return subpageClass{slotBytes: f[0], head: f[1], parents: f[2], used: f[3],
		pendHead: f[4], pendTail: f[5], pending: f[6], pendSeq: uint64(f[7])}
}

// subpageSet holds the class table. Like the buddy allocator it changes
// only inside the one writing transaction, as a participant: work is the
// state as that transaction changed it, last the committed state.
type subpageSet struct {
	d       *Device
	mu      sync.Mutex // guards last and count against Stats and Subpages
	last    [subpageClassLimit]subpageClass
	count   int // classes in use: entries 0..count-1
	work    [subpageClassLimit]subpageClass
	touched uint64 // bit i: work[i] is valid for tx
	tx      *Txn
	drain   int // the class drainOther looks at next
	// spare is how many more lines Free may add to tx releasing parents
	// on its own account (see Free): as many as the buddy allocator's
	// releases may (releaseBudget), counted from when the set joins tx,
	// so at most a quarter of a record whatever tx writes after.
	spare int
	// released counts the covered parents released into tx.
	released int
	// owed is set when a transaction that released covered parents was
	// too large to commit: the next Begin releases them, in transactions
	// of their own (drainSubpages).
	owed atomic.Bool
}

// loadSubpages reads the committed class table after recovery, and makes
// sure transaction numbers continue after every stamp it holds.
func (d *Device) loadSubpages() error {
	s := &d.subpages
	s.d = d
	s.count = 0
	if d.alloc.g.parentShift == 0 {
		return nil // a version-1 device: no sub-pages
	}
	b := make([]byte, subpageClassLimit*subpageClassBytes)
	d.readCommittedRange(b, d.geometry.state.off+subpageTableOff)
	newest := d.txSeq
	for i := range subpageClassLimit {
		c := decodeSubpageClass(b[i*subpageClassBytes:])
		if c.pendSeq >= maxTxSeq {
			return corruptf(d.geometry.state.off+subpageTableOff+int64(i)*subpageClassBytes, "sub-page class", "a pending stamp below %d, found %d", uint64(maxTxSeq), c.pendSeq)
		}
		s.last[i] = c
		if c.slotBytes != 0 && s.count == i {
			s.count = i + 1
		}
		newest = max(newest, c.pendSeq)
	}
	// Transactions replayed at Open left no number of their own; the
	// stamps of the slots they freed must stay in the past.
	if newest > d.txSeq {
		d.setTxSeq(newest)
	}
	// Every stamp is covered now: none counts towards a checkpoint.
	for i := range s.last {
		s.last[i].newerAfter, s.last[i].olderAfter = d.txSeq, d.txSeq
	}
	return nil
}

// class returns tx's copy of class i, registering the set with tx.
func (s *subpageSet) class(tx *Txn, i int) *subpageClass {
	if s.tx != tx {
		s.tx, s.touched, s.released = tx, 0, 0
		s.spare = s.d.alloc.releaseBudget(tx)
		tx.join(s)
	}
	if s.touched&(1<<i) == 0 {
		s.work[i] = s.last[i]
		// Before tx stamps slots: a checkpoint since the last commit
		// may have covered every one counted.
		s.work[i].cover(s.d.checkpointTxSeq.Load(), s.d.txSeq)
		s.touched |= 1 << i
	}
	return &s.work[i]
}

func (s *subpageSet) prepare(tx *Txn) error {
	for m := s.touched; m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		base := s.d.geometry.state.off + subpageTableOff + int64(i)*subpageClassBytes
		now, was := s.work[i].stored(), s.last[i].stored()
		for f, off := range subpageClassFields {
			if now[f] != was[f] {
				tx.writeU64(base+off, uint64(now[f]), kindMeta)
			}
		}
	}
	return nil
}

func (s *subpageSet) committed(tx *Txn) {
	pendingBytes, usedBytes := int64(0), int64(0)
	s.mu.Lock()
	for m := s.touched; m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		s.last[i] = s.work[i]
		if s.last[i].slotBytes != 0 && i >= s.count {
			s.count = i + 1
		}
	}
	covered := s.d.checkpointTxSeq.Load()
	for i := range s.count {
		s.last[i].cover(covered, s.d.txSeq)
		pendingBytes += s.last[i].uncoveredBytes()
		usedBytes += s.last[i].used * s.last[i].slotBytes
	}
	s.mu.Unlock()
	s.tx, s.touched = nil, 0
	// Pending slots wait for a checkpoint: ask for one before they hold
	// more space than is worth waiting for. Those a checkpoint covers
	// already wait for a walk of their queue (drainOther, Free) instead,
	// and count for nothing here, in their own class as in the others.
	if pendingBytes >= subpageCheckpointBytes || pendingBytes > max(usedBytes, subpageCheckpointBytes/16) {
		s.d.journal.requestCheckpoint()
	}
}

func (s *subpageSet) rolledBack(tx *Txn) {
	if s.released > 0 && errors.Is(tx.cause, ErrTooLarge) {
		// The releases may be what made tx too large: tried again, it
		// would release them again. The next Begin releases them on
		// their own, so that it fits.
		s.owed.Store(true)
	}
	s.tx, s.touched = nil, 0
}

// subpageSlotRange returns the smallest and largest slot sizes the device
// supports: 64 slots fill a parent, which is a page from MinPageSize to
// MaxPageSize, and a slot is at least 64 bytes so that its Addr can carry
// its size.
func (d *Device) subpageSlotRange() (lo, hi int64) {
	lo = max(int64(1)<<subpageMinSlotShift, d.geometry.minPage/subpageSlotsPerParent)
	return lo, d.geometry.maxPage / subpageSlotsPerParent
}

// Subpages returns the size class of slots of slotBytes bytes, creating it
// (in a transaction of its own) if the device has none yet. Classes are
// persisted: after a reopen, Subpages with the same size returns the same
// class and its slots. slotBytes must be a power of two from
// max(64, MinPageSize/64) to MaxPageSize/64; otherwise the error wraps
// ErrInvalidArgument (a MaxPageSize below 4 KiB leaves no size at all).
// A device holds at most 64 classes; past that the error wraps
// ErrNoSpace. A device of format version 1 has no room for sub-pages: the
// error wraps ErrVersion.
//
// Creating a class begins a transaction, so Subpages must not be called
// while the calling goroutine holds one open.
func (d *Device) Subpages(slotBytes int) (*Subpages, error) {
	if d.unmade() {
		return nil, errNil("Device")
	}
	if d.closed.Load() {
		return nil, ErrClosed
	}
	if d.alloc.g.parentShift == 0 {
		return nil, fmt.Errorf("%w: sub-pages need format version %d, the device has version %d", ErrVersion, subpageFormatVersion, d.geometry.version)
	}
	lo, hi := d.subpageSlotRange()
	if lo > hi {
		return nil, fmt.Errorf("%w: sub-pages need a MaxPageSize of at least %d bytes, the device has %d", ErrInvalidArgument, lo*subpageSlotsPerParent, d.geometry.maxPage)
	}
	size := int64(slotBytes)
	if !validPageSize(size) || size < lo || size > hi {
		return nil, fmt.Errorf("%w: sub-page slot size %d is not a power of two in [%d, %d]", ErrInvalidArgument, slotBytes, lo, hi)
	}
	s := &d.subpages
	s.mu.Lock()
	index := s.find(&s.last, size)
	s.mu.Unlock()
	if index < 0 {
		err := d.Update(func(tx *Txn) error {
			// Under the writer slot now: another goroutine may have
			// created the class since the look above.
			if index = s.find(&s.last, size); index >= 0 {
				return nil
			}
			s.mu.Lock()
			n := s.count
			s.mu.Unlock()
			if n >= subpageClassLimit {
				return fmt.Errorf("%w: the device already has %d sub-page classes", ErrNoSpace, n)
			}
			s.class(tx, n).slotBytes = size
			index = n
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return newSubpages(d, index, size), nil
}

// newSubpages returns the handle of class index, of slots of size bytes.
func newSubpages(d *Device, index int, size int64) *Subpages {
	shift := uint(bits.TrailingZeros64(uint64(size)))
	return &Subpages{d: d, index: index, slotShift: shift, parentBytes: size * subpageSlotsPerParent}
}

// find returns the index of the class of slotBytes in classes, or -1.
func (s *subpageSet) find(classes *[subpageClassLimit]subpageClass, slotBytes int64) int {
	for i := range classes {
		if classes[i].slotBytes == slotBytes {
			return i
		}
		if classes[i].slotBytes == 0 {
			break
		}
	}
	return -1
}

// subpageHeader is the decoded header of a parent.
type subpageHeader struct {
	magic      uint32
	class      int
	slotShift  uint
	flags      uint8
	pad        uint8 // zero
	mask       uint64
	pend       uint64
	prev, next int64
	pendNext   int64
	pendSeq    uint64
	spare      uint64 // zero
}

// decode sets h from the header bytes b. It fills h in place: the header
// is read on every sub-page operation, and copying it is a measurable
// part of one.
func (h *subpageHeader) decode(b []byte) {
	le := binary.LittleEndian
	h.magic = le.Uint32(b[0:])
	h.class = int(b[subpageClassOff])
	h.slotShift = uint(b[subpageShiftOff])
	h.flags = b[subpageFlagsOff]
	h.pad = b[subpageFlagsOff+1]
	h.mask = le.Uint64(b[subpageMaskOff:])
	h.pend = le.Uint64(b[subpagePendOff:])
	h.prev = int64(le.Uint64(b[subpagePrevOff:]))
	h.next = int64(le.Uint64(b[subpageNextOff:]))
	h.pendNext = int64(le.Uint64(b[subpagePendNextOff:]))
	h.pendSeq = le.Uint64(b[subpagePendSeqOff:])
	h.spare = le.Uint64(b[subpageSpareOff:])
}

// encodeTo stores h in b.
func (h *subpageHeader) encodeTo(b *[subpageHeaderBytes]byte) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], h.magic)
	b[subpageClassOff] = byte(h.class)
	b[subpageShiftOff] = byte(h.slotShift)
	b[subpageFlagsOff] = h.flags
	b[subpageFlagsOff+1] = h.pad
	le.PutUint64(b[subpageMaskOff:], h.mask)
	le.PutUint64(b[subpagePendOff:], h.pend)
	le.PutUint64(b[subpagePrevOff:], uint64(h.prev))
	le.PutUint64(b[subpageNextOff:], uint64(h.next))
	le.PutUint64(b[subpagePendNextOff:], uint64(h.pendNext))
	le.PutUint64(b[subpagePendSeqOff:], h.pendSeq)
	le.PutUint64(b[subpageSpareOff:], h.spare)
}

// free returns the mask of h's free slots.
func (h *subpageHeader) free() uint64 { return ^(h.mask | h.pend) }

// readSubpageHeader reads the header of the parent at p into h.
func (tx *Txn) readSubpageHeader(p int64, h *subpageHeader) {
	// The header is one whole line (slot 0 of a parent, at least 64
	// bytes, line-aligned) that the caller cannot write.
	var buf [lineBytes]byte
	h.decode(tx.readProtectedLine(&buf, p>>lineShift)[:subpageHeaderBytes])
}

// writeSubpageHeader journals bytes [from, to) of h, the header at p: only
// the words that may have changed, so the journal carries little more
// than the change.
func (tx *Txn) writeSubpageHeader(p int64, h *subpageHeader, from, to int) {
	var b [subpageHeaderBytes]byte
	h.encodeTo(&b)
	tx.write(p+int64(from), b[from:to], kindMeta)
}

// parentBitPos returns the metadata word holding the parent bit of the
// granule at off, and the bit's index in it.
func (g *heapGeometry) parentBitPos(off int64) (wordOff int64, bit uint) {
	start := g.blockStart(off)
	i := (off - start) >> g.parentShift
	return start + g.parentBitsOff + i/64*8, uint(i % 64)
}

// strayParentBit is the error of a sub-page parent bit set at p, where no
// allocated page starts (Check), or past the frontier (grow).
func strayParentBit(p int64) error {
	return corruptf(p, "sub-page parent bits", "a bit only where an allocated page starts, found one at %d", p)
}

// firstParentBit returns the first granule in [from, to), a range of one
// block, whose sub-page parent bit is set as tx sees it.
func (tx *Txn) firstParentBit(g *heapGeometry, from, to int64) (int64, bool) {
	if g.parentShift == 0 {
		return 0, false
	}
	block := g.blockStart(from)
	first, end := (from-block+1<<g.parentShift-1)>>g.parentShift, (to-block)>>g.parentShift
	for i := first &^ 63; i < end; i += 64 {
		word := tx.readU64(block + g.parentBitsOff + i/8)
		if i < first {
			word &^= 1<<(first-i) - 1
		}
		if end-i < 64 {
			word &= 1<<(end-i) - 1
		}
		if word != 0 {
			return block + (i+int64(bits.TrailingZeros64(word)))<<g.parentShift, true
		}
	}
	return 0, false
}

// setParentBit journals the parent bit of the page at p, and keeps the
// mark on tx's line holding the page's header (line.parent) in step.
func (tx *Txn) setParentBit(g *heapGeometry, p int64, on bool) {
	w, bit := g.parentBitPos(p)
	old := tx.readU64(w)
	if on {
		tx.writeU64(w, old|1<<bit, kindMeta)
	} else {
		tx.writeU64(w, old&^(1<<bit), kindMeta)
	}
	if l := tx.lines.line(p >> lineShift); l != nil {
		l.parent = on
	}
}

// knownParent reports whether tx has seen the parent bit of the page at p
// set, as marked on its line holding the page's header (markParent).
func (tx *Txn) knownParent(p int64) bool {
	l := tx.lines.line(p >> lineShift)
	return l != nil && l.parent
}

// markParent records that tx found the parent bit of the page at p set,
// once it has written to the line holding the page's header: later links
// to p and frees into it in tx need not look at the bit again.
func (tx *Txn) markParent(p int64) { tx.lines.line(p >> lineShift).parent = true }

// subpageParentAt reports whether the allocated page of pageBytes at off
// is a sub-page parent: as tx sees it, or committed with a nil tx.
func (d *Device) subpageParentAt(tx *Txn, off, pageBytes int64) bool {
	g := &d.alloc.g
	if g.parentShift == 0 || pageBytes < 1<<g.parentShift || off < g.heapOff || off&(1<<g.parentShift-1) != 0 {
		return false
	}
	w, bit := g.parentBitPos(off)
	var word uint64
	if tx != nil {
		word = tx.readU64(w)
	} else {
		word = d.committedU64(w)
	}
	return word>>bit&1 != 0
}

// SlotBytes returns the size of the class's slots in bytes.
func (s *Subpages) SlotBytes() int64 {
	if s.unmade() {
		return 0
	}
	return 1 << s.slotShift
}

// owns reports whether h is the header of one of s's parents; p must be a
// parent (its parent bit set).
func (s *Subpages) owns(h *subpageHeader) bool {
	return h.magic == subpageMagic && h.class == s.index && h.slotShift == s.slotShift
}

// corrupt returns a CorruptError in part ("list", "pending queue", ...)
// of the class's structures.
func (s *Subpages) corrupt(off int64, part, format string, args ...any) error {
	return corruptf(off, fmt.Sprintf("sub-page class %d %s", s.index, part), format, args...)
}

// link reads into h the header of the parent p, a link read from the
// device (a list or queue link, the class table's ends) that the caller is
// about to follow in part of the class's structures. It returns an error
// wrapping ErrCorrupt unless p is a parent of s as tx sees it: aligned to
// the parent size, inside the heap, its parent bit set and its header the
// class's. The links are not checked at Open: a corrupt one would
// otherwise have the allocator write through it outside any parent's
// header, or hand out a slot of a page that is not a parent (a caller's
// page may hold a copy of a header).
func (s *Subpages) link(tx *Txn, p int64, part string, h *subpageHeader) error {
	al := tx.d.alloc
	frontier := al.last.frontier
	if al.tx == tx {
		frontier = al.work.frontier
	}
	if p <= 0 || s.parentBytes <= 0 || p&(s.parentBytes-1) != 0 || p < al.g.heapOff || p > frontier-s.parentBytes ||
		!tx.knownParent(p) && !tx.d.subpageParentAt(tx, p, s.parentBytes) {
		return s.corrupt(p, part, "a sub-page parent of class %d: a page of %d bytes in the heap below %d with its parent bit set", s.index, s.parentBytes, frontier)
	}
	tx.readSubpageHeader(p, h)
	if !s.owns(h) {
		return s.corrupt(p, part, "a header of class %d, found magic %#x class %d slot shift %d", s.index, h.magic, h.class, h.slotShift)
	}
	return nil
}

// releasable reports whether releaseInPlace would release h's pending
// slots now.
func (s *Subpages) releasable(tx *Txn, h *subpageHeader) bool {
	return h.pend != 0 && h.pendSeq <= tx.d.checkpointTxSeq.Load()
}

// Alloc allocates one slot of the class. The Addr is the slot's offset
// with log2 of the slot size in the low 6 bits, as a page's is: its Offset
// lies inside a parent page and its Size is the slot size. The slot's
// contents are undefined. When no parent has a free slot it takes a new
// parent from the buddy allocator, and fails as Txn.Alloc does
// (ErrNoSpace). A list or queue that the file's corruption broke is
// ErrCorrupt.
func (s *Subpages) Alloc(tx *Txn) (Addr, error) {
	if s.unmade() {
		return 0, errNil("Subpages")
	}
	if err := s.usableBy(tx); err != nil {
		return 0, err
	}
	c := tx.d.subpages.class(tx, s.index)
	if c.head == 0 {
		// Before growing, look for pending slots a checkpoint freed.
		if err := s.release(tx, c, subpageReleaseBudget, true); err != nil {
			return 0, err
		}
		if c.head == 0 {
			if err := s.newParent(tx, c); err != nil {
				return 0, err
			}
		}
	}
	p := c.head
	var h subpageHeader
	if err := s.link(tx, p, "list head", &h); err != nil {
		return 0, err
	}
	if h.free() == 0 || h.prev != 0 || h.mask&1 == 0 || h.mask&h.pend != 0 {
		return 0, corruptf(p, "sub-page parent", "the head of class %d's list: a header with its header slot allocated, a free slot and no previous parent, found magic %#x class %d mask %#x pending %#x prev %d",
			s.index, h.magic, h.class, h.mask, h.pend, h.prev)
	}
	free := h.free()
	if s.releasable(tx, &h) {
		free = ^h.mask
	}
	if free&(free-1) == 0 && h.next != 0 {
		// This slot fills p, which leaves the list: its successor
		// becomes the head, and its back link is written.
		var n subpageHeader
		if err := s.link(tx, h.next, "list", &n); err != nil {
			return 0, err
		}
		if n.prev != p {
			return 0, s.corrupt(h.next+subpagePrevOff, "list", "a back link to %d, found %d", p, n.prev)
		}
	}
	from, to := subpageMaskOff, subpageMaskOff+8
	if s.releaseInPlace(tx, c, &h) {
		from, to = subpageFlagsOff, subpageSpareOff
	}
	slot := bits.TrailingZeros64(h.free())
	h.mask |= 1 << slot
	c.used++
	if h.free() == 0 {
		// Full: off the list, which it heads.
		c.head = h.next
		if h.next != 0 {
			tx.writeU64(h.next+subpagePrevOff, 0, kindMeta)
			tx.markParent(h.next) // checked above
		}
		h.next = 0
		from, to = min(from, subpageMaskOff), max(to, subpageNextOff+8)
	}
	tx.writeSubpageHeader(p, &h, from, to)
	tx.markParent(p)
	return makeAddr(p+int64(slot)<<s.slotShift, s.slotShift), nil
}

// releaseInPlace makes the pending slots of h, a header in hand, free if a
// checkpoint covers them, and reports whether it did. The parent stays on
// the pending queue, to be dequeued when it reaches the head: reading a
// header that is not in hand is what release costs, and a parent touched
// anyway costs nothing to release.
func (s *Subpages) releaseInPlace(tx *Txn, c *subpageClass, h *subpageHeader) bool {
	if h.pend == 0 || h.pendSeq > tx.d.checkpointTxSeq.Load() {
		return false
	}
	c.pending -= int64(bits.OnesCount64(h.pend))
	c.recount(h.pend, h.pendSeq, 0)
	h.pend, h.pendSeq = 0, 0
	h.flags &^= subpageFlagRequeue
	return true
}

// newParent takes a page from the buddy allocator and makes it the head of
// c's partial list, which is empty. When the device is full it waits for
// a checkpoint to make the class's pending slots free instead, if one can.
func (s *Subpages) newParent(tx *Txn, c *subpageClass) error {
	d := tx.d
	a, err := tx.Alloc(s.parentBytes)
	if errors.Is(err, ErrNoSpace) && c.pendHead != 0 {
		// Slots freed by earlier transactions become free once a
		// checkpoint covers them; this transaction's own never do.
		if werr := d.journal.waitCheckpoint(min(c.pendSeq, d.txSeq)); werr != nil {
			return werr
		}
		// Past parents released in place already, however many: within
		// a release's worth of lines, as Close's drain, not a bound in
		// parents, which such parents at the head would use up.
		start, room := tx.lines.len(), d.alloc.releaseBudget(tx)
		for c.head == 0 && c.pendHead != 0 && tx.lines.len()-start < room {
			head := c.pendHead
			if rerr := s.release(tx, c, subpageSlotsPerParent, true); rerr != nil {
				return rerr
			}
			if c.pendHead == head {
				break // the head waits for a later checkpoint
			}
		}
		if c.head != 0 {
			return nil
		}
	}
	if err != nil {
		return err
	}
	p := a.Offset()
	h := subpageHeader{magic: subpageMagic, class: s.index, slotShift: s.slotShift, mask: subpageEmptyMask}
	tx.writeSubpageHeader(p, &h, 0, subpageHeaderBytes)
	tx.setParentBit(&d.alloc.g, p, true) // after: it marks the header's line
	c.head = p
	c.parents++
	return nil
}

// Free gives the slot a back to its class. The slot is pending until a
// checkpoint covers this transaction, and only then may Alloc hand it out
// again: a crash can never leave it owned by two callers, and no journaled
// write of its old owner can be replayed over its new owner's bytes. A
// parent whose last allocated slot is freed goes back to the buddy
// allocator once its pending slots are free. Free of anything that is not
// an allocated slot of this class (a slot of another class, a double free,
// an address that is not a slot's, a parent's header, an address in a
// page that is not a parent) returns ErrInvalidFree and changes nothing;
// so does a parent's header, a list or a queue that the file's corruption
// broke, with ErrCorrupt.
func (s *Subpages) Free(tx *Txn, a Addr) error {
	if s.unmade() {
		return errNil("Subpages")
	}
	if err := s.usableBy(tx); err != nil {
		return err
	}
	var h subpageHeader
	p, slot, err := s.validate(tx, a, &h)
	if err != nil {
		return err
	}
	c := tx.d.subpages.class(tx, s.index)
	seq := tx.d.txSeq + 1 // this transaction's, once it commits
	wasFull := h.free() == 0
	// The links this Free writes through, checked before it changes
	// anything: the queue's tail, and the list's head if p joins it.
	if h.flags&subpageFlagQueued == 0 && c.pendTail != 0 {
		if err := s.queueTail(tx, c); err != nil {
			return err
		}
	}
	if wasFull && s.releasable(tx, &h) && c.head != 0 {
		if err := s.listHead(tx, c); err != nil {
			return err
		}
	}
	released := s.releaseInPlace(tx, c, &h)
	switch {
	case h.flags&subpageFlagQueued == 0:
		// Onto the pending queue, at the tail.
		h.flags |= subpageFlagQueued
		h.pendNext = 0
		if c.pendTail != 0 {
			tx.writeU64(c.pendTail+subpagePendNextOff, uint64(p), kindMeta)
		} else {
			c.pendHead, c.headSeq = p, seq
		}
		c.pendTail = p
	case h.pendSeq != seq && c.pendTail != p:
		// Queued earlier: its slots now wait for this transaction, and
		// it must not hold up the parents queued after it.
		h.flags |= subpageFlagRequeue
	}
	// The pending slots releaseInPlace left, not covered, wait for this
	// transaction now, as the slot it frees does.
	c.recount(h.pend, h.pendSeq, seq)
	c.recount(1<<slot, 0, seq)
	h.pendSeq = seq
	h.mask &^= 1 << slot
	h.pend |= 1 << slot
	if wasFull && released {
		// It has free slots again: onto the list, at the head (checked
		// above).
		s.push(tx, c, p, &h)
	}
	tx.writeSubpageHeader(p, &h, subpageFlagsOff, subpageSpareOff)
	tx.markParent(p) // validate found the bit set
	c.used--
	c.pending++
	c.pendSeq = seq
	// Walk the queue only while the pending slots are worth it: a
	// parent found there costs a header read that nothing else pays for.
	// And only while tx has lines to spare: many frees in one transaction,
	// each releasing parents, would otherwise make it too large to commit.
	// The slot is free whatever the walks meet: a queue the file's
	// corruption broke stops them, changing nothing (release), and is
	// for Alloc and Check to report.
	if set := &tx.d.subpages; set.spare > 0 {
		start := tx.lines.len()
		if c.pending*subpagePendingShare > c.used {
			_ = s.release(tx, c, subpageReleaseBudget, false)
		}
		_ = set.drainOther(tx, s.index)
		set.spare -= tx.lines.len() - start
	}
	return nil
}

// drainSubpages releases, before Close retracts the heap, every pending
// slot of every class, giving empty parents back to the buddy allocator:
// a class left idle after its last frees would otherwise hold them until
// a Free in another class reached it (drainOther). It waits for one
// checkpoint if the queues hold slots none covers yet, and runs as many
// transactions as the queues need, taking the writer slot for each.
// Called by Begin for a transaction refused as too large with what it
// released (owed, see subpageSet.owed), it releases the covered slots
// only, waiting for no checkpoint, in transactions Begin would begin.
func (d *Device) drainSubpages(owed bool) error {
	set := &d.subpages
	set.mu.Lock()
	classes := set.count
	set.mu.Unlock()
	if classes == 0 {
		return nil
	}
	waited := false
	var broken uint64 // classes whose queue is corrupt
	begin := d.beginClosing
	if owed {
		begin = d.begin
	}
	for {
		tx, err := begin()
		if err != nil {
			return err
		}
		covered := d.checkpointTxSeq.Load()
		moved, waiting := false, false
		// Within a release's worth of lines a transaction, as the
		// buddy allocator's releases: the rest in the next one.
		budget, start := d.alloc.releaseBudget(tx), tx.lines.len()
		for i := range set.count {
			if broken&(1<<i) != 0 {
				continue
			}
			c, s := set.class(tx, i), set.handle(i)
			for c.pendHead != 0 && tx.lines.len()-start < budget {
				head, parents := c.pendHead, c.parents
				if err := s.release(tx, c, 1, false); errors.Is(err, ErrCorrupt) {
					// A queue the file's corruption broke stops
					// there, as the buddy allocator's does:
					// Check reports it.
					broken |= 1 << i
					break
				} else if err != nil {
					tx.Rollback()
					return err
				}
				if c.pendHead == head && c.parents == parents {
					break // the head waits for a checkpoint
				}
				moved = true
			}
			waiting = waiting || broken&(1<<i) == 0 && c.pendHead != 0 && (c.headSeq == 0 || c.headSeq > covered)
		}
		seq := d.txSeq
		if err := tx.Commit(); err != nil {
			return err
		}
		switch {
		case moved:
		case waiting && !waited && !owed:
			if err := d.journal.waitCheckpoint(seq); err != nil {
				return err
			}
			waited = true
		default:
			return nil
		}
	}
}

// peek returns class i as the open transaction sees it, without joining
// the set to it: the transaction's copy if it touched the class, else the
// committed one. The writer slot is held.
func (s *subpageSet) peek(i int) *subpageClass {
	if s.tx != nil && s.touched&(1<<i) != 0 {
		return &s.work[i]
	}
	return &s.last[i]
}

// handle returns the Subpages of class i, which exists.
func (s *subpageSet) handle(i int) *Subpages {
	return newSubpages(s.d, i, s.peek(i).slotBytes)
}

// drainOther looks at the pending queue of one class other than self (-1:
// any class), in turn, and releases a parent there if a checkpoint covers
// it: so that a class no one allocates from or frees into any more still
// gives its empty parents back, while every operation stays O(1). A class
// with nothing to release is not joined to tx.
func (s *subpageSet) drainOther(tx *Txn, self int) error {
	if s.count == 0 {
		return nil
	}
	i := s.drain % s.count
	s.drain++
	if i == self {
		return nil
	}
	// s.tx is tx or nil: the set leaves a transaction when it ends.
	if c := s.peek(i); c.pendHead == 0 || c.headSeq > tx.d.checkpointTxSeq.Load() {
		return nil
	}
	return s.handle(i).release(tx, s.class(tx, i), 1, false)
}

// drainForPages is drainOther for a transaction that comes to the buddy
// allocator before any sub-page operation: a device whose traffic is whole
// pages only would otherwise never give an idle class's empty parents
// back. Once tx has done a sub-page operation it is in the middle of one,
// or that operation drained already (Free), and nothing is done.
func (s *subpageSet) drainForPages(tx *Txn) {
	if s.tx != tx {
		// A queue the file's corruption broke stops the release,
		// changing nothing: it is for Alloc and Check to report.
		_ = s.drainOther(tx, -1)
	}
}

// listHead returns an error wrapping ErrCorrupt unless c's list head,
// which is not 0, is a parent of the class heading the list.
func (s *Subpages) listHead(tx *Txn, c *subpageClass) error {
	const part = "list head"
	var h subpageHeader
	if err := s.link(tx, c.head, part, &h); err != nil {
		return err
	}
	if h.prev != 0 {
		return s.corrupt(c.head+subpagePrevOff, part, "no previous parent, found %d", h.prev)
	}
	return nil
}

// queueTail returns an error wrapping ErrCorrupt unless c's pending queue
// tail, which is not 0, is a queued parent of the class ending the queue.
func (s *Subpages) queueTail(tx *Txn, c *subpageClass) error {
	const part = "pending queue tail"
	var h subpageHeader
	if err := s.link(tx, c.pendTail, part, &h); err != nil {
		return err
	}
	if h.flags&subpageFlagQueued == 0 || h.pendNext != 0 {
		return s.corrupt(c.pendTail, part, "a queued parent with no next, found flags %#x next %d", h.flags, h.pendNext)
	}
	return nil
}

// push puts the parent p with header h at the head of c's partial list;
// the caller has checked the head (listHead).
func (s *Subpages) push(tx *Txn, c *subpageClass, p int64, h *subpageHeader) {
	h.prev, h.next = 0, c.head
	if c.head != 0 {
		tx.writeU64(c.head+subpagePrevOff, uint64(p), kindMeta)
	}
	c.head = p
}

// release looks at up to budget parents at the head of c's pending queue:
// it makes their pending slots free if a checkpoint covers them, and
// dequeues them. A parent at the head that was freed into after it was
// queued and is not covered goes to the tail instead, so that it holds up
// no parent queued after it. A parent whose slots were released in place
// already costs no budget, up to a bound. A parent left empty goes back
// to the buddy allocator, unless forAlloc and the class has no other with
// a free slot: then it stays, for the Alloc that needs one (freeing it
// would leave its page pending in this transaction, and a full device with
// nothing to allocate).
func (s *Subpages) release(tx *Txn, c *subpageClass, budget int, forAlloc bool) error {
	covered := tx.d.checkpointTxSeq.Load()
	refunds := 4 * subpageReleaseBudget
	for ; budget > 0 && c.pendHead != 0 && c.headSeq <= covered; budget-- {
		p := c.pendHead
		var h subpageHeader
		const part = "pending queue"
		if err := s.link(tx, p, part, &h); err != nil {
			return err
		}
		if h.flags&subpageFlagQueued == 0 || h.pendSeq > tx.d.txSeq+1 {
			// A stamp past this transaction's would hold the queue up
			// for ever.
			return s.corrupt(p, part, "a queued parent of the class stamped by transaction %d at the latest, found flags %#x stamp %d",
				tx.d.txSeq+1, h.flags, h.pendSeq)
		}
		if (h.pendNext == 0) != (c.pendTail == p) {
			// Dequeued, it would leave the parents after it queued
			// where no walk reaches them, or the tail a parent off
			// the queue.
			return s.corrupt(p+subpagePendNextOff, part, "a next parent unless the head is the tail %d, found %d", c.pendTail, h.pendNext)
		}
		if h.pendSeq > covered {
			if h.flags&subpageFlagRequeue == 0 || c.pendTail == p {
				c.headSeq = h.pendSeq
				return nil
			}
			if err := s.queueTail(tx, c); err != nil {
				return err
			}
			c.pendHead, c.headSeq = h.pendNext, 0
			tx.writeU64(c.pendTail+subpagePendNextOff, uint64(p), kindMeta)
			c.pendTail = p
			h.pendNext = 0
			h.flags &^= subpageFlagRequeue
			tx.writeSubpageHeader(p, &h, subpageFlagsOff, subpageSpareOff)
			continue
		}
		wasFull := h.free() == 0
		keep := forAlloc && c.head == 0 // then it was full: on no list
		empty := h.mask == subpageEmptyMask && !keep
		// The links it will write through, checked before anything
		// changes: its neighbours on the list if it leaves it, and the
		// buddy allocator's if it goes back there; the list's head if
		// it joins it.
		switch {
		case empty:
			if !wasFull {
				if err := s.linked(tx, c, p, &h); err != nil {
					return err
				}
			}
			if err := s.parentFreeable(tx, p); err != nil {
				return err
			}
		case wasFull && !empty && h.pend != 0 && c.head != 0: // its pending slots free up
			if err := s.listHead(tx, c); err != nil {
				return err
			}
		}
		c.pendHead, c.headSeq = h.pendNext, 0
		if c.pendHead == 0 {
			c.pendTail = 0
		}
		tx.d.subpages.released++
		if !s.releaseInPlace(tx, c, &h) && h.pend == 0 && refunds > 0 {
			refunds-- // released in place when last touched: only dequeued
			budget++
		}
		h.pendNext, h.flags = 0, 0
		if empty {
			if !wasFull {
				s.detach(tx, c, &h)
			}
			if err := s.freeParent(tx, c, p); err != nil {
				return err
			}
			continue
		}
		if wasFull && h.free() != 0 {
			s.push(tx, c, p, &h)
		}
		tx.writeSubpageHeader(p, &h, subpageFlagsOff, subpageSpareOff)
		if keep && h.mask == subpageEmptyMask {
			// Kept for the Alloc, which takes its slot from the head:
			// no other parent may go before it.
			return nil
		}
	}
	return nil
}

// parentFreeable returns nil if freeParent can give the parent p back to
// the buddy allocator, or else parentFreeError.
func (s *Subpages) parentFreeable(tx *Txn, p int64) error {
	if err := tx.d.alloc.freeable(tx, s.parentAddr(p)); err != nil {
		return parentFreeError(p, err)
	}
	return nil
}

// parentAddr is the buddy allocator's Addr of the parent p.
func (s *Subpages) parentAddr(p int64) Addr { return makeAddr(p, s.slotShift+6) }

// parentFreeError is the error of a parent p that the buddy allocator
// refuses to take back (err): corruption, since the parent bit says an
// allocated page is there.
func parentFreeError(p int64, err error) error {
	return fmt.Errorf("%w (freeing sub-page parent %d: %w)", corruptf(p, "sub-page parent", "an allocated page"), p, err)
}

// freeParent gives the parent p, empty and off both lists, back to the
// buddy allocator; parentFreeable has checked that it can.
func (s *Subpages) freeParent(tx *Txn, c *subpageClass, p int64) error {
	g := &tx.d.alloc.g
	// Clear the bit first: Txn.Free refuses a parent.
	tx.setParentBit(g, p, false)
	if err := tx.Free(s.parentAddr(p)); err != nil {
		return parentFreeError(p, err)
	}
	c.parents--
	return nil
}

// linked returns an error wrapping ErrCorrupt unless the parent p with
// header h, on class c's partial list, is linked to by its neighbours
// there: the head or its previous parent's next link, and its next
// parent's back link. detach writes through them.
func (s *Subpages) linked(tx *Txn, c *subpageClass, p int64, h *subpageHeader) error {
	const part = "list"
	var n subpageHeader
	if h.prev == 0 {
		if c.head != p {
			return s.corrupt(p+subpagePrevOff, part, "a previous parent, or the head %d, found neither", c.head)
		}
	} else {
		if err := s.link(tx, h.prev, part, &n); err != nil {
			return err
		}
		if n.next != p {
			return s.corrupt(h.prev+subpageNextOff, part, "a link to %d, found %d", p, n.next)
		}
	}
	if h.next != 0 {
		if err := s.link(tx, h.next, part, &n); err != nil {
			return err
		}
		if n.prev != p {
			return s.corrupt(h.next+subpagePrevOff, part, "a back link to %d, found %d", p, n.prev)
		}
	}
	return nil
}

// detach takes the parent with header h off class c's partial list; the
// caller has checked its neighbours (linked).
func (s *Subpages) detach(tx *Txn, c *subpageClass, h *subpageHeader) {
	if h.prev == 0 {
		c.head = h.next
	} else {
		tx.writeU64(h.prev+subpageNextOff, uint64(h.next), kindMeta)
	}
	if h.next != 0 {
		tx.writeU64(h.next+subpagePrevOff, uint64(h.prev), kindMeta)
	}
	h.prev, h.next = 0, 0
}

// validate returns a's parent and slot index, and reads the parent's
// header into h, if a is an allocated slot of s as tx sees it; otherwise
// an error wrapping ErrInvalidFree.
func (s *Subpages) validate(tx *Txn, a Addr, h *subpageHeader) (int64, int, error) {
	if uint(a&addrSizeMask) != s.slotShift {
		return 0, 0, fmt.Errorf("%w: %v is not a slot of the %d-byte class", ErrInvalidFree, a, s.SlotBytes())
	}
	off := a.Offset()
	p := off &^ (s.parentBytes - 1)
	slot := int((off - p) >> s.slotShift)
	al := tx.d.alloc
	frontier := al.last.frontier
	if al.tx == tx {
		frontier = al.work.frontier
	}
	switch {
	case off < al.g.heapOff || off >= frontier || p+s.parentBytes > frontier:
		return 0, 0, fmt.Errorf("%w: %v lies outside the heap [%d, %d)", ErrInvalidFree, a, al.g.heapOff, frontier)
	case off&(s.SlotBytes()-1) != 0:
		return 0, 0, fmt.Errorf("%w: %v is not aligned to its slot size", ErrInvalidFree, a)
	case slot == 0:
		return 0, 0, fmt.Errorf("%w: %v is the header of a parent, not a slot", ErrInvalidFree, a)
	case !tx.knownParent(p) && !tx.d.subpageParentAt(tx, p, s.parentBytes):
		return 0, 0, fmt.Errorf("%w: %v is not inside a sub-page parent", ErrInvalidFree, a)
	}
	tx.readSubpageHeader(p, h)
	switch {
	case !s.owns(h) && tx.d.subpages.headerOf(h):
		// Another class's parent starts at p: a is a slot of that
		// class, or lies inside one, with this class's size.
		return 0, 0, fmt.Errorf("%w: %v lies in a parent of sub-page class %d, not %d", ErrInvalidFree, a, h.class, s.index)
	case !s.owns(h):
		// The parent bit makes p a parent of this slot size: a header
		// no class owns is damage, as Alloc reports it.
		return 0, 0, s.corrupt(p, "parent", "a header of class %d, found magic %#x class %d slot shift %d", s.index, h.magic, h.class, h.slotShift)
	case h.mask&h.pend&(1<<slot) != 0:
		return 0, 0, s.corrupt(p+subpageMaskOff, "parent", "slot %d allocated or pending, found both", slot)
	case h.pend&(1<<slot) != 0:
		return 0, 0, fmt.Errorf("%w: %v was already freed (double free)", ErrInvalidFree, a)
	case h.mask&(1<<slot) == 0:
		return 0, 0, fmt.Errorf("%w: %v is not allocated (double free)", ErrInvalidFree, a)
	}
	return p, slot, nil
}

// headerOf reports whether h is a parent header of one of the classes,
// as the class table says their slot sizes are.
func (s *subpageSet) headerOf(h *subpageHeader) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return h.magic == subpageMagic && h.class < s.count && s.last[h.class].slotBytes == 1<<h.slotShift
}

// usableBy returns why tx cannot use s, or nil.
func (s *Subpages) usableBy(tx *Txn) error {
	switch {
	case tx == nil:
		return fmt.Errorf("%w: nil transaction", ErrInvalidArgument)
	case tx.done:
		return ErrTxDone
	case tx.d != s.d:
		return fmt.Errorf("%w: transaction of another device", ErrInvalidArgument)
	}
	return nil
}

// Stats returns the class's committed state; after Close, the state
// Close left.
func (s *Subpages) Stats() SubpageStats {
	if s.unmade() {
		return SubpageStats{}
	}
	set := &s.d.subpages
	set.mu.Lock()
	c := set.last[s.index]
	set.mu.Unlock()
	slotBytes := s.SlotBytes()
	return SubpageStats{
		SlotBytes:     slotBytes,
		ParentBytes:   s.parentBytes,
		Parents:       c.parents,
		SlotsUsed:     c.used,
		SlotsPending:  c.pending,
		SlotsFree:     c.parents*(subpageSlotsPerParent-1) - c.used - c.pending,
		OverheadBytes: c.parents*s.parentBytes - c.used*slotBytes,
	}
}

// checkSubpages checks every sub-page class: the table; every parent's
// header; each class's partial list (links both ways, exactly the parents
// with a free slot) and pending queue (exactly the parents flagged queued,
// every parent with a pending slot among them); the counters, and the
// allocator's counts of slots a checkpoint may yet free, against what the
// parents hold; and the parent bits, set for exactly the parents the heap
// walk found.
func (c *checker) checkSubpages() {
	d := c.d
	if c.g.parentShift == 0 {
		return // a version-1 device: no sub-pages
	}
	b := make([]byte, subpageClassLimit*subpageClassBytes)
	tableOff := d.geometry.state.off + subpageTableOff
	c.tx.read(b, tableOff)
	lo, hi := d.subpageSlotRange()
	var classes [subpageClassLimit]subpageClass
	count := 0
	for i := range subpageClassLimit {
		e := b[i*subpageClassBytes : (i+1)*subpageClassBytes]
		cl := decodeSubpageClass(e)
		at := tableOff + int64(i)*subpageClassBytes
		// The set's copy is what the allocator acts on; the next Open
		// loads the table.
		if held := d.subpages.last[i].stored(); held != cl.stored() {
			c.report(at, "sub-page class table", "entry %d as the allocator holds it (slot size, list head, parents, slots allocated, queue head and tail, slots pending, stamp) %v, found %v", i, held, cl.stored())
		}
		if cl.slotBytes == 0 {
			if !allZero(e) {
				c.report(at, "sub-page class table", "entry %d unused and zero", i)
			}
			continue
		}
		if count != i {
			c.report(at, "sub-page class table", "classes in entries 0..n-1, found class %d after an unused entry", i)
		}
		count = i + 1
		if !validPageSize(cl.slotBytes) || cl.slotBytes < lo || cl.slotBytes > hi {
			c.report(at, "sub-page class table", "entry %d: a power-of-two slot size in [%d, %d], found %d", i, lo, hi, cl.slotBytes)
			continue
		}
		if cl.pendSeq > d.txSeq || (cl.pendHead == 0) != (cl.pendTail == 0) {
			c.report(at, "sub-page class table", "entry %d: a stamp no newer than transaction %d and a pending queue with both ends or none, found stamp %d head %d tail %d",
				i, d.txSeq, cl.pendSeq, cl.pendHead, cl.pendTail)
		}
		for j := range i {
			if classes[j].slotBytes == cl.slotBytes {
				c.report(at, "sub-page class table", "one class per slot size, found %d in classes %d and %d", cl.slotBytes, j, i)
			}
		}
		classes[i] = cl
	}
	// What the parents found by the heap walk hold, per class.
	var parents, partial, queued, used, pending, newer, older [subpageClassLimit]int64
	isParent := make(map[int64]bool, len(c.subpageParents))
	for _, p := range c.subpageParents {
		isParent[p] = true
		var h subpageHeader
		c.tx.readSubpageHeader(p, &h)
		cl := h.class
		if h.magic != subpageMagic || cl >= subpageClassLimit || classes[cl].slotBytes == 0 || classes[cl].slotBytes != 1<<h.slotShift {
			c.report(p, "sub-page parent", "a header of a class in the table, found magic %#x class %d slot shift %d", h.magic, cl, h.slotShift)
			continue
		}
		order := int(h.slotShift) + 6 - int(c.g.minShift)
		if order < 0 || order > c.g.maxOrder || c.tx.pageState(c.g, order, p) != stateAllocated {
			c.report(p, "sub-page parent", "an allocated page of %d bytes under the parent bit", int64(1)<<(h.slotShift+6))
			continue
		}
		switch {
		case h.mask&1 == 0 || h.pend&1 != 0 || h.mask&h.pend != 0:
			c.report(p+subpageMaskOff, "sub-page parent", "the header slot allocated and no slot both allocated and pending, found allocated %#x pending %#x", h.mask, h.pend)
		case h.mask == subpageEmptyMask && h.pend == 0:
			c.report(p+subpageMaskOff, "sub-page parent", "an allocated or pending slot (an empty parent is freed)")
		case h.pad != 0 || h.spare != 0 || h.flags&^(subpageFlagQueued|subpageFlagRequeue) != 0:
			c.report(p, "sub-page parent", "zero reserved bytes and known flags, found flags %#x", h.flags)
		case h.pend == 0 && (h.pendSeq != 0 || h.flags&subpageFlagRequeue != 0):
			c.report(p+subpagePendOff, "sub-page parent", "no stamp and no requeue flag without pending slots, found stamp %d flags %#x", h.pendSeq, h.flags)
		case h.pend != 0 && (h.pendSeq == 0 || h.pendSeq > classes[cl].pendSeq || h.flags&subpageFlagQueued == 0):
			c.report(p+subpagePendSeqOff, "sub-page parent", "pending slots queued, with a stamp in [1, %d] (the class's newest), found stamp %d flags %#x", classes[cl].pendSeq, h.pendSeq, h.flags)
		case h.flags&subpageFlagQueued == 0 && (h.pendNext != 0 || h.flags != 0):
			c.report(p+subpagePendNextOff, "sub-page parent", "no queue link or flag off the queue, found next %d flags %#x", h.pendNext, h.flags)
		case h.free() == 0 && (h.prev != 0 || h.next != 0):
			c.report(p+subpagePrevOff, "sub-page parent", "no list links on a full parent, found prev %d next %d", h.prev, h.next)
		}
		parents[cl]++
		used[cl] += int64(bits.OnesCount64(h.mask)) - 1
		pending[cl] += int64(bits.OnesCount64(h.pend))
		switch held := &d.subpages.last[cl]; {
		case h.pend == 0:
		case h.pendSeq > held.newerAfter:
			newer[cl] += int64(bits.OnesCount64(h.pend))
		case h.pendSeq > held.olderAfter:
			older[cl] += int64(bits.OnesCount64(h.pend))
		}
		if h.free() != 0 {
			partial[cl]++
		}
		if h.flags&subpageFlagQueued != 0 {
			queued[cl]++
		}
	}
	for i := range count {
		cl := &classes[i]
		if cl.slotBytes == 0 {
			continue
		}
		at := tableOff + int64(i)*subpageClassBytes
		what := fmt.Sprintf("sub-page class %d list", i)
		prev := int64(0)
		n, _ := c.walkParents(cl.head, parents[i], isParent, what, func(p int64, h *subpageHeader) int64 {
			switch {
			case h.class != i || int64(1)<<h.slotShift != cl.slotBytes:
				c.report(p, what, "only parents of class %d, found class %d", i, h.class)
			case h.free() == 0:
				c.report(p+subpageMaskOff, what, "only parents with a free slot, found a full one")
			case h.prev != prev:
				c.report(p+subpagePrevOff, what, "a back link to %d, found %d", prev, h.prev)
			}
			prev = p
			return h.next
		})
		if n != partial[i] {
			c.report(at, what, "every parent with a free slot on the list (%d), found %d", partial[i], n)
		}
		what = fmt.Sprintf("sub-page class %d pending queue", i)
		n, last := c.walkParents(cl.pendHead, parents[i], isParent, what, func(p int64, h *subpageHeader) int64 {
			if h.class != i || h.flags&subpageFlagQueued == 0 {
				c.report(p, what, "only queued parents of class %d, found class %d flags %#x", i, h.class, h.flags)
			}
			return h.pendNext
		})
		if n != queued[i] || last != cl.pendTail {
			c.report(at, what, "every parent flagged queued (%d) on it, ending at the tail %d, found %d ending at %d", queued[i], cl.pendTail, n, last)
		}
		if parents[i] != cl.parents || used[i] != cl.used || pending[i] != cl.pending {
			c.report(at, "sub-page class table", "class %d: %d parents, %d allocated and %d pending slots as the parents show, found counters %d, %d and %d",
				i, parents[i], used[i], pending[i], cl.parents, cl.used, cl.pending)
		} else if held := &d.subpages.last[i]; newer[i] != held.newer || older[i] != held.older {
			// Off by some, they would ask for a checkpoint per commit,
			// or for none while the slots pile up.
			c.report(at, "sub-page class table", "class %d: counts of the pending slots a checkpoint may yet free as the parents show, %d stamped after transaction %d and %d in (%d, %d], found %d and %d",
				i, newer[i], held.newerAfter, older[i], held.olderAfter, held.newerAfter, held.newer, held.older)
		}
	}
	c.checkParentBits(isParent)
}

// walkParents follows a list of a class's parents from p: it reads each
// header and passes it to visit, which checks it and returns the next
// parent. It stops, reporting, at a page that is no parent or once it has
// seen limit parents (a broken or cyclic link), and returns how many
// parents it visited and the last one.
func (c *checker) walkParents(p, limit int64, isParent map[int64]bool, what string, visit func(p int64, h *subpageHeader) int64) (n, last int64) {
	for p != 0 {
		if n >= limit || !isParent[p] {
			c.report(p, what, "at most %d parents of the class (a broken or cyclic link, or a page that is no parent)", limit)
			break
		}
		var h subpageHeader
		c.tx.readSubpageHeader(p, &h)
		last, p = p, visit(p, &h)
		n++
	}
	return n, last
}

// checkParentBits reports every parent bit set where the heap walk found
// no parent: at a granule that starts no allocated page.
func (c *checker) checkParentBits(isParent map[int64]bool) {
	g := c.g
	granules := g.blockBytes >> g.parentShift
	// The block the frontier lies in, or starts, too: grow takes its
	// bits to be clear.
	for block := g.heapOff; block < min(c.st.frontier+1, g.capacity); block += g.blockBytes {
		for i := int64(0); i < granules; i += 64 {
			word := c.d.committedU64(block + g.parentBitsOff + i/8)
			for m := word; m != 0; m &= m - 1 {
				p := block + (i+int64(bits.TrailingZeros64(m)))<<g.parentShift
				if !isParent[p] {
					c.add(strayParentBit(p))
				}
			}
		}
	}
}
