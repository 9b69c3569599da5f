package pagealloc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// corruptHeap is a closed device's file with free and pending pages to
// corrupt, and the pages still allocated in it, each filled with a pattern
// of its own.
type corruptHeap struct {
	path  string
	opts  *Options
	g     heapGeometry
	st    allocState // as the file holds it after Close
	state int64      // the allocator state's offset
	live  []Addr
	pages []Addr // every page allocated at first, in address order
}

// pattern is what the test writes into a live page: its offset, repeated.
func pattern(a Addr) []byte {
	p := make([]byte, a.Size())
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], uint64(a.Offset()))
	}
	return p
}

// newCorruptHeap makes 256 pages of 4 KiB. The even pages of the first
// half are freed and released onto free list 0 (their odd buddies stay
// live, so nothing merges); the even pages of the third quarter are freed
// just before Close and stay in the pending queue.
func newCorruptHeap(t *testing.T) *corruptHeap {
	t.Helper()
	opts := smallHeapOptions()
	d, path := createTestDevice(t, opts)
	pages := allocPages(t, d, 256, 4<<10)
	var free, pending []Addr
	h := &corruptHeap{path: path, opts: opts, g: d.alloc.g, pages: pages}
	for i, a := range pages {
		switch {
		case i%2 == 1 || i >= 192:
			h.live = append(h.live, a)
			if _, err := d.WriteAt(pattern(a), a.Offset()); err != nil {
				t.Fatal(err)
			}
		case i < 128:
			free = append(free, a)
		default:
			pending = append(pending, a)
		}
	}
	freePages(t, d, free)
	coverCommitted(t, d)
	releaseCovered(t, d)
	freePages(t, d, pending)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b := readFile(t, path)
	orders := h.g.maxOrder + 1
	stateOff := d.geometry.state.off
	h.state = stateOff
	h.st = decodeState(b[stateOff:stateOff+stateOrdersOff+int64(orders)*stateOrderBytes], orders)
	if h.st.heads[0] == 0 || h.st.pendHead == 0 || h.st.pendHead == h.st.pendTail {
		t.Fatalf("set-up: want free list 0 and a pending queue of several pages, found head %d, pending %d..%d", h.st.heads[0], h.st.pendHead, h.st.pendTail)
	}
	return h
}

// setState returns an edit that sets the state bits of the order-k page at
// off to s.
func (h *corruptHeap) setState(k int, off int64, s pageState) func([]byte) {
	w, shift := h.g.bitPos(k, off)
	return func(b []byte) {
		v := binary.LittleEndian.Uint64(b[w:])
		binary.LittleEndian.PutUint64(b[w:], v&^(3<<shift)|uint64(s)<<shift)
	}
}

func putU64(at int64, v uint64) func([]byte) {
	return func(b []byte) { binary.LittleEndian.PutUint64(b[at:], v) }
}

