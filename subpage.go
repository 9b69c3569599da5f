package pagealloc

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
)

// The sub-page allocator carves buddy pages ("parents") into 64 equal
// slots for objects smaller than a page. Each parent keeps a 64-bit mask of
// its allocated slots in a header in its slot 0 (format.go, "Sub-page
// class table"). Parents of one slot size form a class; the parents of a
// class that have a free slot sit on a doubly linked list threaded through
// their headers, so that Alloc takes the head's lowest free slot and Free
// detaches or re-attaches one parent, both O(1) whatever the number of
// parents. A parent whose last slot is freed goes back to the buddy
// allocator with Txn.Free, and so is reusable only after a checkpoint.
//
// Every header, mask and link change is a journaled kindMeta write: the
// parent is an allocated page for as long as it holds a header, and the
// buddy allocator's pending queue keeps it from a new owner until no
// journal record that wrote it can be replayed.
//
// Slots themselves are reused at once: a slot freed by one transaction may
// be handed out by the next, before the first is durable. A crash can then
// leave the slot allocated to its old owner with the new owner's in-place
// bytes in it. Callers that need the old bytes intact until the free is
// durable must not free the slot before that. For the same reason, bytes
// written into a slot with Txn.Write may be replayed over a later owner's
// in-place (WriteAt) bytes until the next checkpoint: write a slot either
// way, not both, across owners too.
//
// User writes may not touch a parent's header (heapWritable refuses them
// with ErrProtected), but nothing stops a caller writing a slot it does
// not own inside a parent: the parent is one allocated page.

// subpageFullMask is the mask of a parent whose every slot is allocated.
const subpageFullMask = ^uint64(0)

// subpageEmptyMask is the mask of a parent with only its header.
const subpageEmptyMask = uint64(1)

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
	SlotsFree   int64 // slots free in the parents held
	// OverheadBytes is the parent space not in allocated slots: the
	// header slot of every parent plus its free slots.
	OverheadBytes int64
}

// subpageClass is the in-memory copy of one class table entry.
type subpageClass struct {
	slotBytes int64
	head      int64
	parents   int64
	used      int64
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
}

// loadSubpages reads the committed class table after recovery.
func (d *Device) loadSubpages() {
	s := &d.subpages
	s.d = d
	b := make([]byte, subpageClassLimit*subpageClassBytes)
	d.readCommittedRange(b, d.geometry.state.off+subpageTableOff)
	le := binary.LittleEndian
	s.count = 0
	for i := range subpageClassLimit {
		e := b[i*subpageClassBytes:]
		c := subpageClass{
			slotBytes: int64(le.Uint64(e[subpageClassSlotOff:])),
			head:      int64(le.Uint64(e[subpageClassHeadOff:])),
			parents:   int64(le.Uint64(e[subpageClassParentsOff:])),
			used:      int64(le.Uint64(e[subpageClassUsedOff:])),
		}
		s.last[i] = c
		if c.slotBytes != 0 && s.count == i {
			s.count = i + 1
		}
	}
}

// class returns tx's copy of class i, registering the set with tx.
func (s *subpageSet) class(tx *Txn, i int) *subpageClass {
	if s.tx != tx {
		s.tx, s.touched = tx, 0
		tx.join(s)
	}
	if s.touched&(1<<i) == 0 {
		s.work[i] = s.last[i]
		s.touched |= 1 << i
	}
	return &s.work[i]
}

func (s *subpageSet) prepare(tx *Txn) error {
	for m := s.touched; m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		now, was := &s.work[i], &s.last[i]
		base := s.d.geometry.state.off + subpageTableOff + int64(i)*subpageClassBytes
		for _, f := range [...]struct {
			off      int64
			now, was int64
		}{
			{subpageClassSlotOff, now.slotBytes, was.slotBytes},
			{subpageClassHeadOff, now.head, was.head},
			{subpageClassParentsOff, now.parents, was.parents},
			{subpageClassUsedOff, now.used, was.used},
		} {
			if f.now != f.was {
				tx.writeU64(base+f.off, uint64(f.now), kindMeta)
			}
		}
	}
	return nil
}

func (s *subpageSet) committed(tx *Txn) {
	s.mu.Lock()
	for m := s.touched; m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		s.last[i] = s.work[i]
		if s.last[i].slotBytes != 0 && i >= s.count {
			s.count = i + 1
		}
	}
	s.mu.Unlock()
	s.tx, s.touched = nil, 0
}

