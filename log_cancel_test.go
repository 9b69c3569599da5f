package pagealloc

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestLogCancelledSpaceReused fills a ring with reservations and cancels
// them all, first to last and last to first: the space they gave up must
// take new appends (GC may be asked, and cannot pass the live entry at the
// head), a reservation cancelled earlier must stay dead when a new one
// takes its position, and the committed entry must stay, also after
// reopen.
func TestLogCancelledSpaceReused(t *testing.T) {
	for _, order := range []string{"in order", "newest first"} {
		t.Run(order, func(t *testing.T) {
			d, path := createLogDevice(t, LogRegion{"log", 16 << 10})
			l := mustLog(t, d, "log")
			if err := l.SetOwner(allLive{}, &LogOptions{GCThresholdBytes: -1}); err != nil {
				t.Fatal(err)
			}
			kept := logContent(1, 100)
			at := appendEntryT(t, l, kept).Offset()
			rs := appendUntilFull(t, l, 1000)
			for i := range rs {
				if order == "newest first" {
					i = len(rs) - 1 - i
				}
				if err := l.Cancel(rs[i]); err != nil {
					t.Fatal(err)
				}
			}
			// Nothing but the committed entry is in the ring: it takes the
			// largest entry that fits beside it.
			if err := l.GC(context.Background()); err != nil {
				t.Fatal(err)
			}
			big, err := l.Append(16<<10 - 24 - 128)
			if err != nil {
				t.Fatalf("Append after every reservation was cancelled and GC ran: %v; %+v", err, l.Stats())
			}
			reuseAndCheck(t, d, path, l, big, rs[0], at, kept)
		})
	}
}

// appendUntilFull reserves entries of n bytes in l until its ring is full.
func appendUntilFull(t *testing.T, l *Log, n int) []Reservation {
	t.Helper()
	var rs []Reservation
	for {
		r, err := l.Append(n)
		if errors.Is(err, ErrNoSpace) {
			return rs
		}
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
}

// reuseAndCheck writes and commits big, reserved in space that cancelled
// reservations gave back, and checks that dead, one of those, stays dead
// and that big and kept, the entry at at, read back, also after reopening
// the device d at path.
func reuseAndCheck(t *testing.T, d *Device, path string, l *Log, big, dead Reservation, at int64, kept []byte) {
	t.Helper()
	if err := l.Cancel(dead); !errors.Is(err, ErrNotReserved) {
		t.Errorf("Cancel of a cancelled reservation whose space was reused: %v, want ErrNotReserved", err)
	}
	if err := l.Commit(dead); !errors.Is(err, ErrNotReserved) {
		t.Errorf("Commit of a cancelled reservation whose space was reused: %v, want ErrNotReserved", err)
	}
	if err := l.Write(dead, make([]byte, dead.Size())); !errors.Is(err, ErrNotReserved) {
		t.Errorf("Write of a cancelled reservation whose space was reused: %v, want ErrNotReserved", err)
	}
	p := logContent(2, big.Size())
	if err := l.Write(big, p); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(big); err != nil {
		t.Fatal(err)
	}
	check := func(l *Log) {
		t.Helper()
		checkLogInvariants(t, l)
		if got, err := l.Read(big.Offset()); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("Read of the entry in the reused space: %v", err)
		}
		if got, err := l.Read(at); err != nil || !bytes.Equal(got, kept) {
			t.Fatalf("Read of the entry committed first: %v", err)
		}
	}
	check(l)
	check(mustLog(t, reopen(t, d, path, nil), "log"))
}

// TestLogCancelledBehindOpenReservation cancels every reservation of a
// full ring but the first, which is still open, then commits that one,
// written with Log.Write (Commit finds the frame written) or WriteAt
// (Commit writes its header): the cancelled space must go back to Append
// with that Commit, on a log with no owner, where GC cannot reclaim it.
// Before, it was given back only by a Cancel with nothing open before it,
// and the ring stayed full.
func TestLogCancelledBehindOpenReservation(t *testing.T) {
	for _, how := range []string{"Log.Write", "WriteAt"} {
		t.Run(how, func(t *testing.T) {
			d, path := createLogDevice(t, LogRegion{"log", 16 << 10})
			l := mustLog(t, d, "log")
			first := logContent(1, 100)
			open, err := l.Append(len(first))
			if err != nil {
				t.Fatal(err)
			}
			rs := appendUntilFull(t, l, 1000)
			for _, r := range rs {
				if err := l.Cancel(r); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := l.Append(1000); !errors.Is(err, ErrNoSpace) {
				t.Fatalf("Append while the first reservation is open: %v, want ErrNoSpace (its space cannot go back yet)", err)
			}
			if how == "Log.Write" {
				err = l.Write(open, first)
			} else {
				_, err = d.WriteAt(first, open.Offset())
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Commit(open); err != nil {
				t.Fatal(err)
			}
			if st := l.Stats(); st.Tail != rs[0].Pos() {
				t.Fatalf("after the Commit the tail is at %d, want %d, where the cancelled reservations began: %+v", st.Tail, rs[0].Pos(), st)
			}
			big, err := l.Append(16<<10 - 24 - 128)
			if err != nil {
				t.Fatalf("Append after the cancelled reservations' space went back: %v; %+v", err, l.Stats())
			}
			if big.Pos() != rs[0].Pos() {
				t.Errorf("the new reservation is at %d, want %d", big.Pos(), rs[0].Pos())
			}
			reuseAndCheck(t, d, path, l, big, rs[0], open.Offset(), first)
		})
	}
}
