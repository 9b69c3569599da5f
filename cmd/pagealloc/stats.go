package main

import (
	"fmt"
	"io"

	"github.com/pagealloc/pagealloc"
)

// deviceStats is what stats reports, and its JSON form.
type deviceStats struct {
	Allocator pagealloc.Stats
	Subpages  []pagealloc.SubpageClassInfo
	Logs      []pagealloc.LogInfo
	Journal   struct {
		Records int   // not yet checkpointed
		Bytes   int64 // their size
	}
}

// runStats prints a device's usage: the allocator's counters and free
// pages per order, each sub-page class, each log.
func runStats(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("stats", "FILE", stderr)
	asJSON := fs.Bool("json", false, "print the statistics as JSON")
	maxSize := maxSizeFlag(fs)
	path, err := parseFileArgs(fs, args)
	if err != nil {
		return err
	}
	s, in, err := readStats(path, int64(*maxSize))
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, s)
	}
	return printStats(stdout, s, in)
}

// readStats opens the device at path read-only, as openReadOnly does, and
// returns its statistics and inspection.
func readStats(path string, maxSize int64) (deviceStats, *pagealloc.Inspection, error) {
	d, in, err := openInspected(path, maxSize)
	if err != nil {
		return deviceStats{}, nil, err
	}
	defer d.Close()
	s := deviceStats{Allocator: d.Stats(), Subpages: in.SubpageClasses, Logs: in.Logs}
	s.Journal.Records = len(in.JournalState.Records)
	s.Journal.Bytes = int64(in.JournalState.Tail - in.JournalState.Head)
	return s, in, nil
}

// printStats writes s as tables: totals, free pages per order, sub-page
// classes and logs.
func printStats(w io.Writer, s deviceStats, in *pagealloc.Inspection) error {
	a := &s.Allocator
	heap := a.Frontier - in.HeapOffset
	pct := func(n int64) string {
		if heap == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(heap))
	}
	tw := table(w, "", "pages", "bytes", "of heap")
	row(tw, "allocated", a.AllocatedPages, humanBytes(a.UsedBytes), pct(a.UsedBytes))
	row(tw, "free", sum(a.FreePages), humanBytes(a.FreeBytes), pct(a.FreeBytes))
	row(tw, "pending", a.PendingPages, humanBytes(a.PendingBytes), pct(a.PendingBytes))
	row(tw, "block metadata", "", humanBytes(a.MetadataBytes), pct(a.MetadataBytes))
	row(tw, "heap (to the frontier)", "", humanBytes(heap), "")
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "largest free page %s; file %s of %s capacity%s; journal: %d records (%d bytes) not yet checkpointed\n",
		humanBytes(a.LargestFreePage), humanBytes(a.FileSize), humanBytes(recordedCapacity(in)), mappedNote(in, humanBytes), s.Journal.Records, s.Journal.Bytes)
	fmt.Fprintln(w)
	tw = table(w, "order", "page size", "free pages", "free bytes")
	for k, n := range a.FreePages {
		size := in.MinPageSize << k
		row(tw, k, formatBytes(size), n, humanBytes(n*size))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Subpages) > 0 {
		fmt.Fprintln(w)
		tw = table(w, "sub-page class", "slot size", "parents", "slots used", "slots pending", "slots free", "overhead")
		for _, c := range s.Subpages {
			row(tw, c.Index, formatBytes(c.SlotBytes), c.Parents, c.SlotsUsed, c.SlotsPending, c.SlotsFree, humanBytes(c.OverheadBytes))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.Logs) > 0 {
		fmt.Fprintln(w)
		tw = table(w, "log", "size", "used", "free", "head", "durable tail")
		for _, l := range s.Logs {
			row(tw, shownName(l.Name), formatBytes(l.Ring.Size), humanBytes(l.Stats.UsedBytes), humanBytes(l.Stats.FreeBytes), l.Stats.Head, l.Stats.DurableTail)
		}
		return tw.Flush()
	}
	return nil
}

func sum(ns []int64) int64 {
	t := int64(0)
	for _, n := range ns {
		t += n
	}
	return t
}
