package pagealloc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A real filesystem that fills up: the test re-executes its binary in new
// user and mount namespaces, where it may mount a tmpfs of tmpfsBytes
// without privilege, and runs devices on it.
const (
	tmpfsChildEnv = "PAGEALLOC_TMPFS_CHILD"
	tmpfsBytes    = 8 << 20
	tmpfsDone     = "tmpfs child: done"
	tmpfsNoMount  = "tmpfs child: mounting refused"
)

func TestPreallocateTmpfs(t *testing.T) {
	if dir := os.Getenv(tmpfsChildEnv); dir != "" {
		tmpfsChild(t, dir)
		return
	}
	attr := &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := runChildTest(t, tmpfsChildEnv, t.TempDir(), attr)
	switch {
	case err != nil:
		t.Skipf("no user namespace to mount a small filesystem in: %v", err)
	case strings.Contains(out, tmpfsNoMount):
		t.Skip("the system refuses mounts in user namespaces")
	case !strings.Contains(out, tmpfsDone):
		t.Fatalf("the child did not run the test:\n%s", out)
	}
}

func tmpfsChild(t *testing.T, dir string) {
	err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, "")
	if err == nil {
		err = syscall.Mount("pagealloc", dir, "tmpfs", 0, fmt.Sprintf("size=%d", tmpfsBytes))
	}
	if err == syscall.EPERM || err == syscall.EACCES {
		// Some systems (AppArmor's restriction on unprivileged user
		// namespaces) give the namespace but not the mount.
		fmt.Println(tmpfsNoMount)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	o := preallocOptions(t)
	o.MaxSize = 1 << 30 // past the filesystem, of which each page written takes a block
	page := o.MaxPageSize

	// Sparse, the device fails at the first write the filesystem cannot
	// hold.
	sparse := o
	sparse.Preallocate = false
	path := filepath.Join(dir, "sparse")
	d, err := Create(path, &sparse)
	if err != nil {
		t.Fatal(err)
	}
	fillUntilFailed(t, d, page)
	d.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	// Preallocated, it is full, and goes on.
	path = filepath.Join(dir, "device")
	d, err = Create(path, &o)
	if err != nil {
		t.Fatal(err)
	}
	pages := fillWritten(t, d, page)
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if free := int64(fs.Bavail) * int64(fs.Bsize); free >= page {
		t.Errorf("%d bytes left on the filesystem, a page of %d would fit", free, page)
	}
	pages = goOnAtFull(t, d, pages, page)
	d = reopen(t, d, path, &Options{Preallocate: true})
	wantAllocated(t, d, pages)
	fmt.Println(tmpfsDone)
}
