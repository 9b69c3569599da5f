package pagealloc

// Crash tests for the journal, in the manner of Pebble's crash clones: one
// random workload runs on a simulated store (internal/simstore) that traces
// every write and sync; afterwards the test asks the store, for many points
// n of that trace, what a power loss just after the n-th operation would
// have left on disk, opens that image, and checks the contract of Commit:
//
//	the root area holds exactly the writes of txns[0:k] for some k, where
//	k counts at least every transaction whose Commit had returned by
//	operation n, and at most every transaction that had called Commit.
//
// Crash points: just before and just after every sync, plus random ones
// (-journal.points). Some recovered images are written to further and then
// crashed again, at every sync of the recovery and of the new commits, so
// that a crash during recovery is covered too.
//
// The seed is printed; -journal.seed=N reruns the same transactions with
// the same crash choices. With several committers, which commits share a
// journal record depends on scheduling, so the trace itself may differ from
// run to run; -journal.committers=1 makes a run wholly deterministic, and
// -journal.keep=DIR writes every image that fails the check to DIR, as a
// device file Open can read, for an exact reproduction.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"os"
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
	journalSeedFlag       = flag.Uint64("journal.seed", 0, "seed for the journal crash tests; 0 picks one from the clock")
	journalPointsFlag     = flag.Int("journal.points", 0, "random crash points per journal crash test run; 0 means the default (3,000; a quarter under -race or -tags invariants)")
	journalTxnsFlag       = flag.Int("journal.txns", 0, "transactions per committer in the journal crash test; 0 means the default")
	journalCommittersFlag = flag.Int("journal.committers", 0, "concurrent committers in the journal crash test; 0 means the default")
	journalKeepFlag       = flag.String("journal.keep", "", "directory where the journal crash test writes every crash image that fails the check")
)

const (
	// The device is small so that images are cheap, and its journal is the
	// smallest allowed so that the ring wraps and checkpoints often.
	crashMaxBytes     = 4 << 20
	crashRootBytes    = 64 << 10
	crashJournalBytes = minJournalBytes

	// Defaults; the flags raise them for a soak.
	crashCommitters       = 4
	crashTxnsPerCommitter = 600
	crashRandomPoints     = 3000
	crashDeepPoints       = 120 // recovered images written to and crashed again
	crashDeepRandom       = 8   // random points per deep image, besides its syncs

	// Transactions stay well below the journal's limit (half the ring) even
	// when every line they touch is counted at its worst.
	crashTxnBytesMax = 12 << 10
)

