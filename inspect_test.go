package pagealloc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

// inspectWorkload gives d allocated, free, pending and sub-page pages and
// a log with entries, from a seeded random mix.
func inspectWorkload(t *testing.T, d *Device, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	class, err := d.Subpages(256)
	if err != nil {
		t.Fatal(err)
	}
	var pages, slots []Addr
	for range 200 {
		err := d.Update(func(tx *Txn) error {
			if len(pages) > 0 && rng.IntN(3) == 0 {
				i := rng.IntN(len(pages))
				if err := tx.Free(pages[i]); err != nil {
					return err
				}
				pages = append(pages[:i], pages[i+1:]...)
			}
			a, err := tx.Alloc(int64(4096) << rng.IntN(5))
			if err != nil {
				return err
			}
			pages = append(pages, a)
			s, err := class.Alloc(tx)
			slots = append(slots, s)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	l, err := d.Log("wal")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		r, err := l.Append(100 + i)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Write(r, make([]byte, 100+i)); err != nil {
			t.Fatal(err)
		}
		if err := l.Commit(r); err != nil {
			t.Fatal(err)
		}
	}
}

func inspectOptions() *Options {
	o := smallHeapOptions()
	o.LogRegions = []LogRegion{{Name: "wal", Size: 64 << 10}}
	return o
}

func TestInspect(t *testing.T) {
	d, _ := createTestDevice(t, inspectOptions())
	inspectWorkload(t, d, testSeed(t, "buddy.seed", *buddySeed))
	in, err := d.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	// The regions follow one another in file order.
	regions := []Extent{{0, superblockSlotBytes}, {superblockSlotBytes, superblockSlotBytes}, in.Root, in.Journal, in.AllocatorState, in.LogRegions}
	for i := 1; i < len(regions); i++ {
		if regions[i].Offset != regions[i-1].End() {
			t.Errorf("region %d at %d, want %d", i, regions[i].Offset, regions[i-1].End())
		}
	}
	if in.HeapOffset < in.LogRegions.End() || in.HeapOffset%in.MaxPageSize != 0 {
		t.Errorf("heap at %d after log regions ending at %d", in.HeapOffset, in.LogRegions.End())
	}
	inUse := 0
	for _, sb := range in.Superblocks {
		if sb.Problem != "" {
			t.Errorf("superblock at %d: %s", sb.Offset, sb.Problem)
		}
		if sb.InUse {
			inUse++
		}
	}
	if inUse != 1 {
		t.Errorf("%d superblocks in use", inUse)
	}
	st := d.Stats()
	if in.Frontier != st.Frontier || len(in.FreeLists) != len(st.FreePages) {
		t.Fatalf("frontier %d, %d lists; Stats says %d, %d", in.Frontier, len(in.FreeLists), st.Frontier, len(st.FreePages))
	}
	for k, fl := range in.FreeLists {
		if fl.Pages != st.FreePages[k] || int64(len(fl.First)) != min(fl.Pages, freeListSample) {
			t.Errorf("order %d: %d pages, %d listed; Stats says %d", k, fl.Pages, len(fl.First), st.FreePages[k])
		}
		if len(fl.First) > 0 && fl.First[0] != fl.Head {
			t.Errorf("order %d: head %d, first %d", k, fl.Head, fl.First[0])
		}
	}
	if in.Pending.Pages != st.PendingPages || in.Pending.Bytes != st.PendingBytes || (in.Pending.Pages > 0) != (in.Pending.OldestTx > 0) {
		t.Errorf("pending %+v; Stats says %d pages, %d bytes", in.Pending, st.PendingPages, st.PendingBytes)
	}
	l, _ := d.Log("wal")
	if len(in.Logs) != 1 || in.Logs[0].Name != "wal" || in.Logs[0].Stats.DurableTail != l.Stats().DurableTail || in.Logs[0].Ring.Size != 64<<10 {
		t.Errorf("logs %+v", in.Logs)
	}
	class, _ := d.Subpages(256)
	if len(in.SubpageClasses) != 1 || in.SubpageClasses[0].SubpageStats != class.Stats() {
		t.Errorf("sub-page classes %+v, want %+v", in.SubpageClasses, class.Stats())
	}
	// A device opened for writing has checkpointed at open, and each
	// commit since adds one record.
	if n := len(in.JournalState.Records); n == 0 || in.JournalState.Records[n-1].Seq+1 != in.JournalState.NextSeq {
		t.Errorf("journal %+v", in.JournalState)
	}
}

func TestWalkHeapMatchesStats(t *testing.T) {
	d, _ := createTestDevice(t, inspectOptions())
	inspectWorkload(t, d, testSeed(t, "buddy.seed", *buddySeed))
	st := d.Stats()
	var bytesOf [PageUnaccounted + 1]int64
	var slotsUsed int64
	next := d.geometry.heapOff
	err := d.WalkHeap(func(e HeapExtent) bool {
		if e.Offset != next {
			t.Fatalf("extent at %d, want %d", e.Offset, next)
		}
		next = e.End()
		bytesOf[e.Kind] += e.Size
		slotsUsed += int64(e.SlotsUsed)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != st.Frontier {
		t.Errorf("extents end at %d, frontier %d", next, st.Frontier)
	}
	class, _ := d.Subpages(256)
	switch cs := class.Stats(); {
	case bytesOf[PageAllocated]+bytesOf[PageSubpages] != st.UsedBytes,
		bytesOf[PageFree] != st.FreeBytes, bytesOf[PagePending] != st.PendingBytes,
		bytesOf[PageMetadata] != st.MetadataBytes, bytesOf[PageUnaccounted] != 0,
		bytesOf[PageSubpages] != cs.Parents*cs.ParentBytes, slotsUsed != cs.SlotsUsed:
		t.Errorf("walk found %v bytes per kind and %d slots; stats %+v, %+v", bytesOf, slotsUsed, st, cs)
	}
	// fn returning false stops the walk.
	calls := 0
	if err := d.WalkHeap(func(HeapExtent) bool { calls++; return false }); err != nil || calls != 1 {
		t.Errorf("stopped walk made %d calls, %v", calls, err)
	}
}

// TestInspectReadOnlyJournal copies a device while it is open, as a crash
// would leave it, and inspects the copy's journal read-only: the records a
// reopen would replay, and a torn record after them.
func TestInspectReadOnlyJournal(t *testing.T) {
	o := testOptions()
	o.MaxSize = 256 << 20 // the copy is mapped beside the open device: small enough for 32 bits
	d, path := createTestDevice(t, o)
	for i := range 4 {
		writeRoot(t, d, int64(i)*8, []byte("12345678"))
	}
	inspectCopy := func(edit func([]byte) []byte) *Inspection {
		t.Helper()
		p := corruptCopy(t, path, edit)
		before, _ := os.ReadFile(p)
		ro, err := Open(p, &Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		in, err := ro.Inspect()
		if err != nil {
			t.Fatal(err)
		}
		if err := ro.WalkHeap(func(HeapExtent) bool { return true }); err != nil {
			t.Fatal(err)
		}
		ro.Close()
		if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
			t.Fatal("inspecting changed the file")
		}
		return in
	}
	js := inspectCopy(func(b []byte) []byte { return b }).JournalState
	if len(js.Records) != 4 || js.Torn || js.Head != 0 {
		t.Fatalf("journal %+v, want 4 records from 0, no torn tail", js)
	}
	pos := js.Head
	for i, r := range js.Records {
		if r.Pos != pos || r.Seq != js.HeadSeq+uint64(i) || r.Offset != d.geometry.journal.off+int64(pos) || r.Entries != 1 {
			t.Errorf("record %d: %+v at position %d", i, r, pos)
		}
		pos += uint64(r.Bytes)
	}
	if js.Tail != pos || js.NextSeq != js.HeadSeq+4 || js.TailOffset != d.geometry.journal.off+int64(pos) {
		t.Errorf("tail %d seq %d offset %d, want %d", js.Tail, js.NextSeq, js.TailOffset, pos)
	}
	last := js.Records[3]
	torn := inspectCopy(func(b []byte) []byte { b[last.Offset+last.Bytes-3] ^= 0xff; return b }).JournalState
	if len(torn.Records) != 3 || !torn.Torn || torn.TailOffset != last.Offset {
		t.Errorf("torn last record: %+v", torn)
	}
}

// TestWalkHeapJoinsUnaccounted wipes the state bits of a device's first
// block: its pages come out as one run of unaccounted space, not one
// extent per min page (which made dump -pages of a wiped 2 GiB heap take
// 2 GB of memory).
func TestWalkHeapJoinsUnaccounted(t *testing.T) {
	d, path := createTestDevice(t, inspectOptions())
	allocPages(t, d, 16, 4096)
	g := d.alloc.g
	frontier := d.Stats().Frontier
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	wiped := corruptCopy(t, path, func(b []byte) []byte { clear(b[g.heapOff : g.heapOff+g.metaBytes]); return b })
	rd, err := Open(wiped, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var got []HeapExtent
	next := g.heapOff
	err = rd.WalkHeap(func(e HeapExtent) bool {
		if e.Offset != next {
			t.Fatalf("extent at %d, want %d", e.Offset, next)
		}
		next = e.End()
		if e.Kind != PageMetadata {
			got = append(got, e)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	end := min(frontier, g.heapOff+g.blockBytes)
	want := HeapExtent{Extent: Extent{Offset: g.heapOff + g.metaPad, Size: end - g.heapOff - g.metaPad}, Kind: PageUnaccounted}
	if len(got) == 0 || got[0] != want || next != frontier {
		t.Errorf("after the first block's metadata the walk found %d extents starting %+v, ending at %d; want %+v first and the frontier %d", len(got), got[:min(len(got), 1)], next, want, frontier)
	}
	if end == frontier && len(got) != 1 {
		t.Errorf("%d extents past the metadata, want the one unaccounted run", len(got))
	}
	// Stopped at once, the walk reports the run once.
	calls := 0
	if err := rd.WalkHeap(func(e HeapExtent) bool { calls++; return e.Kind == PageMetadata }); err != nil || calls != int(g.metaPad/g.pageBytes(0))+1 {
		t.Errorf("a walk stopped at the first unaccounted extent made %d calls (%v), want %d", calls, err, g.metaPad/g.pageBytes(0)+1)
	}
}

// TestInspectSuperblockOfWrongParity gives the superblock copy not in use
// of a closed device, its checksum recomputed, a newer sequence number of
// the other copy's parity, which no checkpoint writes into its slot. Open
// must take the copy in use, read-only, leaving the file as it was, and
// Inspect must show the other copy's problem and the one in use.
func TestInspectSuperblockOfWrongParity(t *testing.T) {
	d, path := createTestDevice(t, smallFileOptions())
	writeRoot(t, d, 0, []byte("survives"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	inUse := newestSuperblock(readFile(t, path))
	other := (inUse.seq + 1) % 2
	p := corruptCopy(t, path, func(b []byte) []byte {
		rewriteSuperblock(b, other, func(sb *superblock) { sb.seq = inUse.seq + 2 })
		return b
	})
	before := readFile(t, p)
	ro, err := Open(p, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got := readRoot(t, ro, 0, 8); string(got) != "survives" {
		t.Errorf("root holds %q", got)
	}
	in, err := ro.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	bad, good := in.Superblocks[other], in.Superblocks[inUse.seq%2]
	if want := fmt.Sprintf("sequence number %d in copy %d", inUse.seq+2, other); bad.Problem != want || bad.InUse {
		t.Errorf("copy %d: problem %q, in use %v; want %q, not in use", other, bad.Problem, bad.InUse, want)
	}
	if good.Problem != "" || !good.InUse || good.Sequence != inUse.seq {
		t.Errorf("copy %d: %+v; want sequence %d, in use, no problem", inUse.seq%2, good, inUse.seq)
	}
	if err := ro.Check(); err != nil {
		t.Error(err)
	}
	if !bytes.Equal(before, readFile(t, p)) {
		t.Error("a read-only device changed the file")
	}
}

// TestInspectRecordedCapacity opens a device read-only with a MaxSize
// larger than the capacity it records, as a tool does for a file grown
// past it: Inspection.Capacity is the open's, and each superblock copy's
// Capacity the one it records.
func TestInspectRecordedCapacity(t *testing.T) {
	d, path := createTestDevice(t, smallFileOptions())
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	recorded := smallFileOptions().MaxSize
	ro, err := Open(path, &Options{ReadOnly: true, MaxSize: 2 * recorded})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	in, err := ro.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	if in.Capacity != 2*recorded || in.Superblocks[0].Capacity != recorded || in.Superblocks[1].Capacity != recorded {
		t.Errorf("capacity %d, the copies record %d and %d; want %d, and %d in each", in.Capacity, in.Superblocks[0].Capacity, in.Superblocks[1].Capacity, 2*recorded, recorded)
	}
}

// TestInspectFreeListSampleStopsAtBrokenLink points the next link of a
// free list's head, on a closed device, at the head itself (a cycle) or at
// a live page of the list's order. FreeListInfo.First must end at the
// head, as a broken link ends it, rather than list the head again and
// again, or a page that is not free and the pages its bytes happen to
// name.
func TestInspectFreeListSampleStopsAtBrokenLink(t *testing.T) {
	d, path := createTestDevice(t, smallFileOptions())
	pages := allocPages(t, d, 16, 4096)
	head, listed := freeEvenPages(t, d, pages), d.alloc.last.freePages[0]
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if listed < 2 {
		t.Fatalf("set-up: free list 0 holds %d pages, want two or more", listed)
	}
	for _, c := range []struct {
		name string
		next int64
	}{{"itself", head}, {"a live page", pages[1].Offset()}} {
		t.Run(c.name, func(t *testing.T) {
			ro := openDamagedCopy(t, path, putU64(head+8, uint64(c.next)))
			in, err := ro.Inspect()
			if err != nil {
				t.Fatal(err)
			}
			if got := in.FreeLists[0].First; len(got) != 1 || got[0] != head {
				t.Errorf("free list 0, its head %d linked to %d: First %v, want the head alone", head, c.next, got)
			}
			if err := ro.Check(); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Check: %v; want ErrCorrupt", err)
			}
		})
	}
}

// TestInspectPendingHeadNotPending points the pending queue's head, on
// a closed device, at a live page whose first word holds the caller's
// bytes: PendingInfo.OldestTx must be zero, as no pending page's header
// names the transaction, not the caller's bytes taken for one.
func TestInspectPendingHeadNotPending(t *testing.T) {
	d, path := createTestDevice(t, smallFileOptions())
	pages := allocPages(t, d, 4, 4096)
	if _, err := d.WriteAt([]byte{1, 2, 3, 4, 5, 6, 7, 8}, pages[0].Offset()); err != nil {
		t.Fatal(err)
	}
	freePages(t, d, pages[1:])
	headAt := d.geometry.state.off + statePendingHeadOff
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ro := openDamagedCopy(t, path, putU64(headAt, uint64(pages[0].Offset())))
	in, err := ro.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	if p := in.Pending; p.Pages == 0 || p.Head != pages[0].Offset() || p.OldestTx != 0 {
		t.Errorf("pending %+v; want pages, the head at the live page %d and no transaction", p, pages[0].Offset())
	}
	if err := ro.Check(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Check: %v; want ErrCorrupt", err)
	}
}

// TestWalkHeapParentWithDamagedHeader wipes the header of a sub-page
// parent on a closed device, or its magic alone, or the bit of its header
// slot: WalkHeap must report the page as a parent (its parent bit is
// set) with no slot size and no slots used, as it does not know them,
// rather than a slot size of 1 or 0 bytes and -1 slots taken from the
// damaged bytes, or a count that takes the header slot for a free one.
func TestWalkHeapParentWithDamagedHeader(t *testing.T) {
	d, path := createTestDevice(t, smallFileOptions())
	slots := allocSlots(t, d, mustSubpages(t, d, 256), 5)
	parent := parentOf(slots[0])
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(b []byte)
	}{
		{"wiped", func(b []byte) { clear(b[parent : parent+subpageHeaderBytes]) }},
		{"magic", putU64(parent, 0)},
		{"header slot", func(b []byte) { b[parent+subpageMaskOff] &^= 1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			ro := openDamagedCopy(t, path, c.edit)
			var got []HeapExtent
			if err := ro.WalkHeap(func(e HeapExtent) bool {
				if e.Offset == parent {
					got = append(got, e)
				}
				return true
			}); err != nil {
				t.Fatal(err)
			}
			want := HeapExtent{Extent: Extent{Offset: parent, Size: 256 * subpageSlotsPerParent}, Kind: PageSubpages}
			if len(got) != 1 || got[0] != want {
				t.Errorf("the walk found %+v at the parent, want %+v", got, want)
			}
			if err := ro.Check(); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Check: %v; want ErrCorrupt", err)
			}
		})
	}
}

// openDamagedCopy opens read-only a copy of the closed device at path that
// edit damages; the device is closed when the test ends.
func openDamagedCopy(t *testing.T, path string, edit func(b []byte)) *Device {
	t.Helper()
	ro, err := Open(corruptCopy(t, path, func(b []byte) []byte { edit(b); return b }), &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	return ro
}

// failingReads is a store whose reads fail with errInjectedRead while
// fail is set.
type failingReads struct {
	*simstore.Store
	fail atomic.Bool
}

var errInjectedRead = errors.New("injected read error")

func (s *failingReads) ReadAt(p []byte, off int64) (int, error) {
	if s.fail.Load() {
		return 0, errInjectedRead
	}
	return s.Store.ReadAt(p, off)
}

// TestInspectReadError makes the store's reads fail while Inspect reads
// the superblock copies from it: Inspect must return the read's error and
// no inspection, and leave the device as it was: Inspect and Check pass
// once reads succeed again, and the device commits.
func TestInspectReadError(t *testing.T) {
	o, err := smallFileOptions().withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	store := &failingReads{Store: simstore.New(o.MaxSize)}
	d := deviceOn(t, store, o)
	writeRoot(t, d, 0, []byte("before"))
	store.fail.Store(true)
	in, err := d.Inspect()
	store.fail.Store(false)
	if in != nil || !errors.Is(err, errInjectedRead) {
		t.Fatalf("Inspect with failing reads: %v, %v; want nil and the read's error", in, err)
	}
	if _, err := d.Inspect(); err != nil {
		t.Fatalf("Inspect once reads succeed: %v", err)
	}
	mustCheck(t, d)
	writeRoot(t, d, 0, []byte("after!"))
	if got := readRoot(t, d, 0, 6); string(got) != "after!" {
		t.Errorf("root holds %q", got)
	}
}

// TestPageKindNames checks the names the pagealloc command prints for
// each kind of heap extent, the fallback for a kind that has none, and
// that JSON shows the name.
func TestPageKindNames(t *testing.T) {
	for k, want := range map[PageKind]string{
		0: "PageKind(0)", PageMetadata: "metadata", PageAllocated: "allocated", PageSubpages: "sub-pages", PageFree: "free",
		PagePending: "pending", PageUnaccounted: "unaccounted", PageLog: "log", PageLog + 1: fmt.Sprintf("PageKind(%d)", PageLog+1), 255: "PageKind(255)",
	} {
		if got := k.String(); got != want {
			t.Errorf("PageKind(%d).String() = %q, want %q", uint8(k), got, want)
		}
		if got, err := k.MarshalText(); err != nil || string(got) != want {
			t.Errorf("PageKind(%d).MarshalText() = %q, %v; want %q", uint8(k), got, err, want)
		}
	}
	b, err := json.Marshal(HeapExtent{Extent: Extent{Offset: 4096, Size: 8192}, Kind: PageFree})
	if err != nil || !strings.Contains(string(b), `"Kind":"free"`) {
		t.Errorf("JSON of a free extent: %s, %v; want \"Kind\":\"free\"", b, err)
	}
}
