package pagealloc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
	"github.com/pagealloc/pagealloc/internal/storage"
)

var ioConcSeed = flag.Uint64("ioconc.seed", 0, "seed for TestIOErrorConcurrentCommitters (0: time)")

const (
	ioConcMaxWorkers = 6
	ioConcTxns       = 12 // per worker
	ioConcStampBytes = 64
	ioConcTimeout    = 60 * time.Second // a hang, not a speed goal
	ioConcSyncDelay  = 100 * time.Microsecond
)

// TestIOErrorConcurrentCommitters runs transactions from several
// goroutines at once, so that their commits share journal groups and
// fsyncs, and fails one storage operation at a random point of the run:
// EIO once, ENOSPC on every write from then on, EIO at a sync (a failed
// fsync, after which the kernel may have dropped the pages it did not
// write), or EIO at a write after part of it reached the store (see
// ioConcPick). Every transaction allocates pages, journals a stamp into its
// first page and into its goroutine's cell of the root area, and may free
// a page an earlier transaction of its goroutine committed.
//
// Every Commit returns nil or ErrFailed, every call after the failure
// ErrFailed, and no goroutine hangs. Reopened from the file as left and
// from a crash image of it (unsynced writes kept, dropped or torn as a
// seeded random choice says), the device passes Check and holds the
// transactions whose Commit returned nil, each failed one wholly or not at
// all, and those in commit order: no transaction is there whose
// predecessor is missing. The heap holds exactly the pages those
// transactions left allocated, the stamps and the root cells theirs.
//
// The seed fixes each round's choices, not how the goroutines interleave.
func TestIOErrorConcurrentCommitters(t *testing.T) {
	seed := testSeed(t, "ioconc.seed", *ioConcSeed)
	rounds := 120
	if testing.Short() || crashSampled() {
		rounds = 30
	}
	o := crashOptions(t)
	o.MaxSize = 16 << 20
	o.GrowthStep = 2 * o.MaxPageSize

	// The operations a clean round makes, to place the points in.
	clean := ioConcRun(t, o, rand.New(rand.NewPCG(seed, 0)), nil)
	if len(clean.problems) > 0 {
		t.Fatalf("clean round:\n\t%s", strings.Join(clean.problems, "\n\t"))
	}
	span, syncs := clean.ops, clean.syncs
	t.Logf("clean round: %d transactions committed, %d operations after Create, %d of them syncs and %d journal writes",
		clean.committed, span, syncs, clean.journalWrites)

	fired, outcomes := 0, map[string]int{}
	together := 0
	for r := range rounds {
		rng := rand.New(rand.NewPCG(seed, uint64(r)+1))
		f := ioConcPick(r%ioConcKinds, rng, span, syncs)
		res := ioConcRun(t, o, rng, &f)
		if len(res.problems) > 0 {
			t.Fatalf("round %d (seed %d), %s at %d: failed %v\n\t%s", r, seed, f.kind, f.at, f.failedOp, strings.Join(res.problems, "\n\t"))
		}
		if f.failedOp != nil {
			fired++
		}
		if res.failedTogether {
			together++
		}
		outcomes[res.outcome]++
	}
	t.Logf("%d rounds, the fault fired in %d; in %d several commits failed together", rounds, fired, together)
	for _, o := range slices.Sorted(maps.Keys(outcomes)) {
		t.Logf("  %4d rounds: %s", outcomes[o], o)
	}
	// A round's operations vary with its groups, so a point may lie past
	// the end of its round; most must not, or the test shows little.
	if fired < rounds*2/3 {
		t.Errorf("the fault fired in only %d of %d rounds", fired, rounds)
	}
}

// ioConcKinds is how many kinds of fault ioConcPick picks from.
const ioConcKinds = 4

// ioConcPick returns fault i of ioConcKinds: EIO once, ENOSPC from then
// on, EIO at a sync, EIO at a write after part of it reached the store
// (see ioSweepPartial), at a random point in the first three quarters of a
// clean round's span operations (or syncs, or writes), so that it falls
// inside the workload although a round's groups, and so its operations,
// differ from run to run.
func ioConcPick(i int, rng *rand.Rand, span, syncs int) ioConcFault {
	switch i {
	case 0:
		return ioConcFault{kind: "EIO once", at: rng.IntN(span * 3 / 4), errno: syscall.EIO}
	case 1:
		return ioConcFault{kind: "ENOSPC from then on", at: rng.IntN(span * 3 / 4), errno: syscall.ENOSPC, sticky: true}
	case 2:
		return ioConcFault{kind: "EIO at a sync", at: rng.IntN(max(1, syncs*3/4)), errno: syscall.EIO, syncOnly: true}
	}
	return ioConcFault{kind: "EIO after part of a write", at: rng.IntN(max(1, (span-syncs)*3/4)), errno: syscall.EIO, partial: true}
}

