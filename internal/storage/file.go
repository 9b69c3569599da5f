package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/edsrzf/mmap-go"
)

// File is a Storage over an operating-system file.
type File struct {
	f    *os.File
	mm   mmap.MMap
	rwMM mmap.MMap // the writable view of MapWritable, if any
}

var (
	_ Storage     = (*File)(nil)
	_ Mapper      = (*File)(nil)
	_ HolePuncher = (*File)(nil)
	_ Reserver    = (*File)(nil)
)

// CreateFile creates path, failing with an error satisfying
// errors.Is(err, fs.ErrExist) if it exists, locks it for writing (see
// OpenFile) and makes the new directory entry durable.
func CreateFile(path string) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	if err := lock(f, true); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if err := syncDir(path); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return &File{f: f}, nil
}

// OpenFile opens an existing regular file for reading, and for writing
// unless readOnly. Anything else (a directory, a FIFO, whose open would
// wait for a writer, a device) fails with an error matching
// ErrNotRegular.
//
// On Unix systems the file is locked (flock) until Close: for writing,
// exclusively; for reading, shared. A lock another open holds, in this
// process or another, fails the open at once with an error matching
// ErrLocked. A filesystem that does not support the lock opens the file
// unlocked. Elsewhere no lock is taken.
func OpenFile(path string, readOnly bool) (*File, error) {
	if fi, err := os.Stat(path); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, &os.PathError{Op: "open", Path: path, Err: notRegular(fi.Mode())}
	}
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	// The path may have been replaced since the Stat.
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = notRegular(fi.Mode())
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := lock(f, !readOnly); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "lock", Path: path, Err: err}
	}
	return &File{f: f}, nil
}

// notRegular returns ErrNotRegular naming what a file of mode is.
func notRegular(mode fs.FileMode) error {
	kind := "a special file"
	switch {
	case mode.IsDir():
		kind = "a directory"
	case mode&fs.ModeNamedPipe != 0:
		kind = "a named pipe"
	case mode&fs.ModeSocket != 0:
		kind = "a socket"
	case mode&fs.ModeCharDevice != 0:
		kind = "a character device"
	case mode&fs.ModeDevice != 0:
		kind = "a block device"
	}
	return fmt.Errorf("%w: it is %s", ErrNotRegular, kind)
}

// ReadAt implements io.ReaderAt with pread.
func (s *File) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// WriteAt implements io.WriterAt with pwrite.
func (s *File) WriteAt(p []byte, off int64) (int, error) { return s.f.WriteAt(p, off) }

// Sync makes earlier writes durable with the cheapest call the platform
// offers that still is a barrier against power loss (fdatasync on Linux,
// F_FULLFSYNC on macOS).
func (s *File) Sync() error { return datasync(s.f) }

// Truncate sets the file size. On Unix systems EFBIG, the refusal of a
// size past the filesystem's or the process's limit, matches ErrFileLimit.
func (s *File) Truncate(size int64) error {
	err := s.f.Truncate(size)
	if isFileLimit(err) {
		return fmt.Errorf("%w: %w", ErrFileLimit, err)
	}
	return err
}

// Size reports the file size.
func (s *File) Size() (int64, error) {
	fi, err := s.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Map maps the first length bytes of the file, which may lie past its
// end: the file can then grow under the mapping without a remap. Touching
// mapped bytes past the end of the file faults.
func (s *File) Map(length int64, writable bool) ([]byte, error) {
	if s.mm != nil {
		return nil, errors.New("storage: file is already mapped")
	}
	prot := mmap.RDONLY
	if writable {
		prot = mmap.RDWR
	}
	mm, err := mapFile(s.f, length, prot)
	if err != nil {
		return nil, err
	}
	s.mm = mm
	return mm, nil
}

func mapFile(f *os.File, length int64, prot int) (mmap.MMap, error) {
	if int64(int(length)) != length || length <= 0 {
		return nil, fmt.Errorf("storage: cannot map %d bytes on this platform", length)
	}
	mm, err := mmap.MapRegion(f, int(length), prot, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("storage: mmap %d bytes: %w", length, err)
	}
	adviseRandom(mm)
	return mm, nil
}

// PunchHole returns the storage of [off, off+length) to the filesystem; the
// range reads as zeroes and the size is kept. It returns an error wrapping
// errors.ErrUnsupported where the platform or filesystem cannot.
func (s *File) PunchHole(off, length int64) error { return punchHole(s.f, off, length) }

// Reserve allocates the file's blocks under [off, off+length)
// (fallocate, keeping the size). It is supported on Linux only; elsewhere
// it returns an error wrapping errors.ErrUnsupported.
func (s *File) Reserve(off, length int64) error { return reserve(s.f, off, length) }

// Close unmaps the file and closes it.
func (s *File) Close() error {
	var errs []error
	for _, mm := range []*mmap.MMap{&s.mm, &s.rwMM} {
		if *mm != nil {
			errs = append(errs, mm.Unmap())
		}
	}
	return errors.Join(append(errs, s.f.Close())...)
}
