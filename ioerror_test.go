package pagealloc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
	"github.com/pagealloc/pagealloc/internal/storage"
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

// TestAllocOnFailedDevice fails the device while a transaction is open,
// then allocates in it: Alloc is among the calls that return ErrFailed
// once the device has failed (see ErrFailed), and it must not grow the
// file of a device in an unknown state, as it would to find the pages.
func TestAllocOnFailedDevice(t *testing.T) {
	o := crashOptions(t)
	o.GrowthStep = o.MaxPageSize // every new max page grows the file
	d, store := simDevice(t, o)
	page := allocPages(t, d, 1, 4096)[0]
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	store.SetFault(func(simstore.Op) error { return syscall.EIO })
	if _, err := d.WriteAt([]byte("in place"), page.Offset()); !errors.Is(err, ErrFailed) {
		t.Fatalf("WriteAt with the disk failing: %v, want ErrFailed", err)
	}
	store.SetFault(nil)
	before, err := store.Size()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if a, err := tx.Alloc(o.MaxPageSize); !errors.Is(err, ErrFailed) {
			t.Errorf("Alloc %d on the failed device: %v, %v, want ErrFailed", i, a, err)
		}
	}
	if after, err := store.Size(); err != nil || after != before {
		t.Errorf("the failed device's file is %d bytes after the Allocs (%v), was %d", after, err, before)
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

// TestIOErrorAtEveryOperation fails one mutating storage operation of a
// deterministic workload at a time, every one of them in turn, and checks
// the durability contract at each: the workload runs on a simulated store
// (internal/simstore) from Create to Close, once cleanly to count the N
// operations it makes after Create, then once per point with the store
// failing that operation: with EIO, once (later operations succeed); with
// ENOSPC, and every write after it too; with ENOSPC, and every write
// into the heap after it, as a full filesystem refuses writes into the
// file's holes; and, at a write that crosses a sector boundary, with EIO
// once its sectors up to the middle boundary reached the store, as a disk
// failing in the middle of a request leaves it. A point names the operation as the how-manyth of its
// kind, offset and length, so that a checkpoint the journal's goroutine
// takes a little earlier or later does not move it.
//
// The workload (see ioSweep) allocates pages of every size, sub-page slots
// and log entries, writes the root area and new pages with Txn.Write and
// pages in place with WriteAt, syncs, frees pages (whole max pages among
// them, whose storage Options.PunchHoles returns) and slots, collects the
// log's garbage and closes the device; its journal wraps and checkpoints
// several times, its heap grows, and Close cuts the file. At each point:
//
//   - no call panics or hangs (a run that takes longer than
//     ioSweepTimeout fails the test, with every goroutine's stack);
//   - once a call has failed, it failed with ErrFailed, and every call
//     that would write returns ErrFailed too, while reads of committed
//     state (the root area, pages written in place, sub-page slots, log
//     entries, the heap's walk, Check) still work; Close returns nil or
//     ErrFailed;
//   - reopened, both from the file as the run left it and from what a
//     power loss just after the run would leave of it (every write not
//     synced lost), the device passes Check and holds exactly the pages,
//     root bytes and sub-page slots of the transactions whose Commit
//     returned nil, plus, wholly or not at all, those of the one whose
//     Commit failed; the bytes they journaled; in its pages the bytes
//     written in place that a Commit, Sync or Close made durable (or a
//     later write's); in its log every committed entry the owner keeps,
//     intact, and no entry whose Commit was never called; and it takes a
//     transaction and closes.
//
// Under -short, -race and -tags invariants, the points are every sync,
// truncate and hole punch and a seeded sample of the writes (one in
// ioSweepSampleOneIn; -ioerror.seed reruns a sample).
func TestIOErrorAtEveryOperation(t *testing.T) {
	o := ioSweepOptions(t)
	t.Logf("workload: %d rounds, fixed seed %#x", ioSweepRounds, ioSweepSeed)

	// Clean runs until two make the same trace, whose operations are the
	// points: on a loaded machine an odd run can take a checkpoint more
	// (its journal goroutine scheduled otherwise, despite settle), and
	// points from its trace would not come in the others.
	start := time.Now()
	var cleans []ioSweepResult
	clean, found := ioSweepResult{}, false
	for !found && len(cleans) < ioSweepCleanRuns {
		c := runIOSweep(t, o, nil)
		if len(c.problems) > 0 || c.err != nil || c.closeErr != nil {
			t.Fatalf("clean run: first error %v, Close %v:\n\t%s", c.err, c.closeErr, strings.Join(c.problems, "\n\t"))
		}
		for _, d := range cleans {
			found = found || sameTrace(c.trace, d.trace)
		}
		cleans = append(cleans, c)
		clean = c
	}
	if !found {
		t.Logf("no two of %d clean runs made the same trace: the points are the first's", len(cleans))
		clean = cleans[0]
	}
	trace, first := clean.trace, clean.first
	n := len(trace)
	t.Logf("clean run: %d operations after Create (trace indices %d to %d), %d clean runs in %v; %s",
		n, first, first+n-1, len(cleans), time.Since(start).Round(time.Millisecond), clean.coverage)
	for _, miss := range clean.missing {
		t.Errorf("the workload makes no %s: the sweep does not cover it", miss)
	}

	// Under -short, -race and -tags invariants, a seeded sample of the
	// writes; every sync, truncate and hole punch always.
	all := !testing.Short() && !crashSampled()
	var rng *rand.Rand
	if !all {
		rng = rand.New(rand.NewPCG(testSeed(t, "ioerror.seed", *ioErrorSeed), 0x10e))
	}
	keep := func(op simstore.Op) bool {
		return all || op.Kind != simstore.OpWrite || rng.IntN(ioSweepSampleOneIn) == 0
	}

	// The point of each operation: the how-manyth operation of the same
	// kind, offset and length it is. A point fails that operation rather
	// than the one at its index: a checkpoint the journal's goroutine
	// takes may fall before or after a commit's record as the scheduler
	// decides, which shifts indices but not those counts.
	occ := traceOccurrences(trace)
	heapOff := clean.d.geometry.heapOff
	for _, v := range []struct {
		name  string
		errno syscall.Errno
		// refuses, if not nil, says which operations fail from the
		// point on, as well as the one at the point; the points are
		// only at such operations.
		refuses func(simstore.Op) bool
		// partial: the write at the point reaches the store up to a
		// sector boundary inside it before it fails; the points are
		// only at writes that cross one.
		partial bool
	}{
		{"EIO once", syscall.EIO, nil, false},
		{"ENOSPC from then on", syscall.ENOSPC, func(op simstore.Op) bool { return op.Kind == simstore.OpWrite }, false},
		// A full filesystem refuses writes into the file's holes: the
		// heap, which the file's growth and punched pages leave
		// sparse, while the headers, written at Create, take them.
		{"ENOSPC in the heap from then on", syscall.ENOSPC, func(op simstore.Op) bool {
			return op.Kind == simstore.OpWrite && op.Off >= heapOff
		}, false},
		// A disk that fails in the middle of a request.
		{"EIO after part of a write", syscall.EIO, nil, true},
	} {
		t.Run(v.name, func(t *testing.T) {
			start := time.Now()
			points, failing, drift, unreached, retried := 0, 0, 0, 0, 0
			outcomes := map[string]int{}
			for i, want := range trace {
				if v.refuses != nil && !v.refuses(want) || v.partial && ioSweepPartial(want) == 0 || !keep(want) {
					continue
				}
				k := first + i
				points++
				fault := func() func(simstore.Op) error {
					if v.partial {
						return ioSweepPartialFault(want, occ[i], v.errno)
					}
					return ioSweepFault(want, occ[i], v.errno, v.refuses)
				}
				res := runIOSweep(t, o, fault())
				// A checkpoint that the journal's goroutine takes at
				// another moment than in the clean run can change which
				// pages a run releases and punches, and so whether the
				// point's operation comes at all: run it again, up to
				// twice, before counting it as never come.
				for retry := 0; res.failedOp == nil && len(res.problems) == 0 && retry < 2; retry++ {
					retried++
					res = runIOSweep(t, o, fault())
				}
				switch {
				case res.failedOp == nil:
					unreached++
				case res.failedOp.Index != k:
					drift++
				}
				outcomes[res.outcome]++
				if len(res.problems) == 0 {
					continue
				}
				failing++
				got := "no operation (the trace ended first)"
				if res.failedOp != nil {
					got = res.failedOp.String()
				}
				t.Errorf("k=%d: failing %s (clean run: %s): first error %v (from %s); Close: %v\n\t%s",
					k, got, want, res.err, res.errCall, res.closeErr, strings.Join(res.problems, "\n\t"))
				if failing == ioSweepMaxFailing {
					t.Fatalf("stopping after %d failing points", failing)
				}
			}
			t.Logf("%d points of %d operations in %v; at %d the operation came at another index than in the clean run, %d never came (%d runs again for that)",
				points, n, time.Since(start).Round(time.Millisecond), drift, unreached, retried)
			for _, o := range slices.Sorted(maps.Keys(outcomes)) {
				t.Logf("  %4d points: %s", outcomes[o], o)
			}
			// The journal's goroutine takes the checkpoints that pending
			// pages and slots ask for when the scheduler lets it, so a
			// loaded machine (-race beside another test binary) leaves
			// a few points' operations out of a run however often it is
			// retried: up to one in ten; more, and the sweep would not
			// show what it claims.
			if unreached > points/10 {
				t.Errorf("at %d of %d points the operation never came: the workload is not deterministic enough to sweep", unreached, points)
			}
		})
	}
}

var ioErrorSeed = flag.Uint64("ioerror.seed", 0, "seed for TestIOErrorAtEveryOperation's sample of write points under -short, -race or -tags invariants (0: time)")

const (
	ioSweepRounds = 32
	ioSweepSeed   = 0x5eed10e1 // the workload's choices: the same in every run
	// ioSweepSampleOneIn: a sampled sweep fails one write in this many
	// (and every other operation).
	ioSweepSampleOneIn = 8
	ioSweepTimeout     = 60 * time.Second // a hang, not a speed goal
	ioSweepMaxFailing  = 20
	ioSweepCleanRuns   = 9 // at most, until two make the same trace

	ioSweepSlotBytes = 256
	// The root area holds a counter, the index of the last transaction
	// that wrote it, at 0, and from ioSweepRootSlot0 one stamp of
	// ioSweepStampBytes per transaction, ioSweepRootSlots in turn: two
	// runs of bytes apart, which a transaction must change together.
	ioSweepRootSlot0  = 64
	ioSweepRootSlots  = 32
	ioSweepStampBytes = 32
	ioSweepRootBytes  = ioSweepRootSlot0 + ioSweepRootSlots*ioSweepStampBytes
	// A transaction that allocates journals ioSweepJournaledBytes into its
	// first page, at ioSweepJournaledOff (in place, only the first
	// ioSweepStampBytes are written).
	ioSweepJournaledOff   = 1024
	ioSweepJournaledBytes = 3072
)

// ioSweepOptions is crashOptions with a heap that grows in steps of two
// max pages, free max pages punched, and a log region.
func ioSweepOptions(t testing.TB) Options {
	o := crashOptions(t)
	o.GrowthStep = 2 * o.MaxPageSize
	o.PunchHoles = true
	o.LogRegions = []LogRegion{{"log", 64 << 10}}
	return o
}

// ioSweepFault returns a store fault that fails the occ-th operation
// like op (counting from 0; the same kind, offset and length) with errno,
// and after it every operation refuses accepts (nil: none).
func ioSweepFault(op simstore.Op, occ int, errno syscall.Errno, refuses func(simstore.Op) bool) func(simstore.Op) error {
	seen, fired := 0, false
	return func(o simstore.Op) error {
		switch {
		case fired:
			if refuses != nil && refuses(o) {
				return errno
			}
		case o.Kind == op.Kind && o.Off == op.Off && o.Len == op.Len:
			if seen == occ {
				fired = true
				return errno
			}
			seen++
		}
		return nil
	}
}

// ioSweepPartial returns how many bytes of op, a write, reach the store
// when it fails in the middle: up to the middle one of the sector
// boundaries inside it; 0 if it crosses none, or is no write.
func ioSweepPartial(op simstore.Op) int64 {
	const sector = 512
	first, last := (op.Off/sector+1)*sector, (op.Off+op.Len-1)/sector*sector
	if op.Kind != simstore.OpWrite || first > last {
		return 0
	}
	return first + (last-first)/sector/2*sector - op.Off
}

// ioSweepPartialFault returns a store fault that fails the occ-th write
// like op after its first ioSweepPartial(op) bytes reached the store.
func ioSweepPartialFault(op simstore.Op, occ int, errno syscall.Errno) func(simstore.Op) error {
	fail := ioSweepFault(op, occ, errno, nil)
	return func(o simstore.Op) error {
		if err := fail(o); err != nil {
			return &simstore.PartialWrite{N: ioSweepPartial(o), Err: err}
		}
		return nil
	}
}

// ioFate is how a transaction, or a log entry, ended.
type ioFate uint8

const (
	ioRolledBack ioFate = iota // Commit never called: wholly absent
	ioCommitted                // Commit returned nil: wholly present
	ioFailed                   // Commit returned an error: wholly present or wholly absent
)

// ioSweepTxn is what one transaction of the workload did.
type ioSweepTxn struct {
	name         string
	allocs       []Addr
	frees        []Addr
	slots        []Addr // allocated, each with ioSweepStamp(slot, 0) written by Txn.Write
	journaled    []Addr // pages of allocs given ioSweepJournaled by Txn.Write
	slotFrees    []Addr
	rootCounter  uint64 // written at the root area's offset 0
	rootSlot     int64  // relative offset of its stamp in the root area
	rootStampGen uint64
	fate         ioFate
}

// ioSweepPage is what the workload wrote in place at the start of a page
// it owns: the generations of ioSweepStamp whose WriteAt returned nil, in
// order. The page holds one of gens[durable:] (-1: no promise).
type ioSweepPage struct {
	gens    []uint64
	durable int
}

// ioSweepEntry is a log entry: its payload is logContent(id, size).
type ioSweepEntry struct {
	id   uint64
	r    Reservation
	fate ioFate // ioRolledBack: Commit never called
	live bool   // in the owner's set: GC keeps it
}

// ioSweepStamp is the stamp of generation gen of whatever lies at a.
func ioSweepStamp(a Addr, gen uint64) []byte {
	p := make([]byte, ioSweepStampBytes)
	copy(p, "iosweep!")
	binary.LittleEndian.PutUint64(p[8:], uint64(a))
	binary.LittleEndian.PutUint64(p[16:], gen)
	binary.LittleEndian.PutUint64(p[24:], uint64(a)*0x9e3779b97f4a7c15^gen)
	return p
}

// ioSweepJournaled is what transaction m journals at
// ioSweepJournaledOff in page a, which it allocated.
func ioSweepJournaled(a Addr, m *ioSweepTxn) []byte {
	p := make([]byte, ioSweepJournaledBytes)
	for i := 0; i < len(p); i += ioSweepStampBytes {
		copy(p[i:], ioSweepStamp(a, uint64(i)<<32|uint64(len(m.name))))
	}
	copy(p, m.name)
	return p
}

// ioSweep is one run of the workload, with its model of what committed.
type ioSweep struct {
	d     *Device
	rng   *rand.Rand
	sp    *Subpages
	l     *Log
	owner *setLive

	txns      []*ioSweepTxn
	owned     []Addr // pages of committed allocations not freed by a committed transaction, oldest first
	pages     map[Addr]*ioSweepPage
	dirty     []Addr // pages written in place since the last Commit, Sync or Close that returned nil
	slots     []Addr // committed slots, oldest first
	entries   []*ioSweepEntry
	nextGen   uint64
	pendingRs []Reservation // appended, never committed

	callLog
	closeErr error
	outcome  string // how the run ended, for the sweep's summary
}

// callLog keeps a run's first error, the call that returned it, and what
// the run found wrong.
type callLog struct {
	err      error // the first error a call returned
	errCall  string
	problems []string
}

func (c *callLog) problem(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// ok reports whether err, what the call named what returned, is nil. The
// first error must be ErrFailed; so must every error after it, and a
// call that finds the device failed (failedBefore) must not succeed.
func (c *callLog) ok(what string, failedBefore bool, err error) bool {
	switch {
	case err == nil && (failedBefore || c.err != nil):
		c.problem("%s returned nil on a failed device", what)
		return true
	case err == nil:
		return true
	case !errors.Is(err, ErrFailed):
		c.problem("%s: %v, want ErrFailed", what, err)
	}
	if c.err == nil {
		c.err, c.errCall = err, what
	}
	return false
}

// traceOccurrences returns, for each operation of trace, how many before
// it have its kind, offset and length: with the operation, a point that a
// shift of indices between runs does not move.
func traceOccurrences(trace []simstore.Op) []int {
	occ := make([]int, len(trace))
	seen := map[simstore.Op]int{}
	for i, op := range trace {
		op.Index = 0
		occ[i] = seen[op]
		seen[op]++
	}
	return occ
}

// ioSweepResult is what runIOSweep reports.
type ioSweepResult struct {
	*ioSweep
	sweepTrace
	first    int      // the trace's length after Create
	coverage string   // the clean run's operations by kind and region
	missing  []string // kinds of operation the clean run did not make
}

// sweepTrace is what a sweep run's store saw: with no fault, every
// operation, in trace; with one, the first operation it failed.
type sweepTrace struct {
	trace    []simstore.Op
	failedOp *simstore.Op // nil if the fault never fired
}

// watch makes fault (nil: none) store's fault, and records what st keeps.
func (st *sweepTrace) watch(store *simstore.Store, fault func(simstore.Op) error) {
	store.SetFault(func(op simstore.Op) error {
		var err error
		if fault != nil {
			err = fault(op)
		}
		switch {
		case err != nil && st.failedOp == nil:
			st.failedOp = &op
		case err == nil && fault == nil:
			st.trace = append(st.trace, op)
		}
		return err
	})
}

// sameTrace reports whether two runs made the same operations, wherever
// in their traces.
func sameTrace(a, b []simstore.Op) bool {
	return slices.EqualFunc(a, b, func(x, y simstore.Op) bool { x.Index, y.Index = 0, 0; return x == y })
}

// runIOSweep creates a device on a new store, sets fault (nil: none; the
// trace of the run is recorded) and runs the workload to Close, then
// opens what the store holds and checks it against the model. It fails
// the test if all that takes longer than ioSweepTimeout.
func runIOSweep(t *testing.T, o Options, fault func(simstore.Op) error) ioSweepResult {
	t.Helper()
	res := ioSweepResult{ioSweep: &ioSweep{pages: map[Addr]*ioSweepPage{}}}
	guardedOnNewStore(t, ioSweepTimeout, "a run with the fault", res.problem, o, sweepStore, func(store *simstore.Store, d *Device) {
		res.d = d
		res.first = store.Ops()
		res.watch(store, fault)
		res.run()
		store.SetFault(nil)
		if fault == nil {
			res.coverage, res.missing = ioSweepCoverage(res.trace, d.geometry)
		}
		// Reopened twice: from the file as the run left it, every
		// write kept, as when the process goes on; and from what a
		// power loss would leave of it, every write not synced lost.
		img, err := store.Image(store.Ops(), nil)
		if err != nil {
			res.problem("Image: %v", err)
			return
		}
		found := [2]string{res.reopen("as written", ioSweepStore{store}), res.reopen("after a crash", img)}
		switch u := res.uncertain(); {
		case u != nil && found[0] == found[1]:
			res.outcome = "a Commit failed, and its transaction is " + found[0] + " after reopening"
		case u != nil:
			res.outcome = fmt.Sprintf("a Commit failed, and its transaction is %s as written, %s after a crash", found[0], found[1])
		case res.err != nil:
			res.outcome = "a call other than Commit failed first"
		case res.closeErr != nil:
			res.outcome = "Close failed"
		default:
			res.outcome = "no call failed"
		}
	})
	return res
}

// guardedRun runs body on a goroutine of its own and waits for it. A
// panic in body goes to problem, with its stack; a body still running
// after timeout fails t, naming it what, with every goroutine's stack.
func guardedRun(t *testing.T, timeout time.Duration, what string, problem func(string, ...any), body func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				problem("panic: %v\n%s", r, debug.Stack())
			}
		}()
		body()
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatalf("%s still runs after %v:\n%s", what, timeout, allStacks())
	}
}

