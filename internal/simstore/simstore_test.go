package simstore

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("simstore.seed", 0, "seed for the random tests; 0 picks one from the clock")

// testRand returns a generator for a random test and logs its seed, so a
// failure can be rerun with -simstore.seed.
func testRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -simstore.seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func openStore(t testing.TB, maxSize int64) *Store {
	t.Helper()
	s := New(maxSize)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func takeImage(t testing.TB, s *Store, n int, rng *rand.Rand) *Store {
	t.Helper()
	img, err := s.Image(n, rng)
	if err != nil {
		t.Fatalf("Image(%d): %v", n, err)
	}
	t.Cleanup(func() { _ = img.Close() })
	return img
}

func mustWrite(t testing.TB, s *Store, p []byte, off int64) {
	t.Helper()
	if n, err := s.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d bytes, %d) = %d, %v", len(p), off, n, err)
	}
}

func mustSync(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// contents returns every byte of s up to its size, read with ReadAt, after
// checking that the mapping shows the same bytes and only zeroes past the
// size.
func contents(t testing.TB, s *Store) []byte {
	t.Helper()
	size, err := s.Size()
	if err != nil {
		t.Fatalf("Size: %v", err)
	}
	got := make([]byte, size)
	if n, err := s.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt(%d bytes, 0) = %d, %v", size, n, err)
	}
	view, err := s.Map(s.maxSize, false)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	if !bytes.Equal(view[:size], got) {
		t.Fatalf("mapping and ReadAt disagree")
	}
	if i := bytes.IndexFunc(view[size:min(s.maxSize, size+3*pageBytes)], func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("byte %d past size %d is not zero", size+int64(i), size)
	}
	return got
}

func pattern(seed byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7) + byte(i>>9)
		if p[i] == 0 {
			p[i] = 1
		}
	}
	return p
}

func TestWritesVisibleBeforeSync(t *testing.T) {
	s := openStore(t, 1<<20)
	view, err := s.Map(1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(1, 5000)
	mustWrite(t, s, data, 3000)
	if size, _ := s.Size(); size != 8000 {
		t.Fatalf("size %d after write to 8000", size)
	}
	got := make([]byte, 5000)
	if _, err := s.ReadAt(got, 3000); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAt did not return the unsynced write (err %v)", err)
	}
	if !bytes.Equal(view[3000:8000], data) {
		t.Fatal("mapping does not show the unsynced write")
	}
	if n, err := s.ReadAt(make([]byte, 10), 7995); n != 5 || err != io.EOF {
		t.Fatalf("ReadAt across the size = %d, %v; want 5, EOF", n, err)
	}
	if _, err := s.WriteAt([]byte{1}, 1<<20); err == nil {
		t.Fatal("write past the maximum size succeeded")
	}
	if _, err := s.Map(1<<20+1, false); err == nil {
		t.Fatal("Map past the maximum size succeeded")
	}
	if got := s.Ops(); got != 1 {
		t.Fatalf("Ops = %d after one write and two failed calls", got)
	}
	// The mapping is the page cache itself: it sees later writes too.
	mustWrite(t, s, []byte{0xAB}, 0)
	if view[0] != 0xAB {
		t.Fatal("mapping moved or is a copy")
	}
}

func TestImageAfterSyncKeepsEverything(t *testing.T) {
	rng := testRand(t)
	s := openStore(t, 1<<20)
	var atSync [][]byte
	for range 20 {
		for range 1 + rng.IntN(5) {
			mustWrite(t, s, pattern(byte(rng.Uint32()), 1+rng.IntN(20000)), rng.Int64N(200000))
		}
		mustSync(t, s)
		atSync = append(atSync, contents(t, s))
	}
	for i, idx := range s.SyncPoints() {
		for try := range 3 {
			img := takeImage(t, s, idx+1, rng)
			if got := contents(t, img); !bytes.Equal(got, atSync[i]) {
				t.Fatalf("image just after sync %d (try %d, %s) differs from the synced contents", idx, try, img.Describe())
			}
		}
	}
	// Just before a sync, everything synced by the previous one is there.
	before := takeImage(t, s, s.SyncPoints()[5], nil)
	if got := contents(t, before); !bytes.Equal(got, atSync[4]) {
		t.Fatalf("image before sync with nothing kept differs from the previous sync: %s", before.Describe())
	}
}

