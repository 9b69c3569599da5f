package pagealloc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// maxViolations bounds how many violations Check reports: past it, more
// detail helps nobody.
const maxViolations = 100

// Check walks every structure of the device but the logs' entries, which
// Log.Entries checks against their checksums (of a log, Check checks the
// table, the ring and the positions), and returns the violations of its
// invariants it finds, joined (errors.Is(err, ErrCorrupt) holds for
// each; it keeps the first 100, and its walks of the heap stop there), or
// nil; ErrClosed after Close. It reads committed state and waits for the
// open transaction to end, so it must not be called while holding one.
func (d *Device) Check() error {
	if d.unmade() {
		return errNil("Device")
	}
	d.writer.Lock()
	defer d.writer.Unlock()
	if d.closed.Load() { // Close keeps the writer slot until it is done
		return ErrClosed
	}
	return d.check(nil)
}

// check runs Check with the writer slot held, telling onAllocated (if not
// nil) every allocated page.
func (d *Device) check(onAllocated func(Addr)) error {
	c := &checker{d: d, g: &d.alloc.g, tx: &Txn{d: d}, onAllocated: onAllocated}
	c.st = d.alloc.last
	c.checkStateCopy()
	c.checkHeap()
	c.checkFreeLists()
	c.checkPending()
	c.checkCounters()
	c.checkSubpages()
	c.checkLogTable()
	c.checkCarvedLogs()
	return errors.Join(c.errs...)
}

type checker struct {
	d    *Device
	g    *heapGeometry
	tx   *Txn // an empty transaction: reads committed state
	st   allocState
	errs []error

	// onAllocated, if set, is told every allocated page the walk finds.
	onAllocated func(Addr)

	// What the bitmap walk found.
	free       [orderLimit]int64
	pending    int64
	allocPages int64
	allocBytes int64
	// subpageParents are the allocated pages whose sub-page parent bit
	// is set.
	subpageParents []int64

	buf [4096]byte // firstState reads state bits into it
}

func (c *checker) report(off int64, what, format string, args ...any) {
	c.add(corruptf(off, what, format, args...))
}

// add keeps err, if not nil, among the first maxViolations.
func (c *checker) add(err error) {
	if err != nil && len(c.errs) < maxViolations {
		c.errs = append(c.errs, err)
	}
}

// checkStateCopy compares the allocator state region, as committed, with
// the allocator's copy of it, which the allocator acts on and the other
// checks read: a word that reached only one of them changes the allocator
// at the next Open (a frontier moved back there would grow the heap again
// over allocated pages). The reserved word is checkCounters'.
func (c *checker) checkStateCopy() {
	want := encodeState(&c.st, c.g.maxOrder+1)
	got := make([]byte, len(want))
	off := c.d.geometry.state.off
	c.tx.read(got, off)
	for i := 0; i < len(want); i += 8 {
		w, v := binary.LittleEndian.Uint64(want[i:]), binary.LittleEndian.Uint64(got[i:])
		// A new device's frontier is zero: the heap's start (allocator.load).
		if w != v && i != stateReservedOff && !(i == stateFrontierOff && v == 0 && c.st.frontier == c.g.heapOff) {
			c.report(off+int64(i), "allocator state", "the committed word the allocator holds, %d, found %d", int64(w), int64(v))
		}
	}
}

// checkHeap checks that every byte below the frontier belongs to exactly
// one of: block metadata, an allocated page, a free page, a pending page.
func (c *checker) checkHeap() {
	g, st := c.g, &c.st
	maxBytes := g.maxPageBytes()
	if st.frontier < g.heapOff || st.frontier > g.capacity || (st.frontier-g.heapOff)%maxBytes != 0 {
		c.report(c.d.geometry.state.off, "allocator state", "a frontier on a max-page boundary in [%d, %d], found %d", g.heapOff, g.capacity, st.frontier)
		return
	}
	for off := g.heapOff; off < st.frontier && len(c.errs) < maxViolations; off += maxBytes {
		c.walk(off, g.maxOrder)
	}
	c.checkPastFrontier()
}

// checkPastFrontier reports a page state set past the frontier in the
// block the frontier lies in, or starts: grow makes free pages there,
// taking every state bit under them to be clear, and none may be set over
// the block's metadata. The bits are in the metadata, a contiguous run of
// words per order; those past the file's end read as zeros.
func (c *checker) checkPastFrontier() {
	g, frontier := c.g, c.st.frontier
	block := g.blockStart(frontier)
	// Pages past the capacity are never grown into: their bits are
	// not read (a device far smaller than its 1 GiB block would read a
	// block's worth at every Check).
	end := block + min(g.blockBytes, g.capacity-block)
	if frontier < end {
		c.add(c.pageBeyond(frontier, end))
	}
}

