//go:build !linux

package storage

import "os"

// datasync is File.Sync. On macOS that is F_FULLFSYNC (plain fsync does
// not flush the drive's write cache, so it is no barrier against power
// loss), falling back to fsync only where the filesystem does not support
// it. Any other error is reported.
func datasync(f *os.File) error { return f.Sync() }

func punchHole(f *os.File, off, length int64) error {
	return &os.PathError{Op: "punchhole", Path: f.Name(), Err: errUnsupported}
}

func reserve(f *os.File, off, length int64) error {
	return &os.PathError{Op: "fallocate", Path: f.Name(), Err: errUnsupported}
}