// guardedOnNewStore runs body through guardedRun on a device created with
// o on a new simulated store of o.MaxSize bytes, which wrap hands to the
// device (with a Close that leaves it open, so that body can reopen what
// it holds); the store is closed after body. A failed Create goes to
// problem, and body does not run.
func guardedOnNewStore(t *testing.T, timeout time.Duration, what string, problem func(string, ...any), o Options, wrap func(*simstore.Store) storage.Storage, body func(store *simstore.Store, d *Device)) {
	t.Helper()
	guardedRun(t, timeout, what, problem, func() {
		store := simstore.New(o.MaxSize)
		defer store.Close()
		d, err := createOn(wrap(store), o)
		if err != nil {
			problem("Create: %v", err)
			return
		}
		body(store, d)
	})
}

// sweepStore wraps a store for guardedOnNewStore as ioSweepStore.
func sweepStore(s *simstore.Store) storage.Storage { return ioSweepStore{s} }

// failed reports whether the device has failed.
func (w *ioSweep) failed() bool { return w.d.failure.Load() != nil }

// run runs the workload, from the device's creation to Close. It stops
// at the first error, then checks that the device refuses writes and
// goes on reading before it closes it.
func (w *ioSweep) run() {
	w.rng = rand.New(rand.NewPCG(ioSweepSeed, 0))
	if w.setup() {
		for r := range ioSweepRounds {
			if !w.round(r) {
				break
			}
		}
		if w.err == nil {
			// Free the newest pages, so that Close cuts the file.
			n := min(len(w.owned), 6)
			w.txn("final free", func(tx *Txn, m *ioSweepTxn) error {
				return w.free(tx, m, slices.Clone(w.owned[len(w.owned)-n:]))
			})
		}
	}
	if w.err != nil || w.failed() {
		w.afterFailure()
	}
	failedBefore := w.failed() || w.err != nil
	err := w.d.Close()
	w.closeErr = err
	switch {
	case err == nil && failedBefore:
		w.problem("Close returned nil on a failed device")
	case err == nil:
		w.durable()
	case !errors.Is(err, ErrFailed):
		w.problem("Close: %v, want nil or ErrFailed", err)
	}
}

