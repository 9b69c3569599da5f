package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pagealloc/pagealloc"
)

// benchResult is one row of the bench table.
type benchResult struct {
	Op      string  `json:"op"`
	Count   int64   `json:"count"`
	OpsPerS float64 `json:"ops_per_s"`
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
	P999us  float64 `json:"p999_us"`
	Maxus   float64 `json:"max_us"`
}

// benchOp is one operation of a phase, called by goroutine g with its own
// random source. ctx ends when the phase stops early (an interrupt, or
// another goroutine's call failed): a call waiting on it returns then.
type benchOp func(ctx context.Context, g int, rng *rand.Rand) error

// benchPhase is one row of the table: op run from n goroutines.
type benchPhase struct {
	name string
	n    int
	op   benchOp
}

// minBenchBytes is the smallest -size the workload runs in: 16 MiB of
// headers, the log ring's eighth, and room for pages, slots and what
// waits in the pending queue.
const minBenchBytes = 64 << 20

// benchBytesPerCommitter is the -size each committer needs beyond the
// first 64: its eighth of it in the log ring holds two of its 64 KiB
// entries, one in flight and one for GC to reclaim, and the rest its
// slots and pages.
const benchBytesPerCommitter = 1 << 20

// runBench creates a device (in a temporary directory unless -file is
// given), runs one phase per component and a mixed phase over all of them,
// then prints a table of throughput and latency, the device's statistics
// and the result of checking it, reopened read-only.
func runBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "", stderr)
	duration := fs.Duration("duration", 3*time.Second, "how long each of the 7 phases runs")
	size := sizeValue(min(4<<30, math.MaxInt>>1+1)) // 1 GiB on 32 bits, the library's default there
	fs.Var(&size, "size", "the device's MaxSize in `bytes`, at least 64MiB and 1MiB per committer: address space reserved; the file grows as pages are used")
	path := fs.String("file", "", "device file to create (default: one in a new temporary directory, removed afterwards)")
	committers := fs.Int("committers", 64, "goroutines at once in the concurrent phases")
	noSync := fs.Bool("nosync", false, "skip fsync (measures the CPU cost alone)")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != 0 || *committers < 1 || *duration <= 0 {
		fs.Usage()
		return fmt.Errorf("%w: no operands, -committers >= 1 and -duration > 0", errUsage)
	}
	// An interrupt stops the phases, not the process, so that the device
	// is closed and the temporary directory removed; a second one, once
	// the first has been seen, ends the process as usual.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	if *path == "" {
		dir, err := os.MkdirTemp("", "pagealloc-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*path = filepath.Join(dir, "device")
	}
	// The log ring takes an eighth of the device; pages, sub-pages and
	// what waits in the pending queue fit in the rest, after the 16 MiB
	// the headers take with the default 16 MiB max page.
	least := max(minBenchBytes, min(int64(*committers), math.MaxInt64/benchBytesPerCommitter)*benchBytesPerCommitter)
	if int64(size) < least {
		return fmt.Errorf("%w: -size %s leaves no room for the workload of %d committers (at least %s)", errUsage, formatBytes(int64(size)), *committers, formatBytes(least))
	}
	// At most 256 MiB of ring unless the committers need more.
	ringBytes := min(max(256<<20, int64(*committers)*benchBytesPerCommitter/8), int64(size)/8) &^ 4095
	d, err := pagealloc.Create(*path, &pagealloc.Options{
		MaxSize:    int64(size),
		NoSync:     *noSync,
		RootSize:   64 << 10,
		LogRegions: []pagealloc.LogRegion{{Name: "wal", Size: ringBytes}},
	})
	if errors.Is(err, pagealloc.ErrTooLarge) {
		// -size is the device's MaxSize: one the platform cannot map is
		// a flag out of range, as create's -max-size is.
		return fmt.Errorf("%w: -size %s: %s", errUsage, formatBytes(int64(size)), withoutLibraryName(err))
	}
	if err != nil {
		return err
	}
	results, err := benchPhases(ctx, d, int64(size), *committers, *duration, newProgress(stderr))
	closeErr := d.Close()
	if ctx.Err() != nil {
		return errors.Join(errors.New("interrupted"), closeErr) // the phases stopped short: no table
	}
	if err == nil {
		err = closeErr
	}
	if err != nil {
		return err
	}
	// What a user would see: the device reopened read-only and checked.
	stats, in, err := readStats(*path, 0)
	if err != nil {
		return err
	}
	violations, err := checkDevice(*path, 0, stderr)
	if err != nil {
		return err
	}
	check := "OK"
	if len(violations) > 0 {
		check = errors.Join(violations...).Error()
	}
	if *asJSON {
		err = writeJSON(stdout, struct {
			Results []benchResult `json:"results"`
			Stats   deviceStats   `json:"stats"`
			Check   string        `json:"check"`
		}{results, stats, check})
	} else {
		err = printBench(stdout, results, stats, in, check)
	}
	if err == nil && len(violations) > 0 {
		err = fmt.Errorf("the device fails its check:\n%s", check)
	}
	return err
}

