package pagealloc

import "math/bits"

// heapGeometry locates pages, blocks and the two state bits every page has
// at every order. It is fixed by the superblock and never changes.
type heapGeometry struct {
	heapOff    int64 // first byte of the heap, aligned to maxPage
	capacity   int64 // the heap never reaches past this
	minShift   uint  // log2(MinPageSize)
	maxOrder   int   // orders run 0..maxOrder; order k pages are minPage<<k bytes
	blockBytes int64
	blockShift uint
	// bitmapOff[k] is where order k's bits start inside a block's
	// metadata; metaPad is the metadata rounded up to a whole min page.
	bitmapOff []int64
	metaBytes int64
	metaPad   int64
	// From format version 2, the sub-page parent bits follow the
	// bitmaps, one per 1<<parentShift bytes of the block (subpage.go);
	// parentShift is 0 on older devices.
	parentBitsOff int64
	parentShift   uint
}

func newHeapGeometry(sb superblock, capacity int64) heapGeometry {
	g := heapGeometry{
		heapOff:  sb.heapOff,
		capacity: capacity,
		minShift: uint(bits.TrailingZeros64(uint64(sb.minPage))),
		maxOrder: bits.TrailingZeros64(uint64(sb.maxPage)) - bits.TrailingZeros64(uint64(sb.minPage)),
	}
	g.blockBytes = max(minBlockBytes, 2*sb.maxPage)
	g.blockShift = uint(bits.TrailingZeros64(uint64(g.blockBytes)))
	g.bitmapOff = make([]int64, g.maxOrder+1)
	off := int64(0)
	for k := 0; k <= g.maxOrder; k++ {
		g.bitmapOff[k] = off
		pages := g.blockBytes >> (g.minShift + uint(k))
		off += (2*pages + 63) / 64 * 8
	}
	if sb.version >= subpageFormatVersion {
		g.parentShift = max(subpageMinParentShift, g.minShift)
		g.parentBitsOff = off
		off += (g.blockBytes>>g.parentShift + 63) / 64 * 8
	}
	g.metaBytes = off
	g.metaPad = alignUp(off, sb.minPage)
	return g
}

func (g *heapGeometry) pageBytes(order int) int64 { return 1 << (g.minShift + uint(order)) }

func (g *heapGeometry) maxPageBytes() int64 { return g.pageBytes(g.maxOrder) }

// blockStart returns the first byte of the block holding off.
func (g *heapGeometry) blockStart(off int64) int64 {
	return g.heapOff + (off-g.heapOff)>>g.blockShift<<g.blockShift
}

// isMeta reports whether off lies in a block's metadata.
func (g *heapGeometry) isMeta(off int64) bool { return off-g.blockStart(off) < g.metaPad }

// bitPos returns the word holding the state bits of the order-k page at
// off, and the shift of its free bit within the word.
func (g *heapGeometry) bitPos(order int, off int64) (wordOff int64, shift uint) {
	start := g.blockStart(off)
	bit := ((off - start) >> (g.minShift + uint(order))) * 2
	return start + g.bitmapOff[order] + bit/64*8, uint(bit % 64)
}

// pageState returns the state bits of the order-k page at off as tx sees
// them.
func (tx *Txn) pageState(g *heapGeometry, order int, off int64) pageState {
	w, shift := g.bitPos(order, off)
	return pageState(tx.readU64(w) >> shift & 3)
}

// setPageState journals new state bits for the order-k page at off.
func (tx *Txn) setPageState(g *heapGeometry, order int, off int64, s pageState) {
	w, shift := g.bitPos(order, off)
	old := tx.readU64(w)
	tx.writeU64(w, old&^(3<<shift)|uint64(s)<<shift, kindMeta)
}

// committedPageState is pageState outside a transaction, on committed state.
func (d *Device) committedPageState(g *heapGeometry, order int, off int64) pageState {
	w, shift := g.bitPos(order, off)
	return pageState(d.committedU64(w) >> shift & 3)
}

// durablePageState is pageState outside a transaction, on the state the
// durable transactions left (see Device.durableU64).
func (d *Device) durablePageState(g *heapGeometry, order int, off int64) pageState {
	w, shift := g.bitPos(order, off)
	return pageState(d.durableU64(w) >> shift & 3)
}