func (w *ioSweep) setup() bool {
	f := w.failed()
	sp, err := w.d.Subpages(ioSweepSlotBytes)
	if !w.ok("Subpages", f, err) {
		return false
	}
	w.sp = sp
	l, err := w.d.Log("log")
	if err != nil {
		w.problem("Log: %v", err)
		return false
	}
	w.l = l
	w.owner = &setLive{live: map[uint64]int64{}}
	if err := l.SetOwner(w.owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		w.problem("SetOwner: %v", err)
		return false
	}
	return true
}

// round is one round of the workload; it reports whether all went well.
func (w *ioSweep) round(r int) bool {
	var allocated *ioSweepTxn
	if !w.txn(fmt.Sprintf("round %d: alloc", r), func(tx *Txn, m *ioSweepTxn) error {
		allocated = m
		for range 1 + w.rng.IntN(3) {
			a, err := tx.Alloc(o4K << w.rng.IntN(5)) // 4 KiB to 64 KiB
			if err != nil {
				return err
			}
			m.allocs = append(m.allocs, a)
		}
		// Journaled bytes in the first page, apart from those written
		// in place.
		a := m.allocs[0]
		if err := tx.Write(a.Offset()+ioSweepJournaledOff, ioSweepJournaled(a, m)); err != nil {
			return err
		}
		m.journaled = append(m.journaled, a)
		if r%2 == 0 {
			a, err := w.sp.Alloc(tx)
			if err != nil {
				return err
			}
			m.slots = append(m.slots, a)
			if err := tx.Write(a.Offset(), ioSweepStamp(a, 0)); err != nil {
				return err
			}
		}
		return nil
	}) {
		return false
	}
	// In place: the new pages, and an older one again.
	stamp := slices.Clone(allocated.allocs)
	if len(w.owned) > len(stamp) {
		stamp = append(stamp, w.owned[w.rng.IntN(len(w.owned)-len(stamp))])
	}
	for _, a := range stamp {
		if !w.writeInPlace(a) {
			return false
		}
	}
	if r%3 == 2 {
		if !w.ok("Sync", w.failed(), w.d.Sync()) {
			return false
		}
		w.durable()
		w.settle()
	}
	if r%2 == 1 {
		// The two oldest pages, and the oldest max page if another.
		victims := slices.Clone(w.owned[:min(2, len(w.owned))])
		for _, a := range w.owned[len(victims):] {
			if a.Size() == 64<<10 {
				victims = append(victims, a)
				break
			}
		}
		if !w.txn(fmt.Sprintf("round %d: free", r), func(tx *Txn, m *ioSweepTxn) error {
			if len(w.slots) > 2 {
				if err := w.sp.Free(tx, w.slots[0]); err != nil {
					return err
				}
				m.slotFrees = append(m.slotFrees, w.slots[0])
			}
			return w.free(tx, m, victims)
		}) {
			return false
		}
	}
	if !w.appendEntries(2) {
		return false
	}
	if r%4 == 3 && !w.collect() {
		return false
	}
	return true
}

