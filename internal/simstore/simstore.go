// Package simstore is a byte store that can lose power, so that tests can
// show a pagealloc device survives a crash at any moment.
//
// A Store behaves like a file seen through the operating system's page
// cache: every WriteAt, Truncate and PunchHole is visible at once to ReadAt
// and through the mapping Map returns, synced or not. Alongside, the Store
// records every mutating call, in order, in a trace.
//
// Image(n, rng) answers: had the power failed just after the first n
// recorded operations, what would be found on disk at reboot? It models a
// disk that writes 512-byte sectors atomically but in no particular order,
// under a file system that promises nothing it was not asked to sync:
//
//   - Everything up to and including the last Sync among the n operations is
//     on disk.
//   - Each later write, independently, reached the disk whole, did not reach
//     it at all, or was torn: every 512-byte sector it touches (sectors are
//     counted from offset 0 of the file) reached the disk or not, each on its
//     own. A torn write that ends past the size still extends the size, as a
//     file system that committed the new size but not all the data would;
//     a dropped write does not.
//   - Each later Truncate and PunchHole happened or did not.
//   - What survived is applied in its original order.
//
// Because each write's fate is drawn on its own, two unsynced writes into
// one sector can survive as the later without the earlier, which a real
// disk, writing whole sectors from the page cache, cannot do. The model errs
// on the harsh side there.
//
// The image is a new Store whose whole contents are durable and whose trace
// is empty, so it can be crashed again, as a device that loses power while
// recovering would be.
//
// For failures short of power loss, SetFault makes chosen operations fail
// (as Pebble's errorfs does), and CrashAfter makes every operation fail once
// the trace reaches a given length, so a running workload stops at the
// moment of the simulated crash.
package simstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/edsrzf/mmap-go"

	"github.com/pagealloc/pagealloc/internal/storage"
)

var (
	_ storage.Storage     = (*Store)(nil)
	_ storage.Mapper      = (*Store)(nil)
	_ storage.HolePuncher = (*Store)(nil)
)

// ErrCrashed is returned by every mutating operation once the trace has
// reached the length given to CrashAfter: the simulated power is off.
var ErrCrashed = errors.New("simstore: crashed (simulated power loss)")

// ErrClosed is returned by every operation on a Store after Close, except
// the ones that only read the trace (Ops, SyncPoints, Image, Describe).
var ErrClosed = errors.New("simstore: closed")

// OpKind says which mutating operation an Op is.
type OpKind uint8

// The kinds of mutating operation a Store records.
const (
	OpWrite OpKind = iota + 1
	OpSync
	OpTruncate
	OpPunchHole

	// opExtend never reaches a trace: it carries the size change of a torn
	// write whose last sector was lost into an image's baseline.
	opExtend
)

// String returns the kind's name as the Store method is named.
func (k OpKind) String() string {
	switch k {
	case OpWrite:
		return "write"
	case OpSync:
		return "sync"
	case OpTruncate:
		return "truncate"
	case OpPunchHole:
		return "punchhole"
	case opExtend:
		return "extend"
	}
	return "OpKind(" + strconv.Itoa(int(k)) + ")"
}

// Op describes a mutating operation to the function given to SetFault.
type Op struct {
	Kind OpKind
	// Off is the offset of a write or hole, and the new size of a Truncate.
	Off int64
	// Len is the length in bytes of a write or hole.
	Len int64
	// Index is the position the operation takes in the trace if it succeeds.
	Index int
}

// String returns a short description such as "#12 write [4096,+512)".
func (o Op) String() string {
	switch o.Kind {
	case OpWrite, OpPunchHole:
		return fmt.Sprintf("#%d %v [%d,+%d)", o.Index, o.Kind, o.Off, o.Len)
	case OpTruncate:
		return fmt.Sprintf("#%d truncate %d", o.Index, o.Off)
	}
	return fmt.Sprintf("#%d %v", o.Index, o.Kind)
}

// record is one traced operation. Records are never changed once appended,
// which lets Image read a trace prefix without holding the lock.
type record struct {
	kind   OpKind
	off    int64
	length int64
	data   []byte
}

// target is anything a record can be replayed onto: the page cache of a
// store, or an editor of durable state.
type target interface {
	write(off int64, data []byte)
	extend(end int64)
	truncate(size int64)
	punch(off, length int64)
}

func apply(t target, r record) {
	switch r.kind {
	case OpWrite:
		t.write(r.off, r.data)
	case OpTruncate:
		t.truncate(r.off)
	case OpPunchHole:
		t.punch(r.off, r.length)
	case opExtend:
		t.extend(r.off)
	}
}

