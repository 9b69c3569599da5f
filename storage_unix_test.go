//go:build unix

package pagealloc

import (
	"os"
	"syscall"
	"testing"
)

// allocatedBlocks returns the bytes of storage the filesystem holds for a
// file.
func allocatedBlocks(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}
