//go:build !linux && !darwin

package storage

import "os"

func datasync(f *os.File) error { return f.Sync() }

func punchHole(f *os.File, off, length int64) error {
	return &os.PathError{Op: "punchhole", Path: f.Name(), Err: errUnsupported}
}

func reserve(f *os.File, off, length int64) error {
	return &os.PathError{Op: "fallocate", Path: f.Name(), Err: errUnsupported}
}
