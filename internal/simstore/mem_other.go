//go:build !linux

package simstore

// zeroMem clears mem[lo:hi]. Only Linux promises that discarded pages of an
// anonymous mapping read back as zeroes, so elsewhere the bytes are cleared.
func zeroMem(mem []byte, lo, hi int64) {
	clear(mem[lo:hi])
}

// adviseHuge does nothing: only Linux is known to profit from the advice.
func adviseHuge(mem []byte, lo, hi int64) {}
