//go:build !unix

package storage

import "os"

// syncDir is a no-op where directories cannot be opened and synced; the
// platform keeps directory entries durable on its own terms.
func syncDir(path string) error { return nil }

func adviseRandom(b []byte) {}

// lock takes no lock: only Unix systems have flock.
func lock(f *os.File, exclusive bool) error { return nil }

// isFileLimit reports false: the platform's refusal of a size past its
// limit is not told apart from other failures.
func isFileLimit(err error) bool { return false }