const o4K = 4 << 10

func (w *ioSweep) free(tx *Txn, m *ioSweepTxn, pages []Addr) error {
	for _, a := range pages {
		if err := tx.Free(a); err != nil {
			return err
		}
		m.frees = append(m.frees, a)
	}
	return nil
}

// txn runs fn in a transaction that also writes the root area, and
// records it in the model; it reports whether it committed.
func (w *ioSweep) txn(name string, fn func(*Txn, *ioSweepTxn) error) bool {
	m := &ioSweepTxn{name: name}
	w.txns = append(w.txns, m)
	tx, err := w.d.Begin()
	if !w.ok(name+": Begin", w.failed(), err) {
		return false
	}
	err = fn(tx, m)
	if err == nil {
		i := len(w.txns)
		m.rootCounter, m.rootSlot, m.rootStampGen = uint64(i), ioSweepRootSlot0+int64(i%ioSweepRootSlots)*ioSweepStampBytes, uint64(i)
		off, _ := w.d.Root()
		err = tx.Write(off, binary.LittleEndian.AppendUint64(nil, m.rootCounter))
		if err == nil {
			err = tx.Write(off+m.rootSlot, ioSweepStamp(0, m.rootStampGen))
		}
	}
	if err != nil {
		if rerr := tx.Rollback(); rerr != nil {
			w.problem("%s: Rollback after %v: %v", name, err, rerr)
		}
		return w.ok(name, false, err)
	}
	failedBefore := w.failed()
	if !w.ok(name+": Commit", failedBefore, tx.Commit()) {
		m.fate = ioFailed
		return false
	}
	m.fate = ioCommitted
	w.durable()
	w.settle()
	for _, a := range m.frees {
		w.owned = slices.DeleteFunc(w.owned, func(b Addr) bool { return b == a })
		delete(w.pages, a)
	}
	for _, a := range m.allocs {
		w.owned = append(w.owned, a)
		w.pages[a] = &ioSweepPage{durable: -1}
	}
	for _, a := range m.slotFrees {
		w.slots = slices.DeleteFunc(w.slots, func(b Addr) bool { return b == a })
	}
	w.slots = append(w.slots, m.slots...)
	return true
}

