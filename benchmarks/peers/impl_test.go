package peers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/pagealloc/pagealloc"
	"modernc.org/file"
	"modernc.org/lldb"
)

// Page sizes of every workload: pageSizes powers of two from 4 KiB to
// 64 KiB, drawn uniformly.
const (
	minPageBytes = 4 << 10
	pageSizes    = 5
	maxPageBytes = minPageBytes << (pageSizes - 1)
)

// allocator is the one shape every implementation is driven through, so
// that each pays the same harness cost (one interface call per operation).
// A handle is whatever the implementation returns from Alloc and takes back
// in Free.
type allocator interface {
	Alloc(sizeBytes int64) (handle int64, err error)
	Free(handle int64) error
	// Commit ends a batch of operations with the implementation's natural
	// unit of atomicity and, in a crash-safe variant, durability.
	Commit() error
	// Check runs the implementation's own consistency check, where it has
	// one; tests call it, benchmarks do not.
	Check() error
	Close() error
}

// impl names an implementation and opens a fresh instance of it in dir.
type impl struct {
	name string
	open func(dir string) (allocator, error)
}

// Implementations without fsync, for BenchmarkAllocFree.
var implsNoSync = []impl{
	{"floor", openFloor},
	{"pagealloc", func(dir string) (allocator, error) { return openPagealloc(dir, false) }},
	{"lldb", openLLDB},
	{"file", func(dir string) (allocator, error) { return openFile(dir, fileOS) }},
	{"file-mmap", func(dir string) (allocator, error) { return openFile(dir, fileMmap) }},
}

// Crash-safe implementations with a real fsync at every Commit, for
// BenchmarkAllocFreeSync.
var implsSync = []impl{
	{"pagealloc", func(dir string) (allocator, error) { return openPagealloc(dir, true) }},
	{"lldb-acid", openLLDBACID},
	{"file-wal", func(dir string) (allocator, error) { return openFile(dir, fileWAL) }},
}

// floorAllocator: the in-memory floor. Commit is a no-op: it has nothing
// to make atomic or durable.
type floorAllocator struct{ f *Floor }

func openFloor(string) (allocator, error) {
	f, err := NewFloor(minPageBytes, maxPageBytes)
	return floorAllocator{f}, err
}

func (a floorAllocator) Alloc(sizeBytes int64) (int64, error) {
	p, err := a.f.Alloc(sizeBytes)
	return int64(p), err
}

func (a floorAllocator) Free(h int64) error { a.f.Free(FloorPage(h)); return nil }
func (a floorAllocator) Commit() error      { return nil }
func (a floorAllocator) Check() error       { return nil }
func (a floorAllocator) Close() error       { return nil }

// pageallocAllocator: every operation runs in the one open transaction;
// Commit commits it and begins the next. With durable false the device has
// NoSync (the journal is written, never fsynced); with durable true every
// Commit returns only after its fsync.
type pageallocAllocator struct {
	d  *pagealloc.Device
	tx *pagealloc.Txn
}

func openPagealloc(dir string, durable bool) (allocator, error) {
	d, err := pagealloc.Create(filepath.Join(dir, "pagealloc.dev"), &pagealloc.Options{
		MinPageSize: minPageBytes,
		MaxPageSize: maxPageBytes,
		NoSync:      !durable,
	})
	if err != nil {
		return nil, err
	}
	tx, err := d.Begin()
	if err != nil {
		d.Close()
		return nil, err
	}
	return &pageallocAllocator{d: d, tx: tx}, nil
}

func (a *pageallocAllocator) Alloc(sizeBytes int64) (int64, error) {
	addr, err := a.tx.Alloc(sizeBytes)
	return int64(addr), err
}

func (a *pageallocAllocator) Free(h int64) error { return a.tx.Free(pagealloc.Addr(h)) }

func (a *pageallocAllocator) Commit() error {
	if err := a.tx.Commit(); err != nil {
		return err
	}
	tx, err := a.d.Begin()
	a.tx = tx
	return err
}

// Check runs Device.Check, which waits for the writing transaction: the
// open one, empty since Commit, is rolled back around it.
func (a *pageallocAllocator) Check() error {
	if err := a.tx.Rollback(); err != nil {
		return err
	}
	a.tx = nil
	if err := a.d.Check(); err != nil {
		return err
	}
	tx, err := a.d.Begin()
	a.tx = tx
	return err
}

func (a *pageallocAllocator) Close() error {
	var err error
	if a.tx != nil {
		err = a.tx.Rollback()
	}
	return errors.Join(err, a.d.Close())
}

// lldbAllocator: modernc.org/lldb's Allocator. Its Alloc takes the block's
// content rather than a size, so Alloc(n) writes n bytes of zeros: lldb has
// no way to reserve space without filling it, and that write is part of
// what using it costs.
//
// Over a SimpleFileFiler (the plain variant) BeginUpdate and EndUpdate only
// count nesting; Commit calls them anyway so that both variants run the
// same sequence. Over an ACIDFiler0 (lldb-acid), every write must happen
// between BeginUpdate and EndUpdate, and EndUpdate is lldb's two-phase
// commit: the batch goes to the WAL, the WAL is fsynced, the batch goes to
// the database file, that is fsynced, and the WAL is truncated and fsynced
// (three fsyncs).
type lldbAllocator struct {
	a       *lldb.Allocator
	filer   lldb.Filer
	content []byte // zeros, the content of every block
	files   []*os.File
}

func openLLDB(dir string) (allocator, error) {
	f, err := os.Create(filepath.Join(dir, "lldb.db"))
	if err != nil {
		return nil, err
	}
	return newLLDB(lldb.NewSimpleFileFiler(f), f)
}

