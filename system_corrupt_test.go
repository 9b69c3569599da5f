package pagealloc

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	systemCorruptSeed   = flag.Uint64("systemcorrupt.seed", 0, "seed for TestSystemRandomCorruption (0: time)")
	systemCorruptRounds = flag.Int("systemcorrupt.rounds", 200, "corrupted devices in TestSystemRandomCorruption")
)

// typedError reports whether err matches one of the package's errors.
func typedError(err error) bool {
	for _, e := range []error{ErrClosed, ErrCorrupt, ErrVersion, ErrReadOnly, ErrTxDone, ErrExists, ErrNoSpace,
		ErrTooLarge, ErrInvalidFree, ErrInvalidArgument, ErrOutOfRange, ErrProtected, ErrFailed,
		ErrNotFound, ErrInUse, ErrNotReserved} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// keepAll is a log owner whose entries all stay live.
type keepAll struct{}

func (keepAll) IsLive(int64, []byte) bool { return true }

// TestSystemRandomCorruption damages every kind of structure at once: a
// device with pages, sub-pages in two classes, a fixed log and a carved
// one, each with entries, gets one to four random words written into its
// allocator state and sub-page class table, its log tables, the heap's
// block metadata, the first bytes of pages and parents, and the logs'
// rings. Open may refuse it; if it opens, every call a storage engine
// makes (Check, Inspect, WalkHeap, reading and appending to each log, GC,
// allocating and freeing pages and slots, Close, Open again) must return
// nil or one of the package's errors, and never panic or hang. The rounds
// count the devices Check found damaged and those where a call met the
// damage, and the test fails if either count is zero.
func TestSystemRandomCorruption(t *testing.T) {
	if invariantsEnabled {
		t.Skip("the invariants build panics at the first commit on a corrupt device")
	}
	seed := testSeed(t, "systemcorrupt.seed", *systemCorruptSeed)
	rng := rand.New(rand.NewPCG(seed, 0))
	opts := &Options{NoSync: true, MaxPageSize: 64 << 10, JournalSize: 256 << 10, MaxSize: 1<<20 + 16<<20,
		LogRegions: []LogRegion{{"fixed", 64 << 10}}}
	d, path := createTestDevice(t, opts)
	pages := allocSized(t, d, 64, func() int64 { return 4 << 10 << rng.IntN(5) })
	freePages(t, d, pages[:24])
	small, large := mustSubpages(t, d, 64), mustSubpages(t, d, 512)
	slots := slices.Concat(allocSlots(t, d, small, 200), allocSlots(t, d, large, 40))
	freeSlots(t, d, small, slots[:60])
	carved := mustCreateLog(t, d, "carved", 64<<10)
	fixed := mustLog(t, d, "fixed")
	var entries []int64
	for _, l := range []*Log{fixed, carved} {
		for i := range 40 {
			r, err := l.Append(100 + 37*i)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Write(r, make([]byte, 100+37*i)); err != nil {
				t.Fatal(err)
			}
			if err := l.Commit(r); err != nil {
				t.Fatal(err)
			}
			entries = append(entries, r.Offset())
		}
	}
	g, geo := d.alloc.g, d.geometry
	frontier := d.alloc.last.frontier
	var parents []int64
	for _, a := range slots {
		if p := parentOf(a); !slices.Contains(parents, p) {
			parents = append(parents, p)
		}
	}
	fixedRing, carvedRing := fixed.ring, carved.ring
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	clean := readFile(t, path)
	// Where the damage goes: ranges of the file and how likely each is.
	targets := []struct {
		off, size int64
	}{
		{geo.state.off, geo.state.size},
		{geo.logs.off, geo.logs.size},
		{g.heapOff, g.metaPad}, // the first block's metadata
		{fixedRing.off, fixedRing.size},
		{carvedRing.off, carvedRing.size},
	}
	value := func() uint64 {
		switch rng.IntN(6) {
		case 0:
			return uint64(pages[rng.IntN(len(pages))].Offset())
		case 1:
			return uint64(parents[rng.IntN(len(parents))])
		case 2:
			return uint64(g.heapOff + rng.Int64N(frontier-g.heapOff)&^63)
		case 3:
			return 0
		case 4:
			return rng.Uint64() & 0xff
		}
		return rng.Uint64()
	}
	opened, found, met := 0, 0, 0 // opened; Check found damage; a call met it
	for round := range *systemCorruptRounds {
		b := slices.Clone(clean)
		var what []string
		for range 1 + rng.IntN(4) {
			var at int64
			switch k := rng.IntN(len(targets) + 2); {
			case k < len(targets):
				tg := targets[k]
				at = tg.off + rng.Int64N(tg.size/8)*8
			case k == len(targets): // a page's first bytes
				at = pages[rng.IntN(len(pages))].Offset() + 8*rng.Int64N(4)
			default: // a parent's header
				at = parents[rng.IntN(len(parents))] + 8*rng.Int64N(8)
			}
			if at+8 > int64(len(b)) {
				continue
			}
			v := value()
			binary.LittleEndian.PutUint64(b[at:], v)
			what = append(what, fmt.Sprintf("%d=%#x", at, v))
		}
		p := filepath.Join(t.TempDir(), "copy")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		ok := t.Run(fmt.Sprint(round), func(t *testing.T) {
			metHere := false
			typed := func(what string, err error) {
				t.Helper()
				if err != nil && !typedError(err) {
					t.Fatalf("%s: untyped error %v", what, err)
				}
				if errors.Is(err, ErrCorrupt) && !strings.HasPrefix(what, "Check") {
					metHere = true
				}
			}
			defer func() {
				if metHere {
					met++
				}
			}()
			d, err := Open(p, &Options{NoSync: true})
			if err != nil {
				typed("Open", err)
				return
			}
			opened++
			if err := d.Check(); err != nil {
				typed("Check", err)
				found++
			}
			_, err = d.Inspect()
			typed("Inspect", err)
			typed("WalkHeap", d.WalkHeap(func(HeapExtent) bool { return true }))
			for _, name := range []string{"fixed", "carved"} {
				l, err := d.Log(name)
				if err != nil {
					typed("Log", err)
					continue
				}
				for _, err := range l.Entries(0) {
					if err != nil {
						typed("Entries", err)
						break
					}
				}
				for _, off := range entries {
					_, err := l.Read(off)
					typed("Read", err)
				}
				typed("SetOwner", l.SetOwner(keepAll{}, &LogOptions{GCThresholdBytes: -1}))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				typed("GC", l.GC(ctx))
				cancel()
				for range 5 {
					r, err := l.Append(300)
					if err != nil {
						typed("Append", err)
						break
					}
					typed("Write", l.Write(r, make([]byte, 300)))
					typed("Commit", l.Commit(r))
				}
			}
			for _, size := range []int{64, 512} {
				s, err := d.Subpages(size)
				if err != nil {
					typed("Subpages", err)
					continue
				}
				var got []Addr
				typed("slots", d.Update(func(tx *Txn) error {
					for range 70 {
						a, err := s.Alloc(tx)
						if err != nil {
							typed("Subpages.Alloc", err)
							break
						}
						got = append(got, a)
					}
					for _, a := range got[:len(got)/2] {
						typed("Subpages.Free", s.Free(tx, a))
					}
					return nil
				}))
			}
			typed("pages", d.Update(func(tx *Txn) error {
				for range 40 {
					a, err := tx.Alloc(4 << 10 << rng.IntN(5))
					if err != nil {
						typed("Alloc", err)
						continue
					}
					if rng.IntN(2) == 0 {
						typed("Free", tx.Free(a))
					}
				}
				for _, a := range pages[24:30] {
					typed("Free", tx.Free(a))
				}
				return nil
			}))
			typed("Check", d.Check())
			typed("Close", d.Close())
			d, err = Open(p, &Options{NoSync: true})
			if err != nil {
				typed("Open again", err)
				return
			}
			typed("Check again", d.Check())
			typed("Close again", d.Close())
		})
		if !ok {
			t.Fatalf("round %d: damage %v", round, what)
		}
	}
	t.Logf("%d rounds: %d devices opened, Check found damage in %d, a call met it in %d", *systemCorruptRounds, opened, found, met)
	if found == 0 || met == 0 {
		t.Errorf("the damage never reached the device's structures")
	}
}
