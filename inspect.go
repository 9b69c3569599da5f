package pagealloc

import (
	"fmt"
	"math/bits"
)

// Read-only inspection of a device's on-disk structures, for tools (the
// pagealloc command's dump, map and stats verbs) and for debugging. Nothing
// here writes to the device: it works the same on a device opened with
// Options.ReadOnly, which is how a tool should open a device it only looks
// at. Like Check, each call waits for the open transaction to end, so it
// must not be made while the calling goroutine holds one.

// Extent is a range of bytes of the device file.
type Extent struct {
	Offset int64 // first byte
	Size   int64 // bytes
}

// End returns the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Size }

func extentOf(r region) Extent { return Extent{Offset: r.off, Size: r.size} }

// Inspection is a snapshot of a device's layout and of its on-disk
// structures, as Device.Inspect returns it. Regions appear in file order:
// superblocks, root area, journal, allocator state, log regions, heap.
type Inspection struct {
	Capacity    int64 // bytes the file may grow to: this open's MaxSize (SuperblockInfo.Capacity: the recorded one)
	FileSize    int64 // bytes the file holds now
	MinPageSize int64 // the smallest page; order 0
	MaxPageSize int64 // the largest page

	Superblocks    [2]SuperblockInfo // copies A and B, as the file holds them now
	Root           Extent            // the caller's root area
	Journal        Extent            // the journal ring
	AllocatorState Extent            // frontier, list heads, counters, sub-page class table
	LogRegions     Extent            // the log table and every log's ring; empty if none

	HeapOffset int64 // first byte of the heap, aligned to MaxPageSize
	Frontier   int64 // end of the part of the heap handed to the allocator
	// BlockBytes is the size of a heap block. Each block begins with
	// BlockMetadataBytes of state bits (rounded up to MinPageSize), which
	// are never handed out.
	BlockBytes         int64
	BlockMetadataBytes int64

	JournalState   JournalInfo        // the records no checkpoint covers yet
	FreeLists      []FreeListInfo     // one per order; index 0 is MinPageSize
	Pending        PendingInfo        // pages freed, waiting for a checkpoint
	Logs           []LogInfo          // the logs laid out at Create, then the carved ones
	SubpageClasses []SubpageClassInfo // the sub-page classes made so far
}

// SuperblockInfo describes one of the two superblock copies.
type SuperblockInfo struct {
	Offset int64 // where the copy lies in the file
	// Problem says why the copy does not verify; empty if it does. One
	// bad copy is what a crash during a checkpoint leaves: the device
	// uses the other. Damage leaves it too: JournalInfo.LostHead tells
	// the two apart where the journal can.
	Problem  string
	InUse    bool   // the newest copy that verifies: the one Open uses
	Sequence uint64 // copy A holds even numbers, B odd; the higher is newer
	Version  uint32 // format version
	DeviceID uint64 // random, chosen at Create
	// Capacity is the capacity the copy records: what an Open without a
	// MaxSize maps. Inspection.Capacity is that of this open.
	Capacity int64
	// JournalHead and JournalHeadSeq locate the oldest journal record the
	// checkpoint did not cover: its virtual offset and sequence number.
	JournalHead    uint64
	JournalHeadSeq uint64
	TxSeq          uint64 // the last transaction the checkpoint covers
}

// JournalInfo describes the journal ring's records that no checkpoint
// covers yet: on a device opened read-only, those Open replayed in memory;
// on one opened for writing, those committed since the last checkpoint.
// Offsets called virtual only grow; the device offset is the ring's offset
// plus the virtual one modulo the ring's size.
type JournalInfo struct {
	Head    uint64          // virtual offset of the oldest record, from the superblock in use (or LostHead, past it)
	HeadSeq uint64          // sequence number of the record at Head
	Tail    uint64          // virtual offset just past the newest valid record
	NextSeq uint64          // sequence number of the next record
	Records []JournalRecord // the valid records from Head to Tail, oldest first
	// TailOffset is the device offset of Tail.
	TailOffset int64
	// Torn reports that at Tail lies the header of the record that would
	// come next (its position and sequence number) but the record does not
	// verify: a write a crash cut short. Open ignores it, as the commit
	// it carried never returned.
	Torn bool
	// LostHead is the journal head that a checkpoint recorded in a
	// superblock copy that no longer verifies, although the records after
	// that head show that the checkpoint completed: damage since, not a
	// crash. Open then replayed only the records from that head: on a
	// device opened read-only it is Head, while one opened for writing
	// wrote the copy again, whose head is Head. Zero if none.
	LostHead uint64
}

// JournalRecord is one valid journal record: one group commit.
type JournalRecord struct {
	Offset  int64  // device offset of the record's header
	Pos     uint64 // virtual offset
	Seq     uint64 // sequence number
	Bytes   int64  // the whole record, header included
	Entries int    // writes it carries
}