// set makes f (nil: none) store's fault, under mu, and calls count,
// under mu too, with each operation that goes through.
func (f *ioConcFault) set(store *simstore.Store, mu *sync.Mutex, count func(simstore.Op)) {
	store.SetFault(func(op simstore.Op) error {
		mu.Lock()
		defer mu.Unlock()
		if f != nil {
			if err := f.fault(op); err != nil {
				return err
			}
		}
		count(op)
		return nil
	})
}

// ioConcFault fails the at-th operation (or sync) after Create, or with
// onArm the first write once armed is set.
type ioConcFault struct {
	kind     string
	at       int
	errno    syscall.Errno
	sticky   bool // every write after the point fails too
	syncOnly bool // at counts syncs only
	partial  bool // at counts writes only, and the write fails part-way
	onArm    bool
	armed    bool
	seen     int
	failedOp *simstore.Op
}

func (f *ioConcFault) fault(op simstore.Op) error {
	switch {
	case f.failedOp != nil:
		if f.sticky && op.Kind == simstore.OpWrite {
			return f.errno
		}
		return nil
	case f.onArm:
		if !f.armed || op.Kind != simstore.OpWrite {
			return nil
		}
		f.failedOp = &op
		return f.errno
	case f.syncOnly && op.Kind != simstore.OpSync, f.partial && op.Kind != simstore.OpWrite:
		return nil
	}
	f.seen++
	switch {
	case f.seen-1 != f.at:
		return nil
	case f.partial:
		f.failedOp = &op
		return &simstore.PartialWrite{N: ioSweepPartial(op), Err: f.errno}
	}
	f.failedOp = &op
	return f.errno
}

// ioConcStore is a simulated store whose syncs take ioConcSyncDelay, as a
// disk's do, so that commits queue behind a journal write and share the
// next one (see crashStore), and whose Close leaves it open for the
// reopen, as ioSweepStore's does.
type ioConcStore struct{ ioSweepStore }

func (s ioConcStore) Sync() error {
	err := s.Store.Sync()
	time.Sleep(ioConcSyncDelay)
	return err
}

// concStore wraps a store for guardedOnNewStore as ioConcStore.
func concStore(s *simstore.Store) storage.Storage { return ioConcStore{ioSweepStore{s}} }

// ioConcTxn is what one transaction did.
type ioConcTxn struct {
	worker, i int
	allocs    []Addr
	frees     []Addr
	seq       uint64 // the commit order Commit gave it; 0: none
	fate      ioFate
}

// ioConcStamp is what transaction i of worker g journals into its first
// page and its worker's root cell.
func ioConcStamp(g, i int, first Addr) []byte {
	p := make([]byte, ioConcStampBytes)
	copy(p, fmt.Sprintf("ioconc worker %d txn %d", g, i))
	binary.LittleEndian.PutUint64(p[ioConcStampBytes-8:], uint64(first))
	return p
}

type ioConcResult struct {
	ops, syncs, journalWrites int
	committed                 int
	failedTogether            bool
	outcome                   string
	problems                  []string
}

