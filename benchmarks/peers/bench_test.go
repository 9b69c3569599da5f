package peers

import (
	"flag"
	"strings"
	"testing"
	"time"
)

var setupLimit = flag.Duration("peers.setup", 2*time.Minute,
	"skip a benchmark whose setup (filling to its live pages) takes longer than this")

// One operation of every workload is one Free of a random live page
// followed by one Alloc of a random size into its slot, so the number of
// live pages stays constant; ns/op is the cost of that pair.
const (
	// commitEveryOps is the batch between commits without fsync:
	// pagealloc's transaction, lldb's BeginUpdate/EndUpdate, file's Flush.
	commitEveryOps = 1000
	// syncEveryOps is the batch between commits with fsync: pagealloc's
	// durable Commit, lldb's two-phase EndUpdate, file's WAL Commit.
	syncEveryOps = 100
	// syncLive is how many pages are live in BenchmarkAllocFreeSync, whose
	// cost is the fsyncs rather than the number of live pages.
	syncLive = 10_000
)

// liveLadder is the steady-state sizes of BenchmarkAllocFree. Two peers
// stop at 1e5. lldb's Alloc takes the block's content, so filling to 1e6
// pages would first write ~25 GB (minutes, and the disk space). file-mmap
// at 1e6 measured 2.1-2.4 ms per operation (file.Map maps a ~25 GB sparse
// file in 1 GiB chunks and keeps only some of them mapped) and its fill and
// Close (which flushes every dirty mapped page) took minutes per run; the
// plain file row at 1e6 stands for modernc.org/file there.
var liveLadder = []struct {
	name      string
	live      int
	slowSetup bool // skipped under -benchtime=Nx, CI's smoke run, to keep it short
}{
	{"live=1e3", 1_000, false},
	{"live=1e5", 100_000, true}, // lldb writes ~2.5 GB to fill it
	{"live=1e6", 1_000_000, true},
}

// implsStoppingAt1e5 is the implementations not filled to 1e6 (see
// liveLadder).
var implsStoppingAt1e5 = map[string]bool{"lldb": true, "file-mmap": true}

// BenchmarkAllocFree measures the steady state without fsync: free a random
// live page, allocate one of a random power-of-two size from 4 KiB to
// 64 KiB, commit every commitEveryOps operations.
func BenchmarkAllocFree(b *testing.B) {
	for _, im := range implsNoSync {
		b.Run(im.name, func(b *testing.B) {
			for _, rung := range liveLadder {
				b.Run(rung.name, func(b *testing.B) {
					if rung.live > 100_000 && implsStoppingAt1e5[im.name] {
						b.Skipf("%s is not filled to %d live pages: its setup takes minutes (see liveLadder)", im.name, rung.live)
					}
					if rung.slowSetup && iterationBenchtime() {
						b.Skip("filling takes seconds; skipped under -benchtime=Nx")
					}
					runAllocFree(b, openFor(b, im), rung.live, commitEveryOps)
				})
			}
		})
	}
}

// BenchmarkAllocFreeSync measures the crash-safe variants with a real fsync
// every syncEveryOps operations, at syncLive live pages.
func BenchmarkAllocFreeSync(b *testing.B) {
	for _, im := range implsSync {
		b.Run(im.name, func(b *testing.B) {
			runAllocFree(b, openFor(b, im), syncLive, syncEveryOps)
		})
	}
}

// runAllocFree fills a to live pages, outside the timer, then times b.N
// free+alloc pairs with a commit every commitEvery of them. Every
// implementation sees the same sequence of sizes and slots.
func runAllocFree(b *testing.B, a allocator, live, commitEvery int) {
	w := workload{state: 0x5eed}
	handles := make([]int64, live)
	start := time.Now()
	for i := range handles {
		h, err := a.Alloc(w.size(w.next()))
		if err != nil {
			b.Fatalf("fill: Alloc #%d: %v", i, err)
		}
		handles[i] = h
		// Fill in big batches whatever the workload's cadence: setup is
		// not measured, and lldb's ACID mode would otherwise spend
		// minutes on fsyncs here.
		if (i+1)%commitEveryOps == 0 {
			if err := a.Commit(); err != nil {
				b.Fatalf("fill: Commit: %v", err)
			}
			if elapsed := time.Since(start); elapsed > *setupLimit {
				b.Skipf("filling to %d live pages took over %v (%d in %v); raise -peers.setup", live, *setupLimit, i+1, elapsed)
			}
		}
	}
	if err := a.Commit(); err != nil {
		b.Fatalf("fill: Commit: %v", err)
	}
	if testing.Verbose() {
		b.Logf("filled to %d live pages in %v", live, time.Since(start).Round(time.Millisecond))
	}
	b.ReportAllocs()
	// b.Loop resets the timer on its first call and runs this function once
	// per -count, so the fill above is neither timed nor repeated.
	for i := 1; b.Loop(); i++ {
		r := w.next()
		slot := w.slot(r, live)
		if err := a.Free(handles[slot]); err != nil {
			b.Fatalf("op %d: Free: %v", i, err)
		}
		h, err := a.Alloc(w.size(r))
		if err != nil {
			b.Fatalf("op %d: Alloc: %v", i, err)
		}
		handles[slot] = h
		if i%commitEvery == 0 {
			if err := a.Commit(); err != nil {
				b.Fatalf("op %d: Commit: %v", i, err)
			}
		}
	}
}

// workload is a splitmix64 generator: a few nanoseconds per operation, the
// same sequence for every implementation, no allocation.
type workload struct{ state uint64 }

func (w *workload) next() uint64 {
	w.state += 0x9e3779b97f4a7c15
	z := w.state
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// size maps the high half of r to one of the page sizes, uniformly.
func (w *workload) size(r uint64) int64 {
	return minPageBytes << ((r >> 32) * pageSizes >> 32)
}

// slot maps the low half of r to [0, n) (Lemire's multiply-shift).
func (w *workload) slot(r uint64, n int) int {
	return int(uint64(uint32(r)) * uint64(n) >> 32)
}

// iterationBenchtime reports whether -test.benchtime is an iteration count
// ("1x"), as in CI's smoke run, where a long fill buys nothing.
func iterationBenchtime() bool {
	f := flag.Lookup("test.benchtime")
	return f != nil && strings.HasSuffix(f.Value.String(), "x")
}
