package pagealloc

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// Frames given up: a frame header written for a position that the log
// then hands out again (after a reopen, a Cancel given back or a GC chunk
// rolled back), or left in a page a new carved log takes. Where the new
// owner of the position writes a padding over it, nothing else overwrites
// the old header, and Read and Entries, which check the frame an offset
// points at rather than the chain of frames that leads there, would find
// it once the durable tail passed it.

// giveUpFrame appends an entry x behind a reservation never committed,
// and returns once x's Commit has written x's frame and waits for the
// reservation before it: a reopen now gives x's position back. done
// receives what that Commit returns.
func giveUpFrame(t *testing.T, l *Log) (x Reservation, payload []byte, done chan error) {
	t.Helper()
	if _, err := l.Append(100); err != nil { // never committed
		t.Fatal(err)
	}
	x, err := l.Append(200)
	if err != nil {
		t.Fatal(err)
	}
	payload = logContent(7, 200)
	if _, err := l.d.WriteAt(payload, x.Offset()); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- l.Commit(x) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		l.mu.Lock()
		i := l.findLocked(x.start)
		sealed := i >= 0 && l.spans[i].state == spanDone
		l.mu.Unlock()
		if sealed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("x's Commit did not write its frame in 30 s")
		}
	}
	if !isLogFrameHeader(l.d.view[l.frameOff(x.pos):]) {
		t.Fatal("set-up: x's frame header is not in the file")
	}
	return x, payload, done
}

// padOver makes the next 424 bytes from l's tail a cancelled
// reservation's padding, and commits an entry after it, which takes the
// durable tail past it.
func padOver(t *testing.T, l *Log) {
	t.Helper()
	cancelled, err := l.Append(400)
	if err != nil {
		t.Fatal(err)
	}
	after, err := l.Append(8) // keeps the cancelled span from going back
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Cancel(cancelled); err != nil {
		t.Fatal(err)
	}
	if _, err := l.d.WriteAt(logContent(9, 8), after.Offset()); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(after); err != nil {
		t.Fatal(err)
	}
}

// wantNoEntryAt checks that l has no entry at x's position: Read of its
// offset is ErrNotFound and Entries from its position ErrInvalidArgument,
// once the durable tail has passed it.
func wantNoEntryAt(t *testing.T, l *Log, x Reservation, payload []byte) {
	t.Helper()
	if s := l.Stats(); s.DurableTail <= x.Pos() || s.Head > x.Pos() {
		t.Fatalf("set-up: x's position %d is not between the head and the durable tail: %+v", x.Pos(), s)
	}
	if p, err := l.Read(x.Offset()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Read(%d), the offset of a frame given up: %d bytes (its payload: %v), error %v; want ErrNotFound", x.Offset(), len(p), bytes.Equal(p, payload), err)
	}
	for e, err := range l.Entries(x.Pos()) {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Entries(%d), the position of a frame given up: first yields an entry at %d (its payload: %v), error %v; want ErrInvalidArgument", x.Pos(), e.Pos, bytes.Equal(e.Data, payload), err)
		}
		break
	}
}

// TestLogFrameGivenUpAtReopen: an entry whose Commit wrote its frame but
// never returned, waiting for an earlier reservation when the device
// closed, is not found after the reopen; the positions go to new appends,
// and where a padding covers the old frame (a cancelled reservation's, or
// the one an entry skips at the ring's end), the frame still is not found
// once the durable tail passes it.
func TestLogFrameGivenUpAtReopen(t *testing.T) {
	const ring = 16 << 10
	for _, tc := range []struct {
		name string
		// before leaves the tail where x is to be appended; after covers
		// x's old frame with a padding and commits an entry after it.
		before, after func(t *testing.T, l *Log)
	}{
		{
			name:   "cancelled reservation",
			before: func(t *testing.T, l *Log) {},
			after:  padOver,
		},
		{
			name: "padding at the ring's end",
			before: func(t *testing.T, l *Log) {
				appendEntryT(t, l, logContent(1, ring-1024-logFrameHeaderBytes))
			},
			after: func(t *testing.T, l *Log) {
				if err := l.SetOwner(&setLive{live: map[uint64]int64{}}, &LogOptions{GCThresholdBytes: -1}); err != nil {
					t.Fatal(err)
				}
				if err := l.GC(nil); err != nil { // nothing is live: the ring is free
					t.Fatal(err)
				}
				// Larger than the 1,024 bytes left: a padding to the
				// ring's end, then the entry at its start.
				appendEntryT(t, l, logContent(9, 2000))
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, path := createLogDevice(t, LogRegion{"log", ring})
			l := mustLog(t, d, "log")
			tc.before(t, l)
			x, payload, done := giveUpFrame(t, l)
			d = reopen(t, d, path, &Options{NoSync: true})
			if err := <-done; err == nil {
				t.Fatal("x's Commit returned nil across Close")
			}
			l = mustLog(t, d, "log")
			if _, err := l.Read(x.Offset()); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Read of x right after the reopen: %v, want ErrNotFound", err)
			}
			tc.after(t, l)
			wantNoEntryAt(t, l, x, payload)
			mustCheck(t, d)
			// And as the next process finds it.
			d = reopenLogDevice(t, d, path)
			wantNoEntryAt(t, mustLog(t, d, "log"), x, payload)
		})
	}
}