// writeInPlace writes the next stamp at the start of page a.
func (w *ioSweep) writeInPlace(a Addr) bool {
	w.nextGen++
	gen := w.nextGen
	_, err := w.d.WriteAt(ioSweepStamp(a, gen), a.Offset())
	if !w.ok(fmt.Sprintf("WriteAt(%v)", a), w.failed(), err) {
		return false
	}
	p := w.pages[a]
	p.gens = append(p.gens, gen)
	w.dirty = append(w.dirty, a)
	return true
}

// settle waits until the journal's goroutine has nothing under way or
// asked of it: the home writes it makes after waking a Commit, and the
// checkpoints that pending pages and slots ask for, which it takes when
// the scheduler lets it. Otherwise the workload's next operations
// interleave with those in an order that varies from run to run, and so
// do the pages a checkpoint releases before the next Alloc: a point's
// operation could come elsewhere or not at all. The crash and torture
// tests cover those interleavings; the sweep needs one order.
func (w *ioSweep) settle() {
	j := w.d.journal
	for !w.failed() {
		j.mu.Lock()
		busy := j.wantCheckpoint || j.open != nil
		j.mu.Unlock()
		if !busy {
			break
		}
		runtime.Gosched()
	}
	// The goroutine holds writing from taking a group or a checkpoint
	// until it is done with it.
	j.writing.Lock()
	j.writing.Unlock()
}

// durable records that every byte written in place so far is durable.
func (w *ioSweep) durable() {
	for _, a := range w.dirty {
		if p := w.pages[a]; p != nil {
			p.durable = len(p.gens) - 1
		}
	}
	w.dirty = w.dirty[:0]
}

// appendEntries appends and commits n entries, the first written in
// place, the next with Log.Write, and so on.
func (w *ioSweep) appendEntries(n int) bool {
	for i := range n {
		id := uint64(len(w.entries))
		size := 300 + w.rng.IntN(2700)
		r, err := w.l.Append(size)
		if !w.ok(fmt.Sprintf("Append of entry %d", id), w.failed(), err) {
			return false
		}
		e := &ioSweepEntry{id: id, r: r}
		w.entries = append(w.entries, e)
		p := logContent(id, size)
		if i%2 == 0 {
			_, err = w.d.WriteAt(p, r.Offset())
		} else {
			err = w.l.Write(r, p)
		}
		if !w.ok(fmt.Sprintf("writing entry %d", id), w.failed(), err) {
			w.pendingRs = append(w.pendingRs, r)
			return false
		}
		if !w.ok(fmt.Sprintf("Commit of entry %d", id), w.failed(), w.l.Commit(r)) {
			e.fate = ioFailed
			return false
		}
		e.fate, e.live = ioCommitted, true
		w.owner.add(id, r.Offset())
		w.settle()
	}
	return true
}

// collect drops all but the newest six committed entries from the
// owner's set and runs GC.
func (w *ioSweep) collect() bool {
	live := 0
	for _, e := range slices.Backward(w.entries) {
		if e.live {
			if live++; live > 6 {
				e.live = false
				w.owner.remove(e.id)
			}
		}
	}
	if !w.ok("GC", w.failed(), w.l.GC(context.Background())) {
		return false
	}
	w.settle()
	return true
}

