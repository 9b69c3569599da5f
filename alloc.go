// Package pagealloc manages space inside one file for storage engines: blob
// stores, B-trees, value logs, caches.
//
// A Device is one file, mapped once for reading. Every change to the
// library's own metadata, and any bytes the caller chooses to journal, is
// made inside a transaction (Txn) whose writes reach a write-ahead journal
// before their home locations, so that after a crash at any instant Open
// finds the state of some prefix of the committed transactions, including
// every transaction whose Commit returned. Commits from many goroutines
// share one journal write and one fsync (group commit).
//
// The caller's bulk data is written with Device.WriteAt, without the
// journal; it becomes durable at the next Commit or Sync, and a commit never
// becomes durable before the data written ahead of it.
package pagealloc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/pagealloc/pagealloc/internal/storage"
)

const (
	minPageBytesFloor   = 512
	maxPageBytesCeiling = 1 << 30
	defaultMinPageBytes = 4096
	defaultMaxPageBytes = 16 << 20
	defaultGrowthStep   = 64 << 20

	// maxRegionBytes bounds the journal, the root area and the log
	// regions each, so that the layout's sums cannot overflow.
	maxRegionBytes = math.MaxInt64 / 4
)

// defaultMaxSize is the address space a device reserves when Options.MaxSize
// is zero: 1 TiB where addresses are 64 bits wide, 1 GiB elsewhere.
var defaultMaxSize int64 = 1 << 30

func init() {
	if strconv.IntSize == 64 {
		defaultMaxSize = 1 << 40
	}
}

// Options configures Create and Open. A nil *Options means all defaults.
// Geometry fields (page sizes, JournalSize, RootSize) are fixed at Create
// and read from the file by Open, which ignores them.
type Options struct {
	// MaxSize is the most bytes the device file may ever hold, reserved as
	// address space at once so that the mapping never moves. Zero means
	// 1 TiB (1 GiB on 32-bit platforms) at Create, and the size recorded
	// in the file at Open. An Open for writing records the MaxSize it is
	// given for the Opens that follow: a larger one before it returns (a
	// checkpoint, two syncs), so that a crash never leaves a device that
	// grew past the recorded size; a smaller one at Close if not before.
	// A read-only Open records nothing. A MaxSize at Open below the file's
	// size, or below the heap the device holds (the file may be shorter
	// after a crash), is refused with ErrInvalidArgument, as is a negative
	// one; a MaxSize more than the platform can map, with ErrTooLarge.
	// Reserving address space costs no memory or disk.
	// The heap follows the headers, aligned to MaxPageSize, and grows one
	// max page at a time: bytes past the last whole max page below MaxSize
	// are never handed out, and a MaxSize below the headers plus one max
	// page leaves no heap at all (Alloc returns ErrNoSpace), only the
	// root area and the log regions of Options.LogRegions. The heap is
	// cut into blocks of 2 × MaxPageSize, at least 1 GiB, each beginning
	// with its pages' state bits, which are never handed out either
	// (Inspect's BlockMetadataBytes): with small pages they can fill a
	// block's first max page, or more, and the heap holds a page only
	// once it has grown past them.
	MaxSize int64

	// MinPageSize is the smallest page the allocator hands out, a power of
	// two from 512 bytes to 1 GiB. Zero means 4 KiB.
	MinPageSize int64

	// MaxPageSize is the largest page the allocator hands out, a power of
	// two no smaller than MinPageSize and at most 1 GiB. Zero means 16 MiB.
	MaxPageSize int64

	// JournalSize is the size of the journal ring, a multiple of 4 KiB of
	// at least 64 KiB. One transaction's record may take at most half of
	// it, and less than 4 GiB (a record's length is 32 bits): about 37% of
	// it in bytes written contiguously (see Txn.Commit for the count).
	// Zero means 4 MiB.
	JournalSize int64

	// RootSize is the size of the caller's root area, a multiple of 4 KiB.
	// Zero means 4 KiB.
	RootSize int64

	// NoSync skips every fsync. A crash may then lose or tear anything;
	// meant for tests and benchmarks only. False (the default) syncs.
	NoSync bool

	// ReadOnly opens the device without writing to it: the journal is
	// replayed in memory only, and Begin and WriteAt return ErrReadOnly.
	// A file a crash left shorter than the heap (its growth lost) is not
	// grown: the bytes past its end read as zeroes, under the replay's.
	// It shares the file with other read-only Devices but not with one
	// open for writing (see Open). False opens it for writing.
	ReadOnly bool

	// WritableMap maps the file read-write so that the caller can write
	// through slices from Slice: those bytes are the caller's to make
	// durable, with Sync (Close syncs them too). With ReadOnly, Open
	// refuses it (ErrInvalidArgument). False maps it read-only, so a
	// stray write through a slice faults instead of corrupting metadata.
	WritableMap bool

	// GrowthStep sets how the file grows when the allocator's frontier
	// passes its end: to the next multiple of GrowthStep that covers the
	// frontier, or to MaxSize once the frontier is within a step of it,
	// and only as far as needed where the room or the file size limit ends
	// inside the step. Zero means 64 MiB; it is never less than
	// MaxPageSize.
	GrowthStep int64

	// PunchHoles returns the storage of every max page that becomes
	// wholly free to the filesystem (fallocate punch-hole), keeping only
	// its first 4 KiB, where its free-list links live. A punch cannot be
	// undone, so it waits until the transaction that freed the page is
	// durable; the next transaction to allocate or free after that makes
	// it (or Close), if the page is still free, whatever other commits
	// are under way. False keeps the storage.
	PunchHoles bool

	// Preallocate reserves the filesystem's blocks under the whole file
	// (fallocate) at Create and Open and whenever the file grows, so that
	// a full filesystem makes Alloc return ErrNoSpace and the device goes
	// on. Without it the file is sparse, and the filesystem running out
	// of room fails the device at a write into a hole (see Commit). With
	// PunchHoles too, a punched max page is reserved again before Alloc
	// hands out any of it, and each Open reserves the whole file, taking
	// back what was punched before. Create, or Open for writing, returns
	// ErrNoSpace if the room is not there. Supported on Linux, on
	// filesystems with fallocate: elsewhere Create and Open for writing
	// fail with an error matching both ErrInvalidArgument and
	// errors.ErrUnsupported; a read-only Open ignores it. A copy-on-write
	// filesystem (btrfs, ZFS) can still run out of room when overwriting
	// reserved blocks.
	Preallocate bool

	// LogRegions names and sizes the log-structured regions laid out at
	// Create (see Device.Log). Nil means none. Ignored by Open.
	LogRegions []LogRegion
}

