package pagealloc

import (
	"fmt"
	"path/filepath"
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
