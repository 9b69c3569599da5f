package pagealloc

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// commitCorrupt runs update, which commits a transaction that leaves state
// Check calls corrupt (set up through internals: no API can), and checks
// what the build does with it. The invariants build must panic in Commit
// with Check's error, which names what; the normal build lets the commit
// through, and Check then reports it. It reports whether the commit went
// through.
func commitCorrupt(t *testing.T, d *Device, what string, update func() error) bool {
	t.Helper()
	var recovered any
	err := func() error {
		defer func() { recovered = recover() }()
		return update()
	}()
	if invariantsEnabled {
		msg := fmt.Sprint(recovered)
		if recovered == nil || !strings.Contains(msg, "invariants violated") || !strings.Contains(msg, what) {
			t.Fatalf("invariants build: the commit of a corrupt %s returned %v and panicked with %q; want a panic naming it", what, err, msg)
		}
		return false
	}
	if recovered != nil {
		t.Fatalf("normal build: the commit panicked: %v", recovered)
	}
	if err != nil {
		t.Fatalf("normal build: the commit failed: %v", err)
	}
	if err := d.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), what) {
		t.Fatalf("normal build: Check after the commit of a corrupt %s: %v", what, err)
	}
	return true
}

// TestInvariantsStopCorruptCommit commits an allocated page marked free
// but on no free list. With the invariants tag the library's own check
// after the commit must panic; without it the commit goes through and
// Check finds the damage.
func TestInvariantsStopCorruptCommit(t *testing.T) {
	d, _ := createTestDevice(t, testOptions())
	var a Addr
	if err := d.Update(func(tx *Txn) (err error) { a, err = tx.Alloc(4096); return err }); err != nil {
		t.Fatal(err)
	}
	commitCorrupt(t, d, "free list 0", func() error {
		return d.Update(func(tx *Txn) error {
			tx.setPageState(&d.alloc.g, 0, a.Offset(), stateFree)
			return nil
		})
	})
	// Either way the device stays usable: the writer slot was released.
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
}
