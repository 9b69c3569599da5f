package pagealloc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/edsrzf/mmap-go"
)

// Pool is a bounded set of equal, page-aligned buffers carved out of one
// anonymous mapping. Buffer addresses never move, so they can be handed to
// O_DIRECT reads and writes or registered once as fixed buffers.
//
// A Pool is safe for concurrent use. Get, TryGet and Put take a lock only
// while Gets are parked on an empty pool: to park one, or to wake them.
//
// Each slot's state word alone decides who owns it: a Get owns a slot only
// if its Swap turned the word from free to held, a Put returns it only if
// its Swap turned it from held to free. Because nothing else can hand a
// slot out, the two structures that help find free slots may hold stale
// or repeated entries:
//
//   - Shards, each a cache line of cells naming slots its goroutines used
//     lately (Bonwick's magazines, kept as hints). A slot named by a shard
//     has that shard as its home. Get claims a free slot at home with one
//     Swap, and Put of a slot that has a home is done after its one Swap,
//     so the usual Get+Put costs two locked instructions on lines no other
//     core touches. The shard is picked from the caller's stack address,
//     different between goroutines and steady for the calls one makes from
//     one depth of its stack (a call from a frame in another 2 KiB of the
//     stack, or after the stack is resized, may pick another).
//   - The depot, a Treiber stack whose head packs a 32-bit ABA tag beside
//     a 32-bit slot index. It starts with every slot and takes those that
//     fall out of the shards; a Get goes there when its shard has nothing.
//
// No free slot is lost: every free slot has a home or is on the depot.
// Whoever takes a name out of a cell (with Swap or CAS, so it knows which
// slot it removed) clears the slot's home and only then reads its state,
// queueing it if free; a Put reads home only after its Swap. With
// sequentially consistent atomics one of the two sees the other's write.
type Pool struct {
	// head is the depot: tag<<32 | slot index, noSlot when empty. It is the
	// only word every core may CAS, so it sits on a cache line of its own.
	head atomic.Uint64
	_    [cacheLineBytes - 8]byte

	shards    []poolShard
	shardMask uint32
	buffers   []Buffer
	slab      mmap.MMap
	sizeBytes int

	// status packs poolClosed with the number of Gets parked on an empty
	// pool, so the fast paths test both with one load.
	status atomic.Uint32
	// refs is one for Close plus one per buffer still held when Close
	// marked it; whoever drops it to zero unmaps the slab, so a buffer
	// still in use at Close never points into unmapped memory.
	refs atomic.Int64

	mu   sync.Mutex
	wake chan struct{} // closed and replaced to wake every parked Get

	// tagStep is what each depot CAS adds to the tag: always 1, except in
	// a test that sets 0 to show the corruption the tag prevents.
	tagStep uint32
	// depotPopHook, when not nil, runs between the load of the depot head
	// and the CAS that pops it. Tests use it to freeze a pop there.
	depotPopHook func()
	// namedHook, when not nil, runs in remember between finding a cell
	// that already names the slot and storing the slot's home. Tests use
	// it to unname the slot there.
	namedHook func()
}

// Buffer is one slot of a Pool: a fixed, 4096-aligned region of the slab.
// A Buffer returned by Get or TryGet belongs to the caller until Put.
type Buffer struct {
	bufferSlot
	// Pad to a whole cache line: a slot's words are written by whichever
	// core holds it, and a neighbour held by another core must not share.
	_ [(cacheLineBytes - unsafe.Sizeof(bufferSlot{})%cacheLineBytes) % cacheLineBytes]byte
}

type bufferSlot struct {
	pool  *Pool
	data  []byte
	index uint32

	state atomic.Uint32 // slotFree or slotHeld: the only truth about ownership
	// home is a shard whose cells name the slot, or noShard. It is set
	// before the slot is named and cleared by whoever unnames it before
	// that goroutine looks at state, so a Put that finds a home knows the
	// slot can be found. Other shards may name the slot too; their fast
	// path skips it, so two cores do not keep snatching one slot.
	home atomic.Uint32
	// queued is 1 from the moment someone wins the right to push the slot
	// on the depot until a pop takes it off, so the depot, whose links
	// live in the slots, never holds one slot twice.
	queued atomic.Uint32
	next   atomic.Uint32 // depot link, meaningful only while queued
	// counted is 1 while Close counts this slot in refs and nobody has
	// returned it since.
	counted atomic.Uint32
}