// LogRegion names one log-structured region to lay out at Create.
type LogRegion struct {
	Name string // unique within the device, at most 32 bytes
	Size int64  // bytes of ring, a positive multiple of 4 KiB
}

// withDefaults returns a copy with zero fields replaced by defaults, or an
// error naming the first field out of range.
func (o *Options) withDefaults() (Options, error) {
	var v Options
	if o != nil {
		v = *o
	}
	if v.MaxSize == 0 {
		v.MaxSize = defaultMaxSize
	}
	if v.MinPageSize == 0 {
		v.MinPageSize = defaultMinPageBytes
	}
	if v.MaxPageSize == 0 {
		v.MaxPageSize = defaultMaxPageBytes
	}
	if v.JournalSize == 0 {
		v.JournalSize = defaultJournalBytes
	}
	if v.RootSize == 0 {
		v.RootSize = defaultRootBytes
	}
	if v.GrowthStep == 0 {
		v.GrowthStep = defaultGrowthStep
	}
	switch {
	case v.MaxSize < 0:
		return v, errNegativeMaxSize(v.MaxSize)
	case int64(int(v.MaxSize)) != v.MaxSize:
		return v, errUnmappable(v.MaxSize)
	case !validPageSize(v.MinPageSize) || v.MinPageSize < minPageBytesFloor || v.MinPageSize > maxPageBytesCeiling:
		return v, fmt.Errorf("%w: MinPageSize %d is not a power of two in [%d, 1 GiB]", ErrInvalidArgument, v.MinPageSize, minPageBytesFloor)
	case !validPageSize(v.MaxPageSize) || v.MaxPageSize < v.MinPageSize || v.MaxPageSize > maxPageBytesCeiling:
		// The smallest it may be is the MinPageSize given, or the default.
		return v, fmt.Errorf("%w: MaxPageSize %d is not a power of two in [MinPageSize %d, 1 GiB]", ErrInvalidArgument, v.MaxPageSize, v.MinPageSize)
	case v.JournalSize < minJournalBytes || v.JournalSize%4096 != 0:
		return v, fmt.Errorf("%w: JournalSize %d is not a multiple of 4 KiB >= 64 KiB", ErrInvalidArgument, v.JournalSize)
	case v.GrowthStep < 0:
		return v, errNegativeGrowthStep(v.GrowthStep)
	case v.RootSize <= 0 || v.RootSize%4096 != 0:
		return v, fmt.Errorf("%w: RootSize %d is not a positive multiple of 4 KiB", ErrInvalidArgument, v.RootSize)
	case v.JournalSize > maxRegionBytes || v.RootSize > maxRegionBytes:
		// Above this the layout's sums could overflow.
		return v, fmt.Errorf("%w: JournalSize %d or RootSize %d is above %d", ErrTooLarge, v.JournalSize, v.RootSize, int64(maxRegionBytes))
	}
	return v, nil
}