// pageBeyond returns a CorruptError naming the first page, at any order,
// whose state bits are set in [frontier, to), a range of one block.
func (c *checker) pageBeyond(frontier, to int64) error {
	for k := 0; k <= c.g.maxOrder; k++ {
		if off, s, found := c.firstState(k, frontier, to); found {
			return corruptf(off, "heap", "no page past the frontier %d, found order %d state %02b", frontier, k, s)
		}
	}
	return nil
}

// firstState returns the first order-k page in [from, to), a range of
// one block aligned to that order, whose state bits are not stateNone:
// it reads the bits a chunk of words at a time.
func (c *checker) firstState(k int, from, to int64) (off int64, s pageState, found bool) {
	g := c.g
	shift := g.minShift + uint(k)
	block := g.blockStart(from)
	// State bits of the block's order-k pages, the first and past the last.
	first, end := (from-block)>>shift*2, (to-block)>>shift*2
	base := block + g.bitmapOff[k]
	for w := first / 64 * 8; w < (end+63)/64*8; w += int64(len(c.buf)) {
		chunk := c.buf[:min(int64(len(c.buf)), (end+63)/64*8-w)]
		c.tx.read(chunk, base+w)
		for i := 0; i < len(chunk); i += 8 {
			bit := (w + int64(i)) * 8 // of the word's first state bit
			word := binary.LittleEndian.Uint64(chunk[i:])
			if bit < first {
				word &^= 1<<(first-bit) - 1
			}
			if left := end - bit; left < 64 {
				word &= 1<<left - 1
			}
			if word != 0 {
				tz := int64(bits.TrailingZeros64(word)) &^ 1
				return block + (bit+tz)/2<<shift, pageState(word >> tz & 3), true
			}
		}
	}
	return 0, 0, false
}

// walk checks the order-k page at off: either it is a page in one state
// (and nothing inside it is a page at a lower order), or it is split and
// each half is checked, or, at order 0, it is metadata.
func (c *checker) walk(off int64, order int) {
	g := c.g
	s := c.tx.pageState(g, order, off)
	if s == stateNone {
		if order > 0 {
			c.walk(off, order-1)
			c.walk(off+g.pageBytes(order-1), order-1)
		} else if !g.isMeta(off) {
			c.report(off, "heap", "a page owning byte %d (it is neither metadata, allocated, free nor pending: leaked)", off)
		}
		return
	}
	size := g.pageBytes(order)
	if g.isMeta(off) || g.isMeta(off+size-1) {
		c.report(off, "heap", "no page over block metadata, found order %d state %02b", order, s)
		return
	}
	switch s {
	case stateFree:
		c.free[order]++
		if order < g.maxOrder {
			if buddy := off ^ size; buddy < c.st.frontier && c.tx.pageState(g, order, buddy) == stateFree {
				if off < buddy {
					c.report(off, "heap", "free buddies at %d and %d of order %d to be merged", off, buddy, order)
				}
			}
		}
	case statePending:
		c.pending++
	case stateAllocated:
		c.allocPages++
		c.allocBytes += size
		if c.d.subpageParentAt(c.tx, off, size) {
			c.subpageParents = append(c.subpageParents, off)
		}
		if c.onAllocated != nil {
			c.onAllocated(makeAddr(off, g.minShift+uint(order)))
		}
	}
	c.checkInside(off, order)
}

// checkInside reports any page state set inside the order-k page at off at
// a lower order: such a byte would belong to two pages. At each order the
// pages inside have consecutive state bits, read a chunk of words at a
// time (firstState): a heap of free max pages is checked in a few reads
// per page, not one per min page.
func (c *checker) checkInside(off int64, order int) {
	for k := order - 1; k >= 0; k-- {
		if sub, s, found := c.firstState(k, off, off+c.g.pageBytes(order)); found {
			c.report(sub, "heap", "nothing inside the order-%d page at %d, found order %d state %02b", order, off, k, s)
			return
		}
	}
}

// checkFreeLists walks every free list: each member is a free page of the
// list's order with a sound header, and links agree both ways.
func (c *checker) checkFreeLists() {
	g := c.g
	for k := 0; k <= g.maxOrder; k++ {
		n, prev := int64(0), int64(0)
		what := fmt.Sprintf("free list %d", k)
		for off := c.st.heads[k]; off != 0; {
			if n > c.free[k] || !c.inHeap(off, k) {
				c.report(off, what, "at most %d pages inside the heap (a broken or cyclic link)", c.free[k])
				break
			}
			h := c.tx.readHeader(off)
			switch {
			case c.tx.pageState(g, k, off) != stateFree:
				c.report(off, what, "only pages whose free bit is set at order %d", k)
			case h.magic != freeMagic || h.order != k:
				c.report(off+headerMagicOff, what, "a free-page header of order %d, found magic %#x order %d", k, h.magic, h.order)
			case h.word0 != prev:
				c.report(off, what, "a back link to %d, found %d", prev, h.word0)
			}
			prev, off = off, h.next
			n++
		}
		if n != c.free[k] || n != c.st.freePages[k] {
			c.report(c.d.geometry.state.off, what, "as many pages on the list (%d) as free bits (%d) and the counter (%d)", n, c.free[k], c.st.freePages[k])
		}
		if n < c.free[k] {
			c.reportUnlinked(k, stateFree, c.reached(c.st.heads[k], n), what, "list")
		}
	}
}