// benchPhases builds the phases on d and runs them in turn, until ctx is
// done.
func benchPhases(ctx context.Context, d *pagealloc.Device, sizeBytes int64, n int, duration time.Duration, prog *progress) ([]benchResult, error) {
	// Each committer keeps up to limit pages of 4 to 64 KiB (36 KiB on
	// average at the limit), together at most a quarter of the device.
	limit := int(min(64, max(1, sizeBytes/4/int64(n)/(36<<10))))
	alloc := churnOp(d, n, limit,
		func(tx *pagealloc.Txn, rng *rand.Rand) (pagealloc.Addr, error) { return tx.Alloc(4096 << rng.IntN(5)) },
		func(tx *pagealloc.Txn, a pagealloc.Addr) error { return tx.Free(a) })
	class, err := d.Subpages(256)
	if err != nil {
		return nil, err
	}
	subpage := churnOp(d, n, 256,
		func(tx *pagealloc.Txn, _ *rand.Rand) (pagealloc.Addr, error) { return class.Alloc(tx) },
		class.Free)
	logAppend, err := logOp(d)
	if err != nil {
		return nil, err
	}
	pool, err := pagealloc.NewPool(2*n, 64<<10)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	poolGet := poolOp(pool)
	mixOps := []benchOp{commitOp(d), alloc, subpage, logAppend, poolGet}
	mixed := func(ctx context.Context, g int, rng *rand.Rand) error {
		return mixOps[rng.IntN(len(mixOps))](ctx, g, rng)
	}
	phases := []benchPhase{{"commit (1 committer)", 1, commitOp(d)}}
	if n > 1 { // else the phase above is that one
		phases = append(phases, benchPhase{fmt.Sprintf("commit (%d committers)", n), n, commitOp(d)})
	}
	phases = append(phases, []benchPhase{
		{"alloc+free, 4-64 KiB", n, alloc},
		{"sub-page alloc+free, 256 B", n, subpage},
		{"log append+commit, 64 KiB", n, logAppend},
		{"pool get+put, 64 KiB", n, poolGet},
		{"mixed: all of the above", n, mixed},
	}...)
	prog.begin(len(phases), duration)
	defer prog.end()
	var results []benchResult
	for i, ph := range phases {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := runPhase(ctx, ph, duration, prog.phase(i, ph.name))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ph.name, err)
		}
		results = append(results, r)
	}
	return results, nil
}

