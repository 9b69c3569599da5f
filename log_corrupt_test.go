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

// TestCheckFindsLogPositions commits, in a log's table slot, fixed or
// carved, head and tail positions that Open refuses: a head past the
// tail, or a tail past 2^62, where the positions handed out as int64 are
// near wrapping. Check must name the slot, as Open would at the next
// reopen.
func TestCheckFindsLogPositions(t *testing.T) {
	for _, tc := range []struct {
		name       string
		carved     bool
		head, tail func(tail uint64) uint64 // the new positions, from the slot's tail
		want       string
	}{
		{"fixed head past the tail", false, func(tail uint64) uint64 { return tail + 8 }, func(tail uint64) uint64 { return tail },
			"corrupt log table at offset %d: expected slot 0 head <= tail within one ring, 8-byte aligned, found head %d tail %d"},
		{"fixed tail past 2^62", false, func(uint64) uint64 { return logPosLimit + 8 }, func(uint64) uint64 { return logPosLimit + 8 },
			"corrupt log table at offset %d: expected slot 0 a tail at most 4611686018427387904, found %[3]d"},
		{"carved tail past 2^62", true, func(uint64) uint64 { return logPosLimit + 8 }, func(uint64) uint64 { return logPosLimit + 8 },
			"corrupt carved log table at offset %d: expected slot 0 a tail at most 4611686018427387904, found %[3]d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := createLogDevice(t, LogRegion{"wal", 8 << 10})
			l := mustLog(t, d, "wal")
			if tc.carved {
				l = mustCreateLog(t, d, "c", 8<<10)
			}
			appendEntryT(t, l, logContent(1, 100))
			if err := d.Check(); err != nil {
				t.Fatal(err)
			}
			tail := l.Stats().DurableTail
			head, newTail := tc.head(uint64(tail)), tc.tail(uint64(tail))
			want := fmt.Sprintf(tc.want, l.slotOff, head, newTail)
			commitCorrupt(t, d, want, func() error {
				return d.Update(func(tx *Txn) error {
					tx.writeU64(l.slotOff+logSlotHeadOff, head, kindMeta)
					tx.writeU64(l.slotOff+logSlotTailOff, newTail, kindMeta)
					return nil
				})
			})
		})
	}
}

// TestCheckFindsLogSlotOffTheOpenLog commits, in a log's table slot, a
// tail that Open would take but that the log open on the slot did not
// journal: Check must say that the slot and the log disagree.
func TestCheckFindsLogSlotOffTheOpenLog(t *testing.T) {
	for _, carved := range []bool{false, true} {
		t.Run(fmt.Sprintf("carved=%v", carved), func(t *testing.T) {
			d, _ := createLogDevice(t, LogRegion{"wal", 8 << 10})
			l := mustLog(t, d, "wal")
			if carved {
				l = mustCreateLog(t, d, "c", 8<<10)
			}
			appendEntryT(t, l, logContent(1, 100))
			if err := d.Check(); err != nil {
				t.Fatal(err)
			}
			tail := uint64(l.Stats().DurableTail)
			commitCorrupt(t, d, fmt.Sprintf("log %q with head 0 and tail %d to agree with the log open on it", l.name, tail+8), func() error {
				return d.Update(func(tx *Txn) error {
					tx.writeU64(l.slotOff+logSlotTailOff, tail+8, kindMeta)
					return nil
				})
			})
		})
	}
}

// TestCheckFindsLogPositionsOutOfOrder moves one in-memory position of an
// open log at a time out of its place among the others, with two
// reservations not yet passed: Check must name each, and pass again once
// the position is put back.
func TestCheckFindsLogPositionsOutOfOrder(t *testing.T) {
	d, _ := createLogDevice(t, LogRegion{"wal", 64 << 10})
	l := mustLog(t, d, "wal")
	appendEntryT(t, l, logContent(1, 100))
	var open []Reservation
	for range 2 {
		r, err := l.Append(200)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, r)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		damage     func() (undo func())
	}{
		{"written past done", "open with its positions in order", func() func() {
			was := l.writtenEnd
			l.writtenEnd = l.committedEnd + 8
			return func() { l.writtenEnd = was }
		}},
		{"journaled past written", "open with its positions in order", func() func() {
			was := l.writtenEnd
			l.writtenEnd = l.loggedTail - 8
			return func() { l.writtenEnd = was }
		}},
		{"cancelled past done", "open with its positions in order", func() func() {
			was := l.cancelledFrom
			l.cancelledFrom = l.committedEnd + 8
			return func() { l.cancelledFrom = was }
		}},
		{"tail a ring past the head", "open with its positions in order", func() func() {
			was := l.tail
			l.tail = l.head + l.size + 8
			l.spans[len(l.spans)-1].end = l.tail
			return func() { l.tail, l.spans[len(l.spans)-1].end = was, was }
		}},
		{"a gap between reservations", "reservations not yet passed following each other", func() func() {
			s := &l.spans[l.first+1]
			was := *s
			s.start += 8
			return func() { *s = was }
		}},
		{"a reservation short of the tail", "reservations not yet passed ending at its tail", func() func() {
			s := &l.spans[len(l.spans)-1]
			was := s.end
			s.end -= 8
			return func() { s.end = was }
		}},
	} {
		l.mu.Lock()
		undo := tc.damage()
		l.mu.Unlock()
		err := d.Check()
		l.mu.Lock()
		undo()
		l.mu.Unlock()
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Check: %v; want an ErrCorrupt naming %q", tc.name, err, tc.want)
		}
		if err := d.Check(); err != nil {
			t.Fatalf("%s: Check once the position is back: %v", tc.name, err)
		}
	}
	for _, r := range open {
		if err := l.Cancel(r); err != nil {
			t.Fatal(err)
		}
	}
}
