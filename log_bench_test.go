package pagealloc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// benchLogRingBytes is the ring of the log benchmarks, and the span the raw
// write benchmark cycles over, so that both overwrite the same amount of
// file in place once warm.
const benchLogRingBytes = 64 << 20

var benchLogSizes = []struct {
	name  string
	bytes int
}{{"4KiB", 4 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}}

// deadOwner calls every entry dead: GC only moves the head.
type deadOwner struct{}

func (deadOwner) IsLive(int64, []byte) bool { return false }

// createBenchLog creates a device on a real file with one log of
// benchLogRingBytes, without fsync.
func createBenchLog(b *testing.B) (*Device, *Log) {
	b.Helper()
	d, err := Create(filepath.Join(b.TempDir(), "device"), &Options{
		NoSync:      true,
		MaxPageSize: 1 << 20,
		LogRegions:  []LogRegion{{"log", benchLogRingBytes}},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	l, err := d.Log("log")
	if err != nil {
		b.Fatal(err)
	}
	return d, l
}

// appendOne appends, writes and commits p, running GC itself when the ring
// is full (background GC normally keeps ahead). It writes with Log.Write,
// or with Device.WriteAt when writeAt is set.
func appendOne(l *Log, p []byte, writeAt bool) error {
	r, err := l.Append(len(p))
	for errors.Is(err, ErrNoSpace) {
		if err := l.GC(context.Background()); err != nil {
			return err
		}
		r, err = l.Append(len(p))
	}
	if err != nil {
		return err
	}
	if writeAt {
		_, err = l.d.WriteAt(p, r.Offset())
	} else {
		err = l.Write(r, p)
	}
	if err != nil {
		return err
	}
	return l.Commit(r)
}

// BenchmarkLogAppend measures Append, Log.Write and Commit of entries from
// 4 goroutines per P at once (RunParallel with SetParallelism(4)), without
// fsync, with background GC reclaiming dead entries. Compare with
// BenchmarkRawWrite of the same size.
func BenchmarkLogAppend(b *testing.B) { benchmarkLogAppend(b, false) }

// BenchmarkLogAppendWriteAt is BenchmarkLogAppend writing the payload with
// Device.WriteAt, so that Commit writes the header and reads the payload
// back for its checksum.
func BenchmarkLogAppendWriteAt(b *testing.B) { benchmarkLogAppend(b, true) }

func benchmarkLogAppend(b *testing.B, writeAt bool) {
	for _, size := range benchLogSizes {
		b.Run("size="+size.name, func(b *testing.B) {
			_, l := createBenchLog(b)
			if err := l.SetOwner(deadOwner{}, nil); err != nil {
				b.Fatal(err)
			}
			p := make([]byte, size.bytes)
			for i := range p {
				p[i] = byte(i)
			}
			// One lap first, so that both benchmarks overwrite blocks the
			// file already has.
			for range benchLogRingBytes / size.bytes {
				if err := appendOne(l, p, writeAt); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(size.bytes))
			b.SetParallelism(4)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := appendOne(l, p, writeAt); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkRawWrite is the yardstick for BenchmarkLogAppend: plain
// sequential pwrite of the same sizes to a file, cycling over as many bytes
// as the log's ring, from one goroutine.
func BenchmarkRawWrite(b *testing.B) {
	for _, size := range benchLogSizes {
		b.Run("size="+size.name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			p := make([]byte, size.bytes)
			for i := range p {
				p[i] = byte(i)
			}
			off := int64(0)
			write := func() {
				if _, err := f.WriteAt(p, off); err != nil {
					b.Fatal(err)
				}
				if off += int64(size.bytes); off+int64(size.bytes) > benchLogRingBytes {
					off = 0
				}
			}
			for range benchLogRingBytes / size.bytes {
				write()
			}
			b.SetBytes(int64(size.bytes))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				write()
			}
		})
	}
}

// relocateAll keeps every live-th entry and relocates it.
type relocateAll struct {
	live      int
	seen      atomic.Int64
	relocated atomic.Int64
}

func (r *relocateAll) IsLive(int64, []byte) bool {
	return r.live > 0 && r.seen.Add(1)%int64(r.live) == 0
}

func (r *relocateAll) Relocate(*Txn, int64, int64, []byte) error {
	r.relocated.Add(1)
	return nil
}

// BenchmarkLogGC measures a full GC pass over a ring filled with 4 KiB
// entries, all dead or one in ten live and relocated, and reports the
// bytes the head reclaims per second.
func BenchmarkLogGC(b *testing.B) {
	for _, c := range []struct {
		name string
		live int // one in live entries is live; 0: none
	}{{"live=0%", 0}, {"live=10%", 10}} {
		b.Run(c.name, func(b *testing.B) {
			_, l := createBenchLog(b)
			owner := &relocateAll{live: c.live}
			if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1, RelocationReserveBytes: -1}); err != nil {
				b.Fatal(err)
			}
			p := make([]byte, 4<<10)
			var reclaimed int64
			var elapsed time.Duration
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				for {
					r, err := l.Append(len(p))
					if errors.Is(err, ErrNoSpace) {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					l.d.WriteAt(p, r.Offset())
					if err := l.Commit(r); err != nil {
						b.Fatal(err)
					}
				}
				before := l.Stats().ReclaimedBytes
				b.StartTimer()
				start := time.Now()
				if err := l.GC(context.Background()); err != nil {
					b.Fatal(err)
				}
				elapsed += time.Since(start)
				reclaimed += l.Stats().ReclaimedBytes - before
			}
			b.ReportMetric(float64(reclaimed)/elapsed.Seconds(), "reclaimed-B/s")
			b.ReportMetric(float64(owner.relocated.Load())/float64(b.N), "relocations/op")
			if reclaimed == 0 {
				b.Fatal(fmt.Sprintf("nothing reclaimed: %+v", l.Stats()))
			}
		})
	}
}