// pageCache is the current contents of a store. Bytes of mem at or beyond
// size are always zero, so growing needs no writes, as with a file.
type pageCache struct {
	mem  mmap.MMap
	size int64
}

func (c *pageCache) write(off int64, data []byte) {
	copy(c.mem[off:], data)
	if len(data) > 0 {
		c.extend(off + int64(len(data)))
	}
}

func (c *pageCache) extend(end int64) {
	if end > c.size {
		c.size = end
	}
}

func (c *pageCache) truncate(size int64) {
	if size < c.size {
		zeroMem(c.mem, size, c.size)
	}
	c.size = size
}

func (c *pageCache) punch(off, length int64) {
	if end := min(off+length, c.size); off < end {
		zeroMem(c.mem, off, end)
	}
}

// Store is a simulated file that can lose power; see the package comment.
// It implements storage.Storage, storage.Mapper and storage.HolePuncher and
// is safe for concurrent use.
type Store struct {
	maxSize int64
	levels  int
	cleanup runtime.Cleanup

	mu     sync.Mutex
	cache  pageCache
	closed bool
	trace  []record
	syncs  []int // trace index of every Sync, ascending

	// base is the durable contents when the trace began. An image gets its
	// base as its parent's snapshot plus basePending, the parts of the
	// unsynced operations it kept, so that an image that is never crashed
	// again never pays for building its base as a tree.
	base        state
	basePending []record
	// Durable states at sync points are built on demand and only some are
	// kept: see durableAt.
	frontier        snapshot   // the furthest one built
	checkpoints     []snapshot // ascending, sparse, all at or before frontier
	recent          snapshot   // the last one built before frontier; syncs -1: none
	sinceCheckpoint int64      // replay cost since the last checkpoint
	minCheckpoint   int64      // minCheckpointCost, lowered by tests

	fault      func(Op) error
	crashAfter int // trace length at which power fails; -1: never
	desc       string
}

// New returns an empty store (size 0) that can grow to maxSize bytes. Its
// contents live in one anonymous mapping of maxSize bytes, which costs
// memory only for pages written. New panics if maxSize is not positive or
// the mapping cannot be made, as a test cannot go on without it.
func New(maxSize int64) *Store {
	s, err := newStore(maxSize)
	if err != nil {
		panic(err)
	}
	return s
}

func newStore(maxSize int64) (*Store, error) {
	if maxSize <= 0 || maxSize > math.MaxInt {
		return nil, fmt.Errorf("simstore: maximum size %d out of range", maxSize)
	}
	// COPY rather than RDWR: with ANON, RDWR makes a shared mapping, backed
	// by shmem, where discarding pages neither frees nor zeroes them and
	// huge pages are not given; COPY makes a private one. Both are plain
	// read-write memory to this process.
	mem, err := mmap.MapRegion(nil, int(maxSize), mmap.COPY, mmap.ANON, 0)
	if err != nil {
		return nil, fmt.Errorf("simstore: mapping %d bytes: %w", maxSize, err)
	}
	s := &Store{
		maxSize:       maxSize,
		levels:        levelsFor(maxSize),
		cache:         pageCache{mem: mem},
		recent:        snapshot{syncs: -1},
		minCheckpoint: minCheckpointCost,
		crashAfter:    -1,
	}
	// The mapping is outside the Go heap, so the collector never feels its
	// weight: a test that forgets Close on thousands of images would run
	// out of memory before a collection. The cleanup only limits the damage.
	s.cleanup = runtime.AddCleanup(s, func(m mmap.MMap) { _ = m.Unmap() }, mem)
	return s, nil
}

// admit decides whether a mutating operation may go ahead; s.mu is held.
func (s *Store) admit(kind OpKind, off, length int64) error {
	if s.crashAfter >= 0 && len(s.trace) >= s.crashAfter {
		return ErrCrashed
	}
	if s.fault != nil {
		return s.fault(Op{Kind: kind, Off: off, Len: length, Index: len(s.trace)})
	}
	return nil
}

// add applies r to the page cache and traces it; s.mu is held.
func (s *Store) add(r record) {
	apply(&s.cache, r)
	if r.kind == OpSync {
		s.syncs = append(s.syncs, len(s.trace))
	}
	s.trace = append(s.trace, r)
}

// ReadAt reads from the current contents, synced or not, as io.ReaderAt.
func (s *Store) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	if off < 0 {
		return 0, fmt.Errorf("simstore: read at negative offset %d", off)
	}
	if off >= s.cache.size {
		return 0, io.EOF
	}
	n := copy(p, s.cache.mem[off:s.cache.size])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at off, growing the size if it ends past it, as
