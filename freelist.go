package pagealloc

import (
	"encoding/binary"
	"fmt"
)

// The free lists are intrusive: a free page's first bytes hold its previous
// and next page on the list of its order (format.go, "Page headers"), so the
// lists cost no space and pushing, popping or detaching any page is O(1).
// The heads live in the allocator state. Every link is journaled as
// kindLink, which replay applies only if the page is still free at the end.
//
// Pages freed by a transaction wait in a FIFO pending queue, linked the same
// way, until a checkpoint covers that transaction; only then may they be
// handed out again (see allocator.releasePending for why a checkpoint and
// not mere durability).

// orderLimit bounds the number of orders: 1 GiB / 512 B is 2^21, so orders
// 0..21.
const orderLimit = 22

// allocState is the in-memory copy of the allocator state region.
type allocState struct {
	frontier   int64
	pendHead   int64
	pendTail   int64
	allocPages int64
	allocBytes int64
	pendPages  int64
	pendBytes  int64
	heads      [orderLimit]int64
	freePages  [orderLimit]int64
	nonEmpty   uint64 // bit k: list k has a page; derived from heads

	// [ringHead, ringTail) of allocator.pendRing, positions taken
	// modulo its length, holds the headers of the pending queue's last
	// ringTail-ringHead pages, in queue order: a copy kept in memory of
	// what this process enqueued. Not on disk; Open starts it empty.
	ringHead, ringTail uint64
}

// encodeState lays st out as the allocator state region holds it.
func encodeState(st *allocState, orders int) []byte {
	b := make([]byte, stateOrdersOff+orders*stateOrderBytes)
	le := binary.LittleEndian
	le.PutUint64(b[stateFrontierOff:], uint64(st.frontier))
	le.PutUint64(b[statePendingHeadOff:], uint64(st.pendHead))
	le.PutUint64(b[statePendingTailOff:], uint64(st.pendTail))
	le.PutUint64(b[stateAllocPagesOff:], uint64(st.allocPages))
	le.PutUint64(b[stateAllocBytesOff:], uint64(st.allocBytes))
	le.PutUint64(b[statePendPagesOff:], uint64(st.pendPages))
	le.PutUint64(b[statePendBytesOff:], uint64(st.pendBytes))
	for k := range orders {
		le.PutUint64(b[stateOrdersOff+k*stateOrderBytes:], uint64(st.heads[k]))
		le.PutUint64(b[stateOrdersOff+k*stateOrderBytes+8:], uint64(st.freePages[k]))
	}
	return b
}

func decodeState(b []byte, orders int) allocState {
	le := binary.LittleEndian
	st := allocState{
		frontier:   int64(le.Uint64(b[stateFrontierOff:])),
		pendHead:   int64(le.Uint64(b[statePendingHeadOff:])),
		pendTail:   int64(le.Uint64(b[statePendingTailOff:])),
		allocPages: int64(le.Uint64(b[stateAllocPagesOff:])),
		allocBytes: int64(le.Uint64(b[stateAllocBytesOff:])),
		pendPages:  int64(le.Uint64(b[statePendPagesOff:])),
		pendBytes:  int64(le.Uint64(b[statePendBytesOff:])),
	}
	for k := range orders {
		st.heads[k] = int64(le.Uint64(b[stateOrdersOff+k*stateOrderBytes:]))
		st.freePages[k] = int64(le.Uint64(b[stateOrdersOff+k*stateOrderBytes+8:]))
		if st.heads[k] != 0 {
			st.nonEmpty |= 1 << k
		}
	}
	return st
}

// pageHeader is the decoded header of a free or pending page.
type pageHeader struct {
	word0 int64 // prev (free) or freeing transaction (pending)
	next  int64
	magic uint32
	order int
}

func (tx *Txn) readHeader(off int64) pageHeader {
	var b [pageHeaderBytes]byte
	tx.read(b[:], off)
	return decodeHeader(b[:])
}

func decodeHeader(b []byte) pageHeader {
	le := binary.LittleEndian
	return pageHeader{
		word0: int64(le.Uint64(b[0:])),
		next:  int64(le.Uint64(b[8:])),
		magic: le.Uint32(b[headerMagicOff:]),
		order: int(b[headerOrderOff]),
	}
}

func (tx *Txn) writeHeader(off int64, h pageHeader) {
	var b [pageHeaderBytes]byte
	le := binary.LittleEndian
	le.PutUint64(b[0:], uint64(h.word0))
	le.PutUint64(b[8:], uint64(h.next))
	le.PutUint32(b[headerMagicOff:], h.magic)
	b[headerOrderOff] = byte(h.order)
	tx.write(off, b[:], kindLink)
}

// push puts the free page off at the head of list k. It links the old
// head back to off only if the old head is sound (a free page of order k
// with nothing before it): a corrupt head is left as it is, so that the
// link into it stays broken for take to meet (linkedFree) and Check to
// report, and nothing is written into a page that may be someone's.
func (a *allocator) push(tx *Txn, st *allocState, order int, off int64) {
	next := st.heads[order]
	tx.writeHeader(off, pageHeader{next: next, magic: freeMagic, order: order})
	if next != 0 && next != off {
		if h, err := a.freePageAt(tx, st, order, next); err == nil && h.word0 == 0 {
			tx.writeU64(next, uint64(off), kindLink) // next.prev
		}
	}
	st.heads[order] = off
	st.freePages[order]++
	st.nonEmpty |= 1 << order
}

