package pagealloc

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

// TestIOErrorsLoseNothing makes the store refuse writes, either at home
// locations only (as a full filesystem refuses writes into the file's
// holes while the journal's ring, written at Create, still takes them) or
// everywhere, and runs two transactions, one of which also writes the root
// area. The device fails with ErrFailed; reopened once writes succeed
// again, it holds every transaction whose Commit returned nil, and each
// transaction whose Commit failed wholly or not at all.
func TestIOErrorsLoseNothing(t *testing.T) {
	for _, tc := range []struct {
		homeOnly bool
		rootTxn  int
	}{{true, 0}, {true, 1}, {false, 0}, {false, 1}} {
		t.Run(fmt.Sprintf("homeOnly=%v/root=%d", tc.homeOnly, tc.rootTxn), func(t *testing.T) {
			d, store := simDevice(t, crashOptions(t))
			ring := d.geometry.journal
			before := allocPages(t, d, 8, 4096)
			writeRoot(t, d, 0, []byte("before--"))

			store.SetFault(func(op simstore.Op) error {
				if op.Kind != simstore.OpWrite || tc.homeOnly && op.Off >= ring.off && op.Off+op.Len <= ring.end() {
					return nil
				}
				return syscall.ENOSPC
			})
			type fate struct {
				pages     []Addr
				committed bool
			}
			var fates [2]fate
			for i := range fates {
				err := d.Update(func(tx *Txn) error {
					for range 3 {
						a, err := tx.Alloc(4096)
						if err != nil {
							return err
						}
						fates[i].pages = append(fates[i].pages, a)
					}
					if i == tc.rootTxn {
						return tx.Write(d.geometry.root.off, []byte("during--"))
					}
					return nil
				})
				if err != nil && !errors.Is(err, ErrFailed) {
					t.Fatalf("transaction %d: %v, want nil or ErrFailed", i, err)
				}
				fates[i].committed = err == nil
			}
			t.Logf("committed: %v and %v", fates[0].committed, fates[1].committed)
			if fates[1].committed {
				t.Fatal("both transactions committed with the store refusing writes")
			}
			if _, err := d.Begin(); !errors.Is(err, ErrFailed) {
				t.Errorf("Begin after the failure: %v, want ErrFailed", err)
			}
			rd := reopenFailed(t, d, store)
			defer rd.Close()
			want, wantRoot := int64(len(before)), "before--"
			for _, a := range before {
				if !isAllocated(t, rd, a) {
					t.Errorf("page %v, allocated before the failure, is not after reopening", a)
				}
			}
			var found [2]int
			for i, f := range fates {
				n := 0
				for _, a := range f.pages {
					if isAllocated(t, rd, a) {
						n++
					}
				}
				switch {
				case f.committed && n != len(f.pages):
					t.Errorf("transaction %d committed, but %d of its %d pages are allocated after reopening", i, n, len(f.pages))
				case n != 0 && n != len(f.pages):
					t.Errorf("transaction %d failed, and %d of its %d pages are allocated after reopening", i, n, len(f.pages))
				}
				found[i] = n
				want += int64(n)
				if i == tc.rootTxn && n > 0 {
					wantRoot = "during--"
				}
			}
			t.Logf("pages found after reopening: %d of %d, %d of %d", found[0], len(fates[0].pages), found[1], len(fates[1].pages))
			if st := rd.Stats(); st.AllocatedPages != want {
				t.Errorf("%d pages allocated after reopening, want %d", st.AllocatedPages, want)
			}
			if got := string(readRoot(t, rd, 0, 8)); got != wantRoot {
				t.Errorf("root area %q after reopening, want %q (it goes with its transaction's pages)", got, wantRoot)
			}
		})
	}
}

// reopenFailed closes d, failed on store, expecting ErrFailed, lets the
// store take writes again and opens what it holds, checked; the caller
// closes the device.
func reopenFailed(t *testing.T, d *Device, store *simstore.Store) *Device {
	t.Helper()
	if err := d.Close(); !errors.Is(err, ErrFailed) {
		t.Errorf("Close after the failure: %v, want ErrFailed", err)
	}
	store.SetFault(nil)
	rd := openImage(t, store, store.Ops(), nil)
	mustCheck(t, rd)
	return rd
}

