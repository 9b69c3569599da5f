package pagealloc

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestPendingRing runs random transactions of allocs and frees, some
// rolled back, with checkpoints that let later ones release what earlier
// ones freed, and checks after every commit that the allocator's copy of
// the pending queue in memory agrees with the queue on disk, and that the
// device holds exactly the pages committed. In the middle, one
// transaction frees more pages than the copy holds, and the device is
// reopened, which empties the copy: releases then read the queue from
// disk until they reach what the copy holds again.
func TestPendingRing(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t, "buddy.seed", *buddySeed), 2))
	o := testOptions()
	o.MaxPageSize = 64 << 10
	o.JournalSize = 32 << 20
	d, path := createTestDevice(t, o)
	live := map[Addr]bool{}
	ringChecks, ringServed := 0, 0
	afterCommit := func(what string) {
		t.Helper()
		d.writer.Lock()
		err := d.alloc.checkRing()
		st := d.alloc.last
		d.writer.Unlock()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if _, ok := d.alloc.ringFront(&st); ok {
			ringChecks++
		}
		got := allocatedSet(t, d)
		if !maps.Equal(got, live) {
			t.Fatalf("%s: the device holds %d pages, %d committed", what, len(got), len(live))
		}
	}
	for round := range 300 {
		switch round {
		case 150:
			// More frees in one transaction than the ring holds: it
			// forgets them all.
			pages := allocPages(t, d, pendRingLen+1000, 4096)
			freePages(t, d, pages)
			if st := d.alloc.last; st.ringTail != st.ringHead {
				t.Fatalf("the ring holds %d entries after %d frees in one transaction, want none", st.ringTail-st.ringHead, len(pages))
			}
			afterCommit("after the large free")
		case 220:
			d = reopen(t, d, path, o)
			afterCommit("after reopening")
		}
		st := d.alloc.last
		_, fromRing := d.alloc.ringFront(&st)
		tx, err := d.Begin()
		if err != nil {
			t.Fatal(err)
		}
		txLive := maps.Clone(live)
		for range rng.IntN(30) {
			if rng.IntN(2) == 0 && len(txLive) > 0 {
				held := slices.Collect(maps.Keys(txLive))
				slices.Sort(held)
				a := held[rng.IntN(len(held))]
				if err := tx.Free(a); err != nil {
					t.Fatalf("round %d: Free(%v): %v", round, a, err)
				}
				delete(txLive, a)
				continue
			}
			a, err := tx.Alloc(4096 << rng.IntN(5))
			if err != nil {
				t.Fatalf("round %d: Alloc: %v", round, err)
			}
			if txLive[a] {
				t.Fatalf("round %d: Alloc returned %v, which the transaction holds", round, a)
			}
			txLive[a] = true
		}
		released := st.pendPages - d.alloc.work.pendPages
		if rng.IntN(5) == 0 {
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			if d.alloc.last != st {
				t.Fatalf("round %d: Rollback left the allocator state changed", round)
			}
			continue
		}
		if err := tx.Commit(); err != nil {
			t.Fatalf("round %d: Commit: %v", round, err)
		}
		live = txLive
		if fromRing && released > 0 {
			ringServed++
		}
		afterCommit(fmt.Sprintf("round %d", round))
		if rng.IntN(4) == 0 {
			coverCommitted(t, d)
		}
	}
	t.Logf("the ring held the whole queue at %d commits, and served the releases of %d transactions", ringChecks, ringServed)
	if ringChecks == 0 || ringServed == 0 {
		t.Errorf("the ring was never used")
	}
}