// detach takes the free page off, whose header is h, off list k: from its
// head or out of its middle. linkedFree has checked h and the neighbours.
func (st *allocState) detach(tx *Txn, order int, off int64, h pageHeader) {
	if h.word0 == 0 {
		st.setHead(order, h.next)
	} else {
		tx.writeU64(h.word0+8, uint64(h.next), kindLink) // prev.next
	}
	if h.next != 0 {
		tx.writeU64(h.next, uint64(h.word0), kindLink) // next.prev
	}
	st.freePages[order]--
}

func (st *allocState) setHead(order int, off int64) {
	st.heads[order] = off
	if off == 0 {
		st.nonEmpty &^= 1 << order
	}
}

// enqueuePending appends a freed page to the pending queue, stamped with
// the transaction that freed it.
func (st *allocState) enqueuePending(tx *Txn, order int, off int64, size int64, txSeq uint64) {
	tx.writeHeader(off, pageHeader{word0: int64(txSeq), magic: pendingMagic, order: order})
	if st.pendTail != 0 {
		tx.writeU64(st.pendTail+8, uint64(off), kindLink) // tail.next
	} else {
		st.pendHead = off
	}
	st.pendTail = off
	st.pendPages++
	st.pendBytes += size
}

// dequeuePending takes the oldest pending page, whose header is h (see
// pendingHead).
func (a *allocator) dequeuePending(st *allocState, h pageHeader) {
	if _, ok := a.ringFront(st); ok {
		st.ringHead++
	}
	st.pendHead = h.next
	if h.next == 0 {
		st.pendTail = 0
	}
	st.pendPages--
}

// The links the allocator follows come from disk. A corrupt one must not
// make Alloc hand out a page someone owns, nor send a link's write outside
// the heap or into someone's page, nor leave a committed state that Open
// refuses. So each page is checked as the allocator reaches it, against
// its state bits and the links that lead to it, before anything is
// written: Alloc and Free return the CorruptError; a release or a merge
// stops short of the page and leaves it where it is, for Check to report.

// pageAt reports whether the order-k page at off can exist: inside the
// heap below the frontier, aligned to its size, outside block metadata.
func (a *allocator) pageAt(st *allocState, k int, off int64) bool {
	return k >= 0 && k <= a.g.maxOrder && off >= a.g.heapOff && off < st.frontier &&
		off&(a.g.pageBytes(k)-1) == 0 && !a.g.isMeta(off)
}

// freePageAt returns the header of the page at off on free list k, as tx
// sees it, once it has checked that it is one: a page that can exist,
// whose state is free at order k and whose header says so.
func (a *allocator) freePageAt(tx *Txn, st *allocState, k int, off int64) (pageHeader, error) {
	if !a.pageAt(st, k, off) {
		return pageHeader{}, corruptf(off, fmt.Sprintf("free list %d", k), "a link to an order-%d page in the heap [%d, %d)", k, a.g.heapOff, st.frontier)
	}
	h := tx.readHeader(off)
	if s := tx.pageState(&a.g, k, off); s != stateFree || h.magic != freeMagic || h.order != k {
		return h, corruptf(off, fmt.Sprintf("free list %d", k), "a free page of order %d, found state %02b, magic %#x, order %d", k, s, h.magic, h.order)
	}
	return h, nil
}

// linkedFree checks the page at off as freePageAt does, and that the pages
// either side of it on list k link back to it, so that detach writes only
// into free pages' headers. It returns the page's header.
func (a *allocator) linkedFree(tx *Txn, st *allocState, k int, off int64) (pageHeader, error) {
	h, err := a.freePageAt(tx, st, k, off)
	if err != nil {
		return h, err
	}
	if h.word0 == off || h.next == off {
		return h, corruptf(off, fmt.Sprintf("free list %d", k), "no link to the page itself, found prev %d next %d", h.word0, h.next)
	}
	if (h.word0 == 0) != (st.heads[k] == off) {
		return h, corruptf(off, fmt.Sprintf("free list %d", k), "a previous page unless it is the list's head %d, found %d", st.heads[k], h.word0)
	}
	if h.word0 != 0 {
		if p, err := a.freePageAt(tx, st, k, h.word0); err != nil {
			return h, err
		} else if p.next != off {
			return h, corruptf(h.word0+8, fmt.Sprintf("free list %d", k), "a next link to %d, found %d", off, p.next)
		}
	}
	if h.next != 0 {
		if n, err := a.freePageAt(tx, st, k, h.next); err != nil {
			return h, err
		} else if n.word0 != off {
			return h, corruptf(h.next, fmt.Sprintf("free list %d", k), "a back link to %d, found %d", off, n.word0)
		}
	}
	return h, nil
}