// TestUnsyncedWriteFates writes over synced data without syncing and
// checks that, over many seeds, the write is kept, dropped and torn, and
// that a torn write differs from old and new contents only in whole
// 512-byte sectors counted from offset 0.
func TestUnsyncedWriteFates(t *testing.T) {
	rng := testRand(t)
	s := openStore(t, 1<<20)
	old := pattern(3, 20000)
	mustWrite(t, s, old, 0)
	mustSync(t, s)
	const off, length = 1000, 5000 // deliberately not sector-aligned
	newData := pattern(200, length)
	mustWrite(t, s, newData, off)
	want := bytes.Clone(old)
	copy(want[off:], newData)

	fates := map[string]int{}
	for range 300 {
		img := takeImage(t, s, s.Ops(), rng)
		got := contents(t, img)
		_ = img.Close()
		if len(got) != len(old) {
			t.Fatalf("size %d, want %d: %s", len(got), len(old), img.Describe())
		}
		sawOld, sawNew := false, false
		for sectorStart := int64(0); sectorStart < int64(len(got)); sectorStart += sectorBytes {
			lo, hi := sectorStart, min(sectorStart+sectorBytes, int64(len(got)))
			isOld := bytes.Equal(got[lo:hi], old[lo:hi])
			isNew := bytes.Equal(got[lo:hi], want[lo:hi])
			if !isOld && !isNew {
				t.Fatalf("sector at %d is neither old nor new: %s", lo, img.Describe())
			}
			if hi <= off || lo >= off+length {
				continue // untouched by the write: old and new agree
			}
			sawOld = sawOld || isOld && !isNew
			sawNew = sawNew || isNew && !isOld
		}
		switch {
		case sawOld && sawNew:
			fates["torn"]++
			if !strings.Contains(img.Describe(), "torn") {
				t.Fatalf("a torn image does not say so: %s", img.Describe())
			}
		case sawNew:
			fates["kept"]++
		default:
			fates["dropped"]++
		}
	}
	t.Logf("fates over 300 images: %v", fates)
	for _, fate := range []string{"kept", "dropped", "torn"} {
		if fates[fate] == 0 {
			t.Errorf("no image had the write %s", fate)
		}
	}
}

func TestUnsyncedTruncateAndHoleFates(t *testing.T) {
	rng := testRand(t)
	s := openStore(t, 1<<20)
	mustWrite(t, s, pattern(9, 30000), 0)
	mustSync(t, s)
	if err := s.PunchHole(4096, 8192); err != nil {
		t.Fatal(err)
	}
	if err := s.Truncate(20000); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 100 {
		img := takeImage(t, s, s.Ops(), rng)
		got := contents(t, img)
		_ = img.Close()
		holed := bytes.Count(got[4096:4096+8192], []byte{0}) == 8192
		seen[fmt.Sprintf("holed=%v size=%d", holed, len(got))] = true
	}
	for _, want := range []string{"holed=true size=20000", "holed=true size=30000", "holed=false size=20000", "holed=false size=30000"} {
		if !seen[want] {
			t.Errorf("never saw %s; saw %v", want, seen)
		}
	}
}

