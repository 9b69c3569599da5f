package pagealloc

import (
	"errors"
	"fmt"
)

// Errors returned by pagealloc. Each is a package-level value to be matched
// with errors.Is; errors that carry detail (an offset, what was expected)
// wrap one of these.
var (
	// ErrClosed is returned by the operations on a closed Device or Pool
	// (a second Device.Close returns nil, and Pool.Put and Pool.TryGet
	// have their own ways: see each method).
	ErrClosed = errors.New("pagealloc: closed")

	// ErrCorrupt is returned when on-disk state fails a check: a bad
	// checksum outside a torn tail, an impossible field, a broken link.
	// The error that carries it is a *CorruptError naming the offset.
	ErrCorrupt = errors.New("pagealloc: corrupt device")

	// ErrVersion is returned by Open when the file was written by a newer
	// format version than this package reads, and by Device.Subpages and
	// Device.CreateLog on a device of a version too old to hold them.
	ErrVersion = errors.New("pagealloc: unsupported format version")

	// ErrReadOnly is returned when a device opened with Options.ReadOnly
	// is asked to change anything.
	ErrReadOnly = errors.New("pagealloc: device is read-only")

	// ErrTxDone is returned when a transaction is used after Commit or
	// Rollback.
	ErrTxDone = errors.New("pagealloc: transaction already committed or rolled back")

	// ErrExists is returned by Create when the file already exists, and
	// by Device.CreateLog when a log of that name exists.
	ErrExists = errors.New("pagealloc: already exists")

	// ErrInUse is returned by Open and Create when another Device has
	// the file open (see Open), and by Device.DropLog for a log that has
	// reservations not yet durable, a Commit waiting, or a GC pass under
	// way.
	ErrInUse = errors.New("pagealloc: in use")

	// ErrNoSpace is returned when a request cannot be met because the
	// device (or a region of it) is full, or, on Unix systems, its file
	// may grow no further (the filesystem's or the process's limit on a
	// file's size).
	ErrNoSpace = errors.New("pagealloc: no space")

	// ErrTooLarge is returned when a request is larger than anything the
	// device can ever hold: a page above MaxPageSize, a transaction whose
	// record may not fit in half the journal (see Txn.Commit), an entry
	// larger than its log, a MaxSize no address space can map, headers
	// larger than the file may grow.
	ErrTooLarge = errors.New("pagealloc: request too large")

	// ErrInvalidFree is returned when Free is given anything that is not a
	// currently allocated page: a double free, a wrong size, an address
	// inside another page, misaligned or out of range.
	ErrInvalidFree = errors.New("pagealloc: invalid free")

	// ErrInvalidArgument is returned for arguments that can never be
	// valid: a negative length, an option out of range, a nil function. It
	// is also what a method called on a nil *Device, *Txn, *Log, *Pool or
	// *Subpages returns; methods with no error to return give zero values.
	ErrInvalidArgument = errors.New("pagealloc: invalid argument")

	// ErrOutOfRange is returned when an offset or length falls outside the
	// device.
	ErrOutOfRange = errors.New("pagealloc: offset out of range")

	// ErrProtected is returned when user code writes where the library
	// keeps its own state (superblocks, journal, allocator metadata, free
	// pages) or writes unjournaled bytes into the root area.
	ErrProtected = errors.New("pagealloc: write to a protected region")

	// ErrFailed is returned by every call that would write (Begin, Update,
	// Commit, Txn.Alloc, WriteAt, Sync, log appends and commits, GC) after
	// an I/O error left the device in an unknown state; reads of the
	// committed state go on (from the page cache, which after a failed
	// fsync may later show what the disk holds instead). Close it and open
	// it again to recover from the journal. The error that carries it also
	// wraps the I/O error.
	ErrFailed = errors.New("pagealloc: device failed")
)

// CorruptError describes one piece of on-disk state that failed a check.
// errors.Is(err, ErrCorrupt) reports true for it.
type CorruptError struct {
	Offset   int64  // byte offset in the device file where the bad state lies
	What     string // the structure, e.g. "superblock A" or "journal record"
	Expected string // what a valid structure holds there
}

// Error names the structure, its offset and what was expected there.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("pagealloc: corrupt %s at offset %d: expected %s", e.What, e.Offset, e.Expected)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corruptf(off int64, what, format string, args ...any) error {
	return &CorruptError{Offset: off, What: what, Expected: fmt.Sprintf(format, args...)}
}

// failedError wraps the I/O error that put a device into the failed state.
type failedError struct{ cause error }

func (e *failedError) Error() string { return "pagealloc: device failed: " + e.cause.Error() }

func (e *failedError) Unwrap() []error { return []error{ErrFailed, e.cause} }

// errNil is what a method called on a nil or zero handle of the named type
// returns.
func errNil(handle string) error {
	return fmt.Errorf("%w: method called on a nil or zero *%s, not one the package made", ErrInvalidArgument, handle)
}

// Handles the package did not make, nil or the zero value of their type,
// whose methods refuse with errNil's error: each tests a field that every
// constructor sets and nothing clears, Close included.
func (d *Device) unmade() bool   { return d == nil || d.store == nil }
func (tx *Txn) unmade() bool     { return tx == nil || tx.d == nil }
func (l *Log) unmade() bool      { return l == nil || l.d == nil }
func (p *Pool) unmade() bool     { return p == nil || p.shards == nil }
func (s *Subpages) unmade() bool { return s == nil || s.d == nil }
func (b *Buffer) unmade() bool   { return b == nil || b.pool == nil }
