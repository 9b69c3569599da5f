package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"unicode"

	"github.com/pagealloc/pagealloc"
)

func TestDump(t *testing.T) {
	path := fixtureDevice(t)
	in := inspect(t, path)
	code, stdout, stderr := runUnchanged(t, "dump", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var want []string
	for i, sb := range in.Superblocks {
		state := "older"
		if sb.InUse {
			state = "in use"
		}
		want = append(want, fmt.Sprintf(`(?m)^  %c\s+%d\s+%s\s+%d\s+%d\s+%016x\s+%d\s+%d\s+%d$`,
			'A'+i, sb.Offset, state, sb.Sequence, sb.Version, sb.DeviceID, sb.JournalHead, sb.JournalHeadSeq, sb.TxSeq))
	}
	for _, fl := range in.FreeLists {
		first := ""
		if len(fl.First) > 0 {
			first = fmt.Sprint(fl.First[0])
		}
		want = append(want, fmt.Sprintf(`(?m)^  %d\s+%s\s+%d\s+\S+ \S+\s*%s`, fl.Order, formatBytes(fl.PageBytes), fl.Pages, first))
	}
	l, c := in.Logs[0], in.SubpageClasses[0]
	want = append(want,
		fmt.Sprintf(`journal: head %d \(seq %d\), tail %d \(seq %d\): 0 records`, in.JournalState.Head, in.JournalState.HeadSeq, in.JournalState.Tail, in.JournalState.NextSeq),
		fmt.Sprintf(`pending queue: %d pages, .*, head %d, tail %d; the oldest freed by transaction %d`, in.Pending.Pages, in.Pending.Head, in.Pending.Tail, in.Pending.OldestTx),
		fmt.Sprintf(`(?m)^  wal\s+%d\s+64KiB\s+%d\s+%d\s`, l.Ring.Offset, l.Stats.Head, l.Stats.DurableTail),
		fmt.Sprintf(`(?m)^  0\s+256\s+16KiB\s+%d\s+%d\s+%d\s+%d\s+\S+ \S+\s+%d$`, c.Parents, c.SlotsUsed, c.SlotsPending, c.SlotsFree, c.ListHead),
		fmt.Sprintf(`(?m)^  heap \(to the frontier\)\s+%d\s+%d$`, in.HeapOffset, in.Frontier-in.HeapOffset),
	)
	for _, re := range want {
		if !regexp.MustCompile(re).MatchString(stdout) {
			t.Errorf("output does not match %s:\n%s", re, stdout)
		}
	}

	// -pages -json: the inspection and every heap extent, as the library
	// reports them.
	d, err := pagealloc.Open(path, &pagealloc.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var extents []pagealloc.HeapExtent
	err = d.WalkHeap(func(e pagealloc.HeapExtent) bool { extents = append(extents, e); return true })
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runUnchanged(t, "dump", "-pages", "-json", path)
	if code != 0 {
		t.Fatalf("-pages -json: exit %d: %s", code, stderr)
	}
	var got struct {
		pagealloc.Inspection
		Pages []struct {
			pagealloc.Extent
			Kind      string
			SlotBytes int64
			SlotsUsed int
		}
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("%v in %s", err, stdout)
	}
	if !reflect.DeepEqual(&got.Inspection, in) {
		t.Errorf("JSON inspection differs:\n got %+v\nwant %+v", got.Inspection, *in)
	}
	if len(got.Pages) != len(extents) {
		t.Fatalf("JSON lists %d pages, the walk %d", len(got.Pages), len(extents))
	}
	for i, e := range extents {
		if p := got.Pages[i]; p.Extent != e.Extent || p.Kind != e.Kind.String() || p.SlotsUsed != e.SlotsUsed {
			t.Errorf("page %d: JSON %+v, walk %+v", i, p, e)
		}
	}

	// -pages as text: one row per extent.
	_, stdout, _ = runCLI(t, "dump", "-pages", path)
	if n := strings.Count(stdout[strings.Index(stdout, "heap pages:"):], "\n") - 2; n != len(extents) {
		t.Errorf("text lists %d pages, the walk %d", n, len(extents))
	}
}

// TestDumpPagesJSONEmptyHeap: a device whose heap holds no page yet (as
// create leaves it) still has its "Pages" array in dump -pages -json, an
// empty one, for tools that read it.
func TestDumpPagesJSONEmptyHeap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device")
	createClosed(t, path, fixtureOptions())
	if in := inspect(t, path); in.Frontier != in.HeapOffset {
		t.Fatalf("a new device's heap runs to %d from %d", in.Frontier, in.HeapOffset)
	}
	code, stdout, stderr := runUnchanged(t, "dump", "-pages", "-json", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("%v in %s", err, stdout)
	}
	var pages []json.RawMessage
	if raw, ok := got["Pages"]; !ok || json.Unmarshal(raw, &pages) != nil || pages == nil || len(pages) != 0 {
		t.Errorf("\"Pages\" is %q (present %v), want an empty array", got["Pages"], ok)
	}
}

// TestDumpJournal dumps a device a crash left with four journal records
// not yet checkpointed, then one whose last record is torn.
func TestDumpJournal(t *testing.T) {
	crashed := crashCopy(t)
	records := inspect(t, crashed).JournalState.Records
	code, stdout, stderr := runUnchanged(t, "dump", crashed)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, ": 4 records,") {
		t.Errorf("output lacks 4 records:\n%s", stdout)
	}
	for _, r := range records {
		if re := fmt.Sprintf(`(?m)^  %d\s+%d\s+%d\s+%d\s+1$`, r.Seq, r.Offset, r.Pos, r.Bytes); !regexp.MustCompile(re).MatchString(stdout) {
			t.Errorf("output does not match %s:\n%s", re, stdout)
		}
	}
	last := records[3]
	torn := damagedCopy(t, crashed, func(b []byte) { b[last.Offset+last.Bytes-3] ^= 0xff })
	_, stdout, _ = runUnchanged(t, "dump", torn)
	if !strings.Contains(stdout, ": 3 records,") || !strings.Contains(stdout, fmt.Sprintf("torn record at offset %d", last.Offset)) {
		t.Errorf("torn copy:\n%s", stdout)
	}
}