func openLLDBACID(dir string) (allocator, error) {
	db, err := os.Create(filepath.Join(dir, "lldb.db"))
	if err != nil {
		return nil, err
	}
	wal, err := os.Create(filepath.Join(dir, "lldb.wal"))
	if err != nil {
		db.Close()
		return nil, err
	}
	filer, err := lldb.NewACIDFiler(lldb.NewSimpleFileFiler(db), wal)
	if err != nil {
		db.Close()
		wal.Close()
		return nil, err
	}
	return newLLDB(filer, db, wal)
}

func newLLDB(filer lldb.Filer, files ...*os.File) (allocator, error) {
	a, err := lldb.NewAllocator(filer, &lldb.Options{})
	if err == nil {
		err = filer.BeginUpdate()
	}
	if err != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	return &lldbAllocator{a: a, filer: filer, content: make([]byte, maxPageBytes), files: files}, nil
}

func (a *lldbAllocator) Alloc(sizeBytes int64) (int64, error) {
	if sizeBytes > int64(len(a.content)) {
		return 0, fmt.Errorf("lldb: Alloc(%d) exceeds %d", sizeBytes, len(a.content))
	}
	return a.a.Alloc(a.content[:sizeBytes])
}

func (a *lldbAllocator) Free(h int64) error { return a.a.Free(h) }

func (a *lldbAllocator) Commit() error {
	if err := a.filer.EndUpdate(); err != nil {
		return err
	}
	return a.filer.BeginUpdate()
}

func (a *lldbAllocator) Check() error {
	var problems []error
	err := a.a.Verify(lldb.NewMemFiler(), func(err error) bool {
		problems = append(problems, err)
		return len(problems) < 10
	}, nil)
	return errors.Join(append(problems, err)...)
}

func (a *lldbAllocator) Close() error {
	err := a.filer.EndUpdate()
	err = errors.Join(err, a.filer.Close())
	for _, f := range a.files {
		f.Close() // the filer has closed most of them already
	}
	return err
}

// fileAllocator: modernc.org/file's Allocator with automatic metadata
// flushing off, so that its in-memory free-list heads are written at Commit
// (Flush) rather than after every operation: the same batching pagealloc
// gets, and the cheaper way to use file.
//
// Plain (file, file-mmap): the allocator works on the database file
// directly, an *os.File (every header read and write a pread or pwrite) or
// file.Map's memory mapping of it, and Commit is Flush; nothing is fsynced
// and a crash can tear it. With a WAL (file-wal): the allocator works on a
// file.WAL over the *os.File with DoSync, and Commit is Flush then
// WAL.Commit, which writes the journal, fsyncs it, copies the pages to the
// database file, fsyncs that, and empties and fsyncs the journal.
type fileAllocator struct {
	a      *file.Allocator
	wal    *file.WAL // file-wal only
	mapped file.File // file-mmap only
	files  []*os.File
}

// fileBacking says what modernc.org/file's allocator works on.
type fileBacking int

const (
	fileOS   fileBacking = iota // the *os.File
	fileMmap                    // file.Map of it
	fileWAL                     // a file.WAL over it, fsyncing at Commit
)

// walPageLog is log2 of file.WAL's page: 4 KiB, its allocator's page.
const walPageLog = 12

func openFile(dir string, backing fileBacking) (allocator, error) {
	db, err := os.Create(filepath.Join(dir, "file.db"))
	if err != nil {
		return nil, err
	}
	r := &fileAllocator{files: []*os.File{db}}
	var f file.File = db
	switch backing {
	case fileMmap:
		if r.mapped, err = file.Map(db); err != nil {
			r.closeFiles()
			return nil, err
		}
		f = r.mapped
	case fileWAL:
		w, err := os.Create(filepath.Join(dir, "file.wal"))
		if err != nil {
			db.Close()
			return nil, err
		}
		r.files = append(r.files, w)
		if r.wal, err = file.NewWAL(db, w, 0, walPageLog); err != nil {
			r.closeFiles()
			return nil, err
		}
		r.wal.DoSync = true
		f = r.wal
	}
	if r.a, err = file.NewAllocator(f); err != nil {
		if r.mapped != nil {
			r.mapped.Close()
		}
		r.closeFiles()
		return nil, err
	}
	r.a.SetAutoFlush(false)
	return r, nil
}

func (a *fileAllocator) Alloc(sizeBytes int64) (int64, error) { return a.a.Alloc(sizeBytes) }
func (a *fileAllocator) Free(h int64) error                   { return a.a.Free(h) }

func (a *fileAllocator) Commit() error {
	if err := a.a.Flush(); err != nil {
		return err
	}
	if a.wal != nil {
		return a.wal.Commit()
	}
	return nil
}

func (a *fileAllocator) Check() error {
	if err := a.Commit(); err != nil {
		return err
	}
	return a.a.Verify(nil)
}

func (a *fileAllocator) Close() error {
	// Allocator.Close would also close its File; the files are closed
	// below, each once.
	err := a.Commit()
	if a.mapped != nil {
		// Unmaps, truncates to the allocator's size, fsyncs and closes the
		// *os.File.
		err = errors.Join(err, a.mapped.Close())
		a.files = nil
	}
	return errors.Join(err, a.closeFiles())
}

func (a *fileAllocator) closeFiles() error {
	var err error
	for _, f := range a.files {
		err = errors.Join(err, f.Close())
	}
	return err
}

// openFor opens impl in a fresh temporary directory, closed at cleanup.
func openFor(tb testing.TB, im impl) allocator {
	tb.Helper()
	a, err := im.open(tb.TempDir())
	if err != nil {
		tb.Fatalf("%s: open: %v", im.name, err)
	}
	tb.Cleanup(func() {
		if err := a.Close(); err != nil {
			tb.Errorf("%s: close: %v", im.name, err)
		}
	})
	return a
}
