package pagealloc

// Crash test for the sub-page allocator on the simulated store
// (internal/simstore), after buddy_crash_test.go. One random workload of
// slot allocations and frees over two classes runs on a store that traces
// every write and sync; then, for every sync point (just before and just
// after it) and for random points of that trace, the test asks the store
// what a power loss there would have left, opens that image and checks:
//
//   - Open succeeds and Check passes (class lists, parent headers, counters,
//     and the buddy allocator's own invariants);
//   - the live slots are exactly the model's after txns[:k] for some k that
//     counts every transaction whose Commit had returned and none whose
//     Commit had not been called: no committed slot lost, none resurrected;
//   - no two live slots overlap and every allocated page is a parent with
//     a live or pending slot: nothing owned twice, no parent leaked;
//   - every live slot holds the stamp its owner wrote into it right after
//     Alloc, inside the allocating transaction (in place with WriteAt where
//     the parent was already committed, else journaled with Txn.Write): a
//     slot freed by a transaction the crash lost was never handed to
//     another owner who wrote over it, and no journaled write of an old
//     owner was replayed over a new one.
//
// During the run, every slot Alloc returns is checked against the frees of
// transactions that no checkpoint covers yet, and of the open one: such a
// slot must not be handed out (invariant 5).
//
// A sample of the images then takes one more transaction (allocations and
// frees in every class) and must still pass Check.
//
// The seed is printed; -subpagecrash.seed=N reruns the same workload and
// crash choices.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

var (
	subpageCrashSeed   = flag.Uint64("subpagecrash.seed", 0, "seed for the sub-page crash test (0: time)")
	subpageCrashPoints = flag.Int("subpagecrash.points", 0, "random crash points in the sub-page crash test (0: 1000; a quarter under -race or -tags invariants)")
)

const (
	subpageCrashRandomPoints = 1000
	subpageCrashTxns         = 600
	subpageCrashOpsMax       = 12
	// Every subpageCrashContinueEvery-th image takes one more transaction.
	subpageCrashContinueEvery = 10
	subpageCrashMaxViolations = 10
)

// subpageCrashTxn is one transaction on which Commit was called. The
// stamp of a slot it allocated is the slot's Addr and its index in the
// model's txns.
type subpageCrashTxn struct {
	// No image of at most startedAt operations holds any of it; every
	// image of at least returnedAt operations holds all of it.
	startedAt, returnedAt int
	allocs, frees         []Addr
}

// subpageCrashModel is the committed transactions, in order, and a digest
// of the live slots after each prefix, so that an image is compared with
// every candidate prefix in O(1) each.
type subpageCrashModel struct {
	createdAt int
	txns      []*subpageCrashTxn
	digests   []subpageDigest // digests[k]: after txns[:k]
	allocdBy  map[Addr][]int  // the transactions that allocated each slot, in order
}

// owner returns the index of the transaction of txns[:k] that last
// allocated a, or -1.
func (m *subpageCrashModel) owner(a Addr, k int) int {
	by := m.allocdBy[a]
	i := sort.SearchInts(by, k) // the first at k or later
	if i == 0 {
		return -1
	}
	return by[i-1]
}

const subpageStampBytes = 16

func subpageStamp(a Addr, txn int) []byte {
	b := make([]byte, subpageStampBytes)
	binary.LittleEndian.PutUint64(b, uint64(a))
	binary.LittleEndian.PutUint64(b[8:], uint64(txn))
	return b
}

// subpageDigest is an order-independent digest of a set of slots.
type subpageDigest struct {
	count int
	sum   uint64
}

func (g *subpageDigest) add(a Addr, sign int) {
	g.count += sign
	g.sum += uint64(sign) * subpageMix(uint64(a))
}

// subpageMix is splitmix64's finalizer: a sum of mixed addresses collides
// only by accident.
func subpageMix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// bounds returns the prefixes a crash after n operations may leave.
func (m *subpageCrashModel) bounds(n int) (lo, hi int) {
	return prefixBounds(m.txns, n, func(tx *subpageCrashTxn) (int, int) { return tx.startedAt, tx.returnedAt })
}

