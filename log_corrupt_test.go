package pagealloc

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// openCorrupt opens the device at path read-only and read-write, and fails
// unless each Open refuses it with ErrCorrupt naming want.
func openCorrupt(t *testing.T, path, what, want string) {
	t.Helper()
	for _, ro := range []bool{true, false} {
		d, err := Open(path, &Options{ReadOnly: ro, NoSync: true})
		if err == nil {
			d.Close()
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Errorf("Open (read-only %v) of %s: %v, want ErrCorrupt naming %q", ro, what, err, want)
		}
	}
}

// TestLogCorruptPositionsWrap sets a log's head and tail, fixed or carved,
// to 2^64-8 in a closed device: Open must refuse the file with ErrCorrupt.
// Positions are handed out as int64 and the next Append would wrap the
// tail past zero, below the head, so that Commit returned nil for an
// entry no reader or reopen could find.
func TestLogCorruptPositionsWrap(t *testing.T) {
	// wrap appends an entry to l, closes d and sets l's head and tail to
	// 2^64-8 in a copy of the file at path, which Open must refuse.
	wrap := func(t *testing.T, d *Device, path string, l *Log, what string) {
		const pos = uint64(1<<64 - 8)
		appendEntryT(t, l, logContent(1, 100))
		slot := l.slotOff
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		openCorrupt(t, corruptCopy(t, path, func(b []byte) []byte {
			putU64(slot+logSlotHeadOff, pos)(b)
			putU64(slot+logSlotTailOff, pos)(b)
			return b
		}), what, "tail at most")
	}
	for _, ringBytes := range []int64{8 << 10, 12 << 10} {
		t.Run(fmt.Sprintf("fixed %d", ringBytes), func(t *testing.T) {
			d, path := createLogDevice(t, LogRegion{"wal", ringBytes})
			wrap(t, d, path, mustLog(t, d, "wal"), "a log at position 2^64-8")
		})
	}
	t.Run("carved", func(t *testing.T) {
		d, path := carvedLogDevice(t, nil)
		wrap(t, d, path, mustCreateLog(t, d, "c", 8<<10), "a carved log at position 2^64-8")
	})
}

// TestLogCorruptSharedRing points a carved log's ring at another carved
// log's page in a closed device: Open must refuse the file with
// ErrCorrupt. Each log writes its page in place, unjournaled, and
// DropLog frees it: taken, the two logs would write over each other's
// entries, and dropping one would hand out the page the other still
// writes. (A ring on a sub-page parent: TestCheckCarvedRingOnParent.)
func TestLogCorruptSharedRing(t *testing.T) {
	d, path := carvedLogDevice(t, nil)
	a := mustCreateLog(t, d, "a", 8<<10)
	b := mustCreateLog(t, d, "b", 8<<10)
	appendEntryT(t, a, logContent(1, 100))
	ringAt, ringA := b.slotOff+logSlotRingOff, a.ring.off
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// The untouched file opens: the damage alone is refused.
	d, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	openCorrupt(t, corruptCopy(t, path, func(b []byte) []byte {
		putU64(ringAt, uint64(ringA))(b)
		return b
	}), "two carved logs on one page", "shared with")
}
