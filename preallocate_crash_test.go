package pagealloc

// Crash tests for Options.Preallocate. The buddy allocator crash test's
// workload (buddy_crash_test.go) runs on an fsStore, a simulated store that
// both loses power and reserves blocks on a filesystem of limited room.
// Between transactions the room changes, as other files fill the
// filesystem or leave it, so that the file's growth and the reservation of
// punched max pages are refused now and then in the middle of the work.
//
// During the run:
//
//   - a refused Alloc returns ErrNoSpace and changes nothing but what an
//     Alloc may do on its way to the refusal (the frontier's growth within
//     the room, pending pages released): no page taken, the file's size
//     the device's;
//   - no Commit fails: with the whole file reserved, a full filesystem
//     never fails a write;
//   - after every transaction the file holds blocks under every byte the
//     device may write, all of it but the punched part of free max pages,
//     and is as large as the device says;
//   - after every commit the device checks clean and holds the model's
//     pages.
//
// Then the trace is crashed at every sync point and at random points, and
// every image must satisfy what the buddy allocator crash test asks (Open
// succeeds, Check passes, the pages are those of a prefix of the commits
// holding every one whose Commit returned, the data certainly written is
// there), opened with Preallocate on a filesystem with room to spare: Open
// reserves the whole file. A share of the images is first opened with room
// for part of the file, or a little more than all of it: Open either
// succeeds, reserving the whole file, or returns ErrNoSpace, and the image
// then opens with the room.
//
// The seed is printed; -prealloccrash.seed=N reruns the same workloads,
// -prealloccrash.rounds=R runs R workloads per geometry, round r from the
// seed plus r.

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
	"github.com/pagealloc/pagealloc/internal/storage"
)

var (
	preallocCrashSeed   = flag.Uint64("prealloccrash.seed", 0, "seed for TestPreallocateCrash (0: time)")
	preallocCrashRounds = flag.Int("prealloccrash.rounds", 1, "workloads per geometry in TestPreallocateCrash, round r from the seed plus r")
	preallocCrashPoints = flag.Int("prealloccrash.points", 0, "random crash points per workload in TestPreallocateCrash (0: 400, fewer under -race, -tags invariants or -short)")
)

const (
	// Transactions per workload, and crash points: the race detector and
	// -short make do with fewer, since every sync point is crashed anyway.
	preallocCrashTxns             = 250
	preallocCrashTxnsSlow         = 150
	preallocCrashRandomPoints     = 400
	preallocCrashRandomPointsSlow = 100
	preallocCrashDeepPoints       = 12
	preallocCrashDeepPointsSlow   = 4
)

// preallocCrashRun is one geometry and the length of its transactions.
type preallocCrashRun struct {
	name   string
	opts   Options
	opsMax int // operations per transaction, at most
}

func preallocCrashRuns() []preallocCrashRun {
	return []preallocCrashRun{
		{
			// 4 KiB to 64 KiB pages, a heap of up to 4 MiB that the
			// filesystem's room, not MaxSize, keeps from growing.
			name: "growth",
			opts: Options{
				MinPageSize: 4 << 10, MaxPageSize: 64 << 10,
				JournalSize: 128 << 10, MaxSize: 256<<10 + 4<<20, GrowthStep: 256 << 10,
				Preallocate: true,
			},
			opsMax: 10,
		},
		{
			// The same with free max pages punched: their room goes back
			// to the filesystem, and taking one reserves it again.
			name: "punched",
			opts: Options{
				MinPageSize: 4 << 10, MaxPageSize: 64 << 10,
				JournalSize: 128 << 10, MaxSize: 256<<10 + 4<<20, GrowthStep: 128 << 10,
				Preallocate: true, PunchHoles: true,
			},
			opsMax: 10,
		},
		{
			// 512-byte to 16 KiB pages: several min pages to a
			// filesystem block, a punch of three blocks of each free max
			// page, and a MaxSize the heap reaches too.
			name: "512-16K punched",
			opts: Options{
				MinPageSize: 512, MaxPageSize: 16 << 10,
				JournalSize: 64 << 10, MaxSize: 2 << 20, GrowthStep: 64 << 10,
				Preallocate: true, PunchHoles: true,
			},
			opsMax: 8,
		},
	}
}