// poolShard names slots that callers of one shard used lately. A cell holds
// a slot index or noSlot; the slot named may be free or held by anyone.
type poolShard struct {
	cells [shardCells]atomic.Uint32
	// A second line keeps the adjacent-line prefetcher from pairing this
	// shard with its neighbour's.
	_ [cacheLineBytes]byte
}

// PoolStats is a snapshot of a Pool. InUse and Free come from one pass over
// every slot, so under concurrent use they may not describe a single
// instant, but InUse+Free always equals Count.
type PoolStats struct {
	Count     int  // buffers in the pool
	SizeBytes int  // length of each buffer
	InUse     int  // buffers handed out and not yet returned
	Free      int  // buffers not in use, which Get hands out while the pool is open
	Waiting   int  // goroutines blocked in Get for a buffer
	Closed    bool // Close has been called
}

// OutstandingError is returned by Close when buffers are still held. The
// pool is closed all the same; its slab is unmapped when the last of them
// is returned with Put. A Get or TryGet racing with Close may claim a
// slot that Close counts, then see the close and give the slot back
// itself (returning ErrClosed or false): Count includes it, and the slab
// is unmapped once it is back.
type OutstandingError struct {
	Count int // buffers held when Close looked at them
}

// Error reports how many buffers were still out.
func (e *OutstandingError) Error() string {
	return fmt.Sprintf("pagealloc: pool closed with %d buffers outstanding", e.Count)
}

// Unwrap makes errors.Is(err, ErrBuffersOutstanding) true.
func (e *OutstandingError) Unwrap() error { return ErrBuffersOutstanding }

var (
	// ErrDoublePut is returned by Put when the buffer is already back in
	// the pool. A buffer that was handed out again in between cannot be
	// told apart from a legitimate return, so this catches returning
	// twice in a row, not every misuse.
	ErrDoublePut = errors.New("pagealloc: buffer returned to the pool twice")
	// ErrForeignBuffer is returned by Put for a nil buffer or one that
	// the pool did not hand out: a different pool's, or a copy.
	ErrForeignBuffer = errors.New("pagealloc: buffer does not belong to this pool")
	// ErrBuffersOutstanding is matched (through OutstandingError) when
	// Close finds buffers still held.
	ErrBuffersOutstanding = errors.New("pagealloc: buffers outstanding at close")
)

const (
	poolAlignBytes = 4096
	cacheLineBytes = 64
	// shardCells is how many recently used slots a shard names: 16 cells
	// of four bytes fill one cache line. A goroutine holding more than
	// that many buffers at once spills to the depot.
	shardCells = 16

	slotFree uint32 = 0
	slotHeld uint32 = 1

	// poolClosed is the status bit set by Close; the bits below it count
	// parked Gets.
	poolClosed uint32 = 1 << 31

	noSlot  = math.MaxUint32
	noShard = math.MaxUint32
	// maxPoolCount keeps every index below noSlot.
	maxPoolCount = math.MaxUint32 - 1
)