// uncertain returns the transaction whose Commit failed, or nil.
func (w *ioSweep) uncertain() *ioSweepTxn {
	var u *ioSweepTxn
	for _, m := range w.txns {
		if m.fate == ioFailed {
			if u != nil {
				w.problem("two transactions failed to commit: %s and %s", u.name, m.name)
			}
			u = m
		}
	}
	return u
}

// expect returns the pages (each with the transaction that allocated
// it), root area and slots that the transactions whose Commit returned
// nil leave, with the one whose Commit failed or without it.
func (w *ioSweep) expect(withFailed bool) (pages map[Extent]*ioSweepTxn, root []byte, slots map[Addr]bool) {
	pages, root, slots = map[Extent]*ioSweepTxn{}, make([]byte, ioSweepRootBytes), map[Addr]bool{}
	for _, m := range w.txns {
		if m.fate != ioCommitted && (m.fate != ioFailed || !withFailed) {
			continue
		}
		for _, a := range m.frees {
			delete(pages, Extent{a.Offset(), a.Size()})
		}
		for _, a := range m.allocs {
			pages[Extent{a.Offset(), a.Size()}] = m
		}
		for _, a := range m.slotFrees {
			delete(slots, a)
		}
		for _, a := range m.slots {
			slots[a] = true
		}
		if m.rootCounter != 0 {
			binary.LittleEndian.PutUint64(root, m.rootCounter)
			copy(root[m.rootSlot:], ioSweepStamp(0, m.rootStampGen))
		}
	}
	return pages, root, slots
}

// afterFailure checks, on the failed device, that every call that would
// write returns ErrFailed and that committed state still reads back.
func (w *ioSweep) afterFailure() {
	d := w.d
	if !w.failed() {
		w.problem("%s failed with %v, but the device has not failed", w.errCall, w.err)
	}
	u := w.uncertain()
	// Reads: the root area, each run of it as one of the alternatives
	// has it.
	_, rootWithout, _ := w.expect(false)
	_, rootWith, _ := w.expect(true)
	off, _ := d.Root()
	root := make([]byte, ioSweepRootBytes)
	if _, err := d.ReadAt(root, off); err != nil {
		w.problem("ReadAt of the root area on the failed device: %v", err)
	}
	for _, run := range ioSweepRootRuns() {
		lo, hi := run[0], run[1]
		if !bytes.Equal(root[lo:hi], rootWithout[lo:hi]) && !bytes.Equal(root[lo:hi], rootWith[lo:hi]) {
			w.problem("root area [%d,%d) on the failed device reads %x, want %x (or %x with the failed transaction)", lo, hi, root[lo:hi], rootWithout[lo:hi], rootWith[lo:hi])
		}
	}
	// The pages written in place, but those the failed transaction
	// freed, show the last bytes written.
	buf := make([]byte, ioSweepStampBytes)
	for _, a := range w.owned {
		if p := w.pages[a]; len(p.gens) > 0 && (u == nil || !slices.Contains(u.frees, a)) {
			if _, err := d.ReadAt(buf, a.Offset()); err != nil {
				w.problem("ReadAt(%v) on the failed device: %v", a, err)
			} else if want := ioSweepStamp(a, p.gens[len(p.gens)-1]); !bytes.Equal(buf, want) {
				w.problem("page %v on the failed device reads %x, want %x", a, buf, want)
			}
		}
	}
	for _, a := range w.slots {
		if u != nil && slices.Contains(u.slotFrees, a) {
			continue
		}
		if _, err := d.ReadAt(buf, a.Offset()); err != nil {
			w.problem("ReadAt of slot %v on the failed device: %v", a, err)
		} else if want := ioSweepStamp(a, 0); !bytes.Equal(buf, want) {
			w.problem("slot %v on the failed device reads %x, want %x", a, buf, want)
		}
	}
	for _, e := range w.entries {
		if e.fate == ioCommitted && e.live {
			if p, err := w.l.Read(e.r.Offset()); err != nil || !isContent(p, e.id) {
				w.problem("Read of committed entry %d on the failed device: %v (%d bytes, content %v)", e.id, err, len(p), err == nil && isContent(p, e.id))
			}
		}
	}
	// Walks of committed state, and Check, which reads only that.
	if w.l != nil {
		for e, err := range w.l.Entries(0) {
			if err != nil {
				w.problem("Entries on the failed device: %v", err)
				break
			}
			if len(e.Data) < 8 || logID(e.Data) >= uint64(len(w.entries)) || !isContent(e.Data, logID(e.Data)) {
				w.problem("Entries on the failed device yields %d bytes at %d, no entry of the workload", len(e.Data), e.Offset)
			}
		}
	}
	if err := d.WalkHeap(func(HeapExtent) bool { return true }); err != nil {
		w.problem("WalkHeap on the failed device: %v", err)
	}
	if err := d.Check(); err != nil {
		w.problem("Check on the failed device: %v", err)
	}
	// Writes: every one ErrFailed.
	want := func(what string, err error) {
		if !errors.Is(err, ErrFailed) {
			w.problem("%s on the failed device: %v, want ErrFailed", what, err)
		}
	}
	tx, err := d.Begin()
	if err == nil {
		tx.Rollback()
	}
	want("Begin", err)
	ran := false
	want("Update", d.Update(func(*Txn) error { ran = true; return nil }))
	if ran {
		w.problem("Update ran its function on the failed device")
	}
	if len(w.owned) > 0 {
		_, err := d.WriteAt([]byte("late"), w.owned[0].Offset()+ioSweepStampBytes)
		want("WriteAt", err)
	}
	want("Sync", d.Sync())
	if w.l != nil {
		r, err := w.l.Append(100)
		want("Log.Append", err)
		if err == nil {
			w.pendingRs = append(w.pendingRs, r)
		}
		for _, r := range w.pendingRs {
			want("Log.Commit of an entry appended before the failure", w.l.Commit(r))
		}
		want("Log.GC", w.l.GC(context.Background()))
	}
	_, err = d.Subpages(2 * ioSweepSlotBytes)
	want("Subpages of a new class", err)
	_, err = d.CreateLog("late", 4096)
	want("CreateLog", err)
}

