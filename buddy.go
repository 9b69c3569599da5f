package pagealloc

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

// The buddy allocator hands out power-of-two pages from MinPageSize to
// MaxPageSize. A request takes the smallest free page that fits, splitting
// larger ones; a freed page merges with its buddy (the neighbour it was
// split from) for as long as that buddy is free, so free space stays in
// pages as large as possible.
//
// All of its state is on disk: the free lists (freelist.go), two state bits
// per page per order in each block's metadata (bitmap.go), and a small state
// region with list heads, the frontier and counters. Memory holds only a
// copy of that region, so the allocator's Go heap does not grow with the
// device.
//
// The heap is formatted lazily: the frontier marks how far it has been
// handed to the allocator, one max page at a time, and the file grows only
// when the frontier passes its end.

// Addr is an allocated page: its offset in the device file, with log2 of
// its size in the low 6 bits (pages are aligned to at least 512 bytes), so
// one word says where a page is and how big. Zero is never a valid page.
type Addr uint64

const addrSizeMask = 63

func makeAddr(off int64, sizeShift uint) Addr { return Addr(uint64(off) | uint64(sizeShift)) }

// Offset returns the byte offset of the page in the device file.
func (a Addr) Offset() int64 { return int64(a &^ addrSizeMask) }

// Size returns the size of the page in bytes.
func (a Addr) Size() int64 { return 1 << (a & addrSizeMask) }

// String returns the page's offset and size, as "page 65536+4096"; a
// word no page can have (a negative offset, a size below 512 bytes, zero
// among them, or of 2^63 bytes) as "Addr(0x…)".
func (a Addr) String() string {
	// Size, not 1<<shift: an untyped shift is an int, 32 bits wide on
	// 32-bit platforms.
	if a.Offset() < 0 || a.Size() < minPageBytesFloor { // 2^63 is negative
		return fmt.Sprintf("Addr(%#x)", uint64(a))
	}
	return fmt.Sprintf("page %d+%d", a.Offset(), a.Size())
}

// Stats describes the allocator's committed state.
//
// Pending pages are freed pages not yet back on the free lists. Each waits
// for a checkpoint to cover the transaction that freed it, then for a
// transaction that allocates or frees to move it (each moves a bounded
// number, in queue order), so a device just opened may report pending
// pages that are already reusable.
type Stats struct {
	UsedBytes       int64   // bytes in allocated pages
	FreeBytes       int64   // bytes in free pages below the frontier
	PendingBytes    int64   // bytes freed but not yet reusable (awaiting a checkpoint)
	MetadataBytes   int64   // bytes of block metadata below the frontier
	AllocatedPages  int64   // pages handed out and not freed
	PendingPages    int64   // pages freed but not yet reusable
	FreePages       []int64 // free pages per order; index 0 is MinPageSize
	LargestFreePage int64   // bytes in the largest free page, 0 if none
	Frontier        int64   // end of the part of the heap handed to the allocator
	FileSize        int64   // bytes the device file holds
	Capacity        int64   // the most bytes the file may grow to (MaxSize)
}

// allocator is the device's buddy allocator. Its methods run inside the
// one writing transaction, so it needs no lock of its own.
type allocator struct {
	d        *Device
	g        heapGeometry
	work     allocState // the state as the joined transaction changed it
	tx       *Txn       // the transaction work belongs to, if any
	growStep int64

	lastMu sync.Mutex // guards last against Stats; written only under the writer slot
	last   allocState // the state of the last committed transaction

	// With Options.PunchHoles: the max pages the joined transaction freed
	// whole, and those committed transactions did, waiting to be punched
	// (punchDurable).
	punching, toPunch []int64

	// pendRing copies the last pages of the pending queue, as
	// allocState.ringHead says; allocated on the first free.
	pendRing []pendEntry

	// owed is set when an Alloc found the heap full but for pending
	// pages a checkpoint covers, which its transaction had grown too
	// large to release, and when a transaction that released such pages
	// was too large to commit: the next Begin releases them, in
	// transactions of their own (releaseOwed).
	owed atomic.Bool

	// released counts the pending pages released into the joined
	// transaction.
	released int
}

// pendingCheckpointBytes is how many bytes may wait in the pending queue
// before the allocator asks for a checkpoint to make them reusable.
const pendingCheckpointBytes = 64 << 20

func newAllocator(d *Device) *allocator {
	a := &allocator{d: d, g: newHeapGeometry(d.geometry, d.capacity)}
	a.growStep = max(d.opts.GrowthStep, a.g.maxPageBytes())
	return a
}

