package storage

import (
	"errors"
	"fmt"
	"os"

	"github.com/edsrzf/mmap-go"

	"golang.org/x/sys/unix"
)

func datasync(f *os.File) error {
	return retryEINTR(func() error { return unix.Fdatasync(int(f.Fd())) })
}

func punchHole(f *os.File, off, length int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err == unix.EOPNOTSUPP || err == unix.ENOSYS {
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: errUnsupported}
	}
	return err
}

// reserve is fallocate with FALLOC_FL_KEEP_SIZE. A large range takes long
// enough for a signal (the Go scheduler's, say) to interrupt it: it is
// tried again, keeping what the first call reserved.
func reserve(f *os.File, off, length int64) error {
	return reserveError(f.Name(), retryEINTR(func() error {
		return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, length)
	}))
}

// reserveError gives fallocate's errno the meaning Reserver documents.
func reserveError(path string, errno error) error {
	switch errno {
	case nil:
		return nil
	case unix.ENOSPC, unix.EDQUOT:
		errno = fmt.Errorf("%w: %w", ErrNoSpace, errno)
	case unix.EOPNOTSUPP, unix.ENOSYS:
		errno = fmt.Errorf("%w: %w", errUnsupported, errno)
	}
	return &os.PathError{Op: "fallocate", Path: path, Err: errno}
}

// MapWritable maps the file a second time, read-write. On Linux a shared
// mapping and pwrite use the same page cache, and fdatasync writes back
// pages dirtied through either, so the device can apply many small
// scattered writes with memory copies instead of one system call each.
func (s *File) MapWritable(length int64) ([]byte, error) {
	if s.rwMM != nil {
		return nil, errors.New("storage: file already has a writable mapping")
	}
	mm, err := mapFile(s.f, length, mmap.RDWR)
	if err != nil {
		return nil, err
	}
	s.rwMM = mm
	return mm, nil
}
