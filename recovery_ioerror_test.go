package pagealloc

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

// TestIOErrorDuringRecovery fails, in turn, each storage operation that
// Open makes to recover a crashed device (growing the file back, writing
// the replayed records home, the checkpoint after them), with EIO and
// with ENOSPC. (A write failing part-way, as TestIOErrorAtEveryOperation
// also has it, needs a write that crosses a 512-byte sector boundary; the
// log counts them, and here recovery makes none.) The Open returns the error, which errors.Is finds; the
// file it leaves, opened again as written and after a power loss that
// drops what the failed Open did not sync, recovers to the same device as
// an Open that met no error: the same heap and its allocated bytes, root
// area, sub-page slots and log entries, and Check passes.
func TestIOErrorDuringRecovery(t *testing.T) {
	store, n, truncates := recoveryWorkload(t)
	// Crash images: the end of the workload, every write synced; just
	// before each of its last syncs, the writes since the one before
	// each kept, dropped or torn as a seeded choice says; and just
	// before the sync after its last growth of the file, with the first
	// of the seeds tried whose choice keeps the journal record and loses
	// the growth, so that recovery grows the file back.
	type point struct {
		n    int
		seed uint64
	}
	image := func(p point) *simstore.Store {
		var rng *rand.Rand
		if p.seed != 0 {
			rng = rand.New(rand.NewPCG(p.seed, 0x5ec))
		}
		img, err := store.Image(p.n, rng)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	points := []point{{n, 0}}
	syncs := store.SyncPoints()
	before := recoveryImages
	if testing.Short() || crashSampled() {
		before = recoveryImagesSampled
	}
	for i, s := range syncs[max(0, len(syncs)-before):] {
		points = append(points, point{s, uint64(i) + 1})
	}
	if len(truncates) == 0 {
		t.Fatal("the workload never grew the file")
	}
	grown := truncates[len(truncates)-1]
	after, _ := slices.BinarySearch(syncs, grown)
	if after == len(syncs) {
		t.Fatal("the workload's last growth of the file has no sync after it")
	}
	for seed := uint64(1 << 20); seed < 1<<20+64; seed++ {
		p := point{syncs[after], seed}
		img := image(p)
		trace, d := recoveryOpen(t, img)
		d.Close()
		img.Close()
		if slices.ContainsFunc(trace, func(op simstore.Op) bool { return op.Kind == simstore.OpTruncate }) {
			points = append(points, p)
			break
		}
	}
	totals, partial := map[simstore.OpKind]int{}, 0
	for _, p := range points {
		trace := recoveryFailEach(t, fmt.Sprintf("image after %d of %d operations (seed %d)", p.n, n, p.seed), func() *simstore.Store { return image(p) })
		for _, op := range trace {
			totals[op.Kind]++
			if ioSweepPartial(op) > 0 {
				partial++
			}
		}
	}
	t.Logf("%d images; their recoveries make %d writes (%d crossing a sector boundary), %d syncs, %d truncates, each failed in turn with EIO and ENOSPC",
		len(points), totals[simstore.OpWrite], partial, totals[simstore.OpSync], totals[simstore.OpTruncate])
	if totals[simstore.OpWrite] < 3*len(points) || totals[simstore.OpSync] == 0 || totals[simstore.OpTruncate] == 0 {
		t.Fatalf("the crashed workload leaves too little to recover: %v", totals)
	}
}

// recoveryOpen opens img and returns the operations the Open made, and
// the device; the caller closes both.
func recoveryOpen(t *testing.T, img *simstore.Store) ([]simstore.Op, *Device) {
	t.Helper()
	var trace []simstore.Op
	img.SetFault(func(op simstore.Op) error { trace = append(trace, op); return nil })
	d, err := openOn(ioSweepStore{img}, &Options{})
	if err != nil {
		t.Fatalf("Open of %s: %v", img.Describe(), err)
	}
	img.SetFault(nil) // the operations after this one are not recovery's
	return trace, d
}

// recoveryImages is how many of the workload's last syncs
// TestIOErrorDuringRecovery crashes just before (under -short, -race and
// -tags invariants, recoveryImagesSampled).
const (
	recoveryImages        = 5
	recoveryImagesSampled = 1
)

// recoveryFailEach opens an image, from img, without error, then again
// failing each of the operations that Open made in turn, and checks what
// each failed Open leaves; it returns the operations.
func recoveryFailEach(t *testing.T, label string, img func() *simstore.Store) []simstore.Op {
	t.Helper()
	// The Open that meets no error: the operations it makes, and what it
	// makes of the image.
	ref := img()
	defer ref.Close()
	trace, rd := recoveryOpen(t, ref)
	want := recoverySummary(t, rd)
	if err := rd.Close(); err != nil {
		t.Fatal(err)
	}

	for k, failing := range trace {
		for _, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC} {
			what := fmt.Sprintf("%s: operation %d of %d (%v) failing with %v", label, k, len(trace), failing, errno)
			s := img()
			seen := 0
			s.SetFault(func(op simstore.Op) error {
				if seen++; seen-1 == k {
					return errno
				}
				return nil
			})
			if d, err := openOn(ioSweepStore{s}, &Options{}); err == nil {
				t.Errorf("%s: Open returned no error", what)
				d.Close()
			} else if !errors.Is(err, errno) {
				t.Errorf("%s: Open: %v, want an error that errors.Is finds %v in", what, err, errno)
			}
			s.SetFault(nil)
			crashed, err := s.Image(s.Ops(), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, again := range []struct {
				label string
				store *simstore.Store
			}{{"as written", s}, {"after a crash", crashed}} {
				d, err := openOn(ioSweepStore{again.store}, &Options{})
				if err != nil {
					t.Errorf("%s: Open %s: %v", what, again.label, err)
					continue
				}
				if got := recoverySummary(t, d); got != want {
					t.Errorf("%s: opened %s, the device is not the one an Open without error recovers:\n%s", what, again.label, recoveryDiff(got, want))
				}
				if err := d.Close(); err != nil {
					t.Errorf("%s: Close %s: %v", what, again.label, err)
				}
			}
			crashed.Close()
			s.Close()
		}
	}
	return trace
}

// recoveryWorkload runs a workload on a simulated store that leaves
// journal records for recovery to replay: pages allocated, journaled into
// and freed, root writes, sub-page slots, log entries, the file grown. It
// returns the store, the length of its trace at the end and the indices
// of its truncates; the device stays open until the test ends.
func recoveryWorkload(t *testing.T) (*simstore.Store, int, []int) {
	o := ioSweepOptions(t)
	d, store := simDevice(t, o)
	var truncates []int
	store.SetFault(func(op simstore.Op) error {
		if op.Kind == simstore.OpTruncate {
			truncates = append(truncates, op.Index)
		}
		return nil
	})
	sp, err := d.Subpages(ioSweepSlotBytes)
	if err != nil {
		t.Fatal(err)
	}
	l := mustLog(t, d, "log")
	owner := &setLive{live: map[uint64]int64{}}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	rootOff, _ := d.Root()
	var pages, slots []Addr
	for i := range 40 {
		err := d.Update(func(tx *Txn) error {
			for j := range 1 + i%3 {
				a, err := tx.Alloc(o4K << ((i + j) % 5))
				if err != nil {
					return err
				}
				pages = append(pages, a)
				if err := tx.Write(a.Offset()+64, ioSweepStamp(a, uint64(i))); err != nil {
					return err
				}
			}
			if i%3 == 2 {
				if err := tx.Free(pages[0]); err != nil {
					return err
				}
				pages = pages[1:]
			}
			a, err := sp.Alloc(tx)
			if err != nil {
				return err
			}
			slots = append(slots, a)
			if err := tx.Write(a.Offset(), ioSweepStamp(a, uint64(i))); err != nil {
				return err
			}
			if i%4 == 3 {
				if err := sp.Free(tx, slots[0]); err != nil {
					return err
				}
				slots = slots[1:]
			}
			return tx.Write(rootOff+int64(i%32)*ioSweepStampBytes, ioSweepStamp(0, uint64(i)))
		})
		if err != nil {
			t.Fatal(err)
		}
		p := logContent(uint64(i), 300+i*23)
		r, err := l.Append(len(p))
		if err == nil {
			owner.add(uint64(i), r.Offset())
			if _, err = d.WriteAt(p, r.Offset()); err == nil {
				err = l.Commit(r)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if d.journal.tail == d.journal.head {
		t.Fatal("the workload left no journal record to replay")
	}
	store.SetFault(nil)
	return store, store.Ops(), truncates
}

// recoverySummary describes d, one fact a line, for comparing two
// recoveries: Check's verdict, the allocator's and the classes' stats, the
// heap's extents with a hash of each allocated one's bytes, the root area's
// hash, the allocated slots, and the log's positions and entries.
func recoverySummary(t *testing.T, d *Device) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "Check: %v\n", d.Check())
	fmt.Fprintf(&b, "stats: %+v\n", d.Stats())
	var extents []HeapExtent
	if err := d.WalkHeap(func(e HeapExtent) bool { extents = append(extents, e); return true }); err != nil {
		t.Fatal(err)
	}
	for _, e := range extents {
		fmt.Fprintf(&b, "extent %d+%d kind %v slots %d", e.Offset, e.Size, e.Kind, e.SlotsUsed)
		if e.Kind == PageAllocated || e.Kind == PageSubpages {
			p := make([]byte, e.Size)
			if _, err := d.ReadAt(p, e.Offset); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, " bytes %x", sha256.Sum256(p))
		}
		b.WriteByte('\n')
	}
	rootOff, rootSize := d.Root()
	root := make([]byte, rootSize)
	if _, err := d.ReadAt(root, rootOff); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "root %x\n", sha256.Sum256(root))
	slots, pending, _, err := subpageSlots(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range slices.Sorted(maps.Keys(slots)) {
		fmt.Fprintf(&b, "slot %v\n", a)
	}
	for _, a := range slices.Sorted(maps.Keys(pending)) {
		fmt.Fprintf(&b, "pending slot %v\n", a)
	}
	l, err := d.Log("log")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "log: %+v\n", l.Stats())
	for e, err := range l.Entries(0) {
		if err != nil {
			fmt.Fprintf(&b, "log walk: %v\n", err)
			break
		}
		fmt.Fprintf(&b, "entry at %d: %d bytes, %x\n", e.Pos, len(e.Data), sha256.Sum256(e.Data))
	}
	return b.String()
}

// recoveryDiff lists the lines of got and want that the other lacks.
func recoveryDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var b strings.Builder
	for _, line := range g {
		if !slices.Contains(w, line) {
			fmt.Fprintf(&b, "\tgot:  %s\n", line)
		}
	}
	for _, line := range w {
		if !slices.Contains(g, line) {
			fmt.Fprintf(&b, "\twant: %s\n", line)
		}
	}
	return b.String()
}