func (r *ioConcResult) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// ioConcRun creates a device on a new store, sets f's fault (nil: none),
// runs the workers to the end or the failure, closes the device and checks
// what the store holds, as written and after a crash.
func ioConcRun(t *testing.T, o Options, rng *rand.Rand, f *ioConcFault) *ioConcResult {
	t.Helper()
	workers := 2 + rng.IntN(ioConcMaxWorkers-1)
	seeds := make([]uint64, workers)
	for i := range seeds {
		seeds[i] = rng.Uint64()
	}
	imageSeed := rng.Uint64()
	res := &ioConcResult{}
	guardedOnNewStore(t, ioConcTimeout, "a round", res.problem, o, concStore, func(store *simstore.Store, d *Device) {
		first, ring := store.Ops(), d.geometry.journal
		var mu sync.Mutex // guards the store's fault state and the trace counts
		f.set(store, &mu, func(op simstore.Op) {
			switch {
			case op.Kind == simstore.OpSync:
				res.syncs++
			case op.Kind == simstore.OpWrite && op.Off >= ring.off && op.Off < ring.end():
				res.journalWrites++
			}
		})

		var (
			txns []*ioConcTxn
			wg   sync.WaitGroup
		)
		rootOff, _ := d.Root()
		for g := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ts := ioConcWorker(d, g, rootOff, rand.New(rand.NewPCG(seeds[g], 0)), func(format string, args ...any) {
					mu.Lock()
					res.problem(format, args...)
					mu.Unlock()
				})
				mu.Lock()
				txns = append(txns, ts...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		failed := d.failure.Load() != nil
		closeErr := d.Close()
		if err := closeErr; err == nil && failed {
			res.problem("Close returned nil on a failed device")
		} else if err != nil && !errors.Is(err, ErrFailed) {
			res.problem("Close: %v, want nil or ErrFailed", err)
		}
		store.SetFault(nil)
		mu.Lock()
		res.ops = store.Ops() - first
		mu.Unlock()
		if f == nil && failed {
			res.problem("the device failed without a fault")
		}

		var failedSeqs []uint64
		for _, m := range txns {
			switch m.fate {
			case ioCommitted:
				res.committed++
			case ioFailed:
				if m.seq != 0 {
					failedSeqs = append(failedSeqs, m.seq)
				}
			}
		}
		res.failedTogether = len(failedSeqs) > 1
		img, err := store.Image(store.Ops(), rand.New(rand.NewPCG(imageSeed, 1)))
		if err != nil {
			res.problem("Image: %v", err)
			return
		}
		found := [2]string{
			ioConcVerify(res, "as written", concStore(store), txns, workers, rootOff),
			ioConcVerify(res, "after a crash", img, txns, workers, rootOff),
		}
		switch {
		case len(failedSeqs) == 0 && failed:
			res.outcome = "the device failed outside a Commit"
		case len(failedSeqs) == 0 && closeErr != nil:
			res.outcome = "Close failed"
		case len(failedSeqs) == 0 && f != nil && f.failedOp != nil:
			res.outcome = "nothing failed: the fault failed " + f.failedOp.String()
		case len(failedSeqs) == 0:
			res.outcome = "the fault never fired"
		case len(failedSeqs) == 1:
			res.outcome = fmt.Sprintf("one commit failed: %s as written, %s after a crash", found[0], found[1])
		default:
			res.outcome = fmt.Sprintf("commits failed together: %s as written, %s after a crash", found[0], found[1])
		}
	})
	return res
}

// ioConcWorker runs worker g's transactions until one fails, and returns
// them. It reports through problem what the calls must not do.
func ioConcWorker(d *Device, g int, rootOff int64, rng *rand.Rand, problem func(string, ...any)) []*ioConcTxn {
	var txns []*ioConcTxn
	var owned []Addr // pages of committed transactions not freed by one
	for i := range ioConcTxns {
		failedBefore := d.failure.Load() != nil
		tx, err := d.Begin()
		if err != nil {
			if !errors.Is(err, ErrFailed) {
				problem("worker %d txn %d: Begin: %v, want ErrFailed", g, i, err)
			}
			return txns
		}
		if failedBefore {
			problem("worker %d txn %d: Begin returned a transaction on a failed device", g, i)
		}
		m := &ioConcTxn{worker: g, i: i}
		err = func() error {
			for range 1 + rng.IntN(3) {
				a, err := tx.Alloc(o4K << rng.IntN(3))
				if err != nil {
					return err
				}
				m.allocs = append(m.allocs, a)
			}
			stamp := ioConcStamp(g, i, m.allocs[0])
			if err := tx.Write(m.allocs[0].Offset(), stamp); err != nil {
				return err
			}
			if err := tx.Write(rootOff+int64(g)*ioConcStampBytes, stamp); err != nil {
				return err
			}
			if len(owned) > 2 && rng.IntN(2) == 0 {
				if err := tx.Free(owned[0]); err != nil {
					return err
				}
				m.frees = append(m.frees, owned[0])
			}
			return nil
		}()
		if err != nil {
			if rerr := tx.Rollback(); rerr != nil {
				problem("worker %d txn %d: Rollback after %v: %v", g, i, err, rerr)
			}
			if !errors.Is(err, ErrFailed) {
				problem("worker %d txn %d: %v, want ErrFailed", g, i, err)
			}
			return txns
		}
		txns = append(txns, m)
		err = tx.Commit()
		m.seq = tx.seq
		if err != nil {
			m.fate = ioFailed
			if !errors.Is(err, ErrFailed) {
				problem("worker %d txn %d: Commit: %v, want ErrFailed", g, i, err)
			}
			return txns
		}
		m.fate = ioCommitted
		if m.seq == 0 {
			problem("worker %d txn %d: committed without a sequence number", g, i)
		}
		owned = slices.DeleteFunc(owned, func(a Addr) bool { return slices.Contains(m.frees, a) })
		owned = append(owned, m.allocs...)
	}
	return txns
}

// ioConcVerify opens what store holds and checks it against txns; it
// says which of the failed commits that reached the journal (had a
// sequence number) it found there: all, none or the first ones.
func ioConcVerify(res *ioConcResult, label string, store storage.Storage, txns []*ioConcTxn, workers int, rootOff int64) string {
	rd, err := openOn(store, &Options{})
	if err != nil {
		res.problem("%s: Open: %v", label, err)
		return "unknown"
	}
	defer rd.Close()
	if err := rd.Check(); err != nil {
		res.problem("%s: Check: %v", label, err)
	}
	allocated := map[Addr]bool{}
	err = rd.WalkHeap(func(e HeapExtent) bool {
		if e.Kind == PageAllocated || e.Kind == PageSubpages {
			allocated[makeAddr(e.Offset, uint(bits.TrailingZeros64(uint64(e.Size))))] = true
		}
		return true
	})
	if err != nil {
		res.problem("%s: WalkHeap: %v", label, err)
		return "unknown"
	}

	// Which transactions the device holds: a committed one must be
	// there; a failed one is there if its first page is allocated (no
	// transaction frees a page whose allocation failed to commit).
	present := map[*ioConcTxn]bool{}
	var failedIn, failedOut int
	for _, m := range txns {
		switch m.fate {
		case ioCommitted:
			present[m] = true
		case ioFailed:
			there := allocated[m.allocs[0]]
			present[m] = there
			switch {
			case m.seq == 0 && there:
				res.problem("%s: worker %d txn %d failed before it had a place in the journal, and is there", label, m.worker, m.i)
			case m.seq == 0:
				// Not one of the failed commits counted below.
			case there:
				failedIn++
			default:
				failedOut++
			}
		}
	}
	// In commit order, those there come first.
	bySeq := slices.DeleteFunc(slices.Clone(txns), func(m *ioConcTxn) bool { return m.seq == 0 })
	slices.SortFunc(bySeq, func(a, b *ioConcTxn) int { return int(a.seq) - int(b.seq) })
	for i := 1; i < len(bySeq); i++ {
		if present[bySeq[i]] && !present[bySeq[i-1]] {
			res.problem("%s: transaction %d (worker %d txn %d) is there, %d before it (worker %d txn %d) is not",
				label, bySeq[i].seq, bySeq[i].worker, bySeq[i].i, bySeq[i-1].seq, bySeq[i-1].worker, bySeq[i-1].i)
		}
	}

	want := map[Addr]*ioConcTxn{} // the page's allocating transaction
	last := make([]*ioConcTxn, workers)
	for _, m := range bySeq {
		if !present[m] {
			continue
		}
		for _, a := range m.allocs {
			want[a] = m
		}
		for _, a := range m.frees {
			delete(want, a)
		}
		last[m.worker] = m
	}
	for a := range want {
		if !allocated[a] {
			res.problem("%s: page %v is not allocated, its transaction is there", label, a)
		}
	}
	for a := range allocated {
		if want[a] == nil {
			res.problem("%s: page %v is allocated, no transaction there left it so", label, a)
		}
	}
	for _, m := range bySeq {
		if !present[m] || want[m.allocs[0]] != m {
			continue
		}
		got := make([]byte, ioConcStampBytes)
		if _, err := rd.ReadAt(got, m.allocs[0].Offset()); err != nil {
			res.problem("%s: ReadAt(%v): %v", label, m.allocs[0], err)
		} else if w := ioConcStamp(m.worker, m.i, m.allocs[0]); !bytes.Equal(got, w) {
			res.problem("%s: page %v holds %q, want %q", label, m.allocs[0], got, w)
		}
	}
	for g := range workers {
		got := make([]byte, ioConcStampBytes)
		if _, err := rd.ReadAt(got, rootOff+int64(g)*ioConcStampBytes); err != nil {
			res.problem("%s: ReadAt(root cell %d): %v", label, g, err)
			continue
		}
		w := make([]byte, ioConcStampBytes)
		if m := last[g]; m != nil {
			w = ioConcStamp(g, m.i, m.allocs[0])
		}
		if !bytes.Equal(got, w) {
			res.problem("%s: root cell %d holds %q, want %q", label, g, got, w)
		}
	}
	// The device takes a transaction.
	if err := rd.Update(func(tx *Txn) error { _, err := tx.Alloc(o4K); return err }); err != nil {
		res.problem("%s: a transaction after reopening: %v", label, err)
	}
	switch {
	case failedOut == 0:
		return "all there"
	case failedIn == 0:
		return "none there"
	}
	return "the first there"
}

// TestLogIOError runs TestLogCrash's storage engine (appenders from three
// goroutines, an owner that indexes each entry in the root area and
// relocates it in GC's transaction, one Relocate call in seven failing and
// rolling GC back) and fails one storage operation at a random point:
// one of ioConcPick's faults, or EIO at the first write after a Relocate
// call, which is often its GC transaction's journal record. Every call
// returns nil or ErrFailed, and none hangs. Opened from the file as left
// and from crash images of it, the log holds every entry whose Commit
// returned and whose deletion had not begun, and no entry whose Commit
// was never called; every entry the index names, relocated ones among
// them, reads back whole; and the log takes new entries after a GC.
func TestLogIOError(t *testing.T) {
	seed := logTestSeed(t)
	rounds := 16
	if testing.Short() || crashSampled() {
		rounds = 6
	}
	clean := logIOErrorRun(t, seed, -1, nil)
	// Whether GC finds a live entry at the head depends on how the
	// appenders' deletions and GC interleave: on a loaded machine a round
	// may relocate nothing, and the rounds below need relocations to fail.
	for try := 1; clean.relocations == 0 && try < 3; try++ {
		t.Logf("clean round %d relocated no entry (%d failed Relocate calls, %d GC runs): again", try, clean.relocFailed, clean.gcRuns)
		clean = logIOErrorRun(t, seed, -1, nil)
	}
	span, syncs, relocateCalls := clean.ops, clean.syncs, clean.relocations+clean.relocFailed
	t.Logf("clean round: %d entries committed, %d relocations (%d failed Relocate calls), %d GC runs, %d operations after Create, %d of them syncs",
		clean.committed, clean.relocations, clean.relocFailed, clean.gcRuns, span, syncs)
	if clean.relocations == 0 {
		t.Fatal("three clean rounds relocated no entry")
	}
	fired, gcFailed, failedEntries, foundEntries := 0, 0, 0, 0
	for r := range rounds {
		rng := rand.New(rand.NewPCG(seed, uint64(r)+1))
		f := ioConcPick(r%(ioConcKinds+1), rng, span, syncs)
		if r%(ioConcKinds+1) == ioConcKinds {
			// at counts Relocate calls here.
			f = ioConcFault{kind: "EIO after a Relocate call", at: rng.IntN(max(1, relocateCalls/2)), errno: syscall.EIO, onArm: true}
		}
		res := logIOErrorRun(t, seed, r, &f)
		if t.Failed() {
			t.Fatalf("round %d (seed %d), %s at %d: failed %v", r, seed, f.kind, f.at, f.failedOp)
		}
		if f.failedOp != nil {
			fired++
		}
		if res.gcFailed {
			gcFailed++
		}
		failedEntries += res.failedCommits
		foundEntries += res.failedFound
	}
	t.Logf("%d rounds, the fault fired in %d, failed a GC transaction with relocations in %d; %d entries whose Commit failed, %d of them found as written",
		rounds, fired, gcFailed, failedEntries, foundEntries)
	if fired < rounds*2/3 {
		t.Errorf("the fault fired in only %d of %d rounds", fired, rounds)
	}
}

type logIOErrorResult struct {
	ops, syncs                 int
	committed, relocations     int
	relocFailed                int
	gcFailed                   bool // a GC transaction with relocations failed
	gcRuns                     int64
	failedCommits, failedFound int
}

// armingOwner is a crashOwner that arms an onArm fault f at its f.at-th
// Relocate call (counting from 0), and counts the GC transactions that
// the device's failure ended.
type armingOwner struct {
	*crashOwner
	mu       *sync.Mutex
	f        *ioConcFault
	calls    int
	gcFailed int
}

func (o *armingOwner) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	o.mu.Lock()
	if o.f != nil && o.f.onArm && o.calls == o.f.at {
		o.f.armed = true
	}
	o.calls++
	o.mu.Unlock()
	return o.crashOwner.Relocate(tx, oldOff, newOff, entry)
}