// reached returns the first n pages of the list or queue that starts at
// head, which its walk found well linked.
func (c *checker) reached(head, n int64) map[int64]bool {
	linked := make(map[int64]bool, n)
	for off, i := head, int64(0); off != 0 && i < n; i++ {
		linked[off] = true
		off = c.tx.readHeader(off).next
	}
	return linked
}

// reportUnlinked names each order-k page in state s that the walk of its
// list (or queue) did not reach from the head: what holds more such
// pages than linked, the pages it reached. It reads the order's bits in
// every block, which only a corrupt device pays for.
func (c *checker) reportUnlinked(k int, s pageState, linked map[int64]bool, what, list string) {
	g := c.g
	for block := g.heapOff; block < c.st.frontier; block += g.blockBytes {
		to := min(block+g.blockBytes, c.st.frontier)
		for from := block; from < to && len(c.errs) < maxViolations; {
			off, got, found := c.firstState(k, from, to)
			if !found {
				break
			}
			from = off + g.pageBytes(k)
			if got == s && !linked[off] && c.outermost(k, off) {
				c.report(off, what, "the order-%d page in state %02b reached from the %s's head, found it unreached", k, s, list)
			}
		}
	}
}

// outermost reports whether the order-k page at off lies outside block
// metadata and inside no page of a higher order: one the heap walk
// counted.
func (c *checker) outermost(k int, off int64) bool {
	if c.g.isMeta(off) {
		return false
	}
	for j := k + 1; j <= c.g.maxOrder; j++ {
		if c.tx.pageState(c.g, j, off&^(c.g.pageBytes(j)-1)) != stateNone {
			return false
		}
	}
	return true
}

// checkPending walks the pending queue.
func (c *checker) checkPending() {
	g := c.g
	n, bytes, last, lastSeq := int64(0), int64(0), int64(0), int64(0)
	for off := c.st.pendHead; off != 0; {
		if n > c.pending || off < g.heapOff || off >= c.st.frontier {
			c.report(off, "pending queue", "at most %d pages inside the heap (a broken or cyclic link)", c.pending)
			break
		}
		h := c.tx.readHeader(off)
		if h.magic != pendingMagic || h.order < 0 || h.order > g.maxOrder {
			c.report(off+headerMagicOff, "pending queue", "a pending-page header, found magic %#x order %d", h.magic, h.order)
			break
		}
		if size := g.pageBytes(h.order); off&(size-1) != 0 {
			// The bits of the page it falls in would pass for its own.
			c.report(off, "pending queue", "a page aligned to its size of %d bytes (the header's order %d)", size, h.order)
		} else if c.tx.pageState(g, h.order, off) != statePending {
			c.report(off, "pending queue", "only pages whose state at order %d is pending", h.order)
		}
		// A page stamped with a transaction not yet committed waits for
		// a checkpoint of that transaction, and so does every page
		// queued after it (Open refuses a tail stamped past 2^62).
		if seq := uint64(h.word0); seq > c.d.txSeq {
			c.report(off, "pending queue", "pages freed by committed transactions, up to %d, found transaction %d", c.d.txSeq, seq)
		} else if h.word0 < lastSeq {
			c.report(off, "pending queue", "pages in the order they were freed, found transaction %d after %d", h.word0, lastSeq)
		}
		lastSeq = h.word0
		bytes += g.pageBytes(h.order)
		last, off = off, h.next
		n++
	}
	if n != c.pending || n != c.st.pendPages || bytes != c.st.pendBytes || last != c.st.pendTail {
		c.report(c.d.geometry.state.off, "pending queue", "%d pages / %d bytes ending at %d (bits: %d pages; counters: %d pages, %d bytes, tail %d)",
			n, bytes, last, c.pending, c.st.pendPages, c.st.pendBytes, c.st.pendTail)
	}
	if n < c.pending {
		linked := c.reached(c.st.pendHead, n)
		for k := 0; k <= g.maxOrder; k++ {
			c.reportUnlinked(k, statePending, linked, "pending queue", "queue")
		}
	}
}

func (c *checker) checkCounters() {
	if c.allocPages != c.st.allocPages || c.allocBytes != c.st.allocBytes {
		c.report(c.d.geometry.state.off, "allocator state", "%d allocated pages of %d bytes as the bits show, found counters %d and %d",
			c.allocPages, c.allocBytes, c.st.allocPages, c.st.allocBytes)
	}
	off := c.d.geometry.state.off + stateReservedOff
	if v := c.tx.readU64(off); v != 0 {
		c.report(off, "allocator state", "a reserved word of zero, found %#x", v)
	}
}

func (c *checker) inHeap(off int64, order int) bool {
	return off >= c.g.heapOff && off < c.st.frontier && off&(c.g.pageBytes(order)-1) == 0
}