// refusingRelocator lets GC copy entries, records where, and refuses the
// second relocation, which rolls the chunk back and gives the copies'
// room back to appends.
type refusingRelocator struct {
	*setLive
	newOffs []int64
}

func (r *refusingRelocator) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	r.newOffs = append(r.newOffs, newOff)
	if len(r.newOffs) == 2 {
		return errors.New("the owner refuses")
	}
	return nil
}

// TestLogCopyGivenBackNotRead: the frames of GC copies given back when
// their chunk rolled back are not found once new appends cover them with
// a padding and the durable tail passes them.
func TestLogCopyGivenBackNotRead(t *testing.T) {
	d, path := createLogDevice(t, LogRegion{"log", 16 << 10})
	l := mustLog(t, d, "log")
	owner := &refusingRelocator{setLive: &setLive{live: map[uint64]int64{}}}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	// A lap of garbage first: no position from here on was handed out
	// before the device opened, so only the chunk given back below can
	// leave a frame for one.
	for l.Stats().Tail < 16<<10 {
		appendEntryT(t, l, logContent(100, 1000))
		if err := l.GC(nil); err != nil {
			t.Fatal(err)
		}
	}
	for id := uint64(1); id <= 2; id++ {
		r := appendEntryT(t, l, logContent(id, 100*int(id)))
		owner.add(id, r.Offset())
	}
	tail := l.Stats().Tail
	if err := l.GC(nil); err == nil {
		t.Fatal("GC returned nil though Relocate refused")
	}
	if len(owner.newOffs) != 2 || l.Stats().Tail != tail {
		t.Fatalf("set-up: %d relocations asked, tail %d after GC, %d before: want 2 copies given back", len(owner.newOffs), l.Stats().Tail, tail)
	}
	second := Reservation{log: l, pos: uint64(tail) + uint64(logFrameBytes(100)), size: 200}
	if second.Offset() != owner.newOffs[1] || !isLogFrameHeader(d.view[l.frameOff(second.pos):]) {
		t.Fatalf("set-up: the second copy is not at position %d (offset %d, Relocate was given %d)", second.pos, second.Offset(), owner.newOffs[1])
	}
	padOver(t, l) // from the first copy's position on, over the second's
	wantNoEntryAt(t, l, second, logContent(2, 200))
	d = reopenLogDevice(t, d, path)
	wantNoEntryAt(t, mustLog(t, d, "log"), second, logContent(2, 200))
}

// TestCreateLogClearsOldFrames: a log carved from the page of a dropped
// log finds none of the dropped log's frames: CreateLog clears every
// header in the page, so none is read where the new log's paddings leave
// the old bytes, at any lap.
func TestCreateLogClearsOldFrames(t *testing.T) {
	d, path := carvedLogDevice(t, nil)
	a := mustCreateLog(t, d, "a", 16<<10)
	// A page past the ring keeps the frontier, and so the ring's bytes,
	// where they are when a is dropped.
	if err := d.Update(func(tx *Txn) error { _, err := tx.Alloc(64 << 10); return err }); err != nil {
		t.Fatal(err)
	}
	appendEntryT(t, a, logContent(1, 100))
	old := appendEntryT(t, a, logContent(2, 200))
	ring := a.ring
	if err := d.DropLog("a"); err != nil {
		t.Fatal(err)
	}
	d = reopenLogDevice(t, d, path) // the free is covered: the page is free again
	// The free list's links took the page's first bytes, the first
	// entry's header; the second's is still there.
	if !isLogFrameHeader(d.view[ring.off+int64(old.pos):]) {
		t.Fatal("set-up: the dropped log's second frame header is not in its ring")
	}
	b := mustCreateLog(t, d, "b", 16<<10)
	if b.ring != ring {
		t.Fatalf("set-up: log b's ring is %v, not the dropped ring %v", b.ring, ring)
	}
	for off := ring.off; off+logFrameHeaderBytes <= ring.end(); off += 8 {
		if isLogFrameHeader(d.view[off:]) {
			t.Fatalf("a frame header at offset %d of the new log's ring, before any append", off)
		}
	}
	padOver(t, b) // from position 0 on, over a's second entry's frame
	oldInB := Reservation{log: b, pos: old.pos, size: old.size}
	wantNoEntryAt(t, b, oldInB, logContent(2, 200))
	d = reopenLogDevice(t, d, path)
	oldInB.log = mustLog(t, d, "b")
	wantNoEntryAt(t, oldInB.log, oldInB, logContent(2, 200))
}