func (o *armingOwner) RelocationsEnded(err error) {
	if errors.Is(err, ErrFailed) {
		o.mu.Lock()
		o.gcFailed++
		o.mu.Unlock()
	}
	o.crashOwner.RelocationsEnded(err)
}

// logIOErrorRun runs round r of TestLogIOError with fault f (nil: the
// clean round, whose every call must succeed) and checks what the store
// holds. It fails the test on a violation.
func logIOErrorRun(t *testing.T, seed uint64, r int, f *ioConcFault) logIOErrorResult {
	t.Helper()
	o, err := (&Options{
		MaxSize:     8 << 20,
		MaxPageSize: 64 << 10,
		JournalSize: minJournalBytes,
		RootSize:    64 << 10,
		LogRegions:  []LogRegion{{"log", logCrashRingBytes}},
	}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	store := simstore.New(o.MaxSize)
	defer store.Close()
	d, err := createOn(concStore(store), o)
	if err != nil {
		t.Fatal(err)
	}
	l := mustLog(t, d, "log")
	rootOff, rootSize := d.Root()
	owner := &crashOwner{d: d, rootOff: rootOff, slots: rootSize / logCrashSlotBytes, live: map[uint64]*crashLive{}, failEvery: 7}
	var mu sync.Mutex // guards f and res.syncs
	gcOwner := &armingOwner{crashOwner: owner, mu: &mu, f: f}
	if err := l.SetOwner(gcOwner, &LogOptions{GCThresholdBytes: 24 << 10, RelocationReserveBytes: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	var res logIOErrorResult
	first := store.Ops()
	f.set(store, &mu, func(op simstore.Op) {
		if op.Kind == simstore.OpSync {
			res.syncs++
		}
	})

	const appenders, perAppender = 3, 80
	ap := &logCrashAppender{d: d, l: l, store: store, owner: owner}
	errs := make(chan error, appenders)
	var wg sync.WaitGroup
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- ap.run(rand.New(rand.NewPCG(seed, uint64(r+1)<<8|uint64(a))), perAppender)
		}()
	}
	guardedRun(t, ioConcTimeout, "the appenders", t.Errorf, wg.Wait)
	close(errs)
	for err := range errs {
		if err != nil && (f == nil || !errors.Is(err, ErrFailed)) {
			t.Errorf("an appender: %v, want nil or ErrFailed", err)
		}
	}
	stats := l.Stats()
	failed := d.failure.Load() != nil
	if err := d.Close(); err == nil && failed {
		t.Error("Close returned nil on a failed device")
	} else if err != nil && !errors.Is(err, ErrFailed) {
		t.Errorf("Close: %v, want nil or ErrFailed", err)
	}
	store.SetFault(nil)
	res.ops, res.relocations, res.relocFailed, res.gcRuns = store.Ops()-first, owner.relocate, owner.failed, stats.GCRuns
	res.gcFailed = gcOwner.gcFailed > 0
	for _, e := range ap.entries {
		switch {
		case e.returnedAt >= 0:
			res.committed++
		case e.commitAt >= 0:
			res.failedCommits++
		}
	}
	if f == nil && failed {
		t.Fatal("the device failed without a fault")
	}

	n := store.Ops()
	c := &logCrashChecker{t: t, entries: ap.entries, rootOff: rootOff, slots: rootSize / logCrashSlotBytes, image: "as written, after"}
	rd, err := openOn(concStore(store), &Options{})
	if err != nil {
		t.Fatalf("Open as written: %v", err)
	}
	if err := rd.Check(); err != nil {
		t.Errorf("Check as written: %v", err)
	}
	if rl, err := rd.Log("log"); err == nil {
		for _, e := range ap.entries {
			if e.returnedAt < 0 && e.commitAt >= 0 {
				if p, err := rl.Read(e.firstOff); err == nil && len(p) >= 8 && logID(p) == e.id {
					res.failedFound++
				}
			}
		}
	}
	c.checkOpen(rd, store, n, true)
	rd.Close()
	c.image = "crash after"
	for i := range 3 {
		c.check(store, n, rand.New(rand.NewPCG(seed, uint64(r+1)<<8|uint64(i)|0x80)), i == 0)
	}
	return res
}
