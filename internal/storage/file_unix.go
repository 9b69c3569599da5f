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