// Device is one device file. Its methods are safe for concurrent use; a
// Txn's are not: one goroutine at a time uses it.
type Device struct {
	store    storage.Storage
	view     []byte // the mapping: capacity bytes, valid below size
	homeView []byte // a writable mapping for applying journaled writes, or nil
	mapsHome bool   // homeView was mapped at Open; unlike it, never changes
	opts     Options
	capacity int64
	geometry superblock // fixed at Create; the journal owns the live copy

	size atomic.Int64 // bytes the store holds; the mapping is readable below it
	// zeroEnd is 0, or, on a read-only device whose file a crash left
	// shorter than the heap, the allocator's frontier: reads go on past
	// the file's end up to it, finding zeroes (see readableEnd). A
	// writable Open reads so too, until its checks have passed and it
	// grows the file.
	zeroEnd int64
	growMu  sync.Mutex

	writer   sync.Mutex  // held by the one open writing transaction
	txSeq    uint64      // sequence of the last committed transaction; under writer
	txLines  int         // lines the last transaction wrote, to size the next's table; under writer
	deadSort sortBuffers // Txn.settleLines' sort space; under writer
	pending  overlay     // committed writes not yet at their home locations
	journal  *journal

	// homeSeq is odd while the journal writes a group home, and homeMu is
	// held for writing meanwhile: ReadAt retries a copy that a group's
	// home writes overlapped, and after two tries waits them out, so that
	// it never returns part of a transaction.
	homeSeq atomic.Uint64
	homeMu  sync.RWMutex
	staging staging // aligned buffers for journal records and log frames; none if read-only

	durableTxSeq    atomic.Uint64 // every transaction up to it is durable
	checkpointTxSeq atomic.Uint64 // every transaction up to it is at home and synced

	userDirty atomic.Bool // WriteAt since the last sync
	// syncMu is held from taking userDirty until the sync that follows
	// returns, so that whoever finds the flag clear knows the data is
	// durable, not merely on its way.
	syncMu sync.Mutex

	// Components layered on the journal.
	alloc    *allocator // the buddy allocator; buddy.go
	logs     *logSet    // log-structured regions; logstructured.go
	subpages subpageSet // sub-page classes; subpage.go

	// lifeMu is held shared by the public calls that touch the mapping
	// outside the writer slot (ReadAt, WriteAt, Slice, log reads and
	// writes, …), and exclusively by Close while it unmaps, after it has
	// taken the writer slot, which the others (Check, Inspect, WalkHeap,
	// a transaction's reads) hold instead.
	lifeMu  sync.RWMutex
	closeMu sync.Mutex
	closed  atomic.Bool
	failure atomic.Pointer[failedError]
	failed  chan struct{} // closed when failure is set
}

// Create creates a device file at path and opens it. It fails with
// ErrExists if the file exists. Only the headers and the journal's ring
// (zeroed) are written: creating a device of any MaxSize takes the same
// few writes and the file stays sparse (Options.Preallocate reserves those
// blocks, no more).
func Create(path string, opts *Options) (*Device, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if o.ReadOnly {
		return nil, fmt.Errorf("%w: cannot create a device read-only", ErrInvalidArgument)
	}
	f, err := storage.CreateFile(path)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%w: file %s", ErrExists, path)
	}
	if errors.Is(err, storage.ErrLocked) {
		// Created here, but another process opened it before it could
		// be locked (an Open that fails on the empty file): CreateFile
		// removed it again.
		return nil, fmt.Errorf("%w: file %s: %w", ErrInUse, path, err)
	}
	if err != nil {
		return nil, err
	}
	d, err := createOn(f, o)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return d, nil
}