func TestTruncateShrinkZeroes(t *testing.T) {
	s := openStore(t, 1<<20)
	mustWrite(t, s, pattern(5, 300000), 0)
	if err := s.Truncate(5000); err != nil {
		t.Fatal(err)
	}
	if err := s.Truncate(300000); err != nil {
		t.Fatal(err)
	}
	got := contents(t, s)
	if !bytes.Equal(got[:5000], pattern(5, 5000)) {
		t.Fatal("truncate lost bytes below the new size")
	}
	if bytes.ContainsFunc(got[5000:], func(r rune) bool { return r != 0 }) {
		t.Fatal("bytes cut off by a shrink came back when the size grew")
	}
	if err := s.PunchHole(100, 1000); err != nil {
		t.Fatal(err)
	}
	if size, _ := s.Size(); size != 300000 {
		t.Fatalf("PunchHole changed the size to %d", size)
	}
	mustSync(t, s)
	img := takeImage(t, s, s.Ops(), nil)
	want := bytes.Clone(got)
	clear(want[100:1100])
	if !bytes.Equal(contents(t, img), want) {
		t.Fatal("durable image after truncate and hole differs from the page cache")
	}
}

// TestImageOfImage crashes a store, "recovers" on the image with new
// writes, and crashes again: the first image's contents are the second's
// baseline, and what recovery synced survives.
func TestImageOfImage(t *testing.T) {
	rng := testRand(t)
	s := openStore(t, 1<<20)
	mustWrite(t, s, pattern(1, 40000), 0)
	mustSync(t, s)
	mustWrite(t, s, pattern(2, 40000), 20000)
	first := takeImage(t, s, s.Ops(), rng)
	if first.Ops() != 0 || len(first.SyncPoints()) != 0 {
		t.Fatal("an image's trace is not empty")
	}
	crashed := contents(t, first)

	second := takeImage(t, first, 0, rng)
	if !bytes.Equal(contents(t, second), crashed) {
		t.Fatalf("the image of an image lost its durable baseline: %s / %s", first.Describe(), second.Describe())
	}

	mustWrite(t, first, pattern(3, 1000), 500)
	mustSync(t, first)
	mustWrite(t, first, pattern(4, 100000), 0)
	want := bytes.Clone(crashed)
	copy(want[500:], pattern(3, 1000))
	for range 20 {
		third := takeImage(t, first, first.SyncPoints()[0]+1, rng)
		if !bytes.Equal(contents(t, third), want) {
			t.Fatalf("crash during recovery lost synced recovery writes: %s", third.Describe())
		}
		_ = third.Close()
	}
}

func TestCrashAfter(t *testing.T) {
	s := openStore(t, 1<<20)
	s.CrashAfter(3)
	mustWrite(t, s, []byte("abc"), 0)
	mustSync(t, s)
	mustWrite(t, s, []byte("def"), 3)
	if _, err := s.WriteAt([]byte("ghi"), 6); !errors.Is(err, ErrCrashed) {
		t.Fatalf("write after the crash: %v, want ErrCrashed", err)
	}
	if err := s.Sync(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("sync after the crash: %v, want ErrCrashed", err)
	}
	if err := s.Truncate(0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("truncate after the crash: %v, want ErrCrashed", err)
	}
	if err := s.PunchHole(0, 1); !errors.Is(err, ErrCrashed) {
		t.Fatalf("punch after the crash: %v, want ErrCrashed", err)
	}
	if s.Ops() != 3 {
		t.Fatalf("Ops = %d after the crash at 3", s.Ops())
	}
	if got := contents(t, s); string(got) != "abcdef" {
		t.Fatalf("reads after the crash see %q", got)
	}
	s.CrashAfter(-1)
	mustSync(t, s)
}

