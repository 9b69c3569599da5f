package pagealloc

import (
	"errors"
	"fmt"
	"testing"
)

// When pending slots become free matters as much as that they do not too
// early: these tests hold the sub-page allocator to giving covered slots
// and empty parents back, without a checkpoint per commit.

// mustSubpages returns the class of slotBytes slots, creating it if need be.
func mustSubpages(t testing.TB, d *Device, slotBytes int) *Subpages {
	t.Helper()
	s, err := d.Subpages(slotBytes)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// allocSlots allocates n slots of s in one transaction.
func allocSlots(t testing.TB, d *Device, s *Subpages, n int) []Addr {
	t.Helper()
	var got []Addr
	if err := d.Update(func(tx *Txn) error {
		for range n {
			a, err := s.Alloc(tx)
			if err != nil {
				return err
			}
			got = append(got, a)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// freeSlots frees slots of s in one transaction.
func freeSlots(t testing.TB, d *Device, s *Subpages, slots []Addr) {
	t.Helper()
	if err := d.Update(func(tx *Txn) error {
		for _, a := range slots {
			if err := s.Free(tx, a); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// fillHeap allocates pages of size bytes, one per transaction, until the
// device is full, and returns them.
func fillHeap(t *testing.T, d *Device, size int64) []Addr {
	t.Helper()
	var pages []Addr
	for {
		got, err := tryAllocPages(d, 1, size)
		if errors.Is(err, ErrNoSpace) {
			return pages
		}
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, got...)
	}
}

// TestSubpageAllocReusesEmptiedParent: on a full device, a class whose one
// parent has every slot pending, covered by a checkpoint, must hand one
// out. Releasing them empties the parent; handed back to the buddy
// allocator, it would be pending there for the rest of the transaction,
// and Alloc would find no page for a new one.
func TestSubpageAllocReusesEmptiedParent(t *testing.T) {
	d, _ := createTestDevice(t, subpageOptions())
	s := mustSubpages(t, d, 64)
	slots := allocSlots(t, d, s, subpageSlotsPerParent-1)
	fillHeap(t, d, 4096)
	freeSlots(t, d, s, slots)
	coverCommitted(t, d)
	allocSlots(t, d, s, 1)
	allocSlots(t, d, s, 1)
	if st := s.Stats(); st.Parents != 1 || st.SlotsUsed != 2 {
		t.Fatalf("after two Allocs: %+v, want the one parent with 2 slots used", st)
	}
	mustCheck(t, d)
}

// checkpointSeq returns the sequence number of d's newest superblock,
// which each checkpoint bumps, read under the journal's writing lock: a
// checkpoint may be under way in the journal's goroutine.
func checkpointSeq(d *Device) uint64 {
	d.journal.writing.Lock()
	defer d.journal.writing.Unlock()
	return d.journal.sb.seq
}

// TestSubpageCoveredPendingNoCheckpoints: pending slots a checkpoint
// already covers cannot be freed by another one; they must not make every
// commit ask for one.
func TestSubpageCoveredPendingNoCheckpoints(t *testing.T) {
	d, path := createTestDevice(t, subpageOptions())
	idle := mustSubpages(t, d, 1024)
	freeSlots(t, d, idle, allocSlots(t, d, idle, 5*(subpageSlotsPerParent-1)))
	d = reopen(t, d, path, &Options{NoSync: true}) // everything covered
	small := mustSubpages(t, d, 64)
	before := checkpointSeq(d)
	for range 30 {
		allocSlots(t, d, small, 1)
	}
	if n := checkpointSeq(d) - before; n > 3 {
		t.Fatalf("30 one-slot commits made %d checkpoints, with an idle class's covered slots pending", n)
	}
}

// TestSubpageCoveredPendingSameClassNoCheckpoints: covered pending slots
// must not make every commit ask for a checkpoint in their own class
// either. 70 parents' worth of its slots (over 4 MiB) wait pending, covered
// by a checkpoint, too few against its allocated slots for a Free to walk
// its queue; then each of 30 commits frees one more slot of the class.
// Only those 30 are slots a checkpoint would free: the covered ones must
// not count with them, though the class's newest stamp is uncovered, or
// every commit asks for a checkpoint (two syncs and a superblock write).
func TestSubpageCoveredPendingSameClassNoCheckpoints(t *testing.T) {
	o := &Options{NoSync: true, MaxPageSize: 64 << 10, JournalSize: 8 << 20, MaxSize: 96 << 20, GrowthStep: 4 << 20}
	d, _ := createTestDevice(t, o)
	s := mustSubpages(t, d, 1024)
	const usable = subpageSlotsPerParent - 1
	var kept, freed []Addr
	for range 64 {
		kept = append(kept, allocSlots(t, d, s, 10*usable)...) // 640 parents
	}
	for range 7 {
		freed = append(freed, allocSlots(t, d, s, 10*usable)...) // 70 more
	}
	for i := 0; i < len(freed); i += 1000 {
		freeSlots(t, d, s, freed[i:min(len(freed), i+1000)])
	}
	coverCommitted(t, d)
	st := s.Stats()
	if st.SlotsPending*st.SlotBytes < subpageCheckpointBytes || (st.SlotsPending+30)*subpagePendingShare > st.SlotsUsed-30 {
		t.Fatalf("set-up: %+v; want at least %d bytes pending, too few for a Free to walk the queue", st, subpageCheckpointBytes)
	}
	before := checkpointSeq(d)
	for i := range 30 {
		freeSlots(t, d, s, kept[i*usable:i*usable+1]) // one slot, in a different full parent each time
	}
	n := checkpointSeq(d) - before
	if got := s.Stats(); got.SlotsPending < st.SlotsPending {
		t.Fatalf("the covered slots were released (%+v before, %+v after): the test no longer holds them pending", st, got)
	}
	if n > 3 {
		t.Fatalf("30 one-slot Free commits made %d checkpoints, with %d covered slots of the class pending", n, st.SlotsPending)
	}
}

// TestSubpageIdleClassDrains frees every slot of a class and leaves it
// idle: frees in another class must give its empty parents back to the
// buddy allocator, a few at a time.
func TestSubpageIdleClassDrains(t *testing.T) {
	d, _ := createTestDevice(t, subpageOptions())
	idle := mustSubpages(t, d, 1024)
	busy := mustSubpages(t, d, 64)
	const parents = 20
	freeSlots(t, d, idle, allocSlots(t, d, idle, parents*(subpageSlotsPerParent-1)))
	coverCommitted(t, d)
	for i := 0; i < 4*parents && idle.Stats().Parents > 0; i++ {
		freeSlots(t, d, busy, allocSlots(t, d, busy, 1))
	}
	if st := idle.Stats(); st.Parents != 0 || st.SlotsPending != 0 {
		t.Fatalf("after %d frees in another class, the idle class holds %+v; want nothing", 4*parents, st)
	}
	mustCheck(t, d)
}

// TestSubpageReleasePastStaleEntries: parents released in place when
// touched stay queued; dequeuing them must not use up the release budget
// while covered slots wait behind them, or the class grows instead of
// reusing.
func TestSubpageReleasePastStaleEntries(t *testing.T) {
	d, _ := createTestDevice(t, subpageOptions())
	s := mustSubpages(t, d, 64)
	var par [10][]Addr
	all := allocSlots(t, d, s, 10*(subpageSlotsPerParent-1))
	for i := range par {
		par[i] = all[i*(subpageSlotsPerParent-1) : (i+1)*(subpageSlotsPerParent-1)]
	}
	free := func(from, to, k int) {
		t.Helper()
		var slots []Addr
		for i := from; i < to; i++ {
			slots = append(slots, par[i][k])
		}
		freeSlots(t, d, s, slots)
	}
	free(0, 5, 0)
	coverCommitted(t, d)
	free(0, 5, 1) // queued parents 0-4, their first frees released in place later
	free(5, 10, 0)
	coverCommitted(t, d)
	allocSlots(t, d, s, 10) // touches parents 0-4: releases them in place
	st := s.Stats()
	allocSlots(t, d, s, 1)
	if got := s.Stats(); got.Parents > st.Parents {
		t.Fatalf("the class grew from %d to %d parents with %d covered pending slots", st.Parents, got.Parents, st.SlotsPending)
	}
}

// TestCloseDrainsIdleClass frees every slot of a class on a full device
// and closes it: Close gives the empty parents back, so that after a
// reopen their space serves plain pages though the class is never used
// again.
func TestCloseDrainsIdleClass(t *testing.T) {
	d, path := createTestDevice(t, subpageOptions())
	idle := mustSubpages(t, d, 1024)
	const parents = 20
	slots := allocSlots(t, d, idle, parents*(subpageSlotsPerParent-1))
	fillHeap(t, d, 64<<10)
	freeSlots(t, d, idle, slots)
	d = reopen(t, d, path, &Options{NoSync: true})
	idle = mustSubpages(t, d, 1024)
	if st := idle.Stats(); st.Parents != 0 || st.SlotsPending != 0 {
		t.Fatalf("after Close and Open the idle class holds %+v; want nothing", st)
	}
	if _, err := tryAllocPages(d, parents, 64<<10); err != nil {
		t.Fatalf("allocating the %d parents' space as plain pages: %v", parents, err)
	}
	mustCheck(t, d)
}

// TestCloseDrainsManyClassesSmallJournal: with a 64 KiB journal, nine
// classes holding 64 parents each, all but emptied, must drain at Close
// in as many transactions as the journal needs, not fail it.
func TestCloseDrainsManyClassesSmallJournal(t *testing.T) {
	opts := &Options{NoSync: true, MaxPageSize: 1 << 20, JournalSize: minJournalBytes, MaxSize: 1 << 30, GrowthStep: 1 << 20}
	d, path := createTestDevice(t, opts)
	var sizes []int
	var classes []*Subpages
	var last [][]Addr
	for size := 64; size <= 16<<10; size *= 2 {
		sizes = append(sizes, size)
		s := mustSubpages(t, d, size)
		classes = append(classes, s)
		// 64 parents; all but one slot of each freed and released.
		var keep, rest []Addr
		for range 8 {
			for i, a := range allocSlots(t, d, s, 8*(subpageSlotsPerParent-1)) {
				if i%(subpageSlotsPerParent-1) == 0 {
					keep = append(keep, a)
				} else {
					rest = append(rest, a)
				}
			}
		}
		for i := 0; i < len(rest); i += 200 {
			freeSlots(t, d, s, rest[i:min(len(rest), i+200)])
		}
		last = append(last, keep)
	}
	subpageDrain(t, d, classes...)
	for i, s := range classes { // every parent pending at Close
		freeSlots(t, d, s, last[i])
	}
	d = reopen(t, d, path, &Options{NoSync: true})
	for _, size := range sizes {
		s := mustSubpages(t, d, size)
		if st := s.Stats(); st.Parents != 0 {
			t.Errorf("class of %d-byte slots after Close and Open: %+v; want no parent", size, st)
		}
	}
	mustCheck(t, d)
}

// TestSubpageIdleClassDrainsUnderPageTraffic empties a class on a full
// device and leaves it idle while only whole pages are allocated and
// freed: those transactions must give its empty parents back, so that
// their space serves pages again, as the pages a checkpoint covers do.
func TestSubpageIdleClassDrainsUnderPageTraffic(t *testing.T) {
	d, _ := createTestDevice(t, subpageOptions())
	idle := mustSubpages(t, d, 1024)
	const parents = 10
	slots := allocSlots(t, d, idle, parents*(subpageSlotsPerParent-1))
	pages := fillHeap(t, d, 4096)
	freeSlots(t, d, idle, slots)
	coverCommitted(t, d)
	for i := 0; i < 4*parents && idle.Stats().Parents > 0; i++ {
		if err := d.Update(func(tx *Txn) error { return tx.Free(pages[i]) }); err != nil {
			t.Fatal(err)
		}
		coverCommitted(t, d)
	}
	if st := idle.Stats(); st.Parents != 0 || st.SlotsPending != 0 {
		t.Fatalf("after %d page frees, the idle class holds %+v; want nothing", 4*parents, st)
	}
	if _, err := tryAllocPages(d, parents, 64<<10); err != nil {
		t.Fatalf("allocating the %d parents' space as pages: %v", parents, err)
	}
	mustCheck(t, d)
}

// TestSubpageFreeReleasesLeaveRoom: the parents a Free releases on its own
// account (those earlier transactions emptied, once a checkpoint covers
// them) must not make a transaction of frees too large to commit. Here 420
// emptied parents wait, covered, and one transaction frees a slot in each
// of 300 full parents: its own writes take two thirds of a record, and
// releasing every parent, as four per Free could, would take more than
// the rest. The frees must commit, and release some parents still.
func TestSubpageFreeReleasesLeaveRoom(t *testing.T) {
	o := subpageOptions()
	o.MaxSize = 64 << 20
	o.JournalSize = 64 << 10
	d, _ := createTestDevice(t, o)
	s := mustSubpages(t, d, 64)
	const emptied, full = 420, 300
	parents := map[int64][]Addr{}
	var order []int64
	const usable = subpageSlotsPerParent - 1 // slot 0 holds the header
	for range (emptied+full)*usable/1000 + 1 {
		for _, a := range allocSlots(t, d, s, 1000) {
			p := a.Offset() &^ (s.parentBytes - 1)
			if parents[p] == nil {
				order = append(order, p)
			}
			parents[p] = append(parents[p], a)
		}
	}
	if len(order) < emptied+full {
		t.Fatalf("%d parents, want %d", len(order), emptied+full)
	}
	// In one transaction, so that none of these parents is released
	// before the one under test.
	var slots []Addr
	for _, p := range order[:emptied] {
		slots = append(slots, parents[p]...)
	}
	freeSlots(t, d, s, slots)
	coverCommitted(t, d)
	slots = slots[:0]
	for _, p := range order[emptied : emptied+full] {
		if len(parents[p]) != usable {
			t.Fatalf("parent %d holds %d slots, want it full", p, len(parents[p]))
		}
		slots = append(slots, parents[p][0])
	}
	before := s.Stats()
	freeSlots(t, d, s, slots)
	after := s.Stats()
	if after.Parents >= before.Parents {
		t.Errorf("the frees released no parent: %d before, %d after", before.Parents, after.Parents)
	}
	mustCheck(t, d)
}

// TestSubpageAllocFullDeviceReachesCoveredSlots: on a full device, Alloc
// must reach the covered pending slots of its class however many parents
// queued before them were released in place already (touched by Allocs
// that then filled them), rather than fail with ErrNoSpace for as long as
// nothing else walks the queue.
func TestSubpageAllocFullDeviceReachesCoveredSlots(t *testing.T) {
	d, _ := createTestDevice(t, subpageOptions())
	s := mustSubpages(t, d, 64)
	const stale = 120
	const usable = subpageSlotsPerParent - 1
	all := allocSlots(t, d, s, (stale+1)*usable)
	fillHeap(t, d, 4096)
	nth := func(k int) []Addr {
		var slots []Addr
		for i := range stale {
			slots = append(slots, all[i*usable+k])
		}
		return slots
	}
	// Each of the first parents gets a free slot and, queued, a covered
	// pending one; two Allocs release it in place and fill it again.
	freeSlots(t, d, s, nth(0))
	subpageDrain(t, d, s)
	freeSlots(t, d, s, nth(1))
	coverCommitted(t, d)
	allocSlots(t, d, s, 2*stale)
	// The last parent's one slot, pending behind them.
	freeSlots(t, d, s, all[stale*usable:stale*usable+1])
	coverCommitted(t, d)
	if err := d.Update(func(tx *Txn) error {
		_, err := s.Alloc(tx)
		return err
	}); err != nil {
		t.Fatalf("Alloc on a full device with a covered pending slot: %v (%+v)", err, s.Stats())
	}
	mustCheck(t, d)
}

// TestSubpageTooLargeOnlyForReleases: a transaction that fits a record on
// its own, but not beside the emptied parents its Frees release into it
// (covered by a checkpoint, up to a quarter of a record), is refused with
// ErrTooLarge; tried again, it must commit, as the next Begin releases
// those parents in transactions of their own. Before, each attempt
// released the same parents, was rolled back with them, and was refused
// again for as long as they waited.
func TestSubpageTooLargeOnlyForReleases(t *testing.T) {
	opts := smallHeapOptions()
	d, _ := createTestDevice(t, opts)
	s := mustSubpages(t, d, 64)
	keep := allocPages(t, d, 2, 64<<10)
	const usable = subpageSlotsPerParent - 1 // slot 0 holds the header
	const emptied = 400
	slots := allocSlots(t, d, s, (emptied+1)*usable)
	// In one transaction, so that none of the parents is released
	// before the one under test.
	freeSlots(t, d, s, slots[usable:])
	coverCommitted(t, d)
	if p := d.Stats().PendingPages; p != 0 {
		t.Fatalf("set-up: %d pages pending; want none, so that only the sub-page releases count", p)
	}
	mine := slots[:usable] // one parent's: its frees cost the transaction one header
	refusedOnceThenCommits(t, d, opts, keep, func(tx *Txn) error {
		for _, a := range mine {
			if err := s.Free(tx, a); err != nil {
				return err
			}
		}
		return nil
	}, func() string { return fmt.Sprintf("%+v", s.Stats()) })
}