// reopen opens store, what the run left (label says how), and checks it
// against the model; it closes the device (and so the store). It returns whether the
// transaction whose Commit failed is "found" or "not found" there.
func (w *ioSweep) reopen(label string, store storage.Storage) (found string) {
	before := len(w.problems)
	defer func() {
		for i := before; i < len(w.problems); i++ {
			w.problems[i] = "reopened " + label + ": " + w.problems[i]
		}
	}()
	rd, err := openOn(store, &Options{})
	if err != nil {
		store.Close()
		w.problem("Open: %v", err)
		return ""
	}
	found = w.verify(rd)
	if err := rd.Close(); err != nil {
		w.problem("Close of the reopened device: %v", err)
	}
	return found
}

// ioSweepStore is a store that Close leaves open, so that the run can
// reopen what the device left in it after Device.Close (once it has taken
// the crash image, which the reopening's own writes would not change).
type ioSweepStore struct{ *simstore.Store }

func (ioSweepStore) Close() error { return nil }

// verify checks rd, the device reopened after the run, against the
// model, and returns whether the transaction whose Commit failed is
// "found" or "not found" there.
func (w *ioSweep) verify(rd *Device) (found string) {
	if err := rd.Check(); err != nil {
		w.problem("Check after reopening: %v", err)
	}
	var pages map[Extent]bool
	if err := rd.WalkHeap(func(e HeapExtent) bool {
		if e.Kind == PageAllocated {
			if pages == nil {
				pages = map[Extent]bool{}
			}
			pages[e.Extent] = true
		}
		return true
	}); err != nil {
		w.problem("WalkHeap after reopening: %v", err)
		return ""
	}
	off, _ := rd.Root()
	root := make([]byte, ioSweepRootBytes)
	if _, err := rd.ReadAt(root, off); err != nil {
		w.problem("ReadAt of the root area after reopening: %v", err)
		return ""
	}
	sp, err := rd.Subpages(ioSweepSlotBytes)
	if err != nil {
		w.problem("Subpages after reopening: %v", err)
		return ""
	}
	slotsUsed := sp.Stats().SlotsUsed

	// The state of the committed transactions, with the failed one wholly
	// or not at all.
	u := w.uncertain()
	var diffs []string
	var matched map[Extent]*ioSweepTxn
	var matchedSlots map[Addr]bool
	for _, with := range []bool{false, true} {
		if with && u == nil {
			break
		}
		wantPages, wantRoot, wantSlots := w.expect(with)
		diff := diffPages(pages, wantPages)
		for _, run := range ioSweepRootRuns() {
			if got, want := root[run[0]:run[1]], wantRoot[run[0]:run[1]]; !bytes.Equal(got, want) {
				diff = append(diff, fmt.Sprintf("root area [%d,%d) %x, want %x", run[0], run[1], got, want))
			}
		}
		if slotsUsed != int64(len(wantSlots)) {
			diff = append(diff, fmt.Sprintf("%d slots used, want %d", slotsUsed, len(wantSlots)))
		}
		for a := range wantSlots {
			if !slotAllocated(rd, sp, a) {
				diff = append(diff, fmt.Sprintf("slot %v not allocated", a))
			}
		}
		if len(diff) == 0 {
			matched, matchedSlots = wantPages, wantSlots
			found = "not found"
			if with {
				found = "found"
			}
			break
		}
		what := "the transactions whose Commit returned nil"
		if with {
			what += ", and " + u.name + ", whose Commit failed"
		}
		diffs = append(diffs, fmt.Sprintf("against %s: %s", what, strings.Join(diff, "; ")))
	}
	if matched == nil {
		w.problem("after reopening the device holds neither state the contract allows:\n\t\t%s", strings.Join(diffs, "\n\t\t"))
		return ""
	}

	// In-place bytes and slots' journaled bytes.
	buf := make([]byte, ioSweepStampBytes)
	for a, p := range w.pages {
		if matched[Extent{a.Offset(), a.Size()}] == nil || p.durable < 0 {
			continue
		}
		if _, err := rd.ReadAt(buf, a.Offset()); err != nil {
			w.problem("ReadAt(%v) after reopening: %v", a, err)
			continue
		}
		found := false
		for _, gen := range p.gens[p.durable:] {
			found = found || bytes.Equal(buf, ioSweepStamp(a, gen))
		}
		if !found {
			w.problem("page %v after reopening holds %x, want generation %d (durable) or later of %v", a, buf, p.gens[p.durable], p.gens)
		}
	}
	jbuf := make([]byte, ioSweepJournaledBytes)
	for e, m := range matched {
		for _, a := range m.journaled {
			if a.Offset() != e.Offset || a.Size() != e.Size {
				continue
			}
			if _, err := rd.ReadAt(jbuf, a.Offset()+ioSweepJournaledOff); err != nil {
				w.problem("ReadAt(%v) after reopening: %v", a, err)
			} else if want := ioSweepJournaled(a, m); !bytes.Equal(jbuf, want) {
				w.problem("page %v after reopening holds %q at %d, want what %s journaled there", a, jbuf[:64], ioSweepJournaledOff, m.name)
			}
		}
	}
	for a := range matchedSlots {
		if _, err := rd.ReadAt(buf, a.Offset()); err != nil {
			w.problem("ReadAt of slot %v after reopening: %v", a, err)
		} else if want := ioSweepStamp(a, 0); !bytes.Equal(buf, want) {
			w.problem("slot %v after reopening holds %x, want %x", a, buf, want)
		}
	}

	// The log.
	l, err := rd.Log("log")
	if err != nil {
		w.problem("Log after reopening: %v", err)
		return found
	}
	for _, e := range w.entries {
		p, err := l.Read(e.r.Offset())
		intact := err == nil && isContent(p, e.id) && len(p) == e.r.Size()
		// An entry GC reclaimed may have given its place to a later
		// one, which the ring's wrap put at the same offset.
		later := err == nil && !intact && len(p) >= 8 && logID(p) > e.id && logID(p) < uint64(len(w.entries)) &&
			w.entries[logID(p)].r.Offset() == e.r.Offset() && isContent(p, logID(p))
		switch {
		case err != nil && !errors.Is(err, ErrNotFound):
			w.problem("Read of entry %d after reopening: %v", e.id, err)
		case e.fate == ioCommitted && e.live && !intact:
			w.problem("committed entry %d after reopening: %v (%d bytes, want %d, content %v)", e.id, err, len(p), e.r.Size(), intact)
		case e.fate == ioRolledBack && err == nil && !later:
			w.problem("entry %d, never committed, is found after reopening", e.id)
		case err == nil && !intact && !later:
			w.problem("entry %d after reopening holds %d bytes not its own", e.id, len(p))
		}
	}
	for e, err := range l.Entries(0) {
		if err != nil {
			w.problem("Entries after reopening: %v", err)
			break
		}
		id := uint64(len(w.entries))
		if len(e.Data) >= 8 {
			id = logID(e.Data)
		}
		if id >= uint64(len(w.entries)) || w.entries[id].r.Offset() != e.Offset || !isContent(e.Data, id) {
			w.problem("Entries after reopening yields %d bytes at %d, no entry of the workload", len(e.Data), e.Offset)
		}
	}

	// Writes succeed again.
	if err := rd.Update(func(tx *Txn) error {
		_, err := tx.Alloc(o4K)
		return err
	}); err != nil {
		w.problem("a transaction after reopening: %v", err)
	}
	return found
}