// load reads the committed allocator state after recovery. A frontier off
// the heap's max-page grid, or a list head or pending end that is no page
// of the heap (outside it, misaligned, in block metadata), is corruption
// that would send reads outside the file or into metadata: Open refuses
// it. What the pages hold is checked as the allocator reaches them, and by
// Check (so that a device whose lists are damaged still opens, for the
// inspecting tools).
func (a *allocator) load() error {
	b := make([]byte, stateOrdersOff+(a.g.maxOrder+1)*stateOrderBytes)
	stateOff := a.d.geometry.state.off
	a.d.readCommittedRange(b, stateOff)
	st := decodeState(b, a.g.maxOrder+1)
	if st.frontier == 0 {
		st.frontier = a.g.heapOff
	}
	onGrid := st.frontier >= a.g.heapOff && (st.frontier-a.g.heapOff)%a.g.maxPageBytes() == 0
	if onGrid && st.frontier > a.g.capacity && st.frontier <= a.d.geometry.capacity {
		// Inside the capacity the file records: the Open's MaxSize is
		// what falls short.
		return errMaxSizeBelow(a.g.capacity, "the allocator's frontier at", st.frontier)
	}
	if !onGrid || st.frontier > a.g.capacity {
		return corruptf(stateOff+stateFrontierOff, "allocator state", "a frontier on a max-page boundary in [%d, %d], found %d", a.g.heapOff, a.g.capacity, st.frontier)
	}
	page := func(k int, off int64) bool { return off == 0 || a.pageAt(&st, k, off) }
	if !page(0, st.pendHead) || !page(0, st.pendTail) || (st.pendHead == 0) != (st.pendTail == 0) {
		return corruptf(stateOff+statePendingHeadOff, "allocator state", "a pending queue empty or with both ends pages of the heap [%d, %d), found head %d and tail %d", a.g.heapOff, st.frontier, st.pendHead, st.pendTail)
	}
	for k := 0; k <= a.g.maxOrder; k++ {
		if !page(k, st.heads[k]) {
			return corruptf(stateOff+stateOrdersOff+int64(k)*stateOrderBytes, "allocator state", "free list %d empty or headed by an order-%d page of the heap [%d, %d), found %d", k, k, a.g.heapOff, st.frontier, st.heads[k])
		}
	}
	a.last = st
	return nil
}

// join makes tx's view of the allocator state current and registers the
// allocator with tx. Pages whose free a checkpoint now covers are released
// here, by the first transaction that touches the allocator after it.
func (a *allocator) join(tx *Txn) *allocState {
	if a.tx != tx {
		a.work = a.last
		a.tx = tx
		a.released = 0
		tx.join(a)
		a.punchDurable(tx)
		// A corrupt queue stops the release; Alloc returns the error
		// if it needs the pages, and Check reports it.
		_, _ = a.releasePending(tx)
		a.d.subpages.drainForPages(tx)
	}
	return &a.work
}

func (a *allocator) prepare(tx *Txn) error {
	if a.work != a.last {
		orders := a.g.maxOrder + 1
		now, was := encodeState(&a.work, orders), encodeState(&a.last, orders)
		for i := 0; i < len(now); i += 8 {
			if [8]byte(now[i:i+8]) != [8]byte(was[i:i+8]) {
				tx.write(a.d.geometry.state.off+int64(i), now[i:i+8], kindMeta)
			}
		}
	}
	return nil
}

func (a *allocator) committed(tx *Txn) {
	a.lastMu.Lock()
	a.last = a.work
	a.lastMu.Unlock()
	a.tx = nil
	a.toPunch = append(a.toPunch, a.punching...)
	a.punching = a.punching[:0]
	// Ask for a checkpoint once enough space waits to be worth it, or
	// once more waits than is free (a small device must not starve).
	if st := &a.last; st.pendBytes >= pendingCheckpointBytes || st.pendBytes > a.freeBytes(st) {
		a.d.journal.requestCheckpoint()
	}
}

func (a *allocator) rolledBack(tx *Txn) {
	if a.released > 0 && errors.Is(tx.cause, ErrTooLarge) {
		// The releases may be what made tx too large: tried again, it
		// would release them again. The next Begin releases them on
		// their own, so that it fits.
		a.owed.Store(true)
	}
	a.tx = nil
	a.punching = a.punching[:0]
}

