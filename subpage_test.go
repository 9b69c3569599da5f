package pagealloc

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

var (
	subpageSeed = flag.Uint64("subpage.seed", 0, "seed for the sub-page allocator's random tests (0: time)")
	subpageOps  = flag.Int("subpage.ops", 100_000, "operations in TestSubpageModel")
)

// subpageOptions make a device of 4 KiB to 64 KiB pages, so slots of 64
// bytes to 1 KiB, with a heap small enough to fill.
func subpageOptions() *Options {
	return &Options{NoSync: true, MaxPageSize: 64 << 10, JournalSize: 256 << 10, MaxSize: 1<<20 + 4<<20, GrowthStep: 1 << 20}
}

// subpageSlots returns the allocated and the pending slots of every class
// as the parents' headers show them, and the allocated pages that are not
// parents, or an error if Check finds anything wrong.
func subpageSlots(d *Device) (allocated, pending, pages map[Addr]bool, err error) {
	allocated, pending, pages = map[Addr]bool{}, map[Addr]bool{}, map[Addr]bool{}
	d.writer.Lock()
	err = d.check(func(a Addr) { pages[a] = true })
	d.writer.Unlock()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("Check: %w", err)
	}
	for a := range pages {
		p := a.Offset()
		if !d.subpageParentAt(nil, p, a.Size()) {
			continue
		}
		delete(pages, a)
		var b [subpageHeaderBytes]byte
		d.readCommittedRange(b[:], p)
		var h subpageHeader
		h.decode(b[:])
		for _, s := range []struct {
			mask uint64
			set  map[Addr]bool
		}{{h.mask &^ 1, allocated}, {h.pend, pending}} {
			for m := s.mask; m != 0; m &= m - 1 {
				s.set[makeAddr(p+int64(bits.TrailingZeros64(m))<<h.slotShift, h.slotShift)] = true
			}
		}
	}
	return allocated, pending, pages, nil
}

// subpageFreeLog remembers which transaction freed each slot, to check
// every slot Alloc returns against invariant 5: a slot freed by a
// transaction that no checkpoint covers is never handed out, nor one freed
// by the transaction still open.
type subpageFreeLog struct {
	d       *Device
	freedBy map[Addr]uint64 // committed frees, by the freeing transaction's sequence
	open    map[Addr]bool   // frees of the open transaction
	reusing map[Addr]bool   // slots of freedBy the open transaction allocated
	reused  int             // slots handed out again after a committed free
}

func newSubpageFreeLog(d *Device) *subpageFreeLog {
	return &subpageFreeLog{d: d, freedBy: map[Addr]uint64{}, open: map[Addr]bool{}, reusing: map[Addr]bool{}}
}

func (l *subpageFreeLog) free(a Addr) { l.open[a] = true }

// alloc checks a slot Alloc just returned.
func (l *subpageFreeLog) alloc(a Addr) error {
	if l.open[a] {
		return fmt.Errorf("Alloc returned %v, freed by the same transaction, which is not even committed", a)
	}
	seq, ok := l.freedBy[a]
	if !ok {
		return nil
	}
	// Read after Alloc returned: a checkpoint the allocator saw counts.
	if covered := l.d.checkpointTxSeq.Load(); seq > covered {
		return fmt.Errorf("Alloc returned %v, freed by transaction %d, which no checkpoint covers (checkpoint covers %d, durable up to %d)",
			a, seq, covered, l.d.durableTxSeq.Load())
	}
	l.reusing[a] = true
	return nil
}

func (l *subpageFreeLog) committed(seq uint64) {
	for a := range l.reusing {
		delete(l.freedBy, a)
		l.reused++
	}
	for a := range l.open {
		l.freedBy[a] = seq
	}
	clear(l.open)
	clear(l.reusing)
}

func (l *subpageFreeLog) rolledBack() {
	clear(l.open)
	clear(l.reusing)
}

