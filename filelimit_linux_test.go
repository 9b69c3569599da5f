package pagealloc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The largest file a process may write can be capped (RLIMIT_FSIZE), as
// can a filesystem's (16 TiB on ext4). A device that reaches the cap is
// full, not broken: the test re-executes its binary as a child under a cap
// of fileLimitBytes and fills a device up to it.
const (
	fileLimitChildEnv = "PAGEALLOC_FILE_LIMIT_CHILD"
	fileLimitBytes    = 1 << 20
	fileLimitDone     = "file-limit child: done"
)

func TestFileSizeLimit(t *testing.T) {
	if dir := os.Getenv(fileLimitChildEnv); dir != "" {
		fileLimitChild(t, dir)
		return
	}
	out, err := runChildTest(t, fileLimitChildEnv, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fileLimitDone) {
		t.Fatalf("the child did not run the test:\n%s", out)
	}
}

func fileLimitChild(t *testing.T, dir string) {
	lim := syscall.Rlimit{Cur: fileLimitBytes, Max: fileLimitBytes}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	// Go programs ignore SIGXFSZ already, unless a parent set it to its
	// default, which kills the process at the first refusal.
	signal.Ignore(syscall.SIGXFSZ)

	// Headers past the cap: nothing to create.
	path := filepath.Join(dir, "big-root")
	if _, err := Create(path, &Options{NoSync: true, RootSize: 2 << 20}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Create with headers past the cap: %v, want ErrTooLarge", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused file is left behind: %v", err)
	}

	// A device the cap stops well below its MaxSize, growing in steps
	// that do not divide the room below the cap, holds as many pages as
	// one whose MaxSize is the cap.
	const page = 64 << 10
	o := Options{NoSync: true, MaxSize: 64 << 20, MaxPageSize: page, JournalSize: 64 << 10, GrowthStep: 384 << 10}
	small := o
	small.MaxSize = fileLimitBytes
	sd, _, _ := fillUntilFull(t, filepath.Join(dir, "small"), small, page)
	defer sd.Close()
	want := sd.Stats().AllocatedPages

	path = filepath.Join(dir, "device")
	d, _, pages := fillUntilFull(t, path, o, page)
	defer d.Close()
	if int64(len(pages)) != want || want == 0 {
		t.Errorf("%d pages below the cap, want %d as at a MaxSize of the cap", len(pages), want)
	}
	mustCheck(t, d)
	if st := d.Stats(); st.FileSize != fileLimitBytes || st.AllocatedPages != want {
		t.Errorf("file of %d bytes with %d pages allocated, want %d and %d", st.FileSize, st.AllocatedPages, fileLimitBytes, want)
	}
	// Freed space is used again.
	if err := d.Update(func(tx *Txn) error { return tx.Free(pages[0]) }); err != nil {
		t.Fatal(err)
	}
	if err := d.Update(func(tx *Txn) (err error) {
		pages[0], err = tx.Alloc(page)
		return err
	}); err != nil {
		t.Fatalf("Alloc after a free at the cap: %v", err)
	}
	d = reopen(t, d, path, &Options{NoSync: true})
	mustCheck(t, d)
	if st := d.Stats(); st.AllocatedPages != want {
		t.Errorf("after reopening: %d pages allocated, want %d", st.AllocatedPages, want)
	}
	fileLimitPending(t, filepath.Join(dir, "pending"), o)
	fmt.Println(fileLimitDone)
}

// fileLimitPending fills a device to the cap leaving free space only in
// fragments, frees a page of the largest size and allocates one: Alloc
// must wait for the checkpoint that makes the freed page reusable rather
// than give up at the cap. Nothing else asks for that checkpoint (the
// pending bytes are fewer than the free ones).
func fileLimitPending(t *testing.T, path string, o Options) {
	// The first max page in pieces, then a 4 KiB piece of a second,
	// leaving 60 KiB of it free.
	page := o.MaxPageSize
	d, small, pages := fillUntilFull(t, path, o, page, 4<<10, 32<<10, 16<<10, 8<<10, 4<<10, 4<<10)
	if len(pages) == 0 {
		d.Close()
		t.Fatal("no max page below the cap")
	}
	// 48 KiB more in fragments, made free by the reopening.
	if err := d.Update(func(tx *Txn) error { return errors.Join(tx.Free(small[1]), tx.Free(small[2])) }); err != nil {
		d.Close()
		t.Fatal(err)
	}
	d = reopen(t, d, path, &Options{NoSync: true})
	if err := d.Update(func(tx *Txn) error { return tx.Free(pages[0]) }); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.LargestFreePage >= page || st.PendingBytes != page {
		t.Fatalf("before the Alloc: largest free page %d, %d bytes pending; want below %d and %d", st.LargestFreePage, st.PendingBytes, page, page)
	}
	if err := d.Update(func(tx *Txn) (err error) {
		pages[0], err = tx.Alloc(page)
		return err
	}); err != nil {
		t.Fatalf("Alloc at the cap with a committed free pending: %v", err)
	}
	mustCheck(t, d)
}

// fillUntilFull creates a device at path and fills it (fillDevice).
func fillUntilFull(t *testing.T, path string, o Options, size int64, first ...int64) (d *Device, firstPages, pages []Addr) {
	t.Helper()
	d, err := Create(path, &o)
	if err != nil {
		t.Fatal(err)
	}
	firstPages, pages = fillDevice(t, d, size, first...)
	return d, firstPages, pages
}
