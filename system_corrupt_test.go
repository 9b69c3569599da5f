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

// systemImage is a closed device that holds every kind of structure:
// pages, sub-pages in two classes, a fixed log and a carved one, each with
// entries. It says where damage to it goes and which values point into it.
type systemImage struct {
	clean    []byte   // the device file
	pages    []Addr   // pages allocated, some of them freed again
	freeable []Addr   // pages still allocated, for driveSystem to free
	parents  []int64  // the parents of the slots allocated, if any
	logs     []string // the names of its logs
	entries  []int64  // the offsets of the entries in its logs
	heapOff  int64
	frontier int64
	// targets are ranges of the file: the allocator state and sub-page
	// class table, the log tables, the first block's metadata and the
	// rings of both logs.
	targets []region
}

// buildSystemImage creates the device of a systemImage, choosing the
// sizes of its pages with rng, and closes it.
func buildSystemImage(tb testing.TB, rng *rand.Rand) *systemImage {
	tb.Helper()
	opts := &Options{NoSync: true, MaxPageSize: 64 << 10, JournalSize: 256 << 10, MaxSize: 1<<20 + 16<<20,
		LogRegions: []LogRegion{{"fixed", 64 << 10}}}
	d, path := createTestDevice(tb, opts)
	im := &systemImage{}
	im.pages = allocSized(tb, d, 64, func() int64 { return 4 << 10 << rng.IntN(5) })
	freePages(tb, d, im.pages[:24])
	small, large := mustSubpages(tb, d, 64), mustSubpages(tb, d, 512)
	slots := slices.Concat(allocSlots(tb, d, small, 200), allocSlots(tb, d, large, 40))
	freeSlots(tb, d, small, slots[:60])
	carved := mustCreateLog(tb, d, "carved", 64<<10)
	fixed := mustLog(tb, d, "fixed")
	for _, l := range []*Log{fixed, carved} {
		for i := range 40 {
			r, err := l.Append(100 + 37*i)
			if err != nil {
				tb.Fatal(err)
			}
			if err := l.Write(r, make([]byte, 100+37*i)); err != nil {
				tb.Fatal(err)
			}
			if err := l.Commit(r); err != nil {
				tb.Fatal(err)
			}
			im.entries = append(im.entries, r.Offset())
		}
	}
	g, geo := d.alloc.g, d.geometry
	im.heapOff, im.frontier = g.heapOff, d.alloc.last.frontier
	for _, a := range slots {
		if p := parentOf(a); !slices.Contains(im.parents, p) {
			im.parents = append(im.parents, p)
		}
	}
	im.targets = []region{geo.state, geo.logs, {g.heapOff, g.metaPad}, fixed.ring, carved.ring}
	im.freeable, im.logs = im.pages[24:30], []string{"fixed", "carved"}
	if err := d.Close(); err != nil {
		tb.Fatal(err)
	}
	im.clean = readFile(tb, path)
	return im
}

