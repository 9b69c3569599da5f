package pagealloc

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"slices"
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

// subpageLive returns the allocated slots of every class as the parents'
// masks show them, and the allocated pages that are not parents; it fails
// the test if Check finds anything wrong.
func subpageLive(t testing.TB, d *Device) (slots, pages map[Addr]bool) {
	t.Helper()
	slots, pages = map[Addr]bool{}, map[Addr]bool{}
	d.writer.Lock()
	err := d.check(func(a Addr) { pages[a] = true })
	d.writer.Unlock()
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	for a := range pages {
		p := a.Offset()
		if !d.subpageParentAt(nil, p, a.Size()) {
			continue
		}
		delete(pages, a)
		var b [subpageHeaderBytes]byte
		d.readCommittedRange(b[:], p)
		h := decodeSubpageHeader(b[:])
		for m := h.mask &^ 1; m != 0; m &= m - 1 {
			slots[makeAddr(p+int64(bits.TrailingZeros64(m))<<h.slotShift, h.slotShift)] = true
		}
	}
	return slots, pages
}

// TestSubpageModel runs random Alloc/Free/Commit/Rollback over several
// classes against a model that is the set of live slots, with bad frees
// mixed in and a reopen halfway; after every commit the device must pass
// Check and hold exactly the model's slots, none overlapping.
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
	live := map[Addr]bool{}
	var liveList []Addr
	ops, commits, rollbacks, noSpace, badFrees, reopened := 0, 0, 0, 0, 0, false
	for ops < *subpageOps {
		if !reopened && ops >= *subpageOps/2 {
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			var err error
			if d, err = Open(path, &Options{NoSync: true}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			open()
			if got, _ := subpageLive(t, d); !maps.Equal(got, live) {
				t.Fatalf("after reopen the device holds %d slots, the model %d", len(got), len(live))
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
			default:
				a, s := subpageBadAddr(rng, classes, liveList, txLive)
				if err := s.Free(tx, a); !errors.Is(err, ErrInvalidFree) {
					t.Fatalf("op %d: Free(%v) of a bad slot returned %v, want ErrInvalidFree", ops, a, err)
				}
				badFrees++
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
		got, pages := subpageLive(t, d)
		if !maps.Equal(got, live) {
			t.Fatalf("after %d ops the device holds %d slots, the model %d", ops, len(got), len(live))
		}
		if len(pages) != 0 {
			t.Fatalf("after %d ops %d allocated pages are not sub-page parents", ops, len(pages))
		}
		checkNoOverlap(t, got)
	}
	var parents int64
	for _, s := range classes {
		st := s.Stats()
		parents += st.Parents
		if st.SlotsUsed+st.SlotsFree != st.Parents*63 || st.ParentBytes != 64*st.SlotBytes {
			t.Errorf("class %d: %+v", s.SlotBytes(), st)
		}
	}
	t.Logf("%d ops: %d commits, %d rollbacks, %d ErrNoSpace, %d bad frees refused, reopened; %d slots live in %d parents",
		ops, commits, rollbacks, noSpace, badFrees, len(live), parents)
	if noSpace == 0 && *subpageOps >= 100_000 {
		t.Log("note: the heap never filled")
	}
}

// subpageBadAddr returns an address that is no allocated slot of the class
// returned with it, as tx sees it (live): a freed slot, a slot of another
// class, a parent's header, a misaligned address or one outside any parent.
func subpageBadAddr(rng *rand.Rand, classes []*Subpages, liveList []Addr, live map[Addr]bool) (Addr, *Subpages) {
	s := classes[rng.IntN(len(classes))]
	if len(liveList) == 0 {
		return makeAddr(1<<20, s.slotShift), s
	}
	a := liveList[rng.IntN(len(liveList))]
	switch rng.IntN(5) {
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
	}
	return makeAddr(0, s.slotShift), s
}

// TestSubpageBadInput covers arguments that are never valid.
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
	for _, a := range []Addr{0, ^Addr(0), makeAddr(1<<40, 6), makeAddr(d.geometry.heapOff, 6)} {
		err := d.Update(func(tx *Txn) error { return s.Free(tx, a) })
		if !errors.Is(err, ErrInvalidFree) {
			t.Errorf("Free(%v): %v, want ErrInvalidFree", a, err)
		}
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
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
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
	err = d.Update(func(tx *Txn) error {
		return tx.Free(makeAddr(parent, uint(bits.TrailingZeros64(uint64(s.parentBytes)))))
	})
	if !errors.Is(err, ErrInvalidFree) {
		t.Errorf("Txn.Free of a parent: %v, want ErrInvalidFree", err)
	}
	// A page that holds the magic but not its own offset stays the caller's.
	var p Addr
	if err := d.Update(func(tx *Txn) (err error) { p, err = tx.Alloc(s.parentBytes); return err }); err != nil {
		t.Fatal(err)
	}
	fake := subpageHeader{magic: subpageMagic, slotShift: 8, self: p.Offset() + 1}
	b := fake.encode()
	for range 2 {
		if _, err := d.WriteAt(b[:], p.Offset()); err != nil {
			t.Fatalf("WriteAt of a look-alike header: %v", err)
		}
	}
	if err := d.Update(func(tx *Txn) error { return s.Free(tx, a) }); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Parents != 0 || st.SlotsUsed != 0 {
		t.Fatalf("after freeing the only slot: %+v", st)
	}
}

// TestSubpageCheckFindsDamage breaks sub-page state in ways Check must
// report.
func TestSubpageCheckFindsDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(tx *Txn, parent int64, s *Subpages)
	}{
		{"full parent on the list", func(tx *Txn, p int64, s *Subpages) { tx.writeU64(p+subpageMaskOff, subpageFullMask, kindMeta) }},
		{"empty parent", func(tx *Txn, p int64, s *Subpages) { tx.writeU64(p+subpageMaskOff, 1, kindMeta) }},
		{"bad back link", func(tx *Txn, p int64, s *Subpages) { tx.writeU64(p+subpagePrevOff, 4096, kindMeta) }},
		{"used counter", func(tx *Txn, p int64, s *Subpages) { tx.d.subpages.class(tx, s.index).used++ }},
		{"list head lost", func(tx *Txn, p int64, s *Subpages) { tx.d.subpages.class(tx, s.index).head = 0 }},
		{"bad magic", func(tx *Txn, p int64, s *Subpages) { tx.writeU64(p, 0, kindMeta) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := createTestDevice(t, subpageOptions())
			s, err := d.Subpages(128)
			if err != nil {
				t.Fatal(err)
			}
			var a Addr
			if err := d.Update(func(tx *Txn) (err error) { a, err = s.Alloc(tx); return err }); err != nil {
				t.Fatal(err)
			}
			if err := d.Check(); err != nil {
				t.Fatal(err)
			}
			parent := a.Offset() &^ (s.parentBytes - 1)
			damage := func() error { return d.Update(func(tx *Txn) error { tc.damage(tx, parent, s); return nil }) }
			// Check must find it: after the commit, or in the commit
			// itself in the invariants build.
			if commitCorrupt(t, d, "corrupt", damage) {
				t.Log(d.Check())
			}
		})
	}
}

// TestSubpageStatsOverhead checks the header's share of a parent and that
// Stats follows allocation.
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
	if st.Parents != 3 || st.SlotsUsed != 189 || st.SlotsFree != 0 {
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
	if st := s.Stats(); st != (SubpageStats{SlotBytes: 64, ParentBytes: 4096}) {
		t.Fatalf("after freeing every slot: %+v", st)
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
			inBatches(b, d, func(tx *Txn) (err error) {
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
