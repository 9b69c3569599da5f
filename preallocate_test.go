package pagealloc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sync"
	"syscall"
	"testing"

	"github.com/pagealloc/pagealloc/internal/simstore"
	"github.com/pagealloc/pagealloc/internal/storage"
)

// fsBlock is the block size of fsStore's filesystem.
const fsBlock = 4096

// fsStore is a simulated store on a filesystem with room for a limited
// number of blocks. It tracks the blocks the file holds: a write into a
// hole takes them, as do reservations; truncation and hole punching give
// them back. A write or a reservation that needs more than the room fails
// with ENOSPC, as a full filesystem's do; a reservation takes what it can
// first, as fallocate may. Close leaves the simulated store open, so that
// the device can be opened on it again; the test closes it.
type fsStore struct {
	*simstore.Store
	mu     sync.Mutex
	room   int64 // blocks the filesystem can give the file
	blocks map[int64]bool
	// unsupported makes Reserve fail as on a filesystem without
	// fallocate.
	unsupported bool
	// reserveErr, if not nil, is what Reserve returns, as a failing
	// disk's fallocate does.
	reserveErr error
}

var _ storage.Reserver = (*fsStore)(nil)

func newFSStore(t *testing.T, maxSize, room int64) *fsStore {
	s := &fsStore{Store: simstore.New(maxSize), room: room / fsBlock, blocks: map[int64]bool{}}
	t.Cleanup(func() { s.Store.Close() })
	return s
}

func errNoRoom(op string) error { return &os.PathError{Op: op, Path: "fsStore", Err: syscall.ENOSPC} }

// blockSpan returns the blocks [first, end) that [off, off+length) touches.
func blockSpan(off, length int64) (first, end int64) {
	return off / fsBlock, (off + length + fsBlock - 1) / fsBlock
}

func (s *fsStore) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first, end := blockSpan(off, int64(len(p)))
	holes := int64(0)
	for b := first; b < end; b++ {
		if !s.blocks[b] {
			holes++
		}
	}
	if int64(len(s.blocks))+holes > s.room {
		return 0, errNoRoom("write")
	}
	n, err := s.Store.WriteAt(p, off)
	if err == nil {
		for b := first; b < end; b++ {
			s.blocks[b] = true
		}
	}
	return n, err
}

func (s *fsStore) Truncate(size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Store.Truncate(size); err != nil {
		return err
	}
	for b := range s.blocks {
		if b*fsBlock >= size {
			delete(s.blocks, b)
		}
	}
	return nil
}

func (s *fsStore) PunchHole(off, length int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Store.PunchHole(off, length); err != nil {
		return err
	}
	for b := (off + fsBlock - 1) / fsBlock; (b+1)*fsBlock <= off+length; b++ {
		delete(s.blocks, b)
	}
	return nil
}

func (s *fsStore) Reserve(off, length int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unsupported {
		return &os.PathError{Op: "fallocate", Path: "fsStore", Err: errors.ErrUnsupported}
	}
	if s.reserveErr != nil {
		return &os.PathError{Op: "fallocate", Path: "fsStore", Err: s.reserveErr}
	}
	first, end := blockSpan(off, length)
	for b := first; b < end; b++ {
		if s.blocks[b] {
			continue
		}
		if int64(len(s.blocks)) >= s.room {
			return fmt.Errorf("%w: %w", storage.ErrNoSpace, errNoRoom("fallocate"))
		}
		s.blocks[b] = true
	}
	return nil
}

func (s *fsStore) Close() error { return nil }

// held returns the bytes of the file's blocks.
func (s *fsStore) held() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.blocks)) * fsBlock
}

// free returns the bytes the filesystem has left.
func (s *fsStore) free() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return (s.room - int64(len(s.blocks))) * fsBlock
}

// setFree leaves the filesystem n bytes of room beside the file's blocks,
// as other files filling or leaving it would.
func (s *fsStore) setFree(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.room = int64(len(s.blocks)) + n/fsBlock
}

