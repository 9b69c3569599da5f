package pagealloc

import (
	"sync"
	"testing"
)

// Every contender holds benchPoolCount buffers of 4096 bytes, more than the
// parallel goroutines ever hold at once, so no Get waits.
const (
	benchPoolCount     = 64
	benchPoolSizeBytes = 4096
)

type benchBuffer = [benchPoolSizeBytes]byte

// BenchmarkPool compares one Get and one Put of a 4096-byte buffer on Pool
// with the usual Go ways of recycling buffers: sync.Pool (per-P caches, the
// bar for scaling), a buffered channel, and a slice behind a mutex. Each
// loop body calls its pool directly, so no contender pays for an interface
// or closure call the others do not, and none touches the bytes.
func BenchmarkPool(b *testing.B) {
	b.Run("pagealloc", func(b *testing.B) {
		p, err := NewPool(benchPoolCount, benchPoolSizeBytes)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		b.Run("serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf, ok := p.TryGet()
				if !ok {
					b.Fatal("pool empty")
				}
				if err := p.Put(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					buf, ok := p.TryGet()
					if !ok {
						panic("pool empty")
					}
					if err := p.Put(buf); err != nil {
						panic(err)
					}
				}
			})
		})
	})

	b.Run("syncpool", func(b *testing.B) {
		p := &sync.Pool{New: func() any { return new(benchBuffer) }}
		b.Run("serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Put(p.Get().(*benchBuffer))
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p.Put(p.Get().(*benchBuffer))
				}
			})
		})
	})

	b.Run("chan", func(b *testing.B) {
		free := make(chan *benchBuffer, benchPoolCount)
		for range benchPoolCount {
			free <- new(benchBuffer)
		}
		b.Run("serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				free <- <-free
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					free <- <-free
				}
			})
		})
	})

	b.Run("mutex", func(b *testing.B) {
		p := &mutexBenchPool{}
		for range benchPoolCount {
			p.free = append(p.free, new(benchBuffer))
		}
		b.Run("serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.put(p.get())
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p.put(p.get())
				}
			})
		})
	})
}

// mutexBenchPool is the simplest correct bounded pool: a stack of buffers
// behind one lock.
type mutexBenchPool struct {
	mu   sync.Mutex
	free []*benchBuffer
}

func (p *mutexBenchPool) get() *benchBuffer {
	p.mu.Lock()
	defer p.mu.Unlock()
	buf := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return buf
}

func (p *mutexBenchPool) put(buf *benchBuffer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free = append(p.free, buf)
}