func (s *subpageSet) rolledBack(tx *Txn) { s.tx, s.touched = nil, 0 }

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
// ErrInvalidArgument. A device holds at most 64 classes; past that the
// error wraps ErrNoSpace.
//
// Creating a class begins a transaction, so Subpages must not be called
// while the calling goroutine holds one open.
func (d *Device) Subpages(slotBytes int) (*Subpages, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	lo, hi := d.subpageSlotRange()
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
	shift := uint(bits.TrailingZeros64(uint64(size)))
	return &Subpages{d: d, index: index, slotShift: shift, parentBytes: size * subpageSlotsPerParent}, nil
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
	self       int64
	mask       uint64
	prev, next int64
}

func decodeSubpageHeader(b []byte) subpageHeader {
	le := binary.LittleEndian
	return subpageHeader{
		magic:     le.Uint32(b[0:]),
		class:     int(b[subpageClassOff]),
		slotShift: uint(b[subpageShiftOff]),
		self:      int64(le.Uint64(b[subpageSelfOff:])),
		mask:      le.Uint64(b[subpageMaskOff:]),
		prev:      int64(le.Uint64(b[subpagePrevOff:])),
		next:      int64(le.Uint64(b[subpageNextOff:])),
	}
}

func (h *subpageHeader) encode() [subpageHeaderBytes]byte {
	var b [subpageHeaderBytes]byte
	le := binary.LittleEndian
	le.PutUint32(b[0:], h.magic)
	b[subpageClassOff] = byte(h.class)
	b[subpageShiftOff] = byte(h.slotShift)
	le.PutUint64(b[subpageSelfOff:], uint64(h.self))
	le.PutUint64(b[subpageMaskOff:], h.mask)
	le.PutUint64(b[subpagePrevOff:], uint64(h.prev))
	le.PutUint64(b[subpageNextOff:], uint64(h.next))
	return b
}

// isParentOf reports whether h is the header of a parent at off of
// pageBytes bytes.
func (h *subpageHeader) isParentOf(off, pageBytes int64) bool {
	return h.magic == subpageMagic && h.self == off &&
		h.slotShift >= subpageMinSlotShift && h.slotShift < 64 &&
		int64(1)<<h.slotShift*subpageSlotsPerParent == pageBytes
}

func (tx *Txn) readSubpageHeader(off int64) subpageHeader {
	var b [subpageHeaderBytes]byte
	tx.read(b[:], off)
	return decodeSubpageHeader(b[:])
}

// subpageParentAt reports whether the allocated page of pageBytes at off
// is a sub-page parent: as tx sees it, or committed with a nil tx.
func (d *Device) subpageParentAt(tx *Txn, off, pageBytes int64) bool {
	if pageBytes < int64(1)<<subpageMinSlotShift*subpageSlotsPerParent {
		return false
	}
	var b [subpageHeaderBytes]byte
	if tx != nil {
		tx.read(b[:], off)
	} else {
		d.readCommittedRange(b[:], off)
	}
	h := decodeSubpageHeader(b[:])
	return h.isParentOf(off, pageBytes)
}

// SlotBytes returns the size of the class's slots in bytes.
func (s *Subpages) SlotBytes() int64 { return 1 << s.slotShift }

// Alloc allocates one slot of the class. The Addr is the slot's offset
// with log2 of the slot size in the low 6 bits, as a page's is: its Offset
// lies inside a parent page and its Size is the slot size. The slot's contents are
// undefined. When no parent has a free slot it takes a new parent from
// the buddy allocator, and fails as Txn.Alloc does (ErrNoSpace).
func (s *Subpages) Alloc(tx *Txn) (Addr, error) {
	if err := s.usableBy(tx); err != nil {
		return 0, err
	}
	set := &tx.d.subpages
	c := set.class(tx, s.index)
	if c.head == 0 {
		a, err := tx.Alloc(s.parentBytes)
		if err != nil {
			return 0, err
		}
		p := a.Offset()
		h := subpageHeader{magic: subpageMagic, class: s.index, slotShift: s.slotShift, self: p, mask: subpageEmptyMask}
		b := h.encode()
		tx.write(p, b[:], kindMeta)
		c.head = p
		c.parents++
	}
	p := c.head
	h := tx.readSubpageHeader(p)
	if !h.isParentOf(p, s.parentBytes) || h.class != s.index || h.mask == subpageFullMask || h.prev != 0 {
		return 0, corruptf(p, "sub-page parent", "the head of class %d's list: a header with a free slot and no previous parent, found magic %#x class %d mask %#x prev %d",
			s.index, h.magic, h.class, h.mask, h.prev)
	}
	slot := bits.TrailingZeros64(^h.mask)
	mask := h.mask | 1<<slot
	tx.writeU64(p+subpageMaskOff, mask, kindMeta)
	c.used++
	if mask == subpageFullMask {
		// Full: off the list, which it heads.
		c.head = h.next
		if h.next != 0 {
			tx.writeU64(h.next+subpagePrevOff, 0, kindMeta)
		}
		tx.writeU64(p+subpageNextOff, 0, kindMeta)
	}
	return makeAddr(p+int64(slot)<<s.slotShift, s.slotShift), nil
}