// preallocOptions make a device of 64 KiB max pages that would grow to
// 64 MiB, past any room fsStore gives it in these tests.
func preallocOptions(t *testing.T) Options {
	t.Helper()
	o, err := (&Options{NoSync: true, MaxPageSize: 64 << 10, JournalSize: 256 << 10, MaxSize: 64 << 20, GrowthStep: 1 << 20, Preallocate: true}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// fillDevice allocates, in one transaction, a page of each of the sizes
// first, then pages of size bytes until ErrNoSpace, and commits: the
// refusal must have left the transaction whole.
func fillDevice(t *testing.T, d *Device, size int64, first ...int64) (firstPages, pages []Addr) {
	t.Helper()
	err := d.Update(func(tx *Txn) error {
		for _, n := range first {
			a, err := tx.Alloc(n)
			if err != nil {
				return err
			}
			firstPages = append(firstPages, a)
		}
		for {
			a, err := tx.Alloc(size)
			if errors.Is(err, ErrNoSpace) {
				t.Logf("full after %d pages: %v", len(pages), err)
				return nil
			}
			if err != nil {
				return fmt.Errorf("Alloc of page %d: %w", len(pages)+1, err)
			}
			pages = append(pages, a)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return firstPages, pages
}

// wantAllocated fails unless d's allocated pages are exactly pages, and d
// checks clean.
func wantAllocated(t *testing.T, d *Device, pages []Addr) {
	t.Helper()
	got := allocatedSet(t, d)
	for _, a := range pages {
		if !got[a] {
			t.Errorf("page %v is not allocated", a)
		}
	}
	if len(got) != len(pages) {
		t.Errorf("%d pages allocated, want %d", len(got), len(pages))
	}
}

// TestPreallocateFullFilesystem runs devices on a filesystem that fills
// up. A sparse file finds out at a write into one of its holes, after the
// commit that made it, and the device fails. With Preallocate the file's
// growth reserves the room first: Alloc returns ErrNoSpace and the device
// goes on, having used the room to within a page.
func TestPreallocateFullFilesystem(t *testing.T) {
	page := preallocOptions(t).MaxPageSize

	t.Run("sparse", func(t *testing.T) {
		o := preallocOptions(t)
		o.Preallocate = false
		d, fs := fsDevice(t, o, 1<<40)
		defer d.Close()
		// Room for 64 blocks, where each page takes one as it is written.
		fs.setFree(64 * fsBlock)
		fillUntilFailed(t, d, page)
	})

	t.Run("preallocated", func(t *testing.T) {
		o := preallocOptions(t)
		d, fs := fsDevice(t, o, 1<<40)
		// Room for three growth steps and a fraction: the fourth is
		// refused, and the file then grows by just what each page needs.
		fs.setFree(3<<20 + 200<<10)
		pages := append(allocPages(t, d, 3, 4096), fillWritten(t, d, page)...)
		if free := fs.free(); free >= page {
			t.Errorf("%d bytes of room left, a page of %d would fit", free, page)
		}
		st := d.Stats()
		if st.FileSize >= o.MaxSize || st.LargestFreePage >= page {
			t.Errorf("Stats after ErrNoSpace: %+v", st)
		}
		if size, _ := fs.Size(); size != st.FileSize {
			t.Errorf("the refused growth left a file of %d bytes, want %d", size, st.FileSize)
		}
		wantAllocated(t, d, pages)
		pages = goOnAtFull(t, d, pages, page)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		d, err := openOn(fs, &Options{Preallocate: true})
		if err != nil {
			t.Fatalf("reopening at full: %v", err)
		}
		defer d.Close()
		wantAllocated(t, d, pages)
	})

	t.Run("punched", func(t *testing.T) {
		// A heap all allocated, most of it in max pages; 8 of them are
		// freed and punched, and the filesystem fills up meanwhile.
		d, fs, pages, small := fullPunchedDevice(t, 8)
		defer d.Close()
		// Room for all but one block of a punched page.
		room := page - 8192
		fs.setFree(room)
		st := d.Stats()
		for _, size := range []int64{page, 4096} { // whole, and split
			if _, err := allocOne(d, size); !errors.Is(err, ErrNoSpace) {
				t.Fatalf("Alloc(%d) of a punched page with no room: %v, want ErrNoSpace", size, err)
			}
		}
		if after := d.Stats(); !reflect.DeepEqual(after, st) {
			t.Errorf("the refused Allocs changed the device:\n%+v\n%+v", st, after)
		}
		wantAllocated(t, d, append(append([]Addr(nil), small...), pages[8:]...))
		// The blocks the refused reservation took go back to the
		// filesystem with the next transaction.
		if err := d.Update(func(tx *Txn) error { d.alloc.join(tx); return nil }); err != nil {
			t.Fatal(err)
		}
		if free := fs.free(); free != room {
			t.Errorf("%d bytes of room after the refusals, want the %d before them", free, room)
		}
		// With the room back, pages are handed out and written whole,
		// the filesystem full again.
		fs.setFree(1 << 30)
		whole, err := allocOne(d, page)
		if err != nil {
			t.Fatal(err)
		}
		split, err := allocOne(d, 4096)
		if err != nil {
			t.Fatal(err)
		}
		fs.setFree(0)
		if err := d.Update(func(tx *Txn) error {
			return errors.Join(tx.Write(whole.Offset(), make([]byte, page)), tx.Write(split.Offset(), make([]byte, 4096)))
		}); err != nil {
			t.Fatalf("writing the pages handed out: %v", err)
		}
		// The split's free halves have their headers written too.
		if _, err := allocOne(d, 8192); err != nil {
			t.Fatalf("Alloc from the rest of the split page: %v", err)
		}
		mustCheck(t, d)
	})

	t.Run("punched, reservation I/O error", func(t *testing.T) {
		// Reserving a punched page again meets an I/O error: the
		// device fails, as at any other I/O error.
		d, fs, _, _ := fullPunchedDevice(t, 1)
		defer d.Close()
		fs.mu.Lock()
		fs.reserveErr = syscall.EIO
		fs.mu.Unlock()
		if _, err := allocOne(d, page); !errors.Is(err, ErrFailed) {
			t.Errorf("Alloc of a punched page whose reservation fails with EIO: %v, want ErrFailed", err)
		}
		if tx, err := d.Begin(); !errors.Is(err, ErrFailed) {
			t.Errorf("Begin after the failed reservation: %v, want ErrFailed", err)
			if err == nil {
				tx.Rollback()
			}
		}
	})

	t.Run("punched head, room past the frontier", func(t *testing.T) {
		// A punched page heads the list, the filesystem is full, but
		// the file holds reserved room past the frontier: Alloc takes it.
		o := preallocOptions(t)
		o.PunchHoles = true
		d, fs := fsDevice(t, o, 1<<40)
		defer d.Close()
		pages := allocPages(t, d, 2, page)
		punchFreed(t, d, fs, pages[:1], page)
		fs.setFree(0)
		st := d.Stats()
		for _, size := range []int64{page, 4096} {
			if _, err := allocOne(d, size); err != nil {
				t.Fatalf("Alloc(%d) with %d reserved bytes past the frontier: %v", size, st.FileSize-st.Frontier, err)
			}
		}
		if after := d.Stats(); after.FileSize != st.FileSize || after.Frontier <= st.Frontier {
			t.Errorf("file of %d bytes and frontier %d, from %d and %d: want the frontier up within the file",
				after.FileSize, after.Frontier, st.FileSize, st.Frontier)
		}
		mustCheck(t, d)
	})

	t.Run("create", func(t *testing.T) {
		o := preallocOptions(t)
		fs := newFSStore(t, o.MaxSize, o.JournalSize)
		if d, err := createOn(fs, o); !errors.Is(err, ErrNoSpace) {
			if err == nil {
				d.Close()
			}
			t.Fatalf("Create with no room for the headers: %v, want ErrNoSpace", err)
		}
	})

	t.Run("open", func(t *testing.T) {
		// A sparse device opened with Preallocate has its holes reserved,
		// or is refused.
		o := preallocOptions(t)
		o.Preallocate = false
		d, fs := fsDevice(t, o, 1<<40)
		pages := allocPages(t, d, 8, page)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		size, _ := fs.Size()
		fs.setFree(page)
		if d, err := openOn(fs, &Options{Preallocate: true}); !errors.Is(err, ErrNoSpace) {
			if err == nil {
				d.Close()
			}
			t.Fatalf("Open with Preallocate, no room for the holes: %v, want ErrNoSpace", err)
		}
		if after, _ := fs.Size(); after != size {
			t.Errorf("the refused Open changed the size from %d to %d", size, after)
		}
		// Read-only, nothing is written and nothing reserved.
		ro, err := openOn(fs, &Options{Preallocate: true, ReadOnly: true})
		if err != nil {
			t.Fatalf("read-only Open with Preallocate and no room: %v", err)
		}
		ro.Close()
		fs.setFree(size)
		d, err = openOn(fs, &Options{Preallocate: true})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if held := fs.held(); held < size {
			t.Errorf("a file of %d bytes holds %d bytes of blocks after Open, want all of it", size, held)
		}
		wantAllocated(t, d, pages)
	})

	t.Run("recovery", func(t *testing.T) {
		// Crash images that hold the journal but none of the home writes
		// after Create: sparse, the heap is holes (its growth durable,
		// the writes into it not yet), or the file is cut back below the
		// heap (its growth lost too). Open reserves the holes, and
		// recovery grows the file, reserved, before replaying; a full
		// filesystem makes Open return ErrNoSpace.
		o := preallocOptions(t)
		orig, fs := fsDevice(t, o, 1<<40)
		defer orig.Close()
		base, _ := fs.Size()
		var pages []Addr
		for range 3 {
			a, err := allocWritten(orig, page)
			if err != nil {
				t.Fatal(err)
			}
			pages = append(pages, a)
		}
		full, _ := fs.Size()
		image := func(size, free int64) *fsStore {
			img := make([]byte, base)
			if _, err := fs.ReadAt(img, 0); err != nil {
				t.Fatal(err)
			}
			crashed := newFSStore(t, o.MaxSize, 1<<40)
			if _, err := crashed.WriteAt(img, 0); err != nil {
				t.Fatal(err)
			}
			if err := crashed.Truncate(size); err != nil {
				t.Fatal(err)
			}
			crashed.setFree(free)
			return crashed
		}
		for _, size := range []int64{full, base} {
			if d, err := openOn(image(size, 0), &Options{Preallocate: true}); !errors.Is(err, ErrNoSpace) {
				if err == nil {
					d.Close()
				}
				t.Fatalf("Open of a %d-byte image holding %d, no room: %v, want ErrNoSpace", size, base, err)
			}
			crashed := image(size, 1<<30)
			d, err := openOn(crashed, &Options{Preallocate: true})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			after, _ := crashed.Size()
			if held := crashed.held(); after < size || after <= base || held < after {
				t.Errorf("Open of a %d-byte image holding %d: a file of %d bytes, %d of them held; want the heap back, all held", size, base, after, held)
			}
			crashed.setFree(0)
			for _, a := range pages {
				if err := d.Update(func(tx *Txn) error { return tx.Write(a.Offset(), make([]byte, page)) }); err != nil {
					t.Fatalf("writing page %v on a full filesystem: %v", a, err)
				}
			}
			wantAllocated(t, d, pages)
		}
	})
}

// fullPunchedDevice creates a 2 MiB device with PunchHoles on an fsStore
// with ample room, fills its heap with max pages and what they leave with
// 4 KiB ones, then frees and punches the first n max pages. It returns the
// max pages and the small ones.
func fullPunchedDevice(t *testing.T, n int) (d *Device, fs *fsStore, pages, small []Addr) {
	t.Helper()
	o := preallocOptions(t)
	o.PunchHoles = true
	o.MaxSize = 2 << 20
	d, fs = fsDevice(t, o, 1<<40)
	_, pages = fillDevice(t, d, o.MaxPageSize)
	_, small = fillDevice(t, d, 4096)
	punchFreed(t, d, fs, pages[:n], o.MaxPageSize)
	return d, fs, pages, small
}

// punchFreed frees pages, max pages of size bytes, and runs transactions
// until they are free and punched.
func punchFreed(t *testing.T, d *Device, fs *fsStore, pages []Addr, size int64) {
	t.Helper()
	freePages(t, d, pages)
	before := fs.free()
	coverCommitted(t, d)
	releaseCovered(t, d)
	if err := d.Update(func(tx *Txn) error { d.alloc.join(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if punched, want := fs.free()-before, int64(len(pages))*(size-4096); punched != want {
		t.Fatalf("%d bytes punched, want %d", punched, want)
	}
}

// allocOne allocates one page of size bytes in its own transaction.
func allocOne(d *Device, size int64) (a Addr, err error) {
	err = d.Update(func(tx *Txn) (err error) { a, err = tx.Alloc(size); return err })
	return a, err
}

// fsDevice creates a device with options o on an fsStore with room for
// room bytes.
func fsDevice(t *testing.T, o Options, room int64) (*Device, *fsStore) {
	t.Helper()
	fs := newFSStore(t, o.MaxSize, room)
	d, err := createOn(fs, o)
	if err != nil {
		t.Fatal(err)
	}
	return d, fs
}

// fillUntilFailed allocates and writes pages of size bytes, each in its
// own transaction, until the device fails; any other error fails t.
func fillUntilFailed(t *testing.T, d *Device, size int64) {
	t.Helper()
	for i := 1; ; i++ {
		_, err := allocWritten(d, size)
		if errors.Is(err, ErrFailed) {
			t.Logf("the device failed at page %d: %v", i, err)
			return
		}
		if err != nil {
			t.Fatalf("page %d: %v; want the device to fail once the room is gone", i, err)
		}
	}
}

// fillWritten allocates and writes pages of size bytes, each in its own
// transaction, until ErrNoSpace, and returns them.
func fillWritten(t *testing.T, d *Device, size int64) []Addr {
	t.Helper()
	var pages []Addr
	for {
		a, err := allocWritten(d, size)
		if errors.Is(err, ErrNoSpace) {
			t.Logf("full after %d pages: %v", len(pages), err)
			return pages
		}
		if err != nil {
			t.Fatalf("page %d: %v", len(pages)+1, err)
		}
		pages = append(pages, a)
	}
}

// goOnAtFull frees the last four of pages, of size bytes, on a full
// device, allocates four again and writes one whole: the device goes on.
// It returns the pages allocated now.
func goOnAtFull(t *testing.T, d *Device, pages []Addr, size int64) []Addr {
	t.Helper()
	freePages(t, d, pages[len(pages)-4:])
	coverCommitted(t, d)
	again := allocPages(t, d, 4, size)
	pages = append(pages[:len(pages)-4], again...)
	if err := d.Update(func(tx *Txn) error { return tx.Write(again[0].Offset(), make([]byte, size)) }); err != nil {
		t.Fatalf("writing a page at full: %v", err)
	}
	return pages
}

// allocWritten allocates one page of size bytes and writes its first
// bytes, in one transaction.
func allocWritten(d *Device, size int64) (a Addr, err error) {
	err = d.Update(func(tx *Txn) (err error) {
		if a, err = tx.Alloc(size); err != nil {
			return err
		}
		return tx.Write(a.Offset(), []byte("written"))
	})
	return a, err
}

// TestPreallocateUnsupported: a store that cannot reserve refuses
// Preallocate at once, as do platforms without fallocate.
func TestPreallocateUnsupported(t *testing.T) {
	o := preallocOptions(t)
	plain := simstore.New(o.MaxSize)
	defer plain.Close()
	refusing := newFSStore(t, o.MaxSize, 1<<40)
	refusing.unsupported = true
	for _, store := range []storage.Storage{plain, refusing} {
		if d, err := createOn(store, o); !errors.Is(err, ErrInvalidArgument) || !errors.Is(err, errors.ErrUnsupported) {
			if err == nil {
				d.Close()
			}
			t.Fatalf("Preallocate on a store that cannot reserve (%T): %v, want ErrInvalidArgument and ErrUnsupported", store, err)
		}
	}
}

// TestPreallocateReservesFile checks on the real file that Preallocate
// leaves no hole as the file grows, where fallocate exists.
func TestPreallocateReservesFile(t *testing.T) {
	o := preallocOptions(t)
	path := filepath.Join(t.TempDir(), "device")
	d, err := Create(path, &o)
	if runtime.GOOS != "linux" {
		if err == nil {
			d.Close()
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("Create with Preallocate on %s: %v, want ErrUnsupported", runtime.GOOS, err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	allocPages(t, d, 40, o.MaxPageSize)
	size := d.Stats().FileSize
	if held := allocatedBlocks(t, path); held < size {
		t.Errorf("a file of %d bytes holds %d bytes of storage, want all of it", size, held)
	}
}
