// Package peers benchmarks pagealloc's buddy allocator beside other
// allocators of space inside one file, running the same workloads on each:
// modernc.org/lldb's Allocator, modernc.org/file's Allocator, and Floor, an
// in-memory buddy allocator with no persistence that marks the algorithmic
// floor.
//
// It is a separate module so that users of pagealloc never download the
// peers. The benchmarks are in bench_test.go; README.md says how to run them
// and records a measured table.
package peers

import (
	"fmt"
	"math/bits"
)

// Floor is a buddy allocator over an address space that exists only in
// memory: one free bitmap per order, nothing persisted, nothing journaled.
// It hands out the same power-of-two pages as pagealloc and does the least
// work a buddy allocator can, so the gap between it and pagealloc is the
// price of pagealloc's on-disk state, journal and validation.
//
// Each order's bitmap is hierarchical (see bitset), so finding the lowest
// free page costs one word per level rather than a scan. Pages are taken
// lowest address first. The heap grows one max page at a time, as
// pagealloc's frontier does.
//
// Floor does not validate Free: freeing a page twice or a page it never
// handed out corrupts it silently. Validation is work a floor leaves out.
type Floor struct {
	minShift uint     // log2 of the smallest page in bytes
	maxOrder int      // order of the largest page; order k pages are minPage<<k bytes
	free     []bitset // free[k] has bit i set iff page i of order k is free
	maxPages int      // max pages handed to the allocator so far: the heap size
}

// FloorPage is a page handed out by Floor: its offset with log2 of its size
// in the low 6 bits, the same encoding as pagealloc.Addr.
type FloorPage uint64

const floorSizeMask = 63

// Offset returns the byte offset of the page.
func (p FloorPage) Offset() int64 { return int64(p &^ floorSizeMask) }

// Size returns the size of the page in bytes.
func (p FloorPage) Size() int64 { return 1 << (p & floorSizeMask) }

// NewFloor returns an empty Floor handing out pages from minPageBytes to
// maxPageBytes, both powers of two with 64 <= minPageBytes <= maxPageBytes.
func NewFloor(minPageBytes, maxPageBytes int64) (*Floor, error) {
	if !isPowerOfTwo(minPageBytes) || !isPowerOfTwo(maxPageBytes) || minPageBytes < 64 || maxPageBytes < minPageBytes {
		return nil, fmt.Errorf("peers: NewFloor(%d, %d): page sizes must be powers of two with 64 <= min <= max", minPageBytes, maxPageBytes)
	}
	minShift := uint(bits.TrailingZeros64(uint64(minPageBytes)))
	maxOrder := bits.TrailingZeros64(uint64(maxPageBytes)) - int(minShift)
	return &Floor{minShift: minShift, maxOrder: maxOrder, free: make([]bitset, maxOrder+1)}, nil
}

func isPowerOfTwo(n int64) bool { return n > 0 && n&(n-1) == 0 }

// Alloc returns a page of at least sizeBytes, rounded up to a power of two
// no smaller than the minimum page. It fails only for a size out of range:
// the address space is unbounded.
func (f *Floor) Alloc(sizeBytes int64) (FloorPage, error) {
	order := 0
	if sizeBytes > 1<<f.minShift {
		order = bits.Len64(uint64(sizeBytes-1)) - int(f.minShift)
	}
	if sizeBytes < 1 || order > f.maxOrder {
		return 0, fmt.Errorf("peers: Floor.Alloc(%d): size out of range", sizeBytes)
	}
	from := order
	for from <= f.maxOrder && !f.free[from].any() {
		from++
	}
	var idx int
	if from <= f.maxOrder {
		idx = f.free[from].first()
		f.free[from].clear(idx)
	} else {
		idx = f.grow()
		from = f.maxOrder
	}
	// Split down to the order asked for, freeing the upper half each time.
	for from > order {
		from--
		idx <<= 1
		f.free[from].set(idx | 1)
	}
	shift := f.minShift + uint(order)
	return FloorPage(uint64(idx)<<shift | uint64(shift)), nil
}

// grow adds one max page to the heap and returns its index, allocated.
func (f *Floor) grow() int {
	idx := f.maxPages
	f.maxPages++
	for k := range f.free {
		f.free[k].grow(f.maxPages << (f.maxOrder - k))
	}
	return idx
}

// Free returns page p, merging it with its buddy for as long as the buddy
// is free. p must be a page Alloc returned and not yet freed.
func (f *Floor) Free(p FloorPage) {
	shift := uint(p & floorSizeMask)
	order := int(shift - f.minShift)
	idx := int(uint64(p) >> shift)
	// The heap grows in whole max pages, so a buddy below max order always
	// lies inside the heap.
	for order < f.maxOrder && f.free[order].test(idx^1) {
		f.free[order].clear(idx ^ 1)
		idx >>= 1
		order++
	}
	f.free[order].set(idx)
}

// bitset is a hierarchical bitmap: levels[0] holds one bit per page, and
// each level above holds one bit per word of the level below, set iff that
// word is non-zero. The top level is one word, so any and first cost one
// load per level (four levels cover 16M pages).
type bitset struct {
	levels [][]uint64
}

// grow makes room for at least n bits; new bits are clear.
func (s *bitset) grow(n int) {
	for l := 0; ; l++ {
		words := (n + 63) / 64
		switch {
		case l == len(s.levels):
			// A new top level, summarising the one below.
			level := make([]uint64, words)
			if l > 0 {
				for i, w := range s.levels[l-1] {
					if w != 0 {
						level[i/64] |= 1 << (i % 64)
					}
				}
			}
			s.levels = append(s.levels, level)
		case len(s.levels[l]) < words:
			// New words are zero, so the summary bits above stay right.
			s.levels[l] = append(s.levels[l], make([]uint64, words-len(s.levels[l]))...)
		}
		if words == 1 {
			return
		}
		n = words
	}
}

func (s *bitset) any() bool { return len(s.levels) > 0 && s.levels[len(s.levels)-1][0] != 0 }

func (s *bitset) test(i int) bool { return s.levels[0][i>>6]&(1<<(i&63)) != 0 }

// first returns the lowest set bit; the set must not be empty.
func (s *bitset) first() int {
	i := 0
	for l := len(s.levels) - 1; l >= 0; l-- {
		i = i<<6 | bits.TrailingZeros64(s.levels[l][i])
	}
	return i
}

func (s *bitset) set(i int) {
	for _, level := range s.levels {
		w := i >> 6
		old := level[w]
		level[w] = old | 1<<(i&63)
		if old != 0 {
			return // the levels above already say this word is non-empty
		}
		i = w
	}
}

func (s *bitset) clear(i int) {
	for _, level := range s.levels {
		w := i >> 6
		v := level[w] &^ (1 << (i & 63))
		level[w] = v
		if v != 0 {
			return // the word is still non-empty: the levels above stay set
		}
		i = w
	}
}