// punchDurable returns to the filesystem the storage of the max pages that
// committed transactions freed whole and that are still free, once the
// state the durable transactions left has them free too; the others stay
// queued, and a page handed out again leaves the queue. A punch cannot be
// undone or journaled: made any earlier, a rollback or a crash would bring
// back free-list headers it zeroed. tx has just joined and changed
// nothing, and holds the writer: no one takes the pages meanwhile.
//
// The journal writes a group's links home after waking its committers,
// and a committer writing its own group after handing on the writer slot
// (see journal.lead). A punch beside those writes can leave the whole
// page's storage allocated (the filesystem writes back the cached page it
// could not split), so a page waits for the journal to be done with it.
// Then every transaction that wrote into it is durable, as one that split
// it and merged it back did, and no crash finds headers inside it.
func (a *allocator) punchDurable(tx *Txn) {
	size := a.g.maxPageBytes()
	kept := a.toPunch[:0]
	for i, off := range a.toPunch {
		switch {
		case tx.pageState(&a.g, a.g.maxOrder, off) != stateFree:
			continue // handed out since: its next free queues it again
		case !a.d.durablyFree(&a.g, a.g.maxOrder, off):
			// Freed by a transaction not durable yet: a later one
			// punches it, rather than this one wait for a sync.
			kept = append(kept, off)
			continue
		}
		for {
			next := a.d.pending.nextRelease()
			if !a.d.pending.holdsAny(off>>lineShift, (off+size-1)>>lineShift) {
				break
			}
			select {
			case <-next:
			case <-a.d.failed:
				a.toPunch = append(kept, a.toPunch[i:]...)
				return
			}
		}
		a.d.punchFreePage(off, size)
	}
	a.toPunch = kept
}

// durablyFree reports whether the order-k page at off is free in the state
// the durable transactions left: the state a crash finds.
func (d *Device) durablyFree(g *heapGeometry, k int, off int64) bool {
	w, shift := g.bitPos(k, off)
	return pageState(d.durableU64(w)>>shift&3) == stateFree
}

// freeBytes returns the bytes in st's free pages.
func (a *allocator) freeBytes(st *allocState) int64 {
	n := int64(0)
	for k := 0; k <= a.g.maxOrder; k++ {
		n += st.freePages[k] * a.g.pageBytes(k)
	}
	return n
}

// Alloc allocates a page of at least sizeBytes, rounded up to a power of
// two no smaller than MinPageSize. It returns ErrInvalidArgument for a size
// below 1, ErrTooLarge above MaxPageSize and ErrNoSpace when the device is
// full. A free list it would take the page from that the file's corruption
// broke is ErrCorrupt, and changes nothing; so are state bits or sub-page
// parent bits set past the frontier, where it would grow the heap. When
// the heap is full but pages freed by committed transactions wait for a
// checkpoint, Alloc makes one and waits for it (two syncs), holding the
// writer slot; an I/O error there, or in growing the file, fails the
// device: ErrFailed. Releasing those pages writes the transaction's lines,
// and a transaction may release only so many, to stay small enough to
// commit: when it has grown too large to release the pages Alloc needs,
// Alloc returns ErrNoSpace, and the next transaction begins by releasing
// them, in transactions of their own, so that its Alloc finds them. The
// page's contents are undefined: a page used before holds its last
// owner's bytes, with free-list links over its first ones, so an engine
// that needs zeros writes them (Txn.Write, to have them atomic with the
// allocation). On a failed device it returns ErrFailed, growing nothing.
func (tx *Txn) Alloc(sizeBytes int64) (Addr, error) {
	if tx.unmade() {
		return 0, errNil("Txn")
	}
	if tx.done {
		return 0, ErrTxDone
	}
	if f := tx.d.failure.Load(); f != nil {
		return 0, f
	}
	a := tx.d.alloc
	if sizeBytes < 1 {
		return 0, fmt.Errorf("%w: Alloc(%d)", ErrInvalidArgument, sizeBytes)
	}
	if sizeBytes > a.g.maxPageBytes() {
		return 0, fmt.Errorf("%w: Alloc(%d) exceeds MaxPageSize %d", ErrTooLarge, sizeBytes, a.g.maxPageBytes())
	}
	order := 0
	if sizeBytes > a.g.pageBytes(0) {
		order = bits.Len64(uint64(sizeBytes-1)) - int(a.g.minShift)
	}
	st := a.join(tx)
	off, err := a.allocOrder(tx, st, order)
	if err != nil {
		return 0, err
	}
	addr := makeAddr(off, a.g.minShift+uint(order))
	tx.allocated = append(tx.allocated, addr)
	return addr, nil
}

