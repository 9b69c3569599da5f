//go:build invariants

package pagealloc

import "fmt"

// invariantsEnabled is true in the debug build made with the invariants
// build tag (go test -tags invariants ./...): after every commit that
// wrote something, the library runs a full Check of the device, and a
// violation panics with Check's error, at the first commit that breaks an
// invariant rather than at the next Open. Each check walks the whole heap
// under the writer slot, so this build is many times slower; it is for
// tests, never for production.
const invariantsEnabled = true

// assertInvariants runs Check once the commit that called it has returned
// from the disk, and panics if it finds a violation. It takes the writer
// slot as Check does, so it sees committed state with no transaction open.
func (d *Device) assertInvariants() {
	d.writer.Lock()
	defer d.writer.Unlock()
	if d.closed.Load() {
		// Close has begun: it unmaps once it gets the writer slot, and
		// the checkpoint it writes is checked by the next Open.
		return
	}
	if err := d.check(nil); err != nil {
		panic(fmt.Sprintf("pagealloc: invariants violated after commit: %v", err))
	}
	if err := d.alloc.checkRing(); err != nil {
		panic(fmt.Sprintf("pagealloc: invariants violated after commit: %v", err))
	}
}