// FreeListInfo describes the free list of one order.
type FreeListInfo struct {
	Order     int   // 0 for MinPageSize pages
	PageBytes int64 // the size of its pages
	Pages     int64 // pages on the list, by the allocator's counter
	Head      int64 // offset of the first page; 0 if the list is empty
	// First holds the offsets of up to the first 8 pages, following the
	// links stored in the pages; a broken link ends it early: one to a
	// page that is not a free page of the order, or whose back link does
	// not name the page before it (as a link back into the list does).
	First []int64
}

// freeListSample bounds FreeListInfo.First.
const freeListSample = 8

// PendingInfo describes the queue of freed pages waiting for a checkpoint
// before they may be handed out again.
type PendingInfo struct {
	Pages    int64  // pages in the queue, by the allocator's counter
	Bytes    int64  // bytes in them
	Head     int64  // the oldest page; 0 if the queue is empty
	Tail     int64  // the newest page
	OldestTx uint64 // the transaction that freed the oldest page; 0 if Head is no pending page (damage)
}

// LogInfo describes one log-structured region.
type LogInfo struct {
	Name   string   // as Device.Log takes it
	Ring   Extent   // the ring's bytes in the file
	Carved bool     // the ring is a heap page (Device.CreateLog), not laid out at Create
	Stats  LogStats // positions and counters, as Log.Stats returns them
}

// SubpageClassInfo describes one sub-page size class.
type SubpageClassInfo struct {
	Index    int   // the class's entry in the class table
	ListHead int64 // the first parent with a free slot; 0 if none
	SubpageStats
}

// Inspect returns a snapshot of the device's layout and structures. It
// reads committed state and changes nothing. On a device open for
// writing, the journal's goroutine may be writing a record or a
// superblock while Inspect reads it (a commit that has not returned yet,
// a checkpoint): that one may show as torn (JournalInfo.Torn) or with a
// Problem. The rest is consistent. It waits for the open transaction to
// end, so it must not be called while holding one.
func (d *Device) Inspect() (*Inspection, error) {
	if d.unmade() {
		return nil, errNil("Device")
	}
	d.writer.Lock()
	defer d.writer.Unlock()
	if d.closed.Load() {
		return nil, ErrClosed
	}
	g := &d.alloc.g
	d.alloc.lastMu.Lock()
	st := d.alloc.last
	d.alloc.lastMu.Unlock()
	in := &Inspection{
		Capacity:           d.capacity,
		FileSize:           d.size.Load(),
		MinPageSize:        d.geometry.minPage,
		MaxPageSize:        d.geometry.maxPage,
		Root:               extentOf(d.geometry.root),
		Journal:            extentOf(d.geometry.journal),
		AllocatorState:     extentOf(d.geometry.state),
		LogRegions:         extentOf(d.geometry.logs),
		HeapOffset:         g.heapOff,
		Frontier:           st.frontier,
		BlockBytes:         g.blockBytes,
		BlockMetadataBytes: g.metaPad,
	}
	if err := d.inspectSuperblocks(in); err != nil {
		return nil, err
	}
	d.inspectJournal(in)
	tx := &Txn{d: d} // empty: reads committed state
	for k := 0; k <= g.maxOrder; k++ {
		fl := FreeListInfo{Order: k, PageBytes: g.pageBytes(k), Pages: st.freePages[k], Head: st.heads[k]}
		for off, prev := st.heads[k], int64(0); off != 0 && len(fl.First) < freeListSample; {
			if off < g.heapOff || off >= st.frontier || off&(g.pageBytes(k)-1) != 0 || tx.pageState(g, k, off) != stateFree {
				break // a broken link: Check says more
			}
			h := tx.readHeader(off)
			if h.magic != freeMagic || h.order != k || h.word0 != prev {
				break // not a page of this list, or one seen before
			}
			fl.First = append(fl.First, off)
			prev, off = off, h.next
		}
		in.FreeLists = append(in.FreeLists, fl)
	}
	in.Pending = PendingInfo{Pages: st.pendPages, Bytes: st.pendBytes, Head: st.pendHead, Tail: st.pendTail}
	if st.pendHead >= g.heapOff && st.pendHead < st.frontier {
		if h := tx.readHeader(st.pendHead); h.magic == pendingMagic {
			in.Pending.OldestTx = uint64(h.word0)
		}
	}
	for _, l := range d.logs.all() {
		in.Logs = append(in.Logs, LogInfo{Name: l.name, Ring: extentOf(l.ring), Carved: l.carved, Stats: l.Stats()})
	}
	set := &d.subpages
	set.mu.Lock()
	classes := set.last
	count := set.count
	set.mu.Unlock()
	for i, c := range classes[:count] {
		if !validPageSize(c.slotBytes) {
			continue // an unused or damaged entry: Check reports it
		}
		shift := uint(bits.TrailingZeros64(uint64(c.slotBytes)))
		s := &Subpages{d: d, index: i, slotShift: shift, parentBytes: c.slotBytes * subpageSlotsPerParent}
		in.SubpageClasses = append(in.SubpageClasses, SubpageClassInfo{Index: i, ListHead: c.head, SubpageStats: s.Stats()})
	}
	return in, nil
}

