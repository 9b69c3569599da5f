package pagealloc

import (
	"bytes"
	"errors"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

// TestReadAtSeesWholeCommits rewrites a page in one transaction after
// another, each filling it with one byte value, while a reader reads the
// whole page with ReadAt: every read must show one transaction's page,
// never a mix of two (the journal writes each commit home while readers
// copy from the mapping).
func TestReadAtSeesWholeCommits(t *testing.T) {
	d, _ := createTestDevice(t, testOptions())
	a := allocPages(t, d, 1, 4096)[0]
	commits := 20000
	if testing.Short() {
		commits = 2000
	}
	var stop atomic.Bool
	var reads, torn atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p := make([]byte, 4096)
		for !stop.Load() {
			if _, err := d.ReadAt(p, a.Offset()); err != nil {
				t.Error(err)
				return
			}
			reads.Add(1)
			for _, b := range p {
				if b != p[0] {
					if torn.Add(1) == 1 {
						seen := map[byte]int{}
						for _, c := range p {
							seen[c]++
						}
						t.Errorf("ReadAt mixed commits: byte value -> count %v", seen)
					}
					break
				}
			}
		}
	}()
	buf := make([]byte, 4096)
	for i := 1; i <= commits; i++ {
		for j := range buf {
			buf[j] = byte(i)
		}
		if err := d.Update(func(tx *Txn) error { return tx.Write(a.Offset(), buf) }); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d commits, %d reads, %d mixed", commits, reads.Load(), torn.Load())
}

// TestReadAtSeesWriteAtOverFreeListHeader: a transaction T1 pushes two
// pages on a free list, and while its journal write waits, T2 takes both:
// popping the first rewrites a link in the second, whose line T2 starts
// from T1's, free-list header and all. Once T2's Commit returns, the
// owner writes the page's first bytes in place; ReadAt must show them,
// also while T2's home writes, which follow the wake-up, are under way.
// T1's committer writes its group itself; T2's goes to the journal's
// goroutine, as a group that came while another was written does.
func TestReadAtSeesWriteAtOverFreeListHeader(t *testing.T) {
	d, store := simDevice(t, crashOptions(t))
	// Four order-0 pages of one 16 KiB span; freeing the first and
	// third, whose buddies stay allocated, makes two pages that the
	// release pushes on the order-0 list one after the other.
	pages := allocPages(t, d, 4, 4096)
	freePages(t, d, []Addr{pages[0], pages[2]})
	coverCommitted(t, d)

	var syncs atomic.Int32
	t1Syncing, t1Go := make(chan struct{}), make(chan struct{})
	t2Syncing, t2Go := make(chan struct{}), make(chan struct{})
	store.SetFault(func(op simstore.Op) error {
		if op.Kind == simstore.OpSync {
			switch syncs.Add(1) {
			case 1: // T1's record
				close(t1Syncing)
				<-t1Go
			case 2: // T2's record
				close(t2Syncing)
				<-t2Go
			}
		}
		return nil
	})
	defer func() { // a failed test must not leave the journal blocked
		for _, c := range []chan struct{}{t1Go, t2Go} {
			select {
			case <-c:
			default:
				close(c)
			}
		}
	}()
	errs := make(chan error, 2)
	go func() { errs <- d.Update(func(tx *Txn) error { d.alloc.join(tx); return nil }) }()
	<-t1Syncing // T1 is committed, not home
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	var got []Addr
	for range 2 {
		a, err := tx.Alloc(4096)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	if got[0] != pages[2] || got[1] != pages[0] {
		t.Fatalf("T2 took %v, want the pages T1 pushed last, %v and %v", got, pages[2], pages[0])
	}
	go func() { errs <- tx.Commit() }()
	// T2 waits to be woken while T1's group is written, so that the
	// journal's goroutine writes T2's, waking T2 before its home writes
	// (a committer writing its own group returns after them).
	for !goroutineWaitsIn("(*Txn).Commit") {
		time.Sleep(time.Millisecond)
	}
	close(t1Go)
	<-t2Syncing
	// Hold T2's home writes back once it is durable.
	d.homeMu.RLock()
	close(t2Go)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	want := bytes.Repeat([]byte{0xEE}, pageHeaderBytes)
	p := make([]byte, len(want))
	for _, a := range got {
		if _, err := d.WriteAt(want, a.Offset()); err != nil {
			t.Fatal(err)
		}
		if _, err := d.ReadAt(p, a.Offset()); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, want) {
			t.Errorf("page %v: ReadAt after WriteAt shows % x, want % x", a, p, want)
		}
	}
	d.homeMu.RUnlock()
}

// TestTxnReadAtBounds reads through a transaction at a negative offset
// (ErrOutOfRange, nothing read), at and past the end of the file (0 bytes
// and io.EOF), and from a page the transaction wrote to past the file's
// end: the bytes up to the end, the transaction's own among them, and
// io.EOF, as Device.ReadAt gives the committed ones.
func TestTxnReadAtBounds(t *testing.T) {
	d, _ := createTestDevice(t, smallFileOptions())
	a := allocPages(t, d, 1, 4096)[0]
	in, err := d.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	size := in.FileSize
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := tx.Write(a.Offset(), []byte("uncommitted")); err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{0xee}, 16)
	if n, err := tx.ReadAt(p, -1); n != 0 || !errors.Is(err, ErrOutOfRange) || !bytes.Equal(p, bytes.Repeat([]byte{0xee}, 16)) {
		t.Errorf("ReadAt at -1: %d bytes, %v; want 0 bytes, none changed, and ErrOutOfRange", n, err)
	}
	for _, off := range []int64{size, size + 1, size + 4096, math.MaxInt64} {
		if n, err := tx.ReadAt(p, off); n != 0 || err != io.EOF {
			t.Errorf("ReadAt at %d, the file holding %d bytes: %d bytes, %v; want 0 and io.EOF", off, size, n, err)
		}
	}
	p = make([]byte, size-a.Offset()+100)
	n, err := tx.ReadAt(p, a.Offset())
	if n != int(size-a.Offset()) || err != io.EOF {
		t.Fatalf("ReadAt of %d bytes at %d, the file holding %d: %d bytes, %v; want %d and io.EOF", len(p), a.Offset(), size, n, err, size-a.Offset())
	}
	committed := make([]byte, len(p))
	if m, err := d.ReadAt(committed, a.Offset()); m != n || err != io.EOF {
		t.Fatalf("Device.ReadAt of the same bytes: %d, %v", m, err)
	}
	copy(committed, "uncommitted")
	if !bytes.Equal(p[:n], committed[:n]) {
		t.Error("the transaction's read differs from the committed bytes with its own write on top")
	}
}