// TestBuddyCorruptLinks corrupts a free list, a page's state bits or the
// pending queue of a closed device, then runs allocations, frees and
// releases on it. The allocator follows these links at use time, past
// Open's checks: each corruption must come back as ErrCorrupt from Check
// (and from Alloc or Free where they meet it), and none may make the
// allocator hand out a page that is still allocated or overlaps another,
// write into a live page, panic, or commit a state that Open then refuses.
func TestBuddyCorruptLinks(t *testing.T) {
	if invariantsEnabled {
		// That build checks the whole device after every commit and
		// panics at the first on a corrupt one, by design
		// (TestInvariantsStopCorruptCommit): there is no workload to run.
		t.Skip("the invariants build panics at the first commit on a corrupt device")
	}
	seed := testSeed(t, "buddy.seed", *buddySeed)
	cases := []struct {
		name string
		edit func(h *corruptHeap) func([]byte)
		// The workload must meet the corruption: an Alloc or a Free
		// returns ErrCorrupt.
		wantOpErr bool
	}{
		{"free next to a live page", func(h *corruptHeap) func([]byte) {
			return putU64(h.st.heads[0]+8, uint64(h.live[0].Offset()))
		}, true},
		{"free next misaligned", func(h *corruptHeap) func([]byte) {
			return putU64(h.st.heads[0]+8, uint64(h.live[0].Offset()+3))
		}, true},
		{"free next past the file", func(h *corruptHeap) func([]byte) { return putU64(h.st.heads[0]+8, 1<<62) }, true},
		{"free next negative", func(h *corruptHeap) func([]byte) { return putU64(h.st.heads[0]+8, 1<<63) }, true},
		{"free next into block metadata", func(h *corruptHeap) func([]byte) {
			return putU64(h.st.heads[0]+8, uint64(h.g.heapOff))
		}, true},
		{"free next to itself", func(h *corruptHeap) func([]byte) { return putU64(h.st.heads[0]+8, uint64(h.st.heads[0])) }, true},
		// The head itself: a Free pushes a page in front of it and
		// would write a back link into it.
		{"free head's magic", func(h *corruptHeap) func([]byte) { return putU64(h.st.heads[0]+headerMagicOff, 0) }, true},
		{"free head's state allocated", func(h *corruptHeap) func([]byte) {
			return h.setState(0, h.st.heads[0], stateAllocated)
		}, true},
		{"free head at a live page", func(h *corruptHeap) func([]byte) {
			return putU64(h.state+stateOrdersOff, uint64(h.live[0].Offset()))
		}, true},
		{"free head with a page before it", func(h *corruptHeap) func([]byte) {
			return putU64(h.st.heads[0], uint64(h.live[0].Offset()))
		}, true},
		{"free head at the list's second page", func(h *corruptHeap) func([]byte) {
			second := int64(binary.LittleEndian.Uint64(readFile(t, h.path)[h.st.heads[0]+8:]))
			return putU64(h.state+stateOrdersOff, uint64(second))
		}, true},
		{"free page linked to itself both ways", func(h *corruptHeap) func([]byte) {
			return func(b []byte) {
				putU64(h.st.heads[0], uint64(h.st.heads[0]))(b)
				putU64(h.st.heads[0]+8, uint64(h.st.heads[0]))(b)
			}
		}, true},
		{"free page's prev", func(h *corruptHeap) func([]byte) {
			// The second page of the list: a merge or an Alloc detaches
			// it, and would write its prev's next link.
			second := int64(binary.LittleEndian.Uint64(readFile(t, h.path)[h.st.heads[0]+8:]))
			return putU64(second, uint64(h.live[1].Offset()))
		}, true},
		{"live page's state free", func(h *corruptHeap) func([]byte) {
			// The buddy of a pending page: its release would merge the
			// two, detaching the live page from a list it is not on.
			return h.setState(0, h.pages[129].Offset(), stateFree)
		}, false},
		{"pending next to a live page", func(h *corruptHeap) func([]byte) {
			return putU64(h.st.pendHead+8, uint64(h.live[0].Offset()))
		}, false},
		{"pending next past the file", func(h *corruptHeap) func([]byte) { return putU64(h.st.pendHead+8, 1<<62) }, false},
		{"pending head's order", func(h *corruptHeap) func([]byte) {
			return func(b []byte) { b[h.st.pendHead+headerOrderOff] = 200 }
		}, false},
		{"pending tail at the head", func(h *corruptHeap) func([]byte) {
			return putU64(h.state+statePendingTailOff, uint64(h.st.pendHead))
		}, true},
		{"pending tail's magic", func(h *corruptHeap) func([]byte) { return putU64(h.st.pendTail+headerMagicOff, 0) }, true},
		{"pending tail's next", func(h *corruptHeap) func([]byte) {
			return putU64(h.st.pendTail+8, uint64(h.live[0].Offset()))
		}, true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newCorruptHeap(t)
			edit := c.edit(h)
			path := corruptCopy(t, h.path, func(b []byte) []byte { edit(b); return b })
			damageCase(t, h, path, rand.New(rand.NewPCG(seed, uint64(i))), c.wantOpErr)
		})
	}
}

// damagedDevice is a closed device whose damaged copies the corruption
// tests run a workload on.
type damagedDevice interface {
	options() *Options
	// churn runs the workload on d and returns the first ErrCorrupt an
	// Alloc or Free returned; any other error fails t.
	churn(t *testing.T, d *Device, rng *rand.Rand) error
	// intact fails t if the damage reached what the device's owners
	// hold.
	intact(t *testing.T, d *Device)
}

// runDamaged runs dv's workload on d, opened on the damaged copy at path,
// after the inspecting calls (which must not panic; what they report is
// not judged). It checks that dv is intact after the workload and after a
// Close and an Open again; Close, which drains the sub-page queues and
// releases pending pages, must succeed whatever it meets there (Check
// reports it). It returns the first ErrCorrupt the workload met and what
// Check said after it.
func runDamaged(t *testing.T, dv damagedDevice, d *Device, path string, rng *rand.Rand) (opErr, checkErr error) {
	t.Helper()
	d.Inspect()
	d.WalkHeap(func(HeapExtent) bool { return true })
	opErr = dv.churn(t, d, rng)
	dv.intact(t, d)
	checkErr = d.Check()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	d, err := Open(path, dv.options())
	if err != nil {
		t.Fatalf("Open after the workload: %v", err)
	}
	defer d.Close()
	dv.intact(t, d)
	return opErr, checkErr
}

// damageCase opens the damaged copy at path, which Open must take, and
// runs the workload on it (runDamaged): Check must report the damage,
// and with wantOpErr an Alloc or Free must have met it.
func damageCase(t *testing.T, dv damagedDevice, path string, rng *rand.Rand, wantOpErr bool) {
	t.Helper()
	d, err := Open(path, dv.options())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	opErr, checkErr := runDamaged(t, dv, d, path, rng)
	if wantOpErr && opErr == nil {
		t.Errorf("no Alloc or Free returned ErrCorrupt")
	}
	if !errors.Is(checkErr, ErrCorrupt) {
		t.Errorf("Check: %v, want ErrCorrupt", checkErr)
	}
}