// inspectSuperblocks reads both copies from the file as they are now.
func (d *Device) inspectSuperblocks(in *Inspection) error {
	newest := -1
	for slot := range in.Superblocks {
		off := superblockOffset(uint64(slot))
		info := &in.Superblocks[slot]
		info.Offset = off
		var buf [superblockBytes]byte
		if _, err := d.store.ReadAt(buf[:], off); err != nil {
			return err
		}
		sb, err := decodeSuperblock(buf[:], off)
		if err == nil && sb.seq%2 != uint64(slot) {
			err = fmt.Errorf("sequence number %d in copy %d", sb.seq, slot)
		}
		if err != nil {
			info.Problem = err.Error()
			continue
		}
		info.Sequence, info.Version, info.DeviceID, info.Capacity = sb.seq, sb.version, sb.deviceID, sb.capacity
		info.JournalHead, info.JournalHeadSeq, info.TxSeq = sb.journalHead, sb.headSeq, sb.txSeq
		if newest < 0 || sb.seq > in.Superblocks[newest].Sequence {
			newest = slot
		}
	}
	if newest >= 0 {
		in.Superblocks[newest].InUse = true
	}
	return nil
}

// inspectJournal walks the valid records from the head recorded in the
// superblock in use, or from the lost head Open replayed from if that
// lies past it (a device opened read-only: one opened for writing wrote
// the copy again). It reads only fields of the journal fixed at open and
// the ring's bytes, so it does not disturb the journal's writer.
func (d *Device) inspectJournal(in *Inspection) {
	j := d.journal
	head, seq := d.geometry.journalHead, d.geometry.headSeq
	for _, sb := range in.Superblocks {
		if sb.InUse {
			head, seq = sb.JournalHead, sb.JournalHeadSeq
		}
	}
	if j.lostHead > head {
		// Open replayed from there, and the copy in use is older: a
		// read-only device. Opened for writing, it wrote a newer one.
		head, seq = j.lostHead, j.lostHeadSeq
	}
	info := JournalInfo{Head: head, HeadSeq: seq, LostHead: j.lostHead}
	pos := head
	ringBytes := uint64(j.ring.size)
	for pos-head < ringBytes {
		rec, h, ok := j.readRecord(pos, seq, nil)
		if !ok || pos+uint64(h.length)-head > ringBytes {
			var hb [recordHeaderBytes]byte
			j.readRing(hb[:], pos)
			h, ok := parseRecordHeader(hb[:], uint32(j.maxRecord))
			info.Torn = ok && h.pos == pos && h.seq == seq
			break
		}
		entries := 0
		if es, err := decodeEntries(rec, h.count, d.capacity, j.physOff(pos)); err == nil {
			entries = len(es)
			if _, ok := j.stampOf(es); ok {
				entries--
			}
		}
		info.Records = append(info.Records, JournalRecord{Offset: j.physOff(pos), Pos: pos, Seq: seq, Bytes: int64(h.length), Entries: entries})
		pos += uint64(h.length)
		seq++
	}
	info.Tail, info.NextSeq, info.TailOffset = pos, seq, j.physOff(pos)
	in.JournalState = info
}

// PageKind says what a heap extent holds.
type PageKind uint8

const (
	// PageMetadata is a block's state bits: never handed out.
	PageMetadata PageKind = iota + 1
	// PageAllocated is a page handed out by the buddy allocator.
	PageAllocated
	// PageSubpages is an allocated page that a sub-page class carved into
	// slots.
	PageSubpages
	// PageFree is a page on a free list.
	PageFree
	// PagePending is a freed page waiting for a checkpoint before reuse.
	PagePending
	// PageUnaccounted is space that no state bit claims: space leaked by
	// a corrupt device (Check reports it), a run of MinPageSize pages.
	PageUnaccounted
	// PageLog is an allocated page that holds the ring of a log carved
	// from the heap (Device.CreateLog).
	PageLog
)

var pageKindNames = [...]string{
	PageMetadata:    "metadata",
	PageAllocated:   "allocated",
	PageSubpages:    "sub-pages",
	PageFree:        "free",
	PagePending:     "pending",
	PageUnaccounted: "unaccounted",
	PageLog:         "log",
}

// String returns the kind's name, as the pagealloc command prints it.
func (k PageKind) String() string {
	if int(k) < len(pageKindNames) && pageKindNames[k] != "" {
		return pageKindNames[k]
	}
	return fmt.Sprintf("PageKind(%d)", k)
}