// crashOptions is the geometry of every device these tests crash. NoSync is
// false: the syncs are what the simulated store keeps after a crash.
func crashOptions(t testing.TB) Options {
	t.Helper()
	o, err := (&Options{
		MaxSize:     crashMaxBytes,
		MaxPageSize: 64 << 10,
		JournalSize: crashJournalBytes,
		RootSize:    crashRootBytes,
	}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// crashStore is a simulated store whose syncs take a while, as a disk's do,
// so that commits queue up behind a journal write and share the next one.
// The sync is traced when it starts, then the caller waits, holding no
// lock: a write another goroutine makes meanwhile comes after the sync
// in the trace, so no image counts it durable by this sync. A real fsync
// need not cover writes made after it began either.
type crashStore struct {
	*simstore.Store
	syncDelay time.Duration
}

func (s crashStore) Sync() error {
	err := s.Store.Sync()
	if s.syncDelay > 0 {
		time.Sleep(s.syncDelay)
	}
	return err
}

// journalTestSeed returns the seed for a test and logs how to rerun it.
func journalTestSeed(t testing.TB) uint64 {
	t.Helper()
	return testSeed(t, "journal.seed", *journalSeedFlag)
}

// flagOr returns the flag's value if set, else def.
func flagOr(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// rootWrite is one Txn.Write, at an offset relative to the root area.
type rootWrite struct {
	off  int64
	data []byte
}

// crashTxn is one committed transaction as the workload saw it.
type crashTxn struct {
	writes    []rootWrite
	committer int
	// startedAt is the trace length read before Commit was called, with
	// the writer held: nothing of the transaction can be on disk in an
	// image of fewer operations.
	startedAt int
	// returnedAt is the trace length read after Commit returned: every
	// image of at least that many operations must hold the transaction.
	returnedAt int
}

// randomTxnWrites returns the writes of one transaction: a few writes of
// 1 B to 4 KiB, some crossing 64-byte lines, some over a small hot area that
// many transactions share (so that one journal record merges lines of
// several), some overlapping the transaction's own earlier writes. A big
// transaction starts with a write of 6 to 10 KiB, so that a group of a few
// of them needs several journal records, more than the ring has free.
func randomTxnWrites(rng *rand.Rand, rootBytes int64, big bool) []rootWrite {
	n := 1 + rng.IntN(6)
	writes := make([]rootWrite, 0, n)
	total := int64(0)
	for i := range n {
		var off, size int64
		switch r := rng.IntN(100); {
		case big && i == 0:
			size = 6<<10 + rng.Int64N(4<<10)
			off = rng.Int64N(rootBytes - size + 1)
		case r < 35: // small, anywhere
			size = 1 + rng.Int64N(64)
			off = rng.Int64N(rootBytes - size + 1)
		case r < 50: // across a line boundary
			size = 2 + rng.Int64N(127)
			boundary := lineBytes * (3 + rng.Int64N(rootBytes/lineBytes-6))
			off = boundary - 1 - rng.Int64N(size-1)
		case r < 70: // the hot area, shared by many transactions
			size = 1 + rng.Int64N(256)
			off = rng.Int64N(2048)
		case r < 90:
			size = 65 + rng.Int64N(1024-64)
			off = rng.Int64N(rootBytes - size + 1)
		default:
			size = 1025 + rng.Int64N(4096-1024)
			off = rng.Int64N(rootBytes - size + 1)
		}
		if len(writes) > 0 && rng.IntN(4) == 0 { // over an earlier write of this txn
			prev := writes[rng.IntN(len(writes))]
			off = max(0, min(rootBytes-size, prev.off+rng.Int64N(int64(len(prev.data)))-rng.Int64N(32)))
		}
		if total+size > crashTxnBytesMax {
			break
		}
		total += size
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		writes = append(writes, rootWrite{off, data})
	}
	return writes
}

// crashWorkload runs committers goroutines, each committing txns random
// transactions (some rolled back, some empty) on d, and returns the
// committed ones in commit order.
type crashWorkload struct {
	d          *Device
	store      *simstore.Store
	seed       uint64
	committers int
	txns       int
	big        int // committers [0, big) write big transactions

	mu  sync.Mutex
	log []*crashTxn

	rolledBack, empty, syncs int
}

func (w *crashWorkload) run(t *testing.T) []*crashTxn {
	t.Helper()
	rootOff, rootBytes := w.d.Root()
	var wg sync.WaitGroup
	errs := make(chan error, w.committers)
	for c := range w.committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.seed, 1000+uint64(c)))
			if err := w.committer(c, rng, rootOff, rootBytes); err != nil {
				errs <- fmt.Errorf("committer %d: %w", c, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return w.log
}

func (w *crashWorkload) committer(c int, rng *rand.Rand, rootOff, rootBytes int64) error {
	for range w.txns {
		if rng.IntN(50) == 0 {
			// Nothing written with WriteAt yet, so this syncs nothing;
			// it must not disturb the journal either.
			if err := w.d.Sync(); err != nil {
				return fmt.Errorf("Sync: %w", err)
			}
			w.mu.Lock()
			w.syncs++
			w.mu.Unlock()
		}
		var writes []rootWrite
		kind := rng.IntN(100)
		if kind >= 3 { // else an empty commit: waits for the commits before it
			writes = randomTxnWrites(rng, rootBytes, c < w.big)
		}
		tx, err := w.d.Begin()
		if err != nil {
			return fmt.Errorf("Begin: %w", err)
		}
		for _, wr := range writes {
			if err := tx.Write(rootOff+wr.off, wr.data); err != nil {
				tx.Rollback()
				return fmt.Errorf("Write(%d, %d bytes): %w", wr.off, len(wr.data), err)
			}
		}
		if kind >= 90 {
			if err := tx.Rollback(); err != nil {
				return fmt.Errorf("Rollback: %w", err)
			}
			w.mu.Lock()
			w.rolledBack++
			w.mu.Unlock()
			continue
		}
		// The writer is held, so the log's order is the commit order.
		ct := &crashTxn{writes: writes, committer: c}
		w.mu.Lock()
		ct.startedAt = w.store.Ops()
		w.log = append(w.log, ct)
		if len(writes) == 0 {
			w.empty++
		}
		w.mu.Unlock()
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("Commit: %w", err)
		}
		returned := w.store.Ops()
		w.mu.Lock()
		ct.returnedAt = returned
		w.mu.Unlock()
	}
	return nil
}

// prefixModel knows the root area after every prefix of a list of
// transactions, by hash, and which prefixes a crash after n operations may
// leave.
type prefixModel struct {
	hashSeed maphash.Seed
	base     []byte // the root area before txns[0]
	txns     []*crashTxn
	byHash   map[uint64][]int // hash of the root after txns[:k] -> every such k
	// minOps is the trace length before which the device may not exist yet
	// (a crash inside Create), so that Open may fail with ErrCorrupt.
	minOps int
}

func newPrefixModel(base []byte, txns []*crashTxn, minOps int) *prefixModel {
	m := &prefixModel{hashSeed: maphash.MakeSeed(), base: bytes.Clone(base), txns: txns, byHash: make(map[uint64][]int), minOps: minOps}
	root := bytes.Clone(base)
	for k := 0; ; k++ {
		h := maphash.Bytes(m.hashSeed, root)
		m.byHash[h] = append(m.byHash[h], k)
		if k == len(txns) {
			break
		}
		applyRootWrites(root, txns[k].writes)
	}
	return m
}

func applyRootWrites(root []byte, writes []rootWrite) {
	for _, w := range writes {
		copy(root[w.off:], w.data)
	}
}

// state returns the root area after txns[:k].
func (m *prefixModel) state(k int) []byte {
	root := bytes.Clone(m.base)
	for _, tx := range m.txns[:k] {
		applyRootWrites(root, tx.writes)
	}
	return root
}

// bounds returns the prefixes a crash after n operations may leave: at
// least lo transactions (the last one whose Commit returned, and all before
// it) and at most hi (every one that had called Commit).
func (m *prefixModel) bounds(n int) (lo, hi int) {
	// An empty commit that found nothing in flight returns without an
	// operation (startedAt == returnedAt), and changes nothing.
	return prefixBounds(m.txns, n, func(tx *crashTxn) (int, int) { return tx.startedAt, tx.returnedAt })
}

// prefixBounds returns how many of txns, in commit order, a crash after n
// traced operations may have kept: at least every one whose Commit had
// returned (commits return in order, but a committer may read the trace
// late, so a later one's return vouches for all before it), at most every
// one whose Commit had been called. span gives a transaction's trace
// lengths when its Commit was called and when it returned.
func prefixBounds[T any](txns []T, n int, span func(T) (startedAt, returnedAt int)) (lo, hi int) {
	for j, tx := range txns {
		if _, returnedAt := span(tx); returnedAt <= n {
			lo = j + 1
		}
	}
	hi = sort.Search(len(txns), func(j int) bool { startedAt, _ := span(txns[j]); return startedAt >= n })
	return lo, max(lo, hi)
}

// match returns a k in [lo, hi] whose state hashes as root does, or -1,
// and every k with that hash.
func (m *prefixModel) match(root []byte, lo, hi int) (int, []int) {
	ks := m.byHash[maphash.Bytes(m.hashSeed, root)]
	for _, k := range ks {
		if k >= lo && k <= hi {
			return k, ks
		}
	}
	return -1, ks
}

// explain describes how root differs from the states of prefixes lo and
// hi, for a failure message: how many bytes differ, the first of them, and
// the last transactions that wrote that byte.
func (m *prefixModel) explain(root []byte, lo, hi int, ks []int) string {
	var b strings.Builder
	if len(ks) > 0 {
		fmt.Fprintf(&b, "the root area holds the state after %v transactions, outside [%d, %d]", ks, lo, hi)
	} else {
		fmt.Fprintf(&b, "the root area holds the state after no prefix of the %d committed transactions (want one in [%d, %d])", len(m.txns), lo, hi)
	}
	for _, k := range slices.Compact([]int{lo, hi}) {
		want := m.state(k)
		first, differ := -1, 0
		for i := range root {
			if root[i] != want[i] {
				differ++
				if first < 0 {
					first = i
				}
			}
		}
		if first < 0 {
			continue
		}
		fmt.Fprintf(&b, "; vs prefix %d: %d bytes differ, the first at root+%d (%#02x, want %#02x)", k, differ, first, root[first], want[first])
		var writers []string
		for x, tx := range m.txns {
			for _, w := range tx.writes {
				if int64(first) >= w.off && int64(first) < w.off+int64(len(w.data)) {
					writers = append(writers, fmt.Sprintf("txn %d (ops %d..%d) wrote %#02x", x, tx.startedAt, tx.returnedAt, w.data[int64(first)-w.off]))
				}
			}
		}
		if len(writers) == 0 {
			b.WriteString(", a byte no transaction wrote")
			continue
		}
		// The writers around the prefix boundary say most.
		i := sort.Search(len(writers), func(i int) bool {
			var x int
			fmt.Sscanf(writers[i], "txn %d", &x)
			return x >= k
		})
		writers = writers[max(0, i-2):min(len(writers), i+2)]
		fmt.Fprintf(&b, "; around prefix %d: %s", k, strings.Join(writers, ", "))
	}
	return b.String()
}

// crashChecker opens crash images and checks them against a model, and
// runs Check on every device it opens.
type crashChecker struct {
	t        *testing.T
	seed     uint64
	rootOff  int64
	rootSize int64

	opened, readOnly, createFailed, beyondReturned, violations int
}

// open opens img as a device, replaying its journal, and reads the root.
// On success the caller owns d, whose Close closes img; on failure img is
// closed.
func (c *crashChecker) open(img *simstore.Store) (*Device, []byte, error) {
	return c.openWith(img, &Options{})
}

func (c *crashChecker) openWith(img *simstore.Store, o *Options) (*Device, []byte, error) {
	d, err := openOn(img, o)
	if err != nil {
		img.Close()
		return nil, nil, err
	}
	root := make([]byte, c.rootSize)
	if _, err := d.ReadAt(root, c.rootOff); err != nil {
		d.Close()
		return nil, nil, fmt.Errorf("reading the root area: %w", err)
	}
	return d, root, nil
}

// check crashes store after n operations, choosing the fate of unsynced
// operations with a generator drawn from (seed, stream), opens the image
// and checks it against m. It returns the open device if keepOpen and the
// check passed, with the prefix it holds.
func (c *crashChecker) check(store *simstore.Store, m *prefixModel, n int, stream uint64, what string, keepOpen bool) (*Device, int) {
	t := c.t
	t.Helper()
	img, err := store.Image(n, rand.New(rand.NewPCG(c.seed, stream)))
	if err != nil {
		t.Fatalf("%s: Image(%d): %v", what, n, err)
	}
	desc := img.Describe()
	d, root, err := c.open(img)
	c.opened++
	fail := func(format string, args ...any) {
		c.violations++
		msg := fmt.Sprintf(format, args...)
		if dir := *journalKeepFlag; dir != "" {
			msg += "; " + c.keep(store, n, stream, what, dir)
		}
		t.Errorf("%s: crash after %d of %d ops (stream %d): %s\nimage: %s", what, n, store.Ops(), stream, msg, desc)
	}
	if err != nil {
		if n < m.minOps && errors.Is(err, ErrCorrupt) {
			c.createFailed++ // a crash inside Create: no device yet
			return nil, -1
		}
		fail("Open failed: %v", err)
		return nil, -1
	}
	lo, hi := m.bounds(n)
	if n < m.minOps {
		lo = 0
	}
	k, ks := m.match(root, lo, hi)
	if k < 0 {
		fail("%s", m.explain(root, lo, hi, ks))
		d.Close()
		return nil, -1
	}
	if k > lo {
		c.beyondReturned++
	}
	if err := d.Check(); err != nil {
		fail("Check after recovery (root holds prefix %d): %v", k, err)
		d.Close()
		return nil, -1
	}
	if stream%4 == 0 {
		// A read-only open replays in memory: it must show the same
		// bytes from the same image, and write nothing.
		c.readOnly++
		ro, err := store.Image(n, rand.New(rand.NewPCG(c.seed, stream)))
		if err != nil {
			t.Fatalf("%s: Image(%d): %v", what, n, err)
		}
		rd, roRoot, err := c.openWith(ro, &Options{ReadOnly: true})
		switch {
		case err != nil:
			fail("read-only Open failed: %v (a writable one succeeded)", err)
		case !bytes.Equal(roRoot, root):
			fail("read-only Open shows another root area than a writable one (prefix %d)", k)
		case ro.Ops() != 0:
			fail("read-only Open wrote %d operations", ro.Ops())
		}
		if rd != nil {
			rd.Close()
		}
	}
	if !keepOpen {
		if err := d.Close(); err != nil {
			fail("Close after recovery: %v", err)
		}
		return nil, k
	}
	return d, k
}

// keep writes the image that failed to dir and says where.
func (c *crashChecker) keep(store *simstore.Store, n int, stream uint64, what, dir string) string {
	img, err := store.Image(n, rand.New(rand.NewPCG(c.seed, stream)))
	if err != nil {
		return fmt.Sprintf("cannot keep the image: %v", err)
	}
	defer img.Close()
	size, _ := img.Size()
	b := make([]byte, size)
	if _, err := img.ReadAt(b, 0); err != nil {
		return fmt.Sprintf("cannot keep the image: %v", err)
	}
	name := fmt.Sprintf("journal-crash-%d-%s-%d-%d", c.seed, strings.ReplaceAll(what, " ", "_"), n, stream)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Sprintf("cannot keep the image: %v", err)
	}
	return "image kept as " + path
}

// crashScale returns the workload and point counts for this run.
func crashScale() (committers, txns, randomPoints, deepPoints int) {
	// A sampled run (see crashSampled) runs the whole workload and crashes
	// at a quarter of the points.
	return flagOr(*journalCommittersFlag, crashCommitters), flagOr(*journalTxnsFlag, crashTxnsPerCommitter),
		flagOr(*journalPointsFlag, crashSampledPoints(crashRandomPoints)), crashSampledPoints(crashDeepPoints)
}

// TestJournalCrash runs concurrent committers on a simulated store, then
// crashes the trace at every sync point and at random points and checks
// that every image opens to the root area of a prefix of the committed
// transactions that includes every one whose Commit returned. Some images
// are recovered, written to and crashed again, during and after recovery.
func TestJournalCrash(t *testing.T) {
	seed := journalTestSeed(t)
	committers, txnsEach, randomPoints, deepPoints := crashScale()
	o := crashOptions(t)
	store := simstore.New(crashMaxBytes)
	d, err := createOn(crashStore{Store: store, syncDelay: 50 * time.Microsecond}, o)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	createdAt := store.Ops()
	rootOff, rootSize := d.Root()

	start := time.Now()
	w := &crashWorkload{d: d, store: store, seed: seed, committers: committers, txns: txnsEach, big: 1}
	txns := w.run(t)
	// Every Commit has returned, so the journal goroutine is done with
	// nextSeq: each record it wrote took one.
	records := d.journal.nextSeq
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ops, syncPoints := store.Ops(), store.SyncPoints()
	workloadSyncs := 0
	for _, i := range syncPoints {
		if i >= createdAt {
			workloadSyncs++
		}
	}
	t.Logf("workload: %d committers, %d committed transactions (%d empty) in %d journal records, %d rolled back, %d Device.Sync; %d ops, %d syncs; %v",
		committers, len(txns), w.empty, records, w.rolledBack, w.syncs, ops, workloadSyncs, time.Since(start).Round(time.Millisecond))
	for j, tx := range txns {
		if tx.returnedAt < tx.startedAt || (j > 0 && tx.startedAt < txns[j-1].startedAt) {
			t.Fatalf("txn %d: started at op %d, returned at %d, previous started at %d", j, tx.startedAt, tx.returnedAt, txns[j-1].startedAt)
		}
	}

	m := newPrefixModel(make([]byte, rootSize), txns, createdAt)
	c := &crashChecker{t: t, seed: seed, rootOff: rootOff, rootSize: rootSize}
	start = time.Now()

	// Every sync point (or a sample of them), just before and just after
	// the sync.
	stream := uint64(0)
	syncChecked := 0
	for _, i := range crashSyncSample(t, syncPoints, seed) {
		for _, n := range []int{i, i + 1} {
			c.check(store, m, n, stream, "sync point", false)
			stream++
			syncChecked++
		}
		if c.violations > 20 {
			t.Fatalf("too many violations; stopping")
		}
	}

	// Random points, ascending so that the store replays its trace once.
	rng := rand.New(rand.NewPCG(seed, 1))
	randomNs := make([]int, randomPoints)
	for i := range randomNs {
		randomNs[i] = rng.IntN(ops + 1)
	}
	slices.Sort(randomNs)
	deep := make(map[int]bool) // indexes into randomNs of the deep points
	for len(deep) < min(deepPoints, len(randomNs)) {
		deep[rng.IntN(len(randomNs))] = true
	}
	var deepStats deepStats
	for i, n := range randomNs {
		stream := 1<<32 | uint64(i)
		if !deep[i] {
			c.check(store, m, n, stream, "random point", false)
		} else {
			c.deepCheck(store, m, n, stream, &deepStats)
		}
		if c.violations > 20 {
			t.Fatalf("too many violations; stopping")
		}
	}
	t.Logf("crash points: %d at syncs, %d random; %d images opened (%d also read-only; %d crashed inside Create and were refused as corrupt), %d held commits beyond the last returned one; %v",
		syncChecked, randomPoints, c.opened, c.readOnly, c.createFailed, c.beyondReturned, time.Since(start).Round(time.Millisecond))
	t.Logf("recoveries of recoveries: %d recovered images took %d more commits and were crashed again at %d points (%d inside the recovery)",
		deepStats.images, deepStats.commits, deepStats.points, deepStats.inRecovery)
	t.Logf("violations: %d", c.violations)
}

type deepStats struct{ images, commits, points, inRecovery int }

// deepCheck checks the image after n operations, then goes on with the
// recovered device: a few more commits, Close, and crashes of its own trace
// (the recovery's writes and syncs, then the new commits') at every sync
// point and at random points. A crash before the new commits must give
// back exactly the state the first recovery found.
func (c *crashChecker) deepCheck(store *simstore.Store, m *prefixModel, n int, stream uint64, st *deepStats) {
	t := c.t
	d, k := c.check(store, m, n, stream, "deep point", true)
	if d == nil {
		return
	}
	img := d.store.(*simstore.Store)
	recoveryOps := img.Ops()
	rng := rand.New(rand.NewPCG(c.seed, stream|1<<63))
	w := &crashWorkload{d: d, store: img, seed: c.seed ^ stream, committers: 1, txns: 1 + rng.IntN(4)}
	txns := w.run(t)
	if err := d.Close(); err != nil {
		t.Errorf("deep point after %d ops: Close: %v", n, err)
		return
	}
	st.images++
	st.commits += len(txns)
	m2 := newPrefixModel(m.state(k), txns, 0)
	var ns []int
	for _, i := range img.SyncPoints() {
		ns = append(ns, i, i+1)
	}
	for range crashDeepRandom {
		ns = append(ns, rng.IntN(img.Ops()+1))
	}
	for i, n2 := range ns {
		if n2 <= recoveryOps {
			st.inRecovery++
		}
		st.points++
		c.check(img, m2, n2, stream|uint64(i+1)<<40, fmt.Sprintf("recovery of the crash after %d ops", n), false)
	}
}

// TestJournalCrashGroupCommit makes syncs slow so that concurrent commits
// queue up behind a journal write and share the next one, and crashes the
// trace at every operation: a group's transactions must become durable with
// its record's sync, all of a record or none, and each Commit must return
// only after that sync. In "small" the transactions are small, so that a
// group fits one record, and the test checks that commits were grouped; in
// "big" every transaction is big, so that a group needs several records,
// more than the ring has free, and the journal checkpoints in the middle of
// a group.
func TestJournalCrashGroupCommit(t *testing.T) {
	t.Run("small", func(t *testing.T) { testGroupCommitCrash(t, false) })
	t.Run("big", func(t *testing.T) { testGroupCommitCrash(t, true) })
}

func testGroupCommitCrash(t *testing.T, big bool) {
	seed := journalTestSeed(t)
	o := crashOptions(t)
	store := simstore.New(crashMaxBytes)
	d, err := createOn(crashStore{Store: store, syncDelay: 2 * time.Millisecond}, o)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	createdAt := store.Ops()
	rootOff, rootSize := d.Root()
	w := &crashWorkload{d: d, store: store, seed: seed, committers: 8, txns: 20}
	if big {
		w.txns, w.big = 10, w.committers
	}
	txns := w.run(t)
	records := d.journal.nextSeq // every Commit returned: the journal is idle
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ops := store.Ops()
	var syncs []int
	for _, i := range store.SyncPoints() {
		if i >= createdAt {
			syncs = append(syncs, i)
		}
	}
	nonEmpty := 0
	for _, tx := range txns {
		if len(tx.writes) > 0 {
			nonEmpty++
		}
	}
	// One record and one sync per group of small commits, two syncs per
	// checkpoint: without grouping there would be a record per commit.
	if !big && (uint64(nonEmpty) < 2*records || len(syncs) > nonEmpty/2) {
		t.Errorf("%d commits took %d journal records and %d syncs: commits were not grouped", nonEmpty, records, len(syncs))
	}

	m := newPrefixModel(make([]byte, rootSize), txns, createdAt)
	c := &crashChecker{t: t, seed: seed, rootOff: rootOff, rootSize: rootSize}
	// With nothing unsynced kept, the prefix found just after a sync is
	// what that sync made durable, never less than before it.
	maxJump, prev := 0, 0
	for i, s := range syncs {
		_, before := c.check(store, m, s, uint64(i), "before sync", false)
		img, err := store.Image(s+1, nil)
		if err != nil {
			t.Fatal(err)
		}
		dd, root, err := c.open(img)
		c.opened++
		if err != nil {
			t.Fatalf("just after sync op %d, nothing else kept: Open: %v", s, err)
		}
		dd.Close()
		lo, hi := m.bounds(s + 1)
		after, ks := m.match(root, lo, hi)
		if after < 0 {
			t.Fatalf("just after sync op %d, nothing else kept: %s", s, m.explain(root, lo, hi, ks))
		}
		if after < prev || (before >= 0 && after < before) {
			t.Fatalf("sync op %d: durable prefix went from %d (before it: %d) to %d", s, prev, before, after)
		}
		maxJump = max(maxJump, after-prev)
		prev = after
	}
	if !big && maxJump < 2 {
		t.Errorf("no sync made more than %d transactions durable at once", maxJump)
	}
	// Every operation, with unsynced writes kept, dropped or torn at random.
	for n := createdAt; n <= ops; n++ {
		for r := range 2 {
			c.check(store, m, n, 1<<32|uint64(n)<<1|uint64(r), "any op", false)
		}
		if c.violations > 20 {
			t.Fatalf("too many violations; stopping")
		}
	}
	t.Logf("%d commits (%d with writes) in %d journal records took %d syncs; at most %d transactions became durable with one sync; %d crash images opened, %d violations",
		len(txns), nonEmpty, records, len(syncs), maxJump, c.opened, c.violations)
}

// journalFuzzImage returns a device image, as a crash would leave it, whose
// journal holds a few committed records not yet checkpointed, and the live
// bytes of its ring (from the head, which is 0 on a new device).
func journalFuzzImage(tb testing.TB) (frozen *simstore.Store, live []byte) {
	tb.Helper()
	o := crashOptions(tb)
	store := simstore.New(crashMaxBytes)
	d, err := createOn(store, o)
	if err != nil {
		store.Close()
		tb.Fatal(err)
	}
	rootOff, _ := d.Root()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 4 {
		err := d.Update(func(tx *Txn) error {
			// A few small writes, some across lines: records of a few
			// hundred bytes, which the fuzzer mutates quickly.
			for range 3 {
				p := make([]byte, 1+rng.IntN(100))
				for j := range p {
					p[j] = byte(rng.Uint32())
				}
				if err := tx.Write(rootOff+rng.Int64N(4096), p); err != nil {
					return err
				}
			}
			return tx.Write(rootOff+int64(i)*8, []byte(fmt.Sprintf("record%d", i)))
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	tail := d.journal.tail // the journal goroutine is idle: every Commit returned
	if d.journal.head != 0 || tail == 0 {
		tb.Fatalf("journal head %d, tail %d: want records from 0", d.journal.head, tail)
	}
	// Everything synced is kept; the home writes of the last record are not.
	frozen, err = store.Image(store.Ops(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	d.Close()
	live = make([]byte, tail)
	if _, err := frozen.ReadAt(live, d.geometry.journal.off); err != nil {
		tb.Fatal(err)
	}
	return frozen, live
}

// FuzzJournalRecover writes fuzzed bytes over the journal ring of a device
// image holding a few committed records, then opens it: Open must succeed
// or fail with ErrCorrupt, never panic or fail otherwise. With reseal set,
// every record header found from the head gets its checksum recomputed, so
// that the fuzzer reaches the decoding and replay of record bodies.
func FuzzJournalRecover(f *testing.F) {
	frozen, live := journalFuzzImage(f)
	f.Cleanup(func() { frozen.Close() })
	o := crashOptions(f)
	ringOff := 2*superblockSlotBytes + o.RootSize // see format.go: superblocks, root area, ring
	ringBytes := o.JournalSize
	f.Add(uint16(0), false, live)
	f.Add(uint16(0), true, live)
	f.Add(uint16(len(live)), false, live[:recordHeaderBytes]) // a copy of the first header past the tail
	f.Fuzz(func(t *testing.T, at uint16, reseal bool, b []byte) {
		img, err := frozen.Image(0, nil)
		if err != nil {
			t.Fatal(err)
		}
		ring := make([]byte, ringBytes)
		if _, err := img.ReadAt(ring, ringOff); err != nil {
			img.Close()
			t.Fatal(err)
		}
		pos := int64(at) % ringBytes
		copy(ring[pos:], b)
		if reseal {
			resealRing(ring, ringBytes/2)
		}
		if _, err := img.WriteAt(ring, ringOff); err != nil {
			img.Close()
			t.Fatal(err)
		}
		d, err := openOn(img, &Options{})
		if err != nil {
			img.Close()
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want success or ErrCorrupt", err)
			}
			return
		}
		p := make([]byte, 64)
		if _, err := d.ReadAt(p, d.geometry.root.off); err != nil {
			t.Errorf("ReadAt after recovery: %v", err)
		}
		// Replayed records may hold any bytes the fuzzer sealed, so the
		// allocator's state may be broken, but Check must say so as
		// corruption, not panic.
		if err := d.Check(); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Errorf("Check after recovery: %v, want nil or ErrCorrupt", err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("Close after recovery: %v", err)
		}
	})
}

// resealRing recomputes the checksum of every record whose header parses,
// walking from virtual offset 0 around the ring once.
func resealRing(ring []byte, maxRecord int64) {
	size := uint64(len(ring))
	at := func(pos uint64) int { return int(pos % size) }
	gather := func(pos uint64, n int) []byte {
		out := make([]byte, n)
		for i := range out {
			out[i] = ring[at(pos+uint64(i))]
		}
		return out
	}
	for pos := uint64(0); pos < size; {
		h, ok := parseRecordHeader(gather(pos, recordHeaderBytes), uint32(maxRecord))
		if !ok {
			return
		}
		rec := gather(pos, int(h.length))
		var crc [4]byte
		binary.LittleEndian.PutUint32(crc[:], recordChecksum(rec))
		for i, c := range crc {
			ring[at(pos+recordCRCOff+uint64(i))] = c
		}
		pos += uint64(h.length)
	}
}