// subpageDrain waits for a checkpoint to cover every committed
// transaction, then releases every pending slot of the classes.
func subpageDrain(t testing.TB, d *Device, classes ...*Subpages) {
	t.Helper()
	coverCommitted(t, d)
	err := d.Update(func(tx *Txn) error {
		for _, s := range classes {
			if err := s.release(tx, d.subpages.class(tx, s.index), math.MaxInt, false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSubpageModel runs random Alloc/Free/Commit/Rollback over several
// classes against a model that is the set of live slots, with bad frees
// mixed in and a reopen halfway. After every commit (and rollback) the
// device must pass Check, hold exactly the model's slots allocated, none
// overlapping, and pending slots only among those committed frees left
// free; every slot Alloc returns is checked against invariant 5.
func TestSubpageModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t, "subpage.seed", *subpageSeed), 1))
	d, path := createTestDevice(t, subpageOptions())
	sizes := []int{64, 128, 512, 1024}
	classes := make([]*Subpages, len(sizes))
	open := func() {
		for i, size := range sizes {
			s, err := d.Subpages(size)
			if err != nil {
				t.Fatal(err)
			}
			if classes[i] != nil && classes[i].index != s.index {
				t.Fatalf("class of %d bytes was %d, after reopen %d", size, classes[i].index, s.index)
			}
			classes[i] = s
		}
	}
	open()
	classOf := func(a Addr) *Subpages {
		for _, s := range classes {
			if s.slotShift == uint(a&addrSizeMask) {
				return s
			}
		}
		t.Fatalf("no class for %v", a)
		return nil
	}
	log := newSubpageFreeLog(d)
	live := map[Addr]bool{}
	var liveList []Addr
	ops, commits, rollbacks, noSpace, badFrees, maxPending, reopened := 0, 0, 0, 0, 0, 0, false
	lastSeq := uint64(0)
	for ops < *subpageOps {
		if !reopened && ops >= *subpageOps/2 {
			d = reopen(t, d, path, &Options{NoSync: true})
			log.d = d
			open()
			got, _, _, err := subpageSlots(d)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, live) {
				t.Fatalf("after reopen the device holds %d slots, the model %d", len(got), len(live))
			}
			if d.checkpointTxSeq.Load() < lastSeq {
				t.Fatalf("after reopen transactions up to %d are covered, want at least %d", d.checkpointTxSeq.Load(), lastSeq)
			}
			reopened = true
		}
		tx, err := d.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer rollbackOnExit(tx)
		txLive := maps.Clone(live)
		// Grow for a while, then shrink, so that parents fill, empty and
		// return to the buddy allocator.
		allocPct := 70
		if (ops/20_000)%2 == 1 {
			allocPct = 35
		}
		for n := 1 + rng.IntN(60); n > 0; n-- {
			ops++
			switch r := rng.IntN(100); {
			case r < allocPct:
				s := classes[rng.IntN(len(classes))]
				a, err := s.Alloc(tx)
				if errors.Is(err, ErrNoSpace) {
					noSpace++
					continue
				}
				if err != nil {
					t.Fatalf("op %d: Alloc: %v", ops, err)
				}
				if a.Size() != s.SlotBytes() || a.Offset()%a.Size() != 0 || txLive[a] {
					t.Fatalf("op %d: Alloc returned %v (live: %v)", ops, a, txLive[a])
				}
				if err := log.alloc(a); err != nil {
					t.Fatalf("op %d: %v", ops, err)
				}
				txLive[a] = true
				liveList = append(liveList, a)
			case r < 97:
				if len(liveList) == 0 {
					continue
				}
				i := rng.IntN(len(liveList))
				a := liveList[i]
				if !txLive[a] {
					liveList[i] = liveList[len(liveList)-1]
					liveList = liveList[:len(liveList)-1]
					continue
				}
				if err := classOf(a).Free(tx, a); err != nil {
					t.Fatalf("op %d: Free(%v): %v", ops, a, err)
				}
				delete(txLive, a)
				log.free(a)
			default:
				a, s := subpageBadAddr(rng, classes, liveList, txLive, log.open)
				lines := tx.lines.len()
				if err := s.Free(tx, a); !errors.Is(err, ErrInvalidFree) {
					t.Fatalf("op %d: Free(%v) of a bad slot returned %v, want ErrInvalidFree", ops, a, err)
				}
				if tx.lines.len() != lines {
					t.Fatalf("op %d: the refused Free(%v) wrote to the transaction", ops, a)
				}
				badFrees++
			}
		}
		if rng.IntN(10) == 0 {
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			log.rolledBack()
			rollbacks++
		} else {
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if tx.seq != 0 {
				lastSeq = tx.seq
			}
			log.committed(tx.seq)
			live = txLive
			commits++
		}
		got, pending, pages, err := subpageSlots(d)
		if err != nil {
			t.Fatalf("after %d ops: %v", ops, err)
		}
		if !maps.Equal(got, live) {
			t.Fatalf("after %d ops the device holds %d slots, the model %d", ops, len(got), len(live))
		}
		for a := range pending {
			if _, ok := log.freedBy[a]; !ok {
				t.Fatalf("after %d ops %v is pending, but no committed transaction freed it since it was last handed out", ops, a)
			}
		}
		maxPending = max(maxPending, len(pending))
		if len(pages) != 0 {
			t.Fatalf("after %d ops %d allocated pages are not sub-page parents", ops, len(pages))
		}
		checkNoOverlap(t, got)
	}
	var parents int64
	for _, s := range classes {
		st := s.Stats()
		parents += st.Parents
		if st.SlotsUsed+st.SlotsPending+st.SlotsFree != st.Parents*63 || st.ParentBytes != 64*st.SlotBytes {
			t.Errorf("class %d: %+v", s.SlotBytes(), st)
		}
	}
	t.Logf("%d ops: %d commits, %d rollbacks, %d ErrNoSpace, %d bad frees refused, reopened; %d slots handed out again after a covered free, at most %d pending; %d slots live in %d parents",
		ops, commits, rollbacks, noSpace, badFrees, log.reused, maxPending, len(live), parents)
	if *subpageOps >= 100_000 && (log.reused == 0 || noSpace == 0) {
		t.Errorf("the workload never reused a freed slot (%d) or never filled the heap (%d)", log.reused, noSpace)
	}
}

// subpageBadAddr returns an address that is no allocated slot of the class
// returned with it, as tx sees it (live, and freed the frees of the open
// transaction): a freed slot, a slot of another class, a parent's header,
// a misaligned address or one outside any parent.
func subpageBadAddr(rng *rand.Rand, classes []*Subpages, liveList []Addr, live, freed map[Addr]bool) (Addr, *Subpages) {
	s := classes[rng.IntN(len(classes))]
	if len(liveList) == 0 {
		return makeAddr(1<<20, s.slotShift), s
	}
	a := liveList[rng.IntN(len(liveList))]
	switch rng.IntN(6) {
	case 0: // a freed slot, or a live one of another class
		for _, s := range classes {
			if s.slotShift == uint(a&addrSizeMask) && !live[a] {
				return a, s
			}
		}
		for _, o := range classes {
			if o.slotShift != uint(a&addrSizeMask) {
				return a, o
			}
		}
	case 1: // the header slot of its parent
		for _, o := range classes {
			if o.slotShift == uint(a&addrSizeMask) {
				return makeAddr(a.Offset()&^(o.parentBytes-1), o.slotShift), o
			}
		}
	case 2: // misaligned
		for _, o := range classes {
			// 64-byte slots have no misaligned Addr: every 64 bytes is one.
			if o.slotShift == uint(a&addrSizeMask) && o.slotShift > subpageMinSlotShift {
				return makeAddr(a.Offset()+64, o.slotShift), o
			}
		}
	case 3: // the right offset with another size
		return a&^addrSizeMask | Addr(s.slotShift+1), s
	case 4: // a slot this transaction freed: pending, a double free
		for f := range freed {
			for _, o := range classes {
				if o.slotShift == uint(f&addrSizeMask) {
					return f, o
				}
			}
		}
	}
	return makeAddr(0, s.slotShift), s
}