// io.WriterAt. Writing past the maximum size fails and writes nothing.
func (s *Store) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	length := int64(len(p))
	if off < 0 || off > s.maxSize-length {
		return 0, fmt.Errorf("simstore: write [%d,+%d) outside [0,%d)", off, length, s.maxSize)
	}
	if err := s.admit(OpWrite, off, length); err != nil {
		var pw *PartialWrite
		if !errors.As(err, &pw) || pw.N <= 0 || pw.N >= length {
			return 0, err
		}
		s.add(record{kind: OpWrite, off: off, length: pw.N, data: bytes.Clone(p[:pw.N])})
		return int(pw.N), err
	}
	s.add(record{kind: OpWrite, off: off, length: length, data: bytes.Clone(p)})
	return len(p), nil
}

// PartialWrite, returned by a fault for a write, makes the write fail
// with Err after its first N bytes reached the store, as a disk that
// fails in the middle of a request may leave them: the prefix is applied
// and traced as a write of N bytes, and WriteAt returns N and the
// PartialWrite. An N outside (0, length) applies nothing.
type PartialWrite struct {
	N   int64
	Err error
}

// Error says how many bytes were written before Err.
func (e *PartialWrite) Error() string {
	return fmt.Sprintf("simstore: %d bytes written, then: %v", e.N, e.Err)
}

// Unwrap returns Err.
func (e *PartialWrite) Unwrap() error { return e.Err }

// Sync makes every earlier operation durable: Image keeps all of them.
func (s *Store) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.admit(OpSync, 0, 0); err != nil {
		return err
	}
	s.add(record{kind: OpSync})
	return nil
}

// Truncate sets the size. Shrinking zeroes the bytes cut off, so growing
// again reads zeroes there, as with a file.
func (s *Store) Truncate(size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if size < 0 || size > s.maxSize {
		return fmt.Errorf("simstore: truncate to %d outside [0,%d]", size, s.maxSize)
	}
	if err := s.admit(OpTruncate, size, 0); err != nil {
		return err
	}
	s.add(record{kind: OpTruncate, off: size})
	return nil
}

// PunchHole zeroes [off, off+length) and keeps the size; the part of the
// range past the size is ignored, as fallocate ignores it.
func (s *Store) PunchHole(off, length int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if off < 0 || length < 0 || length > math.MaxInt64-off {
		return fmt.Errorf("simstore: invalid hole [%d,+%d)", off, length)
	}
	if err := s.admit(OpPunchHole, off, length); err != nil {
		return err
	}
	s.add(record{kind: OpPunchHole, off: off, length: length})
	return nil
}

// Size reports the current size, synced or not.
func (s *Store) Size() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.cache.size, nil
}

// Map returns the first length bytes of the one mapping that holds the
// current contents; it never moves and stays valid until Close. writable is
// ignored: the view is always writable, but writes through it bypass the
// trace and are lost by Image, so a device must write with WriteAt. Keep
// the Store reachable while the view is in use.
func (s *Store) Map(length int64, writable bool) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if length < 0 || length > s.maxSize {
		return nil, fmt.Errorf("simstore: map of %d bytes outside [0,%d]", length, s.maxSize)
	}
	return s.cache.mem[:length:length], nil
}

// Close unmaps the contents. The trace survives: Image still works.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	s.cleanup.Stop()
	err := s.cache.mem.Unmap()
	s.cache = pageCache{}
	if err != nil {
		return fmt.Errorf("simstore: unmapping: %w", err)
	}
	return nil
}

// Ops returns how many mutating operations the trace holds.
func (s *Store) Ops() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.trace)
}

// SyncPoints returns the trace index of every Sync, ascending. Image(i) and
// Image(i+1) for such an i crash just before and just after that sync.
func (s *Store) SyncPoints() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.syncs)
}

// SetFault makes f decide the fate of every later mutating operation before
// it is applied: if f returns an error, the operation is neither applied nor
// traced and the error is returned, unless it is a *PartialWrite for a
// write, which applies and traces part of it. f runs with the Store
// locked, so it must not call the Store. A nil f removes the fault.
func (s *Store) SetFault(f func(op Op) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// CrashAfter cuts the power once the trace holds n operations: from then
// on every mutating operation fails with ErrCrashed and nothing more is
// traced, so Image(n) is the state the workload crashed in. Reads still
// work. A negative n restores the power.
func (s *Store) CrashAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.crashAfter = n
}