// TestInPlaceWriteVisibleBesideCopiedUserBytes: T1 journals bytes of a
// page with Txn.Write and is held at its sync; T2, begun behind it,
// journals other bytes of the same line, so that its version of the line
// starts from T1's, on its way home. Once T1's bytes are home, the
// owner writes T1's bytes in place (WriteAt's doc: replay may put the
// journaled value back after a crash, nothing more): T2's ReadAt, and
// ReadAt while T2's commit is on its way home, must show the bytes
// written in place, not T1's that T2's version copied (T2 never wrote
// them, and they never go home from it).
func TestInPlaceWriteVisibleBesideCopiedUserBytes(t *testing.T) {
	store := &buddyCrashGatedStore{Store: simstore.New(crashMaxBytes)}
	d := deviceOn(t, store, crashOptions(t))
	a := allocPages(t, d, 1, 4096)[0]
	off := a.Offset()
	entered, gate := store.arm("sync", 0)
	t1 := make(chan error, 1)
	go func() { t1 <- d.Update(func(tx *Txn) error { return tx.Write(off, []byte("journaled by T1")) }) }()
	<-entered
	tx2, err := d.Begin() // once T1's Commit has handed the writer on
	if err != nil {
		t.Fatal(err)
	}
	defer rollbackOnExit(tx2)
	if err := tx2.Write(off+32, []byte("journaled by T2")); err != nil {
		t.Fatal(err)
	}
	close(gate)
	// T1's Commit returns once its bytes are home, which it leaves the
	// overlay for. (In the invariants build it returns later: its Commit
	// checks the device once durable, waiting for the writer slot tx2
	// holds.)
	for deadline := time.Now().Add(30 * time.Second); len(d.pending.list()) != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("T1 not home after 30 s")
		}
	}
	want := []byte("written in place")
	if got := writeReadBack(t, d, want, off); !bytes.Equal(got, want) {
		t.Fatalf("ReadAt right after WriteAt: %q, want %q", got, want)
	}
	got := make([]byte, len(want))
	if _, err := tx2.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Txn.ReadAt of T2 after the owner's WriteAt: %q, want %q", got, want)
	}
	entered, gate = store.arm("sync", 0)
	t2 := make(chan error, 1)
	go func() { t2 <- tx2.Commit() }()
	<-entered
	if _, err := d.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("ReadAt while T2 is on its way home: %q, want %q", got, want)
	}
	close(gate)
	for _, done := range []chan error{t1, t2} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("ReadAt once T2 is home: %q, want %q", got, want)
	}
}
