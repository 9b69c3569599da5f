package storage

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync uses F_FULLFSYNC: plain fsync on macOS does not flush the
// drive's write cache, so it is no barrier against power loss.
func datasync(f *os.File) error {
	_, err := unix.FcntlInt(f.Fd(), unix.F_FULLFSYNC, 0)
	if err != nil {
		return f.Sync()
	}
	return nil
}

func punchHole(f *os.File, off, length int64) error {
	return &os.PathError{Op: "punchhole", Path: f.Name(), Err: errUnsupported}
}