// runPhase runs ph.op from ph.n goroutines until duration has passed,
// ctx is done or a call fails (which stops them all), and reports the
// rate and latencies of its calls; counter is told of calls as they are
// made, for the progress display.
func runPhase(ctx context.Context, ph benchPhase, duration time.Duration, counter *atomic.Int64) (benchResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(duration)
	var mu sync.Mutex
	var all latencyHistogram
	var failed error
	var wg sync.WaitGroup
	for g := range ph.n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			var mine latencyHistogram
			unreported := int64(0)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				if err := ph.op(ctx, g, rng); err != nil {
					mu.Lock()
					if failed == nil { // the others most likely failed alike
						failed = err
					}
					mu.Unlock()
					cancel()
					break
				}
				mine.add(time.Since(t0))
				// Reported in batches: one shared counter bumped by every
				// call would slow the fastest operations down.
				if unreported++; unreported == 1024 {
					counter.Add(unreported)
					unreported = 0
				}
			}
			counter.Add(unreported)
			mu.Lock()
			all.merge(&mine)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all.summarize(ph.name, time.Since(start)), failed
}

// commitOp commits transactions of one 8-byte root-area write.
func commitOp(d *pagealloc.Device) benchOp {
	rootOff, rootSize := d.Root()
	var seq atomic.Int64
	return func(_ context.Context, g int, rng *rand.Rand) error {
		i := seq.Add(1)
		off := rootOff + i*8%rootSize
		var word [8]byte
		binary.LittleEndian.PutUint64(word[:], uint64(i))
		return d.Update(func(tx *pagealloc.Txn) error { return tx.Write(off, word[:]) })
	}
}

// churnOp runs one transaction per call, each goroutine keeping up to
// limit addresses: once at the limit, a transaction frees one of them at
// random, then allocates a replacement.
func churnOp(d *pagealloc.Device, n, limit int,
	alloc func(*pagealloc.Txn, *rand.Rand) (pagealloc.Addr, error), free func(*pagealloc.Txn, pagealloc.Addr) error) benchOp {
	held := make([][]pagealloc.Addr, n)
	return func(_ context.Context, g int, rng *rand.Rand) error {
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
	}
}

// logOp appends, writes and commits 64 KiB entries to the log "wal"; GC
// reclaims the ring as it fills, every entry being dead once written. A
// full ring is collected on demand.
func logOp(d *pagealloc.Device) (benchOp, error) {
	l, err := d.Log("wal")
	if err != nil {
		return nil, err
	}
	if err := l.SetOwner(deadEntries{}, nil); err != nil {
		return nil, err
	}
	payload := make([]byte, 64<<10)
	return func(ctx context.Context, g int, rng *rand.Rand) error {
		r, err := l.Append(len(payload))
		for tries := 0; errors.Is(err, pagealloc.ErrNoSpace) && tries < 3; tries++ {
			// Appends outran background GC: reclaim now, as an owner
			// whose log is full would.
			if err := l.GC(ctx); err != nil {
				return err
			}
			r, err = l.Append(len(payload))
		}
		if err != nil {
			return err
		}
		if err := l.Write(r, payload); err != nil {
			// Given up, not left reserved: a reservation never
			// committed nor cancelled holds back every entry after it.
			return errors.Join(err, l.Cancel(r))
		}
		return l.Commit(r)
	}, nil
}

// poolOp gets a buffer from pool, writes to it and puts it back.
func poolOp(pool *pagealloc.Pool) benchOp {
	return func(ctx context.Context, g int, rng *rand.Rand) error {
		b, err := pool.Get(ctx)
		if err != nil {
			return err
		}
		binary.LittleEndian.PutUint64(b.Bytes(), uint64(g))
		return pool.Put(b)
	}
}

// deadEntries tells log GC that no entry is live.
type deadEntries struct{}

// IsLive reports false: the bench keeps no entry.
func (deadEntries) IsLive(off int64, entry []byte) bool { return false }

func printBench(w io.Writer, results []benchResult, stats deviceStats, in *pagealloc.Inspection, check string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tcount\tops/s\tp50 µs\tp99 µs\tp99.9 µs\tmax µs\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", r.Op, r.Count, r.OpsPerS, r.P50us, r.P99us, r.P999us, r.Maxus)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nThe device at the end:")
	if err := printStats(w, stats, in); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nCheck: %s\n", check)
	return nil
}