// isAllocated reports whether a is an allocated page of d: freeing it
// succeeds (in a transaction rolled back) rather than failing with
// ErrInvalidFree.
func isAllocated(t *testing.T, d *Device, a Addr) bool {
	t.Helper()
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	err = tx.Free(a)
	if err != nil && !errors.Is(err, ErrInvalidFree) {
		t.Fatalf("Free(%v): %v", a, err)
	}
	return err == nil
}

// TestIOErrorAtDeferredHomeWrite fails the home write of a group whose
// committers were woken before it (the group wrote only allocator state),
// at the group that also fills the ring past half, after which the journal
// takes a checkpoint. The Commit returned nil, so the transaction must
// survive: the failed device must not checkpoint past a record whose home
// writes did not all land.
func TestIOErrorAtDeferredHomeWrite(t *testing.T) {
	d, store := simDevice(t, crashOptions(t))
	ring, root := d.geometry.journal, d.geometry.root
	ringBytes, failed := int64(0), false
	store.SetFault(func(op simstore.Op) error {
		switch {
		case op.Kind != simstore.OpWrite:
		case op.Off < root.off: // a checkpoint's superblock
			ringBytes = 0
		case op.Off >= ring.off && op.Off < ring.end():
			ringBytes += op.Len
		case ringBytes > ring.size/2 && !failed:
			// A home write of the group after which the journal
			// checkpoints.
			failed = true
			return syscall.EIO
		}
		return nil
	})
	var committed []Addr
	for i := 0; d.failure.Load() == nil; i++ {
		if i == 10000 {
			t.Fatal("no home write failed")
		}
		var a Addr
		err := d.Update(func(tx *Txn) error {
			var err error
			a, err = tx.Alloc(4096)
			return err
		})
		if err == nil {
			committed = append(committed, a)
		} else if !errors.Is(err, ErrFailed) {
			t.Fatalf("transaction %d: %v, want nil or ErrFailed", i, err)
		}
	}
	rd := reopenFailed(t, d, store)
	defer rd.Close()
	for i, a := range committed {
		if !isAllocated(t, rd, a) {
			t.Errorf("page %v (transaction %d of %d committed) is not allocated after reopening", a, i, len(committed))
		}
	}
	if st := rd.Stats(); st.AllocatedPages != int64(len(committed)) {
		t.Errorf("%d pages allocated after reopening, want %d", st.AllocatedPages, len(committed))
	}
}

// TestCommitDuringFailedSync writes a page in place, then has Sync's fsync
// fail while a Commit waits for it: the bytes it was to make durable are
// not known to be (after a failed fsync the kernel may drop them), so the
// Commit, which promises them along with its transaction, must not return
// nil. Both an empty Commit and one with a write are tried.
func TestCommitDuringFailedSync(t *testing.T) {
	for _, empty := range []bool{true, false} {
		t.Run(fmt.Sprintf("empty=%v", empty), func(t *testing.T) {
			d, store := simDevice(t, crashOptions(t))
			page := allocPages(t, d, 1, 4096)[0]
			if _, err := d.WriteAt([]byte("in place"), page.Offset()); err != nil {
				t.Fatal(err)
			}
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			store.SetFault(func(op simstore.Op) error {
				if op.Kind != simstore.OpSync {
					return nil
				}
				failed := false
				once.Do(func() {
					close(entered)
					<-release
					failed = true
				})
				if failed {
					return syscall.EIO
				}
				return nil
			})
			syncErr := make(chan error)
			go func() { syncErr <- d.Sync() }()
			<-entered // Sync has taken the in-place bytes and is syncing them
			tx, err := d.Begin()
			if err != nil {
				t.Fatal(err)
			}
			if !empty {
				if err := tx.Write(d.geometry.root.off, []byte("root")); err != nil {
					t.Fatal(err)
				}
			}
			commitErr := make(chan error)
			go func() { commitErr <- tx.Commit() }()
			// Let the Commit reach the wait for Sync's fsync, then fail it.
			time.Sleep(50 * time.Millisecond)
			close(release)
			if err := <-syncErr; !errors.Is(err, ErrFailed) {
				t.Errorf("Sync: %v, want ErrFailed", err)
			}
			if err := <-commitErr; !errors.Is(err, ErrFailed) {
				t.Errorf("Commit waiting for the failed fsync of bytes written in place: %v, want ErrFailed", err)
			}
		})
	}
}