// preallocCrashTotals are the counts of the rounds of one geometry.
type preallocCrashTotals struct {
	txns, allocs, noSpace           int
	growthRefused, pageRefused      int // reservations refused
	punched                         int // holes punched
	opened, openRefused, violations int
}

// TestPreallocateCrash runs random allocator workloads with Preallocate on
// a filesystem whose room runs out and comes back, and crashes each at
// every sync point and at random points; see the top of this file.
func TestPreallocateCrash(t *testing.T) {
	for _, run := range preallocCrashRuns() {
		t.Run(run.name, func(t *testing.T) {
			seed := testSeed(t, "prealloccrash.seed", *preallocCrashSeed)
			var tot preallocCrashTotals
			rounds := max(1, *preallocCrashRounds)
			for round := range rounds {
				if rounds > 1 {
					t.Logf("round %d: seed %d", round, seed+uint64(round))
				}
				testPreallocateCrash(t, run, seed+uint64(round), &tot)
				if t.Failed() {
					t.Fatalf("round %d failed; rerun it with -prealloccrash.seed=%d", round, seed+uint64(round))
				}
			}
			t.Logf("%d rounds: %d transactions, %d allocs, %d ErrNoSpace; reservations refused: %d growths, %d punched pages; %d pages punched; %d crash images opened, %d Opens refused for room first; violations: %d",
				rounds, tot.txns, tot.allocs, tot.noSpace, tot.growthRefused, tot.pageRefused, tot.punched, tot.opened, tot.openRefused, tot.violations)
			// What the room's changes are for.
			if tot.growthRefused == 0 {
				t.Errorf("no growth of the file was refused: the workloads never ran out of room")
			}
			if run.opts.PunchHoles && (tot.punched == 0 || tot.pageRefused == 0) {
				t.Errorf("%d pages punched, %d reservations of a punched page refused: the workloads never reached a punched page on a full filesystem", tot.punched, tot.pageRefused)
			}
			if tot.openRefused == 0 {
				t.Errorf("no crash image was refused for room at Open")
			}
		})
	}
}

// preallocCrashStore is the filesystem of a workload: an fsStore that
// counts the reservations it refuses, telling the file's growth from a
// punched page, and the holes it punches.
type preallocCrashStore struct {
	*fsStore
	// frontier returns the allocator's frontier as the open transaction
	// sees it: the file grows past it, punched pages lie below it.
	frontier                          func() int64
	growthRefused, pageRefused, holes atomic.Int64
}

var _ storage.Reserver = (*preallocCrashStore)(nil)

func (s *preallocCrashStore) Reserve(off, length int64) error {
	err := s.fsStore.Reserve(off, length)
	if errors.Is(err, storage.ErrNoSpace) {
		if off < s.frontier() {
			s.pageRefused.Add(1)
		} else {
			s.growthRefused.Add(1)
		}
	}
	return err
}

func (s *preallocCrashStore) PunchHole(off, length int64) error {
	s.holes.Add(1)
	return s.fsStore.PunchHole(off, length)
}

// preallocImage is a crash image on a filesystem of its own: Close closes
// the image too.
type preallocImage struct{ *fsStore }

func (s preallocImage) Close() error { return s.Store.Close() }

// preallocCrash checks one workload.
type preallocCrash struct {
	opts    Options // with defaults
	fs      *preallocCrashStore
	d       *Device
	rng     *rand.Rand // the room's changes
	seed    uint64
	refused int // Opens of crash images refused for room
	// roomGoneFor is the last punched page at the head of the list of
	// max pages for which changeRoom took the room away, roomGoneTxns
	// after how many transactions so far; pageRefused counts the
	// reservations of punched pages refused before the last of them.
	roomGoneFor  int64
	roomGoneTxns int
	pageRefused  int64
}