// goldenSystemImage is the systemImage of the golden image name (see
// golden_test.go), written by the code of its format version: its places
// found by opening it read-only, its pages and slots those of its
// manifest. A version 1 image has no parents: its sub-pages are that
// version's own, which this code does not use.
func goldenSystemImage(t *testing.T, name string) *systemImage {
	t.Helper()
	m := readGoldenManifest(t, filepath.Join("testdata", "golden", name+".json"))
	im := &systemImage{clean: readGoldenImage(t, filepath.Join("testdata", "golden", m.Image))}
	path := filepath.Join(t.TempDir(), "device")
	if err := os.WriteFile(path, im.clean, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	g := &d.alloc.g
	im.heapOff, im.frontier = g.heapOff, d.alloc.last.frontier
	// The allocator's words of the state region, and the tables after them
	// that its format version has: most of the region is unused room.
	state := d.geometry.state
	im.targets = []region{{state.off, stateOrdersOff + int64(g.maxOrder+1)*stateOrderBytes}, d.geometry.logs, {g.heapOff, g.metaPad}}
	if m.FormatVersion >= carvedLogsVersion {
		im.targets = append(im.targets, region{state.off + subpageTableOff, carvedLogTableOff + carvedLogLimit*logSlotBytes - subpageTableOff})
	}
	for _, p := range m.Pages {
		im.pages = append(im.pages, p.Addr)
	}
	im.freeable = im.pages[:min(6, len(im.pages))]
	for _, s := range m.Slots {
		if p := parentOf(s.Addr); m.FormatVersion >= subpageFormatVersion && !slices.Contains(im.parents, p) {
			im.parents = append(im.parents, p)
		}
	}
	for _, ml := range m.Logs {
		l := mustLog(t, d, ml.Name)
		im.logs, im.targets = append(im.logs, ml.Name), append(im.targets, l.ring)
		for e, err := range l.Entries(0) {
			if err != nil {
				t.Fatal(err)
			}
			im.entries = append(im.entries, e.Offset)
		}
	}
	return im
}

// damageKinds counts the kinds of place damageAt knows.
func (im *systemImage) damageKinds() int {
	if len(im.parents) == 0 {
		return len(im.targets) + 1
	}
	return len(im.targets) + 2
}

// damageAt returns the offset of a word of the place of kind k, below
// damageKinds: a word of one of the targets, one of the first four words
// of a page, or one of the first eight of a parent's header. pick(n)
// chooses one of n, first the target's word, page or parent, then the
// word in the page or parent.
func (im *systemImage) damageAt(k int, pick func(n int64) int64) int64 {
	switch {
	case k < len(im.targets):
		tg := im.targets[k]
		return tg.off + pick(tg.size/8)*8
	case k == len(im.targets):
		p := im.pages[pick(int64(len(im.pages)))].Offset()
		return p + 8*pick(4)
	}
	p := im.parents[pick(int64(len(im.parents)))]
	return p + 8*pick(8)
}

// pointerKinds counts the kinds of value pointer knows.
const pointerKinds = 3

// pointer returns a value of kind k, below pointerKinds, that points into
// the device: the offset of one of its pages, of one of its parents, or a
// 64-byte aligned offset in the used part of its heap (also for a parent
// when it has none), pick(n) choosing one of n.
func (im *systemImage) pointer(k int, pick func(n int64) int64) uint64 {
	switch k {
	case 0:
		return uint64(im.pages[pick(int64(len(im.pages)))].Offset())
	case 1:
		if len(im.parents) > 0 {
			return uint64(im.parents[pick(int64(len(im.parents)))])
		}
	}
	return uint64(im.heapOff + pick(im.frontier-im.heapOff)&^63)
}

// driveSystem opens the damaged copy at path of im's device and makes
// every call a storage engine makes: Check, Inspect, WalkHeap, reading,
// appending to and collecting each log, allocating and freeing pages and
// slots, Close and Open again. Each call must return nil or one of the
// package's errors; rng makes the driver's own choices. driveSystem
// reports whether the device opened, whether Check found it damaged, and
// whether another call met the damage.
func driveSystem(t *testing.T, path string, im *systemImage, rng *rand.Rand) (opened, found, met bool) {
	t.Helper()
	typed := func(what string, err error) {
		t.Helper()
		if err != nil && !typedError(err) {
			t.Fatalf("%s: untyped error %v", what, err)
		}
		if errors.Is(err, ErrCorrupt) && !strings.HasPrefix(what, "Check") {
			met = true
		}
	}
	d, err := Open(path, &Options{NoSync: true})
	if err != nil {
		typed("Open", err)
		return
	}
	opened = true
	if err := d.Check(); err != nil {
		typed("Check", err)
		found = true
	}
	_, err = d.Inspect()
	typed("Inspect", err)
	typed("WalkHeap", d.WalkHeap(func(HeapExtent) bool { return true }))
	for _, name := range im.logs {
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
		for _, off := range im.entries {
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
		for _, a := range im.freeable {
			typed("Free", tx.Free(a))
		}
		return nil
	}))
	typed("Check", d.Check())
	typed("Close", d.Close())
	d, err = Open(path, &Options{NoSync: true})
	if err != nil {
		typed("Open again", err)
		return
	}
	typed("Check again", d.Check())
	typed("Close again", d.Close())
	return
}

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
// damage, and the test fails if either count is zero. As many rounds
// damage each golden image (testdata/golden) the same way: devices the
// code of each format version wrote, crashed ones with records to replay
// over the damage.
func TestSystemRandomCorruption(t *testing.T) {
	if invariantsEnabled {
		t.Skip("the invariants build panics at the first commit on a corrupt device")
	}
	seed := testSeed(t, "systemcorrupt.seed", *systemCorruptSeed)
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Run("built", func(t *testing.T) {
		corruptSystem(t, buildSystemImage(t, rng), rng, *systemCorruptRounds)
	})
	for _, name := range []string{"v1-closed", "v1-crash", "v2-closed", "v2-crash"} {
		t.Run(name, func(t *testing.T) {
			corruptSystem(t, goldenSystemImage(t, name), rng, *systemCorruptRounds)
		})
	}
}

// corruptSystem runs TestSystemRandomCorruption's rounds on copies of im.
func corruptSystem(t *testing.T, im *systemImage, rng *rand.Rand, rounds int) {
	value := func() uint64 {
		switch k := rng.IntN(6); k {
		case 0, 1, 2:
			return im.pointer(k, rng.Int64N)
		case 3:
			return 0
		case 4:
			return rng.Uint64() & 0xff
		}
		return rng.Uint64()
	}
	opened, found, met := 0, 0, 0 // opened; Check found damage; a call met it
	for round := range rounds {
		b := slices.Clone(im.clean)
		var what []string
		for range 1 + rng.IntN(4) {
			at := im.damageAt(rng.IntN(im.damageKinds()), rng.Int64N)
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
			o, f, m := driveSystem(t, p, im, rng)
			if o {
				opened++
			}
			if f {
				found++
			}
			if m {
				met++
			}
		})
		if !ok {
			t.Fatalf("round %d: damage %v", round, what)
		}
	}
	t.Logf("%d rounds: %d devices opened, Check found damage in %d, a call met it in %d", rounds, opened, found, met)
	if found == 0 || met == 0 {
		t.Errorf("the damage never reached the device's structures")
	}
}
