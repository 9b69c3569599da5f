package pagealloc

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
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

// TestLogDropBesideRetraction drops a log whose tail holds cancelled
// space while a Commit (or a Cancel) that gives that space back is on its
// way into the retraction, held there at writeMu as a write of staged
// frames under way would hold it; DropLog, finding every span done,
// leads a flush to make the tail durable and queues for writeMu behind
// it. The retraction goes first and moves the tail back below the
// position DropLog waits for. DropLog must return (dropped, or ErrInUse
// while the Commit still waits), not wait for a tail nothing will
// journal, holding the lock Close needs. With "then Append", a new
// reservation takes the retracted space while DropLog's flush waits for
// the writer: DropLog must refuse the log with ErrInUse, not wait for
// the reservation to commit (its holder may be about to Close).
func TestLogDropBesideRetraction(t *testing.T) {
	for _, how := range []string{"Commit", "Cancel", "Commit then Append", "Cancel then Append"} {
		t.Run(how, func(t *testing.T) {
			d, _ := createLogDevice(t)
			l := mustCreateLog(t, d, "x", 64<<10)
			p := logContent(1, 100)
			byCancel := strings.HasPrefix(how, "Cancel")
			var first Reservation
			if byCancel {
				appendEntryT(t, l, p)
			} else {
				var err error
				if first, err = l.Append(len(p)); err != nil {
					t.Fatal(err)
				}
				if err := l.Write(first, p); err != nil {
					t.Fatal(err)
				}
			}
			second, err := l.Append(1000)
			if err != nil {
				t.Fatal(err)
			}
			if !byCancel {
				if err := l.Cancel(second); err != nil {
					t.Fatal(err)
				}
			}
			oldTail := l.Stats().Tail
			l.writeMu.Lock()
			opDone := make(chan error, 1)
			go func() {
				if byCancel {
					opDone <- l.Cancel(second)
				} else {
					opDone <- l.Commit(first)
				}
			}()
			waitForStack(t, "(*Log).retractCancelled", "SemacquireMutex")
			dropDone := make(chan error, 1)
			go func() { dropDone <- d.DropLog("x") }()
			waitForStack(t, "(*Log).writeStaged", "SemacquireMutex")
			var later *Reservation
			if strings.HasSuffix(how, "then Append") {
				// Keep DropLog's flush at Begin while a reservation
				// takes the space the retraction gave back.
				tx, err := d.Begin()
				if err != nil {
					t.Fatal(err)
				}
				l.writeMu.Unlock()
				waitForStack(t, "(*Device).Begin", "DropLog")
				r, err := l.Append(2000)
				tx.Rollback()
				if err != nil {
					t.Fatal(err)
				}
				later = &r
			} else {
				l.writeMu.Unlock()
			}
			if err := <-opDone; err != nil {
				t.Fatalf("%s: %v", how, err)
			}
			if later == nil && l.Stats().Tail >= oldTail || later != nil && later.Pos() >= oldTail {
				t.Fatalf("the retraction did not run first (tail %d, was %d): the test no longer forces the interleaving", l.Stats().Tail, oldTail)
			}
			select {
			case err := <-dropDone:
				if later != nil {
					if !errors.Is(err, ErrInUse) {
						t.Fatalf("DropLog with a reservation open: %v, want ErrInUse", err)
					}
					if err := l.Cancel(*later); err != nil {
						t.Fatal(err)
					}
					err = d.DropLog("x")
				} else if errors.Is(err, ErrInUse) {
					err = d.DropLog("x")
				}
				if err != nil {
					t.Fatalf("DropLog: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("DropLog still waits after 10 s, for the durable tail to reach %d, which the retraction gave back: %+v", oldTail, l.Stats())
				// Commit entries past that position, so that DropLog
				// (and the cleanup's Close behind it) can return.
				if later != nil {
					_ = l.Write(*later, logContent(2, 2000))
					_ = l.Commit(*later)
				}
				for l.Stats().DurableTail < oldTail {
					r, err := l.Append(1000)
					if err != nil {
						break
					}
					_ = l.Write(r, logContent(2, 1000))
					_ = l.Commit(r)
				}
				t.Fatalf("after commits past it DropLog returned %v", <-dropDone)
			}
			if _, err := d.Log("x"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Log after the drop: %v, want ErrNotFound", err)
			}
			if err := d.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// waitForStack waits until some goroutine's stack holds both fn and
// where: a function it is blocked in, and a caller, or "SemacquireMutex"
// for a goroutine parked on a lock (not still spinning for it: parked
// goroutines take a lock in the order they parked).
func waitForStack(t *testing.T, fn, where string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	waitFor(t, fn+" to block in "+where, func() bool {
		n := runtime.Stack(buf, true)
		for g := range strings.SplitSeq(string(buf[:n]), "\n\n") {
			if strings.Contains(g, fn) && strings.Contains(g, where) {
				return true
			}
		}
		return false
	})
}

// TestLogCancelledBeforeRetractedCopy cancels a reservation that a GC
// copy follows (so its space cannot go back: the copy is after it), then
// has the copy's chunk roll back (Relocate fails), which gives the copy's
// room back: the cancelled space is then at the tail with nothing after
// it, and must go back to Append as Cancel says, not stay reserved until
// a Commit journals over it and GC reclaims it.
func TestLogCancelledBeforeRetractedCopy(t *testing.T) {
	d, _ := createLogDevice(t, LogRegion{"log", 64 << 10})
	l := mustLog(t, d, "log")
	owner := &endingSet{relocatingSet: relocatingSet{&setLive{live: map[uint64]int64{}}}, failAt: 1}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	owner.add(0, appendEntryT(t, l, logContent(0, 2000)).Offset())
	open, err := l.Append(1000)
	if err != nil {
		t.Fatal(err)
	}
	gcDone := make(chan error, 1)
	go func() { gcDone <- l.GC(context.Background()) }()
	// The copy follows the open reservation; the chunk waits for it.
	waitForStack(t, "(*Log).commitChunk", "sync.(*Cond).Wait")
	if err := l.Cancel(open); err != nil {
		t.Fatal(err)
	}
	if err := <-gcDone; err == nil || !strings.Contains(err.Error(), "the owner refuses") {
		t.Fatalf("GC whose Relocate fails: %v", err)
	}
	if st := l.Stats(); st.Tail != open.Pos() {
		t.Fatalf("the tail is at %d once the copy was given back, want %d, where the cancelled reservation began: %+v", st.Tail, open.Pos(), st)
	}
	r, err := l.Append(1000)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pos() != open.Pos() {
		t.Fatalf("a new reservation at %d, want %d", r.Pos(), open.Pos())
	}
	if err := l.Commit(open); err == nil {
		t.Fatal("the cancelled reservation committed at the new one's position")
	}
	p := logContent(1, 1000)
	if err := l.Write(r, p); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(r); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Read(r.Offset()); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("Read of the new entry: %v", err)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestLogCancelledRunJournaledBeforeCopy cancels R1, which a GC copy
// follows, and commits R0 before it while GC writes the copy: the Commit
// journals the tail at the copy's start, over R1's padding. When the
// chunk rolls back, the copy's room goes back but R1's must not: a tail
// past its start is durable, and a reopen would find appends there
// below it.
func TestLogCancelledRunJournaledBeforeCopy(t *testing.T) {
	o, err := (&Options{MaxSize: 8 << 20, MaxPageSize: 64 << 10, JournalSize: 64 << 10, LogRegions: []LogRegion{{"log", 64 << 10}}}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	h := &hookStore{Store: simstore.New(o.MaxSize)}
	t.Cleanup(func() { h.Store.Close() })
	d, err := createOn(h, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	l := mustLog(t, d, "log")
	owner := &endingSet{relocatingSet: relocatingSet{&setLive{live: map[uint64]int64{}}}, failAt: 1}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	owner.add(0, appendEntryT(t, l, logContent(0, 2000)).Offset())
	r0, err := l.Append(500)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(r0, logContent(5, 500)); err != nil {
		t.Fatal(err)
	}
	r1, err := l.Append(1000)
	if err != nil {
		t.Fatal(err)
	}
	cStart := uint64(r1.Pos() + logFrameBytes(1000))
	var hookErr error
	fired := false
	h.setHook(func(p []byte, off int64) {
		if off == l.frameOff(cStart) {
			h.setHook(nil)
			fired = true
			if err := l.Cancel(r1); err != nil {
				hookErr = err
				return
			}
			hookErr = l.Commit(r0)
		}
	})
	if err := l.GC(context.Background()); err == nil || !strings.Contains(err.Error(), "the owner refuses") {
		t.Fatalf("GC: %v", err)
	}
	if !fired || hookErr != nil {
		t.Fatalf("the copy's write was seen %v; cancelling R1 and committing R0 then: %v", fired, hookErr)
	}
	l.mu.Lock()
	logged := l.loggedTail
	l.mu.Unlock()
	// The copy went back; R1's space, under the journaled tail, did not.
	if st := l.Stats(); uint64(st.Tail) != cStart || logged != cStart {
		t.Fatalf("tail %d and journaled tail %d, want both at the copy's start %d (R1 at %d): %+v", st.Tail, logged, cStart, r1.Pos(), st)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	r, err := l.Append(3000)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(r, logContent(7, 3000)); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(r); err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct {
		off  int64
		id   uint64
		size int
	}{{r0.Offset(), 5, 500}, {owner.offset(0), 0, 2000}, {r.Offset(), 7, 3000}} {
		got, err := l.Read(e.off)
		if err != nil || !bytes.Equal(got, logContent(e.id, e.size)) {
			t.Fatalf("entry %d: %v", e.id, err)
		}
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	for e, err := range l.Entries(0) {
		if err != nil {
			t.Fatalf("Entries: %v (at %+v)", err, e)
		}
	}
}

// TestLogCancelledRunsBeforeTwoCopies has a chunk roll back with
// [Ra cancelled][copy 0][Rb cancelled][copy 1] at the tail, cancelled in
// either order: copy 1 and Rb go back, copy 0 stays (an orphan the next
// pass relocates to) and Ra stays padding; the cancelled reservations stay
// dead; every entry reads back, Check passes, and a reopen finds them.
func TestLogCancelledRunsBeforeTwoCopies(t *testing.T) {
	for _, order := range []string{"a then b", "b then a"} {
		t.Run(order, func(t *testing.T) {
			d, path := createLogDevice(t, LogRegion{"log", 64 << 10})
			l := mustLog(t, d, "log")
			owner := &endingSet{relocatingSet: relocatingSet{&setLive{live: map[uint64]int64{}}}, failAt: 1}
			if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
				t.Fatal(err)
			}
			owner.add(0, appendEntryT(t, l, logContent(0, 2000)).Offset())
			owner.add(1, appendEntryT(t, l, logContent(1, 1500)).Offset())
			ra, err := l.Append(1000)
			if err != nil {
				t.Fatal(err)
			}
			rbc := make(chan Reservation, 1)
			asked := false
			owner.check = func(off int64, entry []byte) {
				if logID(entry) == 1 && !asked {
					asked = true
					r, err := l.Append(700)
					if err != nil {
						t.Error(err)
					}
					rbc <- r
				}
			}
			gcDone := make(chan error, 1)
			go func() { gcDone <- l.GC(context.Background()) }()
			rb := <-rbc
			waitForStack(t, "(*Log).commitChunk", "sync.(*Cond).Wait")
			first, second := ra, rb
			if order == "b then a" {
				first, second = rb, ra
			}
			if err := l.Cancel(first); err != nil {
				t.Fatal(err)
			}
			if err := l.Cancel(second); err != nil {
				t.Fatal(err)
			}
			if err := <-gcDone; err == nil || !strings.Contains(err.Error(), "the owner refuses") {
				t.Fatalf("GC: %v", err)
			}
			if st := l.Stats(); st.Tail != rb.Pos() {
				t.Fatalf("tail %d, want %d where Rb began (Ra at %d): %+v", st.Tail, rb.Pos(), ra.Pos(), st)
			}
			l.mu.Lock()
			left := l.cancelledBeforeCopy
			l.mu.Unlock()
			if left != nil {
				t.Fatalf("the chunk left its records of cancelled runs: %v", left)
			}
			r, err := l.Append(700)
			if err != nil {
				t.Fatal(err)
			}
			if r.Pos() != rb.Pos() {
				t.Fatalf("new reservation at %d, want %d", r.Pos(), rb.Pos())
			}
			for _, stale := range []Reservation{ra, rb} {
				if err := l.Write(stale, make([]byte, stale.Size())); err == nil {
					t.Fatalf("Write of the cancelled reservation at %d succeeded", stale.Pos())
				}
				if err := l.Cancel(stale); err == nil {
					t.Fatalf("Cancel of the cancelled reservation at %d succeeded", stale.Pos())
				}
			}
			p := logContent(2, 700)
			if err := l.Write(r, p); err != nil {
				t.Fatal(err)
			}
			owner.add(2, r.Offset())
			if err := l.Commit(r); err != nil {
				t.Fatal(err)
			}
			owner.check = nil
			if err := l.GC(context.Background()); err != nil {
				t.Fatal(err)
			}
			check := func(l *Log) {
				for id, size := range map[uint64]int{0: 2000, 1: 1500, 2: 700} {
					got, err := l.Read(owner.offset(id))
					if err != nil || !bytes.Equal(got, logContent(id, size)) {
						t.Fatalf("entry %d at %d: %v", id, owner.offset(id), err)
					}
				}
			}
			check(l)
			if err := d.Check(); err != nil {
				t.Fatal(err)
			}
			d = reopenLogDevice(t, d, path)
			check(mustLog(t, d, "log"))
			if err := d.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
