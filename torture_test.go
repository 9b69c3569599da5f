package pagealloc

// Whole-system crash torture. Every component runs at once on one device
// on the simulated store (internal/simstore):
//
//   - committers whose transactions mix buddy allocations and frees of
//     every size, sub-page slot allocations and frees in two classes,
//     journaled stamps in pages and slots, and writes to the root area,
//     with in-place WriteAt stamps, Device.Sync and forced checkpoints
//     between them, their commits sharing journal records;
//   - appenders to a log region whose owner indexes every entry in the
//     root area, deletes old ones, and relocates live ones when the
//     background GC reaches them, failing one Relocate in 25
//     (logCrashAppender, crashOwner);
//   - a Pool whose buffers stage every byte written in place, so that a
//     buffer handed to two users at once would show as bytes of the wrong
//     owner on disk.
//
// Then the trace is crashed at every sync point (just before and just after
// the sync) and at random points, the writes since the last sync each kept,
// dropped or torn per 512-byte sector, and every image is opened and
// checked:
//
//   - Open succeeds and Check passes: one owner per byte, free lists,
//     pending queue, sub-page lists, counters;
//   - the caller's pages, the live sub-page slots and the root area are
//     those of the model after txns[:k], one k for all three, which counts
//     every transaction whose Commit returned and none whose Commit had not
//     been called: every committed allocation is there, nothing freed comes
//     back, nothing leaks (every other allocated page is a parent with a
//     live slot), slots never overlap;
//   - every page and slot holds its owner's newest stamp that was certainly
//     durable, or a later one of the same owner (never a free-list link or
//     an earlier owner's bytes);
//   - the log: every entry the index names reads back intact, every entry
//     whose Commit returned and whose deletion had not begun is found,
//     nothing whose Commit had not begun is visible, nothing beyond the
//     durable tail (logCrashChecker).
//
// A sample of the images then takes a few more mixed transactions, each
// compared with the model, and log appends.
//
// A run is made of rounds, each a short workload from its own seed, until
// 10,000 crash points are checked (-torture.long: 1,000,000, for a soak
// run). The seed is printed; -torture.seed=N reruns the same workloads
// and crash choices, and -torture.round=R starts at round R. Commits from
// several goroutines and the background GC make the trace differ slightly
// from run to run of one seed.
//
// TestTortureIOError runs such rounds with a storage operation failing at
// a random point, and checks crash images of what the failure left.

