package pagealloc

// Crash tests for the buddy allocator on the simulated store
// (internal/simstore). One random allocator workload runs on a store that
// traces every write and sync; afterwards the test asks the store, for many
// points n of that trace, what a power loss just after the n-th operation
// would have left on disk, opens that image and checks it against a model:
//
//   - Open succeeds and Check finds every invariant intact (one owner per
//     byte, free lists, pending queue, counters);
//   - the allocated pages are exactly those of the model after txns[:k] for
//     some k that counts at least every transaction whose Commit had
//     returned by operation n, and no transaction whose Commit had not been
//     called: every committed allocation is there, nothing is leaked;
//   - every allocated page whose owner's data write had certainly reached
//     the disk (a journaled Txn.Write in txns[:k], or a WriteAt followed by
//     a Commit or Sync that returned before n) still holds that data, or a
//     later write of the same owner: free-list links and the journaled
//     writes of a page's earlier owners are never replayed over it.
//
// During the run, every page Alloc returns is checked against the frees
// of transactions that no checkpoint covers yet: such a page must not be
// handed to anyone (invariant 5), and the crash images check the rest.
//
// Crash points: just before and just after every sync, plus random ones
// (-buddycrash.points). A sample of the recovered images is crashed again
// inside its own recovery, then given a few more transactions (frees of
// pages allocated before the crash, reuse after a checkpoint) and crashed
// at every sync of those.
//
// The seed is printed; -buddycrash.seed=N reruns the same workload and the
// same crash choices. Natural checkpoints run on the journal's goroutine
// beside the workload, and the "concurrent" run has several committers, so
// the trace may differ slightly from run to run of one seed.

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

var (
	buddyCrashSeed   = flag.Uint64("buddycrash.seed", 0, "seed for the buddy allocator crash test (0: time)")
	buddyCrashPoints = flag.Int("buddycrash.points", 0, "random crash points per buddy allocator crash run (0: 2000, fewer under -race, -tags invariants or -short)")
	buddyCrashTxns   = flag.Int("buddycrash.txns", 0, "transactions per committer in the buddy allocator crash test (0: the default per run)")
)

const (
	// buddyCrashRandomPoints is the default number of random crash points
	// per run; a sampled run (see crashSampled) and -short make do with
	// fewer.
	buddyCrashRandomPoints     = 2000
	buddyCrashRandomPointsSlow = 400
	// buddyCrashDeepPoints recovered images are crashed again during their
	// recovery and after a few more transactions, each at every sync point
	// of its own trace and at buddyCrashDeepRandom random points.
	buddyCrashDeepPoints     = 40
	buddyCrashDeepPointsSlow = 10
	buddyCrashDeepRandom     = 6

	// buddyCrashMaxViolations stops a run that has said enough.
	buddyCrashMaxViolations = 10

	// A page's slot: its own Addr and a generation number, written by its
	// owner, in the first bytes of the page, where free-list links also go.
	buddyCrashSlotBytes = 16
)

// buddyCrashRun is one workload: a geometry, how many committers and how
// many transactions each.
type buddyCrashRun struct {
	name       string
	opts       Options
	committers int
	txns       int           // per committer
	opsMax     int           // operations per transaction, at most
	syncDelay  time.Duration // a sync's latency, so that commits group
	// golden, if set, names the golden image of format version 1
	// (testdata/golden) the run opens instead of creating a device, with
	// the MaxSize, GrowthStep and PunchHoles of opts; the geometry is
	// the image's.
	golden string
}

func buddyCrashRuns() []buddyCrashRun {
	return []buddyCrashRun{
		{
			// 4 KiB to 64 KiB pages, a heap of 4 MiB of which the block
			// metadata takes two max pages: it fills, so allocation waits
			// for checkpoints and reuses freed pages. Free max pages are
			// punched.
			name: "4K-64K",
			opts: Options{
				MinPageSize: 4 << 10, MaxPageSize: 64 << 10,
				JournalSize: 128 << 10, MaxSize: 256<<10 + 4<<20, GrowthStep: 256 << 10,
				PunchHoles: true,
			},
			committers: 1, txns: 400, opsMax: 10,
		},
		{
			// 512-byte to 8 KiB pages: eight min pages to a 4 KiB page of
			// the file, a page header in every 512-byte sector, and a
			// block metadata of about 1 MiB before the first page.
			name: "512-8K",
			opts: Options{
				MinPageSize: 512, MaxPageSize: 8 << 10,
				JournalSize: 64 << 10, MaxSize: 144<<10 + 992<<10 + 512<<10, GrowthStep: 64 << 10,
			},
			committers: 1, txns: 400, opsMax: 8,
		},
		{
			// Several committers whose commits share journal records;
			// free max pages are punched.
			name: "concurrent",
			opts: Options{
				MinPageSize: 4 << 10, MaxPageSize: 32 << 10,
				JournalSize: 128 << 10, MaxSize: 256<<10 + 2<<20, GrowthStep: 1 << 20,
				PunchHoles: true,
			},
			committers: 3, txns: 130, opsMax: 6, syncDelay: 50 * time.Microsecond,
		},
		{
			// The device of format version 1 that the code of that
			// version wrote: block metadata without sub-page parent
			// bits, no carved log table, and the pages, the sub-page
			// parents and the pending queue that code left, which the
			// workload may free. Its geometry is 4K-64K's with a
			// 256 KiB journal; a MaxSize of 4 MiB past its 448 KiB of
			// headers (it records 64 MiB) lets the heap fill. Free
			// max pages are punched.
			name:   "version1",
			golden: "v1-closed",
			opts: Options{
				MinPageSize: 4 << 10, MaxPageSize: 64 << 10,
				JournalSize: 256 << 10, MaxSize: 448<<10 + 4<<20, GrowthStep: 256 << 10,
				PunchHoles: true,
			},
			committers: 1, txns: 400, opsMax: 10,
		},
	}
}

// TestBuddyCrash runs random allocator workloads on a simulated store and
// crashes each at every sync point and at random points; see the top of
// this file for what every crash image must satisfy.
func TestBuddyCrash(t *testing.T) {
	for _, run := range buddyCrashRuns() {
		t.Run(run.name, func(t *testing.T) { testBuddyCrash(t, run) })
	}
}

// buddyCrashSlow reports whether this run should crash fewer random points:
// in a sampled run (see crashSampled) or under -short.
func buddyCrashSlow() bool { return crashSampled() || testing.Short() }

