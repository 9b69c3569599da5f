package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/pagealloc/pagealloc"
)

// maxDumpRecords bounds the journal records dump lists without -all.
const maxDumpRecords = 20

// runDump prints everything a device records about itself: layout,
// superblocks, journal, free lists, pending queue, logs and sub-page
// classes; with -pages, every extent of the heap as well.
func runDump(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dump", "FILE", stderr)
	asJSON := fs.Bool("json", false, "print the inspection as JSON")
	pages := fs.Bool("pages", false, "also list every page of the heap with its state")
	all := fs.Bool("all", false, fmt.Sprintf("list every journal record (default: the first %d)", maxDumpRecords))
	maxSize := maxSizeFlag(fs)
	path, err := parseFileArgs(fs, args)
	if err != nil {
		return err
	}
	d, in, err := openInspected(path, int64(*maxSize))
	if err != nil {
		return err
	}
	defer d.Close()
	if *asJSON {
		if *pages {
			return writePagesJSON(stdout, d, in)
		}
		return writeJSON(stdout, in)
	}
	if err := printLayout(stdout, in); err != nil {
		return err
	}
	sections := []func(io.Writer, *pagealloc.Inspection) error{
		printSuperblocks,
		func(w io.Writer, in *pagealloc.Inspection) error { return printJournal(w, in, *all) },
		printFreeLists,
		printLogs,
		printSubpageClasses,
	}
	for _, section := range sections {
		fmt.Fprintln(stdout)
		if err := section(stdout, in); err != nil {
			return err
		}
	}
	if *pages {
		fmt.Fprintln(stdout)
		return printPages(stdout, d)
	}
	return nil
}

// tableWriter lays out one table of a section. Every row has a cell for
// each column of the header: a row with fewer would end the columns it
// lacks, and the rows after it would be aligned on their own.
type tableWriter struct {
	*tabwriter.Writer
	cols int
}

// table returns a tableWriter for one section, its header already written.
func table(w io.Writer, header ...string) *tableWriter {
	tw := &tableWriter{tabwriter.NewWriter(&trimWriter{w: w}, 0, 0, 2, ' ', 0), len(header)}
	row(tw, toAny(header)...)
	return tw
}

func toAny(cells []string) []any {
	out := make([]any, len(cells))
	for i, c := range cells {
		out[i] = c
	}
	return out
}

// shownName returns a log's name as a table shows it: as it is if it is
// printable text without spaces a reader could take for the table's, and
// quoted otherwise, so that no control byte of it reaches the terminal.
func shownName(name string) string {
	odd := func(r rune) bool { return !unicode.IsGraphic(r) || unicode.IsSpace(r) }
	if !utf8.ValidString(name) || strings.IndexFunc(name, odd) >= 0 || strings.HasPrefix(name, `"`) {
		return strconv.Quote(name)
	}
	return name
}

// row writes one row of a table, empty cells added for the columns it
// does not fill. Each cell ends in a tab, so that each is padded to its
// column; the trimWriter under the table drops the padding that would
// end a line.
func row(tw *tableWriter, cells ...any) {
	var b strings.Builder
	b.WriteString("  ")
	for i := range max(len(cells), tw.cols) {
		if i < len(cells) {
			fmt.Fprint(&b, cells[i])
		}
		b.WriteByte('\t')
	}
	b.WriteByte('\n')
	io.WriteString(tw, b.String())
}

// trimWriter passes on what is written to it without the spaces that end
// a line: it holds spaces back until something other than a line's end
// follows them.
type trimWriter struct {
	w      io.Writer
	spaces int
}

func (t *trimWriter) Write(p []byte) (int, error) {
	out := make([]byte, 0, len(p))
	for _, c := range p {
		switch c {
		case ' ':
			t.spaces++
			continue
		case '\n':
			t.spaces = 0
		default:
			out = append(out, bytes.Repeat([]byte{' '}, t.spaces)...)
			t.spaces = 0
		}
		out = append(out, c)
	}
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// printLayout prints the geometry and where each region lies.
func printLayout(w io.Writer, in *pagealloc.Inspection) error {
	orders := 0
	for n := in.MinPageSize; n < in.MaxPageSize; n <<= 1 {
		orders++
	}
	fmt.Fprintf(w, "geometry: pages %s to %s (%d orders), capacity %s%s, file %s\n",
		formatBytes(in.MinPageSize), formatBytes(in.MaxPageSize), orders+1, formatBytes(recordedCapacity(in)), mappedNote(in, formatBytes), humanBytes(in.FileSize))
	tw := table(w, "region", "offset", "size")
	for i, sb := range in.Superblocks {
		row(tw, "superblock "+string(rune('A'+i)), sb.Offset, 4096)
	}
	row(tw, "root area", in.Root.Offset, in.Root.Size)
	row(tw, "journal ring", in.Journal.Offset, in.Journal.Size)
	row(tw, "allocator state", in.AllocatorState.Offset, in.AllocatorState.Size)
	row(tw, "log regions", in.LogRegions.Offset, in.LogRegions.Size)
	row(tw, "heap (to the frontier)", in.HeapOffset, in.Frontier-in.HeapOffset)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "heap blocks of %s, each starting with %s of state bits\n", formatBytes(in.BlockBytes), formatBytes(in.BlockMetadataBytes))
	return nil
}