import (
	"errors"
	"flag"
	"fmt"
	"hash/maphash"
	"maps"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

const (
	tortureDefaultPoints = 10_000
	tortureLongPoints    = 1_000_000
	// Rounds run past the target, at most, while the workloads have not
	// reached every situation (tortureTotals.covered).
	tortureExtraRounds = 4

	tortureCommitters = 3
	tortureTxns       = 110 // per committer and round
	tortureOpsMax     = 8   // operations per transaction, at most
	tortureAppenders  = 2
	// Log entries per appender and round: enough that the ring wraps
	// four to six times, so that GC meets live entries and relocates them
	// in most rounds (in about one round in three at 160).
	tortureEntries = 240
	// Random crash points per round, besides every sync point (a
	// sampled run: a quarter of each).
	tortureRandomPoints = 2000
	// Every tortureContinueEvery-th image takes more transactions.
	tortureContinueEvery = 16
	tortureMaxViolations = 10

	// The root area: the log owner's index, then the bytes the committers
	// write.
	tortureIndexBytes = 32 << 10
	tortureRootBytes  = 64 << 10

	// TestTortureIOError: rounds (a sampled run or -short: half), the
	// crash images each takes of the trace the failure left, and the
	// ranges its points are drawn from: about the first two thirds of a
	// round's operations and syncs (a round makes about 9,200 and 2,100
	// after its set-up).
	tortureFaultRounds = 16
	tortureFaultImages = 24
	tortureFaultOps    = 6000
	tortureFaultSyncs  = 1400
)

// tortureSlotSizes are the sub-page classes: 64-byte slots in 4 KiB
// parents and 1 KiB slots in 64 KiB parents, both smaller than a page.
var tortureSlotSizes = []int{64, 1024}

var (
	tortureSeed   = flag.Uint64("torture.seed", 0, "seed for the whole-system crash torture (0: time)")
	tortureLong   = flag.Bool("torture.long", false, "crash the torture workloads at 1,000,000 points instead of 10,000, for a soak run")
	torturePoints = flag.Int("torture.points", 0, "crash points the torture checks at least (0: 10,000, or 1,000,000 with -torture.long; a quarter under -race or -tags invariants)")
	tortureRound  = flag.Int("torture.round", 0, "round the torture starts at, to rerun one round of a seed")
)

// tortureOptions is a small device that fills: pages of 4 KiB to 64 KiB in
// a heap of about 4 MiB, a journal that wraps and checkpoints often, and a
// 256 KiB log.
func tortureOptions() Options {
	return Options{
		MinPageSize: 4 << 10, MaxPageSize: 64 << 10,
		JournalSize: 128 << 10, RootSize: tortureRootBytes,
		MaxSize: 1<<20 + 4<<20, GrowthStep: 256 << 10,
		LogRegions: []LogRegion{{"log", logCrashRingBytes}},
	}
}

// tortureTotals are the counts of a whole run.
type tortureTotals struct {
	rounds, txns, entries, ops, syncs                   int
	points, syncPoints, opened, createFailed            int
	beyondReturned, continued, continuedTxns            int
	pagesCompared, slotsChecked, logIndexed, logWalked  int
	violations                                          int
	workload, checking                                  time.Duration
	pageAllocs, slotAllocs, frees, noSpace, rootWriting int
	reused, relocations, wraps                          int
	// TestTortureIOError's rounds: the fault failed the device, failed
	// an operation whose error the device ignores, or never fired.
	faultsFailed, faultsIgnored, faultsUnfired int
}

// covered reports whether the rounds so far reached every situation the
// torture is for: pages reused, the heap full, the log wrapped, live
// entries relocated. Which of them a round reaches depends on timing.
func (tot *tortureTotals) covered() bool {
	return tot.reused > 0 && tot.noSpace > 0 && tot.relocations > 0 && tot.wraps > 0
}

// TestTorture runs the whole-system crash torture; see the top of this
// file.
func TestTorture(t *testing.T) {
	seed := testSeed(t, "torture.seed", *tortureSeed)
	target, scale := tortureDefaultPoints, ""
	switch {
	case *torturePoints > 0:
		target = *torturePoints
	case *tortureLong:
		target = tortureLongPoints
	case crashSampled():
		// Every image costs several times as much: a quarter of the
		// points, as in the other crash tests.
		target /= crashSampleOneIn
		scale = fmt.Sprintf(" (the race detector or the invariants build: 1/%d of the default %d)", crashSampleOneIn, tortureDefaultPoints)
	}
	tortureReport(t, "seed %d; crash points to check: at least %d%s", seed, target, scale)
	var tot tortureTotals
	// Rounds until target points are checked, and a few more if the
	// workloads have not yet reached everything they are for.
	for round, extra := *tortureRound, 0; !t.Failed(); round++ {
		if tot.points >= target {
			if tot.covered() || extra == tortureExtraRounds {
				break
			}
			extra++
		}
		tortureRunRound(t, seed, round, &tot, nil)
	}
	if !tot.covered() {
		t.Errorf("%d rounds reached too little: %d pages reused, %d ErrNoSpace, %d log relocations, %d ring wraps", tot.rounds, tot.reused, tot.noSpace, tot.relocations, tot.wraps)
	}
	tortureReport(t, "%d rounds: %d committed mixed transactions (%d page allocs, %d slot allocs, %d frees, %d ErrNoSpace, %d with root writes), %d log entries; %d store ops, %d syncs; workloads %v",
		tot.rounds, tot.txns, tot.pageAllocs, tot.slotAllocs, tot.frees, tot.noSpace, tot.rootWriting, tot.entries, tot.ops, tot.syncs, tot.workload.Round(time.Millisecond))
	tortureReport(t, "crash points tried: %d (%d at syncs, %d random); images opened: %d (%d crashed inside Create and were refused); %d held commits beyond the last returned; %d took %d more transactions",
		tot.points, tot.syncPoints, tot.points-tot.syncPoints, tot.opened, tot.createFailed, tot.beyondReturned, tot.continued, tot.continuedTxns)
	tortureReport(t, "compared: %d pages and slots, %d stamps verified, %d log entries read through the index, %d walked; checking %v",
		tot.pagesCompared, tot.slotsChecked, tot.logIndexed, tot.logWalked, tot.checking.Round(time.Millisecond))
	tortureReport(t, "violations: %d", tot.violations)
	if tot.points < target && !t.Failed() {
		t.Fatalf("checked %d crash points, fewer than %d", tot.points, target)
	}
}

// TestTortureIOError runs the torture's workload, every component at once,
// with one storage operation failing at a random point: EIO once, ENOSPC
// on every write from then on, EIO at a sync, or EIO at a write after part
// of it reached the store. Every call returns its result or ErrFailed, no
// Pool buffer is left out, and Close returns nil only if nothing failed.
// Then crash images of the trace as the failure left it, the unsynced
// writes each kept, dropped or torn, are checked as TestTorture checks its
// images: every transaction whose Commit returned is there, one whose
// Commit failed wholly or not at all, in commit order, with its stamps,
// slots and root bytes; the log's entries as the log crash test requires;
// and some images take more transactions.
func TestTortureIOError(t *testing.T) {
	seed := testSeed(t, "torture.seed", *tortureSeed)
	rounds := tortureFaultRounds
	if crashSampled() || testing.Short() {
		rounds /= 2
	}
	var tot tortureTotals
	for round := *tortureRound; round < *tortureRound+rounds && !t.Failed(); round++ {
		rng := rand.New(rand.NewPCG(seed, uint64(round)|1<<40))
		f := ioConcPick(round%ioConcKinds, rng, tortureFaultOps, tortureFaultSyncs)
		t.Logf("round %d: %s at %d", round, f.kind, f.at)
		tortureRunRound(t, seed, round, &tot, &f)
	}
	tortureReport(t, "%d rounds with an I/O error: it failed the device in %d, failed an operation whose error the device ignores in %d, never came in %d; %d committed mixed transactions, %d log entries; workloads %v",
		tot.rounds, tot.faultsFailed, tot.faultsIgnored, tot.faultsUnfired, tot.txns, tot.entries, tot.workload.Round(time.Millisecond))
	tortureReport(t, "images: %d opened, %d held commits beyond the last returned, %d took %d more transactions; %d pages and slots compared, %d stamps verified, %d log entries read through the index; checking %v",
		tot.opened, tot.beyondReturned, tot.continued, tot.continuedTxns, tot.pagesCompared, tot.slotsChecked, tot.logIndexed, tot.checking.Round(time.Millisecond))
	tortureReport(t, "violations: %d", tot.violations)
	if tot.faultsFailed < tot.rounds*2/3 {
		t.Errorf("the fault failed the device in only %d of %d rounds", tot.faultsFailed, tot.rounds)
	}
}

// tortureReport logs a line, and prints it where go test -v shows it
// outside the test's log too, so that a CI log shows the counts.
func tortureReport(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf(format, args...)
	if testing.Verbose() {
		fmt.Fprintf(os.Stdout, "torture: "+format+"\n", args...)
	}
}

// tortureRunRound runs the workload of one round and crashes it. With f,
// the store fails an operation as f says: the calls then return nil or
// ErrFailed, and the round crashes the trace as the failure left it
// (tortureFaultImages images) instead of at its sync and random points.
func tortureRunRound(t *testing.T, seed uint64, round int, tot *tortureTotals, f *ioConcFault) {
	opts := tortureOptions()
	store := simstore.New(opts.MaxSize)
	defer store.Close()
	o, err := opts.withDefaults()
	var d *Device
	if err == nil {
		// Slow syncs, as a disk's are, so that commits group.
		d, err = createOn(crashStore{Store: store, syncDelay: 50 * time.Microsecond}, o)
	}
	if err != nil {
		t.Fatal(err)
	}
	m := &buddyCrashModel{createdAt: store.Ops()}
	// Fewer buffers than users, so that Get parks now and then.
	pool, err := NewPool(3, 8<<10)
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	rootOff, _ := d.Root()
	w, err := newTortureWorkload(d, store, m, pool, make([]byte, tortureRootBytes-tortureIndexBytes))
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	l := mustLog(t, d, "log")
	// One Relocate in 25 fails: its GC transaction rolls back.
	owner := &crashOwner{d: d, rootOff: rootOff, slots: tortureIndexBytes / logCrashSlotBytes, live: map[uint64]*crashLive{}, failEvery: 25}
	// A nearly full ring: appends race GC for the space it frees.
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: 24 << 10, RelocationReserveBytes: 16 << 10}); err != nil {
		d.Close()
		t.Fatal(err)
	}
	ap := &logCrashAppender{d: d, l: l, store: store, owner: owner, pool: pool}
	var faultMu sync.Mutex
	if f != nil {
		f.set(store, &faultMu, func(simstore.Op) {})
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, tortureCommitters+tortureAppenders)
	for c := range tortureCommitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.committer(rand.New(rand.NewPCG(seed, uint64(round)<<32|uint64(c))), tortureTxns, nil, false); err != nil {
				errs <- fmt.Errorf("committer %d: %w", c, err)
			}
		}()
	}
	for a := range tortureAppenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ap.run(rand.New(rand.NewPCG(seed, uint64(round)<<32|1<<16|uint64(a))), tortureEntries); err != nil {
				errs <- fmt.Errorf("appender %d: %w", a, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failedCalls := 0
	for err := range errs {
		if f != nil && errors.Is(err, ErrFailed) {
			failedCalls++
			continue
		}
		t.Errorf("round %d: %v", round, err)
	}
	failed := d.failure.Load() != nil
	if !t.Failed() {
		if !failed {
			if err := w.compare(); err != nil {
				t.Errorf("round %d: after the workload: %v", round, err)
			}
		}
		if s := pool.Stats(); s.InUse != 0 {
			t.Errorf("round %d: %d pool buffers still out after the workload", round, s.InUse)
		}
	}
	stats := l.Stats()
	if err := d.Close(); err != nil && !(failed && errors.Is(err, ErrFailed)) {
		t.Errorf("round %d: Close: %v", round, err)
	} else if err == nil && failed {
		t.Errorf("round %d: Close returned nil on a failed device", round)
	}
	if f != nil {
		store.SetFault(nil)
		switch {
		case f.failedOp == nil:
			tot.faultsUnfired++
		case failedCalls == 0 && !failed:
			tot.faultsIgnored++
		default:
			tot.faultsFailed++
		}
	}
	if t.Failed() {
		pool.Close()
		t.FailNow()
	}
	// The images that take more transactions stage their stamps here too.
	defer func() {
		if err := pool.Close(); err != nil {
			t.Errorf("round %d: closing the pool: %v", round, err)
		}
	}()
	elapsed := time.Since(start)
	tot.workload += elapsed
	tot.rounds++
	tot.txns += len(m.txns)
	tot.entries += len(ap.entries)
	tot.ops += store.Ops()
	tot.syncs += len(store.SyncPoints())
	tot.pageAllocs += w.allocs
	tot.slotAllocs += w.slotAllocs
	tot.frees += w.frees
	tot.noSpace += w.noSpace
	tot.rootWriting += w.rootWriting
	tot.reused += w.reused
	tot.relocations += owner.relocate
	tot.wraps += int(stats.Head / logCrashRingBytes)

	rseed := seed ^ uint64(round)*0x9e3779b97f4a7c15
	c := &tortureChecker{
		t: t, seed: rseed, round: round, store: store, m: m, rootOff: rootOff, pool: pool,
		roots: newPrefixModel(w.rootBase, w.roots, m.createdAt),
		log:   &logCrashChecker{t: t, entries: ap.entries, rootOff: rootOff, slots: tortureIndexBytes / logCrashSlotBytes},
		tot:   tot,
	}
	var points []buddyCrashPoint
	if f != nil {
		for i := range tortureFaultImages {
			points = append(points, buddyCrashPoint{n: store.Ops(), stream: uint64(i)})
		}
	} else {
		for i, s := range crashSyncSample(t, store.SyncPoints(), rseed) {
			points = append(points, buddyCrashPoint{n: s, stream: uint64(2 * i), sync: true}, buddyCrashPoint{n: s + 1, stream: uint64(2*i + 1), sync: true})
		}
		rng := rand.New(rand.NewPCG(rseed, 1))
		for i := range crashSampledPoints(tortureRandomPoints) {
			points = append(points, buddyCrashPoint{n: rng.IntN(store.Ops() + 1), stream: 1<<32 | uint64(i)})
		}
	}
	// Ascending: the store replays its trace about once in all.
	slices.SortStableFunc(points, func(a, b buddyCrashPoint) int { return a.n - b.n })
	start = time.Now()
	for i, p := range points {
		if p.sync {
			tot.syncPoints++
		}
		tot.points++
		c.check(p.n, p.stream, i%tortureContinueEvery == 0)
	}
	tot.checking += time.Since(start)
	tot.logIndexed += c.log.indexed
	tot.logWalked += c.log.walked
	t.Logf("round %d: %d mixed transactions (%d rolled back), %d log entries (%d relocations, %d failed Relocate calls, %d GC runs, %d ring wraps), %d pages reused; %d ops, %d syncs; crashed at %d points; %v + %v",
		round, len(m.txns), w.rollbacks, len(ap.entries), owner.relocate, owner.failed, stats.GCRuns, stats.Head/logCrashRingBytes, w.reused,
		store.Ops(), len(store.SyncPoints()), len(points), elapsed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// ---------------------------------------------------------------------------
// The workload.

// tortureWorkload runs mixed transactions on a device and keeps the model:
// the buddy crash test's (pages, and here slots too, as owners with stamps;
// who owns each min page; frees no checkpoint covers yet), the sub-page
// slots, and the root writes of every transaction.
type tortureWorkload struct {
	*buddyCrashWorkload
	classes []*Subpages

	// Guarded by the embedded mu.
	slots    map[Addr]*buddyCrashOwner // live slots: committed, or allocated by the open transaction
	roots    []*crashTxn               // the root writes of m.txns, index for index
	rootBase []byte                    // the committers' part of the root area before m.txns
	rootNow  []byte                    // ... and after them

	slotAllocs, rootWriting int
}

func newTortureWorkload(d *Device, store *simstore.Store, m *buddyCrashModel, pool *Pool, root []byte) (*tortureWorkload, error) {
	w := &tortureWorkload{
		buddyCrashWorkload: newBuddyCrashWorkload(d, store, m),
		slots:              map[Addr]*buddyCrashOwner{},
		rootBase:           root, rootNow: slices.Clone(root),
	}
	w.pool = pool
	for _, size := range tortureSlotSizes {
		s, err := d.Subpages(size)
		if err != nil {
			return nil, err
		}
		w.classes = append(w.classes, s)
	}
	for a, o := range m.base {
		if w.isSlot(a) {
			w.setUnits(a, nil) // min pages are the caller's pages only
			w.slots[a] = o
		}
	}
	return w, nil
}

func (w *tortureWorkload) isSlot(a Addr) bool { return a.Size() < w.g.pageBytes(0) }

func (w *tortureWorkload) rootArea() int64 {
	off, _ := w.d.Root()
	return off + tortureIndexBytes
}

// tortureTxn is what one open transaction did, to adopt at Commit or undo
// at Rollback.
type tortureTxn struct {
	w      *tortureWorkload
	tx     *Txn
	live   []*buddyCrashOwner // what the committer owned when it began
	allocs []*buddyCrashOwner
	freed  []*buddyCrashOwner
	stamps []*buddyCrashOwner // journaled owners to stamp before Commit
	writes []rootWrite
	// gens are the journaled stamps written, for the owners in stamps.
	gens []*buddyCrashWrite
}

// owned returns what the committer owns as the transaction sees it.
func (x *tortureTxn) owned() []*buddyCrashOwner {
	var all []*buddyCrashOwner
	for _, o := range append(slices.Clip(x.live), x.allocs...) {
		if !slices.Contains(x.freed, o) {
			all = append(all, o)
		}
	}
	return all
}

// allocPage allocates a page of a random size.
func (x *tortureTxn) allocPage(rng *rand.Rand) error {
	w := x.w
	size := buddyCrashSize(rng, w.g)
	a, err := x.tx.Alloc(size)
	w.mu.Lock()
	defer w.mu.Unlock()
	if errors.Is(err, ErrNoSpace) {
		w.noSpace++
		return nil
	}
	if err == nil {
		err = w.checkAlloc(a, size)
	}
	if err != nil {
		return fmt.Errorf("Alloc(%d): %w", size, err)
	}
	o := &buddyCrashOwner{addr: a, id: w.nextID, journaled: rng.IntN(3) == 0}
	w.nextID++
	w.allocs++
	w.setUnits(a, o)
	x.allocs = append(x.allocs, o)
	if o.journaled && rng.IntN(5) != 0 {
		x.stamps = append(x.stamps, o)
	}
	return nil
}

// allocSlot allocates a slot of a random class. Its parent must overlap
// no live page and no page whose free a checkpoint does not cover yet.
func (x *tortureTxn) allocSlot(rng *rand.Rand) error {
	w := x.w
	s := w.classes[rng.IntN(len(w.classes))]
	a, err := s.Alloc(x.tx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if errors.Is(err, ErrNoSpace) {
		w.noSpace++
		return nil
	}
	if err != nil {
		return fmt.Errorf("slot Alloc in class %d: %w", s.SlotBytes(), err)
	}
	parentBytes := s.SlotBytes() * subpageSlotsPerParent
	parent := makeAddr(a.Offset()&^(parentBytes-1), uint(bits.TrailingZeros64(uint64(parentBytes))))
	switch {
	case a.Size() != s.SlotBytes():
		return fmt.Errorf("slot Alloc in class %d returned %v", s.SlotBytes(), a)
	case w.slots[a] != nil:
		return fmt.Errorf("slot Alloc returned %v, which allocation %d holds", a, w.slots[a].id)
	}
	if err := w.checkAlloc(parent, parentBytes); err != nil {
		return fmt.Errorf("the parent of slot %v: %w", a, err)
	}
	o := &buddyCrashOwner{addr: a, id: w.nextID, journaled: true}
	w.nextID++
	w.slotAllocs++
	w.slots[a] = o
	x.allocs = append(x.allocs, o)
	if rng.IntN(5) != 0 {
		x.stamps = append(x.stamps, o)
	}
	return nil
}

// free frees one of the committer's pages or slots.
func (x *tortureTxn) free(rng *rand.Rand) error {
	w := x.w
	owned := x.owned()
	if len(owned) == 0 {
		return nil
	}
	o := owned[rng.IntN(len(owned))]
	if w.isSlot(o.addr) {
		if err := subpageClassOf(w.classes, o.addr).Free(x.tx, o.addr); err != nil {
			return fmt.Errorf("slot Free(%v) of allocation %d: %w", o.addr, o.id, err)
		}
	} else if err := x.tx.Free(o.addr); err != nil {
		return fmt.Errorf("Free(%v) of allocation %d: %w", o.addr, o.id, err)
	}
	x.freed = append(x.freed, o)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.isSlot(o.addr) {
		delete(w.slots, o.addr)
		return nil
	}
	w.setUnits(o.addr, nil)
	// The writer is held: the transaction commits as the next sequence
	// number or not at all.
	end := o.addr.Offset() + o.addr.Size()
	w.freed = append(w.freed, buddyCrashFreed{off: o.addr.Offset(), end: end, seq: w.d.txSeq + 1, by: x.tx})
	return nil
}

// stamp picks a journaled page or slot to stamp before Commit.
func (x *tortureTxn) stamp(rng *rand.Rand) {
	var journaled []*buddyCrashOwner
	for _, o := range x.owned() {
		if o.journaled {
			journaled = append(journaled, o)
		}
	}
	if len(journaled) > 0 {
		x.stamps = append(x.stamps, journaled[rng.IntN(len(journaled))])
	}
}

// finish writes the journaled stamps of the owners still owned, and the
// root writes.
func (x *tortureTxn) finish(rng *rand.Rand) error {
	w := x.w
	for _, o := range x.stamps {
		if slices.Contains(x.freed, o) {
			continue
		}
		w.mu.Lock()
		gen := w.nextGen
		w.nextGen++
		w.mu.Unlock()
		if err := x.tx.Write(o.addr.Offset(), buddyCrashSlot(o.addr, gen)); err != nil {
			return fmt.Errorf("Write into %v of allocation %d: %w", o.addr, o.id, err)
		}
		x.gens = append(x.gens, &buddyCrashWrite{gen: gen, issuedAt: -1, durableAt: -1})
	}
	if rng.IntN(5) < 2 {
		x.writes = randomTxnWrites(rng, int64(len(w.rootNow)), false)
		for _, wr := range x.writes {
			if err := x.tx.Write(w.rootArea()+wr.off, wr.data); err != nil {
				return fmt.Errorf("root Write(%d, %d bytes): %w", wr.off, len(wr.data), err)
			}
		}
	}
	return nil
}

// undo forgets the transaction in the model, before Rollback.
func (x *tortureTxn) undo() {
	w := x.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range x.freed {
		if w.isSlot(o.addr) {
			w.slots[o.addr] = o
		} else {
			w.setUnits(o.addr, o)
		}
	}
	for _, o := range x.allocs { // after: some were freed too
		if w.isSlot(o.addr) {
			delete(w.slots, o.addr)
		} else {
			w.setUnits(o.addr, nil)
		}
	}
	w.freed = slices.DeleteFunc(w.freed, func(f buddyCrashFreed) bool { return f.by == x.tx })
	w.rollbacks++
}

// record adds the transaction to the model in commit order, just before
// Commit, with the writer held.
func (x *tortureTxn) record() (*buddyCrashTxn, *crashTxn) {
	w := x.w
	w.mu.Lock()
	defer w.mu.Unlock()
	at := w.store.Ops()
	// The transaction's net effect, as apply adds its allocs, then drops
	// its frees: a slot freed may be allocated again by the same
	// transaction, which then holds it.
	rec := &buddyCrashTxn{index: len(w.m.txns), seq: w.d.txSeq + 1, startedAt: at}
	held := map[Addr]bool{}
	for _, o := range x.allocs {
		o.allocTxn = rec
		if !slices.Contains(x.freed, o) {
			rec.allocs = append(rec.allocs, o)
			held[o.addr] = true
		}
	}
	for _, o := range x.freed {
		if !held[o.addr] {
			rec.frees = append(rec.frees, o.addr)
		}
		if !w.isSlot(o.addr) {
			for off := o.addr.Offset(); off < o.addr.Offset()+o.addr.Size(); off += w.g.pageBytes(0) {
				w.everFreed[off] = true
			}
		}
	}
	i := 0
	for _, o := range x.stamps {
		if !slices.Contains(x.freed, o) {
			x.gens[i].txn = rec
			o.writes = append(o.writes, x.gens[i])
			i++
		}
	}
	w.frees += len(x.freed)
	w.journaledWrites += i
	ct := &crashTxn{writes: x.writes, startedAt: at}
	if len(x.writes) > 0 {
		w.rootWriting++
	}
	applyRootWrites(w.rootNow, x.writes)
	w.m.txns = append(w.m.txns, rec)
	w.roots = append(w.roots, ct)
	return rec, ct
}

// committer runs txns mixed transactions, starting from the pages and
// slots in live, which it owns. With checkEach it compares the device with
// the model after each (meaningful with one committer only).
func (w *tortureWorkload) committer(rng *rand.Rand, txns int, live []*buddyCrashOwner, checkEach bool) error {
	d := w.d
	after := &buddyCrashAfter{w: w.buddyCrashWorkload}
	for i := range txns {
		tx, err := d.Begin()
		if err != nil {
			return fmt.Errorf("txn %d: Begin: %w", i, err)
		}
		x := &tortureTxn{w: w, tx: tx, live: live}
		err = nil
		for n := 1 + rng.IntN(tortureOpsMax); n > 0 && err == nil; n-- {
			switch r := rng.IntN(100); {
			case r < 30:
				err = x.allocPage(rng)
			case r < 55:
				err = x.allocSlot(rng)
			case r < 85:
				err = x.free(rng)
			default:
				x.stamp(rng)
			}
		}
		if err == nil {
			err = x.finish(rng)
		}
		if err != nil || rng.IntN(10) == 0 {
			// Undo the model while the writer is still held.
			x.undo()
			rollbackOnExit(tx)
			if err != nil {
				return fmt.Errorf("txn %d: %w", i, err)
			}
			continue
		}
		rec, ct := x.record()
		if err := tx.Commit(); err != nil {
			// Never returned: a crash image may hold it or not.
			w.mu.Lock()
			rec.returnedAt, ct.returnedAt = math.MaxInt, math.MaxInt
			w.mu.Unlock()
			return fmt.Errorf("txn %d (%d allocs, %d frees): Commit: %w", i, len(x.allocs), len(x.freed), err)
		}
		live = x.owned()
		if err := after.committed(rng, tx, rec, live); err != nil {
			return fmt.Errorf("txn %d: %w", i, err)
		}
		w.mu.Lock()
		ct.returnedAt = rec.returnedAt
		w.mu.Unlock()
		if checkEach {
			if err := w.compare(); err != nil {
				return fmt.Errorf("txn %d: %w", i, err)
			}
		}
	}
	return after.finish()
}

// compare checks the device against the model after every transaction:
// Check, the pages and slots, their stamps and the root area.
func (w *tortureWorkload) compare() error {
	got, err := tortureHoldings(w.d)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	k := len(w.m.txns)
	want := w.m.stateAt(k)
	if !buddyCrashSameKeys(got, want) {
		return fmt.Errorf("the device holds %d pages and slots, the model %d%s", len(got), len(want), buddyCrashDiff(got, want, w.m))
	}
	if _, _, msg := (&buddyCrashChecker{}).checkSlots(w.d, want, k, w.store.Ops()); msg != "" {
		return errors.New(msg)
	}
	root := make([]byte, len(w.rootNow))
	if _, err := w.d.ReadAt(root, w.rootArea()); err != nil {
		return err
	}
	if !slices.Equal(root, w.rootNow) {
		return fmt.Errorf("the root area differs from the model's after %d transactions", k)
	}
	return nil
}

// tortureHoldings runs Check on d and returns what the caller holds: every
// allocated page that is not a sub-page parent, and every live slot.
func tortureHoldings(d *Device) (map[Addr]bool, error) {
	slots, _, held, err := subpageSlots(d)
	if err != nil {
		return nil, err
	}
	maps.Copy(held, slots)
	return held, nil
}

// ---------------------------------------------------------------------------
// Checking crash images.

type tortureChecker struct {
	t       *testing.T
	seed    uint64 // the round's: with a point's stream, the fate of unsynced writes
	round   int
	store   *simstore.Store
	m       *buddyCrashModel
	roots   *prefixModel
	rootOff int64
	pool    *Pool
	log     *logCrashChecker
	slots   buddyCrashChecker // counts the stamps checkSlots verified
	tot     *tortureTotals
}

func (c *tortureChecker) fail(n int, stream uint64, desc, format string, args ...any) {
	c.t.Helper()
	c.tot.violations++
	c.t.Errorf("round %d: crash after %d of %d ops (stream %d): %s\nimage: %s", c.round, n, c.store.Ops(), stream, fmt.Sprintf(format, args...), desc)
	if c.tot.violations >= tortureMaxViolations {
		c.t.Fatalf("%d violations; stopping", c.tot.violations)
	}
}

// check opens the image of a crash after n operations and compares it with
// the model; with more, it then takes more transactions.
func (c *tortureChecker) check(n int, stream uint64, more bool) {
	t := c.t
	img, err := c.store.Image(n, rand.New(rand.NewPCG(c.seed, stream)))
	if err != nil {
		t.Fatalf("round %d: Image(%d): %v", c.round, n, err)
	}
	desc := img.Describe()
	d, err := openOn(img, &Options{})
	if err != nil {
		img.Close()
		if n < c.m.createdAt && errors.Is(err, ErrCorrupt) {
			c.tot.createFailed++ // a crash inside Create: no device yet
			return
		}
		c.fail(n, stream, desc, "Open: %v", err)
		return
	}
	defer d.Close()
	c.tot.opened++
	got, err := tortureHoldings(d)
	if err != nil {
		c.fail(n, stream, desc, "after recovery: %v", err)
		return
	}
	root := make([]byte, len(c.roots.base))
	if _, err := d.ReadAt(root, c.rootOff+tortureIndexBytes); err != nil {
		t.Fatal(err)
	}
	lo, hi := c.m.bounds(n)
	if n < c.m.createdAt {
		lo = 0
	}
	owners, k, why := c.match(d, got, root, lo, hi, n)
	if k < 0 {
		c.fail(n, stream, desc, "%s", why)
		return
	}
	logged := c.log.violations
	c.log.checkOpen(d, img, n, more)
	if c.log.violations > logged {
		c.tot.violations += c.log.violations - logged
		if c.tot.violations >= tortureMaxViolations {
			t.Fatalf("%d violations; stopping", c.tot.violations)
		}
	}
	if more && n >= c.m.createdAt {
		c.continueOn(d, img, owners, root, n, stream, desc)
	}
}

// match finds the prefix k in [lo, hi] whose pages and slots, stamps and
// root area the recovered device holds, and returns its owners, or -1 and
// why none fits.
func (c *tortureChecker) match(d *Device, got map[Addr]bool, root []byte, lo, hi, n int) (map[Addr]*buddyCrashOwner, int, string) {
	ks := c.roots.byHash[maphash.Bytes(c.roots.hashSeed, root)]
	owners := c.m.stateAt(lo)
	why := ""
	for k := lo; k <= hi; k++ {
		if k == lo+1 {
			owners = maps.Clone(owners)
		}
		if k > lo {
			c.m.txns[k-1].apply(owners)
		}
		if _, ok := slices.BinarySearch(ks, k); !ok {
			continue
		}
		if !buddyCrashSameKeys(got, owners) {
			if why == "" {
				why = fmt.Sprintf("the root area is that of prefix %d, the %d pages and slots are not%s", k, len(got), buddyCrashDiff(got, owners, c.m))
			}
			continue
		}
		checked, _, msg := c.slots.checkSlots(d, owners, k, n)
		if msg != "" {
			if why == "" {
				why = fmt.Sprintf("recovered to prefix %d of %d: %s", k, len(c.m.txns), msg)
			}
			continue
		}
		if k > lo {
			c.tot.beyondReturned++
		}
		c.tot.pagesCompared += len(got)
		c.tot.slotsChecked += checked
		return owners, k, ""
	}
	if why == "" {
		why = c.roots.explain(root, lo, hi, ks)
	}
	return nil, -1, why
}

// continueOn runs a few more mixed transactions on a recovered device, from
// what it holds, comparing it with a new model after each.
func (c *tortureChecker) continueOn(d *Device, img *simstore.Store, owners map[Addr]*buddyCrashOwner, root []byte, n int, stream uint64, desc string) {
	// What the recovered stamps hold is for the image check above; the
	// new model knows only the stamps written from now on.
	base := map[Addr]*buddyCrashOwner{}
	var live []*buddyCrashOwner
	for _, a := range slices.Sorted(maps.Keys(owners)) {
		o := &buddyCrashOwner{addr: a, id: owners[a].id, journaled: owners[a].journaled}
		base[a] = o
		live = append(live, o)
	}
	w, err := newTortureWorkload(d, img, &buddyCrashModel{base: base}, c.pool, root)
	if err == nil {
		rng := rand.New(rand.NewPCG(c.seed, stream|1<<63))
		err = w.committer(rng, 2+rng.IntN(3), live, true)
	}
	if err != nil {
		c.fail(n, stream, desc, "after recovery, more transactions: %v", err)
		return
	}
	c.tot.continued++
	c.tot.continuedTxns += len(w.m.txns)
}

// TestCommitDuringSyncWaitsForData is what the torture found, reduced: a
// Device.Sync that has taken the flag saying that WriteAt data awaits a
// sync, and whose fsync has not completed, must not let a concurrent
// commit's journal record reach the disk ahead of that data. A crash
// between the two would keep the record (here a root-area write; in the
// torture a log tail past an entry) and lose the data written before it.
func TestCommitDuringSyncWaitsForData(t *testing.T) {
	seed := testSeed(t, "torture.seed", *tortureSeed)
	d, gs, a, data, written, release, synced := startSyncUnderWay(t)
	rootOff, _ := d.Root()
	marker := []byte("committed after the data")
	committed := make(chan error, 1)
	go func() { committed <- d.Update(func(tx *Txn) error { return tx.Write(rootOff, marker) }) }()
	// Give the commit the time to reach the disk if it does not wait.
	time.Sleep(20 * time.Millisecond)
	release()
	if err := errors.Join(<-synced, <-committed, d.Close()); err != nil {
		t.Fatal(err)
	}
	images, withMarker := 0, 0
	for n := written; n <= gs.Ops(); n++ {
		for stream := range uint64(32) {
			img, err := gs.Image(n, rand.New(rand.NewPCG(seed, stream)))
			if err != nil {
				t.Fatal(err)
			}
			desc := img.Describe()
			rd, err := openOn(img, &Options{})
			if err != nil {
				img.Close()
				t.Fatalf("crash after %d ops: Open: %v", n, err)
			}
			images++
			got, mark := make([]byte, len(data)), make([]byte, len(marker))
			_, err1 := rd.ReadAt(got, a.Offset())
			_, err2 := rd.ReadAt(mark, rootOff)
			rd.Close()
			if err := errors.Join(err1, err2); err != nil {
				t.Fatal(err)
			}
			if slices.Equal(mark, marker) {
				withMarker++
				if !slices.Equal(got, data) {
					t.Fatalf("crash after %d ops (stream %d): the commit made after the WriteAt is on disk, the WriteAt's data is not (%x)\nimage: %s", n, stream, got, desc)
				}
			}
		}
	}
	t.Logf("%d images of the %d ops from the WriteAt on, %d holding the commit: all hold the data", images, gs.Ops()-written, withMarker)
}

// TestEmptyCommitDuringSyncWaitsForData checks the same for a commit that
// writes nothing: it promises every WriteAt before it durable, so it must
// not return while a Device.Sync that took those bytes is still syncing.
func TestEmptyCommitDuringSyncWaitsForData(t *testing.T) {
	d, _, _, _, _, release, synced := startSyncUnderWay(t)
	defer d.Close()
	committed := make(chan error, 1)
	go func() { committed <- d.Update(func(*Txn) error { return nil }) }()
	// Give the commit the time to return if it does not wait.
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-committed:
		release()
		t.Fatalf("an empty commit returned (%v) while the sync of earlier in-place data was still under way", err)
	default:
	}
	release()
	if err := errors.Join(<-synced, <-committed); err != nil {
		t.Fatal(err)
	}
}

// TestDataOnlyCommitsLeaveNoOverlay commits, again and again, transactions
// that write nothing but promise the bytes written in place before them:
// the journal syncs those bytes and has no record to write, so nothing of
// the transaction waits to go home, and the overlay of commits not yet at
// home must not keep it. Kept, every such commit stayed there until the
// next one that wrote a record, and each commit copied, and each read
// walked, the whole list: an engine that only writes in place and commits
// slowed down without end.
func TestDataOnlyCommitsLeaveNoOverlay(t *testing.T) {
	d, _ := simDevice(t, crashOptions(t))
	a := allocPages(t, d, 1, 4096)[0]
	for i := range 100 {
		if _, err := d.WriteAt(buddyCrashSlot(a, uint64(i)), a.Offset()); err != nil {
			t.Fatal(err)
		}
		if err := d.Update(func(*Txn) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(d.pending.list()); n != 0 {
		t.Errorf("after 100 commits of in-place data alone, %d transactions wait in the overlay, want none", n)
	}
}

// startSyncUnderWay creates a device on a gated store, writes a new page's
// data in place, and starts a Device.Sync that has taken the data but waits
// before its fsync. It returns the device, the store, the page, its data,
// the store's op count before the sync, what lets the fsync go on, and
// where the Sync's result arrives.
func startSyncUnderWay(t *testing.T) (d *Device, gs *gatedStore, a Addr, data []byte, written int, release func(), synced <-chan error) {
	t.Helper()
	o := crashOptions(t)
	gs = &gatedStore{Store: simstore.New(o.MaxSize)}
	t.Cleanup(func() { gs.Store.Close() })
	d, err := createOn(gs, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Update(func(tx *Txn) (err error) { a, err = tx.Alloc(4096); return err }); err != nil {
		d.Close()
		t.Fatal(err)
	}
	data = buddyCrashSlot(a, 1)
	if _, err := d.WriteAt(data, a.Offset()); err != nil {
		d.Close()
		t.Fatal(err)
	}
	written = gs.Ops()
	blocked, release := gs.arm(t)
	done := make(chan error, 1)
	go func() { done <- d.Sync() }()
	<-blocked // the flag is taken; the fsync waits
	return d, gs, a, data, written, release, done
}