func (a *allocator) allocOrder(tx *Txn, st *allocState, order int) (int64, error) {
	for {
		var refused error // the filesystem's room for a punched page
		if avail := st.nonEmpty >> order; avail != 0 {
			from := order + bits.TrailingZeros64(avail)
			refused = a.reservePunched(st, from)
			if refused == nil {
				return a.take(tx, st, from, order)
			}
			if !errors.Is(refused, ErrNoSpace) {
				return 0, refused
			}
		}
		// The frontier may have room the file already holds: grow pushes
		// a max page of it at the head of its list.
		grew, err := a.grow(tx, st)
		if err != nil && !errors.Is(err, ErrNoSpace) {
			return 0, err
		}
		if grew {
			continue
		}
		// Full. Space freed by earlier transactions becomes reusable
		// once a checkpoint covers them: wait for one.
		if st.pendHead != 0 {
			if seq := uint64(tx.readHeader(st.pendHead).word0); seq <= a.d.txSeq {
				if err := a.d.journal.waitCheckpoint(seq); err != nil {
					return 0, err
				}
				released, err := a.releasePending(tx)
				if released > 0 {
					continue
				}
				if err != nil {
					return 0, err
				}
				if a.coveredPending(tx, st) {
					// Stopped by the release budget: tx is too large
					// to release more.
					a.owed.Store(true)
					return 0, fmt.Errorf("%w: no free page of %d bytes; %d bytes of pages freed by committed transactions are reusable, but this transaction has grown too large to release them: the next transaction releases them before it begins", ErrNoSpace, a.g.pageBytes(order), st.pendBytes)
				}
			}
		}
		if refused != nil {
			return 0, refused
		}
		if err != nil { // the file may grow no further
			return 0, err
		}
		return 0, fmt.Errorf("%w: no free page of %d bytes in a %d-byte device", ErrNoSpace, a.g.pageBytes(order), a.g.capacity)
	}
}

// take pops the head of list from and allocates an order-k page of it,
// pushing the rest back as free pages of the orders in between. A head
// that is not a sound free page is corruption: take changes nothing and
// returns it.
func (a *allocator) take(tx *Txn, st *allocState, from, k int) (int64, error) {
	off := st.heads[from]
	h, err := a.linkedFree(tx, st, from, off)
	if err != nil {
		return 0, err
	}
	st.detach(tx, from, off, h)
	tx.setPageState(&a.g, from, off, stateNone)
	for j := from - 1; j >= k; j-- {
		buddy := off + a.g.pageBytes(j)
		tx.setPageState(&a.g, j, buddy, stateFree)
		a.push(tx, st, j, buddy)
	}
	tx.setPageState(&a.g, k, off, stateAllocated)
	st.allocPages++
	st.allocBytes += a.g.pageBytes(k)
	return off, nil
}

// reservePunched reserves the blocks of the page at the head of list k
// before Alloc takes it, if it is a max page that may have been punched
// (Options.PunchHoles with Options.Preallocate). Refused, the page is
// queued to be punched again, once that is safe (punchDurable): the
// filesystem may have given part of the room, and it goes back. Any other
// error fails the device, as it does when the file grows.
func (a *allocator) reservePunched(st *allocState, k int) error {
	if k != a.g.maxOrder || !a.d.opts.PunchHoles {
		return nil
	}
	head := st.heads[k]
	err := a.d.reserve(head, a.g.maxPageBytes())
	if err != nil && !errors.Is(err, ErrNoSpace) {
		return a.d.fail(err)
	}
	if n := len(a.toPunch); errors.Is(err, ErrNoSpace) && (n == 0 || a.toPunch[n-1] != head) {
		a.toPunch = append(a.toPunch, head)
	}
	return err
}

