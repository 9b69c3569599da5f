package pagealloc

import (
	"bytes"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
	"github.com/pagealloc/pagealloc/internal/storage"
)

var (
	buddySeed = flag.Uint64("buddy.seed", 0, "seed for the allocator's random tests (0: time)")
	buddyOps  = flag.Int("buddy.ops", 100_000, "operations in TestBuddyModel")
)

// testSeed returns the seed a random test runs with, the flag's value or
// else the time, and logs it with how to rerun.
func testSeed(t testing.TB, flagName string, flagValue uint64) uint64 {
	t.Helper()
	seed := flagValue
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -run '^%s$' -%s=%d)", seed, t.Name(), flagName, seed)
	return seed
}

// rollbackOnExit rolls tx back if the test fails while it is open, so that
// the device's cleanup does not wait for the writer slot forever.
func rollbackOnExit(tx *Txn) {
	if !tx.done {
		tx.Rollback()
	}
}

// allocPages allocates n pages of size bytes in one transaction.
func allocPages(tb testing.TB, d *Device, n int, size int64) []Addr {
	tb.Helper()
	return allocSized(tb, d, n, func() int64 { return size })
}

// allocSized allocates n pages in one transaction, each of the size that
// size returns for it.
func allocSized(tb testing.TB, d *Device, n int, size func() int64) []Addr {
	tb.Helper()
	pages := make([]Addr, 0, n)
	err := d.Update(func(tx *Txn) error {
		for range n {
			a, err := tx.Alloc(size())
			if err != nil {
				return err
			}
			pages = append(pages, a)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return pages
}

// freePages frees pages in one transaction.
func freePages(tb testing.TB, d *Device, pages []Addr) {
	tb.Helper()
	if err := d.Update(func(tx *Txn) error {
		for _, a := range pages {
			if err := tx.Free(a); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
}

// coverCommitted waits for a checkpoint to cover every transaction
// committed so far, so that what they freed may be handed out again.
func coverCommitted(tb testing.TB, d *Device) {
	tb.Helper()
	if err := d.journal.waitCheckpoint(d.txSeq); err != nil {
		tb.Fatal(err)
	}
}

// releaseCovered runs transactions that only release pending pages, until
// every page a checkpoint covers is free, so that a benchmark does not time
// the release of its set-up's frees: each transaction releases at most a
// budget of them.
func releaseCovered(tb testing.TB, d *Device) {
	tb.Helper()
	for {
		before := d.Stats().PendingPages
		if err := d.Update(func(tx *Txn) error { d.alloc.join(tx); return nil }); err != nil {
			tb.Fatal(err)
		}
		if after := d.Stats().PendingPages; after == before {
			return
		}
	}
}

// smallHeapOptions make a device whose heap is 32 MiB of pages from 4 KiB
// to 64 KiB: small enough to fill, with 5 orders and block metadata that
// spans two max pages.
func smallHeapOptions() *Options {
	return &Options{NoSync: true, MaxPageSize: 64 << 10, JournalSize: 256 << 10, MaxSize: 5<<20 + 32<<20, GrowthStep: 1 << 20}
}

// allocatedSet returns the allocated pages as the device's bitmaps show
// them, and checks the device.
func allocatedSet(t *testing.T, d *Device) map[Addr]bool {
	t.Helper()
	got := map[Addr]bool{}
	d.writer.Lock()
	err := d.check(func(a Addr) { got[a] = true })
	d.writer.Unlock()
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return got
}

// checkNoOverlap fails if two pages of live share a byte.
func checkNoOverlap(t *testing.T, live map[Addr]bool) {
	t.Helper()
	addrs := slices.SortedFunc(maps.Keys(live), func(a, b Addr) int { return int(a.Offset() - b.Offset()) })
	for i := 1; i < len(addrs); i++ {
		if addrs[i-1].Offset()+addrs[i-1].Size() > addrs[i].Offset() {
			t.Fatalf("%v and %v overlap", addrs[i-1], addrs[i])
		}
	}
}

// TestBuddyModel runs random Alloc/Free/Commit/Rollback against a model that
// is just the set of live pages; after every commit the device must pass
// Check and hold exactly the model's pages. It runs on a new device, and
// on a device of format version 1 that the code of that version wrote
// (testdata/golden, with the same page sizes and journal), whose heap
// blocks that code laid out and whose pages it allocated: they start the
// model.
func TestBuddyModel(t *testing.T) {
	t.Run("new", func(t *testing.T) {
		d, _ := createTestDevice(t, smallHeapOptions())
		buddyModel(t, d)
	})
	t.Run("version1", func(t *testing.T) {
		d := openGoldenImage(t, "v1-closed", smallHeapOptions())
		if d.geometry.version != 1 || d.alloc.g.parentShift != 0 {
			t.Fatalf("version %d parent shift %d, want a version 1 geometry", d.geometry.version, d.alloc.g.parentShift)
		}
		buddyModel(t, d)
	})
}

func buddyModel(t *testing.T, d *Device) {
	rng := rand.New(rand.NewPCG(testSeed(t, "buddy.seed", *buddySeed), 1))
	g := &d.alloc.g
	live := allocatedSet(t, d) // committed
	liveList := slices.Collect(maps.Keys(live))
	slices.Sort(liveList)
	ops, commits, rollbacks, noSpace := 0, 0, 0, 0
	for ops < *buddyOps {
		tx, err := d.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer rollbackOnExit(tx)
		txLive := maps.Clone(live)
		freed := map[Addr]bool{}
		for n := 1 + rng.IntN(60); n > 0; n-- {
			ops++
			switch r := rng.IntN(100); {
			case r < 55: // alloc
				size := int64(1 + rng.IntN(int(g.maxPageBytes())))
				a, err := tx.Alloc(size)
				if errors.Is(err, ErrNoSpace) {
					noSpace++
					continue
				}
				if err != nil {
					t.Fatalf("op %d: Alloc(%d): %v", ops, size, err)
				}
				if a.Size() < size || a.Size() > max(2*size, g.pageBytes(0)) || a.Offset()%a.Size() != 0 {
					t.Fatalf("op %d: Alloc(%d) returned %v", ops, size, a)
				}
				if txLive[a] {
					t.Fatalf("op %d: Alloc returned live page %v", ops, a)
				}
				txLive[a] = true
				liveList = append(liveList, a)
			case r < 95: // free a live page
				if len(liveList) == 0 {
					continue
				}
				i := rng.IntN(len(liveList))
				a := liveList[i]
				if !txLive[a] {
					liveList = slices.Delete(liveList, i, i+1)
					continue
				}
				if err := tx.Free(a); err != nil {
					t.Fatalf("op %d: Free(%v): %v", ops, a, err)
				}
				delete(txLive, a)
				freed[a] = true
			default: // a bad free must change nothing
				bad := badAddr(rng, g, txLive, freed, d.alloc.work.frontier)
				if err := tx.Free(bad); !errors.Is(err, ErrInvalidFree) {
					t.Fatalf("op %d: Free(%v) of a non-allocated page returned %v", ops, bad, err)
				}
			}
		}
		if rng.IntN(10) == 0 {
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			rollbacks++
		} else {
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			live = txLive
			commits++
		}
		if got := allocatedSet(t, d); !maps.Equal(got, live) {
			t.Fatalf("after op %d the device holds %d pages, the model %d", ops, len(got), len(live))
		}
		checkNoOverlap(t, live)
	}
	t.Logf("%d operations in %d commits and %d rollbacks; %d allocations met ErrNoSpace; %d pages live at the end",
		ops, commits, rollbacks, noSpace, len(live))
	if noSpace == 0 {
		t.Errorf("the heap never filled: the test does not reach ErrNoSpace")
	}
}

// badAddr returns an address that is not an allocated page: freed, wrong
// size, inside another page, misaligned or out of range.
func badAddr(rng *rand.Rand, g *heapGeometry, live, freed map[Addr]bool, frontier int64) Addr {
	for {
		switch rng.IntN(6) {
		case 0: // double free
			for a := range freed {
				return a
			}
		case 1: // wrong size
			for a := range live {
				if a.Size() < g.maxPageBytes() {
					return makeAddr(a.Offset(), uint(a&addrSizeMask)+1)
				}
			}
		case 2: // inside another page
			for a := range live {
				if a.Size() > g.pageBytes(0) {
					return makeAddr(a.Offset()+g.pageBytes(0), g.minShift)
				}
			}
		case 3: // misaligned: a min page past a boundary of twice its size
			off := g.heapOff + g.metaPad
			return makeAddr(off-off%g.pageBytes(1)+g.pageBytes(0), g.minShift+1)
		case 4: // out of range
			return makeAddr(frontier+g.maxPageBytes(), g.minShift)
		case 5: // garbage
			if a := Addr(rng.Uint64()); !live[a] {
				return a
			}
		}
	}
}

// TestBuddyBadInput checks each kind of bad request: a typed error, and the
// device exactly as it was.
func TestBuddyBadInput(t *testing.T) {
	d, _ := createTestDevice(t, smallHeapOptions())
	g := &d.alloc.g
	var big, small Addr
	if err := d.Update(func(tx *Txn) (err error) {
		if big, err = tx.Alloc(32 << 10); err != nil {
			return err
		}
		small, err = tx.Alloc(4096)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var freed Addr
	if err := d.Update(func(tx *Txn) (err error) {
		if freed, err = tx.Alloc(8192); err != nil {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Update(func(tx *Txn) error { return tx.Free(freed) }); err != nil {
		t.Fatal(err)
	}
	before := allocatedSet(t, d)
	statsBefore := d.Stats()
	cases := []struct {
		name string
		op   func(tx *Txn) error
		want error
	}{
		{"free of a never-allocated page", func(tx *Txn) error { return tx.Free(makeAddr(small.Offset()+4096*4, g.minShift)) }, ErrInvalidFree},
		{"double free", func(tx *Txn) error { return tx.Free(freed) }, ErrInvalidFree},
		{"double free in one transaction", func(tx *Txn) error {
			if err := tx.Free(small); err != nil {
				return err
			}
			return tx.Free(small)
		}, ErrInvalidFree},
		{"free with the wrong size", func(tx *Txn) error { return tx.Free(makeAddr(big.Offset(), 14)) }, ErrInvalidFree},
		{"address inside another page", func(tx *Txn) error { return tx.Free(makeAddr(big.Offset()+8192, 13)) }, ErrInvalidFree},
		{"misaligned", func(tx *Txn) error { return tx.Free(makeAddr(big.Offset()+512, 15)) }, ErrInvalidFree},
		{"out of range", func(tx *Txn) error { return tx.Free(makeAddr(g.capacity+1<<20, 12)) }, ErrInvalidFree},
		{"block metadata", func(tx *Txn) error { return tx.Free(makeAddr(g.heapOff, 12)) }, ErrInvalidFree},
		{"no size", func(tx *Txn) error { return tx.Free(Addr(0)) }, ErrInvalidFree},
		{"Alloc(0)", func(tx *Txn) error { _, err := tx.Alloc(0); return err }, ErrInvalidArgument},
		{"Alloc(-1)", func(tx *Txn) error { _, err := tx.Alloc(-1); return err }, ErrInvalidArgument},
		{"Alloc above MaxPageSize", func(tx *Txn) error { _, err := tx.Alloc(g.maxPageBytes() + 1); return err }, ErrTooLarge},
		{"write into a free page", func(tx *Txn) error { return tx.Write(freed.Offset(), []byte{1}) }, ErrProtected},
		{"write across two pages", func(tx *Txn) error { return tx.Write(small.Offset()+4090, make([]byte, 16)) }, ErrProtected},
		{"write into block metadata", func(tx *Txn) error { return tx.Write(g.heapOff+64, []byte{1}) }, ErrProtected},
	}
	for _, c := range cases {
		err := d.Update(c.op)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if got := allocatedSet(t, d); !maps.Equal(got, before) {
			t.Errorf("%s: the allocated pages changed", c.name)
		}
	}
	if s := d.Stats(); s.UsedBytes != statsBefore.UsedBytes || s.AllocatedPages != statsBefore.AllocatedPages {
		t.Errorf("stats changed: %+v, was %+v", s, statsBefore)
	}
	if _, err := d.WriteAt([]byte{1}, freed.Offset()); !errors.Is(err, ErrProtected) {
		t.Errorf("WriteAt into a freed page: %v", err)
	}
	if _, err := d.WriteAt(make([]byte, 4096), small.Offset()); err != nil {
		t.Errorf("WriteAt into an allocated page: %v", err)
	}

	// Out of space: fill the heap, then one more page must fail cleanly.
	var n int
	err := d.Update(func(tx *Txn) error {
		for {
			if _, err := tx.Alloc(g.maxPageBytes()); err != nil {
				return err
			}
			n++
		}
	})
	if !errors.Is(err, ErrNoSpace) || n == 0 {
		t.Fatalf("filling the heap ended with %v after %d pages", err, n)
	}
	if got := allocatedSet(t, d); !maps.Equal(got, before) {
		t.Errorf("a rolled-back fill changed the allocated pages")
	}
}

// TestFreedPageNotReusedBeforeCheckpoint checks invariant 5: a page freed
// by a transaction is not handed out again, nor released from the pending
// queue, while the newest checkpoint covers only the transaction before
// the free (the one that allocated the page); once a later checkpoint
// covers the free, the page is released and handed out again before any
// larger page is split.
func TestFreedPageNotReusedBeforeCheckpoint(t *testing.T) {
	d, _ := createTestDevice(t, smallHeapOptions())
	// Several pages, so that more is free than pending after the free
	// (the allocator has no reason to ask for a checkpoint) and so that
	// one of them has its buddy allocated: released, it stays a 4 KiB
	// page instead of merging.
	pages := allocPages(t, d, 4, 4096)
	var a Addr
	for _, p := range pages {
		if slices.Contains(pages, p^Addr(p.Size())) {
			a = p
			break
		}
	}
	if a == 0 {
		t.Fatalf("no two of %v are buddies: the test cannot tell where the freed page goes", pages)
	}
	// A checkpoint covering the allocation, and nothing after it.
	coverCommitted(t, d)
	freePages(t, d, []Addr{a})
	freeSeq := d.txSeq
	if covered := d.checkpointTxSeq.Load(); covered+1 != freeSeq {
		t.Fatalf("the newest checkpoint covers transaction %d, not just the one before the free (%d): the test cannot tell", covered, freeSeq)
	}
	var b Addr
	err := d.Update(func(tx *Txn) (err error) {
		b, err = tx.Alloc(4096)
		if covered := d.checkpointTxSeq.Load(); covered >= freeSeq {
			return fmt.Errorf("a checkpoint covered the free (transaction %d) during the test: it cannot tell", freeSeq)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if b == a {
		t.Fatalf("%v handed out again while the newest checkpoint covered only transaction %d, before its free (%d)", a, freeSeq-1, freeSeq)
	}
	if st := d.Stats(); st.PendingPages != 1 || st.PendingBytes != 4096 {
		t.Fatalf("after a transaction that a checkpoint one short of the free preceded: %d pages (%d bytes) pending, want %v still pending",
			st.PendingPages, st.PendingBytes, a)
	}

	// Covered now: the next transaction releases it, and Alloc takes the
	// smallest free page, so it comes back before any 4 KiB page is split
	// from a larger one.
	coverCommitted(t, d)
	bound := d.Stats().FreePages[0] + 1 // the 4 KiB pages free, and a
	reused := false
	err = d.Update(func(tx *Txn) error {
		for range bound {
			b, err := tx.Alloc(4096)
			if err != nil {
				return err
			}
			if b == a {
				reused = true
				return nil
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reused {
		t.Fatalf("%v was not among the first %d pages of 4 KiB allocated after a checkpoint covered its free", a, bound)
	}
	if st := d.Stats(); st.PendingPages != 0 {
		t.Fatalf("%d pages still pending after a checkpoint covered every free", st.PendingPages)
	}
	mustCheck(t, d)
}

// TestBuddyReopen checks that allocator state survives Close and Open.
func TestBuddyReopen(t *testing.T) {
	d, path := createTestDevice(t, smallHeapOptions())
	live := map[Addr]bool{}
	if err := d.Update(func(tx *Txn) error {
		for i := range 50 {
			a, err := tx.Alloc(int64(1+i) * 1000)
			if err != nil {
				return err
			}
			live[a] = true
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before := d.Stats()
	d = reopen(t, d, path, &Options{NoSync: true})
	if got := allocatedSet(t, d); !maps.Equal(got, live) {
		t.Fatalf("after reopen %d pages allocated, want %d", len(got), len(live))
	}
	after := d.Stats()
	if after.UsedBytes != before.UsedBytes || after.FreeBytes != before.FreeBytes || after.Frontier != before.Frontier {
		t.Fatalf("stats after reopen %+v, before %+v", after, before)
	}
}

// TestPunchHoles checks that a max page that becomes wholly free gives its
// storage back to the filesystem, except its first 4 KiB.
func TestPunchHoles(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("hole punching is implemented on Linux only")
	}
	opts := smallHeapOptions()
	opts.PunchHoles = true
	// Real syncs: the filesystem counts storage for data still waiting
	// in the page cache (delayed allocation) in ways a punch need not
	// change at once.
	opts.NoSync = false
	d, path := createTestDevice(t, opts)
	// Nine max pages, each filled; the last stays allocated beside the
	// eight freed, and keeps every byte through their punching.
	var pages []Addr
	if err := d.Update(func(tx *Txn) error {
		for range 9 {
			a, err := tx.Alloc(64 << 10)
			if err != nil {
				return err
			}
			pages = append(pages, a)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xa5}, 64<<10)
	for _, a := range pages {
		if _, err := d.WriteAt(data, a.Offset()); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	kept := pages[8]
	pages = pages[:8]
	before := allocatedBlocks(t, path)
	freePages(t, d, pages)
	coverCommitted(t, d)
	// The next transaction releases the pages, merging them into free max
	// pages, and takes 4 KiB of one; the one after, once that is durable,
	// punches the seven still free.
	for range 2 {
		if err := d.Update(func(tx *Txn) error { _, err := tx.Alloc(4096); return err }); err != nil {
			t.Fatal(err)
		}
	}
	after := allocatedBlocks(t, path)
	if freed := before - after; freed < 7*(60<<10) {
		t.Fatalf("file holds %d bytes of storage before the frees and %d after; want at least %d returned", before, after, 7*(60<<10))
	}
	got := make([]byte, kept.Size())
	if _, err := d.ReadAt(got, kept.Offset()); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(got, func(b byte) bool { return b != 0xa5 }); i >= 0 {
		t.Fatalf("the page %v kept allocated holds %#x at byte %d after its neighbours were punched, want 0xa5", kept, got[i], i)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestPunchHolesAfterDurability releases a pending page into a whole free
// max page in a transaction that then rolls back, and in one that commits,
// crashing the simulated store at every point from there: the merged
// page's storage may be returned only once the merge is durable, never
// before (a punch cannot be undone, and would zero the free-list header of
// the buddy a rollback or a crash keeps on its list).
func TestPunchHolesAfterDurability(t *testing.T) {
	o := crashOptions(t)
	o.PunchHoles = true
	store := simstore.New(o.MaxSize)
	d, err := createOn(store, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	// Buddies a and b of 32 KiB: b free on its list, a pending and
	// covered by a checkpoint.
	pages := allocPages(t, d, 6, 32<<10)
	var a, b Addr
	for _, p := range pages {
		if p.Offset()%(64<<10) == 0 && slices.Contains(pages, makeAddr(p.Offset()+32<<10, 15)) {
			a, b = p, makeAddr(p.Offset()+32<<10, 15)
			break
		}
	}
	if a == 0 {
		t.Fatalf("no buddies among %v", pages)
	}
	freePages(t, d, []Addr{b})
	coverCommitted(t, d)
	releaseCovered(t, d)
	freePages(t, d, []Addr{a})
	coverCommitted(t, d)

	abort := errors.New("rolled back")
	if err := d.Update(func(tx *Txn) error {
		if _, err := tx.Alloc(4096); err != nil { // joins: releases a, merging it with b
			return err
		}
		return abort
	}); !errors.Is(err, abort) {
		t.Fatal(err)
	}
	mustCheck(t, d)

	var punched atomic.Bool
	store.SetFault(func(op simstore.Op) error {
		punched.Store(punched.Load() || op.Kind == simstore.OpPunchHole)
		return nil
	})
	from := store.Ops()
	if err := d.Update(func(tx *Txn) error { d.alloc.join(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.FreePages[len(st.FreePages)-1] == 0 {
		t.Fatalf("the release merged no max page: %+v", st)
	}
	if punched.Load() {
		t.Fatal("a hole was punched before the merge was durable")
	}
	allocPages(t, d, 1, 4096) // the next transaction punches
	if !punched.Load() {
		t.Fatal("no hole punched once the merge was durable")
	}
	for n := from; n <= store.Ops(); n++ {
		for s := range uint64(4) {
			rd := openImage(t, store, n, rand.New(rand.NewPCG(uint64(n), s)))
			if err := rd.Check(); err != nil {
				t.Errorf("crash after op %d (stream %d): %v", n, s, err)
			}
			rd.Close()
		}
	}
}

// TestPunchHolesAtClose frees whole max pages and closes: Close's own
// transaction releases them, and no transaction follows to punch them,
// so Close must.
func TestPunchHolesAtClose(t *testing.T) {
	o := crashOptions(t)
	o.PunchHoles = true
	d, store := simDevice(t, o)
	pages := allocPages(t, d, 8, 64<<10)
	allocPages(t, d, 1, 64<<10) // holds the tail: nothing is retracted
	freePages(t, d, pages)
	coverCommitted(t, d)
	var punches atomic.Int64
	store.SetFault(func(op simstore.Op) error {
		if op.Kind == simstore.OpPunchHole {
			punches.Add(1)
		}
		return nil
	})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := punches.Load(); n != 8 {
		t.Fatalf("Close punched %d holes; want one for each of the 8 max pages it released", n)
	}
}

// heldWriteStore holds the first write into the pages it is armed with
// until released, outside the store's lock.
type heldWriteStore struct {
	*simstore.Store
	mu      sync.Mutex
	pages   []Addr
	held    atomic.Bool
	entered chan struct{} // closed when the write starts waiting
	release func()
	gate    chan struct{}
}

func (s *heldWriteStore) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	hold := slices.ContainsFunc(s.pages, func(a Addr) bool { return off >= a.Offset() && off < a.Offset()+a.Size() })
	if hold {
		s.pages = nil
	}
	s.mu.Unlock()
	if hold {
		s.held.Store(true)
		close(s.entered)
		<-s.gate
		s.held.Store(false)
	}
	return s.Store.WriteAt(p, off)
}

// arm makes the next write into pages wait until release is called (at
// the latest when the test ends, so that a failure does not hang Close).
func (s *heldWriteStore) arm(t *testing.T, pages []Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pages = pages
	s.entered, s.gate = make(chan struct{}), make(chan struct{})
	s.release = sync.OnceFunc(func() { close(s.gate) })
	t.Cleanup(s.release)
}

// freedMaxPages creates a device with PunchHoles on store, allocates eight
// max pages and one more that holds the heap's tail (so that nothing is
// retracted), frees the eight and lets a checkpoint cover the free.
func freedMaxPages(t *testing.T, store storage.Storage) (*Device, []Addr) {
	t.Helper()
	o := crashOptions(t)
	o.PunchHoles = true
	d := deviceOn(t, store, o)
	pages := allocPages(t, d, 8, 64<<10)
	allocPages(t, d, 1, 64<<10)
	freePages(t, d, pages)
	coverCommitted(t, d)
	return d, pages
}

// TestPunchHolesAfterHomeWrites holds the journal's home writes of the
// transaction that merged freed pages into free max pages, written after
// the writer slot was handed on (by the journal's goroutine after waking
// the committer, or by the committer writing its own group), while the
// next transaction joins: it must not punch a page while those writes go
// to it (beside them a filesystem can leave the whole page's storage
// allocated), and punches them all once they are done.
func TestPunchHolesAfterHomeWrites(t *testing.T) {
	store := &heldWriteStore{Store: simstore.New(crashMaxBytes)}
	d, pages := freedMaxPages(t, store)
	var punched, punchedWhileHeld atomic.Int64
	store.SetFault(func(op simstore.Op) error {
		if op.Kind == simstore.OpPunchHole {
			punched.Add(1)
			if store.held.Load() {
				punchedWhileHeld.Add(1)
			}
		}
		return nil
	})
	store.arm(t, pages)
	// Releases the pages, merging them; its home writes follow the
	// release of the writer slot.
	updated := make(chan error, 1)
	go func() { updated <- d.Update(func(tx *Txn) error { d.alloc.join(tx); return nil }) }()
	<-store.entered
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	joined := make(chan struct{})
	go func() {
		d.alloc.join(tx) // where the punches are made
		close(joined)
	}()
	// Until it has punched, or waits for the journal inside punchDurable.
	for punched.Load() == 0 && !goroutineWaitsIn("(*allocator).punchDurable") {
		time.Sleep(time.Millisecond)
	}
	n := punchedWhileHeld.Load()
	store.release()
	<-joined
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// After tx: with -tags invariants, a Commit checks the device once
	// it returns, which waits for the writer slot tx held.
	if err := <-updated; err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		t.Fatalf("%d max pages punched while the journal was writing them home", n)
	}
	if n := punched.Load(); n != int64(len(pages)) {
		t.Fatalf("%d max pages punched once the home writes were done, want the %d freed", n, len(pages))
	}
}

// TestPunchHolesBesideCommitInFlight: max pages a durable transaction
// freed whole are punched by the next transaction that joins the
// allocator even while another transaction's commit is on its way to
// disk, as one always is when committers follow each other closely.
// Before, nothing was punched until every committed transaction was
// durable, and under steady concurrent commits the queue of pages to
// punch only grew.
func TestPunchHolesBesideCommitInFlight(t *testing.T) {
	store := &buddyCrashGatedStore{Store: simstore.New(crashMaxBytes)}
	d, pages := freedMaxPages(t, store)
	// One transaction releases them all, merging them into free max
	// pages, which wait to be punched; it is durable once Update returns.
	if err := d.Update(func(tx *Txn) error { d.alloc.join(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if n := len(d.alloc.toPunch); n != len(pages) {
		t.Fatalf("set-up: %d max pages wait to be punched, want %d", n, len(pages))
	}
	var punched atomic.Int64
	store.SetFault(func(op simstore.Op) error {
		if op.Kind == simstore.OpPunchHole {
			punched.Add(1)
		}
		return nil
	})
	// A commit held at its sync: a journaled write of the root area,
	// nowhere near the pages.
	entered, gate := store.arm("sync", 0)
	inFlight := make(chan error, 1)
	go func() {
		inFlight <- d.Update(func(tx *Txn) error {
			root, _ := d.Root()
			return tx.Write(root, []byte("in flight"))
		})
	}()
	<-entered
	// Not committed: its Commit would wait for the one held.
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	d.alloc.join(tx)
	n := punched.Load()
	tx.Rollback()
	close(gate)
	if err := <-inFlight; err != nil {
		t.Fatal(err)
	}
	if n != int64(len(pages)) {
		t.Fatalf("%d max pages punched beside a commit in flight, want the %d freed", n, len(pages))
	}
	if left := len(d.alloc.toPunch); left != 0 {
		t.Fatalf("%d max pages still wait to be punched", left)
	}
	// Max pages whose release is the commit in flight wait for a later
	// transaction: a join does not wait for a sync to punch them.
	more := allocPages(t, d, 4, 64<<10)
	freePages(t, d, more)
	coverCommitted(t, d)
	entered, gate = store.arm("sync", 0)
	go func() { inFlight <- d.Update(func(tx *Txn) error { d.alloc.join(tx); return nil }) }()
	<-entered
	if tx, err = d.Begin(); err != nil {
		t.Fatal(err)
	}
	joined := make(chan struct{})
	go func() { d.alloc.join(tx); close(joined) }()
	select {
	case <-joined:
	case <-time.After(30 * time.Second):
		close(gate) // lets the join end, so that tx can end and the device close
		<-joined
		tx.Rollback()
		t.Fatal("a join waited 30 s for the commit in flight, whose release it would punch")
	}
	n, queued := punched.Load(), len(d.alloc.toPunch)
	tx.Rollback()
	close(gate)
	if err := <-inFlight; err != nil {
		t.Fatal(err)
	}
	if n != int64(len(pages)) || queued != len(more) {
		t.Fatalf("beside the release in flight: %d punched in all, %d queued; want %d and %d", n, queued, len(pages), len(more))
	}
	if err := d.Update(func(tx *Txn) error { d.alloc.join(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if n := punched.Load(); n != int64(len(pages)+len(more)) {
		t.Fatalf("%d max pages punched once the release was durable, want %d", n, len(pages)+len(more))
	}
	mustCheck(t, d)
}

// goroutineWaitsIn reports whether a goroutine is parked in a select or
// channel receive made by the function fn names itself (not by one it
// called).
func goroutineWaitsIn(fn string) bool {
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		lines := strings.Split(g, "\n")
		if !strings.Contains(lines[0], "[select]") && !strings.Contains(lines[0], "[chan receive]") {
			continue
		}
		for _, l := range lines[1:] { // function lines, each followed by a tabbed file line
			if !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, "runtime.") {
				if strings.Contains(l, fn+"(") {
					return true
				}
				break
			}
		}
	}
	return false
}

// TestLongPendingQueue frees more pages at once than one transaction can
// release: releasing must spread over transactions, never making one too
// large to commit.
func TestLongPendingQueue(t *testing.T) {
	opts := smallHeapOptions()
	opts.JournalSize = 64 << 10 // records of at most 32 KiB: a few hundred lines
	d, _ := createTestDevice(t, opts)
	var pages []Addr
	for range 20 {
		if err := d.Update(func(tx *Txn) error {
			for range 100 {
				a, err := tx.Alloc(4096)
				if err != nil {
					return err
				}
				pages = append(pages, a)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < len(pages); i += 50 {
		freePages(t, d, pages[i:i+50])
	}
	coverCommitted(t, d)
	for i := 0; d.Stats().PendingPages > 0; i++ {
		if i == 100 {
			t.Fatalf("%d pages still pending after 100 transactions", d.Stats().PendingPages)
		}
		if err := d.Update(func(tx *Txn) error { _, err := tx.Alloc(4096); return err }); err != nil {
			t.Fatalf("transaction %d after the frees: %v", i, err)
		}
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestLargeTransactionReleasesPending fills the heap, frees a few hundred
// pages and lets a checkpoint cover the frees; then a transaction that has
// journaled hundreds of lines before its Alloc must get one of them: the
// release budget counts the lines the release adds, not the caller's.
func TestLargeTransactionReleasesPending(t *testing.T) {
	d, _ := createTestDevice(t, smallHeapOptions())
	keep := allocPages(t, d, 1, 64<<10)[0]
	pages := fillHeap(t, d, 64<<10) // one page per transaction: the free lists end empty
	freePages(t, d, pages[:300])
	coverCommitted(t, d)
	err := d.Update(func(tx *Txn) error {
		if err := tx.Write(keep.Offset(), make([]byte, 300*lineBytes)); err != nil {
			return err
		}
		_, err := tx.Alloc(64 << 10)
		return err
	})
	if err != nil {
		t.Fatalf("Alloc after 300 journaled lines, with 300 covered pending pages: %v", err)
	}
	mustCheck(t, d)
}

// fillHeapBatched fills the heap with pages of size bytes, up to 500 a
// transaction, and returns them.
func fillHeapBatched(t *testing.T, d *Device, size int64) []Addr {
	t.Helper()
	var pages []Addr
	for n := 500; n > 0; {
		got, err := tryAllocPages(d, n, size)
		switch {
		case errors.Is(err, ErrNoSpace):
			n /= 2
		case err != nil:
			t.Fatal(err)
		}
		pages = append(pages, got...)
	}
	return pages
}

// TestAllocAfterLongCoveredQueue fills the heap with min pages and frees
// them all, in an order that makes a max page whole only near the queue's
// end; a checkpoint covers the frees. No one transaction may release so
// many pages, so the first Alloc of a max page fails with ErrNoSpace; the
// transaction after it must find the page, as transactions of its own
// release the rest first. Before, each retry released the same budget's
// worth, rolled back with it, and failed again for good.
func TestAllocAfterLongCoveredQueue(t *testing.T) {
	d, _ := createTestDevice(t, smallHeapOptions())
	g := &d.alloc.g
	pages := fillHeapBatched(t, d, g.pageBytes(0))
	perMax := g.maxPageBytes() / g.pageBytes(0)
	slices.SortStableFunc(pages, func(a, b Addr) int {
		return cmp.Compare(a.Offset()%g.maxPageBytes(), b.Offset()%g.maxPageBytes())
	})
	for i := 0; i < len(pages); i += 500 {
		freePages(t, d, pages[i:min(i+500, len(pages))])
	}
	coverCommitted(t, d)
	t.Logf("%d min pages freed (%d to a max page), %d pending", len(pages), perMax, d.Stats().PendingPages)
	allocMax := func(tx *Txn) error { _, err := tx.Alloc(g.maxPageBytes()); return err }
	err := d.Update(allocMax)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("set-up: the first Alloc of a max page: %v, want ErrNoSpace (more pages to release than one transaction may)", err)
	}
	t.Logf("first Alloc: %v", err)
	if err := d.Update(allocMax); err != nil {
		t.Fatalf("the transaction after: %v; %d pages still pending", err, d.Stats().PendingPages)
	}
	if n := d.Stats().PendingPages; n != 0 {
		t.Errorf("%d pages still pending, all of them covered", n)
	}
	mustCheck(t, d)
}

// TestAllocTooLargeToRelease: a transaction that journaled more than half
// a record before its Alloc may release no pending page (it must stay
// committable), so on a heap full but for covered pending pages its Alloc
// is ErrNoSpace; it still commits what it wrote, and the next
// transaction's Alloc gets a page.
func TestAllocTooLargeToRelease(t *testing.T) {
	d, _ := createTestDevice(t, smallHeapOptions())
	keep := allocPages(t, d, 1, 64<<10)[0]
	pages := fillHeap(t, d, 64<<10)
	fillHeapBatched(t, d, 4096) // what the metadata leaves
	freePages(t, d, pages)
	coverCommitted(t, d)
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer rollbackOnExit(tx)
	data := bytes.Repeat([]byte{0x5a}, int(keep.Size()))
	if err := tx.Write(keep.Offset(), data); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Alloc(4096); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Alloc in a transaction of %d journaled bytes (records of %d): %v, want ErrNoSpace", tx.soloBound(), d.journal.maxRecord, err)
	} else {
		t.Logf("Alloc: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := d.Update(func(tx *Txn) error { _, err := tx.Alloc(4096); return err }); err != nil {
		t.Fatalf("the next transaction's Alloc: %v", err)
	}
	got := make([]byte, len(data))
	if _, err := d.ReadAt(got, keep.Offset()); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the large transaction's write did not stay: %v", err)
	}
	mustCheck(t, d)
}

// TestTooLargeOnlyForReleases: a transaction that fits a record on its
// own, but not beside the covered pending pages its first Alloc releases
// into it, is refused with ErrTooLarge; tried again, it must commit, as
// the next Begin releases those pages in transactions of their own.
// Before, each attempt released the same pages, was rolled back with
// them, and was refused again for as long as they waited.
func TestTooLargeOnlyForReleases(t *testing.T) {
	opts := smallHeapOptions()
	d, _ := createTestDevice(t, opts)
	keep := allocPages(t, d, 2, 64<<10)
	var pages []Addr
	for range 4 {
		pages = append(pages, allocPages(t, d, 500, 4096)...)
	}
	var odd []Addr // their buddies stay live: no release merges into another's line
	for i := 1; i < len(pages); i += 2 {
		odd = append(odd, pages[i])
	}
	for i := 0; i < len(odd); i += 100 {
		freePages(t, d, odd[i:i+100])
	}
	coverCommitted(t, d)
	refusedOnceThenCommits(t, d, opts, keep, func(tx *Txn) error {
		_, err := tx.Alloc(4096)
		return err
	}, func() string { return fmt.Sprintf("%d pages pending", d.Stats().PendingPages) })
}

// refusedOnceThenCommits runs, up to three times, a transaction that calls
// first, then writes 35% of the journal contiguously into keep's pages
// (within the 37% Commit's doc says fits): the first attempt must be
// refused with ErrTooLarge, for what first releases into it, and a later
// one commit. waiting describes what waits to be released.
func refusedOnceThenCommits(t *testing.T, d *Device, opts *Options, keep []Addr, first func(tx *Txn) error, waiting func() string) {
	t.Helper()
	large := func(tx *Txn) error {
		if err := first(tx); err != nil {
			return err
		}
		n := opts.JournalSize * 35 / 100
		for _, a := range keep {
			if m := min(n, a.Size()); m > 0 {
				if err := tx.Write(a.Offset(), make([]byte, m)); err != nil {
					return err
				}
				n -= m
			}
		}
		return nil
	}
	for i := range 3 {
		err := d.Update(large)
		if err == nil {
			if i == 0 {
				t.Fatalf("set-up: the first attempt committed beside %s; want it too large with what it releases", waiting())
			}
			mustCheck(t, d)
			return
		}
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("attempt %d: %v", i, err)
		}
		t.Logf("attempt %d: %v (%s)", i, err, waiting())
	}
	t.Fatalf("the transaction is still refused after 3 attempts; %s, covered by a checkpoint", waiting())
}

// TestEmptyCommitEndsParticipants checks that a transaction a component
// joined without changing anything still ends for that component.
func TestEmptyCommitEndsParticipants(t *testing.T) {
	d, _ := createTestDevice(t, smallHeapOptions())
	if err := d.Update(func(tx *Txn) error {
		if _, err := tx.Alloc(4096); err != nil {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer rollbackOnExit(tx)
	// The allocator joins and finds nothing to do.
	d.alloc.join(tx)
	if tx.lines.len() != 0 {
		t.Fatalf("joining wrote %d lines; the test needs an empty transaction", tx.lines.len())
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if d.alloc.tx != nil {
		t.Fatal("the allocator still thinks the committed transaction is open")
	}
}

// writeReadBack writes p in place at off and returns what ReadAt reads
// there right after.
func writeReadBack(t *testing.T, d *Device, p []byte, off int64) []byte {
	t.Helper()
	if _, err := d.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if _, err := d.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestInPlaceWriteVisibleAfterCommit allocates pages that the same
// transaction released from the pending queue (their free-list links are
// part of it), writes each in place as soon as Commit returns, and reads
// it back at once: the links the journal has not yet written, or skips,
// must never show over the owner's bytes.
func TestInPlaceWriteVisibleAfterCommit(t *testing.T) {
	d, _ := createTestDevice(t, smallHeapOptions())
	var held []Addr
	for i := range 400 {
		var a Addr
		if err := d.Update(func(tx *Txn) (err error) { a, err = tx.Alloc(4096); return err }); err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte{byte(i) | 1}, 64)
		if got := writeReadBack(t, d, want, a.Offset()); !bytes.Equal(got, want) {
			t.Fatalf("allocation %d, %v: ReadAt right after the owner's WriteAt returns %x, want %x", i, a, got, want)
		}
		// Free pages in batches and let a checkpoint cover them, so that
		// the next transactions release and reuse them.
		if held = append(held, a); len(held) == 8 {
			freePages(t, d, held)
			held = held[:0]
			coverCommitted(t, d)
		}
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestInPlaceWriteVisibleBesideCopiedLinks: T1 splits a max page, which
// writes a free-list header into a buddy B, and is held at its sync; T2
// takes B off its list, which writes nothing into B, and commits behind
// T1; T3 journals bytes further into B's first line, so that its version
// of the line starts from T1's, still on its way home. Once T2 has
// returned, B's owner writes B's first bytes in place: while T3 is on its
// way home, ReadAt and a transaction's ReadAt must show them, not the
// links T3's version copied from T1's (which never go home: T3 did not
// write them).
func TestInPlaceWriteVisibleBesideCopiedLinks(t *testing.T) {
	store := &buddyCrashGatedStore{Store: simstore.New(crashMaxBytes)}
	d := deviceOn(t, store, crashOptions(t))
	entered, gate := store.arm("sync", 0)
	t1 := make(chan error, 1)
	go func() { t1 <- d.Update(func(tx *Txn) error { _, err := tx.Alloc(4096); return err }) }()
	<-entered
	taken, t2 := make(chan Addr, 1), make(chan error, 1)
	go func() {
		t2 <- d.Update(func(tx *Txn) error {
			b, err := tx.Alloc(4096)
			taken <- b
			return err
		})
	}()
	b := <-taken
	tx3, err := d.Begin() // once T2's Commit has begun
	if err != nil {
		t.Fatal(err)
	}
	defer rollbackOnExit(tx3)
	if p := d.pending.get(b.Offset() >> lineShift); p == nil || p.link == 0 {
		t.Fatalf("set-up: no version of %v's first line with links on its way home", b)
	}
	if err := tx3.Write(b.Offset()+32, []byte("journaled by T3")); err != nil {
		t.Fatal(err)
	}
	close(gate)
	// Once T2 is durable, B's owner may write it. (T2's Update returns
	// later in the invariants build, whose Commit checks the device once
	// durable, waiting for the writer slot tx3 holds.)
	for deadline := time.Now().Add(30 * time.Second); d.durableTxSeq.Load() < d.txSeq; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("T1 and T2 not durable after 30 s")
		}
	}
	entered, gate = store.arm("sync", 0)
	t3 := make(chan error, 1)
	go func() { t3 <- tx3.Commit() }()
	<-entered
	want := bytes.Repeat([]byte{0xaa}, 24)
	got := writeReadBack(t, d, want, b.Offset())
	if !bytes.Equal(got, want) {
		t.Errorf("ReadAt of %v while T3 is on its way home: %x, want the owner's %x", b, got, want)
	}
	tx4, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx4.ReadAt(got, b.Offset()); err != nil {
		t.Fatal(err)
	}
	tx4.Rollback()
	if !bytes.Equal(got, want) {
		t.Errorf("Txn.ReadAt of %v while T3 is on its way home: %x, want the owner's %x", b, got, want)
	}
	close(gate)
	for _, done := range []chan error{t1, t2, t3} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	mustCheck(t, d)
}

// TestCommitDropsDeadLinks checks that a transaction which pushes a page
// on a free list and hands it out again commits none of those links: they
// would lie in the new owner's bytes.
func TestCommitDropsDeadLinks(t *testing.T) {
	d, _ := createTestDevice(t, smallHeapOptions())
	var a Addr
	if err := d.Update(func(tx *Txn) (err error) { a, err = tx.Alloc(4096); return err }); err != nil {
		t.Fatal(err)
	}
	freePages(t, d, []Addr{a})
	coverCommitted(t, d)
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer rollbackOnExit(tx)
	// Joining the allocator releases a (its free is covered) onto a free
	// list; it is then the first page of its size handed out.
	var b Addr
	for b != a {
		if b, err = tx.Alloc(4096); err != nil {
			t.Fatal(err)
		}
	}
	l := tx.lines.line(a.Offset() >> lineShift)
	if l == nil || l.link == 0 {
		t.Fatalf("the transaction wrote no link into %v before handing it out; the test needs one", a)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if l.link != 0 || l.dirty != 0 {
		t.Fatalf("committed links into %v, which the transaction handed out: link mask %#x, dirty %#x", a, l.link, l.dirty)
	}
}

// TestAddrString: a page prints as its offset and size; a word no page
// can have prints as the word, not as a negative offset or size.
func TestAddrString(t *testing.T) {
	for _, c := range []struct {
		a    Addr
		want string
	}{
		{makeAddr(65536, 12), "page 65536+4096"},
		{makeAddr(1<<40, 24), "page 1099511627776+16777216"},
		{^Addr(0), "Addr(0xffffffffffffffff)"},
		{Addr(63), "Addr(0x3f)"},
		{Addr(1<<63 | 12), "Addr(0x800000000000000c)"},
		{0, "Addr(0x0)"},
		{Addr(7), "Addr(0x7)"},
		{makeAddr(65536, 9), "page 65536+512"},
		// Sizes past an int of 32 bits.
		{makeAddr(0, 31), "page 0+2147483648"},
		{makeAddr(1<<40, 40), "page 1099511627776+1099511627776"},
		{makeAddr(1<<62, 62), "page 4611686018427387904+4611686018427387904"},
	} {
		if got := c.a.String(); got != c.want {
			t.Errorf("Addr(%#x).String() = %q, want %q", uint64(c.a), got, c.want)
		}
	}
}

// TestFreeOfImpossibleSizeNamesIt frees addresses whose size field no page
// has: the error names the size as the power of two the address holds,
// even 2^63, which an int64 cannot.
func TestFreeOfImpossibleSizeNamesIt(t *testing.T) {
	d, _ := createTestDevice(t, testOptions())
	g := &d.alloc.g
	for _, c := range []struct {
		a    Addr
		want string
	}{
		{Addr(63), "a page size of 2^63 bytes"},
		{makeAddr(g.heapOff, g.minShift+uint(g.maxOrder)+1), fmt.Sprintf("a page size of 2^%d bytes", g.minShift+uint(g.maxOrder)+1)},
	} {
		err := d.Update(func(tx *Txn) error { return tx.Free(c.a) })
		if !errors.Is(err, ErrInvalidFree) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Free(%#x): %v, want ErrInvalidFree saying %q", uint64(c.a), err, c.want)
		}
	}
}