func TestSetFault(t *testing.T) {
	s := openStore(t, 1<<20)
	errInjected := errors.New("injected")
	var seen []Op
	s.SetFault(func(op Op) error {
		seen = append(seen, op)
		if op.Kind == OpSync || (op.Kind == OpWrite && op.Off == 100) {
			return errInjected
		}
		return nil
	})
	mustWrite(t, s, []byte("x"), 0)
	if _, err := s.WriteAt([]byte("yy"), 100); err != errInjected {
		t.Fatalf("faulted write: %v", err)
	}
	if err := s.Sync(); err != errInjected {
		t.Fatalf("faulted sync: %v", err)
	}
	if err := s.Truncate(50); err != nil {
		t.Fatal(err)
	}
	if err := s.PunchHole(0, 10); err != nil {
		t.Fatal(err)
	}
	want := []Op{
		{Kind: OpWrite, Off: 0, Len: 1, Index: 0},
		{Kind: OpWrite, Off: 100, Len: 2, Index: 1},
		{Kind: OpSync, Index: 1},
		{Kind: OpTruncate, Off: 50, Index: 1},
		{Kind: OpPunchHole, Off: 0, Len: 10, Index: 2},
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("fault saw %v\nwant %v", seen, want)
	}
	if s.Ops() != 3 || len(s.SyncPoints()) != 0 {
		t.Fatalf("faulted ops were traced: Ops %d, syncs %v", s.Ops(), s.SyncPoints())
	}
	if size, _ := s.Size(); size != 50 {
		t.Fatalf("size %d: the faulted write at 100 was applied", size)
	}
	s.SetFault(nil)
	mustSync(t, s)
}