// NewPool maps count buffers of sizeBytes each, one slab aligned to 4096
// bytes and outside the Go heap. sizeBytes must be a positive multiple of
// 4096. The slab holds no Go pointers, so the garbage collector never
// scans it. Bad arguments return an error wrapping ErrInvalidArgument; a
// slab the system will not map, ErrTooLarge.
func NewPool(count, sizeBytes int) (*Pool, error) {
	if count <= 0 || int64(count) > maxPoolCount {
		return nil, fmt.Errorf("%w: pool count %d", ErrInvalidArgument, count)
	}
	if sizeBytes <= 0 || sizeBytes%poolAlignBytes != 0 {
		return nil, fmt.Errorf("%w: pool buffer size %d bytes is not a positive multiple of %d", ErrInvalidArgument, sizeBytes, poolAlignBytes)
	}
	if count > math.MaxInt/sizeBytes {
		return nil, fmt.Errorf("%w: pool of %d buffers of %d bytes overflows", ErrInvalidArgument, count, sizeBytes)
	}
	slab, err := mmap.MapRegion(nil, count*sizeBytes, mmap.RDWR, mmap.ANON, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: mapping a pool slab of %d bytes: %w", ErrTooLarge, count*sizeBytes, err)
	}
	if uintptr(unsafe.Pointer(unsafe.SliceData(slab)))%poolAlignBytes != 0 {
		// mmap returns whole pages; smaller pages would break O_DIRECT.
		_ = slab.Unmap()
		return nil, fmt.Errorf("pagealloc: pool slab is not %d-byte aligned", poolAlignBytes)
	}

	// Enough shards that goroutines on different cores rarely meet in one,
	// few enough that a Get on an empty pool can look at all of them.
	shardCount := 4
	for shardCount < 4*runtime.GOMAXPROCS(0) && shardCount < 64 {
		shardCount *= 2
	}
	p := &Pool{
		shards:    make([]poolShard, shardCount),
		shardMask: uint32(shardCount - 1),
		buffers:   make([]Buffer, count),
		slab:      slab,
		sizeBytes: sizeBytes,
		wake:      make(chan struct{}),
		tagStep:   1,
	}
	p.refs.Store(1)
	p.head.Store(packHead(0, noSlot))
	for s := range p.shards {
		for c := range p.shards[s].cells {
			p.shards[s].cells[c].Store(noSlot)
		}
	}
	for i := range p.buffers {
		b := &p.buffers[i]
		b.pool = p
		off := i * sizeBytes
		b.data = slab[off : off+sizeBytes : off+sizeBytes]
		b.index = uint32(i)
		b.home.Store(noShard)
	}
	// Push in reverse so the lowest slots come out first.
	for i := count - 1; i >= 0; i-- {
		p.buffers[i].queued.Store(1)
		p.depotPush(uint32(i))
	}
	return p, nil
}

// Bytes returns the buffer's memory: as long as the pool's buffer size,
// with capacity capped so an append cannot spill into the next buffer. It
// may be used until the buffer is returned with Put.
func (b *Buffer) Bytes() []byte {
	if b.unmade() {
		return nil
	}
	return b.data
}

// Index returns the buffer's slot number in [0, count), or -1 for a nil
// Buffer. It never changes, so it can name the buffer in a fixed-buffer
// registration.
func (b *Buffer) Index() int {
	if b.unmade() {
		return -1
	}
	return int(b.index)
}

// TryGet returns a free buffer, or false if none is free or the pool is
// closed (or nil). It never blocks. It may miss a buffer that a concurrent call is
// moving between the pool's caches; Get does not have that gap.
func (p *Pool) TryGet() (*Buffer, bool) {
	if p.unmade() {
		return nil, false
	}
	// The common case: the first cell the caller looks at in its home
	// shard names a free slot whose home is that shard. The Swap comes
	// with no load of state before it, because a load just after the
	// previous Put's Swap waits for that Swap; claiming a slot that is out
	// writes held over held and changes nothing.
	hint := shardHint()
	home := hint & p.shardMask
	// Compared as uint32: noSlot read as an int is -1 on 32-bit platforms.
	if i := p.shards[home].cells[firstCell(hint)].Load(); i < uint32(len(p.buffers)) { // not noSlot
		b := &p.buffers[i]
		if b.state.Swap(slotHeld) == slotFree {
			if b.home.Load() != home || p.status.Load()&poolClosed != 0 {
				b = p.settleFastClaim(b, hint)
			}
			return b, b != nil
		}
	}
	b := p.take()
	return b, b != nil
}

