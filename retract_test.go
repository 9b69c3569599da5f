package pagealloc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

var (
	retractSeed   = flag.Uint64("retract.seed", 0, "seed for TestCloseShrinksFile and TestCloseRetractCrash (0: from the time)")
	retractPoints = flag.Int("retract.points", 0, "random crash points for TestCloseRetractCrash (0: the default)")
)

// retractOptions has 64 KiB max pages, so that a few hundred pages span
// dozens of them and the free end of the heap is many max pages long.
func retractOptions() *Options {
	return &Options{MaxSize: 64 << 20, MinPageSize: 4096, MaxPageSize: 64 << 10, GrowthStep: 1 << 20}
}

// retractWorkload allocates pages it keeps, stamped in place, low in the
// heap, then a run of pages that grows the heap far past them, then frees
// the run: the heap ends in free space, the last part of it pending. It
// returns the kept pages and the frontier Close should leave: the end of
// the max page holding the highest kept byte.
func retractWorkload(t *testing.T, d *Device, rng *rand.Rand) (kept []Addr, frontier int64) {
	t.Helper()
	size := func() int64 { return int64(4096) << rng.IntN(5) }
	kept = allocSized(t, d, 5+rng.IntN(20), size)
	for _, a := range kept {
		if _, err := d.WriteAt(retractStamp(a), a.Offset()); err != nil {
			t.Fatal(err)
		}
	}
	var run []Addr
	for range 3 { // three transactions, each growing the heap
		run = append(run, allocSized(t, d, 40+rng.IntN(40), size)...)
	}
	// Freed in two transactions; the second's pages are still pending
	// when Close begins.
	rng.Shuffle(len(run), func(i, j int) { run[i], run[j] = run[j], run[i] })
	half := len(run) / 2
	freePages(t, d, run[:half])
	freePages(t, d, run[half:])
	top := int64(0)
	for _, a := range kept {
		top = max(top, a.Offset()+a.Size())
	}
	g := &d.alloc.g
	frontier = g.heapOff + alignUp(top-g.heapOff, g.maxPageBytes())
	if st := d.Stats(); st.Frontier <= frontier || st.PendingPages == 0 {
		t.Fatalf("the workload left no free tail to retract or nothing pending: frontier %d, kept pages end in the max page before %d, %d pending", st.Frontier, frontier, st.PendingPages)
	}
	return kept, frontier
}

// retractStamp is what the workload writes at the start of page a.
func retractStamp(a Addr) []byte {
	return binary.LittleEndian.AppendUint64([]byte("retract:"), uint64(a))
}

// retractPages returns the allocated pages of d, ascending, if it passes
// Check.
func retractPages(d *Device) ([]Addr, error) {
	var got []Addr
	d.writer.Lock()
	err := d.check(func(a Addr) { got = append(got, a) })
	d.writer.Unlock()
	if err != nil {
		return nil, fmt.Errorf("Check: %w", err)
	}
	slices.Sort(got)
	return got, nil
}

// retractVerify checks that d holds exactly the kept pages, stamped, and
// passes Check.
func retractVerify(d *Device, kept []Addr) error {
	got, err := retractPages(d)
	if err != nil {
		return err
	}
	if want := slices.Sorted(slices.Values(kept)); !slices.Equal(got, want) {
		return fmt.Errorf("allocated pages %v, want the kept ones %v", got, want)
	}
	for _, a := range kept {
		stamp := retractStamp(a)
		b := make([]byte, len(stamp))
		if _, err := d.ReadAt(b, a.Offset()); err != nil {
			return fmt.Errorf("reading %v: %w", a, err)
		}
		if !bytes.Equal(b, stamp) {
			return fmt.Errorf("%v holds %q, want its stamp %q", a, b, stamp)
		}
	}
	return nil
}

