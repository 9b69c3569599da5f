package pagealloc

import (
	"cmp"
	"math/bits"
	"slices"
)

// lineRef names one line of the device by index (offset >> lineShift) and
// the version of it a table holds.
type lineRef struct {
	idx int64
	l   *line
}

// lineTable maps line indexes to lines. It is an open-addressing hash table
// with linear probing: transactions look lines up on every read and write,
// and a Go map costs several times more per lookup than one probe of a flat
// array. The zero value is an empty table.
type lineTable struct {
	slots []lineRef // l == nil: empty; len is a power of two, at least twice n
	n     int
	shift uint // 64 - log2(len(slots))
	slab  []line

	// minIdx and maxIdx bound the indexes ever added, so that reads of
	// other lines skip the table at once.
	minIdx, maxIdx int64
}

// sortBuffers is the memory sorted works in, kept by its caller from one
// call to the next: every commit sorts a table, and a table lives for one
// transaction only.
type sortBuffers struct {
	refs        []lineRef
	keys, spare []uint64
}

// home spreads line indexes, which are often consecutive, over the
// table (Fibonacci hashing).
func (t *lineTable) home(idx int64) int {
	return int((uint64(idx) * 0x9e3779b97f4a7c15) >> t.shift)
}

// len returns the number of lines in t.
func (t *lineTable) len() int { return t.n }

// line returns the line for idx, or nil.
func (t *lineTable) line(idx int64) *line {
	if t.n == 0 || idx < t.minIdx || idx > t.maxIdx {
		return nil
	}
	mask := len(t.slots) - 1
	for i := t.home(idx); ; i = (i + 1) & mask {
		switch s := &t.slots[i]; {
		case s.l == nil:
			return nil
		case s.idx == idx:
			return s.l
		}
	}
}

// holdsAny reports whether t holds a line with an index in [lo, hi]:
// probing each index of the range, or scanning the slots if they are
// fewer.
func (t *lineTable) holdsAny(lo, hi int64) bool {
	lo, hi = max(lo, t.minIdx), min(hi, t.maxIdx)
	if t.n == 0 || lo > hi {
		return false
	}
	if hi-lo < int64(len(t.slots)) {
		for idx := lo; idx <= hi; idx++ {
			if t.line(idx) != nil {
				return true
			}
		}
		return false
	}
	for _, s := range t.slots {
		if s.l != nil && s.idx >= lo && s.idx <= hi {
			return true
		}
	}
	return false
}

// add returns the line for idx, making a zeroed one if there is none;
// fresh reports whether it did.
func (t *lineTable) add(idx int64) (l *line, fresh bool) {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	mask := len(t.slots) - 1
	i := t.home(idx)
	for ; t.slots[i].l != nil; i = (i + 1) & mask {
		if t.slots[i].idx == idx {
			return t.slots[i].l, false
		}
	}
	if len(t.slab) == 0 {
		// Most transactions touch a handful of lines; big ones grow the
		// slab geometrically. Lines never move: readers keep pointers.
		t.slab = make([]line, min(max(4, t.n), 1024))
	}
	t.slots[i] = lineRef{idx: idx, l: &t.slab[0]}
	t.slab = t.slab[1:]
	t.inserted(idx)
	return t.slots[i].l, true
}

// inserted counts a new entry for idx.
func (t *lineTable) inserted(idx int64) {
	if t.n == 0 || idx < t.minIdx {
		t.minIdx = idx
	}
	if t.n == 0 || idx > t.maxIdx {
		t.maxIdx = idx
	}
	t.n++
}

// reserve sizes the empty table t for about n lines, so that a
// transaction as large as the last one does not grow it line by line:
// each growth rehashes every line. At most 1<<14 lines are reserved.
func (t *lineTable) reserve(n int) {
	if n = min(n, 1<<14); n > 8 {
		size := 1 << bits.Len(uint(2*n-1)) // at least twice n
		t.slots = make([]lineRef, size)
		t.shift = uint(64 - bits.TrailingZeros(uint(size)))
	}
}

func (t *lineTable) grow() {
	size := max(16, 2*len(t.slots))
	old := t.slots
	t.slots = make([]lineRef, size)
	t.shift = uint(64 - bits.TrailingZeros(uint(size)))
	t.n = 0
	mask := size - 1
	for _, r := range old {
		if r.l == nil {
			continue
		}
		i := t.home(r.idx)
		for t.slots[i].l != nil { // indexes are distinct: find a free slot
			i = (i + 1) & mask
		}
		t.slots[i] = r
		t.inserted(r.idx)
	}
}

// sorted returns t's entries in ascending order of index, in b.refs;
// b may be nil.
func (t *lineTable) sorted(b *sortBuffers) []lineRef {
	if b == nil {
		b = new(sortBuffers)
	}
	b.refs = b.refs[:0]
	if t.n == 0 {
		return b.refs
	}
	// Sorting plain integers is several times faster than sorting
	// structs through a comparison function: pack each index, less the
	// smallest, with its slot, when both fit.
	slotBits := bits.Len(uint(len(t.slots) - 1))
	if keyBits := bits.Len64(uint64(t.maxIdx-t.minIdx)) + slotBits; keyBits <= 64 {
		keys := b.keys[:0]
		for i, r := range t.slots {
			if r.l != nil {
				keys = append(keys, uint64(r.idx-t.minIdx)<<slotBits|uint64(i))
			}
		}
		keys, b.spare = sortKeys(keys, b.spare, keyBits)
		for _, k := range keys {
			b.refs = append(b.refs, t.slots[k&(1<<slotBits-1)])
		}
		b.keys = keys
		return b.refs
	}
	for _, r := range t.slots {
		if r.l != nil {
			b.refs = append(b.refs, r)
		}
	}
	slices.SortFunc(b.refs, func(x, y lineRef) int { return cmp.Compare(x.idx, y.idx) })
	return b.refs
}

// radixBits is the digit of sortKeys' radix sort: 2,048 counters, and
// three passes over keys of up to 33 bits.
const radixBits = 11

// sortKeys sorts keys, of which only the low keyBits bits may be set, and
// returns them with the other buffer, spare, for the next call. A large
// transaction's commit sorts thousands of lines: a least-significant-digit
// radix sort does it in a few linear passes, where a comparison sort
// takes a dozen mispredicted branches per key. Few keys go to slices.Sort.
func sortKeys(keys, spare []uint64, keyBits int) (sorted, spareOut []uint64) {
	passes := (keyBits + radixBits - 1) / radixBits
	if len(keys) < 256 || passes > 4 {
		slices.Sort(keys)
		return keys, spare
	}
	spare = slices.Grow(spare[:0], len(keys))[:len(keys)]
	var count [1 << radixBits]int
	for p := range passes {
		shift := uint(p * radixBits)
		clear(count[:])
		for _, k := range keys {
			count[k>>shift&(1<<radixBits-1)]++
		}
		sum := 0
		for i, c := range count {
			count[i] = sum
			sum += c
		}
		for _, k := range keys {
			d := k >> shift & (1<<radixBits - 1)
			spare[count[d]] = k
			count[d]++
		}
		keys, spare = spare, keys
	}
	return keys, spare
}