// damageRound writes b, a damaged copy of dv's file, and opens it: Open
// may refuse it, with ErrCorrupt only. If it opens, the workload runs on
// it (runDamaged) in a subtest called round. It reports whether the file
// opened and whether an Alloc or Free met the damage; what says what the
// damage was, for a failure.
func damageRound(t *testing.T, dv damagedDevice, b []byte, round int, what []string, rng *rand.Rand) (opened, met bool) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "copy")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path, dv.options())
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("round %d (%v): Open: %v, want ErrCorrupt", round, what, err)
		}
		return false, false
	}
	var opErr error
	if !t.Run(fmt.Sprint(round), func(t *testing.T) { opErr, _ = runDamaged(t, dv, d, path, rng) }) {
		t.Fatalf("round %d: corrupted %v", round, what)
	}
	return true, opErr != nil
}

// damageTally counts what damageRound reports.
type damageTally struct{ rounds, opened, met int }

func (c *damageTally) add(opened, met bool) {
	c.rounds++
	if opened {
		c.opened++
	}
	if met {
		c.met++
	}
}

// report logs the counts and fails t if the damage never reached the
// workload.
func (c *damageTally) report(t *testing.T) {
	t.Helper()
	t.Logf("%d rounds: %d opened, in %d of them Alloc or Free met the damage", c.rounds, c.opened, c.met)
	if c.opened == 0 || c.met == 0 {
		t.Errorf("the damage never reached the workload")
	}
}

