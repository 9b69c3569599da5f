package pagealloc

import (
	"flag"
	"math/rand/v2"
	"slices"
	"testing"
)

var lineTableSeed = flag.Uint64("linetable.seed", 0, "seed for the line table's model test; 0 picks one from the clock")

// TestLineTableModel runs random adds, puts and removals against a map,
// with indexes drawn from a small range so that probe runs collide and
// wrap, and checks every lookup, the count and the sorted listing.
func TestLineTableModel(t *testing.T) {
	seed := testSeed(t, "linetable.seed", *lineTableSeed)
	rng := rand.New(rand.NewPCG(seed, seed))
	var tab lineTable
	model := map[int64]uint64{}
	for op := range 200_000 {
		idx := rng.Int64N(300)
		switch rng.IntN(3) {
		case 0:
			r, fresh := tab.add(idx)
			if _, ok := model[idx]; ok == fresh {
				t.Fatalf("op %d: add(%d) fresh=%v, model has it: %v", op, idx, fresh, ok)
			}
			if fresh {
				r.seq = uint64(op)
				model[idx] = uint64(op)
			}
		case 1:
			tab.put(lineRef{idx: idx, l: new(line), seq: uint64(op)})
			model[idx] = uint64(op)
		case 2:
			if i := tab.find(idx); i >= 0 {
				tab.removeAt(i)
			}
			delete(model, idx)
		}
		if tab.len() != len(model) {
			t.Fatalf("op %d: %d entries, model %d", op, tab.len(), len(model))
		}
		if op%1000 != 0 {
			continue
		}
		for i := range int64(300) {
			r := tab.get(i)
			seq, ok := model[i]
			if (r != nil) != ok || ok && r.seq != seq {
				t.Fatalf("op %d: get(%d) = %+v, model %d (%v)", op, i, r, seq, ok)
			}
		}
		refs := tab.sorted(nil)
		if len(refs) != len(model) || !slices.IsSortedFunc(refs, func(a, b lineRef) int { return int(a.idx - b.idx) }) {
			t.Fatalf("op %d: sorted listing of %d entries is wrong", op, len(refs))
		}
	}
}