// ioSweepRootRuns returns the runs of the root area that transactions
// write whole, as [lo, hi) pairs: the counter, then each stamp.
func ioSweepRootRuns() [][2]int {
	runs := [][2]int{{0, 8}}
	for i := range ioSweepRootSlots {
		lo := ioSweepRootSlot0 + i*ioSweepStampBytes
		runs = append(runs, [2]int{lo, lo + ioSweepStampBytes})
	}
	return runs
}

// diffPages lists how got differs from want, up to a few pages each way.
func diffPages(got map[Extent]bool, want map[Extent]*ioSweepTxn) []string {
	var extra, missing []string
	for e := range got {
		if want[e] == nil {
			extra = append(extra, fmt.Sprintf("%d+%d", e.Offset, e.Size))
		}
	}
	for e := range want {
		if !got[e] {
			missing = append(missing, fmt.Sprintf("%d+%d", e.Offset, e.Size))
		}
	}
	slices.Sort(extra)
	slices.Sort(missing)
	var diff []string
	if len(extra) > 0 {
		diff = append(diff, fmt.Sprintf("%d pages allocated that should not be: %s", len(extra), strings.Join(extra[:min(len(extra), 8)], " ")))
	}
	if len(missing) > 0 {
		diff = append(diff, fmt.Sprintf("%d pages not allocated that should be: %s", len(missing), strings.Join(missing[:min(len(missing), 8)], " ")))
	}
	return diff
}

// slotAllocated reports whether a is an allocated slot of sp on d: freeing
// it, in a transaction rolled back, succeeds.
func slotAllocated(d *Device, sp *Subpages, a Addr) bool {
	tx, err := d.Begin()
	if err != nil {
		return false
	}
	defer tx.Rollback()
	return sp.Free(tx, a) == nil
}

// ioSweepCoverage counts the operations of a trace by kind and by the
// region they touch, and names the kinds the sweep is meant to cover that
// it lacks.
func ioSweepCoverage(trace []simstore.Op, g superblock) (string, []string) {
	counts := map[string]int{}
	var ringBytes int64
	size := int64(-1)
	for i, op := range trace {
		switch op.Kind {
		case simstore.OpSync:
			counts["sync"]++
		case simstore.OpPunchHole:
			counts["punchhole"]++
		case simstore.OpTruncate:
			if size >= 0 && op.Off < size {
				counts["truncate down"]++
			} else {
				counts["truncate up"]++
			}
			size = op.Off
		case simstore.OpWrite:
			switch {
			case op.Off < g.root.off:
				counts["superblock write"]++
			case g.root.contains(op.Off, op.Len):
				counts["root write"]++
			case op.Off >= g.journal.off && op.Off < g.journal.end():
				counts["journal write"]++
				ringBytes += op.Len
				if op.Off == g.journal.off && i > 0 && trace[i-1].Off+trace[i-1].Len == g.journal.end() {
					counts["journal wrap-around write"]++
				}
			case op.Off >= g.state.off && op.Off < g.state.end():
				counts["state write"]++
			case op.Off >= g.logs.off && op.Off < g.logs.end():
				counts["log region write"]++
			default:
				counts["heap write"]++
			}
		}
	}
	var parts, missing []string
	for _, k := range []string{"journal write", "journal wrap-around write", "superblock write", "sync", "root write", "state write", "heap write", "log region write", "truncate up", "truncate down", "punchhole"} {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
		if counts[k] == 0 {
			missing = append(missing, k)
		}
	}
	if counts["superblock write"] < 2 {
		missing = append(missing, "second checkpoint")
	}
	return fmt.Sprintf("%s; %d journal bytes, %.1f times the ring", strings.Join(parts, ", "), ringBytes, float64(ringBytes)/float64(g.journal.size)), missing
}

// TestIOErrorInsideCreate fails each storage operation Create makes in
// turn, with EIO and with ENOSPC: Create returns the error (errors.Is
// finds it), starts nothing it leaves running, and a Create on a fresh
// store still works. (Create removes the file after any error; what a
// crash inside Create leaves is TestCreateCrashLeavesNoHalfDevice's.)
func TestIOErrorInsideCreate(t *testing.T) {
	o := ioSweepOptions(t)
	store := simstore.New(o.MaxSize)
	d, err := createOn(ioSweepStore{store}, o)
	if err != nil {
		t.Fatal(err)
	}
	n := store.Ops()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	store.Close()
	before := runtime.NumGoroutine()
	for k := range n {
		for _, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC} {
			s := simstore.New(o.MaxSize)
			seen := 0
			var failed *simstore.Op
			s.SetFault(func(op simstore.Op) error {
				if seen++; seen-1 == k {
					failed = &op
					return errno
				}
				return nil
			})
			d, err := createOn(ioSweepStore{s}, o)
			if d != nil {
				d.Close()
			}
			s.Close()
			if failed == nil || !errors.Is(err, errno) {
				t.Errorf("operation %d of %d failing with %v (%v): Create returned %v", k, n, errno, failed, err)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Errorf("%d goroutines after the failed Creates, %d before:\n%s", g, before, allStacks())
	}
	d = deviceOn(t, simstore.New(o.MaxSize), o)
	if err := d.Update(func(tx *Txn) error { _, err := tx.Alloc(o4K); return err }); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d operations, each failed with EIO and ENOSPC", n)
}