// Open opens the device file at path, replaying its journal: the device
// then holds every transaction whose Commit returned before a crash. A
// path that is not a regular file (a directory, a FIFO) is refused with
// ErrInvalidArgument.
//
// On Unix systems Open locks the file (flock) until Close, so that two
// Devices never write one file: each would keep its own allocator state
// and journal position and overwrite the other's transactions. A Device
// open for writing has the file to itself; read-only ones share it with
// each other. An Open that would break this, in this process or another,
// fails at once with ErrInUse. On a filesystem without flock, and on
// other systems, no lock is taken and keeping to one writer is the
// caller's to see to.
func Open(path string, opts *Options) (*Device, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	f, err := storage.OpenFile(path, o.ReadOnly)
	if errors.Is(err, storage.ErrNotRegular) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if errors.Is(err, storage.ErrLocked) {
		return nil, fmt.Errorf("%w: another Device has the file open: %w", ErrInUse, err)
	}
	if err != nil {
		return nil, err
	}
	d, err := openOn(f, &o)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// createOn formats an empty store and opens it.
func createOn(store storage.Storage, o Options) (*Device, error) {
	if size, err := store.Size(); err != nil {
		return nil, err
	} else if size != 0 {
		return nil, fmt.Errorf("%w: store is not empty", ErrExists)
	}
	root := region{2 * superblockSlotBytes, o.RootSize}
	journal := region{root.end(), o.JournalSize}
	state := region{journal.end(), stateBytes}
	logsSize, err := logRegionsBytes(o.LogRegions)
	if err != nil {
		return nil, err
	}
	logs := region{state.end(), logsSize}
	sb := superblock{
		version:  formatVersion,
		deviceID: rand.Uint64(),
		capacity: o.MaxSize,
		minPage:  o.MinPageSize,
		maxPage:  o.MaxPageSize,
		root:     root,
		journal:  journal,
		state:    state,
		logs:     logs,
		heapOff:  alignUp(logs.end(), o.MaxPageSize),
	}
	if sb.capacity < sb.heapOff {
		return nil, fmt.Errorf("%w: MaxSize %d is smaller than the %d bytes of headers", ErrInvalidArgument, o.MaxSize, sb.heapOff)
	}
	if err := store.Truncate(sb.heapOff); errors.Is(err, storage.ErrFileLimit) {
		return nil, fmt.Errorf("%w: %d bytes of headers: %w", ErrTooLarge, sb.heapOff, err)
	} else if err != nil {
		return nil, err
	}
	if o.Preallocate {
		// Before the writes below, which would fail on a full filesystem
		// with a bare ENOSPC.
		if err := reserveSpace(store, 0, sb.heapOff); err != nil {
			return nil, err
		}
	}
	// Zero the journal ring once so that journal writes overwrite allocated
	// blocks: a sync then flushes data alone, where writing a hole also
	// commits the filesystem's block allocation, which costs about twice
	// as much.
	if err := writeZeroes(store, journal); err != nil {
		return nil, err
	}
	if err := initLogRegions(store, logs, o.LogRegions); err != nil {
		return nil, err
	}
	// The superblocks make the file a device: they go last, once the
	// rest is durable, so that a crash inside Create leaves a file that
	// claims to be no device rather than one whose headers are missing.
	if !o.NoSync {
		if err := store.Sync(); err != nil {
			return nil, err
		}
	}
	// Both copies start valid, so a device never depends on one sector.
	var slot [superblockBytes]byte
	for seq := uint64(0); seq < 2; seq++ {
		sb.seq = seq
		sb.encode(slot[:])
		if _, err := store.WriteAt(slot[:], superblockOffset(seq)); err != nil {
			return nil, err
		}
	}
	if !o.NoSync {
		if err := store.Sync(); err != nil {
			return nil, err
		}
	}
	o.MaxSize = 0 // take the capacity just recorded
	return openOn(store, &o)
}

func superblockOffset(seq uint64) int64 { return int64(seq%2) * superblockSlotBytes }

// readSuperblock returns the newest copy that verifies. A newer copy
// whose checksum verifies but whose format version is newer than this
// package reads makes the device that version's: ErrVersion.
func readSuperblock(store storage.Storage, size int64) (superblock, error) {
	if size < 2*superblockSlotBytes {
		return superblock{}, corruptf(size, "device header", "a file of at least %d bytes", 2*superblockSlotBytes)
	}
	var best superblock
	var errs [2]error
	found := false
	var newer error // the newest copy of a newer version, if any
	var newerSeq uint64
	for slot := uint64(0); slot < 2; slot++ {
		var buf [superblockBytes]byte
		off := superblockOffset(slot)
		if _, err := store.ReadAt(buf[:], off); err != nil {
			return best, err
		}
		sb, err := decodeSuperblock(buf[:], off)
		if errors.Is(err, ErrVersion) && (newer == nil || sb.seq > newerSeq) {
			newer, newerSeq = err, sb.seq
		}
		if err == nil && sb.seq%2 != slot {
			err = corruptf(off, "superblock", "a sequence number of parity %d, found %d", slot, sb.seq)
		}
		if err != nil {
			errs[slot] = err
			continue
		}
		if !found || sb.seq > best.seq {
			best, found = sb, true
		}
	}
	if newer != nil && found && newerSeq > best.seq {
		return best, newer
	}
	if !found {
		// A newer version in either copy explains both failures best.
		for _, err := range errs {
			if errors.Is(err, ErrVersion) {
				return best, err
			}
		}
		return best, errors.Join(errs[0], errs[1])
	}
	return best, nil
}

// errNegativeGrowthStep is the error of Options.GrowthStep step, which is
// negative.
func errNegativeGrowthStep(step int64) error {
	return fmt.Errorf("%w: GrowthStep %d is negative", ErrInvalidArgument, step)
}

// errNegativeMaxSize is the error of Options.MaxSize size, which is
// negative.
func errNegativeMaxSize(size int64) error {
	return fmt.Errorf("%w: MaxSize %d is negative", ErrInvalidArgument, size)
}

// errUnmappable is the error of a capacity, given as MaxSize or recorded
// in the file, that is more than an int can count on this platform.
func errUnmappable(capacity int64) error {
	return fmt.Errorf("%w: a capacity of %d bytes is more than this platform can map", ErrTooLarge, capacity)
}

// errMaxSizeBelow is the error of an Open whose MaxSize, capacity, falls
// short of what, at end, inside the capacity the file records: the file
// is sound, the MaxSize too small for it.
func errMaxSizeBelow(capacity int64, what string, end int64) error {
	return fmt.Errorf("%w: MaxSize %d is below %s %d; open with a larger MaxSize or none", ErrInvalidArgument, capacity, what, end)
}

// openOn opens a formatted store: it reads the superblock, maps the store,
// replays the journal and starts the journal writer.
func openOn(store storage.Storage, opts *Options) (*Device, error) {
	// The options Open does not take from the file have their defaults
	// here, as withDefaults gives them at Create.
	if opts.GrowthStep < 0 {
		return nil, errNegativeGrowthStep(opts.GrowthStep)
	}
	if opts.MaxSize < 0 {
		return nil, errNegativeMaxSize(opts.MaxSize)
	}
	if opts.ReadOnly && opts.WritableMap {
		// The file is open for reading only: a write through the
		// mapping would fault.
		return nil, fmt.Errorf("%w: WritableMap on a read-only device", ErrInvalidArgument)
	}
	size, err := store.Size()
	if err != nil {
		return nil, err
	}
	sb, err := readSuperblock(store, size)
	if err != nil {
		return nil, err
	}
	if size < sb.heapOff {
		return nil, corruptf(size, "device header", "a file of at least %d bytes", sb.heapOff)
	}
	o := *opts
	if o.GrowthStep == 0 {
		o.GrowthStep = defaultGrowthStep
	}
	o.MinPageSize, o.MaxPageSize = sb.minPage, sb.maxPage
	o.JournalSize, o.RootSize = sb.journal.size, sb.root.size
	capacity := sb.capacity
	switch {
	case o.MaxSize == 0 && capacity < size:
		// Grown past it behind the device's back: a MaxSize may take it.
		return nil, fmt.Errorf("%w: the file's %d bytes exceed the device's capacity of %d; open it with a MaxSize that covers them", ErrInvalidArgument, size, capacity)
	case o.MaxSize != 0:
		capacity = o.MaxSize
	}
	if o.MaxSize = capacity; capacity < size {
		return nil, fmt.Errorf("%w: MaxSize %d is smaller than the file's %d bytes", ErrInvalidArgument, capacity, size)
	}
	if int64(int(capacity)) != capacity {
		return nil, errUnmappable(capacity)
	}
	mapper, ok := store.(storage.Mapper)
	if !ok {
		return nil, fmt.Errorf("%w: store cannot be mapped", ErrInvalidArgument)
	}
	view, err := mapper.Map(capacity, o.WritableMap)
	if err != nil {
		// The address space for MaxSize could not be reserved.
		return nil, fmt.Errorf("%w: mapping a capacity of %d bytes: %w", ErrTooLarge, capacity, err)
	}
	d := &Device{store: store, view: view, opts: o, capacity: capacity, geometry: sb, failed: make(chan struct{})}
	if mw, ok := store.(storage.MapWriter); ok && !o.ReadOnly {
		// Without it, home writes go through WriteAt: slower, as correct.
		d.homeView, _ = mw.MapWritable(capacity)
		d.mapsHome = d.homeView != nil
	}
	d.size.Store(size)
	if !o.ReadOnly {
		// Before recovery, whose home writes may fall in holes.
		if err := d.reserve(0, size); err != nil {
			return nil, err
		}
	}
	d.alloc = newAllocator(d)
	d.journal = newJournal(d, sb)
	d.setTxSeq(sb.txSeq)
	if err := d.journal.recover(); err != nil {
		return nil, err
	}
	if err := d.alloc.load(); err != nil {
		return nil, err
	}
	if err := d.loadSubpages(); err != nil {
		return nil, err
	}
	// Transactions replayed since the checkpoint left no sequence number,
	// but the newest page they freed carries its transaction's, as the
	// newest slot they freed did for loadSubpages: continue after both,
	// so that sequence numbers only grow across opens. A tail whose header
	// is no pending page's holds no stamp: the allocator reports it when
	// it reaches it.
	if tail := d.alloc.last.pendTail; tail != 0 {
		var b [pageHeaderBytes]byte
		d.readCommittedRange(b[:], tail)
		if h := decodeHeader(b[:]); h.magic == pendingMagic {
			seq := uint64(h.word0)
			if seq >= maxTxSeq {
				return nil, corruptf(tail, "pending page", "the sequence number of the transaction that freed it, below %d, found %d", uint64(maxTxSeq), seq)
			}
			d.setTxSeq(max(d.txSeq, seq))
		}
	}
	// The file's growth is not journaled: a crash may have lost it. A
	// writable Open grows it again, once its checks have passed; until
	// then, and on a read-only device for good, reads find zeroes there,
	// as the grown file would hold under the journal's bytes.
	if frontier := d.alloc.last.frontier; size < frontier {
		// But only a record moves the frontier past the file: every
		// checkpoint syncs the file, its size included, after the
		// growth under the frontier it covers. Without one, the word
		// is damaged, and growing the file to it would be a change
		// for nothing (a huge one, with Options.Preallocate).
		frontierOff := d.geometry.state.off + stateFrontierOff
		if !d.journal.replayed(frontierOff, 8) {
			return nil, corruptf(frontierOff, "allocator state", "a frontier inside the file's %d bytes, as the last checkpoint synced them (no journal record moves it), found %d", size, frontier)
		}
		d.zeroEnd = frontier
	}
	if err := d.openLogs(); err != nil {
		d.closeLogs()
		return nil, err
	}
	if !o.ReadOnly {
		// Nothing above refused the device: the file may change now,
		// grown back to the frontier, then the records recovery
		// replayed written home.
		if lost := d.zeroEnd; lost != 0 {
			step := d.alloc.growStep
			if capacity > sb.capacity && lost > sb.capacity-step {
				// A step would take the file past the capacity
				// it records before the larger one is recorded
				// below, and a crash between would leave a file
				// an Open without a MaxSize refuses: grow it to
				// the frontier only.
				step = 1
			}
			if err := d.growTo(lost, step); err != nil {
				d.closeLogs()
				return nil, err
			}
			d.zeroEnd = 0
		}
		if err := d.journal.finishRecovery(); err != nil {
			d.closeLogs()
			return nil, err
		}
		// Checkpoints record the capacity of an Open that got this far,
		// not that of one that failed: the one at Close records it even
		// if nothing else changed.
		d.journal.capacity.Store(capacity)
		if capacity > sb.capacity {
			// Recorded now, before the heap or the file can grow past
			// the recorded capacity: a crash must not leave a file, or
			// a frontier, that an Open without a MaxSize refuses.
			if err := d.journal.checkpoint(); err != nil {
				d.closeLogs()
				return nil, err
			}
		}
		d.staging = newStaging(d.journal.maxRecord)
		d.journal.start()
	}
	return d, nil
}

// maxTxSeq bounds the transaction sequence numbers a device file may hold:
// no device commits 2^62 transactions, and a stamp near 2^64 would make
// the numbers that follow it wrap, and sequence comparisons fail.
const maxTxSeq = 1 << 62

// setTxSeq makes seq the last committed, durable and checkpointed
// transaction, as it is when a device opens.
func (d *Device) setTxSeq(seq uint64) {
	d.txSeq = seq
	d.durableTxSeq.Store(seq)
	d.checkpointTxSeq.Store(seq)
}

// Close waits for the open transaction, if any, to end (so it must not be
// called while the calling goroutine holds one open), makes the bytes
// written in place (WriteAt, or through Options.WritableMap) durable,
// writes a checkpoint and closes the file. Sub-page slots still pending
// are released first (after a checkpoint, if one must cover them), and
// empty parents go back to the buddy allocator. Free space at the end of
// the heap goes back to the filesystem: the file is cut after the last max
// page that holds an allocated or pending page. When that max page holds
// pending pages and no allocated one, Close first waits for a checkpoint
// to make the pending pages free, and cuts after the last max page holding
// an allocated page. A pending queue or list that the file's corruption
// broke stops these releases where it is broken, and is left for Check to
// report. Slices from Slice are invalid after it. Close is idempotent:
// later calls return nil.
func (d *Device) Close() error {
	if d.unmade() {
		return errNil("Device")
	}
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if d.closed.Load() {
		return nil
	}
	// New calls fail from here on; the open transaction may still finish.
	d.closed.Store(true)
	// Background work (log GC) stops before the writer slot is taken,
	// since it runs transactions of its own.
	d.closeLogs()
	var err error
	if !d.opts.ReadOnly {
		err = d.drainSubpages(false)
		if d.failure.Load() == nil {
			err = errors.Join(err, d.retractHeap())
		}
	}
	d.writer.Lock()
	defer d.writer.Unlock()
	if !d.opts.ReadOnly {
		if serr := d.journal.stop(); err == nil {
			err = serr
		}
	}
	d.lifeMu.Lock()
	defer d.lifeMu.Unlock()
	// A write in place that passed its check before Close began may have
	// landed after the journal's last sync; none can start now. Writes
	// through a writable mapping leave no trace: sync for them always.
	if !d.opts.ReadOnly && d.failure.Load() == nil && (d.userDirty.Swap(false) || d.opts.WritableMap) {
		if serr := d.sync(); serr != nil {
			err = errors.Join(err, d.fail(serr))
		}
	}
	if end := d.alloc.last.frontier; err == nil && !d.opts.ReadOnly && end < d.size.Load() {
		// The frontier's move is checkpointed: nothing durable lies
		// past it. A store that cannot cut a mapped file (Windows)
		// keeps the space, harmlessly.
		if d.store.Truncate(end) == nil {
			d.size.Store(end)
		}
	}
	d.view, d.homeView = nil, nil
	// The journal has stopped and no log write holds lifeMu, so every
	// staging buffer is back but those of frames staged and never
	// written, which never will be now.
	for _, l := range d.logs.all() {
		l.releaseStaged()
	}
	return errors.Join(err, d.staging.close(), d.store.Close())
}

// Root returns the offset and size of the caller's root area: a few bytes
// where a storage engine keeps its own root pointers. Write them only with
// Txn.Write, so that they change atomically with the rest of a transaction.
func (d *Device) Root() (off, size int64) {
	if d.unmade() {
		return 0, 0
	}
	return d.geometry.root.off, d.geometry.root.size
}

// ReadAt reads committed state: everything written by transactions whose
// Commit has been called, and by WriteAt. Each transaction's writes appear
// whole or not at all: a read never shows part of a commit. It implements
// io.ReaderAt.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if d.unmade() {
		return 0, errNil("Device")
	}
	d.lifeMu.RLock()
	defer d.lifeMu.RUnlock()
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if off < 0 {
		return 0, fmt.Errorf("%w: read at %d", ErrOutOfRange, off)
	}
	if off >= d.readableEnd() {
		return 0, io.EOF
	}
	n := 0
	for try := 0; ; try++ {
		if try == 2 {
			d.homeMu.RLock()
		}
		// The overlay first: a transaction released from it after this
		// has its bytes at home before the copy (see readCommitted). One
		// committed after it may be going home during the copy: then
		// homeSeq moves, and the copy is made again.
		seq := d.homeSeq.Load()
		txs := d.pending.list()
		size := d.size.Load()
		n = int(min(int64(len(p)), max(size, d.zeroEnd)-off))
		m := 0
		if off < size {
			m = copy(p[:n], d.view[off:size])
		}
		clear(p[m:n])
		overlayRead(txs, p[:n], off)
		if try == 2 {
			d.homeMu.RUnlock()
			break
		}
		if d.homeSeq.Load() == seq {
			break
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes the caller's data in place, without the journal. It is
// accepted only where the caller owns the bytes: pages whose allocation
// is durable, as it is once its Commit returns (before, a crash could
// bring the page back free with the write over its free-list header),
// and log reservations. The root area and the library's own state are
// refused with ErrProtected. A write must lie inside one page: one
// spanning two pages is refused even when both are the caller's. Inside
// a sub-page parent the check is per page: any slot's bytes are
// accepted, the header's are not. The data is durable once Sync, the
// next Commit or Close returns. It implements io.WriterAt.
//
// A byte written in place after a journaled write of it (Txn.Write) may
// be put back to the journaled value by replay after a crash, until the
// next checkpoint; the other order is safe. Simplest: write any one byte
// one way only.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if d.unmade() {
		return 0, errNil("Device")
	}
	d.lifeMu.RLock()
	defer d.lifeMu.RUnlock()
	if err := d.usable(); err != nil {
		return 0, err
	}
	if err := d.checkUserWrite(off, int64(len(p)), nil); err != nil {
		return 0, err
	}
	n, err := d.store.WriteAt(p, off)
	// Only now: a journal write that takes the flag before the bytes
	// have landed must not count them as synced.
	d.userDirty.Store(true)
	if err != nil {
		return n, d.fail(err)
	}
	return n, nil
}