// TestPartialWrite: a fault returning a PartialWrite applies and traces
// the write's first N bytes, returns N and the error, and a crash image
// treats the prefix as any unsynced write; an N outside the write applies
// nothing.
func TestPartialWrite(t *testing.T) {
	s := openStore(t, 1<<20)
	mustWrite(t, s, bytes.Repeat([]byte("o"), 2048), 0)
	mustSync(t, s)
	errInjected := errors.New("injected")
	for _, n := range []int64{-1, 0, 2048} {
		s.SetFault(func(Op) error { return &PartialWrite{N: n, Err: errInjected} })
		if got, err := s.WriteAt(bytes.Repeat([]byte("n"), 2048), 0); got != 0 || !errors.Is(err, errInjected) {
			t.Fatalf("N=%d: WriteAt = %d, %v; want 0 and the injected error", n, got, err)
		}
	}
	s.SetFault(func(Op) error { return &PartialWrite{N: 1024, Err: errInjected} })
	got, err := s.WriteAt(bytes.Repeat([]byte("n"), 2048), 0)
	var pw *PartialWrite
	if got != 1024 || !errors.Is(err, errInjected) || !errors.As(err, &pw) {
		t.Fatalf("WriteAt = %d, %v; want 1024 and a PartialWrite of the injected error", got, err)
	}
	s.SetFault(nil)
	want := strings.Repeat("n", 1024) + strings.Repeat("o", 1024)
	if c := contents(t, s); string(c) != want {
		t.Fatalf("contents after the partial write: %q…", c[1020:1030])
	}
	if s.Ops() != 3 {
		t.Fatalf("Ops = %d, want 3 (the write, the sync, the partial write)", s.Ops())
	}
	if got, want := s.Describe(), "store from New, 3 operations traced, 1 of them syncs"; got != want {
		t.Fatalf("Describe = %q, want %q", got, want)
	}
	img, err := s.Image(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if c := contents(t, img); string(c) != strings.Repeat("o", 2048) {
		t.Fatal("a crash image that drops unsynced writes kept the partial one")
	}
}

func TestClose(t *testing.T) {
	s := New(1 << 20)
	mustWrite(t, s, []byte("durable"), 0)
	mustSync(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt([]byte("x"), 0); err != ErrClosed {
		t.Fatalf("write after Close: %v", err)
	}
	if _, err := s.ReadAt(make([]byte, 1), 0); err != ErrClosed {
		t.Fatalf("read after Close: %v", err)
	}
	if _, err := s.Map(1, false); err != ErrClosed {
		t.Fatalf("Map after Close: %v", err)
	}
	if err := s.Close(); err != ErrClosed {
		t.Fatalf("second Close: %v", err)
	}
	// A device closes its storage; the test crashes it afterwards.
	img := takeImage(t, s, s.Ops(), nil)
	if got := contents(t, img); string(got) != "durable" {
		t.Fatalf("image after Close holds %q", got)
	}
	if _, err := s.Image(s.Ops()+1, nil); err == nil {
		t.Fatal("Image past the end of the trace succeeded")
	}
}

// flat is the crash model done the obvious way, on a byte slice whose
// length is the size, to check the tree, snapshots and lazy baselines.
type flat []byte

func (f *flat) apply(r record) {
	switch r.kind {
	case OpWrite:
		if len(r.data) > 0 {
			f.extend(r.off + r.length)
			copy((*f)[r.off:], r.data)
		}
	case opExtend:
		f.extend(r.off)
	case OpTruncate:
		if r.off < int64(len(*f)) {
			*f = (*f)[:r.off]
		} else {
			f.extend(r.off)
		}
	case OpPunchHole:
		if r.off < int64(len(*f)) {
			clear((*f)[r.off:min(r.off+r.length, int64(len(*f)))])
		}
	}
}

func (f *flat) extend(end int64) {
	if grow := end - int64(len(*f)); grow > 0 {
		*f = append(*f, make([]byte, grow)...)
	}
}

// flatImage replays trace[:n] onto base as Image would, drawing from rng
// in the same order, and returns the bytes it would leave.
func flatImage(base []byte, trace []record, n int, rng *rand.Rand) []byte {
	last := -1
	for i, r := range trace[:n] {
		if r.kind == OpSync {
			last = i
		}
	}
	f := flat(bytes.Clone(base))
	for _, r := range trace[:last+1] {
		f.apply(r)
	}
	for _, r := range trace[last+1 : n] {
		kept, _ := choose(r, rng)
		for _, k := range kept {
			f.apply(k)
		}
	}
	return f
}

// randomWorkload runs ops random operations on s, sized so that pages,
// sectors and tree nodes are all crossed, shrunk and regrown.
func randomWorkload(t testing.TB, s *Store, rng *rand.Rand, ops int) {
	for range ops {
		var err error
		switch p := rng.IntN(100); {
		case p < 70:
			length := 1 + rng.IntN(600)
			if rng.IntN(4) == 0 {
				length = 1 + rng.IntN(40000)
			}
			_, err = s.WriteAt(pattern(byte(rng.Uint32()), length), rng.Int64N(s.maxSize-int64(length)))
		case p < 78:
			err = s.Truncate(rng.Int64N(s.maxSize))
		case p < 86:
			err = s.PunchHole(rng.Int64N(s.maxSize), rng.Int64N(100000))
		default:
			err = s.Sync()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestImageMatchesFlatModel checks every image, at sync points and at
// random points, in random order, against the flat model, then does the
// same for a second generation of images.
func TestImageMatchesFlatModel(t *testing.T) {
	rng := testRand(t)
	const maxSize = 1<<18 + 1000 // 2 tree levels, and a partial last page
	s := openStore(t, maxSize)
	// Small checkpoints, so that images start from the frontier, from the
	// last state built behind it, and from checkpoints.
	s.minCheckpoint = 1 << 14
	randomWorkload(t, s, rng, 400)
	check := func(s *Store, base []byte, n int) *Store {
		t.Helper()
		seed := rng.Uint64()
		img := takeImage(t, s, n, rand.New(rand.NewPCG(seed, 1)))
		img.minCheckpoint = 1 << 14
		want := flatImage(base, s.trace, n, rand.New(rand.NewPCG(seed, 1)))
		if got := contents(t, img); !bytes.Equal(got, want) {
			t.Fatalf("Image(%d) differs from the model (size %d, want %d): %s", n, len(got), len(want), img.Describe())
		}
		return img
	}
	var ns []int
	for _, idx := range s.SyncPoints() {
		ns = append(ns, idx, idx+1)
	}
	for range 100 {
		ns = append(ns, rng.IntN(s.Ops()+1))
	}
	// Half in increasing order, which moves the frontier; then all of them
	// in random order, which mostly starts from checkpoints.
	half := slices.Clone(ns[:len(ns)/2])
	slices.Sort(half)
	rng.Shuffle(len(ns), func(i, j int) { ns[i], ns[j] = ns[j], ns[i] })
	for _, n := range append(half, ns...) {
		_ = check(s, nil, n).Close()
	}
	if len(s.checkpoints) < 3 {
		t.Fatalf("only %d checkpoints: the test does not cover starting from one", len(s.checkpoints))
	}

	for range 10 {
		img := check(s, nil, rng.IntN(s.Ops()+1))
		base := contents(t, img)
		randomWorkload(t, img, rng, 100)
		for range 20 {
			_ = check(img, base, rng.IntN(img.Ops()+1)).Close()
		}
		_ = img.Close()
	}
}

func TestConcurrentUse(t *testing.T) {
	rng := testRand(t)
	s := openStore(t, 1<<20)
	view, err := s.Map(1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	const writers, perWriter = 4, 200
	var wg sync.WaitGroup
	for w := range writers {
		seed := rng.Uint64()
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, 2))
			region := int64(w) * (1 << 18)
			buf := make([]byte, 16)
			for i := range perWriter {
				data := pattern(byte(i), 1+rng.IntN(3000))
				if _, err := s.WriteAt(data, region+rng.Int64N(1<<17)); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.ReadAt(buf, region); err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if i%10 == 0 {
					if err := s.Sync(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < 50; i++ {
			img, err := s.Image(s.Ops(), rand.New(rand.NewPCG(uint64(i), 3)))
			if err != nil {
				t.Error(err)
				return
			}
			_ = img.Close()
			_ = s.SyncPoints()
		}
	})
	wg.Wait()
	if want := writers * (perWriter + perWriter/10); s.Ops() != want {
		t.Fatalf("Ops = %d, want %d", s.Ops(), want)
	}
	// Each writer's last write landed in its own region: the mapping,
	// read without the lock, agrees with ReadAt.
	got := contents(t, s)
	if !bytes.Equal(view[:len(got)], got) {
		t.Fatal("mapping disagrees with ReadAt")
	}
}

// largeTrace makes the trace the brief sizes Image for: 20,000 operations
// writing about 50 MB in all over a 4 MiB store, with a sync every 8.
func largeTrace(tb testing.TB) *Store {
	s := New(64 << 20)
	tb.Cleanup(func() { _ = s.Close() })
	rng := rand.New(rand.NewPCG(1, 2))
	buf := pattern(7, 32<<10)
	for i := range 20000 {
		if i%8 == 7 {
			if err := s.Sync(); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		length := 512 + rng.IntN(5000)
		if _, err := s.WriteAt(buf[:length], rng.Int64N(4<<20-int64(length))); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// BenchmarkImage measures one image of the large trace once the states at
// sync points are built: at=sync is just before the last sync, the most
// unsynced work to replay; at=random picks n at random, so the state at the
// sync before it is mostly replayed from a checkpoint.
func BenchmarkImage(b *testing.B) {
	s := largeTrace(b)
	syncs := s.SyncPoints()
	rng := rand.New(rand.NewPCG(3, 4))
	img, _ := s.Image(s.Ops(), rng) // builds every checkpoint
	_ = img.Close()
	for _, at := range []string{"sync", "random"} {
		b.Run("at="+at, func(b *testing.B) {
			b.SetBytes(4 << 20) // what the store holds, which each image copies
			b.ReportAllocs()
			for b.Loop() {
				n := syncs[len(syncs)-1]
				if at == "random" {
					n = rng.IntN(s.Ops() + 1)
				}
				img, err := s.Image(n, rng)
				if err != nil {
					b.Fatal(err)
				}
				_ = img.Close()
			}
		})
	}
}