// grow hands the next max page at the frontier to the allocator, growing
// the file if needed. Max pages that hold only a block's metadata hand out
// nothing: grow takes them together with the first max page past them
// that holds pages. It reports false when the device is at capacity, and
// returns a CorruptError if a page it would make has state bits or a
// sub-page parent bit set, or metadata it takes has state bits. Refused,
// either way, it changes nothing, the file's size included.
func (a *allocator) grow(tx *Txn, st *allocState) (bool, error) {
	maxBytes := a.g.maxPageBytes()
	lo := max(st.frontier, a.g.blockStart(st.frontier)+a.g.metaPad) // the first byte of a page
	from := lo - (lo-a.g.heapOff)%maxBytes                          // its max page
	to := from + maxBytes
	if to > a.g.capacity {
		return false, nil
	}
	// The pages made here must be in no state yet: state bits set past
	// the frontier (a corrupt file) would be pages they overlap, maybe
	// allocated ones, and a parent bit would keep the page's owner from
	// freeing it. Metadata taken here must have no state bits either, as
	// Check requires of it. The bits are read before the file grows;
	// those past its end read as the zeros the growth gives them.
	c := &checker{d: a.d, g: &a.g, tx: tx}
	if err := c.pageBeyond(st.frontier, to); err != nil {
		return false, err
	}
	if p, found := tx.firstParentBit(&a.g, lo, to); found {
		return false, strayParentBit(p)
	}
	if err := a.d.growTo(to, a.growStep); err != nil {
		return false, err
	}
	a.forEachGrownPage(from, func(order int, off int64) bool {
		tx.setPageState(&a.g, order, off, stateFree)
		a.push(tx, st, order, off)
		return true
	})
	st.frontier = to
	return true, nil
}

// forEachGrownPage calls fn, in ascending order, for each free page that
// grow makes of the max page at from, while fn returns true, and reports
// whether it always did. A block's first max pages also hold its metadata,
// which is never handed out: only the rest becomes free pages, as large as
// alignment allows.
func (a *allocator) forEachGrownPage(from int64, fn func(order int, off int64) bool) bool {
	to := from + a.g.maxPageBytes()
	for lo := max(from, a.g.blockStart(from)+a.g.metaPad); lo < to; {
		order := min(a.g.maxOrder, bits.TrailingZeros64(uint64(lo-a.g.heapOff))-int(a.g.minShift), bits.Len64(uint64(to-lo))-1-int(a.g.minShift))
		if !fn(order, lo) {
			return false
		}
		lo += a.g.pageBytes(order)
	}
	return true
}

// freeListPage is a page on a free list and its header.
type freeListPage struct {
	order int
	off   int64
	h     pageHeader
}

// retractTail undoes grow for every max page at the end of the heap that
// is wholly free again, lowering the frontier. Such a max page holds
// exactly the free pages grow made of it: merging stops at its edges (the
// max order, a block's metadata), so each is still one free page of its
// order. Pages pending are not free: they wait for releasePending.
//
// It retracts at least one max page if it can, then stops once it has
// added a release's worth of lines to tx (releaseBudget), and reports
// whether it got to the end: a long free tail takes several transactions.
func (a *allocator) retractTail(tx *Txn, st *allocState) bool {
	budget, start := a.releaseBudget(tx), tx.lines.len()
	var pages []freeListPage
	for st.frontier > a.g.heapOff {
		if tx.lines.len() > start && tx.lines.len()-start >= budget {
			return false
		}
		from := st.frontier - a.g.maxPageBytes()
		pages = pages[:0]
		free := a.forEachGrownPage(from, func(order int, off int64) bool {
			h, err := a.linkedFree(tx, st, order, off)
			pages = append(pages, freeListPage{order, off, h})
			return err == nil
		})
		if !free {
			return true // in use, or corrupt: Check reports it
		}
		for _, p := range pages {
			st.detach(tx, p.order, p.off, p.h)
			tx.setPageState(&a.g, p.order, p.off, stateNone)
		}
		st.frontier = from
	}
	return true
}

// retractHeap lowers the frontier past the free space at the end of the
// heap, for Close to cut from the file. If the last max page holds pending
// pages and no allocated one, it waits for a checkpoint to cover every
// pending page, which nothing delays since the device takes no new
// transactions once closing, and releases them. It takes the writer slot
// for each transaction it runs.
func (d *Device) retractHeap() error {
	a := d.alloc
	waited := false
	for {
		tx, err := d.beginClosing()
		if err != nil {
			return err
		}
		before := a.last.pendPages
		st := a.join(tx) // releases what a checkpoint covers, in budget
		released := before - st.pendPages
		whole := a.retractTail(tx, st)
		// Pending pages are worth waiting for only if they stand
		// between the frontier and the allocated pages.
		more := st.pendPages > 0 && st.frontier > a.g.heapOff &&
			a.forEachGrownPage(st.frontier-a.g.maxPageBytes(), func(order int, off int64) bool {
				return !a.holdsAllocated(tx, order, off)
			})
		seq := d.txSeq
		if err := tx.Commit(); err != nil {
			return err
		}
		switch {
		case !whole:
			continue // the rest of the free tail, in the next transaction
		case !more, waited && released == 0:
			// (A queue that does not drain though covered is Check's to
			// report.) No transaction follows to make the punches these
			// releases left, and after a reopen the pages are simply
			// free: make them now, the last commit being durable.
			d.writer.Lock()
			a.punchDurable(&Txn{d: d})
			d.writer.Unlock()
			return nil
		case !waited:
			if err := d.journal.waitCheckpoint(max(seq, tx.seq)); err != nil {
				return err
			}
			waited = true
		}
	}
}