// Slice returns the n bytes at off as a view into the mapping, without a
// copy. It shows the bytes at their home location: the caller's bytes of
// transactions whose Commit returned (Txn.Write), and of WriteAt. The
// library's own state that a commit changed (the allocator's, a log's
// head and tail) may reach home only after its Commit has returned;
// ReadAt shows it at once. The view changes under the caller as later
// commits reach home, so a read of it may show part of one; ReadAt never
// does. The view is read-only unless Options.WritableMap is set, and
// invalid after Close. A range not inside the device, a negative n
// included, returns ErrOutOfRange.
//
// On a read-only device, the journal a crash left is replayed in memory
// only (Options.ReadOnly): a range holding bytes of the replay, or bytes
// past the end of a file that lost its growth, is returned as a copy
// that has them, not as a view.
func (d *Device) Slice(off, n int64) ([]byte, error) {
	if d.unmade() {
		return nil, errNil("Device")
	}
	d.lifeMu.RLock()
	defer d.lifeMu.RUnlock()
	if d.closed.Load() {
		return nil, ErrClosed
	}
	if end := d.readableEnd(); off < 0 || n < 0 || off > end-n {
		return nil, fmt.Errorf("%w: [%d, +%d) beyond %d bytes", ErrOutOfRange, off, n, end)
	}
	if d.opts.ReadOnly && n > 0 && (off+n > d.size.Load() || d.pending.holdsAny(off>>lineShift, (off+n-1)>>lineShift)) {
		b := make([]byte, n)
		d.readCommittedRange(b, off)
		return b, nil
	}
	return d.view[off : off+n : off+n], nil
}

