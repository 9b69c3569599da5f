package pagealloc

import (
	"cmp"
	"flag"
	"math/rand/v2"
	"slices"
	"testing"
)

var lineTableSeed = flag.Uint64("linetable.seed", 0, "seed for the line table's model test; 0 picks one from the clock")

// TestLineTableModel adds random line indexes to tables against a map, with
// indexes drawn from ranges small and wide enough that probe runs collide,
// wrap and the table grows, and checks every lookup, the count, the
// sorted listing and which ranges hold a line.
func TestLineTableModel(t *testing.T) {
	seed := testSeed(t, "linetable.seed", *lineTableSeed)
	rng := rand.New(rand.NewPCG(seed, seed))
	// The middle span gives sorted enough keys for its radix sort; the
	// wide one passes what it packs into one word with a slot.
	for _, span := range []int64{300, 1 << 24, 1 << 50} {
		var tab lineTable
		model := map[int64]*line{}
		var seen []int64
		for op := range 20_000 {
			idx := rng.Int64N(span)
			if len(seen) > 0 && rng.IntN(2) == 0 {
				idx = seen[rng.IntN(len(seen))] // again
			}
			l, fresh := tab.add(idx)
			if want, ok := model[idx]; ok == fresh || ok && l != want {
				t.Fatalf("span %d, op %d: add(%d) = %p fresh=%v, model %p (%v)", span, op, idx, l, fresh, want, ok)
			}
			if fresh {
				if *l != (line{}) {
					t.Fatalf("span %d, op %d: add(%d) made a line that is not zero", span, op, idx)
				}
				model[idx] = l
				seen = append(seen, idx)
			}
			if tab.len() != len(model) {
				t.Fatalf("span %d, op %d: %d entries, model %d", span, op, tab.len(), len(model))
			}
			if op%500 != 0 {
				continue
			}
			for _, i := range append(seen, rng.Int64N(span), -1, span) {
				if got, want := tab.line(i), model[i]; got != want {
					t.Fatalf("span %d, op %d: line(%d) = %p, model %p", span, op, i, got, want)
				}
			}
			for range 8 {
				// Ranges narrower and wider than the table, so that
				// holdsAny both probes and scans.
				lo := rng.Int64N(span) - 2
				hi := lo + rng.Int64N(max(2, span>>rng.IntN(60)))
				want := false
				for i := range model {
					want = want || i >= lo && i <= hi
				}
				if got := tab.holdsAny(lo, hi); got != want {
					t.Fatalf("span %d, op %d: holdsAny(%d, %d) = %v, model %v", span, op, lo, hi, got, want)
				}
			}
			refs := tab.sorted(nil)
			if len(refs) != len(model) || !slices.IsSortedFunc(refs, func(a, b lineRef) int { return cmp.Compare(a.idx, b.idx) }) {
				t.Fatalf("span %d, op %d: sorted listing of %d entries is wrong", span, op, len(refs))
			}
			for _, r := range refs {
				if model[r.idx] != r.l {
					t.Fatalf("span %d, op %d: sorted listing pairs %d with the wrong line", span, op, r.idx)
				}
			}
		}
	}
}

// TestSortKeys checks sortKeys against slices.Sort on random keys of every
// width, in numbers below and above what goes to the radix sort, reusing
// the spare buffer as commits do.
func TestSortKeys(t *testing.T) {
	seed := testSeed(t, "linetable.seed", *lineTableSeed)
	rng := rand.New(rand.NewPCG(seed, seed))
	var spare []uint64
	for keyBits := 1; keyBits <= 64; keyBits++ {
		for _, n := range []int{0, 1, 255, 256, 257, 1000 + rng.IntN(5000)} {
			keys := make([]uint64, n)
			for i := range keys {
				keys[i] = rng.Uint64() >> (64 - keyBits)
			}
			want := slices.Sorted(slices.Values(keys))
			var got []uint64
			got, spare = sortKeys(keys, spare, keyBits)
			if !slices.Equal(got, want) {
				t.Fatalf("%d keys of %d bits: sortKeys differs from slices.Sort", n, keyBits)
			}
		}
	}
}
