package pagealloc

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/storage"
)

// countingFile is the real file with its syncs counted.
type countingFile struct {
	*storage.File
	syncs atomic.Int64
}

func (c *countingFile) Sync() error {
	c.syncs.Add(1)
	return c.File.Sync()
}

// createCounted creates a device on a real file in a temporary directory
// and returns the sync counter under it.
func createCounted(tb testing.TB, opts *Options) (*Device, *countingFile) {
	tb.Helper()
	o, err := opts.withDefaults()
	if err != nil {
		tb.Fatal(err)
	}
	f, err := storage.CreateFile(filepath.Join(tb.TempDir(), "device"))
	if err != nil {
		tb.Fatal(err)
	}
	cf := &countingFile{File: f}
	d, err := createOn(cf, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	return d, cf
}

// BenchmarkCommit measures transactions of one small journaled write,
// committed from 1, 8 and 64 goroutines at once, with real fsync and
// without. It reports commits/s and how many fsyncs each commit cost: group
// commit shows as commits/s growing with committers while fsyncs/commit
// falls.
func BenchmarkCommit(b *testing.B) {
	for _, mode := range []struct {
		name   string
		noSync bool
	}{{"sync", false}, {"nosync", true}} {
		for _, committers := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%s/committers=%d", mode.name, committers), func(b *testing.B) {
				d, f := createCounted(b, &Options{NoSync: mode.noSync, RootSize: 64 << 10})
				rootOff, rootSize := d.Root()
				payload := make([]byte, 64)
				var next atomic.Int64
				syncsBefore := f.syncs.Load()
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for c := 0; c < committers; c++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1) - 1
							if i >= int64(b.N) {
								return
							}
							off := rootOff + (i*64)%rootSize
							if err := d.Update(func(tx *Txn) error { return tx.Write(off, payload) }); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
				b.ReportMetric(float64(f.syncs.Load()-syncsBefore)/float64(b.N), "fsyncs/commit")
			})
		}
	}
}

