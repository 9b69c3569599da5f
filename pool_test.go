package pagealloc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/pagealloc/pagealloc/internal/storage"
)

var (
	poolSeed      = flag.Uint64("pool.seed", 0, "seed for the pool's random tests; 0 picks one from the clock")
	poolStressOps = flag.Int("pool.stressops", 0, "Gets (and Puts) per goroutine in TestPoolStress; 0 means 1,000,000, or 250,000 under -race")
)

// poolTestSeed returns the seed for a random test and logs it, so a failure
// can be replayed with -pool.seed.
func poolTestSeed(t testing.TB) uint64 {
	t.Helper()
	return testSeed(t, "pool.seed", *poolSeed)
}

// raceEnabled reports whether the test binary was built with -race, which
// makes every atomic operation many times slower. The build settings say
// so without a pair of build-tagged files.
func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func newTestPool(t testing.TB, count int) *Pool {
	t.Helper()
	p, err := NewPool(count, poolAlignBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Tests that close the pool themselves get ErrClosed here.
		if err := p.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("cleanup Close: %v", err)
		}
	})
	return p
}

// checkPool verifies the structure behind a quiescent pool: the depot is a
// well-formed list of queued slots, and every free slot can be found,
// either on the depot or in a cell of its home shard.
func checkPool(t testing.TB, p *Pool) {
	t.Helper()
	onDepot := make([]bool, len(p.buffers))
	steps := 0
	for _, i := unpackHead(p.head.Load()); i != noSlot; i = p.buffers[i].next.Load() {
		if int(i) >= len(p.buffers) {
			t.Fatalf("depot links to slot %d of %d", i, len(p.buffers))
		}
		if onDepot[i] {
			t.Fatalf("depot holds slot %d twice", i)
		}
		if p.buffers[i].queued.Load() != 1 {
			t.Fatalf("slot %d is on the depot but not marked queued", i)
		}
		onDepot[i] = true
		steps++
	}
	for i := range p.buffers {
		b := &p.buffers[i]
		if b.queued.Load() == 1 && !onDepot[i] {
			t.Fatalf("slot %d is marked queued but not on the depot", i)
		}
		if b.state.Load() != slotFree || onDepot[i] {
			continue
		}
		home := b.home.Load()
		if home == noShard {
			t.Fatalf("free slot %d has no home and is not on the depot", i)
		}
		named := false
		for c := range p.shards[home].cells {
			if p.shards[home].cells[c].Load() == uint32(i) {
				named = true
			}
		}
		if !named {
			t.Fatalf("free slot %d has home %d, which does not name it", i, home)
		}
	}
}

