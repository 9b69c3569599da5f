//go:build unix

package pagealloc

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/storage"
)

// allocatedBlocks returns the bytes of storage the filesystem holds for a
// file.
func allocatedBlocks(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestMappedCopiesRecoverFaults writes through a writable mapping past the
// file's end, where the kernel raises SIGBUS as it does for a page the
// filesystem cannot back (out of space): the journal's and the log's
// mapped copies report failure, so that their callers fall back to pwrite
// and its error, instead of the process dying.
func TestMappedCopiesRecoverFaults(t *testing.T) {
	f, err := storage.CreateFile(filepath.Join(t.TempDir(), "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	view, err := f.Map(3*4096, true)
	if err != nil {
		t.Fatal(err)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if !copyMapped(view[100:], []byte("inside")) || string(view[100:106]) != "inside" {
		t.Fatal("copyMapped failed inside the file")
	}
	if !putFrameMapped(view[512:], logFrame{pos: 1, frameBytes: 64}) {
		t.Fatal("putFrameMapped failed inside the file")
	}
	if copyMapped(view[2*4096:], []byte("past the end")) {
		t.Fatal("copyMapped reported success past the file's end")
	}
	if putFrameMapped(view[2*4096:], logFrame{pos: 1, frameBytes: 64}) {
		t.Fatal("putFrameMapped reported success past the file's end")
	}
}

// TestOpenRefusesNonRegularFiles opens a directory and a FIFO: a FIFO's
// open would wait for a writer for ever, and a directory read as a
// device file is reported as a corrupt header. Both are refused at once,
// the error saying what the path is.
func TestOpenRefusesNonRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, kind := range map[string]string{dir: "a directory", fifo: "a named pipe"} {
		for _, readOnly := range []bool{true, false} {
			done := make(chan error, 1)
			go func() {
				d, err := Open(path, &Options{ReadOnly: readOnly})
				if err == nil {
					d.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "not a regular file: it is "+kind) {
					t.Errorf("Open(%s, ReadOnly %v): %v, want ErrInvalidArgument saying it is %s", filepath.Base(path), readOnly, err, kind)
				}
			case <-time.After(20 * time.Second): // a hang, not a speed goal
				t.Fatalf("Open(%s, ReadOnly %v) still waiting after 20 s", filepath.Base(path), readOnly)
			}
		}
	}
}

// runChildTest runs the current test again in a child process started
// with attr, its environment setting env to value, fails unless the child
// passes, and returns its output. It returns an error if the child could
// not be started.
func runChildTest(t *testing.T, env, value string, attr *syscall.SysProcAttr) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env+"="+value)
	cmd.SysProcAttr = attr
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	t.Logf("child:\n%s", out.String())
	return out.String(), nil
}

// lockChildEnv names, for TestOpenLocksFile's child process, the device
// its parent holds open for writing.
const (
	lockChildEnv  = "PAGEALLOC_LOCK_CHILD"
	lockChildDone = "lock child: done"
)

// TestOpenLocksFile: a Device open for writing has its file to itself,
// read-only ones share it with each other, and a refused Open changes
// nothing for the Device that holds the file.
func TestOpenLocksFile(t *testing.T) {
	child := os.Getenv(lockChildEnv)
	path := child
	if child == "" {
		path = filepath.Join(t.TempDir(), "device")
	}
	refused := func(what string, readOnly bool) {
		t.Helper()
		o := testOptions()
		o.ReadOnly = readOnly
		other, err := Open(path, o)
		if err == nil {
			other.Close()
		}
		if !errors.Is(err, ErrInUse) {
			t.Fatalf("%s: %v, want ErrInUse", what, err)
		}
	}
	if child != "" { // in a process other than the writer's
		refused("Open for writing beside another process's writer", false)
		refused("read-only Open beside another process's writer", true)
		t.Log(lockChildDone)
		return
	}
	d, err := Create(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	refused("Open for writing beside a writer", false)
	refused("read-only Open beside a writer", true)
	if out, err := runChildTest(t, lockChildEnv, path, nil); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, lockChildDone) {
		t.Fatalf("the child did not run the test:\n%s", out)
	}
	if _, err := Create(path, testOptions()); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over an open device: %v, want ErrExists", err)
	}
	var a Addr
	if err := d.Update(func(tx *Txn) (err error) { a, err = tx.Alloc(4096); return err }); err != nil {
		t.Fatalf("Update after the refused Opens: %v", err)
	}
	mustCheck(t, d)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	ro := &Options{ReadOnly: true}
	r1, err := Open(path, ro)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(path, ro)
	if err != nil {
		t.Fatalf("a second read-only Open: %v", err)
	}
	refused("Open for writing beside readers", false)
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	refused("Open for writing beside one reader", false)
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}

	d, err = Open(path, testOptions())
	if err != nil {
		t.Fatalf("Open after every other Device closed: %v", err)
	}
	defer d.Close()
	if st := d.Stats(); st.AllocatedPages != 1 {
		t.Fatalf("after the reopen: %d allocated pages, want 1 (%v)", st.AllocatedPages, a)
	}
	mustCheck(t, d)
}
