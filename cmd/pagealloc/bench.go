package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
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
	d, err := pagealloc.Create(*path, &pagealloc.Options{
		NoSync:     *noSync,
		RootSize:   64 << 10,
		LogRegions: []pagealloc.LogRegion{{Name: "wal", Size: 256 << 20}},
	})
	if err != nil {
		return err
	}
	var results []benchResult
	phases := []func() (benchResult, error){
		func() (benchResult, error) { return commitPhase(d, "commit (1 committer)", 1, *duration) },
		func() (benchResult, error) {
			return commitPhase(d, fmt.Sprintf("commit (%d committers)", *committers), *committers, *duration)
		},
		func() (benchResult, error) { return allocPhase(d, *committers, *duration) },
		func() (benchResult, error) { return subpagePhase(d, *committers, *duration) },
		func() (benchResult, error) { return logPhase(d, *committers, *duration) },
	}
	for _, phase := range phases {
		r, err := phase()
		if err != nil {
			d.Close()
			return fmt.Errorf("%s: %w", r.Op, err)
		}
		results = append(results, r)
	}
	stats := d.Stats()
	checkErr := d.Check()
	if err := d.Close(); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		out := struct {
			Results []benchResult   `json:"results"`
			Stats   pagealloc.Stats `json:"stats"`
			Check   string          `json:"check"`
		}{results, stats, checkString(checkErr)}
		if err := enc.Encode(out); err != nil {
			return err
		}
		return checkErr
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tcount\tops/s\tp50 µs\tp99 µs\tmax µs\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.1f\t%.1f\t%.1f\t\n", r.Op, r.Count, r.OpsPerS, r.P50us, r.P99us, r.Maxus)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ndevice: %d pages allocated (%d bytes), %d bytes free, %d bytes pending, frontier %d, file %d bytes\n",
		stats.AllocatedPages, stats.UsedBytes, stats.FreeBytes, stats.PendingBytes, stats.Frontier, stats.FileSize)
	fmt.Fprintf(stdout, "Check: %s\n", checkString(checkErr))
	return checkErr
}

func checkString(err error) string {
	if err == nil {
		return "OK"
	}
	return err.Error()
}

// runPhase runs op from n goroutines until the deadline and reports the
// latencies of its calls. op gets the goroutine's number and its own
// random source.
func runPhase(name string, n int, duration time.Duration, op func(g int, rng *rand.Rand) error) (benchResult, error) {
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
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := op(g, rng); err != nil {
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
	return summarize(name, latencies, time.Since(start)), failed
}

// allocPhase: each goroutine keeps up to 64 pages of 4 KiB to 64 KiB and,
// in each transaction, frees one at random and allocates a replacement.
func allocPhase(d *pagealloc.Device, n int, duration time.Duration) (benchResult, error) {
	return churnPhase(d, "alloc+free, 4-64 KiB", n, 64, duration,
		func(tx *pagealloc.Txn, rng *rand.Rand) (pagealloc.Addr, error) { return tx.Alloc(4096 << rng.IntN(5)) },
		func(tx *pagealloc.Txn, a pagealloc.Addr) error { return tx.Free(a) })
}

// subpagePhase churns 256-byte slots the same way, up to 256 each.
func subpagePhase(d *pagealloc.Device, n int, duration time.Duration) (benchResult, error) {
	class, err := d.Subpages(256)
	if err != nil {
		return benchResult{Op: "sub-page"}, err
	}
	return churnPhase(d, "sub-page alloc+free, 256 B", n, 256, duration,
		func(tx *pagealloc.Txn, _ *rand.Rand) (pagealloc.Addr, error) { return class.Alloc(tx) },
		class.Free)
}

// churnPhase runs transactions from n goroutines, each keeping up to
// limit addresses: once at the limit, a transaction frees one of them at
// random, then allocates a replacement.
func churnPhase(d *pagealloc.Device, name string, n, limit int, duration time.Duration,
	alloc func(*pagealloc.Txn, *rand.Rand) (pagealloc.Addr, error), free func(*pagealloc.Txn, pagealloc.Addr) error) (benchResult, error) {
	held := make([][]pagealloc.Addr, n)
	return runPhase(name, n, duration, func(g int, rng *rand.Rand) error {
		return d.Update(func(tx *pagealloc.Txn) error {
			mine := held[g]
			if len(mine) >= limit {
				i := rng.IntN(len(mine))
				if err := free(tx, mine[i]); err != nil {
					return err
				}
				mine[i] = mine[len(mine)-1]
				mine = mine[:len(mine)-1]
			}
			a, err := alloc(tx, rng)
			if err != nil {
				return err
			}
			held[g] = append(mine, a)
			return nil
		})
	})
}

// logPhase appends, writes and commits 64 KiB entries; GC reclaims the
// ring as it fills, every entry being dead once written.
func logPhase(d *pagealloc.Device, n int, duration time.Duration) (benchResult, error) {
	l, err := d.Log("wal")
	if err != nil {
		return benchResult{Op: "log"}, err
	}
	if err := l.SetOwner(deadEntries{}, nil); err != nil {
		return benchResult{Op: "log"}, err
	}
	payload := make([]byte, 64<<10)
	return runPhase("log append+commit, 64 KiB", n, duration, func(g int, rng *rand.Rand) error {
		r, err := l.Append(len(payload))
		if err != nil {
			return err
		}
		if err := l.Write(r, payload); err != nil {
			return err
		}
		return l.Commit(r)
	})
}

// deadEntries tells log GC that no entry is live.
type deadEntries struct{}

func (deadEntries) IsLive(off int64, entry []byte) bool { return false }

// commitPhase runs transactions of one 8-byte root-area write from n
// goroutines for the given time and reports their latencies.
func commitPhase(d *pagealloc.Device, name string, n int, duration time.Duration) (benchResult, error) {
	rootOff, rootSize := d.Root()
	counts := make([]int64, n)
	return runPhase(name, n, duration, func(g int, rng *rand.Rand) error {
		off := rootOff + (int64(g)*1000+counts[g])*8%rootSize
		counts[g]++
		var word [8]byte
		binary.LittleEndian.PutUint64(word[:], uint64(counts[g]))
		return d.Update(func(tx *pagealloc.Txn) error { return tx.Write(off, word[:]) })
	})
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