// beginClosing begins a transaction of Close's own, which Begin refuses
// once the device is closing: it takes the writer slot, unless the device
// has failed.
func (d *Device) beginClosing() (*Txn, error) {
	d.writer.Lock()
	if f := d.failure.Load(); f != nil {
		d.writer.Unlock()
		return nil, f
	}
	return &Txn{d: d}, nil
}

// holdsAllocated reports whether the page of the given order at off is,
// or holds, an allocated page as tx sees it. A page in no state at its
// order is split: its halves say.
func (a *allocator) holdsAllocated(tx *Txn, order int, off int64) bool {
	switch tx.pageState(&a.g, order, off) {
	case stateAllocated:
		return true
	case stateNone:
		return order > 0 && (a.holdsAllocated(tx, order-1, off) || a.holdsAllocated(tx, order-1, off+a.g.pageBytes(order-1)))
	}
	return false
}

// Free gives the page a back. It is reusable once a checkpoint covers this
// transaction (never before: a crash must not find the page owned twice).
// Free of anything that is not an allocated page (a double free, a wrong
// size, an address inside another page, misaligned or out of range)
// returns ErrInvalidFree and changes nothing; so does a pending queue that
// the file's corruption broke, with ErrCorrupt.
func (tx *Txn) Free(a Addr) error {
	if tx.unmade() {
		return errNil("Txn")
	}
	if tx.done {
		return ErrTxDone
	}
	al := tx.d.alloc
	order, err := al.validate(tx, a)
	if err != nil {
		return err
	}
	if tx.d.subpageParentAt(tx, a.Offset(), a.Size()) {
		return fmt.Errorf("%w: %v holds sub-pages; free them with Subpages.Free", ErrInvalidFree, a)
	}
	if l := tx.d.carvedLogAt(tx, a.Offset()); l != nil {
		return fmt.Errorf("%w: %v is the ring of log %q; drop it with Device.DropLog", ErrInvalidFree, a, l.name)
	}
	st := al.join(tx)
	if err := al.pendingTail(tx, st); err != nil {
		return err
	}
	off, size := a.Offset(), a.Size()
	tx.setPageState(&al.g, order, off, statePending)
	st.enqueuePending(tx, order, off, size, tx.d.txSeq+1)
	al.remember(st, pendEntry{off: off, seq: tx.d.txSeq + 1, order: order})
	st.allocPages--
	st.allocBytes -= size
	return nil
}

// freeable returns nil if Free(a) would find a an allocated page and the
// pending queue's tail sound: what a caller that must check before it
// changes anything (a sub-page parent's release) asks first.
func (al *allocator) freeable(tx *Txn, a Addr) error {
	if _, err := al.validate(tx, a); err != nil {
		return err
	}
	return al.pendingTail(tx, al.join(tx))
}

// validate returns the order of a if it is an allocated page as tx sees
// it, or an error wrapping ErrInvalidFree that says what it is instead.
func (al *allocator) validate(tx *Txn, a Addr) (int, error) {
	g := &al.g
	shift := uint(a & addrSizeMask)
	off := a.Offset()
	order := int(shift) - int(g.minShift)
	frontier := al.last.frontier
	if al.tx == tx {
		frontier = al.work.frontier
	}
	switch {
	case order < 0 && shift >= 6:
		// The size of a sub-page slot, most likely: say where it goes.
		return 0, fmt.Errorf("%w: %v: smaller than MinPageSize %d (free a sub-page slot with Subpages.Free)", ErrInvalidFree, a, g.pageBytes(0))
	case order < 0 || order > g.maxOrder:
		// Named as a power: 1<<63 does not fit an int64.
		return 0, fmt.Errorf("%w: %v: a page size of 2^%d bytes, outside [%d, %d]", ErrInvalidFree, a, shift, g.pageBytes(0), g.maxPageBytes())
	case off < g.heapOff || off >= frontier || off+a.Size() > frontier:
		return 0, fmt.Errorf("%w: %v lies outside the heap [%d, %d)", ErrInvalidFree, a, g.heapOff, frontier)
	case off&(a.Size()-1) != 0:
		return 0, fmt.Errorf("%w: %v is not aligned to its size", ErrInvalidFree, a)
	case g.isMeta(off):
		return 0, fmt.Errorf("%w: %v lies in block metadata", ErrInvalidFree, a)
	}
	switch s := tx.pageState(g, order, off); s {
	case stateAllocated:
		return order, nil
	case statePending:
		return 0, fmt.Errorf("%w: %v was already freed (double free)", ErrInvalidFree, a)
	case stateFree:
		return 0, fmt.Errorf("%w: %v is free (double free)", ErrInvalidFree, a)
	}
	return 0, fmt.Errorf("%w: %v is not an allocated page of that size", ErrInvalidFree, a)
}