// readableEnd returns where the device's bytes end for readers: the
// file's end, or past it the frontier of a read-only device whose file
// lost its growth (zeroEnd).
func (d *Device) readableEnd() int64 { return max(d.size.Load(), d.zeroEnd) }

// Sync makes every byte written by WriteAt durable. Committed transactions
// are durable already.
func (d *Device) Sync() error {
	if d.unmade() {
		return errNil("Device")
	}
	d.lifeMu.RLock()
	defer d.lifeMu.RUnlock()
	if err := d.usable(); err != nil {
		return err
	}
	// Always sync, even with the flag clear: bytes written through a
	// writable mapping never set it.
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	d.userDirty.Store(false)
	if err := d.sync(); err != nil {
		return d.fail(err)
	}
	return nil
}

// Begin starts the one writing transaction, waiting until the previous one
// has called Commit or Rollback. The transaction must end with exactly one
// of them.
func (d *Device) Begin() (*Txn, error) {
	if d.unmade() {
		return nil, errNil("Device")
	}
	if err := d.usable(); err != nil {
		return nil, err
	}
	if d.alloc.owed.CompareAndSwap(true, false) {
		d.releaseOwed()
	}
	if d.subpages.owed.CompareAndSwap(true, false) {
		// An error stops the release quietly, as releaseOwed's: the
		// caller's transactions meet it again.
		_ = d.drainSubpages(true)
	}
	return d.begin()
}

