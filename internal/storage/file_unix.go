//go:build unix

package storage

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// syncDir makes the directory entry of a new file durable: without it a
// power loss can lose the file even after its contents were synced.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// adviseRandom tells the kernel that metadata is read at random, so that
// faults do not read ahead pages nobody asked for. Purely advisory.
func adviseRandom(b []byte) { _ = unix.Madvise(b, unix.MADV_RANDOM) }

// isFileLimit reports whether err refuses a size past the largest file
// the filesystem or the process (RLIMIT_FSIZE) allows.
func isFileLimit(err error) bool { return errors.Is(err, unix.EFBIG) }

// retryEINTR calls call again for as long as a signal interrupts it.
func retryEINTR(call func() error) error {
	for {
		if err := call(); err != unix.EINTR {
			return err
		}
	}
}

// lock takes the file's flock, exclusive or shared, without waiting.
func lock(f *os.File, exclusive bool) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := conn.Control(func(fd uintptr) {
		ferr = retryEINTR(func() error { return unix.Flock(int(fd), how|unix.LOCK_NB) })
	}); err != nil {
		return err
	}
	switch {
	case errors.Is(ferr, unix.EWOULDBLOCK):
		return ErrLocked
	case errors.Is(ferr, unix.EOPNOTSUPP), errors.Is(ferr, unix.ENOLCK), errors.Is(ferr, unix.ENOSYS):
		return nil // a filesystem without the lock: open unlocked
	}
	return ferr
}