// Describe says how the store was made: for an image, which unsynced
// operations it kept, dropped or tore; for a store from New, how many
// operations and syncs it has traced.
func (s *Store) Describe() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.desc == "" {
		return fmt.Sprintf("store from New, %d operations traced, %d of them syncs", len(s.trace), len(s.syncs))
	}
	return s.desc
}

// snapshot is the durable contents after the trace through its syncs-th
// Sync; syncs 0 is the base.
type snapshot struct {
	syncs int
	st    state
}

// Snapshots are kept once the replay since the last kept one, counted as
// bytes written plus opCost per operation, reaches the size of the durable
// contents (at least minCheckpointCost). Keeping one at every sync would
// cost a 4 KiB page per small write between syncs: a journal that appends
// 100 bytes and syncs would need 40 times its trace. With this spacing the
// kept snapshots hold no more than about the bytes the trace wrote, and a
// random Image replays no more than about the bytes the store holds, which
// it must copy anyway.
const (
	minCheckpointCost = 1 << 20
	opCost            = 256
)

// durableAt returns the durable contents after the trace through its k-th
// Sync (k = 0: the base); s.mu is held. It replays from the nearest state
// it kept: the frontier (the furthest state built, so Image at increasing
// n replays each operation once in all), the last state built before it
// (for a run of increasing n behind the frontier), or a checkpoint.
func (s *Store) durableAt(k int) state {
	if len(s.basePending) > 0 {
		e := newEditor(s.levels, s.base)
		for _, r := range s.basePending {
			apply(e, r)
		}
		s.base, s.basePending = e.st, nil
		s.frontier = snapshot{st: s.base}
	}
	from := snapshot{st: s.base}
	i := sort.Search(len(s.checkpoints), func(i int) bool { return s.checkpoints[i].syncs > k })
	if i > 0 {
		from = s.checkpoints[i-1]
	}
	for _, c := range []snapshot{s.frontier, s.recent} {
		if c.syncs <= k && c.syncs > from.syncs {
			from = c
		}
	}
	advancing := k > s.frontier.syncs
	e := newEditor(s.levels, from.st)
	for j := from.syncs; j < k; j++ {
		start := 0
		if j > 0 {
			start = s.syncs[j-1] + 1
		}
		ops := s.trace[start : s.syncs[j]+1]
		for _, r := range ops {
			apply(e, r)
		}
		if !advancing {
			continue
		}
		for _, r := range ops {
			s.sinceCheckpoint += int64(len(r.data)) + opCost
		}
		if s.sinceCheckpoint >= max(s.minCheckpoint, e.st.size) && j+1 < k {
			s.checkpoints = append(s.checkpoints, snapshot{syncs: j + 1, st: e.st})
			s.sinceCheckpoint = 0
			e = newEditor(s.levels, e.st) // the checkpoint must not change
		}
	}
	got := snapshot{syncs: k, st: e.st}
	if advancing {
		s.frontier = got
		if s.sinceCheckpoint >= max(s.minCheckpoint, got.st.size) {
			s.checkpoints = append(s.checkpoints, got)
			s.sinceCheckpoint = 0
		}
	} else if k < s.frontier.syncs {
		s.recent = got
	}
	return got.st
}

// describeLimit bounds how many operations Describe lists, so a failing
// test's message stays readable.
const describeLimit = 64

