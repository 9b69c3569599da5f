// Package storage is the narrow interface through which a pagealloc device
// does all of its file I/O, so that tests can put a crash-simulating store
// where the real file would be.
package storage

import "errors"

// Storage is the byte store under a device: the real file by default, a
// simulated one in tests.
//
// WriteAt and ReadAt follow io.WriterAt and io.ReaderAt. Nothing written is
// durable until Sync returns. Implementations must be safe for concurrent use.
type Storage interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Sync makes every earlier WriteAt and Truncate durable.
	Sync() error
	// Truncate sets the size; growing exposes zeroes and must not write
	// them. A growth refused because it passes the largest file the
	// filesystem or the process allows changes nothing and, where the
	// store can tell (Unix systems), fails with an error matching
	// ErrFileLimit.
	Truncate(size int64) error
	// Size reports the current size in bytes.
	Size() (int64, error)
	// Close releases the store; the mapping returned by Map is gone after it.
	Close() error
}

// Mapper is implemented by stores whose contents can be read through one
// stable memory mapping.
type Mapper interface {
	// Map returns a view of the first length bytes. Bytes at or beyond
	// Size must not be touched (a real file faults there). The view never
	// moves; it stays valid until Close. writable maps it read-write.
	Map(length int64, writable bool) ([]byte, error)
}

// MapWriter is implemented by stores whose page cache a writable mapping
// shares with WriteAt and Sync: bytes copied into the mapping are durable
// after Sync exactly like bytes given to WriteAt. A store whose writes must
// all be seen (the crash simulation) does not implement it.
type MapWriter interface {
	// MapWritable returns a read-write view of the first length bytes,
	// valid until Close. Writing at or beyond Size faults.
	MapWritable(length int64) ([]byte, error)
}

// HolePuncher is implemented by stores that can give the storage of a range
// back while keeping the size; the range reads as zeroes afterwards.
type HolePuncher interface {
	PunchHole(off, length int64) error
}

// Reserver is implemented by stores that can set the filesystem's blocks
// aside for a range of the file before anything is written there, so that
// the writes cannot fail for want of space.
type Reserver interface {
	// Reserve allocates the blocks under [off, off+length), which lies
	// within the size; the size and the bytes stay as they were. Without
	// the room it fails with an error matching ErrNoSpace, having perhaps
	// reserved part of the range; where the platform or filesystem cannot
	// reserve, with one matching errors.ErrUnsupported.
	Reserve(off, length int64) error
}

var errUnsupported = errors.ErrUnsupported

// ErrNoSpace marks a reservation refused because the filesystem, or the
// user's quota on it, has no room left.
var ErrNoSpace = errors.New("storage: no space left on the filesystem")

// ErrNotRegular marks a path that names something other than a regular
// file.
var ErrNotRegular = errors.New("not a regular file")

// ErrLocked marks a file another open holds locked: for writing, when
// any other open holds it; for reading, when one holds it for writing.
var ErrLocked = errors.New("storage: file locked by another open")

// ErrFileLimit marks a growth refused because the file would pass the
// largest size the filesystem or the process (RLIMIT_FSIZE) allows.
var ErrFileLimit = errors.New("storage: file size limit")
