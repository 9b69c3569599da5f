package pagealloc

import "encoding/binary"

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

// push puts the free page off at the head of list k.
func (st *allocState) push(tx *Txn, order int, off int64) {
	next := st.heads[order]
	tx.writeHeader(off, pageHeader{next: next, magic: freeMagic, order: order})
	if next != 0 {
		tx.writeU64(next, uint64(off), kindLink) // next.prev
	}
	st.heads[order] = off
	st.freePages[order]++
	st.nonEmpty |= 1 << order
}

// pop takes the page at the head of list k, which must not be empty.
func (st *allocState) pop(tx *Txn, order int) int64 {
	off := st.heads[order]
	next := int64(tx.readU64(off + 8))
	if next != 0 {
		tx.writeU64(next, 0, kindLink) // next.prev
	}
	st.setHead(order, next)
	st.freePages[order]--
	return off
}

// detach takes the free page off out of the middle of list k.
func (st *allocState) detach(tx *Txn, order int, off int64) {
	h := tx.readHeader(off)
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

// dequeuePending takes the oldest pending page and returns its header.
func (st *allocState) dequeuePending(tx *Txn) (int64, pageHeader) {
	off := st.pendHead
	h := tx.readHeader(off)
	st.pendHead = h.next
	if h.next == 0 {
		st.pendTail = 0
	}
	st.pendPages--
	return off, h
}
