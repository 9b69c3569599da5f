//go:build linux

package simstore

import (
	"os"

	"golang.org/x/sys/unix"
)

// zeroMem clears mem[lo:hi]. The whole OS pages inside the range are handed
// back to the kernel instead of cleared: in a private anonymous mapping they
// then read as zeroes and cost no memory, so truncating or punching a large
// range frees what a real file system would free.
func zeroMem(mem []byte, lo, hi int64) {
	osPage := int64(os.Getpagesize())
	first := (lo + osPage - 1) / osPage * osPage
	end := hi / osPage * osPage
	if first >= end {
		clear(mem[lo:hi])
		return
	}
	if err := unix.Madvise(mem[first:end], unix.MADV_DONTNEED); err != nil {
		clear(mem[first:end])
	}
	clear(mem[lo:first])
	clear(mem[end:hi])
}

// adviseHuge asks for 2 MiB pages under mem[lo:hi], which an image is
// about to fill. Where a page fault costs far more than copying 4 KiB, as
// on a virtual machine, filling an image is mostly page faults: on the
// machine this was measured on, huge pages made images three times as fast.
// Errors are ignored because the advice changes only speed.
func adviseHuge(mem []byte, lo, hi int64) {
	_ = unix.Madvise(mem[lo:hi], unix.MADV_HUGEPAGE)
}