// crashSampled reports whether the crash tests crash at a sample of the
// sync points rather than at every one: under the race detector and in
// the invariants build, both several times slower. Those builds are there
// for the concurrency of the workloads and for the check after every
// commit: the workloads run in full, and only the crash images are fewer.
// The plain build crashes at every sync point.
func crashSampled() bool { return raceEnabled() || invariantsEnabled }

// crashSampleOneIn is the share of the sync points a sampled run crashes
// at: each is kept with probability 1/crashSampleOneIn.
const crashSampleOneIn = 4

// crashSampledPoints returns n, a crash test's default count of random
// points, or in a sampled run a quarter of it.
func crashSampledPoints(n int) int {
	if crashSampled() {
		return n / crashSampleOneIn
	}
	return n
}

// crashSyncSample returns the sync points a crash test crashes at: all of
// syncs, or in a sampled run a seeded random choice of them (random, not
// every n-th, so that a workload's periodic pattern of syncs cannot hide
// one kind of sync from the sample). It logs what a sampled run left out.
func crashSyncSample(t *testing.T, syncs []int, seed uint64) []int {
	t.Helper()
	if !crashSampled() {
		return syncs
	}
	rng := rand.New(rand.NewPCG(seed, 0x5a3b1e))
	var kept []int
	for _, s := range syncs {
		if rng.IntN(crashSampleOneIn) == 0 {
			kept = append(kept, s)
		}
	}
	t.Logf("crashing at %d of the %d sync points, a random sample (the race detector or the invariants build; the plain build crashes at all)", len(kept), len(syncs))
	return kept
}

func testBuddyCrash(t *testing.T, run buddyCrashRun) {
	seed := testSeed(t, "buddycrash.seed", *buddyCrashSeed)
	randomPoints, deepPoints := buddyCrashRandomPoints, buddyCrashDeepPoints
	if buddyCrashSlow() {
		randomPoints, deepPoints = buddyCrashRandomPointsSlow, buddyCrashDeepPointsSlow
	}
	if *buddyCrashPoints > 0 {
		randomPoints = *buddyCrashPoints
	}
	if *buddyCrashTxns > 0 {
		run.txns = *buddyCrashTxns
	}
	o, err := run.opts.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	o.NoSync = false // the syncs are what the simulated store keeps

	var store *simstore.Store
	var d *Device
	if run.golden == "" {
		store = simstore.New(o.MaxSize)
		d, err = createOn(crashStore{Store: store, syncDelay: run.syncDelay}, o)
	} else {
		store = buddyCrashGoldenStore(t, run.golden)
		d, err = openOn(crashStore{Store: store, syncDelay: run.syncDelay}, &o)
	}
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	m := &buddyCrashModel{createdAt: store.Ops()}
	// The pages the device opened with start the model, owned by
	// committer 0. Their bytes are not the workload's slots: with no
	// write of theirs, the checker compares none of them until the
	// workload writes one.
	var base []*buddyCrashOwner
	if run.golden != "" {
		got, err := buddyCrashAllocated(d)
		if err == nil && (d.geometry.version != 1 || d.alloc.g.parentShift != 0) {
			err = fmt.Errorf("format version %d, parent shift %d: not a version 1 geometry", d.geometry.version, d.alloc.g.parentShift)
		}
		if err != nil {
			d.Close()
			t.Fatalf("opening %s: %v", run.golden, err)
		}
		m.base = map[Addr]*buddyCrashOwner{}
		for _, a := range slices.Sorted(maps.Keys(got)) {
			o := &buddyCrashOwner{addr: a, id: len(base)}
			m.base[a] = o
			base = append(base, o)
		}
	}
	w := newBuddyCrashWorkload(d, store, m)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, run.committers)
	for c := range run.committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 100+uint64(c)))
			var live []*buddyCrashOwner
			if c == 0 {
				live = base
			}
			errs[c] = w.committer(rng, run.txns, run.opsMax, live, run.committers == 1)
		}()
	}
	wg.Wait()
	for c, err := range errs {
		if err != nil {
			t.Errorf("committer %d: %v", c, err)
		}
	}
	if !t.Failed() && w.noSpace == 0 && *buddyCrashTxns == 0 {
		// This seed's mix never filled the heap: one more committer
		// allocates until it does, then goes on with the usual mix, so
		// that every run reaches the paths of a full heap.
		w.filling = true
		rng := rand.New(rand.NewPCG(seed, 99))
		if err := w.committer(rng, run.txns, run.opsMax, nil, true); err != nil {
			t.Errorf("the committer filling the heap: %v", err)
		}
		t.Logf("the workload never filled the heap: a last committer filled it")
	}
	if !t.Failed() {
		if got, err := buddyCrashAllocated(d); err != nil {
			t.Errorf("Check after the workload: %v", err)
		} else if want := m.stateAt(len(m.txns)); !buddyCrashSameKeys(got, want) {
			t.Errorf("after the workload the device holds %d pages, the model %d%s", len(got), len(want), buddyCrashDiff(got, want, m))
		}
	}
	if t.Failed() {
		d.Close()
		t.FailNow()
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("workload: %d committers, %d committed transactions, %d rolled back; %d allocs (%d reusing freed space, %d ErrNoSpace), %d frees, %d journaled and %d in-place slot writes, %d Sync, %d forced checkpoints; %d ops, %d syncs; %v",
		run.committers, len(m.txns), w.rollbacks, w.allocs, w.reused, w.noSpace, w.frees, w.journaledWrites, w.inPlaceWrites, w.syncs, w.checkpoints,
		store.Ops(), len(store.SyncPoints()), time.Since(start).Round(time.Millisecond))
	if *buddyCrashTxns == 0 && (w.reused == 0 || w.noSpace == 0) {
		t.Errorf("the workload never reused freed space (%d) or never filled the heap (%d): it does not reach the reuse paths", w.reused, w.noSpace)
	}

	c := &buddyCrashChecker{t: t, seed: seed}
	c.checkPoints(store, m, randomPoints, deepPoints)
}

// buddyCrashGoldenCapacity is the capacity the golden images record
// (testdata/golden/gen): crash images from before the first checkpoint
// open with it, the others with the MaxSize of the run.
const buddyCrashGoldenCapacity = 64 << 20