// churn runs 40 transactions that allocate pages, 128 of 4 KiB in the
// first and 8 of 4 to 64 KiB in each of the others, and free pages at
// random down to 64 held, each waiting for a checkpoint to cover it so
// that the next releases its frees. Every page it is given must be a page
// of the heap that overlaps neither a live page nor another it holds. It
// returns the first ErrCorrupt an Alloc or Free returned; ErrNoSpace is
// allowed, and any other error fails the test.
func (h *corruptHeap) churn(t *testing.T, d *Device, rng *rand.Rand) error {
	t.Helper()
	minPage := h.g.pageBytes(0)
	owner := map[int64]Addr{} // every min page of a page held, and its page
	hold := func(a Addr) {
		if a.Offset() < h.g.heapOff || a.Offset()&(a.Size()-1) != 0 || h.g.isMeta(a.Offset()) {
			t.Fatalf("Alloc returned %v, not a page of the heap", a)
		}
		for off := a.Offset(); off < a.Offset()+a.Size(); off += minPage {
			if o, ok := owner[off]; ok {
				t.Fatalf("Alloc returned %v, which overlaps %v", a, o)
			}
			owner[off] = a
		}
	}
	for _, a := range h.live {
		hold(a)
	}
	var mine []Addr
	var corrupt error
	note := func(err error) {
		switch {
		case errors.Is(err, ErrCorrupt):
			if corrupt == nil {
				corrupt = err
				t.Logf("first corruption met: %v", err)
			}
		case errors.Is(err, ErrNoSpace):
		default:
			t.Fatal(err)
		}
	}
	for round := range 40 {
		err := d.Update(func(tx *Txn) error {
			// The first round takes more min pages than list 0 holds,
			// to reach any corruption in it; the rest mix the sizes.
			n, size := 8, func() int64 { return 4 << 10 << rng.IntN(5) }
			if round == 0 {
				n, size = 128, func() int64 { return 4 << 10 }
			}
			for range n {
				a, err := tx.Alloc(size())
				if err != nil {
					note(err)
					continue
				}
				hold(a)
				mine = append(mine, a)
			}
			rng.Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
			for len(mine) > 64 {
				a := mine[len(mine)-1]
				if err := tx.Free(a); err != nil {
					note(err)
					break
				}
				mine = mine[:len(mine)-1]
				for off := a.Offset(); off < a.Offset()+a.Size(); off += minPage {
					delete(owner, off)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		coverCommitted(t, d)
	}
	return corrupt
}

func (h *corruptHeap) options() *Options { return h.opts }

// TestReleaseOwedStopsAtDamagedQueue: an Alloc too large to release the
// covered pending pages it needs leaves them to the next Begin, which
// releases them in transactions of its own. With the pending queue's head
// damaged (its order byte; its stamp, which says the page is covered, is
// intact), that release meets ErrCorrupt at once: Begin must return, not
// begin again and again a transaction that releases nothing.
func TestReleaseOwedStopsAtDamagedQueue(t *testing.T) {
	if invariantsEnabled {
		t.Skip("the invariants build panics at the first commit on a corrupt device")
	}
	h := newCorruptHeap(t)
	path := corruptCopy(t, h.path, func(b []byte) []byte {
		b[h.st.pendHead+headerOrderOff] = 200
		return b
	})
	d, err := Open(path, h.options())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, size := range []int64{64 << 10, 4 << 10} { // the heap full but for the pending pages
		for d.Update(func(tx *Txn) error { _, err := tx.Alloc(size); return err }) == nil {
		}
	}
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range h.live[:24] { // more than half a record: no release
		if err := tx.Write(a.Offset(), make([]byte, a.Size())); err != nil {
			t.Fatal(err)
		}
	}
	_, err = tx.Alloc(4096)
	tx.Rollback()
	if !errors.Is(err, ErrNoSpace) || !d.alloc.owed.Load() {
		t.Fatalf("set-up: Alloc in a large transaction: %v, owed %v; want ErrNoSpace, owed", err, d.alloc.owed.Load())
	}
	done := make(chan error, 1)
	go func() {
		tx, err := d.Begin()
		if err == nil {
			tx.Rollback()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Begin: %v", err)
		}
	case <-time.After(30 * time.Second):
		// Close takes the writer slot between two of the release's
		// transactions, and the loop ends.
		t.Fatal("Begin has not returned in 30 s: it keeps releasing from the damaged queue")
	}
	if err := d.Update(func(tx *Txn) error { _, err := tx.Alloc(4096); return err }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Alloc on the heap full but for the damaged queue: %v, want ErrCorrupt", err)
	}
}

// intact fails if a live page's bytes are not the pattern written into
// it.
func (h *corruptHeap) intact(t *testing.T, d *Device) {
	t.Helper()
	for _, a := range h.live {
		got := make([]byte, a.Size())
		if _, err := d.ReadAt(got, a.Offset()); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, pattern(a)) {
			t.Fatalf("live page %v was written over", a)
		}
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var corruptRounds = flag.Int("buddycorrupt.rounds", 150, "corrupted devices in TestBuddyRandomCorruption")

// TestBuddyRandomCorruption is TestBuddyCorruptLinks with random damage:
// each round writes one to three random values (a live page's offset, a
// free page's, an aligned heap offset, its own offset, zero, any word)
// into the headers of free and pending pages, into state bits and into
// the allocator state's links and counters, then inspects the device and
// runs the same workload.
// Open may refuse the file with ErrCorrupt; if it opens, nothing the
// workload does may panic, hand out a page that overlaps a live one, write
// into a live page, fail the device, or leave a file Open refuses.
func TestBuddyRandomCorruption(t *testing.T) {
	if invariantsEnabled {
		t.Skip("the invariants build panics at the first commit on a corrupt device")
	}
	seed := testSeed(t, "buddy.seed", *buddySeed)
	rng := rand.New(rand.NewPCG(seed, 0))
	h := newCorruptHeap(t)
	clean := readFile(t, h.path)
	stateOff := int64(0)
	{
		d, err := Open(h.path, &Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		stateOff = d.geometry.state.off
		d.Close()
	}
	var spare []Addr // the pages not live: on list 0 or pending
	for _, a := range h.pages {
		if !slices.Contains(h.live, a) {
			spare = append(spare, a)
		}
	}
	value := func(self int64) uint64 {
		switch rng.IntN(6) {
		case 0:
			return uint64(h.live[rng.IntN(len(h.live))].Offset())
		case 1:
			return uint64(spare[rng.IntN(len(spare))].Offset())
		case 2:
			return uint64(h.g.heapOff + rng.Int64N(h.st.frontier-h.g.heapOff)&^(4<<10-1))
		case 3:
			return uint64(self)
		case 4:
			return 0
		}
		return rng.Uint64()
	}
	var tally damageTally
	for round := range *corruptRounds {
		b := slices.Clone(clean)
		var what []string
		for range 1 + rng.IntN(3) {
			switch rng.IntN(3) {
			case 0: // a word of a free or pending page's header
				p := spare[rng.IntN(len(spare))].Offset()
				at := p + 8*rng.Int64N(3)
				binary.LittleEndian.PutUint64(b[at:], value(p))
				what = append(what, fmt.Sprintf("header word %d", at))
			case 1: // state bits of a page at some order
				k := rng.IntN(h.g.maxOrder + 1)
				p := h.pages[rng.IntN(len(h.pages))].Offset() &^ (h.g.pageBytes(k) - 1)
				w, shift := h.g.bitPos(k, p)
				v := binary.LittleEndian.Uint64(b[w:]) ^ uint64(1+rng.IntN(3))<<shift
				binary.LittleEndian.PutUint64(b[w:], v)
				what = append(what, fmt.Sprintf("state of order %d page %d", k, p))
			default: // a link or counter of the allocator state
				words := []int64{statePendingHeadOff, statePendingTailOff, statePendPagesOff, stateOrdersOff, stateOrdersOff + 8, stateOrdersOff + stateOrderBytes}
				at := stateOff + words[rng.IntN(len(words))]
				binary.LittleEndian.PutUint64(b[at:], value(0))
				what = append(what, fmt.Sprintf("state word %d", at-stateOff))
			}
		}
		tally.add(damageRound(t, h, b, round, what, rand.New(rand.NewPCG(seed, uint64(round)+1))))
	}
	tally.report(t)
}

// TestCommitRefusesStrayLines writes, through the internals a corrupt
// link would reach, one word where no transaction may (below the root
// area, into the journal's ring, past the capacity, at a negative offset),
// beside a word of the root area. Commit must refuse the whole transaction
// with ErrCorrupt, and the device must go on and reopen with neither word
// written. The same write into the root area alone commits.
func TestCommitRefusesStrayLines(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	root, _ := d.Root()
	ring := d.journal.ring
	for _, off := range []int64{-64, 0, root - 8, ring.off, ring.end() - 8, d.capacity, 1 << 62} {
		tx, err := d.Begin()
		if err != nil {
			t.Fatal(err)
		}
		tx.writeU64(root, 1, kindMeta)
		tx.writeU64(off, 1, kindMeta)
		if err := tx.Commit(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Commit of a write at %d: %v, want ErrCorrupt", off, err)
		}
	}
	if got := readRoot(t, d, 0, 8); !bytes.Equal(got, make([]byte, 8)) {
		t.Fatalf("root after the refused commits: %x", got)
	}
	if err := d.Update(func(tx *Txn) error { tx.writeU64(root, 2, kindMeta); return nil }); err != nil {
		t.Fatal(err)
	}
	allocPages(t, d, 3, 4<<10)
	d = reopen(t, d, path, testOptions())
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint64(readRoot(t, d, 0, 8)); got != 2 {
		t.Fatalf("root after reopen: %d, want 2", got)
	}
}

// freeEvenPages frees every other page of pages, the first among them, in
// committed transactions a checkpoint covers, and releases them to the
// free lists: none merges with a buddy. It returns free list 0's head.
func freeEvenPages(t *testing.T, d *Device, pages []Addr) (head int64) {
	t.Helper()
	var even []Addr
	for i := 0; i < len(pages); i += 2 {
		even = append(even, pages[i])
	}
	freePages(t, d, even)
	coverCommitted(t, d)
	releaseCovered(t, d)
	return d.alloc.last.heads[0]
}

// TestFreeListPrevLinks damages the prev link of a page on free list 0 in
// a closed device. The head's, set: Alloc, which takes the head, must
// refuse with a CorruptError naming it. A later page's, set to a live page
// or to a free page whose next link is another: freeing that page's live
// buddy, its release must not merge the two (detaching the page would
// write the next link of its prev, inside the live page), and Check must
// report the list. No live page's bytes may change.
func TestFreeListPrevLinks(t *testing.T) {
	d, path := createTestDevice(t, smallFileOptions())
	pages := allocPages(t, d, 16, 4096)
	for _, a := range pages {
		if _, err := d.WriteAt(pattern(a), a.Offset()); err != nil {
			t.Fatal(err)
		}
	}
	head := freeEvenPages(t, d, pages)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// list holds free list 0's pages in order; x is one past the head
	// whose buddy is live, not the second (whose prev is the head).
	b := readFile(t, path)
	var list []int64
	for off := head; off != 0 && len(list) < 64; off = int64(binary.LittleEndian.Uint64(b[off+8:])) {
		list = append(list, off)
	}
	var xOff int64
	var buddy Addr
	for i := 2; i < len(list) && xOff == 0; i++ {
		for j := 1; j < len(pages); j += 2 {
			if pages[j].Offset() == list[i]^4096 {
				xOff, buddy = list[i], pages[j]
			}
		}
	}
	if xOff == 0 {
		t.Fatalf("set-up: free list 0 is %v, with no page past the second whose buddy is live", list)
	}
	live := pages[1] // odd: live
	if live == buddy {
		live = pages[3]
	}
	t.Run("head with a prev", func(t *testing.T) {
		d, err := Open(corruptCopy(t, path, func(b []byte) []byte { putU64(head, uint64(xOff))(b); return b }), &Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		err = d.Update(func(tx *Txn) error { _, err := tx.Alloc(4096); return err })
		want := fmt.Sprintf("pagealloc: corrupt free list 0 at offset %d: expected a previous page unless it is the list's head %d, found %d", head, head, xOff)
		if !errors.Is(err, ErrCorrupt) || err.Error() != want {
			t.Fatalf("Alloc: %v; want %q", err, want)
		}
		if err := d.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "free list 0") {
			t.Errorf("Check: %v; want ErrCorrupt naming free list 0", err)
		}
		for i := 1; i < len(pages); i += 2 {
			checkPattern(t, d, pages[i])
		}
	})
	for _, c := range []struct {
		name string
		prev int64
	}{
		{"prev at a live page", live.Offset()},
		{"prev at a free page not linked to it", list[0]},
	} {
		t.Run(c.name, func(t *testing.T) {
			if invariantsEnabled {
				t.Skip("the invariants build panics at the first commit on a corrupt device")
			}
			d, err := Open(corruptCopy(t, path, func(b []byte) []byte { putU64(xOff, uint64(c.prev))(b); return b }), &Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			freePages(t, d, []Addr{buddy})
			coverCommitted(t, d)
			releaseCovered(t, d)
			if d.Stats().PendingPages != 0 {
				t.Fatalf("%d pages still pending after the release", d.Stats().PendingPages)
			}
			tx, err := d.Begin()
			if err != nil {
				t.Fatal(err)
			}
			x, bud := tx.pageState(&d.alloc.g, 0, xOff), tx.pageState(&d.alloc.g, 0, buddy.Offset())
			tx.Rollback()
			if x != stateFree || bud != stateFree {
				t.Errorf("the page at %d and its buddy %v, released: states %02b and %02b, want both free at order 0, unmerged", xOff, buddy, x, bud)
			}
			if err := d.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "free list 0") {
				t.Errorf("Check: %v; want ErrCorrupt naming free list 0", err)
			}
			for i := 1; i < len(pages); i += 2 {
				if pages[i] != buddy {
					checkPattern(t, d, pages[i])
				}
			}
		})
	}
}

// checkPattern fails t unless page a holds pattern(a).
func checkPattern(t *testing.T, d *Device, a Addr) {
	t.Helper()
	got := make([]byte, a.Size())
	if _, err := d.ReadAt(got, a.Offset()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pattern(a)) {
		t.Errorf("live page %v was written over", a)
	}
}

// TestCheckPendingLinkInsidePage links the pending queue of a closed
// device to the middle of a pending page of 8 KiB, where its owner's bytes
// hold a copy of that page's header, and makes it the queue's tail. The
// state bits of the page the link falls in say pending at the header's
// order, and the counts and the tail agree; but no page starts there, and
// the first release stops at it. Check must name it.
func TestCheckPendingLinkInsidePage(t *testing.T) {
	d, path := createTestDevice(t, smallHeapOptions())
	g := d.alloc.g
	// Free space enough that the frees ask for no checkpoint, which
	// would let Close release them.
	freePages(t, d, allocPages(t, d, 16, g.maxPageBytes()))
	coverCommitted(t, d)
	releaseCovered(t, d)
	pages := allocPages(t, d, 3, 2*g.pageBytes(0))
	freePages(t, d, pages[:2])
	state := d.geometry.state.off
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	first, second := pages[0].Offset(), pages[1].Offset()
	inside := second + g.pageBytes(0)
	path = corruptCopy(t, path, func(b []byte) []byte {
		st := decodeState(b[state:], g.maxOrder+1)
		if st.pendHead != first || st.pendTail != second {
			t.Fatalf("set-up: want the pending queue %d, %d, found head %d tail %d", first, second, st.pendHead, st.pendTail)
		}
		copy(b[inside:inside+pageHeaderBytes], b[second:second+pageHeaderBytes])
		putU64(first+8, uint64(inside))(b)
		putU64(state+statePendingTailOff, uint64(inside))(b)
		return b
	})
	d, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := fmt.Sprintf("corrupt pending queue at offset %d: expected a page aligned to its size of %d bytes", inside, 2*g.pageBytes(0))
	if err := d.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Check: %v, want ErrCorrupt naming %q", err, want)
	}
}

// TestCheckFindsUnmergedBuddies splits, in a closed device's file, the
// free 8 KiB page at the head of list 1 into two free 4 KiB halves on
// list 0, with every link, state bit and counter consistent: only the
// merge the allocator owes them is missing (free buddies are always
// merged). Check must name them.
func TestCheckFindsUnmergedBuddies(t *testing.T) {
	d, path := createTestDevice(t, smallHeapOptions())
	g := d.alloc.g
	var st allocState
	for range 32 { // until list 0 is empty and list 1 is not
		if st = d.alloc.last; st.freePages[0] == 0 && st.freePages[1] > 0 {
			break
		}
		allocPages(t, d, 1, g.pageBytes(0))
	}
	if st.freePages[0] != 0 || st.freePages[1] == 0 {
		t.Fatalf("set-up: %d free pages of order 0 and %d of order 1, want 0 and some", st.freePages[0], st.freePages[1])
	}
	page, half := st.heads[1], g.pageBytes(0)
	state := d.geometry.state.off
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	setState := func(b []byte, order int, off int64, s pageState) {
		w, shift := g.bitPos(order, off)
		v := binary.LittleEndian.Uint64(b[w:])
		binary.LittleEndian.PutUint64(b[w:], v&^(3<<shift)|uint64(s)<<shift)
	}
	header := func(b []byte, off, prev, next int64) {
		putU64(off, uint64(prev))(b)
		putU64(off+8, uint64(next))(b)
		binary.LittleEndian.PutUint32(b[off+headerMagicOff:], freeMagic)
		b[off+headerOrderOff] = 0
	}
	path = corruptCopy(t, path, func(b []byte) []byte {
		setState(b, 1, page, stateNone)
		setState(b, 0, page, stateFree)
		setState(b, 0, page+half, stateFree)
		// Off list 1, which it headed, and the only page on list 0.
		next := int64(binary.LittleEndian.Uint64(b[page+8:]))
		if next != 0 {
			putU64(next, 0)(b)
		}
		putU64(state+stateOrdersOff+stateOrderBytes, uint64(next))(b)
		putU64(state+stateOrdersOff+stateOrderBytes+8, uint64(st.freePages[1]-1))(b)
		putU64(state+stateOrdersOff, uint64(page))(b)
		putU64(state+stateOrdersOff+8, 2)(b)
		header(b, page, 0, page+half)
		header(b, page+half, page, 0)
		return b
	})
	d, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := fmt.Sprintf("corrupt heap at offset %d: expected free buddies at %d and %d of order 0 to be merged", page, page, page+half)
	if err := d.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Check: %v, want ErrCorrupt naming %q", err, want)
	}
	if errs := strings.Count(d.Check().Error(), "\n") + 1; errs != 1 {
		t.Errorf("Check reports %d violations, want only the unmerged buddies:\n%v", errs, d.Check())
	}
}

// TestAllocRefusesPagesPastFrontier damages, in a closed device's file,
// the state of the max page past the frontier, where the heap grows next,
// keeping the counters consistent. Growing the heap over it would hand out
// a page its owner still holds (a frontier moved back over the last max
// page, which is allocated and holds its owner's bytes), or a page that
// its owner can neither free nor write the first bytes of (a stray
// sub-page parent bit). Check names the damage; Alloc must refuse with
// ErrCorrupt and leave the device as it was, the file not grown.
func TestAllocRefusesPagesPastFrontier(t *testing.T) {
	for _, tc := range []struct {
		name string
		// edit damages the file; last is the last max page, allocated.
		edit func(b []byte, g *heapGeometry, st allocState, state int64, last Addr)
		want func(g *heapGeometry, last Addr) string // what Check and Alloc name
	}{
		{"frontier moved back over an allocated page", func(b []byte, g *heapGeometry, st allocState, state int64, last Addr) {
			putU64(state+stateFrontierOff, uint64(last.Offset()))(b)
			putU64(state+stateAllocPagesOff, uint64(st.allocPages-1))(b)
			putU64(state+stateAllocBytesOff, uint64(st.allocBytes-last.Size()))(b)
		}, func(g *heapGeometry, last Addr) string {
			return fmt.Sprintf("corrupt heap at offset %d: expected no page past the frontier %d", last.Offset(), last.Offset())
		}},
		{"parent bit past the frontier", func(b []byte, g *heapGeometry, st allocState, state int64, last Addr) {
			w, bit := g.parentBitPos(st.frontier)
			binary.LittleEndian.PutUint64(b[w:], binary.LittleEndian.Uint64(b[w:])|1<<bit)
		}, func(g *heapGeometry, last Addr) string {
			return fmt.Sprintf("corrupt sub-page parent bits at offset %d: expected ", last.Offset()+last.Size())
		}},
		{"parent bit at the end of the next max page", func(b []byte, g *heapGeometry, st allocState, state int64, last Addr) {
			w, bit := g.parentBitPos(st.frontier + g.maxPageBytes() - 1<<g.parentShift)
			binary.LittleEndian.PutUint64(b[w:], binary.LittleEndian.Uint64(b[w:])|1<<bit)
		}, func(g *heapGeometry, last Addr) string {
			return fmt.Sprintf("corrupt sub-page parent bits at offset %d: expected ", last.Offset()+2*last.Size()-1<<g.parentShift)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, path := createTestDevice(t, smallHeapOptions())
			g := d.alloc.g
			pages := allocPages(t, d, 3, g.maxPageBytes())
			last := pages[2]
			if _, err := d.WriteAt(pattern(last), last.Offset()); err != nil {
				t.Fatal(err)
			}
			st, state := d.alloc.last, d.geometry.state.off
			if st.frontier != last.Offset()+last.Size() || st.heads[g.maxOrder] != 0 || g.parentShift == 0 {
				t.Fatalf("set-up: want the last page %v at the frontier %d, no free max page and parent bits, found lists %b", last, st.frontier, st.nonEmpty)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			path = corruptCopy(t, path, func(b []byte) []byte { tc.edit(b, &g, st, state, last); return b })
			d, err := Open(path, smallHeapOptions())
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			want := tc.want(&g, last)
			size := d.Stats().FileSize
			before := d.Check()
			if !errors.Is(before, ErrCorrupt) || !strings.Contains(before.Error(), want) {
				t.Fatalf("Check: %v, want ErrCorrupt naming %q", before, want)
			}
			err = d.Update(func(tx *Txn) error {
				a, err := tx.Alloc(g.maxPageBytes())
				if err == nil {
					t.Errorf("Alloc returned %v, over the damage", a)
				}
				return err
			})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
				t.Fatalf("Alloc past the frontier: %v, want ErrCorrupt naming %q", err, want)
			}
			if after := d.Check(); after == nil || after.Error() != before.Error() {
				t.Fatalf("Check after the refused Alloc: %v, want as before: %v", after, before)
			}
			if got := d.Stats().FileSize; got != size {
				t.Fatalf("the refused Alloc grew the file from %d to %d bytes", size, got)
			}
			got := make([]byte, last.Size())
			if _, err := d.ReadAt(got, last.Offset()); err != nil || !bytes.Equal(got, pattern(last)) {
				t.Fatalf("the owner's page after the refused Alloc: %v, changed %v", err, !bytes.Equal(got, pattern(last)))
			}
		})
	}
}

// TestGrowOverMetadataOfSeveralMaxPages covers a block whose metadata
// spans several max pages (16 KiB max pages, 1 GiB blocks): the first
// growth takes them with the first max page that holds pages. A refusal
// there — state bits set under that page in a file that holds only part
// of the metadata, or over the metadata, or a capacity that ends before
// the page — leaves the
// device as it was, the file's size included, and Check reports the bits
// before any Alloc runs into them.
func TestGrowOverMetadataOfSeveralMaxPages(t *testing.T) {
	opts := func(maxSize int64) *Options {
		return &Options{NoSync: true, MinPageSize: 4096, MaxPageSize: 16 << 10, JournalSize: 256 << 10, MaxSize: maxSize, GrowthStep: 16 << 10}
	}
	d, path := createTestDevice(t, opts(64<<20))
	g, st := d.alloc.g, d.alloc.last
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	block := g.blockStart(st.frontier)
	if st.frontier != block || g.metaPad < 4*g.maxPageBytes() || g.metaPad%g.maxPageBytes() != 0 {
		t.Fatalf("set-up: want the frontier %d at a block's start and its metadata, %d bytes, several whole max pages", st.frontier, g.metaPad)
	}
	first := block + g.metaPad // the first page grow makes

	// refused opens the damaged copy at path, and requires Check to name
	// want, an Alloc that would grow over the damage to refuse naming it
	// too, and the file's size and Check's report to stay as they were.
	refused := func(t *testing.T, path, want string) {
		d, err := Open(path, opts(64<<20))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		size := d.Stats().FileSize
		before := d.Check()
		if !errors.Is(before, ErrCorrupt) || !strings.Contains(before.Error(), want) {
			t.Fatalf("Check: %v, want ErrCorrupt naming %q", before, want)
		}
		err = d.Update(func(tx *Txn) error {
			a, err := tx.Alloc(4096)
			if err == nil {
				t.Errorf("Alloc returned %v, over the damage", a)
			}
			return err
		})
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Alloc: %v, want ErrCorrupt naming %q", err, want)
		}
		if got := d.Stats().FileSize; got != size {
			t.Fatalf("the refused Alloc grew the file from %d to %d bytes", size, got)
		}
		if after := d.Check(); after == nil || after.Error() != before.Error() {
			t.Fatalf("Check after the refused Alloc: %v, want as before: %v", after, before)
		}
	}
	// stateBits sets order-k state bits of the page at off in a copy of
	// the device whose file is at least fileLen bytes long.
	stateBits := func(t *testing.T, k int, off, fileLen int64) string {
		w, shift := g.bitPos(k, off)
		return corruptCopy(t, path, func(b []byte) []byte {
			b = append(b, make([]byte, max(0, max(fileLen, w+8)-int64(len(b))))...)
			binary.LittleEndian.PutUint64(b[w:], uint64(stateAllocated)<<shift)
			return b
		})
	}
	pastFrontier := func(k int, off int64) string {
		return fmt.Sprintf("corrupt heap at offset %d: expected no page past the frontier %d, found order %d state %02b", off, block, k, stateAllocated)
	}

	t.Run("state bits under the first page", func(t *testing.T) {
		// The file holds the metadata's first max page, the word in it,
		// and not the rest.
		fileLen := block + g.maxPageBytes()
		if w, _ := g.bitPos(0, first); w+8 > fileLen {
			t.Fatalf("set-up: the state word %d lies past the metadata's first max page", w)
		}
		refused(t, stateBits(t, 0, first, fileLen), pastFrontier(0, first))
	})

	// No page lies over the metadata, so no state bit may be set there
	// either: Check names it, and the growth that would take it refuses.
	t.Run("state bits over the metadata's first max page", func(t *testing.T) {
		refused(t, stateBits(t, g.maxOrder, block, 0), pastFrontier(g.maxOrder, block))
	})
	t.Run("state bits over the metadata's last min page", func(t *testing.T) {
		off := first - g.pageBytes(0)
		refused(t, stateBits(t, 0, off, 0), pastFrontier(0, off))
	})

	t.Run("parent bit under the first page", func(t *testing.T) {
		pw, bit := g.parentBitPos(first + g.maxPageBytes() - 1<<g.parentShift)
		path := corruptCopy(t, path, func(b []byte) []byte {
			b = append(b, make([]byte, pw+8-int64(len(b)))...)
			binary.LittleEndian.PutUint64(b[pw:], 1<<bit)
			return b
		})
		refused(t, path, fmt.Sprintf("corrupt sub-page parent bits at offset %d", first+g.maxPageBytes()-1<<g.parentShift))
	})

	t.Run("capacity ends before the first page", func(t *testing.T) {
		d, err := Open(path, opts(first+g.maxPageBytes()-4096))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		size := d.Stats().FileSize
		err = d.Update(func(tx *Txn) error { _, err := tx.Alloc(4096); return err })
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("Alloc: %v, want ErrNoSpace", err)
		}
		if got := d.Stats().FileSize; got != size {
			t.Fatalf("the refused Alloc grew the file from %d to %d bytes", size, got)
		}
		if err := d.Check(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("one growth takes the metadata and a page", func(t *testing.T) {
		d, err := Open(path, opts(64<<20))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		var a Addr
		if err := d.Update(func(tx *Txn) (err error) { a, err = tx.Alloc(g.maxPageBytes()); return err }); err != nil {
			t.Fatal(err)
		}
		s := d.Stats()
		if a.Offset() != first || s.Frontier != first+g.maxPageBytes() || s.FileSize != s.Frontier {
			t.Fatalf("Alloc of a max page: %v, frontier %d, file %d bytes; want the page at %d and both at %d", a, s.Frontier, s.FileSize, first, first+g.maxPageBytes())
		}
		if err := d.Check(); err != nil {
			t.Fatal(err)
		}
	})
}
