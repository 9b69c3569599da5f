package pagealloc

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
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

// TestPendingRingFindsHeadersChangedUnderIt frees three pages, which the
// pending ring then holds as the whole queue, and changes the file under
// the open device as only a writer outside the package can: a queued
// page's freeing transaction, or the last page's next link. The ring is
// a copy of what the allocator wrote, and no damage to a file before Open
// can make it disagree with the queue (it starts empty, and a queue that
// a damaged link leads into its middle never has its first entry at the
// head again): checkRing, which the invariants build runs after every
// commit, must name the entry or the link that no longer agrees.
func TestPendingRingFindsHeadersChangedUnderIt(t *testing.T) {
	pages := func(t *testing.T) (*Device, string, []Addr) {
		d, path := createTestDevice(t, smallFileOptions())
		pages := allocPages(t, d, 6, 4096)
		freePages(t, d, []Addr{pages[0], pages[2], pages[4]})
		coverCommitted(t, d)
		d.writer.Lock()
		err := d.alloc.checkRing()
		st := d.alloc.last
		d.writer.Unlock()
		if _, whole := d.alloc.ringFront(&st); err != nil || !whole || st.ringTail-st.ringHead != 3 {
			t.Fatalf("set-up: the ring holds %d entries (the whole queue: %v), check: %v", st.ringTail-st.ringHead, whole, err)
		}
		return d, path, pages
	}
	outside := func(t *testing.T, path string, off int64, v uint64) {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], v)
		if _, err := f.WriteAt(b[:], off); err != nil {
			t.Fatal(err)
		}
	}
	check := func(d *Device) error {
		d.writer.Lock()
		defer d.writer.Unlock()
		return d.alloc.checkRing()
	}
	t.Run("freeing transaction", func(t *testing.T) {
		d, path, pages := pages(t)
		outside(t, path, pages[2].Offset(), 1<<40) // word0: the stamp
		if err := check(d); err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("pending ring entry 1 is page %d freed by ", pages[2].Offset())) ||
			!strings.Contains(err.Error(), fmt.Sprintf("the queue's page there is %d: magic %#x, freed by %d at order 0", pages[2].Offset(), pendingMagic, int64(1<<40))) {
			t.Errorf("checkRing: %v; want entry 1 named, with the header the file holds", err)
		}
	})
	t.Run("last page's next", func(t *testing.T) {
		d, path, pages := pages(t)
		outside(t, path, pages[4].Offset()+8, uint64(pages[1].Offset()))
		want := fmt.Sprintf("the pending ring ends before the queue, which goes on at %d", pages[1].Offset())
		if err := check(d); err == nil || err.Error() != want {
			t.Errorf("checkRing: %v; want %q", err, want)
		}
	})
}