// pendingPageAt returns the header of the page at off in the pending
// queue once it has checked that it is one: a page that can exist, whose
// header says it is pending at an order and whose state at that order is
// pending.
func (a *allocator) pendingPageAt(tx *Txn, st *allocState, off int64) (pageHeader, error) {
	h := tx.readHeader(off)
	if h.magic != pendingMagic || !a.pageAt(st, h.order, off) || tx.pageState(&a.g, h.order, off) != statePending {
		return h, corruptf(off, "pending queue", "a pending page in the heap [%d, %d), found magic %#x order %d", a.g.heapOff, st.frontier, h.magic, h.order)
	}
	return h, nil
}

// pendRingLen is how many pending pages' headers allocator.pendRing holds
// (384 KiB).
const pendRingLen = 1 << 14

// pendEntry is a pending page's header as allocator.pendRing holds it.
type pendEntry struct {
	off   int64
	seq   uint64 // the transaction that freed the page
	order int
}

// remember copies the header of the page just enqueued into the ring.
// The ring must keep the entries of the last committed state, which a
// rollback brings back: if it has no room beside them, it forgets every
// entry of st's, which leaves it a true copy of the queue's last zero
// pages, until a commit frees room.
func (a *allocator) remember(st *allocState, e pendEntry) {
	if st.ringTail-a.last.ringHead >= pendRingLen {
		st.ringHead = st.ringTail
		return
	}
	if a.pendRing == nil {
		a.pendRing = make([]pendEntry, pendRingLen)
	}
	a.pendRing[st.ringTail%pendRingLen] = e
	st.ringTail++
}

// ringFront returns the ring's first entry if it is the head of the
// queue. The ring then holds the whole queue, as the allocator linked
// it. (A file's corruption may link the queue into the middle of the
// ring, past pages it leaves behind: its first entry is then never the
// head again, and the headers come from disk, checked.)
func (a *allocator) ringFront(st *allocState) (pendEntry, bool) {
	if st.ringTail == st.ringHead {
		return pendEntry{}, false
	}
	e := a.pendRing[st.ringHead%pendRingLen]
	return e, e.off == st.pendHead
}

// checkRing compares the ring, if it holds the queue of the committed
// state, with the queue's headers on disk: the same pages in the same
// order, each with the same freeing transaction and order. The caller
// holds the writer slot.
func (a *allocator) checkRing() error {
	st := &a.last
	if _, ok := a.ringFront(st); !ok {
		return nil
	}
	off := st.pendHead
	for i := st.ringHead; i < st.ringTail; i++ {
		e := a.pendRing[i%pendRingLen]
		var b [pageHeaderBytes]byte
		a.d.readCommitted(b[:], off)
		h := decodeHeader(b[:])
		if e.off != off || h.magic != pendingMagic || uint64(h.word0) != e.seq || h.order != e.order {
			return fmt.Errorf("pending ring entry %d is page %d freed by %d at order %d, the queue's page there is %d: magic %#x, freed by %d at order %d",
				i-st.ringHead, e.off, e.seq, e.order, off, h.magic, h.word0, h.order)
		}
		off = h.next
	}
	if off != 0 {
		return fmt.Errorf("the pending ring ends before the queue, which goes on at %d", off)
	}
	return nil
}

// pendingHead returns the header of the page at the head of the pending
// queue, which must not be empty, once it has checked the page and the
// link to the next one: none if it is the tail, else one to a page of the
// heap. If the ring holds the whole queue, the header comes from there,
// unchecked (the allocator wrote it, and nothing else writes into a
// pending page): a release then reads no page at all, where the header
// on disk is a cache miss, written last from the journal's goroutine.
func (a *allocator) pendingHead(tx *Txn, st *allocState) (pageHeader, error) {
	if e, ok := a.ringFront(st); ok {
		h := pageHeader{word0: int64(e.seq), magic: pendingMagic, order: e.order}
		if st.ringTail-st.ringHead > 1 {
			h.next = a.pendRing[(st.ringHead+1)%pendRingLen].off
		}
		return h, nil
	}
	h, err := a.pendingPageAt(tx, st, st.pendHead)
	switch {
	case err != nil:
		return h, err
	case (h.next == 0) != (st.pendTail == st.pendHead):
		return h, corruptf(st.pendHead+8, "pending queue", "a next link unless the head is the tail %d, found %d", st.pendTail, h.next)
	case h.next != 0 && !a.pageAt(st, 0, h.next):
		// Open refuses a queue headed by anything else (allocator.load).
		return h, corruptf(st.pendHead+8, "pending queue", "a next link to a page of the heap [%d, %d), found %d", a.g.heapOff, st.frontier, h.next)
	}
	return h, nil
}

// pendingTail checks the tail of the pending queue before enqueuePending
// links a page after it: a pending page with no next one.
func (a *allocator) pendingTail(tx *Txn, st *allocState) error {
	if st.pendTail == 0 {
		return nil
	}
	h, err := a.pendingPageAt(tx, st, st.pendTail)
	if err == nil && h.next != 0 {
		err = corruptf(st.pendTail+8, "pending queue", "no page after the tail, found %d", h.next)
	}
	return err
}