func subpageCrashOptions() Options {
	return Options{
		MinPageSize: 4 << 10, MaxPageSize: 64 << 10,
		JournalSize: 128 << 10, MaxSize: 256<<10 + 384<<10, GrowthStep: 64 << 10,
	}
}

// subpageCrashSizes are the classes: 64-byte slots in 4 KiB parents and
// 1 KiB slots in 64 KiB parents. The heap is six max pages, two of them
// mostly block metadata, so that it fills: about 250 slots of 1 KiB.
var subpageCrashSizes = []int{64, 1024}

// TestSubpageCrash runs the workload and crashes it; see the top of this
// file.
func TestSubpageCrash(t *testing.T) {
	seed := testSeed(t, "subpagecrash.seed", *subpageCrashSeed)
	randomPoints := crashSampledPoints(subpageCrashRandomPoints)
	if *subpageCrashPoints > 0 {
		randomPoints = *subpageCrashPoints
	}
	o, err := (&Options{}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	so := subpageCrashOptions()
	o.MinPageSize, o.MaxPageSize, o.JournalSize, o.MaxSize, o.GrowthStep = so.MinPageSize, so.MaxPageSize, so.JournalSize, so.MaxSize, so.GrowthStep
	store := simstore.New(o.MaxSize)
	d, err := createOn(store, o)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	classes := make([]*Subpages, len(subpageCrashSizes))
	for i, size := range subpageCrashSizes {
		if classes[i], err = d.Subpages(size); err != nil {
			d.Close()
			t.Fatal(err)
		}
	}
	m := &subpageCrashModel{createdAt: store.Ops(), digests: []subpageDigest{{}}, allocdBy: map[Addr][]int{}}
	stats := subpageCrashWorkload(t, d, store, m, classes, rand.New(rand.NewPCG(seed, 2)))
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("workload: %s; %d ops, %d syncs", stats, store.Ops(), len(store.SyncPoints()))

	c := &subpageCrashChecker{t: t, seed: seed, store: store, m: m}
	start := time.Now()
	rng := rand.New(rand.NewPCG(seed, 1))
	type point struct {
		n      int
		stream uint64
		sync   bool
	}
	var points []point
	for i, s := range crashSyncSample(t, store.SyncPoints(), seed) {
		points = append(points, point{s, uint64(2 * i), true}, point{s + 1, uint64(2*i + 1), true})
	}
	for i := range randomPoints {
		points = append(points, point{rng.IntN(store.Ops() + 1), 1<<32 | uint64(i), false})
	}
	sort.SliceStable(points, func(i, j int) bool { return points[i].n < points[j].n })
	syncImages := 0
	for i, p := range points {
		if p.sync {
			syncImages++
		}
		c.check(p.n, p.stream, i%subpageCrashContinueEvery == 0)
	}
	t.Logf("crash points: %d at syncs (%d syncs), %d random; %d images opened (%d crashed inside Create and were refused), %d held commits beyond the last returned, %d took one more transaction; %d slots and their stamps compared; violations: %d; %v",
		syncImages, len(store.SyncPoints()), len(points)-syncImages, c.opened, c.createFailed, c.beyondReturned, c.continued, c.slotsCompared, c.violations,
		time.Since(start).Round(time.Millisecond))
}

// subpageCrashWorkload runs random transactions and records them in m.
func subpageCrashWorkload(t *testing.T, d *Device, store *simstore.Store, m *subpageCrashModel, classes []*Subpages, rng *rand.Rand) string {
	t.Helper()
	var live []Addr // committed, in no order
	cur := subpageDigest{}
	log := newSubpageFreeLog(d)
	allocs, frees, noSpace, rollbacks, inPlace, journaled := 0, 0, 0, 0, 0, 0
	for range subpageCrashTxns {
		tx, err := d.Begin()
		if err != nil {
			t.Fatal(err)
		}
		rec := &subpageCrashTxn{}
		txLive := slices.Clone(live)
		// Phases of growth and shrinking, so that parents fill, empty and
		// go back to the buddy allocator, and the heap fills.
		allocPct := 80
		if len(m.txns)/100%2 == 1 {
			allocPct = 25
		}
		for n := 1 + rng.IntN(subpageCrashOpsMax); n > 0; n-- {
			if rng.IntN(100) < allocPct || len(txLive) == 0 {
				s := classes[len(classes)-1]
				if rng.IntN(10) < 3 {
					s = classes[rng.IntN(len(classes))]
				}
				a, err := s.Alloc(tx)
				if errors.Is(err, ErrNoSpace) {
					noSpace++
					continue
				}
				if err != nil {
					tx.Rollback()
					t.Fatalf("Alloc: %v", err)
				}
				if err := log.alloc(a); err != nil {
					tx.Rollback()
					t.Fatal(err)
				}
				stamp := subpageStamp(a, len(m.txns))
				if _, err := d.WriteAt(stamp, a.Offset()); err == nil {
					inPlace++
				} else if errors.Is(err, ErrProtected) {
					// The parent is new in this transaction.
					if err := tx.Write(a.Offset(), stamp); err != nil {
						tx.Rollback()
						t.Fatalf("Txn.Write of a stamp into %v: %v", a, err)
					}
					journaled++
				} else {
					tx.Rollback()
					t.Fatalf("WriteAt of a stamp into %v: %v", a, err)
				}
				rec.allocs = append(rec.allocs, a)
				txLive = append(txLive, a)
				continue
			}
			i := rng.IntN(len(txLive))
			a := txLive[i]
			if err := subpageClassOf(classes, a).Free(tx, a); err != nil {
				tx.Rollback()
				t.Fatalf("Free(%v): %v", a, err)
			}
			txLive[i] = txLive[len(txLive)-1]
			txLive = txLive[:len(txLive)-1]
			rec.frees = append(rec.frees, a)
			log.free(a)
		}
		if rng.IntN(12) == 0 {
			tx.Rollback()
			log.rolledBack()
			rollbacks++
			continue
		}
		rec.startedAt = store.Ops()
		if err := tx.Commit(); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		rec.returnedAt = store.Ops()
		log.committed(tx.seq)
		live = txLive
		for _, a := range rec.allocs {
			m.allocdBy[a] = append(m.allocdBy[a], len(m.txns))
		}
		// A slot allocated and freed by one transaction is in neither
		// set of the digest.
		for _, a := range rec.allocs {
			cur.add(a, 1)
		}
		for _, a := range rec.frees {
			cur.add(a, -1)
		}
		allocs += len(rec.allocs)
		frees += len(rec.frees)
		m.txns = append(m.txns, rec)
		m.digests = append(m.digests, cur)
	}
	got, _, _, err := subpageSlots(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(live) {
		t.Fatalf("after the workload the device holds %d slots, the model %d", len(got), len(live))
	}
	if noSpace == 0 || log.reused == 0 {
		t.Errorf("the workload never filled the heap (%d) or never reused a freed slot (%d): it does not reach parent and slot reuse", noSpace, log.reused)
	}
	return fmt.Sprintf("%d committed transactions, %d rolled back; %d slot allocs (%d ErrNoSpace, %d slots handed out again after a covered free), %d frees; stamps: %d in place, %d journaled; %d slots live at the end",
		len(m.txns), rollbacks, allocs, noSpace, log.reused, frees, inPlace, journaled, len(live))
}

func subpageClassOf(classes []*Subpages, a Addr) *Subpages {
	for _, s := range classes {
		if s.slotShift == uint(a&addrSizeMask) {
			return s
		}
	}
	return classes[0]
}

type subpageCrashChecker struct {
	t     *testing.T
	seed  uint64
	store *simstore.Store
	m     *subpageCrashModel

	opened, createFailed, beyondReturned, continued, slotsCompared, violations int
}

func (c *subpageCrashChecker) fail(n int, stream uint64, desc, format string, args ...any) {
	c.t.Helper()
	c.violations++
	c.t.Errorf("crash after %d of %d ops (seed %d, stream %d): %s\nimage: %s", n, c.store.Ops(), c.seed, stream, fmt.Sprintf(format, args...), desc)
	if c.violations >= subpageCrashMaxViolations {
		c.t.Fatalf("%d violations; stopping", c.violations)
	}
}

// check opens the image of a crash after n operations and compares it with
// the model; with more, it then runs one more transaction on it.
func (c *subpageCrashChecker) check(n int, stream uint64, more bool) {
	t := c.t
	t.Helper()
	img, err := c.store.Image(n, rand.New(rand.NewPCG(c.seed, stream)))
	if err != nil {
		t.Fatalf("Image(%d): %v", n, err)
	}
	desc := img.Describe()
	d, err := openOn(img, &Options{})
	if err != nil {
		img.Close()
		if n < c.m.createdAt && errors.Is(err, ErrCorrupt) {
			c.createFailed++
			return
		}
		c.fail(n, stream, desc, "Open: %v", err)
		return
	}
	defer d.Close()
	c.opened++
	slots, err := subpageCrashLive(d)
	if err != nil {
		c.fail(n, stream, desc, "%v", err)
		return
	}
	var got subpageDigest
	for a := range slots {
		got.add(a, 1)
	}
	lo, hi := c.m.bounds(n)
	if n < c.m.createdAt {
		lo = 0
	}
	matched := -1
	for k := lo; k <= hi; k++ {
		if c.m.digests[k] == got {
			matched = k
			break
		}
	}
	if matched < 0 {
		c.fail(n, stream, desc, "the %d live slots match no prefix of txns[%d:%d] (%d slots after txns[:%d])", len(slots), lo, hi+1, c.m.digests[lo].count, lo)
		return
	}
	if matched > lo {
		c.beyondReturned++
	}
	for a := range slots {
		owner := c.m.owner(a, matched)
		got := make([]byte, subpageStampBytes)
		d.readCommittedRange(got, a.Offset())
		if want := subpageStamp(a, owner); !bytes.Equal(got, want) {
			c.fail(n, stream, desc, "slot %v, allocated by txns[%d] of the %d recovered, holds stamp %x, want %x: another owner wrote over it", a, owner, matched, got, want)
			return
		}
	}
	c.slotsCompared += len(slots)
	if more && n >= c.m.createdAt {
		c.continued++
		if err := subpageCrashContinue(d, slots); err != nil {
			c.fail(n, stream, desc, "after recovery, one more transaction: %v", err)
		}
	}
}

// subpageCrashLive returns the live slots of d after Check, or an error if
// Check fails, two slots overlap or an allocated page is no parent.
func subpageCrashLive(d *Device) (map[Addr]bool, error) {
	slots, _, pages, err := subpageSlots(d)
	if err != nil {
		return nil, fmt.Errorf("after recovery: %w", err)
	}
	for a := range pages {
		return nil, fmt.Errorf("allocated page %v is not a sub-page parent (leaked)", a)
	}
	sorted := slices.SortedFunc(func(yield func(Addr) bool) {
		for a := range slots {
			if !yield(a) {
				return
			}
		}
	}, func(a, b Addr) int { return int(a.Offset() - b.Offset()) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i-1].Offset()+sorted[i-1].Size() > sorted[i].Offset() {
			return nil, fmt.Errorf("slots %v and %v overlap", sorted[i-1], sorted[i])
		}
	}
	return slots, nil
}

// subpageCrashContinue frees half of the recovered slots and allocates a
// few in every class, commits, and checks the device.
func subpageCrashContinue(d *Device, slots map[Addr]bool) error {
	classes := make([]*Subpages, len(subpageCrashSizes))
	for i, size := range subpageCrashSizes {
		var err error
		if classes[i], err = d.Subpages(size); err != nil {
			return err
		}
	}
	err := d.Update(func(tx *Txn) error {
		i := 0
		for a := range slots {
			if i++; i%2 == 0 {
				continue
			}
			if err := subpageClassOf(classes, a).Free(tx, a); err != nil {
				return fmt.Errorf("Free(%v) of a recovered slot: %w", a, err)
			}
		}
		for _, s := range classes {
			for range 8 {
				if _, err := s.Alloc(tx); err != nil && !errors.Is(err, ErrNoSpace) {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	_, err = subpageCrashLive(d)
	return err
}
