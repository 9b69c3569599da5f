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
			var rs []Reservation
			for {
				r, err := l.Append(1000)
				if errors.Is(err, ErrNoSpace) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				rs = append(rs, r)
			}
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
			for _, r := range rs[:1] {
				if err := l.Cancel(r); !errors.Is(err, ErrNotReserved) {
					t.Errorf("Cancel of a cancelled reservation whose space was reused: %v, want ErrNotReserved", err)
				}
				if err := l.Commit(r); !errors.Is(err, ErrNotReserved) {
					t.Errorf("Commit of a cancelled reservation whose space was reused: %v, want ErrNotReserved", err)
				}
				if err := l.Write(r, make([]byte, r.Size())); !errors.Is(err, ErrNotReserved) {
					t.Errorf("Write of a cancelled reservation whose space was reused: %v, want ErrNotReserved", err)
				}
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
		})
	}
}