// drainPool takes every buffer with TryGet, checks that there are exactly
// count distinct ones, and returns them.
func drainPool(t testing.TB, p *Pool) {
	t.Helper()
	var held []*Buffer
	seen := make(map[int]bool)
	for {
		b, ok := p.TryGet()
		if !ok {
			break
		}
		if seen[b.Index()] {
			t.Fatalf("TryGet handed out slot %d twice", b.Index())
		}
		seen[b.Index()] = true
		held = append(held, b)
	}
	if len(held) != len(p.buffers) {
		t.Fatalf("drained %d buffers from a pool of %d", len(held), len(p.buffers))
	}
	for _, b := range held {
		if err := p.Put(b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPoolNewPoolArguments(t *testing.T) {
	for _, tc := range []struct {
		count, sizeBytes int
	}{
		{0, 4096},
		{-1, 4096},
		{1, 0},
		{1, -4096},
		{1, 512},
		{1, 4097},
		{1, 6144},
		{math.MaxInt / 4096, 8192},
	} {
		p, err := NewPool(tc.count, tc.sizeBytes)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("NewPool(%d, %d) = %v, %v; want ErrInvalidArgument", tc.count, tc.sizeBytes, p, err)
		}
	}
}

// TestPoolNewPoolOverflow asks for a pool whose count and buffer size are
// each valid but whose slab is more bytes than an int counts: refused
// with ErrInvalidArgument saying so, before any mapping is tried.
func TestPoolNewPoolOverflow(t *testing.T) {
	const sizeBytes = math.MaxInt/2 + 1 // 2^62, or 2^30 on 32 bits: a multiple of 4096
	for _, count := range []int{2, 3, 1 << 20} {
		p, err := NewPool(count, sizeBytes)
		want := fmt.Sprintf("pool of %d buffers of %d bytes overflows", count, sizeBytes)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("NewPool(%d, %d) = %v, %v; want ErrInvalidArgument saying %q", count, sizeBytes, p, err, want)
		}
	}
}

func TestPoolAlignmentAndIndex(t *testing.T) {
	const count, sizeBytes = 37, 3 * 4096
	p, err := NewPool(count, sizeBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	addrOf := make(map[int]uintptr)
	held := make([]*Buffer, 0, count)
	for range count {
		b, ok := p.TryGet()
		if !ok {
			t.Fatalf("TryGet failed after %d of %d", len(held), count)
		}
		buf := b.Bytes()
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
		if addr%4096 != 0 {
			t.Errorf("slot %d at %#x is not 4096-aligned", b.Index(), addr)
		}
		if len(buf) != sizeBytes || cap(buf) != sizeBytes {
			t.Errorf("slot %d: len %d cap %d, want %d", b.Index(), len(buf), cap(buf), sizeBytes)
		}
		if b.Index() < 0 || b.Index() >= count {
			t.Fatalf("index %d out of [0, %d)", b.Index(), count)
		}
		if _, dup := addrOf[b.Index()]; dup {
			t.Fatalf("index %d handed out twice", b.Index())
		}
		addrOf[b.Index()] = addr
		// Writing the whole buffer proves it is mapped and ours.
		for j := range buf {
			buf[j] = byte(b.Index())
		}
		held = append(held, b)
	}
	// Buffers sit in slot order with no overlap.
	for i, addr := range addrOf {
		if want := addrOf[0] + uintptr(i*sizeBytes); addr != want {
			t.Errorf("slot %d at %#x, want %#x", i, addr, want)
		}
	}
	for _, b := range held {
		for j, v := range b.Bytes() {
			if v != byte(b.Index()) {
				t.Fatalf("slot %d byte %d = %d: another buffer overlaps it", b.Index(), j, v)
			}
		}
		if err := p.Put(b); err != nil {
			t.Fatal(err)
		}
	}
	// The same slot comes back with the same index and address, however
	// many times it goes round.
	for range 1000 {
		b, ok := p.TryGet()
		if !ok {
			t.Fatal("TryGet failed on a full pool")
		}
		if got := uintptr(unsafe.Pointer(unsafe.SliceData(b.Bytes()))); got != addrOf[b.Index()] {
			t.Fatalf("slot %d moved from %#x to %#x", b.Index(), addrOf[b.Index()], got)
		}
		if b.Bytes()[0] != byte(b.Index()) {
			t.Fatalf("slot %d lost its contents", b.Index())
		}
		if err := p.Put(b); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPoolTryGetFreshPool takes a buffer from a fresh pool, whose shards
// name no slot yet (every cell holds noSlot, 2^32-1). Read as an int on a
// 32-bit platform the cell is -1, which passed for a slot index: TryGet
// panicked there with an index out of range, and so did a device's first
// commit, which stages its record in a pool buffer
// (GOARCH=386 go test -run TestPoolTryGetFreshPool).
func TestPoolTryGetFreshPool(t *testing.T) {
	p := newTestPool(t, 2)
	b, ok := p.TryGet()
	if !ok {
		t.Fatal("TryGet on a fresh pool of 2 found no buffer")
	}
	if i := b.Index(); i < 0 || i >= 2 {
		t.Fatalf("TryGet returned slot %d of 2", i)
	}
	if err := p.Put(b); err != nil {
		t.Fatal(err)
	}
}

func TestPoolDoublePut(t *testing.T) {
	p := newTestPool(t, 4)
	b, _ := p.TryGet()
	if err := p.Put(b); err != nil {
		t.Fatal(err)
	}
	if err := p.Put(b); !errors.Is(err, ErrDoublePut) {
		t.Fatalf("second Put = %v, want ErrDoublePut", err)
	}
	// Put of a buffer that was never taken is the same mistake.
	other := &p.buffers[3]
	if err := p.Put(other); !errors.Is(err, ErrDoublePut) {
		t.Fatalf("Put of a free buffer = %v, want ErrDoublePut", err)
	}
	checkPool(t, p)
	drainPool(t, p)
	if s := p.Stats(); s.InUse != 0 || s.Free != 4 {
		t.Fatalf("stats after double puts: %+v", s)
	}
}

// Two goroutines returning one buffer at the same moment: exactly one
// return counts and the slot is never queued twice.
func TestPoolConcurrentDoublePut(t *testing.T) {
	p := newTestPool(t, 8)
	const rounds, putters = 2000, 4
	for range rounds {
		b, ok := p.TryGet()
		if !ok {
			t.Fatal("pool empty")
		}
		var accepted, rejected atomic.Int32
		var start, done sync.WaitGroup
		start.Add(1)
		for range putters {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				switch err := p.Put(b); {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, ErrDoublePut):
					rejected.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		start.Done()
		done.Wait()
		if accepted.Load() != 1 || rejected.Load() != putters-1 {
			t.Fatalf("%d Puts accepted, %d rejected; want 1 and %d", accepted.Load(), rejected.Load(), putters-1)
		}
	}
	checkPool(t, p)
	drainPool(t, p)
}

func TestPoolForeignBuffer(t *testing.T) {
	p := newTestPool(t, 2)
	q := newTestPool(t, 2)
	b, _ := q.TryGet()
	if err := p.Put(b); !errors.Is(err, ErrForeignBuffer) {
		t.Fatalf("Put of another pool's buffer = %v, want ErrForeignBuffer", err)
	}
	if err := p.Put(nil); !errors.Is(err, ErrForeignBuffer) {
		t.Fatalf("Put(nil) = %v, want ErrForeignBuffer", err)
	}
	if err := p.Put(&Buffer{}); !errors.Is(err, ErrForeignBuffer) {
		t.Fatalf("Put of a zero Buffer = %v, want ErrForeignBuffer", err)
	}
	// Neither pool noticed: q still counts b as held, p is still full.
	if s := q.Stats(); s.InUse != 1 {
		t.Fatalf("owner pool stats %+v, want 1 in use", s)
	}
	if err := q.Put(b); err != nil {
		t.Fatalf("Put to the owner: %v", err)
	}
	drainPool(t, p)
	drainPool(t, q)
}

// TestPoolCopiedBufferRefused puts a copy of a Buffer the pool handed out:
// the copy is not the pool's buffer, so Put refuses it with
// ErrForeignBuffer and changes nothing, whether the buffer it copies is
// held or already back.
func TestPoolCopiedBufferRefused(t *testing.T) {
	p := newTestPool(t, 2)
	b, ok := p.TryGet()
	if !ok {
		t.Fatal("TryGet on a fresh pool found nothing")
	}
	// Copied through reflection, as a plain assignment of a Buffer is
	// what vet reports.
	forged := new(Buffer)
	reflect.ValueOf(forged).Elem().Set(reflect.ValueOf(b).Elem())
	if err := p.Put(forged); !errors.Is(err, ErrForeignBuffer) {
		t.Errorf("Put of a copy of a held buffer = %v, want ErrForeignBuffer", err)
	}
	if s := p.Stats(); s.InUse != 1 {
		t.Fatalf("after Put of the copy: stats %+v, want 1 in use", s)
	}
	if err := p.Put(b); err != nil {
		t.Fatalf("Put of the buffer itself: %v", err)
	}
	// The copy still says held: a second return of the buffer through it
	// is not the pool's to accept.
	if err := p.Put(forged); !errors.Is(err, ErrForeignBuffer) {
		t.Errorf("Put of a copy of a returned buffer = %v, want ErrForeignBuffer", err)
	}
	if s := p.Stats(); s.InUse != 0 {
		t.Fatalf("after both Puts: stats %+v, want none in use", s)
	}
	checkPool(t, p)
	drainPool(t, p)
}

func TestPoolGetBlocksUntilPut(t *testing.T) {
	p := newTestPool(t, 2)
	a, _ := p.TryGet()
	b, _ := p.TryGet()
	if _, ok := p.TryGet(); ok {
		t.Fatal("TryGet succeeded on an empty pool")
	}
	got := make(chan *Buffer)
	go func() {
		buf, err := p.Get(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- buf
	}()
	waitFor(t, "Get to park", func() bool { return p.Stats().Waiting == 1 })
	select {
	case buf := <-got:
		t.Fatalf("Get returned slot %d from an empty pool", buf.Index())
	case <-time.After(20 * time.Millisecond):
	}
	if err := p.Put(b); err != nil {
		t.Fatal(err)
	}
	select {
	case buf := <-got:
		if buf != b {
			t.Fatalf("woken Get got slot %d, want the returned slot %d", buf.Index(), b.Index())
		}
		if err := p.Put(buf); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Get was not woken by Put")
	}
	if err := p.Put(a); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Waiting != 0 || s.InUse != 0 {
		t.Fatalf("stats after wake-up: %+v", s)
	}
}

func TestPoolGetCancelled(t *testing.T) {
	p := newTestPool(t, 1)
	a, _ := p.TryGet()

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		buf, err := p.Get(ctx)
		if buf != nil {
			t.Errorf("cancelled Get returned slot %d", buf.Index())
		}
		errc <- err
	}()
	waitFor(t, "Get to park", func() bool { return p.Stats().Waiting == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Get = %v, want context.Canceled", err)
	}

	deadline, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if buf, err := p.Get(deadline); buf != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get past its deadline = %v, %v", buf, err)
	}

	// The abandoned waits hold nothing: the one slot still comes back.
	if s := p.Stats(); s.Waiting != 0 || s.InUse != 1 {
		t.Fatalf("stats after cancelled Gets: %+v", s)
	}
	if err := p.Put(a); err != nil {
		t.Fatal(err)
	}
	checkPool(t, p)
	drainPool(t, p)
}

// Many goroutines share two buffers through Get(ctx): every wait must end
// in a wake-up, or the test times out.
func TestPoolGetWaitersShareFewBuffers(t *testing.T) {
	p := newTestPool(t, 2)
	rounds := 200_000
	if raceEnabled() {
		rounds = 20_000
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var holders [2]atomic.Int32
	var parked atomic.Int64 // samples that saw a parked Get
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if p.status.Load()&^poolClosed != 0 {
				parked.Add(1)
			}
			runtime.Gosched()
		}
	}()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds / 8 {
				b, err := p.Get(ctx)
				if err != nil {
					t.Errorf("Get: %v (a wake-up was lost)", err)
					return
				}
				if holders[b.Index()].Add(1) != 1 {
					t.Errorf("slot %d held twice", b.Index())
				}
				runtime.Gosched() // let the others find the pool empty and park
				holders[b.Index()].Add(-1)
				if err := p.Put(b); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	t.Logf("%d samples saw Gets parked", parked.Load())
	if parked.Load() == 0 {
		t.Error("no Get ever parked; the test did not exercise wake-ups")
	}
	checkPool(t, p)
	drainPool(t, p)
}

func TestPoolCloseOutstanding(t *testing.T) {
	p, err := NewPool(5, 4096)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := p.TryGet()
	b, _ := p.TryGet()
	c, _ := p.TryGet()
	if err := p.Put(c); err != nil {
		t.Fatal(err)
	}

	err = p.Close()
	var out *OutstandingError
	if !errors.As(err, &out) || out.Count != 2 {
		t.Fatalf("Close = %v, want an OutstandingError for 2 buffers", err)
	}
	if !errors.Is(err, ErrBuffersOutstanding) {
		t.Fatalf("Close error %v does not match ErrBuffersOutstanding", err)
	}
	if s := p.Stats(); !s.Closed || s.InUse != 2 {
		t.Fatalf("stats after Close: %+v", s)
	}
	if _, err := p.Get(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close = %v, want ErrClosed", err)
	}
	if _, ok := p.TryGet(); ok {
		t.Fatal("TryGet succeeded after Close")
	}
	// Held buffers stay mapped until they come back.
	a.Bytes()[0], b.Bytes()[4095] = 1, 2
	if err := p.Put(a); err != nil {
		t.Fatal(err)
	}
	if p.slab == nil {
		t.Fatal("slab unmapped while a buffer was still out")
	}
	if err := p.Put(a); !errors.Is(err, ErrDoublePut) {
		t.Fatalf("double Put after Close = %v, want ErrDoublePut", err)
	}
	if err := p.Put(b); err != nil {
		t.Fatal(err)
	}
	if p.slab != nil || p.refs.Load() != 0 {
		t.Fatalf("slab still mapped (refs %d) after the last buffer came back", p.refs.Load())
	}
	if err := p.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
}

// TestPoolOutstandingErrorMessage closes a pool with buffers held: the
// error says how many, as its Count does.
func TestPoolOutstandingErrorMessage(t *testing.T) {
	p := newTestPool(t, 4)
	var held []*Buffer
	for range 3 {
		b, ok := p.TryGet()
		if !ok {
			t.Fatal("TryGet on a pool with free buffers failed")
		}
		held = append(held, b)
	}
	if err := p.Put(held[2]); err != nil {
		t.Fatal(err)
	}
	err := p.Close()
	var out *OutstandingError
	if !errors.As(err, &out) || out.Count != 2 || err.Error() != "pagealloc: pool closed with 2 buffers outstanding" {
		t.Errorf("Close with 2 buffers held: %v; want \"pagealloc: pool closed with 2 buffers outstanding\" from an OutstandingError counting 2", err)
	}
	for _, b := range held[:2] {
		if err := p.Put(b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPoolCloseIdle(t *testing.T) {
	p, err := NewPool(3, 4096)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.TryGet()
	if err := p.Put(b); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close with nothing out = %v", err)
	}
	if p.slab != nil {
		t.Fatal("Close with nothing out left the slab mapped")
	}
	if err := p.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
	if _, err := p.Get(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close = %v, want ErrClosed", err)
	}
	if _, ok := p.TryGet(); ok {
		t.Fatal("TryGet succeeded after Close")
	}
	if err := p.Put(b); !errors.Is(err, ErrDoublePut) {
		t.Fatalf("Put of a returned buffer after Close = %v, want ErrDoublePut", err)
	}
	if s := p.Stats(); !s.Closed || s.InUse != 0 || s.Free != 3 {
		t.Fatalf("stats after Close: %+v", s)
	}
}

func TestPoolCloseWakesWaiters(t *testing.T) {
	p, err := NewPool(1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.TryGet()
	const waiters = 3
	errc := make(chan error, waiters)
	for range waiters {
		go func() {
			_, err := p.Get(context.Background())
			errc <- err
		}()
	}
	waitFor(t, "Gets to park", func() bool { return p.Stats().Waiting == waiters })
	if err := p.Close(); !errors.Is(err, ErrBuffersOutstanding) {
		t.Fatalf("Close = %v, want outstanding", err)
	}
	for range waiters {
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Fatalf("parked Get after Close = %v, want ErrClosed", err)
		}
	}
	if err := p.Put(b); err != nil {
		t.Fatal(err)
	}
	if p.slab != nil {
		t.Fatal("slab still mapped")
	}
}

// Close racing with Gets and Puts: whatever interleaving, the slab is
// unmapped exactly when the last held buffer is back, never before.
func TestPoolCloseRacesGetPut(t *testing.T) {
	seed := poolTestSeed(t)
	rounds := 200
	if raceEnabled() {
		rounds = 40
	}
	for round := range rounds {
		p, err := NewPool(8, 4096)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var held [4][]*Buffer
		for g := range held {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(seed, uint64(round*len(held)+g)))
				for range 200 {
					if b, ok := p.TryGet(); ok {
						b.Bytes()[0] = byte(g) // must be mapped
						held[g] = append(held[g], b)
					}
					if n := len(held[g]); n > 0 && rng.IntN(2) == 0 {
						if err := p.Put(held[g][n-1]); err != nil {
							t.Error(err)
						}
						held[g] = held[g][:n-1]
					}
				}
			}()
		}
		err = p.Close()
		wg.Wait()
		var out *OutstandingError
		if err != nil && !errors.As(err, &out) {
			t.Fatalf("Close = %v", err)
		}
		total := 0
		for g := range held {
			total += len(held[g])
		}
		if total > 0 && p.slab == nil {
			t.Fatalf("round %d: slab unmapped with %d buffers still out", round, total)
		}
		for g := range held {
			for _, b := range held[g] {
				b.Bytes()[0] = 0xff
				if err := p.Put(b); err != nil {
					t.Fatal(err)
				}
			}
		}
		if p.slab != nil || p.refs.Load() != 0 {
			t.Fatalf("round %d: slab mapped (refs %d) after every buffer came back", round, p.refs.Load())
		}
	}
}

func TestPoolStats(t *testing.T) {
	p := newTestPool(t, 10)
	want := PoolStats{Count: 10, SizeBytes: 4096, Free: 10}
	if s := p.Stats(); s != want {
		t.Fatalf("fresh pool: %+v, want %+v", s, want)
	}
	var held []*Buffer
	for i := 1; i <= 10; i++ {
		b, _ := p.TryGet()
		held = append(held, b)
		if s := p.Stats(); s.InUse != i || s.Free != 10-i || s.InUse+s.Free != s.Count {
			t.Fatalf("after %d gets: %+v", i, s)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if b, err := p.Get(context.Background()); err == nil {
			_ = p.Put(b)
		}
	}()
	waitFor(t, "Get to park", func() bool { return p.Stats().Waiting == 1 })
	for i, b := range held {
		if err := p.Put(b); err != nil {
			t.Fatal(err)
		}
		if s := p.Stats(); s.InUse+s.Free != s.Count {
			t.Fatalf("after %d puts: %+v", i+1, s)
		}
	}
	<-done
	if s := p.Stats(); s.InUse != 0 || s.Free != 10 || s.Waiting != 0 || s.Closed {
		t.Fatalf("all back: %+v", s)
	}
}

// TestPoolModel runs a random single-goroutine history against a trivial
// model: a set of held slots. It covers the error paths and the slow
// paths (spilling past the shard cells, the depot) with exact answers.
func TestPoolModel(t *testing.T) {
	seed := poolTestSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	const count = 40 // more than shardCells, so holding many spills to the depot
	p := newTestPool(t, count)
	q := newTestPool(t, 1)
	foreign, _ := q.TryGet()
	held := make(map[int]*Buffer)
	var returned []*Buffer
	for step := range 20000 {
		switch op := rng.IntN(10); {
		case op < 4:
			b, ok := p.TryGet()
			if ok != (len(held) < count) {
				t.Fatalf("step %d: TryGet ok=%v with %d of %d held", step, ok, len(held), count)
			}
			if ok {
				if held[b.Index()] != nil {
					t.Fatalf("step %d: slot %d handed out while held", step, b.Index())
				}
				held[b.Index()] = b
			}
		case op < 8:
			for i, b := range held { // map order is random enough
				if err := p.Put(b); err != nil {
					t.Fatalf("step %d: Put(%d) = %v", step, i, err)
				}
				delete(held, i)
				returned = append(returned, b)
				break
			}
		case op == 8 && len(returned) > 0:
			b := returned[rng.IntN(len(returned))]
			if held[b.Index()] == nil {
				if err := p.Put(b); !errors.Is(err, ErrDoublePut) {
					t.Fatalf("step %d: Put of free slot %d = %v", step, b.Index(), err)
				}
			}
		case op == 9:
			if err := p.Put(foreign); !errors.Is(err, ErrForeignBuffer) {
				t.Fatalf("step %d: foreign Put = %v", step, err)
			}
		}
		if s := p.Stats(); s.InUse != len(held) || s.Free != count-len(held) {
			t.Fatalf("step %d: stats %+v with %d held", step, s, len(held))
		}
		if step%97 == 0 {
			checkPool(t, p)
		}
	}
	for _, b := range held {
		if err := p.Put(b); err != nil {
			t.Fatal(err)
		}
	}
	checkPool(t, p)
	drainPool(t, p)
	if err := q.Put(foreign); err != nil {
		t.Fatal(err)
	}
}

// TestPoolStress has goroutines take and return buffers at random, holding
// a random number at a time, more in total than the pool has. A per-slot
// owner word, set by CAS on Get and cleared by CAS on Put, catches any
// slot handed to two holders; the tag written into each buffer catches
// two holders sharing memory; the final drain catches any slot lost.
func TestPoolStress(t *testing.T) {
	seed := poolTestSeed(t)
	const goroutines, count, maxHold = 8, 48, 20 // maxHold > shardCells
	opsPerGoroutine := 1_000_000
	if raceEnabled() {
		// The race detector makes this ~50x slower; keep it under ~20 s.
		// -pool.stressops=1000000 runs the full count under -race.
		opsPerGoroutine = 250_000
	}
	if testing.Short() {
		opsPerGoroutine /= 10
	}
	if *poolStressOps > 0 {
		opsPerGoroutine = *poolStressOps
	}
	t.Logf("%d goroutines x %d gets and %d puts, %d buffers", goroutines, opsPerGoroutine, opsPerGoroutine, count)

	p := newTestPool(t, count)
	owner := make([]atomic.Int32, count)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var waited atomic.Int64
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := int32(g + 1)
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			held := make([]*Buffer, 0, maxHold)
			want := 1 + rng.IntN(maxHold)
			gets, puts := 0, 0
			for gets < opsPerGoroutine || len(held) > 0 {
				if len(held) < want && gets < opsPerGoroutine {
					var b *Buffer
					if len(held) == 0 {
						// Only a goroutine holding nothing may wait, so
						// the holders always make progress.
						var err error
						if b, err = p.Get(ctx); err != nil {
							t.Errorf("goroutine %d: Get: %v", id, err)
							return
						}
					} else if b, _ = p.TryGet(); b == nil {
						waited.Add(1)
						want = len(held) // pool is dry: start returning
						continue
					}
					gets++
					if !owner[b.Index()].CompareAndSwap(0, id) {
						t.Errorf("slot %d handed to goroutine %d while goroutine %d holds it", b.Index(), id, owner[b.Index()].Load())
						return
					}
					stamp(b, id, gets)
					held = append(held, b)
					continue
				}
				// Return a random held buffer.
				k := rng.IntN(len(held))
				b := held[k]
				held[k] = held[len(held)-1]
				held = held[:len(held)-1]
				if !checkStamp(b, id) {
					t.Errorf("slot %d: its bytes were changed by another holder", b.Index())
					return
				}
				if !owner[b.Index()].CompareAndSwap(id, 0) {
					t.Errorf("goroutine %d returns slot %d owned by %d", id, b.Index(), owner[b.Index()].Load())
					return
				}
				if err := p.Put(b); err != nil {
					t.Errorf("goroutine %d: Put: %v", id, err)
					return
				}
				puts++
				if len(held) == 0 || rng.IntN(4) == 0 {
					want = 1 + rng.IntN(maxHold)
				}
			}
			if gets != puts {
				t.Errorf("goroutine %d: %d gets, %d puts", id, gets, puts)
			}
		}()
	}
	wg.Wait()
	t.Logf("TryGet found the pool dry %d times", waited.Load())
	if t.Failed() {
		return
	}
	if s := p.Stats(); s.InUse != 0 || s.Free != count || s.Waiting != 0 {
		t.Fatalf("stats after stress: %+v", s)
	}
	checkPool(t, p)
	drainPool(t, p)
}

// TestPoolHandOff has producers take buffers and consumers on other
// goroutines return them, so slots are returned away from the shard that
// gave them out, and the shards of producers run dry and steal.
func TestPoolHandOff(t *testing.T) {
	seed := poolTestSeed(t)
	const producers, consumers, count = 4, 4, 16
	perProducer := 200_000
	if raceEnabled() {
		perProducer = 20_000
	}
	p := newTestPool(t, count)
	owner := make([]atomic.Int32, count)
	handoff := make(chan *Buffer, count)
	ctx := context.Background()
	var produced, consumed sync.WaitGroup
	for g := range producers {
		produced.Add(1)
		go func() {
			defer produced.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			for range perProducer {
				b, err := p.Get(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if !owner[b.Index()].CompareAndSwap(0, 1) {
					t.Errorf("slot %d handed out while in flight", b.Index())
					return
				}
				if rng.IntN(8) == 0 {
					runtime.Gosched()
				}
				handoff <- b
			}
		}()
	}
	for range consumers {
		consumed.Add(1)
		go func() {
			defer consumed.Done()
			for b := range handoff {
				if !owner[b.Index()].CompareAndSwap(1, 0) {
					t.Errorf("slot %d returned while not in flight", b.Index())
				}
				if err := p.Put(b); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	produced.Wait()
	close(handoff)
	consumed.Wait()
	if s := p.Stats(); s.InUse != 0 || s.Waiting != 0 {
		t.Fatalf("stats after hand-off: %+v", s)
	}
	checkPool(t, p)
	drainPool(t, p)
}

// stamp writes the holder and a sequence number at both ends of a buffer.
func stamp(b *Buffer, id int32, seq int) {
	buf := b.Bytes()
	v := uint64(id)<<32 | uint64(uint32(seq))
	*(*uint64)(unsafe.Pointer(&buf[0])) = v
	*(*uint64)(unsafe.Pointer(&buf[len(buf)-8])) = v
}

func checkStamp(b *Buffer, id int32) bool {
	buf := b.Bytes()
	head := *(*uint64)(unsafe.Pointer(&buf[0]))
	tail := *(*uint64)(unsafe.Pointer(&buf[len(buf)-8]))
	return head == tail && int32(head>>32) == id
}

// TestPoolDepotABA freezes a pop between its load of the depot head and its
// CAS, while the main goroutine pops the top two slots and pushes the first
// back. The head then names the same slot as when the pop froze, with a
// different link below it.
//
// With the tag, the frozen CAS fails and the retried pop is correct. With
// the tag held at zero (tagStep 0: a plain Treiber stack comparing only
// the index), the same schedule lets the stale CAS install a slot that
// main still holds, and the depot hands it out a second time.
func TestPoolDepotABA(t *testing.T) {
	for _, tagged := range []bool{true, false} {
		t.Run(fmt.Sprintf("tagged=%v", tagged), func(t *testing.T) {
			p := newTestPool(t, 4) // depot: 0 -> 1 -> 2 -> 3
			if !tagged {
				p.tagStep = 0
			}
			var hookCalls atomic.Int32
			frozen, release := make(chan struct{}), make(chan struct{})
			p.depotPopHook = func() {
				if hookCalls.Add(1) == 1 {
					close(frozen)
					<-release
				}
			}
			popped := make(chan uint32)
			go func() { popped <- p.depotPop() }()
			<-frozen
			seenByFrozen := p.head.Load()

			// While the pop is frozen: take 0 and 1, give 0 back.
			first, second := p.depotPop(), p.depotPop()
			if first != 0 || second != 1 {
				t.Fatalf("pops = %d, %d; want 0, 1", first, second)
			}
			p.buffers[second].queued.Store(0) // main holds slot 1
			p.depotPush(first)                // depot: 0 -> 2 -> 3
			now := p.head.Load()
			_, indexThen := unpackHead(seenByFrozen)
			_, indexNow := unpackHead(now)
			if indexThen != indexNow {
				t.Fatalf("head index %d then, %d now: the schedule did not set up ABA", indexThen, indexNow)
			}
			if tagged && seenByFrozen == now {
				t.Fatal("head word unchanged: the tag did not move")
			}

			close(release)
			got := <-popped
			calls := hookCalls.Load() // two for main's pops, the rest the frozen one's
			next := p.depotPop()
			t.Logf("frozen pop got %d after %d tries; next pop %d", got, calls-2, next)
			if tagged {
				// The frozen CAS failed, so the pop loaded the head again.
				if calls != 4 {
					t.Fatalf("frozen pop tried %d times, want 2 (its CAS must fail once)", calls-2)
				}
				if got != 0 || next != 2 {
					t.Fatalf("pops after thaw = %d, %d; want 0, 2", got, next)
				}
				return
			}
			// Untagged: the stale CAS succeeded on the first try and
			// made held slot 1 the top of the free list.
			if calls != 3 {
				t.Fatalf("frozen pop tried %d times, want 1", calls-2)
			}
			if next != second {
				t.Fatalf("next pop %d; the untagged stack should have handed out held slot %d again", next, second)
			}
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func ExamplePool() {
	p, err := NewPool(8, 4096)
	if err != nil {
		panic(err)
	}
	b, err := p.Get(context.Background())
	if err != nil {
		panic(err)
	}
	copy(b.Bytes(), "page image")
	fmt.Println(len(b.Bytes()), string(b.Bytes()[:10]))
	if err := p.Put(b); err != nil {
		panic(err)
	}
	fmt.Println(p.Put(b))
	fmt.Println(p.Close())
	// Output:
	// 4096 page image
	// pagealloc: buffer returned to the pool twice
	// <nil>
}

// TestDeviceStagingBuffers shows that a device assembles its journal
// records and its joined log frames in its staging pools: after a commit,
// the record buffer holds exactly the record the journal wrote, and a frame
// buffer holds exactly the frame Log.Write wrote. With every staging buffer
// held elsewhere, the same writes fall back to the heap, succeed, and leave
// the held buffers alone. After Close both pools are closed with every
// buffer back.
func TestDeviceStagingBuffers(t *testing.T) {
	// A store without a writable mapping, where Log.Write stages frames
	// (with one, it copies them straight into the mapping).
	o, err := (&Options{NoSync: true, MaxPageSize: 64 << 10, LogRegions: []LogRegion{{"log", 256 << 10}}}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	f, err := storage.CreateFile(filepath.Join(t.TempDir(), "device"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := createOn(unmappedStore{f}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	l := mustLog(t, d, "log")
	records, frames := d.staging.records, d.staging.frames
	if records == nil || frames == nil {
		t.Fatal("a writable device has no staging pools")
	}
	if s := records.Stats(); s.Count != 1 || int64(s.SizeBytes) < d.journal.maxRecord {
		t.Fatalf("record pool %+v, want one buffer of at least %d bytes", s, d.journal.maxRecord)
	}
	if s := frames.Stats(); s.Count != 2*runtime.GOMAXPROCS(0) || s.SizeBytes < logFrameHeaderBytes+logJoinedWriteMaxBytes {
		t.Fatalf("frame pool %+v", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A commit: the journal releases its buffer just after the commit
	// returns, so wait for it with Get.
	marker := []byte("record staged in the pool")
	writeRoot(t, d, 0, marker)
	rb, err := records.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := parseRecordHeader(rb.Bytes(), uint32(d.journal.maxRecord))
	if !ok {
		t.Fatal("the record buffer holds no record after a commit")
	}
	onDisk := make([]byte, h.length)
	d.journal.readRing(onDisk, h.pos)
	if rec := rb.Bytes()[:h.length]; !bytes.Equal(rec, onDisk) || !bytes.Contains(rec, marker) {
		t.Fatalf("record buffer (%d bytes) differs from the record at ring position %d, or lacks the write", h.length, h.pos)
	}

	// A staged log write. Whichever frame buffer it took is free again
	// once the Commit that wrote it returns; draining the pool finds it.
	payload := logContent(1, 3000)
	r, err := l.Append(len(payload))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(r, payload); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(r); err != nil {
		t.Fatal(err)
	}
	frameOnDisk := make([]byte, logFrameHeaderBytes+len(payload))
	if _, err := d.ReadAt(frameOnDisk, l.frameOff(uint64(r.Pos()))); err != nil {
		t.Fatal(err)
	}
	var held []*Buffer
	found := 0
	for {
		b, ok := frames.TryGet()
		if !ok {
			break
		}
		if bytes.Equal(b.Bytes()[:len(frameOnDisk)], frameOnDisk) {
			found++
		}
		held = append(held, b)
	}
	if len(held) != frames.Stats().Count || found != 1 {
		t.Fatalf("drained %d of %d frame buffers, %d holding the frame Write wrote; want all, and 1", len(held), frames.Stats().Count, found)
	}

	// Every staging buffer is now held here: the device falls back to the
	// heap and must not write into them.
	held = append(held, rb)
	for _, b := range held {
		for i := range b.Bytes() {
			b.Bytes()[i] = 0xa5
		}
	}
	marker = []byte("record staged on the heap")
	writeRoot(t, d, 64, marker)
	if got := readRoot(t, d, 64, len(marker)); !bytes.Equal(got, marker) {
		t.Fatalf("root reads %q after a heap-staged commit", got)
	}
	payload = logContent(2, 5000)
	if r, err = l.Append(len(payload)); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(r, payload); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(r); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Read(r.Offset()); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("heap-staged entry reads back %d bytes, %v", len(got), err)
	}
	for _, b := range held {
		for i, v := range b.Bytes() {
			if v != 0xa5 {
				t.Fatalf("slot %d byte %d changed while held by the test", b.Index(), i)
			}
		}
		if err := b.pool.Put(b); err != nil {
			t.Fatal(err)
		}
	}

	// Both entries read back in order, and Close finds every buffer
	// returned.
	if got := walkLog(t, l); len(got) != 2 || !isContent(got[0].Data, 1) || !isContent(got[1].Data, 2) {
		t.Fatalf("log holds %d entries after the two writes", len(got))
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Pool{records, frames} {
		if s := p.Stats(); !s.Closed || s.InUse != 0 || p.slab != nil {
			t.Fatalf("pool after device Close: %+v, slab mapped %v", s, p.slab != nil)
		}
	}
}

// TestDeviceStagingConcurrent runs three times as many log writers as the
// device has frame buffers, beside committers that keep the journal busy,
// so that staging buffers are taken, returned and found empty at once
// (run it with -race). Every entry and root write must read back, and
// Close must find every buffer returned.
func TestDeviceStagingConcurrent(t *testing.T) {
	seed := poolTestSeed(t)
	d, _ := createLogDevice(t, LogRegion{"log", 2 << 20})
	l := mustLog(t, d, "log")
	frames := d.staging.frames
	writers := 3 * frames.Stats().Count
	const each, committers, commits = 40, 2, 100
	offsets := make([][]int64, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := range each {
				p := logContent(uint64(w*each+i), 8+rng.IntN(2000))
				r, err := l.Append(len(p))
				if err == nil {
					err = l.Write(r, p)
				}
				if err == nil {
					err = l.Commit(r)
				}
				if err != nil {
					t.Errorf("writer %d entry %d: %v", w, i, err)
					return
				}
				offsets[w] = append(offsets[w], r.Offset())
			}
		}()
	}
	rootOff, _ := d.Root()
	for c := range committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range commits {
				var v [8]byte
				binary.LittleEndian.PutUint64(v[:], uint64(i))
				if err := d.Update(func(tx *Txn) error { return tx.Write(rootOff+int64(c*8), v[:]) }); err != nil {
					t.Errorf("committer %d: %v", c, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for w := range writers {
		for i, off := range offsets[w] {
			if p, err := l.Read(off); err != nil || !isContent(p, uint64(w*each+i)) {
				t.Fatalf("writer %d entry %d at %d does not read back: %v", w, i, off, err)
			}
		}
	}
	for c := range committers {
		if v := binary.LittleEndian.Uint64(readRoot(t, d, int64(c*8), 8)); v != commits-1 {
			t.Fatalf("committer %d's root word is %d, want %d", c, v, commits-1)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Pool{d.staging.records, frames} {
		if s := p.Stats(); !s.Closed || s.InUse != 0 || p.slab != nil {
			t.Fatalf("pool after device Close: %+v", s)
		}
	}
}

// unmappedStore is a file that offers its read-only mapping but no
// writable one.
type unmappedStore struct{ *storage.File }

func (u unmappedStore) MapWritable(int64) {} // hides File's: not a storage.MapWriter

// TestPoolRenamedSlotNotLost has a Get take a free slot from a shard cell
// and find the slot already named there, while a Put of another slot into
// the same shard, finding every other cell full of free slots, evicts the
// held slot's name and clears its home. The eviction comes between the
// Get's look at the cell and its store of the slot's home, so the Get's
// store would set home again for a slot no cell names; a Put that found
// that home returned the slot with its one Swap, where no Get could find
// it again.
func TestPoolRenamedSlotNotLost(t *testing.T) {
	const count = shardCells + 1
	p := newTestPool(t, count)
	var held []*Buffer
	for range count {
		b := p.takeQueued()
		if b == nil {
			t.Fatalf("depot ran dry after %d of %d slots", len(held), count)
		}
		held = append(held, b)
	}
	// Slots 0..15 free and named in cells 0..15 of shard 0, their home;
	// the last slot held and named nowhere.
	for i, b := range held[:shardCells] {
		p.remember(0, i, b.index, false)
		if err := p.Put(b); err != nil {
			t.Fatal(err)
		}
	}
	last := held[shardCells]
	evicted := false
	p.namedHook = func() {
		if evicted {
			return
		}
		evicted = true
		// The last slot's Put, from a goroutine whose shard is 0: cell
		// 0, naming the slot the Get just claimed, is the only one that
		// names a held slot, so the Put names its slot there instead.
		last.state.Store(slotFree)
		p.remember(0, 0, last.index, true)
	}
	b := p.takeElsewhere(0, 0) // the depot is empty: claims slot 0 from cell 0
	p.namedHook = nil
	if b == nil || b.index != 0 || !evicted {
		t.Fatalf("takeElsewhere = slot %d, eviction ran %v; want slot 0 with the eviction", b.Index(), evicted)
	}
	if err := p.Put(b); err != nil {
		t.Fatal(err)
	}
	drainPool(t, p)
	checkPool(t, p)
}