// begin is Begin without releasing pages owed (allocator.owed).
func (d *Device) begin() (*Txn, error) {
	d.writer.Lock()
	if err := d.usable(); err != nil {
		d.writer.Unlock()
		return nil, err
	}
	tx := &Txn{d: d}
	tx.lines.reserve(d.txLines)
	return tx, nil
}

// Update runs fn inside a transaction and commits it if fn returns nil;
// otherwise, or if fn panics, it rolls the transaction back. It returns
// fn's error or Commit's; a nil fn, ErrInvalidArgument. fn must not call
// Commit or Rollback itself: Update would then return ErrTxDone, even
// though fn's Commit succeeded.
func (d *Device) Update(fn func(*Txn) error) (err error) {
	if d.unmade() {
		return errNil("Device")
	}
	if fn == nil {
		return fmt.Errorf("%w: Update with a nil function", ErrInvalidArgument)
	}
	tx, err := d.Begin()
	if err != nil {
		return err
	}
	defer func() {
		if !tx.done {
			tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// usable returns why the device cannot be used, or nil.
func (d *Device) usable() error {
	if d.closed.Load() {
		return ErrClosed
	}
	if d.opts.ReadOnly {
		return ErrReadOnly
	}
	if f := d.failure.Load(); f != nil {
		return f
	}
	return nil
}

// fail puts the device into the failed state after an I/O error whose
// effect on the file is unknown, and returns the error to report.
func (d *Device) fail(err error) error {
	if d.failure.CompareAndSwap(nil, &failedError{cause: err}) {
		close(d.failed) // wakes those waiting for a checkpoint that will not come
		// Log commits and GC passes may wait for reservations that
		// their owners can no longer commit. The caller may hold a
		// log's lock, so they are woken from a goroutine of its own.
		go d.logs.wakeFailed(d.failure.Load())
	}
	return d.failure.Load()
}

func (d *Device) sync() error {
	if d.opts.NoSync {
		return nil
	}
	return d.store.Sync()
}

// checkUserWrite reports whether the caller may write n bytes at off:
// journaled by tx (Txn.Write) or, with a nil tx, in place (WriteAt).
func (d *Device) checkUserWrite(off, n int64, tx *Txn) error {
	journaled := tx != nil
	if off < 0 || n < 0 || off > d.size.Load()-n {
		return fmt.Errorf("%w: write of [%d, +%d) beyond %d bytes", ErrOutOfRange, off, n, d.size.Load())
	}
	if n == 0 {
		return nil
	}
	if d.geometry.root.contains(off, n) {
		if !journaled {
			return fmt.Errorf("%w: the root area takes only journaled writes (Txn.Write)", ErrProtected)
		}
		return nil
	}
	if d.geometry.logs.overlaps(off, n) || d.inCarvedLog(off, n) {
		return d.logWritable(off, n, journaled)
	}
	if off >= d.geometry.heapOff {
		return d.heapWritable(off, n, tx)
	}
	return fmt.Errorf("%w: [%d, +%d) holds device headers or the journal", ErrProtected, off, n)
}

// growTo grows the file to cover at least size bytes, in steps of step
// bytes, never past the capacity. Past the largest file the filesystem or
// the process allows, where the store tells (storage.ErrFileLimit), or
// past the filesystem's room with Options.Preallocate, it returns
// ErrNoSpace and the device goes on.
func (d *Device) growTo(size, step int64) error {
	d.growMu.Lock()
	defer d.growMu.Unlock()
	if size <= d.size.Load() {
		return nil
	}
	target := d.capacity
	if size < d.capacity-step { // else the step overshoots the capacity, or overflows
		target = (size + step - 1) / step * step // any step, not only powers of two
	}
	err := d.extend(target)
	if target > size && errors.Is(err, ErrNoSpace) {
		// The limit or the room ends inside the step: grow by just what
		// is needed.
		target = size
		err = d.extend(target)
	}
	if errors.Is(err, ErrNoSpace) {
		return err // refused, the growth changed nothing
	}
	if err != nil {
		return d.fail(err)
	}
	d.size.Store(target)
	return nil
}

// extend sets the file's size to target, above the recorded size, and
// reserves the new bytes with Options.Preallocate. A growth past the
// file's size limit (storage.ErrFileLimit) or the filesystem's room is
// refused with ErrNoSpace and changes nothing (the size is set back);
// any other error may have left the size anywhere.
func (d *Device) extend(target int64) error {
	old := d.size.Load()
	if err := d.store.Truncate(target); errors.Is(err, storage.ErrFileLimit) {
		return fmt.Errorf("%w: the file may not grow to %d bytes: %w", ErrNoSpace, target, err)
	} else if err != nil {
		return err
	}
	err := d.reserve(old, target-old)
	if errors.Is(err, ErrNoSpace) {
		if terr := d.store.Truncate(old); terr != nil {
			return terr
		}
	}
	return err
}

// reserve sets the filesystem's blocks aside under [off, off+length) if
// Options.Preallocate asks for it.
func (d *Device) reserve(off, length int64) error {
	if !d.opts.Preallocate {
		return nil
	}
	return reserveSpace(d.store, off, length)
}

// reserveSpace sets the filesystem's blocks aside under [off,
// off+length). Lack of room is ErrNoSpace.
func reserveSpace(store storage.Storage, off, length int64) error {
	if length <= 0 {
		return nil
	}
	r, ok := store.(storage.Reserver)
	if !ok {
		return fmt.Errorf("%w: Preallocate: the store cannot reserve space: %w", ErrInvalidArgument, errors.ErrUnsupported)
	}
	err := r.Reserve(off, length)
	switch {
	case errors.Is(err, storage.ErrNoSpace):
		return fmt.Errorf("%w: reserving %d bytes at offset %d: %w", ErrNoSpace, length, off, err)
	case errors.Is(err, errors.ErrUnsupported):
		return fmt.Errorf("%w: Preallocate: %w", ErrInvalidArgument, err)
	}
	return err
}

// punchFreePage returns the storage of a free max page to the filesystem
// where it can, keeping the first 4 KiB with the page's links. Failure is
// harmless: the space simply stays allocated in the file.
func (d *Device) punchFreePage(off, size int64) {
	if size <= 4096 {
		return
	}
	if p, ok := d.store.(storage.HolePuncher); ok {
		_ = p.PunchHole(off+4096, size-4096)
	}
}

// readCommittedRange fills p with committed bytes at off.
func (d *Device) readCommittedRange(p []byte, off int64) {
	for len(p) > 0 {
		n := min(len(p), lineBytes-int(off&(lineBytes-1)))
		d.readCommitted(p[:n], off)
		p, off = p[n:], off+int64(n)
	}
}

func writeZeroes(store storage.Storage, r region) error {
	zeroes := make([]byte, min(r.size, 1<<20))
	for off := r.off; off < r.end(); off += int64(len(zeroes)) {
		if _, err := store.WriteAt(zeroes[:min(int64(len(zeroes)), r.end()-off)], off); err != nil {
			return err
		}
	}
	return nil
}

// alignUp rounds n up to a multiple of align, a power of two.
func alignUp(n, align int64) int64 { return (n + align - 1) &^ (align - 1) }

func fmtVersionError(v uint32) error {
	return fmt.Errorf("%w: file has format version %d, this package reads up to %d", ErrVersion, v, formatVersion)
}