// Free gives the slot a back to its class; it may be handed out again by
// the next Alloc. Freeing the last allocated slot of a parent frees the
// parent to the buddy allocator. Free of anything that is not an allocated
// slot of this class (a slot of another class, a double free, an address
// that is not a slot's, a parent's header) returns ErrInvalidFree and
// changes nothing.
func (s *Subpages) Free(tx *Txn, a Addr) error {
	if err := s.usableBy(tx); err != nil {
		return err
	}
	p, slot, h, err := s.validate(tx, a)
	if err != nil {
		return err
	}
	set := &tx.d.subpages
	c := set.class(tx, s.index)
	mask := h.mask &^ (1 << slot)
	c.used--
	if mask == subpageEmptyMask {
		if h.mask != subpageFullMask {
			set.detach(tx, c, p, h)
		}
		// Clear the magic first: Txn.Free refuses a live parent.
		tx.write(p, make([]byte, subpageHeaderBytes), kindMeta)
		if err := tx.Free(makeAddr(p, uint(bits.TrailingZeros64(uint64(s.parentBytes))))); err != nil {
			// validate found an allocated page there: this cannot be.
			return fmt.Errorf("pagealloc: freeing sub-page parent %d: %w", p, err)
		}
		c.parents--
		return nil
	}
	tx.writeU64(p+subpageMaskOff, mask, kindMeta)
	if h.mask == subpageFullMask {
		// It has a free slot again: back on the list, at the head.
		tx.writeU64(p+subpagePrevOff, 0, kindMeta)
		tx.writeU64(p+subpageNextOff, uint64(c.head), kindMeta)
		if c.head != 0 {
			tx.writeU64(c.head+subpagePrevOff, uint64(p), kindMeta)
		}
		c.head = p
	}
	return nil
}

// detach takes the parent p with header h off class c's list.
func (set *subpageSet) detach(tx *Txn, c *subpageClass, p int64, h subpageHeader) {
	if h.prev == 0 {
		c.head = h.next
	} else {
		tx.writeU64(h.prev+subpageNextOff, uint64(h.next), kindMeta)
	}
	if h.next != 0 {
		tx.writeU64(h.next+subpagePrevOff, uint64(h.prev), kindMeta)
	}
}

