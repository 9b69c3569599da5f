package pagealloc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
)

// openCorrupt opens the device at path read-only and read-write, and fails
// unless each Open refuses it with ErrCorrupt naming want and leaves the
// file as it was.
func openCorrupt(t *testing.T, path, what, want string) {
	t.Helper()
	refusedOpens(t, path, func(ro bool, err error) {
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Errorf("Open (read-only %v) of %s: %v, want ErrCorrupt naming %q", ro, what, err, want)
		}
	})
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

// TestLogCorruptTableSlots damages a slot of the table of the logs laid
// out at Create in a closed device, and recomputes the table's checksum:
// a name that is empty or not zero-padded, a last ring whose size is no
// multiple of 4 KiB, a name that another slot holds. Each Open, read-only
// or not, must refuse the file with ErrCorrupt naming the slot and what
// it expected, and leave the file as it was.
func TestLogCorruptTableSlots(t *testing.T) {
	d, path := createLogDevice(t, LogRegion{"a", 8 << 10}, LogRegion{"b", 8 << 10})
	appendEntryT(t, mustLog(t, d, "a"), logContent(1, 100))
	logs := d.geometry.logs
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	slot := func(i int) int64 { return logs.off + logTableHeaderBytes + int64(i)*logSlotBytes }
	ringB := getRegion(readFile(t, path)[slot(1)+logSlotRingOff:])
	for _, c := range []struct {
		name string
		edit func(b []byte)
		want string
	}{
		{"empty name", func(b []byte) { clear(b[slot(0) : slot(0)+logNameMaxBytes]) },
			fmt.Sprintf("corrupt log table at offset %d: expected slot 0 to hold a zero-padded name", slot(0))},
		{"name not zero-padded", func(b []byte) { b[slot(1)+2] = 'x' },
			fmt.Sprintf("corrupt log table at offset %d: expected slot 1 to hold a zero-padded name", slot(1))},
		{"ring size not a multiple of 4 KiB", putU64(slot(1)+logSlotSizeOff, uint64(ringB.size-8)),
			fmt.Sprintf("corrupt log table at offset %d: expected slot 1 ring at %d, a multiple of 4 KiB inside the log regions, found [%d, +%d)", slot(1), ringB.off, ringB.off, ringB.size-8)},
		{"a name twice", func(b []byte) { b[slot(1)] = 'a' },
			fmt.Sprintf("corrupt log table at offset %d: expected unique names, found \"a\" twice", slot(1))},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := corruptCopy(t, path, func(b []byte) []byte {
				c.edit(b)
				table := b[logs.off:slot(2)]
				binary.LittleEndian.PutUint32(table[logTableCRCOff:], logTableChecksum(table))
				return b
			})
			openCorrupt(t, p, c.name, c.want)
		})
	}
}