// releasePending moves every pending page whose free a checkpoint covers
// into the free lists, merging it with free buddies, and returns how many
// it moved. A page at the head of the queue that is not a sound pending
// page stops it, with the CorruptError.
//
// Why a checkpoint and not durability: until a checkpoint, replay may
// apply journaled writes made into the page while it was allocated (the
// caller's Txn.Write, a sub-page header). Had the page been handed to a new
// owner whose in-place data then came after those records, replay would
// overwrite that data with the old owner's bytes.
func (a *allocator) releasePending(tx *Txn) (int, error) {
	st := &a.work
	covered := a.d.checkpointTxSeq.Load()
	budget, start := a.releaseBudget(tx), tx.lines.len()
	n := 0
	// Bounded by the counter too, so that a corrupt (cyclic) queue cannot
	// hang the device; Check reports it.
	for st.pendHead != 0 && st.pendPages > 0 && tx.lines.len()-start < budget {
		off := st.pendHead
		h, err := a.pendingHead(tx, st)
		if err != nil {
			return n, err
		}
		if uint64(h.word0) > covered {
			break
		}
		a.dequeuePending(st, h)
		st.pendBytes -= a.g.pageBytes(h.order)
		tx.setPageState(&a.g, h.order, off, stateNone)
		a.freeMerge(tx, st, h.order, off)
		n++
		a.released++
	}
	return n, nil
}

// coveredPending reports whether the pending queue's head is a page whose
// free a checkpoint covers: one releasePending would have released but
// for its budget.
func (a *allocator) coveredPending(tx *Txn, st *allocState) bool {
	return st.pendHead != 0 && uint64(tx.readHeader(st.pendHead).word0) <= a.d.checkpointTxSeq.Load()
}

// releaseOwed releases the pending pages a checkpoint covers, in
// transactions of its own, each as large as the release budget lets it
// grow, until none is left: what an Alloc that found no other space could
// not release in its transaction. It stops quietly at an error (a damaged
// queue, which the caller's transactions meet again) and when a
// transaction releases nothing.
func (d *Device) releaseOwed() {
	a := d.alloc
	for {
		tx, err := d.begin()
		if err != nil {
			return
		}
		before := a.last.pendPages
		st := a.join(tx) // releases a budget's worth
		for n := 1; n > 0 && err == nil; {
			n, err = a.releasePending(tx)
		}
		more := err == nil && st.pendPages < before && a.coveredPending(tx, st)
		if err := tx.Commit(); err != nil || !more {
			return
		}
	}
}

// releaseBudget is how many lines the allocator may add to tx on its own
// account (releasing pending pages, retracting the tail): what a quarter
// of a journal record holds, and no more than leaves half a record to what
// tx wrote already. Releasing a long queue at once would make the
// transaction too large to commit; the next ones take the rest. Counted
// at 128 bytes a line: the allocator's words in a line make at most four
// runs.
func (a *allocator) releaseBudget(tx *Txn) int {
	const perLine = lineBytes + 4*entryHeaderBytes
	tx.measure()
	room := min(a.d.journal.maxRecord/4, a.d.journal.maxRecord/2-tx.soloBound())
	return int(max(room, 0) / perLine)
}

// freeMerge puts the page off of the given order on the free lists, first
// merging it with its buddy for as long as the buddy is free.
func (a *allocator) freeMerge(tx *Txn, st *allocState, order int, off int64) {
	for order < a.g.maxOrder {
		// The heap starts on a max-page boundary, so buddies differ in
		// exactly the bit of their size.
		buddy := off ^ a.g.pageBytes(order)
		if buddy >= st.frontier || tx.pageState(&a.g, order, buddy) != stateFree {
			break
		}
		h, err := a.linkedFree(tx, st, order, buddy)
		if err != nil {
			break // a corrupt list: the buddy stays on it, for Check to report
		}
		st.detach(tx, order, buddy, h)
		tx.setPageState(&a.g, order, buddy, stateNone)
		off = min(off, buddy)
		order++
	}
	tx.setPageState(&a.g, order, off, stateFree)
	a.push(tx, st, order, off)
	if order == a.g.maxOrder && a.d.opts.PunchHoles {
		a.punching = append(a.punching, off)
	}
}