func TestCloseShrinksFile(t *testing.T) {
	seed := testSeed(t, "retract.seed", *retractSeed)
	rng := rand.New(rand.NewPCG(seed, 0))
	path := filepath.Join(t.TempDir(), "dev")
	d, err := Create(path, retractOptions())
	if err != nil {
		t.Fatal(err)
	}
	kept, frontier := retractWorkload(t, d, rng)
	grown := d.Stats()
	d = reopen(t, d, path, nil)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := d.Stats()
	if st.Frontier != frontier || fi.Size() != frontier || st.FileSize != frontier {
		t.Fatalf("after Close: frontier %d, file %d bytes (Stats says %d); want both %d (the heap had grown to %d in a %d-byte file)",
			st.Frontier, fi.Size(), st.FileSize, frontier, grown.Frontier, grown.FileSize)
	}
	if st.PendingPages != 0 || st.AllocatedPages != int64(len(kept)) {
		t.Fatalf("after Close: %d pending and %d allocated pages, want 0 and the %d kept", st.PendingPages, st.AllocatedPages, len(kept))
	}
	if err := retractVerify(d, kept); err != nil {
		t.Fatal(err)
	}
	// The heap grows back over the cut space, which reads as zeroes.
	again := allocPages(t, d, 100, 64<<10)
	if st := d.Stats(); st.Frontier <= frontier {
		t.Fatalf("100 max pages more did not grow the heap past %d: frontier %d", frontier, st.Frontier)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	freePages(t, d, again)
	d = reopen(t, d, path, nil)
	if err := retractVerify(d, kept); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != frontier {
		t.Fatalf("after the second Close the file holds %v bytes (%v), want %d", fi.Size(), err, frontier)
	}
}

// TestCloseRetractsWholeBlocks frees every page of a heap two blocks
// long but the first: Close takes the frontier back over the second
// block's metadata and the first block's free pages, and a heap freed
// completely back to its start. A 32-bit process cannot map such a heap:
// there it checks that Create refuses it with ErrTooLarge.
func TestCloseRetractsWholeBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	opts := &Options{MaxSize: 3 << 30}
	d, err := Create(path, opts)
	if strconv.IntSize == 32 {
		// Two blocks of 1 GiB are more than a 32-bit int can map.
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Create with a MaxSize of 3 GiB on a 32-bit platform: %v, want ErrTooLarge", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	g := &d.alloc.g
	pages := allocPages(t, d, int(g.blockBytes/g.maxPageBytes())+8, g.maxPageBytes())
	if st := d.Stats(); st.Frontier <= g.heapOff+g.blockBytes {
		t.Fatalf("%d max pages did not reach the second block: frontier %d, block %d bytes", len(pages), st.Frontier, g.blockBytes)
	}
	first := slices.Min(pages)
	if _, err := d.WriteAt(retractStamp(first), first.Offset()); err != nil {
		t.Fatal(err)
	}
	freePages(t, d, slices.DeleteFunc(slices.Clone(pages), func(a Addr) bool { return a == first }))
	d = reopen(t, d, path, opts)
	want := first.Offset() + first.Size()
	if st := d.Stats(); st.Frontier != want || st.FileSize != want {
		t.Fatalf("after Close: frontier %d, file %d bytes; want both %d", st.Frontier, st.FileSize, want)
	}
	if err := retractVerify(d, []Addr{first}); err != nil {
		t.Fatal(err)
	}
	freePages(t, d, []Addr{first})
	d = reopen(t, d, path, opts)
	if st := d.Stats(); st.Frontier != g.heapOff || st.FileSize != g.heapOff || st.FreeBytes != 0 {
		t.Fatalf("after freeing everything and Close: frontier %d, file %d bytes, %d free; want the heap's start %d and nothing free", st.Frontier, st.FileSize, st.FreeBytes, g.heapOff)
	}
	if err := retractVerify(d, nil); err != nil {
		t.Fatal(err)
	}
	again := allocPages(t, d, 3, g.maxPageBytes())
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	if again[0].Offset() != first.Offset() {
		t.Fatalf("the regrown heap's first max page is at %d, want %d as before", again[0].Offset(), first.Offset())
	}
}

// TestCloseKeepsAllocatedTail: with an allocated page in the last max
// page, Close moves nothing and does not wait for the pending pages.
func TestCloseKeepsAllocatedTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	d, err := Create(path, retractOptions())
	if err != nil {
		t.Fatal(err)
	}
	pages := allocPages(t, d, 300, 16<<10)
	// Free all but the highest page: nothing at the end is free.
	last := slices.Max(pages)
	freePages(t, d, slices.DeleteFunc(slices.Clone(pages), func(a Addr) bool { return a == last }))
	before := d.Stats().Frontier
	d = reopen(t, d, path, nil)
	st := d.Stats()
	if st.Frontier != before || st.FileSize < before {
		t.Fatalf("Close moved a frontier with an allocated page in its last max page: %d, was %d (file %d bytes)", st.Frontier, before, st.FileSize)
	}
	// Releasing them could not have moved the frontier: Close left the
	// pending pages to the first transaction after Open.
	if st.PendingPages != int64(len(pages)-1) {
		t.Fatalf("after Close %d pages are pending, want the %d freed last", st.PendingPages, len(pages)-1)
	}
	if got, err := retractPages(d); err != nil || !slices.Equal(got, []Addr{last}) {
		t.Fatalf("after Close: allocated %v (%v), want only %v", got, err, last)
	}
}