// recordedCapacity returns the capacity the device records, in the
// superblock copy in use.
func recordedCapacity(in *pagealloc.Inspection) int64 {
	for _, sb := range in.Superblocks {
		if sb.InUse {
			return sb.Capacity
		}
	}
	return in.Capacity
}

// mappedNote returns what to write after the recorded capacity: the
// capacity mapped, in format, if -max-size made it another.
func mappedNote(in *pagealloc.Inspection, format func(int64) string) string {
	if recordedCapacity(in) == in.Capacity {
		return ""
	}
	return fmt.Sprintf(" (mapped: %s, -max-size)", format(in.Capacity))
}

func printSuperblocks(w io.Writer, in *pagealloc.Inspection) error {
	fmt.Fprintln(w, "superblocks:")
	tw := table(w, "copy", "offset", "state", "seq", "version", "device id", "journal head", "head seq", "checkpointed tx")
	for i, sb := range in.Superblocks {
		name := string(rune('A' + i))
		if sb.Problem != "" {
			row(tw, name, sb.Offset, "bad")
			continue
		}
		state := "older"
		if sb.InUse {
			state = "in use"
		}
		row(tw, name, sb.Offset, state, sb.Sequence, sb.Version, fmt.Sprintf("%016x", sb.DeviceID), sb.JournalHead, sb.JournalHeadSeq, sb.TxSeq)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Below the table: a problem is a sentence, too wide for a column.
	for i, sb := range in.Superblocks {
		if sb.Problem != "" {
			fmt.Fprintf(w, "  copy %c does not verify: %s\n", 'A'+i, sb.Problem)
		}
	}
	return nil
}

func printJournal(w io.Writer, in *pagealloc.Inspection, all bool) error {
	js := &in.JournalState
	bytes := int64(js.Tail - js.Head)
	fmt.Fprintf(w, "journal: head %d (seq %d), tail %d (seq %d): %d records, %d bytes not yet checkpointed\n",
		js.Head, js.HeadSeq, js.Tail, js.NextSeq, len(js.Records), bytes)
	if len(js.Records) > 0 {
		tw := table(w, "seq", "offset", "position", "bytes", "entries")
		shown := len(js.Records)
		if !all {
			shown = min(shown, maxDumpRecords)
		}
		for _, r := range js.Records[:shown] {
			row(tw, r.Seq, r.Offset, r.Pos, r.Bytes, r.Entries)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if shown < len(js.Records) {
			fmt.Fprintf(w, "  … %d more (-all lists them)\n", len(js.Records)-shown)
		}
	}
	if js.Torn {
		fmt.Fprintf(w, "  torn record at offset %d: a write cut short by a crash; its commit never returned and Open ignores it\n", js.TailOffset)
	}
	return nil
}

func printFreeLists(w io.Writer, in *pagealloc.Inspection) error {
	fmt.Fprintln(w, "free lists:")
	tw := table(w, "order", "page size", "pages", "bytes", "first pages")
	for _, fl := range in.FreeLists {
		var first []string
		for _, off := range fl.First {
			first = append(first, fmt.Sprint(off))
		}
		if fl.Pages > int64(len(fl.First)) && len(fl.First) > 0 {
			first = append(first, "…")
		}
		row(tw, fl.Order, formatBytes(fl.PageBytes), fl.Pages, humanBytes(fl.Pages*fl.PageBytes), strings.Join(first, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	p := &in.Pending
	if p.Pages == 0 {
		fmt.Fprintln(w, "pending queue: empty")
		return nil
	}
	if p.OldestTx == 0 {
		fmt.Fprintf(w, "pending queue: %d pages, %s, head %d, tail %d; the head is no pending page: run pagealloc check\n",
			p.Pages, humanBytes(p.Bytes), p.Head, p.Tail)
		return nil
	}
	fmt.Fprintf(w, "pending queue: %d pages, %s, head %d, tail %d; the oldest freed by transaction %d, reusable after the checkpoint that covers it\n",
		p.Pages, humanBytes(p.Bytes), p.Head, p.Tail, p.OldestTx)
	return nil
}

func printLogs(w io.Writer, in *pagealloc.Inspection) error {
	if len(in.Logs) == 0 {
		fmt.Fprintln(w, "log regions: none")
		return nil
	}
	fmt.Fprintln(w, "log regions:")
	tw := table(w, "name", "ring offset", "ring size", "head", "durable tail", "used", "free")
	for _, l := range in.Logs {
		row(tw, shownName(l.Name), l.Ring.Offset, formatBytes(l.Ring.Size), l.Stats.Head, l.Stats.DurableTail, humanBytes(l.Stats.UsedBytes), humanBytes(l.Stats.FreeBytes))
	}
	return tw.Flush()
}

func printSubpageClasses(w io.Writer, in *pagealloc.Inspection) error {
	if len(in.SubpageClasses) == 0 {
		fmt.Fprintln(w, "sub-page classes: none")
		return nil
	}
	fmt.Fprintln(w, "sub-page classes:")
	tw := table(w, "class", "slot size", "parent size", "parents", "slots used", "slots pending", "slots free", "overhead", "list head")
	for _, c := range in.SubpageClasses {
		row(tw, c.Index, formatBytes(c.SlotBytes), formatBytes(c.ParentBytes), c.Parents, c.SlotsUsed, c.SlotsPending, c.SlotsFree, humanBytes(c.OverheadBytes), c.ListHead)
	}
	return tw.Flush()
}

// printPages lists every extent of the heap, one row each. A heap may
// hold millions: rather than keep them, it walks the heap twice, first
// for the width of each column, then to print the rows as it goes.
func printPages(w io.Writer, d *pagealloc.Device) error {
	wOff, wSize, wState := len("offset"), len("size"), len("state")
	if err := d.WalkHeap(func(e pagealloc.HeapExtent) bool {
		off, size, state, detail := extentCells(e)
		wOff, wSize = max(wOff, len(off)), max(wSize, len(size))
		if detail != "" {
			wState = max(wState, len(state))
		}
		return true
	}); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "heap pages:")
	fmt.Fprintf(bw, "  %-*s  %-*s  %-*s  detail\n", wOff, "offset", wSize, "size", wState, "state")
	if err := d.WalkHeap(func(e pagealloc.HeapExtent) bool {
		off, size, state, detail := extentCells(e)
		if detail != "" {
			state = fmt.Sprintf("%-*s  %s", wState, state, detail)
		}
		_, err := fmt.Fprintf(bw, "  %-*s  %-*s  %s\n", wOff, off, wSize, size, state)
		return err == nil
	}); err != nil {
		return err
	}
	return bw.Flush()
}

// extentCells returns the cells of an extent's row.
func extentCells(e pagealloc.HeapExtent) (off, size, state, detail string) {
	switch {
	case e.Kind == pagealloc.PageSubpages && e.SlotBytes == 0:
		detail = "its header is damaged: run pagealloc check" // WalkHeap knows no slots of it
	case e.Kind == pagealloc.PageSubpages:
		detail = fmt.Sprintf("%d of 63 slots of %s used", e.SlotsUsed, formatBytes(e.SlotBytes))
	}
	return strconv.FormatInt(e.Offset, 10), formatBytes(e.Size), e.Kind.String(), detail
}

// writePagesJSON writes the inspection with every extent of the heap in
// a "Pages" array, as one JSON object, encoding each extent as the walk
// reaches it instead of keeping them all.
func writePagesJSON(w io.Writer, d *pagealloc.Device, in *pagealloc.Inspection) error {
	head, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	bw.Write(bytes.TrimRight(bytes.TrimSuffix(head, []byte("}")), "\n")) // open, for one more field
	bw.WriteString(",\n  \"Pages\": [")
	n := 0
	var encErr error
	err = d.WalkHeap(func(e pagealloc.HeapExtent) bool {
		b, err := json.MarshalIndent(e, "    ", "  ")
		if err != nil {
			encErr = err
			return false
		}
		if n > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("\n    ")
		n++
		_, err = bw.Write(b)
		return err == nil
	})
	if err = errors.Join(err, encErr); err != nil {
		return err
	}
	if n > 0 {
		bw.WriteString("\n  ") // else an empty array: a heap with no page yet
	}
	bw.WriteString("]\n}\n")
	return bw.Flush()
}