// TestFailedDeviceWakesLogWaiters fails the device while a log's Commit
// and a GC pass each wait for an earlier reservation to be committed. Its
// owner cannot commit it any more (Commit returns the failure), so nothing
// will pass it: both must return ErrFailed, not wait until Close.
func TestFailedDeviceWakesLogWaiters(t *testing.T) {
	o := crashOptions(t)
	o.NoSync = true
	o.LogRegions = []LogRegion{{"log", 64 << 10}}
	d, store := simDevice(t, o)
	l := mustLog(t, d, "log")
	owner := relocatingSet{&setLive{live: map[uint64]int64{}}}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	for id := range uint64(3) {
		owner.add(id, appendEntryT(t, l, logContent(id, 100)).Offset())
	}
	early, err := l.Append(100)
	if err != nil {
		t.Fatal(err)
	}
	late, err := l.Append(100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(logContent(10, 100), late.Offset()); err != nil {
		t.Fatal(err)
	}
	commitDone, gcDone := make(chan error, 1), make(chan error, 1)
	go func() { commitDone <- l.Commit(late) }()
	go func() { gcDone <- l.GC(context.Background()) }()
	// Wait until both wait for early: the Commit as a waiter, GC for
	// the committed end to pass its copies.
	for {
		l.mu.Lock()
		waiting := len(l.waiters)
		l.mu.Unlock()
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if waiting == 1 && strings.Contains(stacks, "(*Log).commitChunk") && strings.Contains(stacks, "(*Cond).Wait") {
			break
		}
		time.Sleep(time.Millisecond)
	}
	store.SetFault(func(simstore.Op) error { return syscall.EIO })
	if _, err := d.WriteAt(logContent(11, 100), early.Offset()); !errors.Is(err, ErrFailed) {
		t.Fatalf("WriteAt with the disk failing: %v, want ErrFailed", err)
	}
	store.SetFault(nil)
	if err := l.Commit(early); !errors.Is(err, ErrFailed) {
		t.Fatalf("Commit of the earlier reservation on a failed device: %v, want ErrFailed", err)
	}
	for _, w := range []struct {
		what string
		done chan error
	}{{"the later Commit", commitDone}, {"GC", gcDone}} {
		select {
		case err := <-w.done:
			if !errors.Is(err, ErrFailed) {
				t.Errorf("%s, waiting when the device failed: %v, want ErrFailed", w.what, err)
			}
		case <-time.After(20 * time.Second): // a hang, not a speed goal
			t.Fatalf("%s still waiting 20 s after the device failed", w.what)
		}
	}
}

// TestIOErrorWritingStagedLogEntry writes in place into a log entry whose
// frame Log.Write staged, with the store failing: the staged frame goes
// out first, and its failed write fails the device, so WriteAt must
// return ErrFailed, as every write that meets an I/O error does, rather
// than refuse the range as not the caller's.
func TestIOErrorWritingStagedLogEntry(t *testing.T) {
	o := crashOptions(t)
	o.LogRegions = []LogRegion{{"log", 64 << 10}}
	d, store := simDevice(t, o)
	l := mustLog(t, d, "log")
	r, err := l.Append(100)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(r, logContent(1, 100)); err != nil {
		t.Fatal(err)
	}
	if len(l.spans) != 1 || l.spans[0].staged.frame == nil {
		t.Fatal("Write did not stage the entry's frame")
	}
	store.SetFault(func(simstore.Op) error { return syscall.EIO })
	if _, err := d.WriteAt([]byte("in place"), r.Offset()); !errors.Is(err, ErrFailed) {
		t.Errorf("WriteAt into a staged entry with the disk failing: %v, want ErrFailed", err)
	}
	store.SetFault(nil)
	if err := l.Commit(r); !errors.Is(err, ErrFailed) {
		t.Errorf("Commit after the failure: %v, want ErrFailed", err)
	}
}