// TestCloseRetractsLongTail frees thousands of max pages at the end of the
// heap, more than one transaction can detach within a journal record:
// Close must take as many transactions as it needs, not fail.
func TestCloseRetractsLongTail(t *testing.T) {
	opts := &Options{NoSync: true, MaxPageSize: 64 << 10, JournalSize: 256 << 10, MaxSize: 5<<20 + 512<<20, GrowthStep: 1 << 20}
	path := filepath.Join(t.TempDir(), "dev")
	d, err := Create(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	heapOff := d.geometry.heapOff
	var pages []Addr
	for {
		batch, err := tryAllocPages(d, 200, 64<<10)
		pages = append(pages, batch...)
		if errors.Is(err, ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < len(pages); i += 200 {
		freePages(t, d, pages[i:min(i+200, len(pages))])
	}
	coverCommitted(t, d)
	releaseCovered(t, d)
	if st := d.Stats(); st.FreePages[len(st.FreePages)-1] < 8000 {
		t.Fatalf("only %d free max pages; the test needs a tail longer than one record retracts", st.FreePages[len(st.FreePages)-1])
	}
	d = reopen(t, d, path, &Options{NoSync: true})
	if st := d.Stats(); st.Frontier != heapOff || st.FileSize != heapOff || st.AllocatedPages != 0 {
		t.Fatalf("after Close: frontier %d, file %d bytes, %d pages allocated; want the heap empty at %d", st.Frontier, st.FileSize, st.AllocatedPages, heapOff)
	}
	mustCheck(t, d)
}

// tryAllocPages allocates up to n pages of size bytes in one transaction,
// returning the ones it got before an error, which it returns too.
func tryAllocPages(d *Device, n int, size int64) ([]Addr, error) {
	var got []Addr
	err := d.Update(func(tx *Txn) error {
		for range n {
			a, err := tx.Alloc(size)
			if err != nil {
				return err
			}
			got = append(got, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return got, nil
}

// retractStore is a simulated store that outlives the devices opened on
// it, so that a test can look at it after Close.
type retractStore struct{ *simstore.Store }

func (retractStore) Close() error { return nil }

// TestCloseRetractCrash crashes the simulated store at every sync point,
// after every operation and at random points of a Close that releases
// pending pages, retracts the heap and cuts the file. Every image opens with exactly the kept
// pages, stamped; a frontier between the final one and where it was; a
// file at least that long; and after a Close of its own, the final
// frontier and file size.
func TestCloseRetractCrash(t *testing.T) {
	seed := testSeed(t, "retract.seed", *retractSeed)
	points := 300
	if raceEnabled() || testing.Short() {
		points = 60
	}
	if *retractPoints > 0 {
		points = *retractPoints
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	o, err := retractOptions().withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	store := simstore.New(o.MaxSize)
	defer store.Close()
	d, err := createOn(retractStore{store}, o)
	if err != nil {
		t.Fatal(err)
	}
	kept, frontier := retractWorkload(t, d, rng)
	grown := d.Stats().Frontier
	closeFrom := store.Ops()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	closeTo := store.Ops()
	if size, err := store.Size(); err != nil || size != frontier {
		t.Fatalf("after Close the file holds %d bytes (%v), want %d", size, err, frontier)
	}
	var ns []int
	syncs := 0
	for _, s := range store.SyncPoints() {
		if s >= closeFrom {
			ns = append(ns, s, s+1)
			syncs++
		}
	}
	// Every operation of Close too, the first among them: a crash
	// before it keeps the heap as the workload grew it, and a crash
	// after the last, the final frontier. Random points draw other
	// fates for the writes not synced.
	for n := closeFrom; n <= closeTo; n++ {
		ns = append(ns, n)
	}
	for range points {
		ns = append(ns, closeFrom+rng.IntN(closeTo-closeFrom+1))
	}
	final := 0
	for i, n := range ns {
		img, err := store.Image(n, rand.New(rand.NewPCG(seed, uint64(i)+1)))
		if err != nil {
			t.Fatalf("Image(%d): %v", n, err)
		}
		desc := img.Describe()
		fail := func(format string, args ...any) {
			t.Fatalf("crash after %d of %d ops (Close spans %d..%d; image %d of %d; %s): %s", n, closeTo, closeFrom, closeTo, i, len(ns), desc, fmt.Sprintf(format, args...))
		}
		d, err := openOn(retractStore{img}, &Options{})
		if err != nil {
			fail("Open: %v", err)
		}
		st := d.Stats()
		if st.Frontier < frontier || st.Frontier > grown || st.FileSize < st.Frontier {
			d.Close()
			fail("frontier %d, file %d bytes: want a frontier in [%d, %d] inside the file", st.Frontier, st.FileSize, frontier, grown)
		}
		if st.Frontier == frontier {
			final++
		}
		if err := retractVerify(d, kept); err != nil {
			d.Close()
			fail("%v", err)
		}
		if err := d.Close(); err != nil {
			fail("Close after recovery: %v", err)
		}
		if size, err := img.Size(); err != nil || size != frontier {
			fail("Close after recovery left %d bytes (%v), want %d", size, err, frontier)
		}
		if d, err = openOn(retractStore{img}, &Options{}); err != nil {
			fail("Open after the Close after recovery: %v", err)
		}
		if err := retractVerify(d, kept); err != nil || d.Stats().Frontier != frontier {
			d.Close()
			fail("after the Close after recovery: frontier %d, want %d; %v", d.Stats().Frontier, frontier, err)
		}
		if err := d.Close(); err != nil {
			fail("second Close: %v", err)
		}
		img.Close()
	}
	t.Logf("crash points in Close: %d at its %d syncs, %d at each of its operations, %d random; %d images already at the final frontier %d (grown to %d); 0 violations",
		2*syncs, syncs, closeTo-closeFrom+1, points, final, frontier, grown)
	if syncs == 0 || final == len(ns) {
		t.Fatalf("the crash points never reached Close's work: %d syncs, %d of %d images already retracted", syncs, final, len(ns))
	}
}

// TestStatsAfterClose closes a device whose Close has work to do (pending
// pages and slots to release, a free end of the heap to cut): Stats,
// Log.Stats and Subpages.Stats called after it must give the state Close
// left, which a reopen of the file finds.
func TestStatsAfterClose(t *testing.T) {
	o := subpageOptions()
	o.LogRegions = []LogRegion{{"wal", 16 << 10}}
	d, path := createTestDevice(t, o)
	l := mustLog(t, d, "wal")
	appendEntryT(t, l, logContent(1, 500))
	sp, err := d.Subpages(256)
	if err != nil {
		t.Fatal(err)
	}
	var slots []Addr
	if err := d.Update(func(tx *Txn) error {
		for range 10 {
			a, err := sp.Alloc(tx)
			if err != nil {
				return err
			}
			slots = append(slots, a)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pages := allocPages(t, d, 40, 64<<10)
	freePages(t, d, pages[20:])
	if err := d.Update(func(tx *Txn) error { return sp.Free(tx, slots[0]) }); err != nil {
		t.Fatal(err)
	}
	before := d.Stats()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	st, ls, ss := d.Stats(), l.Stats(), sp.Stats()
	if st.Frontier >= before.Frontier || st.PendingPages != 0 {
		t.Fatalf("set-up: Close cut the frontier from %d to %d and left %d pages pending; want a cut and none", before.Frontier, st.Frontier, st.PendingPages)
	}
	d = reopen(t, d, path, o)
	if got := d.Stats(); !reflect.DeepEqual(got, st) {
		t.Errorf("Stats after Close %+v, after a reopen %+v", st, got)
	}
	l = mustLog(t, d, "wal")
	got := l.Stats()
	if got.Head != ls.Head || got.DurableTail != ls.DurableTail || got.Tail != ls.Tail || got.UsedBytes != ls.UsedBytes || got.FreeBytes != ls.FreeBytes {
		t.Errorf("Log.Stats after Close %+v, after a reopen %+v", ls, got)
	}
	sp, err = d.Subpages(256)
	if err != nil {
		t.Fatal(err)
	}
	if got := sp.Stats(); got != ss {
		t.Errorf("Subpages.Stats after Close %+v, after a reopen %+v", ss, got)
	}
}