// MarshalText writes the kind's name, so that JSON shows "free", not 4.
func (k PageKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// HeapExtent is one page of the heap, one MinPageSize page of block
// metadata, or a run of unaccounted space, as Device.WalkHeap reports it.
type HeapExtent struct {
	Extent
	Kind PageKind // what the extent holds
	// SlotBytes and SlotsUsed describe a PageSubpages parent: the size of
	// its slots and how many of its 63 are allocated. Zero otherwise, and
	// for a parent whose header is damaged (not a sub-page header of slots
	// of its size, with its own slot allocated), which Check reports.
	SlotBytes int64
	SlotsUsed int
}

// WalkHeap calls fn for every extent of the heap below the frontier, in
// address order, as the state bits describe it, until fn returns false.
// Together the extents cover [HeapOffset, Frontier) once each on a device
// that passes Check. It reads committed state and changes nothing. It
// holds the writer slot for the whole walk: it waits for the open
// transaction to end, so it must not be called while holding one, and fn
// must not begin one (Begin or Update would wait for the walk forever),
// nor call Check, Inspect, WalkHeap or Close, which wait for it too, nor
// a method that begins one (Subpages, CreateLog, DropLog, Log.Commit,
// Log.GC). A nil fn is ErrInvalidArgument.
func (d *Device) WalkHeap(fn func(HeapExtent) bool) error {
	if d.unmade() {
		return errNil("Device")
	}
	if fn == nil {
		return fmt.Errorf("%w: WalkHeap with a nil function", ErrInvalidArgument)
	}
	d.writer.Lock()
	defer d.writer.Unlock()
	if d.closed.Load() {
		return ErrClosed
	}
	d.alloc.lastMu.Lock()
	frontier := d.alloc.last.frontier
	d.alloc.lastMu.Unlock()
	w := heapWalker{d: d, g: &d.alloc.g, tx: &Txn{d: d}, fn: fn}
	for off := w.g.heapOff; off < frontier; off += w.g.maxPageBytes() {
		if !w.visit(off, w.g.maxOrder) {
			return nil
		}
	}
	w.flushGap()
	return nil
}

type heapWalker struct {
	d   *Device
	g   *heapGeometry
	tx  *Txn // empty: reads committed state
	fn  func(HeapExtent) bool
	gap HeapExtent // unaccounted space not yet reported; Size 0: none
}

// emit reports e, joining neighbouring unaccounted pages into one extent:
// a heap whose state bits were wiped would otherwise come out one min page
// at a time. It returns false once fn has asked to stop.
func (w *heapWalker) emit(e HeapExtent) bool {
	if e.Kind == PageUnaccounted {
		if w.gap.Size > 0 && w.gap.End() == e.Offset {
			w.gap.Size += e.Size
			return true
		}
		if !w.flushGap() {
			return false
		}
		w.gap = e
		return true
	}
	return w.flushGap() && w.fn(e)
}

// flushGap reports the pending unaccounted run, if any.
func (w *heapWalker) flushGap() bool {
	if w.gap.Size == 0 {
		return true
	}
	e := w.gap
	w.gap = HeapExtent{}
	return w.fn(e)
}

// visit reports the order-k page at off, or what lies inside it if it is
// split, and returns false once fn has asked to stop.
func (w *heapWalker) visit(off int64, order int) bool {
	g := w.g
	e := HeapExtent{Extent: Extent{Offset: off, Size: g.pageBytes(order)}}
	switch w.tx.pageState(g, order, off) {
	case stateNone:
		if order > 0 {
			return w.visit(off, order-1) && w.visit(off+g.pageBytes(order-1), order-1)
		}
		e.Kind = PageUnaccounted
		if g.isMeta(off) {
			e.Kind = PageMetadata
		}
	case stateFree:
		e.Kind = PageFree
	case statePending:
		e.Kind = PagePending
	case stateAllocated:
		e.Kind = PageAllocated
		for _, l := range w.d.logs.all() {
			if l.carved && l.ring.off == off && l.ring.size == e.Size {
				e.Kind = PageLog
			}
		}
		if w.d.subpageParentAt(w.tx, off, e.Size) {
			var h subpageHeader
			w.tx.readSubpageHeader(off, &h)
			e.Kind = PageSubpages
			// Slots of this parent's size, the header slot among the
			// allocated: else the header is damaged, and its bytes
			// say nothing of the slots (Check reports it).
			if h.magic == subpageMagic && int64(subpageSlotsPerParent)<<h.slotShift == e.Size && h.mask&1 != 0 {
				e.SlotBytes, e.SlotsUsed = 1<<h.slotShift, bits.OnesCount64(h.mask)-1
			}
		}
	}
	return w.emit(e)
}