// Get returns a free buffer, waiting for a Put while the pool is empty. It
// returns ErrClosed once the pool is closed, and ctx.Err() if ctx ends
// first (a nil ctx never does); a Get that returns an error holds no
// buffer.
func (p *Pool) Get(ctx context.Context) (*Buffer, error) {
	if p.unmade() {
		return nil, errNil("Pool")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if b, ok := p.TryGet(); ok {
		return b, nil
	}
	// Count this Get as parked before the last look: a Put, or a move to
	// the depot, makes its slot findable before loading status, so either
	// it sees this waiter and wakes it, or the look below finds the slot.
	if p.status.Add(1)&poolClosed != 0 {
		p.status.Add(^uint32(0))
		return nil, ErrClosed
	}
	defer p.status.Add(^uint32(0))
	for {
		p.mu.Lock()
		wake := p.wake
		p.mu.Unlock()
		if b := p.take(); b != nil {
			return b, nil
		}
		if p.status.Load()&poolClosed != 0 {
			return nil, ErrClosed
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Put returns b to the pool. It returns ErrForeignBuffer for nil or for a
// buffer this pool did not hand out (another pool's, or a copy of one)
// and ErrDoublePut for a buffer already returned; neither changes the
// pool. After Close, returning the last outstanding buffer unmaps the
// slab, and Put returns any error from that. The caller must not touch
// the buffer's bytes after Put.
func (p *Pool) Put(b *Buffer) error {
	if p.unmade() {
		return errNil("Pool")
	}
	// A copy of one of p's buffers names p too, but only the buffer
	// itself holds the slot's state.
	if b == nil || b.pool != p || &p.buffers[b.index] != b {
		return ErrForeignBuffer
	}
	was := b.state.Swap(slotFree)
	// The one Swap is enough when the slot has a home (the shard that
	// gave it out, even if another goroutine returns it), nobody waits and
	// the pool is open.
	if was != slotHeld || p.status.Load() != 0 || b.home.Load() == noShard {
		return p.putSlow(b, was)
	}
	return nil
}

// putSlow finishes a Put that needs more than the state Swap.
func (p *Pool) putSlow(b *Buffer, was uint32) error {
	if was == slotFree {
		return ErrDoublePut
	}
	if p.status.Load()&poolClosed != 0 {
		return p.releaseAfterClose(b)
	}
	if b.home.Load() == noShard {
		hint := shardHint()
		p.remember(hint&p.shardMask, firstCell(hint), b.index, true)
	}
	p.wakeIfWaiting()
	return nil
}

// Close closes the pool: Get returns ErrClosed and TryGet false from now on.
// With every buffer returned it unmaps the slab at once. Otherwise it
// returns an *OutstandingError and leaves the slab mapped until the last
// held buffer comes back through Put. A second Close returns ErrClosed.
func (p *Pool) Close() error {
	if p.unmade() {
		return errNil("Pool")
	}
	if p.status.Or(poolClosed)&poolClosed != 0 {
		return ErrClosed
	}
	outstanding := 0
	for i := range p.buffers {
		b := &p.buffers[i]
		if b.state.Load() != slotHeld {
			// A Get that claims it from now on sees poolClosed and gives
			// it back without touching refs.
			continue
		}
		p.refs.Add(1)
		b.counted.Store(1)
		// A holder that returned it before counted was set dropped no
		// reference, so take back the one just added.
		if b.state.Load() == slotHeld {
			outstanding++
		} else if b.counted.Swap(0) == 1 {
			p.refs.Add(-1)
		}
	}
	p.wakeAll() // parked Gets must see poolClosed
	var err error
	if p.refs.Add(-1) == 0 {
		err = p.slab.Unmap()
	}
	if outstanding > 0 {
		return &OutstandingError{Count: outstanding}
	}
	return err
}

// Stats returns a snapshot of the pool. It reads every slot's state, so it
// costs O(count) and is meant for monitoring, not for hot paths.
func (p *Pool) Stats() PoolStats {
	if p.unmade() {
		return PoolStats{}
	}
	inUse := 0
	for i := range p.buffers {
		if p.buffers[i].state.Load() == slotHeld {
			inUse++
		}
	}
	status := p.status.Load()
	return PoolStats{
		Count:     len(p.buffers),
		SizeBytes: p.sizeBytes,
		InUse:     inUse,
		Free:      len(p.buffers) - inUse,
		Waiting:   int(status &^ poolClosed),
		Closed:    status&poolClosed != 0,
	}
}

// shardHint picks a shard, and a cell in it, for the calling goroutine
// without a per-P API: the address of a local variable lies in the
// goroutine's own stack, which no running goroutine shares and which moves
// only when the stack is resized. The address also follows the depth of
// the call, so one goroutine calling from frames 2 KiB apart gets
// different hints. Only speed depends on it; any shard and cell give
// correct results.
func shardHint() uint32 {
	var anchor byte
	// Stacks are at least 2 KiB and aligned to their size, so the address
	// over 2 KiB differs between goroutines; the multiply spreads it.
	sp := uint64(uintptr(unsafe.Pointer(&anchor))) >> 11
	return uint32((sp * 0x9e3779b97f4a7c15) >> 32)
}

// firstCell is where a goroutine starts looking in its shard's cells. Two
// goroutines whose hints share a shard mostly start apart, so each finds
// its own slot first instead of reading, or snatching, the other's.
func firstCell(hint uint32) int { return int(hint>>24) % shardCells }

// take claims a free slot: at the caller's home shard first, then on the
// depot, then anywhere. It returns nil when it finds none or the pool is
// closed.
func (p *Pool) take() *Buffer {
	hint := shardHint()
	home, start := hint&p.shardMask, firstCell(hint)
	s := &p.shards[home]
	var b *Buffer
	for k := range s.cells {
		c := (start + k) % shardCells
		i := s.cells[c].Load()
		if i == noSlot {
			continue
		}
		cand := &p.buffers[i]
		if cand.home.Load() != home {
			// Another shard adopted the slot. Drop the stale name so
			// this shard stops reading a line another core writes.
			if s.cells[c].CompareAndSwap(i, noSlot) {
				p.unnamed(home, i)
			}
			continue
		}
		if cand.claim() {
			b = cand
			break
		}
	}
	if b == nil {
		if b = p.takeElsewhere(home, start); b == nil {
			return nil
		}
	}
	return p.unlessClosed(b)
}

// unlessClosed returns b, just claimed, or gives it back and returns nil if
// the pool is closed: Close reads states after setting poolClosed, so a
// claim it did not see must see poolClosed here.
func (p *Pool) unlessClosed(b *Buffer) *Buffer {
	if p.status.Load()&poolClosed != 0 {
		b.state.Store(slotFree)
		_ = p.releaseAfterClose(b) // nothing to unmap unless Close counted it
		return nil
	}
	return b
}

// claim turns a free slot held. Swapping held over held changes nothing,
// but the load first saves a locked instruction on slots that are out.
func (b *Buffer) claim() bool {
	return b.state.Load() == slotFree && b.state.Swap(slotHeld) == slotFree
}

// settleFastClaim finishes a TryGet whose fast path claimed a slot that has
// another home, or claimed it after Close.
func (p *Pool) settleFastClaim(b *Buffer, hint uint32) *Buffer {
	if b = p.unlessClosed(b); b == nil {
		return nil
	}
	// Another shard adopted the slot. Keep it, but drop this shard's stale
	// name, as take does, so the two shards stop sharing it.
	home := hint & p.shardMask
	if p.shards[home].cells[firstCell(hint)].CompareAndSwap(b.index, noSlot) {
		p.unnamed(home, b.index)
	}
	return b
}

// takeElsewhere is take's slow path, for when no slot at home is free.
func (p *Pool) takeElsewhere(home uint32, start int) *Buffer {
	if p.status.Load()&poolClosed != 0 {
		return nil
	}
	b := p.takeQueued()
	// Any named slot will do now, whatever its home.
	for k := uint32(0); k <= p.shardMask && b == nil; k++ {
		s := &p.shards[(home+k)&p.shardMask]
		for c := range s.cells {
			if i := s.cells[c].Load(); i != noSlot && p.buffers[i].claim() {
				b = &p.buffers[i]
				break
			}
		}
	}
	if b != nil {
		// Name it at home so that its Put, usually from this goroutine,
		// is done after one Swap.
		p.remember(home, start, b.index, false)
	}
	return b
}

// takeQueued pops the depot until it yields a slot that is still free;
// entries whose slot a shard already handed out are dropped.
func (p *Pool) takeQueued() *Buffer {
	for {
		i := p.depotPop()
		if i == noSlot {
			return nil
		}
		b := &p.buffers[i]
		// Clear queued before claiming: a Put that finds queued still set
		// has freed the slot before this Swap, which then claims it.
		b.queued.Store(0)
		if b.state.Swap(slotHeld) == slotFree {
			return b
		}
	}
}

// remember names slot i in one of shard's cells, looking from cell start
// on, and makes shard its home. It prefers an empty cell, then one whose
// slot is held, so free slots stay named. If every cell names a free slot,
// a free i goes to the depot instead and a held i is left out: its own
// Put will place it.
//
// home is stored before the slot is named (or, if already named, before
// the name is checked again), so whoever unnames the slot afterwards also
// clears home. One who unnamed it before the store cleared home too early;
// the check then finds the name gone and clears home itself. So home never
// points at a shard that has dropped the slot.
func (p *Pool) remember(shard uint32, start int, i uint32, free bool) {
	s := &p.shards[shard]
	b := &p.buffers[i]
scan:
	empty, held := -1, -1
	for k := range s.cells {
		c := (start + k) % shardCells
		v := s.cells[c].Load()
		switch {
		case v == i:
			if p.namedHook != nil {
				p.namedHook()
			}
			b.home.Store(shard)
			if s.cells[c].Load() != i {
				// Unnamed meanwhile. Whoever did it may have cleared
				// home before the Store above, so clear it again.
				b.home.CompareAndSwap(shard, noShard)
				goto scan
			}
			return
		case v == noSlot:
			if empty < 0 {
				empty = c
			}
		case held < 0 && p.buffers[v].state.Load() == slotHeld:
			held = c
		}
	}
	// An empty cell costs nobody anything; evicting a held slot's name
	// only sends its Put down the slow path.
	victim := empty
	if victim < 0 {
		victim = held
	}
	if victim < 0 {
		if free {
			p.enqueue(i)
		}
		return
	}
	b.home.Store(shard)
	if old := s.cells[victim].Swap(i); old != noSlot && old != i {
		p.unnamed(shard, old)
	}
}

// unnamed settles slot i after its name was taken out of one of shard's
// cells. i may have been freed after the caller looked at it, by a Put
// that then saw its home still set; i must not end up both free and
// unnamed, so a free i goes to the depot.
func (p *Pool) unnamed(shard, i uint32) {
	b := &p.buffers[i]
	b.home.CompareAndSwap(shard, noShard)
	if b.state.Load() == slotFree {
		p.enqueue(i)
	}
}

// enqueue puts a free slot on the depot unless it is there already, then
// wakes parked Gets, whose last look may have missed it while it moved.
func (p *Pool) enqueue(i uint32) {
	if p.buffers[i].queued.CompareAndSwap(0, 1) {
		p.depotPush(i)
	}
	p.wakeIfWaiting()
}

func packHead(tag, index uint32) uint64 { return uint64(tag)<<32 | uint64(index) }

func unpackHead(head uint64) (tag, index uint32) { return uint32(head >> 32), uint32(head) }

// depotPush links slot i on top of the depot. The caller must have set the
// slot's queued flag, so no other goroutine writes its link meanwhile.
func (p *Pool) depotPush(i uint32) {
	b := &p.buffers[i]
	for {
		head := p.head.Load()
		tag, top := unpackHead(head)
		b.next.Store(top)
		if p.head.CompareAndSwap(head, packHead(tag+p.tagStep, i)) {
			return
		}
	}
}

// depotPop unlinks the top slot of the depot, or returns noSlot.
//
// Between loading the head and the CAS, other goroutines may pop the top
// slot, pop the one below it, and push the first back: the head then names
// the same slot again but its link has changed. Comparing the index alone
// would let the stale CAS install a slot that is now held. The tag, bumped
// by every successful CAS, makes it fail instead, unless it has come round
// to the value the pop loaded: it has 32 bits, so a pop stalled between
// its load and its CAS while others complete 2^32 pushes and pops (some
// 20 seconds of a core doing nothing else) can still be fooled.
func (p *Pool) depotPop() uint32 {
	for {
		head := p.head.Load()
		tag, top := unpackHead(head)
		if top == noSlot {
			return noSlot
		}
		next := p.buffers[top].next.Load()
		if p.depotPopHook != nil {
			p.depotPopHook()
		}
		if p.head.CompareAndSwap(head, packHead(tag+p.tagStep, next)) {
			return top
		}
	}
}

// wakeIfWaiting wakes parked Gets, if any. Callers have just made a free
// slot findable, which is what a parked Get looks for.
func (p *Pool) wakeIfWaiting() {
	if p.status.Load()&^poolClosed != 0 {
		p.wakeAll()
	}
}

// wakeAll wakes every Get parked on the current channel. They all look
// again, and those that find nothing park on the next channel.
func (p *Pool) wakeAll() {
	p.mu.Lock()
	close(p.wake)
	p.wake = make(chan struct{})
	p.mu.Unlock()
}

// releaseAfterClose settles a slot that became free after Close began. Only
// the goroutine that turns counted from 1 to 0 drops the reference Close
// took for it, so each reference is dropped exactly once.
func (p *Pool) releaseAfterClose(b *Buffer) error {
	if b.counted.Swap(0) == 1 && p.refs.Add(-1) == 0 {
		return p.slab.Unmap()
	}
	return nil
}

// staging is a device's pools of aligned staging buffers, the memory its
// own writes are assembled in: journal records, and log frames written
// together with their payload. Their writes then come from 4096-aligned
// buffers at fixed addresses, as O_DIRECT and registered-buffer I/O need.
//
// A staging buffer is taken with TryGet, never waited for. When none is
// free (more concurrent log writers than frame buffers), or the pool is
// closed or absent (a read-only device), the caller assembles the bytes in
// a heap buffer instead: as correct, only not aligned. So no write ever
// waits for a staging buffer, and Close cannot deadlock on one.
type staging struct {
	// records has one buffer as large as the largest journal record:
	// only the journal's goroutine encodes records, one at a time.
	records *Pool
	// frames holds a log frame's header followed by its payload, for the
	// payloads small enough to be joined to their header in one write.
	frames *Pool
}

// newStaging maps the staging pools of a writable device whose journal
// records are at most maxRecordBytes long. A pool that cannot be mapped
// (a limit on memory or address space) is left out, and its users take
// the heap: staging is worth an mmap, not a device that will not open.
func newStaging(maxRecordBytes int64) staging {
	var s staging
	s.records, _ = NewPool(1, int(alignUp(maxRecordBytes, poolAlignBytes)))
	// One frame buffer per P for the writers running at once, doubled for
	// those blocked in a write and for GC's copies; any more use the heap.
	frameBytes := alignUp(logFrameHeaderBytes+logJoinedWriteMaxBytes, poolAlignBytes)
	s.frames, _ = NewPool(2*runtime.GOMAXPROCS(0), int(frameBytes))
	return s
}

// close closes both pools. Callers close them only once nothing can be
// holding a buffer, so an error means one was not returned.
func (s *staging) close() error {
	var errs []error
	for _, p := range []*Pool{s.records, s.frames} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	return errors.Join(errs...)
}

// stage takes a free buffer of p, or returns nil if p is nil, closed or
// has none free; see staging for the fallback.
func stage(p *Pool) *Buffer {
	if p == nil {
		return nil
	}
	b, _ := p.TryGet()
	return b
}

// bytesOr returns b's bytes, or heap if b is nil (no staging buffer).
func (b *Buffer) bytesOr(heap []byte) []byte {
	if b == nil {
		return heap
	}
	return b.data
}

// unstage returns b, if not nil, to its pool. A caller returns each buffer
// it staged once, so Put cannot fail but for the unmapping of a pool
// closed with the buffer out, which only a missing unstage could cause.
func unstage(b *Buffer) {
	if b != nil {
		_ = b.pool.Put(b)
	}
}