func testPreallocateCrash(t *testing.T, run preallocCrashRun, seed uint64, tot *preallocCrashTotals) {
	txns, randomPoints, deepPoints := preallocCrashTxns, preallocCrashRandomPoints, preallocCrashDeepPoints
	if buddyCrashSlow() {
		txns, randomPoints, deepPoints = preallocCrashTxnsSlow, preallocCrashRandomPointsSlow, preallocCrashDeepPointsSlow
	}
	if *preallocCrashPoints > 0 {
		randomPoints = *preallocCrashPoints
	}
	o, err := run.opts.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	o.NoSync = false // the syncs are what the simulated store keeps

	x := &preallocCrash{opts: o, seed: seed, rng: rand.New(rand.NewPCG(seed, 2))}
	x.fs = &preallocCrashStore{fsStore: newFSStore(t, o.MaxSize, o.MaxSize)}
	store := x.fs.Store
	d, err := createOn(x.fs, o)
	if err != nil {
		t.Fatal(err)
	}
	x.d = d
	x.fs.frontier = func() int64 { return d.alloc.work.frontier }
	m := &buddyCrashModel{createdAt: store.Ops()}
	w := newBuddyCrashWorkload(d, store, m)
	w.alloc = x.alloc
	w.afterTxn = x.afterTxn
	start := time.Now()
	if err := w.committer(rand.New(rand.NewPCG(seed, 100)), txns, run.opsMax, nil, true); err != nil {
		d.Close()
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("workload: %d committed transactions, %d rolled back; %d allocs (%d reusing freed space, %d ErrNoSpace), %d frees; reservations refused: %d growths, %d punched pages; %d holes punched; %d ops, %d syncs; %v",
		len(m.txns), w.rollbacks, w.allocs, w.reused, w.noSpace, w.frees, x.fs.growthRefused.Load(), x.fs.pageRefused.Load(), x.fs.holes.Load(),
		store.Ops(), len(store.SyncPoints()), time.Since(start).Round(time.Millisecond))

	c := &buddyCrashChecker{t: t, seed: seed, open: x.open}
	c.checkPoints(store, m, randomPoints, deepPoints)
	t.Logf("crash images opened first with too little room: %d refused with ErrNoSpace", x.refused)

	tot.txns += len(m.txns)
	tot.allocs += w.allocs
	tot.noSpace += w.noSpace
	tot.growthRefused += int(x.fs.growthRefused.Load())
	tot.pageRefused += int(x.fs.pageRefused.Load())
	tot.punched += int(x.fs.holes.Load())
	tot.opened += c.opened
	tot.openRefused += x.refused
	tot.violations += c.violations
}

// changeRoom gives the filesystem new room now and then: none, less than
// a max page, a few max pages, or a few growth steps. When a punched page
// comes to head the list of max pages, the room is gone for a few
// transactions, so that taking it is refused. Until the heap's frontier has passed the metadata at the
// start of its block (a MiB with 512-byte pages) and a max page more, the
// room is left as it is.
func (x *preallocCrash) changeRoom() {
	a := x.d.alloc
	a.lastMu.Lock()
	head, frontier := a.last.heads[a.g.maxOrder], a.last.frontier
	a.lastMu.Unlock()
	if frontier < a.g.heapOff+a.g.metaPad+a.g.maxPageBytes() {
		return
	}
	if x.punched(head) {
		if head != x.roomGoneFor {
			x.roomGoneFor, x.roomGoneTxns = head, 0
		}
		// For a few transactions, or until a reservation of a punched
		// page is refused.
		if x.roomGoneTxns < 4 && x.fs.pageRefused.Load() == x.pageRefused {
			x.roomGoneTxns++
			x.fs.setFree(0)
			return
		}
	}
	x.pageRefused = x.fs.pageRefused.Load()
	if x.rng.IntN(4) != 0 {
		return
	}
	page := x.opts.MaxPageSize
	switch x.rng.IntN(4) {
	case 0:
		x.fs.setFree(0)
	case 1:
		x.fs.setFree(x.rng.Int64N(page))
	case 2:
		x.fs.setFree(x.rng.Int64N(4 * page))
	default:
		x.fs.setFree(x.rng.Int64N(3 * x.d.alloc.growStep))
	}
}

// punched reports whether off is a max page whose storage was punched.
func (x *preallocCrash) punched(off int64) bool {
	if off == 0 || x.opts.MaxPageSize <= 4096 {
		return false
	}
	x.fs.mu.Lock()
	defer x.fs.mu.Unlock()
	return !x.fs.blocks[(off+4096)/fsBlock]
}

// alloc is tx.Alloc, checking what a refused one leaves: no page taken,
// the file as large as the device says, and, unless the frontier moved or
// pending pages were released on the way, the allocator state as it was.
// (The committer takes any error but ErrNoSpace as a failure, and Check
// after the commit checks the counters.)
func (x *preallocCrash) alloc(tx *Txn, size int64) (Addr, error) {
	d := x.d
	st := d.alloc.join(tx)
	before := *st
	a, err := tx.Alloc(size)
	if !errors.Is(err, ErrNoSpace) {
		return a, err
	}
	after := *st
	fileSize, serr := x.fs.Size()
	switch {
	case serr != nil:
		return 0, serr
	case after.allocPages != before.allocPages || after.allocBytes != before.allocBytes:
		return 0, fmt.Errorf("Alloc(%d) refused (%v) with %d pages of %d bytes allocated, %d of %d before it", size, err, after.allocPages, after.allocBytes, before.allocPages, before.allocBytes)
	case fileSize != d.size.Load() || fileSize < after.frontier:
		return 0, fmt.Errorf("Alloc(%d) refused (%v) leaving a file of %d bytes, the device's %d, the frontier %d", size, err, fileSize, d.size.Load(), after.frontier)
	case after.frontier == before.frontier && after.pendPages == before.pendPages && after != before:
		return 0, fmt.Errorf("Alloc(%d) refused (%v) changed the allocator state:\n%+v\n%+v", size, err, before, after)
	}
	return a, err
}

// afterTxn checks the file between transactions, then changes the room.
func (x *preallocCrash) afterTxn() error {
	if err := x.wantReserved(); err != nil {
		return err
	}
	x.changeRoom()
	return nil
}

// wantReserved checks that the file is as large as the device says and
// holds blocks under every byte of it the device may write: all but the
// punched part (past the first 4 KiB) of free max pages.
func (x *preallocCrash) wantReserved() error {
	d, fs := x.d, x.fs
	d.writer.Lock()
	defer d.writer.Unlock()
	fileSize, err := fs.Size()
	if err != nil {
		return err
	}
	if size := d.size.Load(); fileSize != size {
		return fmt.Errorf("a file of %d bytes, the device says %d", fileSize, size)
	}
	g := &d.alloc.g
	frontier := d.alloc.last.frontier
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for b := int64(0); b*fsBlock < fileSize; b++ {
		if fs.blocks[b] {
			continue
		}
		off := b * fsBlock
		if x.opts.PunchHoles && off >= g.heapOff && off < frontier {
			page := off &^ (g.maxPageBytes() - 1)
			if off >= page+4096 && d.committedPageState(g, g.maxOrder, page) == stateFree {
				continue
			}
		}
		return fmt.Errorf("a hole at [%d, +%d) of the %d-byte file (heap from %d, frontier %d), where the device may write", off, fsBlock, fileSize, g.heapOff, frontier)
	}
	return nil
}

// open opens a crash image with the workload's options, on a filesystem
// with room to spare. One image in four is first opened with room for
// part of the file or a little more than all of it, which must succeed
// or return ErrNoSpace. An Open that succeeds must have reserved the
// whole file.
func (x *preallocCrash) open(img *simstore.Store, stream uint64) (*Device, error) {
	rng := rand.New(rand.NewPCG(x.seed, stream|1<<62))
	opts := &Options{Preallocate: true, PunchHoles: x.opts.PunchHoles}
	size, err := img.Size()
	if err != nil {
		return nil, err
	}
	if rng.IntN(4) == 0 {
		room := rng.Int64N(size + 4*x.opts.MaxPageSize)
		fs := &fsStore{Store: img, room: room / fsBlock, blocks: map[int64]bool{}}
		d, err := openOn(preallocImage{fs}, opts)
		if err == nil {
			return d, wantWholeFileHeld(d, fs)
		}
		if !errors.Is(err, ErrNoSpace) {
			return nil, fmt.Errorf("with room for %d of the file's %d bytes: %w, want ErrNoSpace or success", room, size, err)
		}
		x.refused++
	}
	fs := &fsStore{Store: img, room: x.opts.MaxSize / fsBlock, blocks: map[int64]bool{}}
	d, err := openOn(preallocImage{fs}, opts)
	if err != nil {
		return nil, err
	}
	return d, wantWholeFileHeld(d, fs)
}

// wantWholeFileHeld checks that fs holds blocks under the whole file of a
// device just opened with Preallocate; it closes d if not.
func wantWholeFileHeld(d *Device, fs *fsStore) error {
	size, err := fs.Size()
	if err == nil && fs.held() < size {
		err = fmt.Errorf("a file of %d bytes holds %d bytes of blocks after Open with Preallocate", size, fs.held())
	}
	if err != nil {
		d.Close()
		return err
	}
	return nil
}