// latencyHistogram counts durations in buckets 1/16 of a power of two
// wide, so that percentiles are within about 3% at any scale and memory
// does not grow with the number of calls.
type latencyHistogram struct {
	counts [1024]int64
	n      int64
	max    time.Duration
}

func latencyBucket(ns uint64) int {
	if ns < 32 {
		return int(ns)
	}
	e := bits.Len64(ns) // at least 6
	return (e-4)*16 + int(ns>>(e-5)&15)
}

// bucketMiddle returns the duration in the middle of bucket b.
func bucketMiddle(b int) time.Duration {
	if b < 32 {
		return time.Duration(b)
	}
	e := b/16 + 4
	low := uint64(16+b%16) << (e - 5)
	return time.Duration(low + uint64(1)<<(e-5)/2)
}

func (h *latencyHistogram) add(d time.Duration) {
	h.counts[latencyBucket(uint64(max(d, 0)))]++
	h.n++
	h.max = max(h.max, d)
}

func (h *latencyHistogram) merge(o *latencyHistogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// percentile returns the latency that perMille thousandths of the calls
// did not exceed: that of the call at rank ceil(n·perMille/1000) in
// increasing order (nearest rank), counted in integers so that no
// rounding moves it to the next call.
func (h *latencyHistogram) percentile(perMille int64) time.Duration {
	rank := max(1, (h.n*perMille+999)/1000)
	seen := int64(0)
	for b, c := range h.counts {
		if seen += c; seen >= rank {
			return min(bucketMiddle(b), h.max)
		}
	}
	return h.max
}

func (h *latencyHistogram) summarize(name string, elapsed time.Duration) benchResult {
	r := benchResult{Op: name, Count: h.n}
	if h.n == 0 {
		return r
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	r.OpsPerS = float64(h.n) / elapsed.Seconds()
	r.P50us = us(h.percentile(500))
	r.P99us = us(h.percentile(990))
	r.P999us = us(h.percentile(999))
	r.Maxus = us(h.max)
	return r
}

// progress shows how far bench has come on stderr: a bar redrawn in place
// on a terminal, one line per phase otherwise (a log file, a pipe, CI).
type progress struct {
	w        io.Writer
	tty      bool
	phases   int
	duration time.Duration
	stop     chan struct{} // ends the redraw of the running phase
	done     chan struct{}
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		p.tty = isTerminalFd(f.Fd())
	}
	return p
}

func (p *progress) begin(phases int, duration time.Duration) {
	p.phases, p.duration = phases, duration
	fmt.Fprintf(p.w, "bench: %d phases of %v each\n", phases, duration)
}

// phase ends the display of the phase before it, if any, and starts that
// of phase i; the counter it returns is to be told of every call made.
func (p *progress) phase(i int, name string) *atomic.Int64 {
	p.end()
	counter := new(atomic.Int64)
	start := time.Now()
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func(stop, done chan struct{}) {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				p.line(i, name, time.Since(start), counter.Load(), true)
				return
			case <-tick.C:
				if p.tty {
					p.line(i, name, time.Since(start), counter.Load(), false)
				}
			}
		}
	}(p.stop, p.done)
	return counter
}

// end finishes the display of the running phase.
func (p *progress) end() {
	if p.stop != nil {
		close(p.stop)
		<-p.done
		p.stop = nil
	}
}

func (p *progress) line(i int, name string, elapsed time.Duration, ops int64, final bool) {
	if !p.tty {
		fmt.Fprintf(p.w, "bench: %d/%d %s: %d ops in %.1fs\n", i+1, p.phases, name, ops, elapsed.Seconds())
		return
	}
	const width = 30
	filled := min(width, int(width*elapsed/p.duration))
	if final {
		filled = width
	}
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(p.w, "\r\033[K%d/%d [%s] %-28s %5.1fs %12d ops%s", i+1, p.phases, bar, name, elapsed.Seconds(), ops, end)
}