// validate returns a's parent, slot index and the parent's header if a is
// an allocated slot of s as tx sees it, or an error wrapping
// ErrInvalidFree.
func (s *Subpages) validate(tx *Txn, a Addr) (int64, int, subpageHeader, error) {
	var h subpageHeader
	if uint(a&addrSizeMask) != s.slotShift {
		return 0, 0, h, fmt.Errorf("%w: %v is not a slot of the %d-byte class", ErrInvalidFree, a, s.SlotBytes())
	}
	off := a.Offset()
	p := off &^ (s.parentBytes - 1)
	slot := int((off - p) >> s.slotShift)
	al := tx.d.alloc
	frontier := al.last.frontier
	if al.tx == tx {
		frontier = al.work.frontier
	}
	g := &al.g
	order := bits.TrailingZeros64(uint64(s.parentBytes)) - int(g.minShift)
	switch {
	case off < g.heapOff || off >= frontier || p+s.parentBytes > frontier:
		return 0, 0, h, fmt.Errorf("%w: %v lies outside the heap [%d, %d)", ErrInvalidFree, a, g.heapOff, frontier)
	case off&(s.SlotBytes()-1) != 0:
		return 0, 0, h, fmt.Errorf("%w: %v is not aligned to its slot size", ErrInvalidFree, a)
	case slot == 0:
		return 0, 0, h, fmt.Errorf("%w: %v is the header of a parent, not a slot", ErrInvalidFree, a)
	case g.isMeta(p) || tx.pageState(g, order, p) != stateAllocated:
		return 0, 0, h, fmt.Errorf("%w: %v is not inside a sub-page parent", ErrInvalidFree, a)
	}
	h = tx.readSubpageHeader(p)
	switch {
	case !h.isParentOf(p, s.parentBytes):
		return 0, 0, h, fmt.Errorf("%w: %v is not inside a sub-page parent", ErrInvalidFree, a)
	case h.class != s.index:
		return 0, 0, h, fmt.Errorf("%w: %v belongs to sub-page class %d, not %d", ErrInvalidFree, a, h.class, s.index)
	case h.mask&(1<<slot) == 0:
		return 0, 0, h, fmt.Errorf("%w: %v is not allocated (double free)", ErrInvalidFree, a)
	}
	return p, slot, h, nil
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

// Stats returns the class's committed state.
func (s *Subpages) Stats() SubpageStats {
	set := &s.d.subpages
	set.mu.Lock()
	c := set.last[s.index]
	set.mu.Unlock()
	slotBytes := s.SlotBytes()
	st := SubpageStats{
		SlotBytes:   slotBytes,
		ParentBytes: s.parentBytes,
		Parents:     c.parents,
		SlotsUsed:   c.used,
		SlotsFree:   c.parents*(subpageSlotsPerParent-1) - c.used,
	}
	st.OverheadBytes = c.parents*s.parentBytes - c.used*slotBytes
	return st
}

// checkSubpages checks every sub-page class: the table, each class's
// list (links both ways, no full parent on it), every parent's header, and
// the counters against what the parents found by the heap walk hold.
func (c *checker) checkSubpages() {
	d := c.d
	b := make([]byte, subpageClassLimit*subpageClassBytes)
	tableOff := d.geometry.state.off + subpageTableOff
	c.tx.read(b, tableOff)
	le := binary.LittleEndian
	lo, hi := d.subpageSlotRange()
	var classes [subpageClassLimit]subpageClass
	count := 0
	for i := range subpageClassLimit {
		e := b[i*subpageClassBytes : (i+1)*subpageClassBytes]
		cl := subpageClass{
			slotBytes: int64(le.Uint64(e[subpageClassSlotOff:])),
			head:      int64(le.Uint64(e[subpageClassHeadOff:])),
			parents:   int64(le.Uint64(e[subpageClassParentsOff:])),
			used:      int64(le.Uint64(e[subpageClassUsedOff:])),
		}
		at := tableOff + int64(i)*subpageClassBytes
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
		if !validPageSize(cl.slotBytes) || cl.slotBytes < lo || cl.slotBytes > hi || !allZero(e[32:]) {
			c.report(at, "sub-page class table", "entry %d: a power-of-two slot size in [%d, %d] and zero reserved bytes, found %d", i, lo, hi, cl.slotBytes)
			continue
		}
		for j := range i {
			if classes[j].slotBytes == cl.slotBytes {
				c.report(at, "sub-page class table", "one class per slot size, found %d in classes %d and %d", cl.slotBytes, j, i)
			}
		}
		classes[i] = cl
	}
	// What the parents found by the heap walk hold, per class.
	var parents, partial, used [subpageClassLimit]int64
	for _, p := range c.subpageParents {
		h := c.tx.readSubpageHeader(p)
		cl := h.class
		if cl >= subpageClassLimit || classes[cl].slotBytes != 1<<h.slotShift {
			c.report(p, "sub-page parent", "a class of slot size %d, found class %d", int64(1)<<h.slotShift, cl)
			continue
		}
		if h.mask&1 == 0 {
			c.report(p+subpageMaskOff, "sub-page parent", "the header slot marked allocated, found mask %#x", h.mask)
		}
		parents[cl]++
		used[cl] += int64(bits.OnesCount64(h.mask)) - 1
		if h.mask != subpageFullMask {
			partial[cl]++
		}
		if h.mask == subpageEmptyMask {
			c.report(p+subpageMaskOff, "sub-page parent", "at least one allocated slot (an empty parent is freed)")
		}
	}
	for i := range count {
		cl := &classes[i]
		if cl.slotBytes == 0 {
			continue
		}
		what := fmt.Sprintf("sub-page class %d list", i)
		pageBytes := cl.slotBytes * subpageSlotsPerParent
		order := bits.TrailingZeros64(uint64(pageBytes)) - int(c.g.minShift)
		n, prev := int64(0), int64(0)
		for p := cl.head; p != 0; {
			if n >= parents[i] || !c.inHeap(p, order) || c.tx.pageState(c.g, order, p) != stateAllocated {
				c.report(p, what, "at most %d allocated parents (a broken or cyclic link)", parents[i])
				break
			}
			h := c.tx.readSubpageHeader(p)
			switch {
			case !h.isParentOf(p, pageBytes) || h.class != i:
				c.report(p, what, "only parents of class %d, found magic %#x class %d", i, h.magic, h.class)
			case h.mask == subpageFullMask:
				c.report(p+subpageMaskOff, what, "only parents with a free slot, found a full one")
			case h.prev != prev:
				c.report(p+subpagePrevOff, what, "a back link to %d, found %d", prev, h.prev)
			}
			prev, p = p, h.next
			n++
		}
		at := tableOff + int64(i)*subpageClassBytes
		if n != partial[i] {
			c.report(at, what, "every parent with a free slot on the list (%d), found %d", partial[i], n)
		}
		if parents[i] != cl.parents || used[i] != cl.used {
			c.report(at, "sub-page class table", "class %d: %d parents and %d used slots as the parents show, found counters %d and %d",
				i, parents[i], used[i], cl.parents, cl.used)
		}
	}
}