// buddyCrashGoldenStore returns a simulated store whose durable contents
// are the golden image name and whose trace is empty: every crash image
// holds the image, except where the workload's own trace changed it.
func buddyCrashGoldenStore(t *testing.T, name string) *simstore.Store {
	t.Helper()
	img := readGoldenImage(t, filepath.Join("testdata", "golden", name+".dev.gz"))
	loaded := simstore.New(buddyCrashGoldenCapacity)
	defer loaded.Close()
	if _, err := loaded.WriteAt(img, 0); err != nil {
		t.Fatal(err)
	}
	if err := loaded.Sync(); err != nil {
		t.Fatal(err)
	}
	store, err := loaded.Image(loaded.Ops(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// buddyCrashPoint is one crash image to check.
type buddyCrashPoint struct {
	n      int
	stream uint64 // with the seed, the fate of the unsynced operations
	sync   bool
	deep   bool
}

// buddyCrashCrashPoints returns every sync point (just before and just after
// the sync; in a sampled run, those crashSyncSample keeps) and random
// points, ascending, so that the store replays its trace about once in all.
func buddyCrashCrashPoints(t *testing.T, store *simstore.Store, seed uint64, random, deep int) []buddyCrashPoint {
	t.Helper()
	var points []buddyCrashPoint
	stream := uint64(0)
	for _, i := range crashSyncSample(t, store.SyncPoints(), seed) {
		for _, n := range []int{i, i + 1} {
			points = append(points, buddyCrashPoint{n: n, stream: stream, sync: true})
			stream++
		}
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	ops := store.Ops()
	for i := range random {
		points = append(points, buddyCrashPoint{n: rng.IntN(ops + 1), stream: 1<<32 | uint64(i), deep: i < deep})
	}
	sort.SliceStable(points, func(i, j int) bool { return points[i].n < points[j].n })
	return points
}

// ---------------------------------------------------------------------------
// The model.

// buddyCrashOwner is one allocation: a page and what its owner wrote into
// the page's slot.
type buddyCrashOwner struct {
	addr Addr
	id   int
	// journaled owners write their slot only with Txn.Write, the others
	// only with WriteAt: replay redoes a journaled write, so one that was
	// followed by a WriteAt of the same bytes may come back over it.
	journaled bool
	allocTxn  *buddyCrashTxn // nil for a page from before the model began
	writes    []*buddyCrashWrite
}

// buddyCrashWrite is one write of an owner's slot, with a generation number
// unique to the workload.
type buddyCrashWrite struct {
	gen uint64
	// txn is the transaction of a journaled write; nil for WriteAt.
	txn *buddyCrashTxn
	// issuedAt is the trace length before the WriteAt: only images of more
	// operations may hold it.
	issuedAt int
	// durableAt is the trace length after the first Commit or Sync that
	// was called after the WriteAt returned, and returned: every image of
	// at least as many operations holds it. -1 until then.
	durableAt int
}

// buddyCrashTxn is one transaction on which Commit was called.
type buddyCrashTxn struct {
	index int
	seq   uint64 // the sequence Commit must give it
	// startedAt is the trace length when Commit was called, read with the
	// writer held: no image of at most that many operations holds any of
	// it. returnedAt is the trace length after Commit returned: every image
	// of at least that many operations holds all of it.
	startedAt, returnedAt int
	allocs                []*buddyCrashOwner
	frees                 []Addr
}

// buddyCrashModel is the list of committed transactions, in commit order,
// on top of a base set of pages.
type buddyCrashModel struct {
	base map[Addr]*buddyCrashOwner
	txns []*buddyCrashTxn
	// createdAt is the trace length once Create returned: an image of
	// fewer operations may hold no device.
	createdAt int

	// A cursor: the pages after txns[:curK], for crash points that come in
	// ascending order.
	curK int
	cur  map[Addr]*buddyCrashOwner
}

// bounds returns the prefixes a crash after n operations may leave: at
// least every transaction whose Commit returned by then, at most every one
// whose Commit had been called.
func (m *buddyCrashModel) bounds(n int) (lo, hi int) {
	return prefixBounds(m.txns, n, func(tx *buddyCrashTxn) (int, int) { return tx.startedAt, tx.returnedAt })
}

// stateAt returns the pages after txns[:k]. The map is the cursor's: read
// it only, until the next call.
func (m *buddyCrashModel) stateAt(k int) map[Addr]*buddyCrashOwner {
	if m.cur == nil || k < m.curK {
		m.cur, m.curK = maps.Clone(m.base), 0
		if m.cur == nil {
			m.cur = map[Addr]*buddyCrashOwner{}
		}
	}
	for ; m.curK < k; m.curK++ {
		m.txns[m.curK].apply(m.cur)
	}
	return m.cur
}

// apply changes pages as tx did. A page allocated and freed by one
// transaction ends up freed; one freed cannot be allocated again by the
// transaction that freed it.
func (tx *buddyCrashTxn) apply(pages map[Addr]*buddyCrashOwner) {
	for _, o := range tx.allocs {
		pages[o.addr] = o
	}
	for _, a := range tx.frees {
		delete(pages, a)
	}
}

// ---------------------------------------------------------------------------
// The workload.

type buddyCrashFreed struct {
	off, end int64
	seq      uint64 // the transaction that freed it
	by       *Txn
}

// buddyCrashWorkload runs transactions on a device and keeps the model.
type buddyCrashWorkload struct {
	d     *Device
	store *simstore.Store
	m     *buddyCrashModel
	g     *heapGeometry
	// pool, if set, stages every in-place write in one of its buffers.
	pool *Pool

	mu sync.Mutex // guards everything below, and m.txns while running
	// units maps every min page of a live page (committed, or allocated
	// by the open transaction) to its owner.
	units map[int64]*buddyCrashOwner
	// freed are the pages freed by transactions that no checkpoint
	// covered when last looked at: none may be handed out.
	freed []buddyCrashFreed
	// everFreed marks min pages freed at least once, to count reuse.
	everFreed map[int64]bool
	nextGen   uint64
	nextID    int
	// filling makes every operation an Alloc until one fails with
	// ErrNoSpace.
	filling bool
	// alloc, if set, allocates in place of tx.Alloc, to check what a
	// refused Alloc leaves.
	alloc func(tx *Txn, size int64) (Addr, error)
	// afterTxn, if set, runs after every transaction has committed or
	// rolled back, with the writer free.
	afterTxn func() error

	allocs, reused, noSpace, frees, rollbacks          int
	journaledWrites, inPlaceWrites, syncs, checkpoints int
}

func newBuddyCrashWorkload(d *Device, store *simstore.Store, m *buddyCrashModel) *buddyCrashWorkload {
	w := &buddyCrashWorkload{
		d: d, store: store, m: m, g: &d.alloc.g,
		units: map[int64]*buddyCrashOwner{}, everFreed: map[int64]bool{},
		nextGen: 1,
	}
	for _, o := range m.base {
		w.setUnits(o.addr, o)
		w.nextID = max(w.nextID, o.id+1)
		for _, wr := range o.writes {
			w.nextGen = max(w.nextGen, wr.gen+1)
		}
	}
	return w
}

// setUnits marks the min pages of a as owned by o, or free with a nil o.
func (w *buddyCrashWorkload) setUnits(a Addr, o *buddyCrashOwner) {
	unit := w.g.pageBytes(0)
	for off := a.Offset(); off < a.Offset()+a.Size(); off += unit {
		if o == nil {
			delete(w.units, off)
		} else {
			w.units[off] = o
		}
	}
}

// checkAlloc checks a page Alloc just returned, inside the transaction
// that holds the writer: it must overlap no live page and no page freed by
// a transaction that no checkpoint covers. w.mu is held.
func (w *buddyCrashWorkload) checkAlloc(a Addr, size int64) error {
	g := w.g
	if a.Size() < size || a.Size() > max(2*size, g.pageBytes(0)) || a.Offset()%a.Size() != 0 ||
		a.Offset() < g.heapOff || a.Offset()+a.Size() > g.capacity || g.isMeta(a.Offset()) {
		return fmt.Errorf("Alloc(%d) returned %v", size, a)
	}
	// Read after Alloc returned: a checkpoint the allocator saw is
	// covered, so this never blames a legitimate reuse.
	covered := w.d.checkpointTxSeq.Load()
	keep := w.freed[:0]
	for _, f := range w.freed {
		if f.seq <= covered {
			continue
		}
		keep = append(keep, f)
		if f.off < a.Offset()+a.Size() && a.Offset() < f.end {
			return fmt.Errorf("Alloc(%d) returned %v, inside page [%d, %d) freed by transaction %d, which no checkpoint covers (checkpoint covers %d, durable up to %d): a crash could leave it owned twice",
				size, a, f.off, f.end, f.seq, covered, w.d.durableTxSeq.Load())
		}
	}
	w.freed = keep
	unit := g.pageBytes(0)
	reused := false
	for off := a.Offset(); off < a.Offset()+a.Size(); off += unit {
		if o := w.units[off]; o != nil {
			return fmt.Errorf("Alloc(%d) returned %v, which overlaps live page %v (allocation %d)", size, a, o.addr, o.id)
		}
		if w.everFreed[off] {
			reused = true
			delete(w.everFreed, off)
		}
	}
	if reused {
		w.reused++
	}
	return nil
}

// slot encodes what an owner writes into its page.
func buddyCrashSlot(a Addr, gen uint64) []byte {
	b := make([]byte, buddyCrashSlotBytes)
	binary.LittleEndian.PutUint64(b, uint64(a))
	binary.LittleEndian.PutUint64(b[8:], gen)
	return b
}

// buddyCrashSize draws an allocation size: uniform up to the max page half
// the time (mostly large pages), else near a random page size.
func buddyCrashSize(rng *rand.Rand, g *heapGeometry) int64 {
	if rng.IntN(2) == 0 {
		return 1 + rng.Int64N(g.maxPageBytes())
	}
	size := g.pageBytes(rng.IntN(g.maxOrder + 1))
	return size - rng.Int64N(size/2)
}

// committer runs txns transactions of up to opsMax operations each on the
// pages it owns, live at the start, and keeps the model. With checkEach it
// checks the device against the model after every transaction (only
// meaningful with one committer).
func (w *buddyCrashWorkload) committer(rng *rand.Rand, txns, opsMax int, live []*buddyCrashOwner, checkEach bool) error {
	d := w.d
	after := &buddyCrashAfter{w: w}
	for i := range txns {
		tx, err := d.Begin()
		if err != nil {
			return fmt.Errorf("txn %d: Begin: %w", i, err)
		}
		// What this transaction did, to adopt at Commit or undo at
		// Rollback.
		var allocs []*buddyCrashOwner
		var freed []*buddyCrashOwner
		type journaledWrite struct {
			o  *buddyCrashOwner
			wr *buddyCrashWrite
		}
		var writes []journaledWrite
		txLive := func() []*buddyCrashOwner { return append(slices.Clip(live), allocs...) }
		isFreed := func(o *buddyCrashOwner) bool { return slices.Contains(freed, o) }
		fail := func(format string, args ...any) error {
			err := fmt.Errorf("txn %d: %s", i, fmt.Sprintf(format, args...))
			w.mu.Lock()
			for _, o := range allocs {
				w.setUnits(o.addr, nil)
			}
			w.mu.Unlock()
			rollbackOnExit(tx)
			return err
		}
		for range 1 + rng.IntN(opsMax) {
			r := rng.IntN(100)
			w.mu.Lock()
			if w.filling {
				r = 0
			}
			w.mu.Unlock()
			switch {
			case r < 50:
				size := buddyCrashSize(rng, w.g)
				a, err := w.allocate(tx, size)
				if errors.Is(err, ErrNoSpace) {
					w.mu.Lock()
					w.noSpace++
					w.filling = false
					w.mu.Unlock()
					continue
				}
				if err != nil {
					return fail("Alloc(%d): %v", size, err)
				}
				w.mu.Lock()
				err = w.checkAlloc(a, size)
				o := &buddyCrashOwner{addr: a, id: w.nextID, journaled: rng.IntN(3) == 0}
				w.nextID++
				w.allocs++
				if err == nil {
					w.setUnits(a, o)
				}
				w.mu.Unlock()
				if err != nil {
					return fail("%v", err)
				}
				allocs = append(allocs, o)
				if o.journaled && rng.IntN(5) != 0 {
					// Written in the allocating transaction itself.
					writes = append(writes, journaledWrite{o, nil})
				}
			case r < 85:
				cands := txLive()
				if len(cands) == 0 {
					continue
				}
				o := cands[rng.IntN(len(cands))]
				if isFreed(o) {
					continue
				}
				if err := tx.Free(o.addr); err != nil {
					return fail("Free(%v) of allocation %d: %v", o.addr, o.id, err)
				}
				freed = append(freed, o)
				w.mu.Lock()
				w.setUnits(o.addr, nil)
				// The writer is held: the transaction commits as the next
				// sequence number or not at all.
				w.freed = append(w.freed, buddyCrashFreed{off: o.addr.Offset(), end: o.addr.Offset() + o.addr.Size(), seq: d.txSeq + 1, by: tx})
				w.mu.Unlock()
			default:
				var cands []*buddyCrashOwner
				for _, o := range txLive() {
					if o.journaled && !isFreed(o) {
						cands = append(cands, o)
					}
				}
				if len(cands) == 0 {
					continue
				}
				writes = append(writes, journaledWrite{cands[rng.IntN(len(cands))], nil})
			}
		}
		// Journaled slot writes, last so that none lands in a page this
		// transaction then freed.
		for j := range writes {
			o := writes[j].o
			if isFreed(o) {
				continue
			}
			w.mu.Lock()
			gen := w.nextGen
			w.nextGen++
			w.mu.Unlock()
			if err := tx.Write(o.addr.Offset(), buddyCrashSlot(o.addr, gen)); err != nil {
				return fail("Write into %v of allocation %d: %v", o.addr, o.id, err)
			}
			writes[j].wr = &buddyCrashWrite{gen: gen, issuedAt: -1, durableAt: -1}
		}

		if rng.IntN(10) == 0 {
			// Undo the model while the writer is still held, so that no
			// other transaction sees it half undone.
			w.mu.Lock()
			for _, o := range freed {
				w.setUnits(o.addr, o)
			}
			for _, o := range allocs { // after: some were freed too
				w.setUnits(o.addr, nil)
			}
			w.freed = slices.DeleteFunc(w.freed, func(f buddyCrashFreed) bool { return f.by == tx })
			w.rollbacks++
			w.mu.Unlock()
			if err := tx.Rollback(); err != nil {
				return fmt.Errorf("txn %d: Rollback: %w", i, err)
			}
			if err := w.runAfterTxn(); err != nil {
				return fmt.Errorf("txn %d, rolled back: %w", i, err)
			}
			continue
		}

		w.mu.Lock()
		rec := &buddyCrashTxn{index: len(w.m.txns), seq: d.txSeq + 1, startedAt: w.store.Ops(), allocs: allocs}
		for _, o := range freed {
			rec.frees = append(rec.frees, o.addr)
			for off := o.addr.Offset(); off < o.addr.Offset()+o.addr.Size(); off += w.g.pageBytes(0) {
				w.everFreed[off] = true
			}
		}
		for _, o := range allocs {
			o.allocTxn = rec
		}
		for _, jw := range writes {
			if jw.wr != nil {
				jw.wr.txn = rec
				jw.o.writes = append(jw.o.writes, jw.wr)
				w.journaledWrites++
			}
		}
		w.frees += len(freed)
		w.m.txns = append(w.m.txns, rec)
		w.mu.Unlock()
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("txn %d (%d allocs, %d frees): Commit: %w", i, len(allocs), len(freed), err)
		}
		live = slices.DeleteFunc(live, isFreed)
		for _, o := range allocs {
			if !isFreed(o) {
				live = append(live, o)
			}
		}
		if err := after.committed(rng, tx, rec, live); err != nil {
			return fmt.Errorf("txn %d: %w", i, err)
		}
		if checkEach {
			got, err := buddyCrashAllocated(d)
			if err != nil {
				return fmt.Errorf("txn %d: Check: %w", i, err)
			}
			want := w.m.stateAt(len(w.m.txns))
			if !buddyCrashSameKeys(got, want) {
				return fmt.Errorf("txn %d: the device holds %d pages, the model %d: %s", i, len(got), len(want), buddyCrashDiff(got, want, w.m))
			}
		}
		if err := w.runAfterTxn(); err != nil {
			return fmt.Errorf("txn %d: %w", i, err)
		}
	}
	return after.finish()
}

// allocate allocates a page of size bytes in tx, with w.alloc if set.
func (w *buddyCrashWorkload) allocate(tx *Txn, size int64) (Addr, error) {
	if w.alloc != nil {
		return w.alloc(tx, size)
	}
	return tx.Alloc(size)
}

// runAfterTxn runs w.afterTxn if set.
func (w *buddyCrashWorkload) runAfterTxn() error {
	if w.afterTxn == nil {
		return nil
	}
	return w.afterTxn()
}

// buddyCrashAfter is what a committer does around its transactions, beside
// the allocator's own work: stamps in place, syncs, checkpoints.
type buddyCrashAfter struct {
	w         *buddyCrashWorkload
	undurable []*buddyCrashWrite // in-place writes no Commit or Sync has covered yet
	lastSeq   uint64
}

// durable marks the in-place writes so far durable from now on.
func (a *buddyCrashAfter) durable() {
	at := a.w.store.Ops()
	for _, wr := range a.undurable {
		wr.durableAt = at
	}
	a.undurable = a.undurable[:0]
}

// committed runs just after the Commit of tx, recorded as rec, returned;
// live is what the committer owns now. It records the return, writes new
// stamps in place into most pages rec allocated for in-place owners and
// now and then into an older one, and now and then syncs or forces a
// checkpoint.
func (a *buddyCrashAfter) committed(rng *rand.Rand, tx *Txn, rec *buddyCrashTxn, live []*buddyCrashOwner) error {
	w, d := a.w, a.w.d
	returned := w.store.Ops()
	w.mu.Lock()
	rec.returnedAt = returned
	w.mu.Unlock()
	a.durable()
	if tx.seq != 0 {
		if tx.seq != rec.seq {
			return fmt.Errorf("committed as sequence %d, expected %d", tx.seq, rec.seq)
		}
		a.lastSeq = tx.seq
	}

	// In-place slot writes, now that the pages are committed: most
	// new pages, and now and then an older one again.
	var targets []*buddyCrashOwner
	for _, o := range rec.allocs {
		if !o.journaled && slices.Contains(live, o) && rng.IntN(5) != 0 {
			targets = append(targets, o)
		}
	}
	if len(live) > 0 && rng.IntN(2) == 0 {
		if o := live[rng.IntN(len(live))]; !o.journaled {
			targets = append(targets, o)
		}
	}
	for _, o := range targets {
		if err := a.writeInPlace(o); err != nil {
			return err
		}
	}
	if rng.IntN(8) == 0 {
		if err := d.Sync(); err != nil {
			return fmt.Errorf("Sync: %w", err)
		}
		a.durable()
		w.mu.Lock()
		w.syncs++
		w.mu.Unlock()
	}
	// Freed pages become reusable only after a checkpoint: force one
	// now and then, besides those the full journal ring causes.
	if a.lastSeq != 0 && rng.IntN(6) == 0 {
		if err := d.journal.waitCheckpoint(a.lastSeq); err != nil {
			return fmt.Errorf("waiting for a checkpoint: %w", err)
		}
		w.mu.Lock()
		w.checkpoints++
		w.mu.Unlock()
	}
	return nil
}

// writeInPlace writes o's next stamp with WriteAt, staged in a buffer of
// w.pool if there is one.
func (a *buddyCrashAfter) writeInPlace(o *buddyCrashOwner) error {
	w := a.w
	w.mu.Lock()
	gen := w.nextGen
	w.nextGen++
	w.inPlaceWrites++
	w.mu.Unlock()
	p := buddyCrashSlot(o.addr, gen)
	var b *Buffer
	if w.pool != nil {
		var err error
		if b, err = w.pool.Get(context.Background()); err != nil {
			return err
		}
		p = append(b.Bytes()[:0], p...)
	}
	// In the model before the call: a WriteAt that fails with an I/O
	// error may still have written, so that its stamp may show.
	wr := &buddyCrashWrite{gen: gen, issuedAt: w.store.Ops(), durableAt: -1}
	o.writes = append(o.writes, wr)
	_, err := w.d.WriteAt(p, o.addr.Offset())
	if b != nil {
		err = errors.Join(err, w.pool.Put(b))
	}
	if err != nil {
		return fmt.Errorf("WriteAt into %v of allocation %d: %w", o.addr, o.id, err)
	}
	a.undurable = append(a.undurable, wr)
	return nil
}

// finish syncs the in-place writes no Commit or Sync has covered.
func (a *buddyCrashAfter) finish() error {
	if len(a.undurable) > 0 {
		if err := a.w.d.Sync(); err != nil {
			return fmt.Errorf("final Sync: %w", err)
		}
		a.durable()
	}
	return nil
}

// buddyCrashAllocated runs Check and returns the allocated pages it found.
func buddyCrashAllocated(d *Device) (map[Addr]bool, error) {
	got := map[Addr]bool{}
	d.writer.Lock()
	err := d.check(func(a Addr) { got[a] = true })
	d.writer.Unlock()
	return got, err
}

func buddyCrashSameKeys(got map[Addr]bool, want map[Addr]*buddyCrashOwner) bool {
	if len(got) != len(want) {
		return false
	}
	for a := range got {
		if want[a] == nil {
			return false
		}
	}
	return true
}

// buddyCrashDiff says how got differs from want, naming for each page the
// transaction that last touched it.
func buddyCrashDiff(got map[Addr]bool, want map[Addr]*buddyCrashOwner, m *buddyCrashModel) string {
	history := func(a Addr) string {
		var last []string
		for _, tx := range m.txns {
			for _, o := range tx.allocs {
				if o.addr == a {
					last = append(last, fmt.Sprintf("allocated by txn %d (seq %d, ops %d..%d)", tx.index, tx.seq, tx.startedAt, tx.returnedAt))
				}
			}
			for _, f := range tx.frees {
				if f == a {
					last = append(last, fmt.Sprintf("freed by txn %d (seq %d, ops %d..%d)", tx.index, tx.seq, tx.startedAt, tx.returnedAt))
				}
			}
		}
		if len(last) == 0 {
			if m.base[a] != nil {
				return "in the base"
			}
			return "never allocated as such"
		}
		return strings.Join(last[max(0, len(last)-3):], ", ")
	}
	var b strings.Builder
	n := 0
	for _, a := range slices.Sorted(maps.Keys(want)) {
		if !got[a] && n < 5 {
			fmt.Fprintf(&b, "; missing %v (%s)", a, history(a))
			n++
		}
	}
	n = 0
	for _, a := range slices.Sorted(maps.Keys(got)) {
		if want[a] == nil && n < 5 {
			fmt.Fprintf(&b, "; extra %v (%s)", a, history(a))
			n++
		}
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Checking crash images.

type buddyCrashChecker struct {
	t    *testing.T
	seed uint64
	// open opens a crash image, drawing what it needs from stream; nil
	// opens it with no options.
	open func(img *simstore.Store, stream uint64) (*Device, error)

	opened, createFailed, beyondReturned, violations int
	pagesCompared, slotsChecked, slotsUnknown        int
}

type buddyCrashDeepStats struct {
	images, inRecovery, continued, commits, afterRecovery int
}

func (c *buddyCrashChecker) fail(store *simstore.Store, n int, stream uint64, what, desc string, format string, args ...any) {
	c.t.Helper()
	c.violations++
	c.t.Errorf("%s: crash after %d of %d ops (seed %d, stream %d): %s\nimage: %s", what, n, store.Ops(), c.seed, stream, fmt.Sprintf(format, args...), desc)
	if c.violations >= buddyCrashMaxViolations {
		c.t.Fatalf("%d violations; stopping", c.violations)
	}
}

// checkPoints crashes store at every sync point and at random points,
// deep ones among them, checks every image against m and logs the counts.
func (c *buddyCrashChecker) checkPoints(store *simstore.Store, m *buddyCrashModel, randomPoints, deepPoints int) {
	t := c.t
	t.Helper()
	start := time.Now()
	points := buddyCrashCrashPoints(t, store, c.seed, randomPoints, deepPoints)
	var deep buddyCrashDeepStats
	syncImages, randomImages := 0, 0
	for _, p := range points {
		switch {
		case p.deep:
			randomImages++
			c.deepCheck(store, m, p.n, p.stream, &deep)
		case p.sync:
			syncImages++
			c.check(store, m, p.n, p.stream, "sync point", false)
		default:
			randomImages++
			c.check(store, m, p.n, p.stream, "random point", false)
		}
	}
	t.Logf("crash points: %d at syncs (%d syncs), %d random; %d images opened (%d crashed inside Create and were refused), %d held commits beyond the last returned; %v",
		syncImages, len(store.SyncPoints()), randomImages, c.opened, c.createFailed, c.beyondReturned, time.Since(start).Round(time.Millisecond))
	t.Logf("recoveries of recoveries: %d recovered images crashed again at %d points inside their recovery; %d of them took %d more commits and were crashed at %d more points",
		deep.images, deep.inRecovery, deep.continued, deep.commits, deep.afterRecovery)
	t.Logf("pages checked: %d allocated pages compared, %d data slots verified (%d with no data certainly on disk yet); violations: %d",
		c.pagesCompared, c.slotsChecked, c.slotsUnknown, c.violations)
}

// check crashes store after n operations, with the fate of unsynced
// operations drawn from (seed, stream), opens the image and checks it
// against m. With keepOpen it returns the open device (the caller closes
// it), the image under it and the pages it holds; otherwise it closes it.
func (c *buddyCrashChecker) check(store *simstore.Store, m *buddyCrashModel, n int, stream uint64, what string, keepOpen bool) (*Device, *simstore.Store, map[Addr]*buddyCrashOwner) {
	t := c.t
	t.Helper()
	img, err := store.Image(n, rand.New(rand.NewPCG(c.seed, stream)))
	if err != nil {
		t.Fatalf("%s: Image(%d): %v", what, n, err)
	}
	desc := img.Describe()
	var d *Device
	if c.open != nil {
		d, err = c.open(img, stream)
	} else {
		d, err = openOn(img, &Options{})
	}
	if err != nil {
		img.Close()
		if n < m.createdAt && errors.Is(err, ErrCorrupt) {
			c.createFailed++ // a crash inside Create: no device yet
			return nil, nil, nil
		}
		c.fail(store, n, stream, what, desc, "Open: %v", err)
		return nil, nil, nil
	}
	c.opened++
	owners, ok := c.compare(d, store, m, n, stream, what, desc)
	if !ok || !keepOpen {
		if err := d.Close(); err != nil && ok {
			c.fail(store, n, stream, what, desc, "Close after recovery: %v", err)
		}
		return nil, nil, nil
	}
	return d, img, owners
}

// compare checks a recovered device against m for a crash after n
// operations and returns the model's pages it holds.
func (c *buddyCrashChecker) compare(d *Device, store *simstore.Store, m *buddyCrashModel, n int, stream uint64, what, desc string) (map[Addr]*buddyCrashOwner, bool) {
	got, err := buddyCrashAllocated(d)
	if err != nil {
		c.fail(store, n, stream, what, desc, "Check after recovery: %v", err)
		return nil, false
	}
	lo, hi := m.bounds(n)
	if n < m.createdAt {
		lo = 0
	}
	// Every prefix in [lo, hi] with these pages is a candidate: a
	// transaction that only wrote slots leaves the pages as they were.
	owners, matched, slotsMsg := m.stateAt(lo), -1, ""
	for k := lo; k <= hi; k++ {
		if k > lo {
			if k == lo+1 {
				owners = maps.Clone(owners)
			}
			m.txns[k-1].apply(owners)
		}
		if !buddyCrashSameKeys(got, owners) {
			continue
		}
		checked, unknown, msg := c.checkSlots(d, owners, k, n)
		if msg != "" {
			if slotsMsg == "" {
				slotsMsg = fmt.Sprintf("recovered to the pages of prefix %d of %d: %s", k, len(m.txns), msg)
			}
			matched = max(matched, k)
			continue
		}
		if k > lo {
			c.beyondReturned++
		}
		c.pagesCompared += len(got)
		c.slotsChecked += checked
		c.slotsUnknown += unknown
		return owners, true
	}
	if matched < 0 {
		c.fail(store, n, stream, what, desc, "%d pages allocated, which is no prefix of the %d committed transactions between %d (every Commit that returned) and %d (every Commit called)%s",
			len(got), len(m.txns), lo, hi, buddyCrashDiff(got, m.stateAt(lo), m))
	} else {
		c.fail(store, n, stream, what, desc, "%s", slotsMsg)
	}
	return nil, false
}

// checkSlots checks the slot of every page of owners, the pages after
// txns[:k] of a crash after n operations, and returns how many it checked,
// how many hold nothing certain yet, and what was wrong.
func (c *buddyCrashChecker) checkSlots(d *Device, owners map[Addr]*buddyCrashOwner, k, n int) (checked, unknown int, problems string) {
	var bad []string
	buf := make([]byte, buddyCrashSlotBytes)
	for _, a := range slices.Sorted(maps.Keys(owners)) {
		o := owners[a]
		// The newest write certainly on disk, and every write that may be.
		certain, haveCertain := uint64(0), false
		var maybe []uint64
		for _, wr := range o.writes {
			var present, sure bool
			if wr.txn != nil {
				present = wr.txn.index < k
				sure = present
			} else {
				present = n > wr.issuedAt
				sure = wr.durableAt >= 0 && wr.durableAt <= n
			}
			if sure {
				certain, haveCertain = wr.gen, true
			}
			if present {
				maybe = append(maybe, wr.gen)
			}
		}
		if !haveCertain {
			unknown++
			continue
		}
		checked++
		if _, err := d.ReadAt(buf, a.Offset()); err != nil {
			bad = append(bad, fmt.Sprintf("reading %v: %v", a, err))
			continue
		}
		addr, gen := Addr(binary.LittleEndian.Uint64(buf)), binary.LittleEndian.Uint64(buf[8:])
		ok := addr == a && gen >= certain && slices.Contains(maybe, gen)
		if !ok && len(bad) < 5 {
			kind := "WriteAt"
			if o.journaled {
				kind = "Txn.Write"
			}
			bad = append(bad, fmt.Sprintf("%v (allocation %d, written with %s) holds %x, want its own address and generation %d or a later one of %v",
				a, o.id, kind, buf, certain, maybe))
		}
	}
	return checked, unknown, strings.Join(bad, "; ")
}

// deepCheck checks the image after n operations, then crashes the
// recovery's own trace (its replay, syncs and checkpoint) at every sync and
// at random points, each of which must recover to the same pages; then it
// runs a few more transactions on the recovered device (freeing pages
// allocated before the crash, reusing space after checkpoints) and crashes
// those too.
func (c *buddyCrashChecker) deepCheck(store *simstore.Store, m *buddyCrashModel, n int, stream uint64, st *buddyCrashDeepStats) {
	t := c.t
	what := fmt.Sprintf("recovery of the crash after %d ops", n)
	d, img, owners := c.check(store, m, n, stream, "deep point", true)
	if d == nil {
		return
	}
	st.images++
	recoveryOps := img.Ops()

	// The recovered pages are the base of a new model; what their slots
	// hold now is on disk for good.
	base := map[Addr]*buddyCrashOwner{}
	buf := make([]byte, buddyCrashSlotBytes)
	for a, o := range owners {
		nb := &buddyCrashOwner{addr: a, id: o.id, journaled: o.journaled}
		if _, err := d.ReadAt(buf, a.Offset()); err != nil {
			t.Fatal(err)
		}
		gen := binary.LittleEndian.Uint64(buf[8:])
		if Addr(binary.LittleEndian.Uint64(buf)) == a && slices.ContainsFunc(o.writes, func(wr *buddyCrashWrite) bool { return wr.gen == gen }) {
			nb.writes = []*buddyCrashWrite{{gen: gen, issuedAt: -1, durableAt: 0}}
		}
		base[a] = nb
	}
	m2 := &buddyCrashModel{base: base}
	rng := rand.New(rand.NewPCG(c.seed, stream|1<<63))
	continued := rng.IntN(4) != 0
	if continued {
		w := newBuddyCrashWorkload(d, img, m2)
		var live []*buddyCrashOwner
		for _, a := range slices.Sorted(maps.Keys(base)) {
			live = append(live, base[a])
		}
		if err := w.committer(rng, 3+rng.IntN(6), 6, live, true); err != nil {
			c.fail(store, n, stream, what, img.Describe(), "after recovery to %d pages: %v", len(base), err)
			d.Close()
			return
		}
		st.continued++
		st.commits += len(m2.txns)
	}
	if err := d.Close(); err != nil {
		c.fail(store, n, stream, what, img.Describe(), "Close: %v", err)
		return
	}
	var ns []int
	for _, i := range img.SyncPoints() {
		ns = append(ns, i, i+1)
	}
	for range buddyCrashDeepRandom {
		ns = append(ns, rng.IntN(img.Ops()+1))
	}
	slices.Sort(ns)
	for i, n2 := range ns {
		if n2 <= recoveryOps {
			st.inRecovery++
		} else {
			st.afterRecovery++
		}
		c.check(img, m2, n2, stream|uint64(i+1)<<40, what, false)
	}
}

// buddyCrashGatedStore is a simulated store that can hold one operation at
// a gate before it reaches the store: the next Sync (a disk flush in
// flight), or the next write at a given offset (a write not yet in the
// page cache).
type buddyCrashGatedStore struct {
	*simstore.Store
	mu       sync.Mutex
	held     string // "sync" or "write": what the gate holds next; "" for nothing
	writeOff int64
	gate     chan struct{} // closed to let the held operation through
	entered  chan struct{} // closed when it reaches the gate
}

func (s *buddyCrashGatedStore) arm(what string, writeOff int64) (entered, gate chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held, s.writeOff = what, writeOff
	s.gate, s.entered = make(chan struct{}), make(chan struct{})
	return s.entered, s.gate
}

// wait holds the operation at the gate if it is the one armed.
func (s *buddyCrashGatedStore) wait(what string, off int64) {
	s.mu.Lock()
	gate, entered := s.gate, s.entered
	hold := s.held == what && (what != "write" || off == s.writeOff)
	if hold {
		s.held, s.gate, s.entered = "", nil, nil
	}
	s.mu.Unlock()
	if hold {
		close(entered)
		<-gate
	}
}

func (s *buddyCrashGatedStore) Sync() error {
	s.wait("sync", 0)
	return s.Store.Sync()
}

func (s *buddyCrashGatedStore) WriteAt(p []byte, off int64) (int, error) {
	s.wait("write", off)
	return s.Store.WriteAt(p, off)
}

// TestBuddyCrashSyncDuringGroupCommit checks the promise the crash test's
// in-place data relies on: bytes written with WriteAt are durable once Sync
// returns, whatever a group commit on the journal's goroutine does at the
// same moment. A crash right after Sync returned must find the bytes.
//
//   - "flush in flight": the group commit has taken the "data to sync"
//     flag and its fsync has not completed when Sync is called.
//   - "write in flight": the group commit takes the flag and syncs while
//     the WriteAt is on its way to the store, before its bytes are there.
func TestBuddyCrashSyncDuringGroupCommit(t *testing.T) {
	t.Run("flush in flight", func(t *testing.T) { testBuddyCrashSyncRace(t, "sync") })
	t.Run("write in flight", func(t *testing.T) { testBuddyCrashSyncRace(t, "write") })
}

func testBuddyCrashSyncRace(t *testing.T, held string) {
	o, err := buddyCrashRuns()[0].opts.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	store := simstore.New(o.MaxSize)
	gs := &buddyCrashGatedStore{Store: store}
	d, err := createOn(gs, o)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	defer d.Close()
	var a Addr
	if err := d.Update(func(tx *Txn) (err error) { a, err = tx.Alloc(4096); return err }); err != nil {
		t.Fatal(err)
	}
	want := buddyCrashSlot(a, 1)
	otherCommit := func() error {
		return d.Update(func(tx *Txn) error { _, err := tx.Alloc(4096); return err })
	}

	switch held {
	case "sync":
		if _, err := d.WriteAt(want, a.Offset()); err != nil {
			t.Fatal(err)
		}
		// Another committer's group syncs the data first; hold that
		// sync while Sync is called.
		entered, gate := gs.arm("sync", 0)
		committed := make(chan error, 1)
		go func() { committed <- otherCommit() }()
		select {
		case <-entered:
		case err := <-committed:
			t.Fatalf("the commit returned (%v) without syncing the data written before it", err)
		}
		defer func() {
			if err := <-committed; err != nil {
				t.Error(err)
			}
		}()
		synced := make(chan int, 1)
		go func() {
			if err := d.Sync(); err != nil {
				t.Errorf("Sync: %v", err)
			}
			synced <- store.Ops() // the power may fail from here on
		}()
		n := -1
		select {
		case n = <-synced: // returned while the flush was held
		case <-time.After(200 * time.Millisecond): // waiting for it, as it should
		}
		close(gate)
		if n < 0 {
			n = <-synced
		}
		buddyCrashCheckSlotAt(t, store, n, a, want)
	case "write":
		// Hold the WriteAt on its way to the store while another
		// committer's group takes the flag and syncs.
		entered, gate := gs.arm("write", a.Offset())
		written := make(chan error, 1)
		go func() { _, err := d.WriteAt(want, a.Offset()); written <- err }()
		<-entered
		if err := otherCommit(); err != nil {
			close(gate)
			t.Fatal(err)
		}
		close(gate)
		if err := <-written; err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		buddyCrashCheckSlotAt(t, store, store.Ops(), a, want)
	}
}

// buddyCrashCheckSlotAt crashes store after n operations, losing every
// unsynced one, and checks that page a starts with want.
func buddyCrashCheckSlotAt(t *testing.T, store *simstore.Store, n int, a Addr, want []byte) {
	t.Helper()
	d := openImage(t, store, n, nil)
	defer d.Close()
	got := make([]byte, len(want))
	if _, err := d.ReadAt(got, a.Offset()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("crash right after Sync returned (op %d of %d): %v holds %x, want %x: Sync returned before the bytes of a WriteAt that returned before it were durable", n, store.Ops(), a, got, want)
	}
}