// BenchmarkCreate measures creating a device whose reserved size is 1 TiB:
// only the headers are written, so it costs the same as a small one.
func BenchmarkCreate(b *testing.B) {
	if defaultMaxSize < 1<<40 {
		b.Skip("1 TiB of address space needs a 64-bit platform")
	}
	b.Run("size=1TiB", func(b *testing.B) {
		dir := b.TempDir()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			path := filepath.Join(dir, fmt.Sprint(i))
			d, err := Create(path, &Options{MaxSize: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			if err := d.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// allocFreeOptions shape the allocator benchmarks like the peer comparison:
// pages of 4 KiB to 64 KiB, no fsync.
func allocFreeOptions() *Options {
	return &Options{NoSync: true, MaxPageSize: 64 << 10}
}

// randomPageSize returns a random power of two from 4 KiB to 64 KiB.
func randomPageSize(rng *rand.Rand) int64 { return 4096 << rng.IntN(5) }

// BenchmarkAllocFree measures a device holding `live` pages, from the
// moment it has allocated them: each op frees a random live page and
// allocates one of a random size, committing every 1,000 ops. heap-bytes
// is the Go heap the device holds beyond the benchmark's own list of
// pages, after the run. BenchmarkAllocFreeSteady runs the same workload
// once the heap has stopped growing.
func BenchmarkAllocFree(b *testing.B) {
	for _, live := range []int{1e3, 1e5, 1e6} {
		b.Run(fmt.Sprintf("live=%.0e", float64(live)), func(b *testing.B) {
			benchAllocFree(b, live, allocFreeOptions(), false)
		})
	}
}

// BenchmarkAllocFreePreallocated is BenchmarkAllocFree's largest case with
// Options.Preallocate: the filesystem's blocks are reserved as the file
// grows, not found the first time a page header is written.
func BenchmarkAllocFreePreallocated(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("Preallocate is supported on Linux only")
	}
	o := allocFreeOptions()
	o.Preallocate = true
	b.Run("live=1e+06", func(b *testing.B) { benchAllocFree(b, 1e6, o, false) })
}

// BenchmarkAllocFreeSteady is BenchmarkAllocFree once the device has
// settled. BenchmarkAllocFree times the operations that follow the fill
// at once: the heap still grows to the size its fragmentation and the
// frees awaiting a checkpoint ask for, and the first free of a page the
// fill allocated is the first write to it, so the page faults of a sparse
// file's first touches weigh on it. Here the owner writes each page the
// fill allocates, as a storage engine writes its data, and the workload
// runs untimed, in rounds of max(live, 100,000) operations, until a round
// leaves the heap's frontier where it found it (warm-ops reports how many
// that took). At live=1e6 the set-up alone takes minutes.
func BenchmarkAllocFreeSteady(b *testing.B) {
	for _, live := range []int{1e3, 1e5, 1e6} {
		b.Run(fmt.Sprintf("live=%.0e", float64(live)), func(b *testing.B) {
			benchAllocFree(b, live, allocFreeOptions(), true)
		})
	}
}

// benchAllocFree runs BenchmarkAllocFree's workload on a device of live
// pages made with o; steady as BenchmarkAllocFreeSteady describes.
func benchAllocFree(b *testing.B, live int, o *Options, steady bool) {
	rng := rand.New(rand.NewPCG(1, 2))
	pages := make([]Addr, live)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	d, _ := createCounted(b, o)
	fill(b, d, pages, rng)
	op := func(tx *Txn) error {
		j := rng.IntN(live)
		if err := tx.Free(pages[j]); err != nil {
			return err
		}
		a, err := tx.Alloc(randomPageSize(rng))
		pages[j] = a
		return err
	}
	warmOps := 0
	if steady {
		data := bytes.Repeat([]byte{0xa5}, 64)
		for _, a := range pages {
			if _, err := d.WriteAt(data, a.Offset()); err != nil {
				b.Fatal(err)
			}
		}
		round := max(live, 100_000)
		for frontier := int64(-1); frontier != d.Stats().Frontier; warmOps += round {
			frontier = d.Stats().Frontier
			inBatches(b, d, round, op)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	inBatches(b, d, b.N, op)
	b.StopTimer()
	if steady {
		b.ReportMetric(float64(warmOps), "warm-ops")
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)), "heap-bytes")
	runtime.KeepAlive(pages)
}

// inBatches runs op n times, committing every 1,000 operations.
func inBatches(b *testing.B, d *Device, n int, op func(tx *Txn) error) {
	b.Helper()
	tx, err := d.Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if i%1000 == 999 {
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
			if tx, err = d.Begin(); err != nil {
				b.Fatal(err)
			}
		}
		if err := op(tx); err != nil {
			tx.Rollback()
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// fill allocates len(pages) pages of random sizes, 1,000 per transaction.
func fill(b *testing.B, d *Device, pages []Addr, rng *rand.Rand) {
	b.Helper()
	for i := 0; i < len(pages); i += 1000 {
		err := d.Update(func(tx *Txn) error {
			for j := i; j < min(i+1000, len(pages)); j++ {
				a, err := tx.Alloc(randomPageSize(rng))
				if err != nil {
					return err
				}
				pages[j] = a
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllocFill measures filling a device with 100,000 pages of random
// sizes and freeing them all again; ns/page is per page allocated and freed.
func BenchmarkAllocFill(b *testing.B) {
	d, _ := createCounted(b, allocFreeOptions())
	rng := rand.New(rand.NewPCG(1, 2))
	pages := make([]Addr, 100_000)
	b.ReportAllocs()
	for b.Loop() {
		fill(b, d, pages, rng)
		for i := 0; i < len(pages); i += 1000 {
			freePages(b, d, pages[i:min(i+1000, len(pages))])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(pages)), "ns/page")
}

// BenchmarkCommitCost measures one transaction of an alloc, a free and a
// commit on a device holding 1e3 or 1e6 free pages: the cost must not grow
// with free space.
func BenchmarkCommitCost(b *testing.B) {
	for _, free := range []int{1e3, 1e6} {
		b.Run(fmt.Sprintf("free=%.0e", float64(free)), func(b *testing.B) {
			d, _ := createCounted(b, allocFreeOptions())
			// Allocate 2×free min pages and free every other one: free
			// pages whose buddies stay allocated cannot merge away.
			pages := make([]Addr, 2*free)
			for i := 0; i < len(pages); i += 1000 {
				if err := d.Update(func(tx *Txn) (err error) {
					for j := i; j < min(i+1000, len(pages)); j++ {
						if pages[j], err = tx.Alloc(4096); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; i < len(pages); i += 2000 {
				if err := d.Update(func(tx *Txn) error {
					for j := i; j < min(i+2000, len(pages)); j += 2 {
						if err := tx.Free(pages[j]); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			coverCommitted(b, d)
			releaseCovered(b, d)
			// The set-up dirtied a page of the page cache per page it
			// made: write them out now, or the kernel does it while
			// the loop is timed.
			if err := d.store.Sync(); err != nil {
				b.Fatal(err)
			}
			if st := d.Stats(); st.PendingPages != 0 || st.FreePages[0] < int64(free) {
				b.Fatalf("after the set-up: %d pending pages and %d free min pages, want 0 and at least %d", st.PendingPages, st.FreePages[0], free)
			}
			prev := pages[1]
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := d.Update(func(tx *Txn) error {
					a, err := tx.Alloc(4096)
					if err != nil {
						return err
					}
					err = tx.Free(prev)
					prev = a
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// Frees wait in the pending queue until a checkpoint covers
			// them: at the end, a run's last few hundred may still be
			// there rather than on the free list.
			if s := d.Stats(); s.FreePages[0]+s.PendingPages < int64(free)/2 {
				b.Fatalf("only %d free and %d pending pages at the end", s.FreePages[0], s.PendingPages)
			}
		})
	}
}

// BenchmarkCheck measures Check on a heap of 1,024 max pages of 16 MiB
// (16 GiB, sparse), all free, with 4 KiB min pages: the walk looks at
// every page and at the state bits of everything inside it.
func BenchmarkCheck(b *testing.B) {
	d, _ := createCounted(b, &Options{NoSync: true, MaxSize: 32 << 30})
	freePages(b, d, allocPages(b, d, 1024, 16<<20))
	coverCommitted(b, d)
	releaseCovered(b, d)
	if st := d.Stats(); st.FreePages[len(st.FreePages)-1] < 1024 {
		b.Fatalf("%d free max pages, want 1024", st.FreePages[len(st.FreePages)-1])
	}
	for b.Loop() {
		if err := d.Check(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteAt writes 64 bytes in place into a random one of 1,000
// committed 4 KiB pages: the cost of WriteAt's ownership check beside a
// small copy into the mapping (NoSync, no Sync between writes).
func BenchmarkWriteAt(b *testing.B) {
	o := testOptions()
	o.NoSync = true
	d, _ := createTestDevice(b, o)
	pages := allocPages(b, d, 1000, 4096)
	data := make([]byte, 64)
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for range b.N {
		p := pages[rng.IntN(len(pages))]
		if _, err := d.WriteAt(data, p.Offset()+int64(rng.IntN(64))*64); err != nil {
			b.Fatal(err)
		}
	}
}