// TestLogCorruptFrameLengths fills a log's ring so that its entries wrap
// after a padding frame, closes the device, and damages, its header
// checksum recomputed, the padding's length (below a header, or past the
// ring's end) or an entry's payload length (zero, or past the ring's
// end). Opened read-only, the device must yield ErrCorrupt naming the
// frame and the length it found from a walk of its entries, and from a
// Read of the damaged entry, and leave the file as it was.
func TestLogCorruptFrameLengths(t *testing.T) {
	d, path := createLogDevice(t, LogRegion{"log", 8 << 10})
	l := mustLog(t, d, "log")
	// Five frames of 1528 bytes leave 552 at the ring's end, which GC,
	// finding every entry dead, hands back to Append with the rest: the
	// next entries start at the ring's start, after a padding frame.
	l.SetOwner(&setLive{live: map[uint64]int64{}}, &LogOptions{GCThresholdBytes: -1})
	for i := range 7 {
		if i == 5 {
			if err := l.GC(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		appendEntryT(t, l, logContent(uint64(i), 1500))
	}
	entries := walkLog(t, l)
	head := uint64(l.Stats().Head)
	ring, size := l.ring, uint64(l.size)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b := readFile(t, path)
	// The padding frame, with a header, before an entry at the ring's
	// start; and the last entry.
	pad := head
	if len(entries) == 0 || uint64(entries[0].Pos) == pad || binary.LittleEndian.Uint32(b[ring.off+int64(pad%size):]) != logPaddingMagic || len(entries) != 2 {
		t.Fatalf("set-up: want a padding frame with a header at the head %d, then two entries; found entries %+v", head, entries)
	}
	last := entries[len(entries)-1]
	frameAt := func(pos uint64) int64 { return ring.off + int64(pos%size) }
	room := func(pos uint64) int64 { return int64(size - pos%size) }
	// length sets the length field of the frame at pos and recomputes its
	// header checksum.
	length := func(pos uint64, n uint32) func(b []byte) {
		return func(b []byte) {
			hdr := b[frameAt(pos) : frameAt(pos)+logFrameHeaderBytes]
			binary.LittleEndian.PutUint32(hdr[4:], n)
			binary.LittleEndian.PutUint32(hdr[logFrameCRCOff:], crc32.Checksum(hdr[:logFrameCRCOff], castagnoli))
		}
	}
	padding := func(n uint32) string {
		return fmt.Sprintf("corrupt log frame at offset %d: expected padding of 24 to %d bytes, a multiple of 8, found %d", frameAt(pad), room(pad), n)
	}
	entry := func(n uint32) string {
		return fmt.Sprintf("corrupt log frame at offset %d: expected an entry of 1 to %d payload bytes, found %d", frameAt(uint64(last.Pos)), room(uint64(last.Pos))-logFrameHeaderBytes, n)
	}
	for _, c := range []struct {
		name      string
		edit      func(b []byte)
		want      string
		readsLast bool // the damage is the last entry's: Read of it must fail too
	}{
		{"padding below a header", length(pad, 16), padding(16), false},
		{"padding past the ring's end", length(pad, uint32(room(pad)+8)), padding(uint32(room(pad) + 8)), false},
		{"entry of no bytes", length(uint64(last.Pos), 0), entry(0), true},
		{"entry past the ring's end", length(uint64(last.Pos), uint32(room(uint64(last.Pos)))), entry(uint32(room(uint64(last.Pos)))), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := corruptCopy(t, path, func(b []byte) []byte { c.edit(b); return b })
			before := readFile(t, p)
			ro, err := Open(p, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			l := mustLog(t, ro, "log")
			var walkErr error
			for _, err := range l.Entries(0) {
				walkErr = err
			}
			if !errors.Is(walkErr, ErrCorrupt) || !strings.Contains(walkErr.Error(), c.want) {
				t.Errorf("Entries: %v; want ErrCorrupt naming %q", walkErr, c.want)
			}
			if _, err := l.Read(last.Offset); c.readsLast && (!errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("Read of the last entry: %v; want ErrCorrupt naming %q", err, c.want)
			} else if !c.readsLast && err != nil {
				t.Errorf("Read of the last entry, undamaged: %v", err)
			}
			if err := ro.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, readFile(t, p)) {
				t.Error("a read-only device changed the file")
			}
		})
	}
}

// TestLogReadDamagedMagic flips a bit of the magic of a durable entry's
// frame header in a closed device. Read of the entry must report the
// damage, ErrCorrupt naming the frame, as a walk of the log does: not
// ErrNotFound, which says no entry starts there and would have the owner
// take a damaged entry for one it never wrote or GC reclaimed. Read of an
// offset inside an entry stays ErrNotFound.
func TestLogReadDamagedMagic(t *testing.T) {
	d, path := createLogDevice(t, LogRegion{"log", 64 << 10})
	l := mustLog(t, d, "log")
	var rs []Reservation
	for i := range 3 {
		rs = append(rs, appendEntryT(t, l, logContent(uint64(i), 100)))
	}
	frame := rs[1].Offset() - logFrameHeaderBytes
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(corruptCopy(t, path, func(b []byte) []byte { b[frame] ^= 1; return b }), &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	l = mustLog(t, ro, "log")
	want := fmt.Sprintf("corrupt log frame at offset %d", frame)
	if _, err := l.Read(rs[1].Offset()); !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), want) {
		t.Errorf("Read of the entry whose magic is damaged: %v; want ErrCorrupt naming %q", err, want)
	}
	if _, err := l.Read(rs[2].Offset() + 8); !errors.Is(err, ErrNotFound) {
		t.Errorf("Read inside an entry: %v; want ErrNotFound", err)
	}
	if _, err := l.Read(rs[2].Offset()); err != nil {
		t.Errorf("Read of the entry after the damaged one: %v", err)
	}
}

// TestLogEntriesFromErrors walks logs from positions the caller gives.
// On a healthy log, a position inside an entry (misaligned, inside its
// header, at bytes of its payload that hold a frame's magic, in its last
// eight bytes) is the caller's mistake:
// ErrInvalidArgument, without ErrCorrupt, which would report damage the
// device does not have. From the position of an entry damaged since, in
// its payload or in its header's magic, the walk reports the damage, as
// Read does: the CorruptError, not ErrInvalidArgument, which says that no
// entry starts there.
func TestLogEntriesFromErrors(t *testing.T) {
	d, path := createLogDevice(t, LogRegion{"log", 64 << 10})
	l := mustLog(t, d, "log")
	// The second payload holds an entry's magic where a frame could start.
	magic := logContent(1, 100)
	binary.LittleEndian.PutUint32(magic[40:], logEntryMagic)
	var rs []Reservation
	for _, p := range [][]byte{logContent(0, 100), magic, logContent(2, 100), logContent(3, 100)} {
		rs = append(rs, appendEntryT(t, l, p))
	}
	first := func(l *Log, from int64) error {
		for _, err := range l.Entries(from) {
			return err
		}
		return nil
	}
	for _, from := range []int64{rs[1].Pos() + 3, rs[1].Pos() + 8, rs[1].Pos() + logFrameHeaderBytes + 40, rs[2].Pos() - 8} {
		if err := first(l, from); !errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrCorrupt) {
			t.Errorf("Entries(%d), inside an entry of a healthy log: %v; want ErrInvalidArgument and no ErrCorrupt", from, err)
		}
	}
	payload, header := rs[2].Offset()+10, rs[3].Offset()-logFrameHeaderBytes
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(corruptCopy(t, path, func(b []byte) []byte { b[payload] ^= 1; b[header] ^= 1; return b }), &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	l = mustLog(t, ro, "log")
	for _, r := range rs[2:] {
		_, readErr := l.Read(r.Offset())
		if !errors.Is(readErr, ErrCorrupt) {
			t.Fatalf("set-up: Read of the damaged entry at %d: %v, want ErrCorrupt", r.Pos(), readErr)
		}
		if err := first(l, r.Pos()); !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrInvalidArgument) || err.Error() != readErr.Error() {
			t.Errorf("Entries(%d), the position of a damaged entry: %v; want Read's error, %v", r.Pos(), err, readErr)
		}
	}
}
