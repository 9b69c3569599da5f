package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/pagealloc/pagealloc"
)

// benchResult is one row of the bench table.
type benchResult struct {
	Op      string  `json:"op"`
	Count   int     `json:"count"`
	OpsPerS float64 `json:"ops_per_s"`
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
	Maxus   float64 `json:"max_us"`
}

func runBench(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	duration := fs.Duration("duration", 3*time.Second, "how long each workload phase runs")
	path := fs.String("file", "", "device file to create (default: a new temporary directory, removed afterwards)")
	committers := fs.Int("committers", 64, "goroutines committing at once in the concurrent phase")
	noSync := fs.Bool("nosync", false, "skip fsync (measures the CPU cost alone)")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		dir, err := os.MkdirTemp("", "pagealloc-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*path = filepath.Join(dir, "device")
	}
	d, err := pagealloc.Create(*path, &pagealloc.Options{NoSync: *noSync, RootSize: 64 << 10})
	if err != nil {
		return err
	}
	results := []benchResult{
		commitPhase(d, "commit (1 committer)", 1, *duration),
		commitPhase(d, fmt.Sprintf("commit (%d committers)", *committers), *committers, *duration),
	}
	if err := d.Close(); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tcount\tops/s\tp50 µs\tp99 µs\tmax µs\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.1f\t%.1f\t%.1f\t\n", r.Op, r.Count, r.OpsPerS, r.P50us, r.P99us, r.Maxus)
	}
	return tw.Flush()
}

// commitPhase runs transactions of one 8-byte root-area write from n
// goroutines for the given time and reports their latencies.
func commitPhase(d *pagealloc.Device, name string, n int, duration time.Duration) benchResult {
	rootOff, rootSize := d.Root()
	deadline := time.Now().Add(duration)
	var mu sync.Mutex
	var latencies []time.Duration
	var failed error
	start := time.Now()
	var wg sync.WaitGroup
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var word [8]byte
			for i := 0; time.Now().Before(deadline); i++ {
				off := rootOff + int64((g*1000+i)*8)%rootSize
				binary.LittleEndian.PutUint64(word[:], uint64(i))
				t0 := time.Now()
				if err := d.Update(func(tx *pagealloc.Txn) error { return tx.Write(off, word[:]) }); err != nil {
					mu.Lock()
					failed = errors.Join(failed, err)
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if failed != nil {
		fmt.Fprintln(os.Stderr, "pagealloc bench:", failed)
	}
	return summarize(name, latencies, time.Since(start))
}

func summarize(name string, lat []time.Duration, elapsed time.Duration) benchResult {
	r := benchResult{Op: name, Count: len(lat)}
	if len(lat) == 0 {
		return r
	}
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	r.OpsPerS = float64(len(lat)) / elapsed.Seconds()
	r.P50us = us(lat[len(lat)/2])
	r.P99us = us(lat[len(lat)*99/100])
	r.Maxus = us(lat[len(lat)-1])
	return r
}
