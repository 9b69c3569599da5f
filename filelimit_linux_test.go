package pagealloc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
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
	cmd := exec.Command(os.Args[0], "-test.run=^TestFileSizeLimit$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), fileLimitChildEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fileLimitDone) {
		t.Fatalf("the child did not run the test:\n%s", out)
	}
	t.Logf("child:\n%s", out)
}

func fileLimitChild(t *testing.T, dir string) {
	lim := syscall.Rlimit{Cur: fileLimitBytes, Max: fileLimitBytes}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	// Without this the kernel kills the process at the first refusal.
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
	sd, _ := fillUntilFull(t, filepath.Join(dir, "small"), small, page)
	defer sd.Close()
	want := sd.Stats().AllocatedPages

	path = filepath.Join(dir, "device")
	d, pages := fillUntilFull(t, path, o, page)
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
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	mustCheck(t, d)
	if st := d.Stats(); st.AllocatedPages != want {
		t.Errorf("after reopening: %d pages allocated, want %d", st.AllocatedPages, want)
	}
	fmt.Println(fileLimitDone)
}

// fillUntilFull creates a device at path and allocates pages of size
// bytes in one transaction until ErrNoSpace, then commits the transaction,
// which the refusal must have left whole.
func fillUntilFull(t *testing.T, path string, o Options, size int64) (*Device, []Addr) {
	t.Helper()
	d, err := Create(path, &o)
	if err != nil {
		t.Fatal(err)
	}
	var pages []Addr
	err = d.Update(func(tx *Txn) error {
		for {
			a, err := tx.Alloc(size)
			if errors.Is(err, ErrNoSpace) {
				t.Logf("%s full after %d pages: %v", filepath.Base(path), len(pages), err)
				return nil
			}
			if err != nil {
				return fmt.Errorf("Alloc of page %d: %w", len(pages)+1, err)
			}
			pages = append(pages, a)
		}
	})
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	return d, pages
}
