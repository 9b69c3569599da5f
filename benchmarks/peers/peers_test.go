package peers

import (
	"flag"
	"sort"
	"testing"
)

var seed = flag.Uint64("peers.seed", 1, "seed of the random operation tests")

// TestFloor runs random allocs and frees against Floor and checks after
// each step that no two live pages overlap, that every page is aligned to
// its size and that freeing everything merges the heap back into whole max
// pages.
func TestFloor(t *testing.T) {
	t.Logf("seed %d (rerun with -peers.seed=%d)", *seed, *seed)
	f, err := NewFloor(minPageBytes, maxPageBytes)
	if err != nil {
		t.Fatal(err)
	}
	w := workload{state: *seed}
	var live []FloorPage
	for i := range 20_000 {
		r := w.next()
		if len(live) > 0 && (r>>62 == 0 || len(live) > 500) {
			slot := w.slot(r, len(live))
			f.Free(live[slot])
			live[slot] = live[len(live)-1]
			live = live[:len(live)-1]
		} else {
			// Sizes off the powers of two too: they round up.
			size := w.size(r) - int64(r>>40&0xfff)
			p, err := f.Alloc(size)
			if err != nil {
				t.Fatalf("op %d: Alloc(%d): %v", i, size, err)
			}
			if p.Size() < size || p.Size() > 2*size && p.Size() > minPageBytes {
				t.Fatalf("op %d: Alloc(%d) returned %d bytes", i, size, p.Size())
			}
			live = append(live, p)
		}
		if i%1000 == 0 {
			checkNoOverlap(t, live)
		}
	}
	for _, p := range live {
		f.Free(p)
	}
	for k := 0; k < f.maxOrder; k++ {
		if f.free[k].any() {
			t.Errorf("order %d has a free page %d after freeing everything: merging failed", k, f.free[k].first())
		}
	}
	for i := range f.maxPages {
		if !f.free[f.maxOrder].test(i) {
			t.Errorf("max page %d is not free after freeing everything", i)
		}
	}
	if _, err := f.Alloc(maxPageBytes + 1); err == nil {
		t.Error("Alloc above the max page succeeded")
	}
	if _, err := f.Alloc(0); err == nil {
		t.Error("Alloc(0) succeeded")
	}
}

func checkNoOverlap(t *testing.T, live []FloorPage) {
	t.Helper()
	pages := append([]FloorPage(nil), live...)
	sort.Slice(pages, func(i, j int) bool { return pages[i].Offset() < pages[j].Offset() })
	for i, p := range pages {
		if p.Offset()%p.Size() != 0 {
			t.Fatalf("page %d+%d is not aligned to its size", p.Offset(), p.Size())
		}
		if i > 0 && pages[i-1].Offset()+pages[i-1].Size() > p.Offset() {
			t.Fatalf("pages %d+%d and %d+%d overlap", pages[i-1].Offset(), pages[i-1].Size(), p.Offset(), p.Size())
		}
	}
}

// TestImplementations runs a short version of each benchmark's workload
// against every implementation, then runs the implementation's own
// consistency check, so that a broken adapter fails here rather than
// benchmarking the wrong thing.
func TestImplementations(t *testing.T) {
	for _, set := range []struct {
		name        string
		impls       []impl
		commitEvery int
	}{{"nosync", implsNoSync, commitEveryOps}, {"sync", implsSync, syncEveryOps}} {
		for _, im := range set.impls {
			t.Run(set.name+"/"+im.name, func(t *testing.T) {
				a := openFor(t, im)
				const live, ops = 300, 3000
				w := workload{state: *seed}
				handles := make([]int64, live)
				for i := range handles {
					h, err := a.Alloc(w.size(w.next()))
					if err != nil {
						t.Fatal(err)
					}
					handles[i] = h
				}
				for i := 1; i <= ops; i++ {
					r := w.next()
					slot := w.slot(r, live)
					if err := a.Free(handles[slot]); err != nil {
						t.Fatalf("op %d: Free: %v", i, err)
					}
					h, err := a.Alloc(w.size(r))
					if err != nil {
						t.Fatalf("op %d: Alloc: %v", i, err)
					}
					handles[slot] = h
					if i%set.commitEvery == 0 {
						if err := a.Commit(); err != nil {
							t.Fatalf("op %d: Commit: %v", i, err)
						}
					}
				}
				if err := a.Commit(); err != nil {
					t.Fatal(err)
				}
				seen := make(map[int64]bool, live)
				for _, h := range handles {
					if seen[h] {
						t.Fatalf("handle %d is live twice", h)
					}
					seen[h] = true
				}
				if err := a.Check(); err != nil {
					t.Fatalf("check: %v", err)
				}
			})
		}
	}
}