// keepLink reports whether a free-list link written at off still belongs
// to a free or pending page in the state word reads: then the page whose
// header holds off starts such a page at some order. If not, the page was
// allocated after the link was written and its bytes are its owner's:
// neither replay nor the journal's home writes may put the link there.
func (d *Device) keepLink(word func(off int64) uint64, off int64) bool {
	g := &d.alloc.g
	if off < g.heapOff {
		return true
	}
	// Headers lie in a page's first bytes and pages are at least 512
	// bytes, so the page is off rounded down to a min page.
	page := off &^ (g.pageBytes(0) - 1)
	for k := 0; k <= g.maxOrder && page&(g.pageBytes(k)-1) == 0; k++ {
		w, shift := g.bitPos(k, page)
		if pageState(word(w)>>shift&3)&stateFree != 0 {
			return true
		}
	}
	return false
}

// allocatedAt reports whether the byte at off lies in an allocated page in
// the state word reads.
func (d *Device) allocatedAt(word func(off int64) uint64, off int64) bool {
	g := &d.alloc.g
	if off < g.heapOff {
		return false
	}
	for k := 0; k <= g.maxOrder; k++ {
		w, shift := g.bitPos(k, off&^(g.pageBytes(k)-1))
		if pageState(word(w)>>shift&3) == stateAllocated {
			return true
		}
	}
	return false
}

// heapWritable reports whether the caller may write n bytes at off in the
// heap: only inside one allocated page. tx is the transaction writing, or
// nil for an unjournaled write, checked against committed state.
func (d *Device) heapWritable(off, n int64, tx *Txn) error {
	g := &d.alloc.g
	for k := 0; k <= g.maxOrder; k++ {
		start := off &^ (g.pageBytes(k) - 1)
		var s pageState
		if tx != nil {
			s = tx.pageState(g, k, start)
		} else {
			s = d.committedPageState(g, k, start)
		}
		if s == stateNone {
			continue
		}
		if s == stateAllocated && off+n <= start+g.pageBytes(k) && !g.isMeta(start) {
			// A sub-page parent's header is the allocator's, not the caller's.
			if off < start+subpageHeaderBytes && d.subpageParentAt(tx, start, g.pageBytes(k)) {
				return fmt.Errorf("%w: [%d, +%d) holds a sub-page parent's header", ErrProtected, off, n)
			}
			// In place, the allocation must be durable: a crash before
			// would bring back a free page with the write over its
			// free-list header.
			if tx == nil && d.durablePageState(g, k, start) != stateAllocated {
				return fmt.Errorf("%w: [%d, +%d) lies in a page whose allocation is not durable yet (its Commit has not returned)", ErrProtected, off, n)
			}
			return nil
		}
		break
	}
	return fmt.Errorf("%w: [%d, +%d) is not inside one allocated page", ErrProtected, off, n)
}

// Stats returns the allocator's committed state, a consistent snapshot of
// it. A transaction whose Commit is under way joins that state a moment
// after ReadAt starts to show its bytes, and before Commit returns: while
// commits run beside it, Stats may lag what a ReadAt of the allocator's
// state region just showed. Once Commit has returned, Stats includes it.
// After Close it returns the state Close left.
func (d *Device) Stats() Stats {
	if d.unmade() {
		return Stats{}
	}
	a := d.alloc
	a.lastMu.Lock()
	st := a.last
	a.lastMu.Unlock()
	s := Stats{
		UsedBytes:      st.allocBytes,
		PendingBytes:   st.pendBytes,
		AllocatedPages: st.allocPages,
		PendingPages:   st.pendPages,
		FreePages:      make([]int64, a.g.maxOrder+1),
		Frontier:       st.frontier,
		FileSize:       d.size.Load(),
		Capacity:       d.capacity,
	}
	s.FreeBytes = a.freeBytes(&st)
	for k := 0; k <= a.g.maxOrder; k++ {
		s.FreePages[k] = st.freePages[k]
		if st.freePages[k] > 0 {
			s.LargestFreePage = a.g.pageBytes(k)
		}
	}
	for b := a.g.heapOff; b < st.frontier; b += a.g.blockBytes {
		s.MetadataBytes += min(a.g.metaPad, st.frontier-b)
	}
	return s
}