// TestSubpageNoReuseBeforeCheckpoint follows freed slots: a slot is not
// handed out by its own transaction nor by later ones until a checkpoint
// covers the free, and is the first handed out after; after a reopen the
// slots pending at Close are free again. One slot is freed right after a
// checkpoint covering its allocation, in a parent at the head of the
// partial list, so that Alloc and Free read its header while the newest
// checkpoint is exactly one transaction short of the free: the slot must
// stay pending then, and come back once a later checkpoint covers it.
func TestSubpageNoReuseBeforeCheckpoint(t *testing.T) {
	d, path := createTestDevice(t, subpageOptions())
	s, err := d.Subpages(64)
	if err != nil {
		t.Fatal(err)
	}

	// One checkpoint short. The parent keeps free slots, so it stays at
	// the head of the partial list, where Alloc releases its pending
	// slots in place when a checkpoint covers them.
	s128 := mustSubpages(t, d, 128)
	held := allocSlots(t, d, s128, 3)
	coverCommitted(t, d) // covers the allocation, and nothing after it
	y := held[0]
	if err := d.Update(func(tx *Txn) error { return s128.Free(tx, y) }); err != nil {
		t.Fatal(err)
	}
	yFreedBy := d.txSeq
	if covered := d.checkpointTxSeq.Load(); covered+1 != yFreedBy {
		t.Fatalf("the newest checkpoint covers transaction %d, not just the one before the free (%d): the test cannot tell", covered, yFreedBy)
	}
	if err := d.Update(func(tx *Txn) error {
		a, err := s128.Alloc(tx)
		if err != nil {
			return err
		}
		if covered := d.checkpointTxSeq.Load(); covered >= yFreedBy {
			return fmt.Errorf("a checkpoint covered the free (transaction %d) during the test: it cannot tell", yFreedBy)
		}
		if a == y {
			return fmt.Errorf("Alloc returned %v, freed by transaction %d, while the newest checkpoint covered only %d", y, yFreedBy, yFreedBy-1)
		}
		// A Free into the same parent reads its header too.
		return s128.Free(tx, held[1])
	}); err != nil {
		t.Fatal(err)
	}
	if st := s128.Stats(); st.SlotsPending != 2 || st.SlotsUsed != 2 {
		t.Fatalf("one checkpoint short of the first free: %+v, want 2 slots used and 2 pending", st)
	}
	coverCommitted(t, d)
	if err := d.Update(func(tx *Txn) error {
		a, err := s128.Alloc(tx)
		if err == nil && a != y {
			err = fmt.Errorf("after a checkpoint covered its free, Alloc returned %v, not the released slot %v, the parent's lowest", a, y)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if st := s128.Stats(); st.SlotsPending != 0 || st.SlotsUsed != 3 || st.Parents != 1 {
		t.Fatalf("after a checkpoint covered every free and an Alloc: %+v, want 3 slots used and none pending in 1 parent", st)
	}
	allocN := func(tx *Txn, n int, not Addr) ([]Addr, error) {
		var got []Addr
		for range n {
			a, err := s.Alloc(tx)
			if err != nil {
				return nil, err
			}
			if a == not {
				return nil, fmt.Errorf("Alloc returned the pending slot %v", a)
			}
			got = append(got, a)
		}
		return got, nil
	}
	var first []Addr
	if err := d.Update(func(tx *Txn) (err error) { first, err = allocN(tx, 63, 0); return err }); err != nil {
		t.Fatal(err)
	}
	x := first[10]
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer rollbackOnExit(tx)
	if err := s.Free(tx, x); err != nil {
		t.Fatal(err)
	}
	if _, err := allocN(tx, 70, x); err != nil {
		t.Fatalf("in the freeing transaction: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	freedBy := tx.seq
	if st := s.Stats(); st.SlotsPending != 1 || st.SlotsUsed != 63+70-1 {
		t.Fatalf("after the free: %+v", st)
	}
	if covered := d.checkpointTxSeq.Load(); covered >= freedBy {
		t.Fatalf("a checkpoint already covers transaction %d: the test cannot tell", freedBy)
	}
	if err := d.Update(func(tx *Txn) error { _, err := allocN(tx, 200, x); return err }); err != nil {
		t.Fatalf("before a checkpoint: %v", err)
	}
	if err := d.journal.waitCheckpoint(freedBy); err != nil {
		t.Fatal(err)
	}
	// Now x is handed out before the class takes a new parent.
	reusedBeforeGrowing := func(when string) {
		t.Helper()
		st := s.Stats()
		err := d.Update(func(tx *Txn) error {
			for range st.SlotsFree + 1 {
				a, err := s.Alloc(tx)
				if err != nil || a == x {
					return err
				}
			}
			return fmt.Errorf("%s, %d allocations did not return the released slot %v", when, st.SlotsFree+1, x)
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Stats(); got.Parents != st.Parents || got.SlotsPending != 0 {
			t.Fatalf("%s: %+v, before %+v: the class grew before reusing the slot", when, got, st)
		}
	}
	reusedBeforeGrowing("after the checkpoint")

	// Pending at Close, which waits for a checkpoint and releases it:
	// free after Open.
	if err := d.Update(func(tx *Txn) error { return s.Free(tx, x) }); err != nil {
		t.Fatal(err)
	}
	d = reopen(t, d, path, &Options{NoSync: true})
	if s, err = d.Subpages(64); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.SlotsPending != 0 {
		t.Fatalf("after reopen: %+v, want the slot Close released", st)
	}
	reusedBeforeGrowing("after reopen")
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestSubpageBadInput covers arguments that are never valid: slot sizes
// Subpages refuses; a nil, foreign or finished transaction; and, with
// slots of two classes allocated and one pending, every kind of address
// Free must refuse with ErrInvalidFree: outside the heap, of another slot
// size, misaligned, a parent's header (slot 0), inside a page that is no
// parent, a slot of another class's parent, a free slot, a double free.
// Each refused Free runs in a transaction that then commits, and must
// leave both classes' Stats and the allocator's counters as they were and
// the device passing Check. Classes persist and keep their index.
func TestSubpageBadInput(t *testing.T) {
	d, path := createTestDevice(t, subpageOptions())
	for _, size := range []int{-1, 0, 16, 32, 63, 96, 2048, 1 << 20} {
		if _, err := d.Subpages(size); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Subpages(%d): %v, want ErrInvalidArgument", size, err)
		}
	}
	s, err := d.Subpages(64)
	if err != nil {
		t.Fatal(err)
	}
	s128, err := d.Subpages(128)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Alloc(nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Alloc(nil): %v", err)
	}
	d2, _ := createTestDevice(t, subpageOptions())
	tx2, err := d2.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Alloc(tx2); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Alloc with another device's transaction: %v", err)
	}
	tx2.Rollback()
	if _, err := s.Alloc(tx2); !errors.Is(err, ErrTxDone) {
		t.Errorf("Alloc after Rollback: %v", err)
	}

	// Slots of both classes, one of them pending, and a page that is no
	// parent, so that the frontier lies past the heap's start and the
	// checks after the heap bounds are reached.
	var small, large []Addr
	var page Addr
	if err := d.Update(func(tx *Txn) (err error) {
		for range 3 {
			a, err := s.Alloc(tx)
			if err != nil {
				return err
			}
			b, err := s128.Alloc(tx)
			if err != nil {
				return err
			}
			small, large = append(small, a), append(large, b)
		}
		page, err = tx.Alloc(4096)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	pending := small[2]
	if err := d.Update(func(tx *Txn) error { return s.Free(tx, pending) }); err != nil {
		t.Fatal(err)
	}
	p64 := small[0].Offset() &^ (s.parentBytes - 1)
	p128 := large[0].Offset() &^ (s128.parentBytes - 1)
	for _, a := range small {
		if a.Offset()&^(s.parentBytes-1) != p64 {
			t.Fatalf("the 64-byte slots %v lie in more than one parent", small)
		}
	}
	// Slot 40 of the 64-byte parent: neither allocated nor pending.
	free := makeAddr(p64+40<<6, 6)
	if slices.Contains(small, free) {
		t.Fatalf("%v is allocated: the test cannot tell", free)
	}
	frontier := d.Stats().Frontier
	type counters struct {
		small, large              SubpageStats
		pages, pendingPages, used int64
	}
	snapshot := func() counters {
		st := d.Stats()
		return counters{s.Stats(), s128.Stats(), st.AllocatedPages, st.PendingPages, st.UsedBytes}
	}
	before := snapshot()
	if before.small.SlotsUsed != 2 || before.small.SlotsPending != 1 || before.large.SlotsUsed != 3 {
		t.Fatalf("before the bad frees: %+v", before)
	}
	for _, c := range []struct {
		what string
		s    *Subpages
		a    Addr
	}{
		{"zero", s, 0},
		{"all bits set", s, ^Addr(0)},
		{"far past the file", s, makeAddr(1<<40, 6)},
		{"at the frontier", s, makeAddr(frontier, 6)},
		{"block metadata at the heap's start", s, makeAddr(d.geometry.heapOff, 6)},
		{"a 64-byte slot to the 128-byte class", s128, small[0]},
		{"a 128-byte slot to the 64-byte class", s, large[0]},
		{"a 128-byte slot's second half (misaligned)", s128, makeAddr(large[0].Offset()+64, 7)},
		{"the 64-byte parent's header", s, makeAddr(p64, 6)},
		{"the 128-byte parent's header", s128, makeAddr(p128, 7)},
		{"inside a page that is no parent", s, makeAddr(page.Offset()+64, 6)},
		{"inside the 128-byte class's parent", s, makeAddr(p128+64, 6)},
		{"a free slot", s, free},
		{"a pending slot (double free)", s, pending},
	} {
		var ferr error
		if err := d.Update(func(tx *Txn) error { ferr = c.s.Free(tx, c.a); return nil }); err != nil {
			t.Fatalf("committing after Free of %s: %v", c.what, err)
		}
		if !errors.Is(ferr, ErrInvalidFree) {
			t.Errorf("Free of %s (%v): %v, want ErrInvalidFree", c.what, c.a, ferr)
		}
		if got := snapshot(); got != before {
			t.Errorf("Free of %s (%v) changed the counters:\n got %+v\nwant %+v", c.what, c.a, got, before)
		}
		if err := d.Check(); err != nil {
			t.Fatalf("after Free of %s (%v): Check: %v", c.what, c.a, err)
		}
	}
	// A slot given to the buddy allocator's Free is refused, and the error
	// says which Free takes it.
	var ferr error
	if err := d.Update(func(tx *Txn) error { ferr = tx.Free(small[0]); return nil }); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(ferr, ErrInvalidFree) || !strings.Contains(ferr.Error(), "Subpages.Free") {
		t.Errorf("Txn.Free of slot %v: %v, want ErrInvalidFree naming Subpages.Free", small[0], ferr)
	}
	if got := snapshot(); got != before {
		t.Errorf("Txn.Free of a slot changed the counters:\n got %+v\nwant %+v", got, before)
	}
	// A double free inside one transaction, which then rolls back; it
	// allocates a page first, so that Free sees the transaction's own
	// allocator state.
	errRollback := errors.New("roll back")
	err = d.Update(func(tx *Txn) error {
		if _, err := tx.Alloc(4096); err != nil {
			return err
		}
		if err := s.Free(tx, small[0]); err != nil {
			return err
		}
		if err := s.Free(tx, small[0]); !errors.Is(err, ErrInvalidFree) {
			return fmt.Errorf("second Free of %v in one transaction: %v, want ErrInvalidFree", small[0], err)
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	if got := snapshot(); got != before {
		t.Errorf("a rolled-back transaction changed the counters:\n got %+v\nwant %+v", got, before)
	}

	// Classes are bounded, persist and keep their index.
	lo, hi := d.subpageSlotRange()
	n := 0
	for size := lo; size <= hi; size *= 2 {
		if _, err := d.Subpages(int(size)); err != nil {
			t.Fatal(err)
		}
		n++
	}
	d = reopen(t, d, path, &Options{NoSync: true})
	for i, size := 0, lo; size <= hi; i, size = i+1, size*2 {
		s, err := d.Subpages(int(size))
		if err != nil || s.index != i {
			t.Fatalf("after reopen Subpages(%d) = class %v, %v; want %d", size, s, err, i)
		}
	}
	if d.subpages.count != n {
		t.Fatalf("%d classes after reopen, want %d", d.subpages.count, n)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestSubpagesNeedLargeEnoughMaxPages: below a MaxPageSize of 4 KiB no
// slot size holds 64 slots of at least 64 bytes, and Subpages says so
// rather than offering an empty range of sizes.
func TestSubpagesNeedLargeEnoughMaxPages(t *testing.T) {
	for _, maxPage := range []int64{512, 2048, 4096} {
		d, _ := createTestDevice(t, &Options{NoSync: true, MinPageSize: 512, MaxPageSize: maxPage, MaxSize: 8 << 20})
		_, err := d.Subpages(64)
		if maxPage >= 4096 {
			if err != nil {
				t.Errorf("MaxPageSize %d: Subpages(64): %v", maxPage, err)
			}
			continue
		}
		want := fmt.Sprintf("sub-pages need a MaxPageSize of at least 4096 bytes, the device has %d", maxPage)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("MaxPageSize %d: Subpages(64): %v, want ErrInvalidArgument saying %q", maxPage, err, want)
		}
		if err := d.Check(); err != nil {
			t.Error(err)
		}
	}
}

// TestSubpageClassLimit fills the class table.
func TestSubpageClassLimit(t *testing.T) {
	d, _ := createTestDevice(t, subpageOptions())
	s := &d.subpages
	// Pretend 63 classes exist, so that the table fills at the next two.
	// No API makes so many (there are far fewer slot sizes) and Check
	// calls such a table corrupt: the invariants build stops at its
	// commit, which is what that build can check here.
	fake := func() error {
		return d.Update(func(tx *Txn) error {
			for i := range subpageClassLimit - 1 {
				s.class(tx, i).slotBytes = 1 << 40
			}
			return nil
		})
	}
	if !commitCorrupt(t, d, "sub-page class table", fake) {
		return
	}
	if _, err := d.Subpages(64); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Subpages(128); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("65th class: %v, want ErrNoSpace", err)
	}
}

// TestSubpageProtection checks that callers cannot write a parent's header
// or free a parent as a page, and can write their slots.
func TestSubpageProtection(t *testing.T) {
	d, _ := createTestDevice(t, subpageOptions())
	s, err := d.Subpages(256)
	if err != nil {
		t.Fatal(err)
	}
	var a Addr
	if err := d.Update(func(tx *Txn) (err error) { a, err = s.Alloc(tx); return err }); err != nil {
		t.Fatal(err)
	}
	parent := a.Offset() &^ (s.parentBytes - 1)
	if _, err := d.WriteAt([]byte("slot"), a.Offset()); err != nil {
		t.Fatalf("WriteAt into a slot: %v", err)
	}
	for _, off := range []int64{parent, parent + 8, parent + subpageHeaderBytes - 1} {
		if _, err := d.WriteAt([]byte{1}, off); !errors.Is(err, ErrProtected) {
			t.Errorf("WriteAt at header byte %d: %v, want ErrProtected", off-parent, err)
		}
		err := d.Update(func(tx *Txn) error { return tx.Write(off, []byte{1}) })
		if !errors.Is(err, ErrProtected) {
			t.Errorf("Txn.Write at header byte %d: %v, want ErrProtected", off-parent, err)
		}
	}
	// The parent bits live in block metadata, which no user write reaches.
	w, _ := d.alloc.g.parentBitPos(parent)
	if _, err := d.WriteAt(make([]byte, 8), w); !errors.Is(err, ErrProtected) {
		t.Errorf("WriteAt over the parent bits: %v, want ErrProtected", err)
	}
	err = d.Update(func(tx *Txn) error {
		return tx.Free(makeAddr(parent, uint(bits.TrailingZeros64(uint64(s.parentBytes)))))
	})
	if !errors.Is(err, ErrInvalidFree) {
		t.Errorf("Txn.Free of a parent: %v, want ErrInvalidFree", err)
	}
	if err := d.Update(func(tx *Txn) error { return s.Free(tx, a) }); err != nil {
		t.Fatal(err)
	}
	subpageDrain(t, d, s)
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Parents != 0 || st.SlotsUsed != 0 || st.SlotsPending != 0 {
		t.Fatalf("after freeing the only slot and a checkpoint: %+v", st)
	}
}

// TestSubpageForgedHeader gives a caller's page the exact bytes of a
// parent's header (its class, a full mask, links to real parents): Free of
// a slot inside it must return ErrInvalidFree and change nothing, and the
// page stays the caller's to write and free.
func TestSubpageForgedHeader(t *testing.T) {
	d, _ := createTestDevice(t, subpageOptions())
	s, err := d.Subpages(256)
	if err != nil {
		t.Fatal(err)
	}
	var slots []Addr
	var page Addr
	err = d.Update(func(tx *Txn) error {
		for range 70 { // two parents, both on the lists
			a, err := s.Alloc(tx)
			if err != nil {
				return err
			}
			slots = append(slots, a)
		}
		page, err = tx.Alloc(s.parentBytes)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Update(func(tx *Txn) error { return s.Free(tx, slots[3]) }); err != nil {
		t.Fatal(err)
	}
	real := slots[0].Offset() &^ (s.parentBytes - 1)
	var hb [subpageHeaderBytes]byte
	d.readCommittedRange(hb[:], real)
	var h subpageHeader
	h.decode(hb[:])
	h.mask, h.pend = subpageFullMask, 0
	var forged [subpageHeaderBytes]byte
	h.encodeTo(&forged)
	if _, err := d.WriteAt(forged[:], page.Offset()); err != nil {
		t.Fatalf("writing a parent's header into the caller's own page: %v", err)
	}
	before := make([]byte, d.size.Load())
	copy(before, d.view)
	stats, sub := d.Stats(), s.Stats()
	for _, slot := range []int{1, 5, 63} {
		a := makeAddr(page.Offset()+int64(slot)*s.SlotBytes(), s.slotShift)
		tx, err := d.Begin()
		if err != nil {
			t.Fatal(err)
		}
		err = s.Free(tx, a)
		wrote := tx.lines.len()
		tx.Rollback()
		if !errors.Is(err, ErrInvalidFree) {
			t.Fatalf("Free(%v) inside a caller's page holding a parent's header: %v, want ErrInvalidFree", a, err)
		}
		if wrote != 0 {
			t.Fatalf("the refused Free(%v) wrote %d lines", a, wrote)
		}
		t.Log(err)
	}
	if err := d.Update(func(tx *Txn) error { _, err := s.Alloc(tx); return err }); err != nil {
		t.Fatal(err)
	}
	got, err := d.Slice(page.Offset(), subpageHeaderBytes)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, forged[:]) || !bytes.Equal(before[page.Offset():page.Offset()+page.Size()], d.view[page.Offset():page.Offset()+page.Size()]) {
		t.Fatal("the caller's page changed")
	}
	if st := d.Stats(); st.AllocatedPages != stats.AllocatedPages {
		t.Fatalf("allocated pages %d, before the refused frees %d", st.AllocatedPages, stats.AllocatedPages)
	}
	if st := s.Stats(); st.SlotsUsed != sub.SlotsUsed+1 || st.SlotsPending != sub.SlotsPending {
		t.Fatalf("class after one Alloc: %+v, before the refused frees %+v", st, sub)
	}
	if _, err := d.WriteAt([]byte{1}, page.Offset()+8); err != nil {
		t.Fatalf("the caller's page is not writable any more: %v", err)
	}
	if err := d.Update(func(tx *Txn) error { return tx.Free(page) }); err != nil {
		t.Fatalf("Txn.Free of the caller's page: %v", err)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestSubpageVersion1 opens a device of format version 1, which has no
// parent bits: its pages work, its sub-pages are refused with ErrVersion.
func TestSubpageVersion1(t *testing.T) {
	d, path := createTestDevice(t, subpageOptions())
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for slot := int64(0); slot < 2; slot++ {
		b := make([]byte, superblockBytes)
		if _, err := f.ReadAt(b, slot*superblockSlotBytes); err != nil {
			t.Fatal(err)
		}
		sb, err := decodeSuperblock(b, slot*superblockSlotBytes)
		if err != nil {
			continue // never written
		}
		sb.version = 1
		sb.encode(b)
		if _, err := f.WriteAt(b, slot*superblockSlotBytes); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if d, err = Open(path, &Options{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.geometry.version != 1 || d.alloc.g.parentShift != 0 {
		t.Fatalf("version %d parent shift %d, want a version-1 geometry", d.geometry.version, d.alloc.g.parentShift)
	}
	if _, err := d.Subpages(64); !errors.Is(err, ErrVersion) {
		t.Fatalf("Subpages on a version-1 device: %v, want ErrVersion", err)
	}
	var a Addr
	if err := d.Update(func(tx *Txn) (err error) { a, err = tx.Alloc(4096); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(make([]byte, 64), a.Offset()); err != nil {
		t.Fatal(err)
	}
	if err := d.Update(func(tx *Txn) error { return tx.Free(a) }); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// newCheckedParent makes a device whose class of 128-byte slots has one
// parent, returned, on its partial list and pending queue: two slots
// allocated, one pending. Check passes.
func newCheckedParent(t *testing.T) (*Device, *Subpages, int64) {
	t.Helper()
	d, _ := createTestDevice(t, subpageOptions())
	s := mustSubpages(t, d, 128)
	a := allocSlots(t, d, s, 3)
	if err := d.Update(func(tx *Txn) error { return s.Free(tx, a[1]) }); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	return d, s, a[0].Offset() &^ (s.parentBytes - 1)
}

// TestSubpageCheckFindsDamage breaks sub-page state in ways Check must
// report, in newCheckedParent's device.
func TestSubpageCheckFindsDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(tx *Txn, parent int64, s *Subpages)
	}{
		{"full parent on the list", func(tx *Txn, p int64, s *Subpages) {
			tx.writeU64(p+subpageMaskOff, subpageFullMask&^tx.readU64(p+subpagePendOff), kindMeta)
		}},
		{"empty parent", func(tx *Txn, p int64, s *Subpages) {
			tx.writeU64(p+subpageMaskOff, 1, kindMeta)
			tx.writeU64(p+subpagePendOff, 0, kindMeta)
		}},
		{"slot allocated and pending", func(tx *Txn, p int64, s *Subpages) {
			tx.writeU64(p+subpagePendOff, tx.readU64(p+subpageMaskOff)&^1, kindMeta)
		}},
		{"bad back link", func(tx *Txn, p int64, s *Subpages) { tx.writeU64(p+subpagePrevOff, 4096, kindMeta) }},
		{"used counter", func(tx *Txn, p int64, s *Subpages) { tx.d.subpages.class(tx, s.index).used++ }},
		{"pending counter", func(tx *Txn, p int64, s *Subpages) { tx.d.subpages.class(tx, s.index).pending-- }},
		{"list head lost", func(tx *Txn, p int64, s *Subpages) { tx.d.subpages.class(tx, s.index).head = 0 }},
		{"queue tail lost", func(tx *Txn, p int64, s *Subpages) { tx.d.subpages.class(tx, s.index).pendTail = 0 }},
		{"queue head lost", func(tx *Txn, p int64, s *Subpages) {
			c := tx.d.subpages.class(tx, s.index)
			c.pendHead, c.pendTail = 0, 0
		}},
		{"stamp from the future", func(tx *Txn, p int64, s *Subpages) { tx.writeU64(p+subpagePendSeqOff, 1<<40, kindMeta) }},
		{"bad magic", func(tx *Txn, p int64, s *Subpages) { tx.writeU64(p, 0, kindMeta) }},
		{"parent bit lost", func(tx *Txn, p int64, s *Subpages) { tx.setParentBit(&tx.d.alloc.g, p, false) }},
		{"stray parent bit", func(tx *Txn, p int64, s *Subpages) { tx.setParentBit(&tx.d.alloc.g, p+s.parentBytes, true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, s, parent := newCheckedParent(t)
			damage := func() error { return d.Update(func(tx *Txn) error { tc.damage(tx, parent, s); return nil }) }
			// Check must find it: after the commit, or in the commit
			// itself in the invariants build.
			if commitCorrupt(t, d, "corrupt", damage) {
				t.Log(d.Check())
			}
		})
	}
}

// TestSubpageCheckFindsCopyMismatch changes the copy of the sub-page class
// table that the allocator acts on, and not the table. Acted on, a lost
// queue drops the parent queued now from the queue at the next Free, and
// its pending slot never goes back; a lost list head drops the partial
// parent from the list. Check must name the class's entry.
func TestSubpageCheckFindsCopyMismatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *subpageClass)
	}{
		{"queue ends lost", func(c *subpageClass) { c.pendHead, c.pendTail = 0, 0 }},
		{"list head lost", func(c *subpageClass) { c.head = 0 }},
		{"used counter", func(c *subpageClass) { c.used++ }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, s, _ := newCheckedParent(t)
			held := &d.subpages.last[s.index]
			table := held.stored()
			d.writer.Lock()
			was := *held
			tc.change(held)
			d.writer.Unlock()
			want := fmt.Sprintf("corrupt sub-page class table at offset %d: expected entry %d as the allocator holds it (slot size, list head, parents, slots allocated, queue head and tail, slots pending, stamp) %v, found %v",
				d.geometry.state.off+subpageTableOff+int64(s.index)*subpageClassBytes, s.index, held.stored(), table)
			err := d.Check()
			d.writer.Lock()
			*held = was
			d.writer.Unlock()
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
				t.Fatalf("Check: %v, want ErrCorrupt naming %q", err, want)
			}
		})
	}
}

// TestSubpageStatsOverhead checks the header's share of a parent and that
// Stats follows allocation, freeing and release.
func TestSubpageStatsOverhead(t *testing.T) {
	d, _ := createTestDevice(t, subpageOptions())
	s, err := d.Subpages(64)
	if err != nil {
		t.Fatal(err)
	}
	var slots []Addr
	err = d.Update(func(tx *Txn) error {
		for range 63 * 3 {
			a, err := s.Alloc(tx)
			if err != nil {
				return err
			}
			slots = append(slots, a)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Parents != 3 || st.SlotsUsed != 189 || st.SlotsFree != 0 || st.SlotsPending != 0 {
		t.Fatalf("three full parents: %+v", st)
	}
	if share := float64(st.OverheadBytes) / float64(st.Parents*st.ParentBytes); share > 0.02 {
		t.Fatalf("overhead %.4f of a full parent, want <= 2%%", share)
	}
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
	if st := s.Stats(); st.Parents != 3 || st.SlotsUsed != 0 || st.SlotsPending != 189 || st.SlotsFree != 0 {
		t.Fatalf("after freeing every slot, before a checkpoint: %+v", st)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	subpageDrain(t, d, s)
	if st := s.Stats(); st != (SubpageStats{SlotBytes: 64, ParentBytes: 4096}) {
		t.Fatalf("after freeing every slot and a checkpoint: %+v", st)
	}
	if st := d.Stats(); st.AllocatedPages != 0 || st.PendingPages != 3 {
		t.Fatalf("the buddy allocator after the parents went back: %+v", st)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSubpageAlloc measures an alloc+free pair at the steady state of
// a class holding `live` slots: each op frees a random live slot and
// allocates one, committing every 1,000 ops, without fsync.
func BenchmarkSubpageAlloc(b *testing.B) {
	for _, live := range []int{1e3, 1e6} {
		b.Run(fmt.Sprintf("live=1e%d", int(math.Log10(float64(live)))), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			d, _ := createCounted(b, &Options{NoSync: true})
			s, err := d.Subpages(64)
			if err != nil {
				b.Fatal(err)
			}
			slots := make([]Addr, live)
			for i := 0; i < live; i += 1000 {
				err := d.Update(func(tx *Txn) error {
					for j := i; j < min(i+1000, live); j++ {
						if slots[j], err = s.Alloc(tx); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			inBatches(b, d, b.N, func(tx *Txn) (err error) {
				j := rng.IntN(live)
				if err := s.Free(tx, slots[j]); err != nil {
					return err
				}
				slots[j], err = s.Alloc(tx)
				return err
			})
		})
	}
}

// linearSubpages is a sub-page allocator in the style of mappedpages':
// in memory only, a slice of parents each with a mask, and Alloc scans
// the parents from the start for a free bit.
type linearSubpages struct {
	parents []linearParent
	free    []int // indexes of emptied parents, reused before growing
}

type linearParent struct {
	used bool
	mask uint64
}

func (l *linearSubpages) alloc() (int, int) {
	for i := range l.parents {
		p := &l.parents[i]
		if p.used && p.mask != subpageFullMask {
			bit := bits.TrailingZeros64(^p.mask)
			p.mask |= 1 << bit
			return i, bit
		}
	}
	if n := len(l.free); n > 0 {
		i := l.free[n-1]
		l.free = l.free[:n-1]
		l.parents[i] = linearParent{used: true, mask: 1}
		return i, 0
	}
	l.parents = append(l.parents, linearParent{used: true, mask: 1})
	return len(l.parents) - 1, 0
}

func (l *linearSubpages) release(i, bit int) {
	p := &l.parents[i]
	p.mask &^= 1 << bit
	if p.mask == 0 {
		p.used = false
		l.free = append(l.free, i)
	}
}

// BenchmarkSubpageLinearScan runs BenchmarkSubpageAlloc's workload on
// linearSubpages, to show what the partial list saves.
func BenchmarkSubpageLinearScan(b *testing.B) {
	for _, live := range []int{1e3, 1e6} {
		b.Run(fmt.Sprintf("live=1e%d", int(math.Log10(float64(live)))), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			var l linearSubpages
			type slot struct{ parent, bit int }
			slots := make([]slot, live)
			// Filled directly: filling through alloc would scan
			// quadratically before the timer starts.
			for i := range slots {
				if i%64 == 0 {
					l.parents = append(l.parents, linearParent{used: true})
				}
				p := len(l.parents) - 1
				l.parents[p].mask |= 1 << (i % 64)
				slots[i] = slot{p, i % 64}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j := rng.IntN(live)
				l.release(slots[j].parent, slots[j].bit)
				p, bit := l.alloc()
				slots[j] = slot{p, bit}
			}
			b.StopTimer()
			runtime.KeepAlive(slices.Clip(slots))
		})
	}
}

// TestSubpagesCreatedConcurrently asks for four slot sizes from eight
// goroutines each at once, and again after a reopen: every call for a
// size must name the same class, the table must hold exactly the four
// classes, and a slot allocated through one handle of a class must free
// through another.
func TestSubpagesCreatedConcurrently(t *testing.T) {
	d, path := createTestDevice(t, subpageOptions())
	sizes := []int{64, 128, 256, 512}
	const callers = 8
	classes := func(d *Device) map[int]int {
		t.Helper()
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			got   = make([][]*Subpages, len(sizes))
			errs  = make(chan error, len(sizes)*callers)
		)
		for i, size := range sizes {
			got[i] = make([]*Subpages, callers)
			for j := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					s, err := d.Subpages(size)
					if err != nil {
						errs <- err
						return
					}
					got[i][j] = s
				}()
			}
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("Subpages: %v", err)
		}
		index := map[int]int{}
		for i, size := range sizes {
			for _, s := range got[i] {
				if s.Stats().SlotBytes != int64(size) || s.index != got[i][0].index {
					t.Fatalf("Subpages(%d) gave classes %d (slots of %d bytes) and %d", size, got[i][0].index, s.Stats().SlotBytes, s.index)
				}
			}
			index[size] = got[i][0].index
		}
		if d.subpages.count != len(sizes) {
			t.Fatalf("the class table holds %d classes, want %d", d.subpages.count, len(sizes))
		}
		return index
	}
	first := classes(d)
	s1, err := d.Subpages(256)
	if err != nil {
		t.Fatal(err)
	}
	var a Addr
	if err := d.Update(func(tx *Txn) error { a, err = s1.Alloc(tx); return err }); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, d)
	d = reopen(t, d, path, subpageOptions())
	if again := classes(d); !maps.Equal(again, first) {
		t.Fatalf("classes after the reopen %v, before %v", again, first)
	}
	s2, err := d.Subpages(256)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Update(func(tx *Txn) error { return s2.Free(tx, a) }); err != nil {
		t.Fatalf("Free through another handle of the class, after a reopen: %v", err)
	}
	mustCheck(t, d)
}
