//go:build !invariants

package pagealloc

// invariantsEnabled is false in the normal build; build with the
// invariants tag (see invariants_on.go) for a Check after every commit.
const invariantsEnabled = false

// assertInvariants does nothing in the normal build.
func (d *Device) assertInvariants() {}