// peakWriter discards what is written to it, noting the Go heap's
// largest size at each write.
type peakWriter struct {
	n    int64
	peak uint64
}

func (w *peakWriter) Write(p []byte) (int, error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.n += int64(len(p))
	w.peak = max(w.peak, ms.HeapAlloc)
	return len(p), nil
}

// TestDumpPagesMemory dumps the pages of a heap of 300,000 small pages,
// as text and as JSON: the Go heap must not grow with their number, as
// it did when dump built its output whole (65 MB as text, 106 MB as JSON
// for these pages).
func TestDumpPagesMemory(t *testing.T) {
	const pages = 300_000
	path := filepath.Join(t.TempDir(), "device")
	d, err := pagealloc.Create(path, &pagealloc.Options{NoSync: true, MinPageSize: 512, MaxPageSize: 64 << 10, MaxSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < pages; i += 10_000 {
		if err := d.Update(func(tx *pagealloc.Txn) error {
			for range 10_000 {
				if _, err := tx.Alloc(512); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			d.Close()
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"dump", "-pages", path}, {"dump", "-pages", "-json", path}} {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w := &peakWriter{}
		var stderr strings.Builder
		if code := run(args, w, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
		grew := int64(w.peak) - int64(ms.HeapAlloc)
		t.Logf("%v: %d bytes out, the Go heap %d bytes above where it started at most", args, w.n, grew)
		if w.n < pages*20 || grew > 16<<20 {
			t.Errorf("%v: %d bytes written for %d pages, the heap up to %d bytes above its start; want at most 16 MiB", args, w.n, pages, grew)
		}
	}
}

// TestDumpPagesDamagedParent wipes the first word of a sub-page
// parent's header (its magic, class and slot size): dump -pages must say
// that the header is damaged, not print a slot size and a count of slots
// used made of the damaged bytes.
func TestDumpPagesDamagedParent(t *testing.T) {
	path := fixtureDevice(t)
	parent, err := firstExtent(path, pagealloc.PageSubpages)
	if err != nil || parent < 0 {
		t.Fatalf("set-up: no sub-page parent found (%v)", err)
	}
	damaged := damagedCopy(t, path, func(b []byte) { clear(b[parent : parent+8]) })
	code, stdout, stderr := runUnchanged(t, "dump", "-pages", damaged)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	re := fmt.Sprintf(`(?m)^  %d\s+16KiB\s+sub-pages\s+its header is damaged: run pagealloc check$`, parent)
	if !regexp.MustCompile(re).MatchString(stdout) {
		line := regexp.MustCompile(fmt.Sprintf(`(?m)^  %d .*$`, parent)).FindString(stdout)
		t.Errorf("the parent at %d is shown as %q, want a line matching %s", parent, line, re)
	}
}

// firstExtent returns the offset of the first heap extent of kind in the
// device at path, or -1 if there is none.
func firstExtent(path string, kind pagealloc.PageKind) (int64, error) {
	d, err := openReadOnly(path, 0)
	if err != nil {
		return -1, err
	}
	defer d.Close()
	off := int64(-1)
	err = d.WalkHeap(func(e pagealloc.HeapExtent) bool {
		if e.Kind == kind {
			off = e.Offset
		}
		return off < 0
	})
	return off, err
}

// TestDumpPendingHeadNotPending points the pending queue's head, the
// allocator state's second word, at an allocated page: dump must say
// that the head is no pending page, not print a transaction made of the
// page's bytes.
func TestDumpPendingHeadNotPending(t *testing.T) {
	path := fixtureDevice(t)
	in := inspect(t, path)
	page, err := firstExtent(path, pagealloc.PageAllocated)
	if err != nil || page < 0 || in.Pending.Pages == 0 {
		t.Fatalf("set-up: an allocated page at %d, %d pending pages (%v)", page, in.Pending.Pages, err)
	}
	damaged := damagedCopy(t, path, func(b []byte) { binary.LittleEndian.PutUint64(b[in.AllocatorState.Offset+8:], uint64(page)) })
	code, stdout, stderr := runUnchanged(t, "dump", damaged)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := fmt.Sprintf("head %d, tail %d; the head is no pending page: run pagealloc check\n", page, in.Pending.Tail)
	if !strings.Contains(stdout, want) {
		line := regexp.MustCompile(`(?m)^pending queue: .*$`).FindString(stdout)
		t.Errorf("dump prints %q, want it to end %q", line, want)
	}
}

// TestTableColumnsAfterShortRow: a row whose last cells are empty (a
// superblock copy that does not verify, an empty free list with no first
// pages) must not end the columns for the rows after it: each cell stays
// under its header, and no line ends in padding.
func TestTableColumnsAfterShortRow(t *testing.T) {
	in := &pagealloc.Inspection{}
	in.Superblocks[0] = pagealloc.SuperblockInfo{Offset: 0, Problem: "checksum mismatch"}
	in.Superblocks[1] = pagealloc.SuperblockInfo{Offset: 4096, InUse: true, Sequence: 12345, Version: 2, DeviceID: 0xabc, JournalHead: 987654321, JournalHeadSeq: 77, TxSeq: 88}
	var b strings.Builder
	if err := printSuperblocks(&b, in); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	header, rowB := lines[1], lines[3]
	for _, col := range []struct{ head, cell string }{{"state", "in use"}, {"seq", "12345"}, {"journal head", "987654321"}, {"checkpointed tx", "88"}} {
		if h, c := strings.Index(header, col.head), strings.Index(rowB, col.cell); h != c {
			t.Errorf("column %q starts at %d, its cell %q at %d:\n%s", col.head, h, col.cell, c, b.String())
		}
	}
	for _, l := range lines {
		if strings.HasSuffix(l, " ") {
			t.Errorf("line ends in padding: %q", l)
		}
	}
}

// TestLogNamesShownSafely: log names may hold any byte but zero. The
// tables of stats and dump print a name that is plain printable text as
// it is and quote any other, so that a tab or a newline cannot break a
// table and no escape sequence reaches the terminal.
func TestLogNamesShownSafely(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device")
	o := fixtureOptions()
	names := map[string]string{
		"a\tb\nc":       `"a\tb\nc"`,
		"\x1b[31mred":   `"\x1b[31mred"`,
		"two words":     `"two words"`,
		"\xff":          `"\xff"`,
		"événements":    "événements",
		`"quoted"`:      `"\"quoted\""`,
		"plain-name_01": "plain-name_01",
	}
	o.LogRegions = nil
	for name := range names {
		o.LogRegions = append(o.LogRegions, pagealloc.LogRegion{Name: name, Size: 4096})
	}
	createClosed(t, path, o)
	for _, verb := range []string{"stats", "dump"} {
		code, out, stderr := runCLI(t, verb, path)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", verb, code, stderr)
		}
		for name, shown := range names {
			if !strings.Contains(out, "  "+shown+" ") {
				t.Errorf("%s does not show log %q as %s:\n%s", verb, name, shown, out)
			}
		}
		if i := strings.IndexFunc(out, func(r rune) bool { return r != '\n' && !unicode.IsPrint(r) }); i >= 0 {
			t.Errorf("%s prints %q, which is not printable, at byte %d", verb, out[i:i+1], i)
		}
	}
}