// Image returns a new store holding what a power loss just after the first
// n traced operations would leave on disk, choosing with rng the fate of
// each operation after the last Sync among them (see the package comment).
// A nil rng drops all of them. The image's whole contents are its durable
// baseline and its trace is empty. Image works after Close too.
//
// Cost: each image costs one anonymous mapping, a copy of the durable
// pages that hold data (not of maxSize; where they are dense, into 2 MiB
// pages), and the unsynced operations it keeps, replayed straight into its
// mapping. Before that, the durable state at the last sync is found by
// replaying the trace in copy-on-write 4 KiB pages from a kept state: when
// n only grows from call to call, each operation is replayed once in all;
// otherwise at most about as many bytes as the store holds are replayed.
// Kept states cost about as much memory as the bytes the trace wrote (see
// minCheckpointCost). Close each image: its memory is outside the Go heap.
func (s *Store) Image(n int, rng *rand.Rand) (*Store, error) {
	s.mu.Lock()
	if n < 0 || n > len(s.trace) {
		s.mu.Unlock()
		return nil, fmt.Errorf("simstore: image after %d operations of %d", n, len(s.trace))
	}
	synced := sort.SearchInts(s.syncs, n)
	durable := s.durableAt(synced)
	start := 0
	if synced > 0 {
		start = s.syncs[synced-1] + 1
	}
	// Records are never changed and appends land past n, so the tail may be
	// read without the lock.
	tail := s.trace[start:n]
	s.mu.Unlock()

	img, err := newStore(s.maxSize)
	if err != nil {
		return nil, err
	}
	fill(img.cache.mem, durable, s.levels)
	img.cache.size = durable.size
	img.base = durable

	var desc strings.Builder
	fmt.Fprintf(&desc, "image after %d ops", n)
	if synced > 0 {
		fmt.Fprintf(&desc, ", durable through sync #%d", start-1)
	} else {
		desc.WriteString(", no sync")
	}
	for i, r := range tail {
		kept, how := choose(r, rng)
		for _, k := range kept {
			apply(&img.cache, k)
		}
		img.basePending = append(img.basePending, kept...)
		switch {
		case i < describeLimit:
			op := Op{Kind: r.kind, Off: r.off, Len: r.length, Index: start + i}
			fmt.Fprintf(&desc, "; %v %s", op, how)
		case i == describeLimit:
			fmt.Fprintf(&desc, "; and %d more", len(tail)-describeLimit)
		}
	}
	img.desc = desc.String()
	return img, nil
}

// hugeBytes is the size of a transparent huge page on x86-64 and arm64.
const hugeBytes = 2 << 20

// fill copies the pages of st into mem, which is zero. Huge pages are asked
// for only where at least half of the 4 KiB pages hold data, so a sparse
// image costs at most twice the bytes it really holds. Huge pages sit at
// 2 MiB-aligned addresses, which mem need not start at.
func fill(mem []byte, st state, levels int) {
	if st.size == 0 {
		return
	}
	skew := int64(uintptr(unsafe.Pointer(&mem[0])) % hugeBytes)
	dense := make([]int32, (skew+st.size+hugeBytes-1)/hugeBytes)
	eachPage(st.root, levels-1, 0, func(idx int64, p *page) {
		if off := idx * pageBytes; off < st.size {
			dense[(skew+off)/hugeBytes]++
		}
	})
	for lo := 0; lo < len(dense); {
		hi := lo
		for hi < len(dense) && dense[hi] >= hugeBytes/pageBytes/2 {
			hi++
		}
		if hi > lo {
			from := max(0, int64(lo)*hugeBytes-skew)
			to := min(int64(len(mem)), int64(hi)*hugeBytes-skew)
			adviseHuge(mem, from, to)
		}
		lo = hi + 1
	}
	eachPage(st.root, levels-1, 0, func(idx int64, p *page) {
		if off := idx * pageBytes; off < st.size {
			copy(mem[off:st.size], p.data[:])
		}
	})
}

// choose decides the fate of one unsynced operation and returns the parts
// of it that reach the disk, and the fate in words.
func choose(r record, rng *rand.Rand) ([]record, string) {
	if rng == nil {
		return nil, "dropped"
	}
	if r.kind != OpWrite {
		if rng.IntN(2) == 0 {
			return []record{r}, "kept"
		}
		return nil, "dropped"
	}
	switch rng.IntN(3) {
	case 0:
		return []record{r}, "kept"
	case 1:
		return nil, "dropped"
	}
	if r.length == 0 {
		return nil, "torn (empty)"
	}
	end := r.off + r.length
	first, last := r.off/sectorBytes, (end-1)/sectorBytes
	var kept []record
	var how strings.Builder
	how.WriteString("torn, sectors kept:")
	runStart := int64(-1) // first sector of the run of kept sectors being built
	for sector := first; sector <= last+1; sector++ {
		keep := sector <= last && rng.IntN(2) == 0
		if keep && runStart < 0 {
			runStart = sector
		}
		if keep || runStart < 0 {
			continue
		}
		lo := max(r.off, runStart*sectorBytes)
		hi := min(end, sector*sectorBytes)
		kept = append(kept, record{kind: OpWrite, off: lo, length: hi - lo, data: r.data[lo-r.off : hi-r.off]})
		if runStart == sector-1 {
			fmt.Fprintf(&how, " %d", runStart)
		} else {
			fmt.Fprintf(&how, " %d-%d", runStart, sector-1)
		}
		runStart = -1
	}
	if len(kept) == 0 {
		how.WriteString(" none")
	}
	fmt.Fprintf(&how, " of %d-%d", first, last)
	kept = append(kept, record{kind: opExtend, off: end})
	return kept, how.String()
}
