package pagealloc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"testing"
)

// commitCorrupt runs update, which commits a transaction that leaves state
// Check calls corrupt (set up through internals: no API can), and checks
// what the build does with it. The invariants build must panic in Commit
// with Check's error, which names what; the normal build lets the commit
// through, and Check then reports it. It reports whether the commit went
// through.
func commitCorrupt(t *testing.T, d *Device, what string, update func() error) bool {
	t.Helper()
	var recovered any
	err := func() error {
		defer func() { recovered = recover() }()
		return update()
	}()
	if invariantsEnabled {
		msg := fmt.Sprint(recovered)
		if recovered == nil || !strings.Contains(msg, "invariants violated") || !strings.Contains(msg, what) {
			t.Fatalf("invariants build: the commit of a corrupt %s returned %v and panicked with %q; want a panic naming it", what, err, msg)
		}
		return false
	}
	if recovered != nil {
		t.Fatalf("normal build: the commit panicked: %v", recovered)
	}
	if err != nil {
		t.Fatalf("normal build: the commit failed: %v", err)
	}
	if err := d.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), what) {
		t.Fatalf("normal build: Check after the commit of a corrupt %s: %v", what, err)
	}
	return true
}

// TestInvariantsStopCorruptCommit commits an allocated page marked free
// but on no free list. With the invariants tag the library's own check
// after the commit must panic; without it the commit goes through and
// Check finds the damage.
func TestInvariantsStopCorruptCommit(t *testing.T) {
	d, _ := createTestDevice(t, testOptions())
	var a Addr
	if err := d.Update(func(tx *Txn) (err error) { a, err = tx.Alloc(4096); return err }); err != nil {
		t.Fatal(err)
	}
	commitCorrupt(t, d, "free list 0", func() error {
		return d.Update(func(tx *Txn) error {
			tx.setPageState(&d.alloc.g, 0, a.Offset(), stateFree)
			return nil
		})
	})
	// Either way the device stays usable: the writer slot was released.
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
}

// TestCheckFindsPagesInsidePages sets the state bits of a page of a lower
// order inside an allocated or free page, at its first, last and a middle
// position, and expects Check to name that page. Check reads the bits
// inside a page a word at a time; these land at either end of a word and
// of a run of words, and inside a page whose bits share a word with its
// neighbours'.
func TestCheckFindsPagesInsidePages(t *testing.T) {
	for _, tc := range []struct {
		size  int64 // the page holding the bad one
		order int   // the bad page's order
		index int64 // the bad page's index inside, from the end if negative
		state pageState
	}{
		{64 << 10, 0, 0, stateAllocated},
		{64 << 10, 0, -1, stateFree},
		{64 << 10, 1, 3, statePending},
		{1 << 20, 0, 31, stateAllocated},
		{1 << 20, 0, 32, stateAllocated},
		{1 << 20, 0, -1, stateFree},
		{1 << 20, 3, -1, stateAllocated},
		{16 << 20, 0, 2047, stateAllocated},
		{16 << 20, 0, -1, stateFree},
		{16 << 20, 11, 0, stateAllocated},
	} {
		d, _ := createTestDevice(t, testOptions())
		g := &d.alloc.g
		// Neighbours on both sides, so that their bits sit beside the
		// page's in the same words.
		pages := allocPages(t, d, 3, tc.size)
		a := pages[1]
		n := tc.size / g.pageBytes(tc.order)
		sub := a.Offset() + (tc.index+n)%n*g.pageBytes(tc.order)
		want := fmt.Sprintf("corrupt heap at offset %d: expected nothing inside the order-%d page at %d, found order %d state %02b",
			sub, orderOfSize(g, a.Size()), a.Offset(), tc.order, tc.state)
		commitCorrupt(t, d, want, func() error {
			return d.Update(func(tx *Txn) error {
				tx.setPageState(g, tc.order, sub, tc.state)
				return nil
			})
		})
		d.Close()
	}
}

// orderOfSize returns the order of pages of size bytes.
func orderOfSize(g *heapGeometry, size int64) int {
	return bits.TrailingZeros64(uint64(size)) - int(g.minShift)
}

// TestCheckReservedStateWord: the allocator state's reserved word must be
// zero, so that a later format may give it a meaning.
func TestCheckReservedStateWord(t *testing.T) {
	d, _ := createTestDevice(t, testOptions())
	off := d.geometry.state.off + stateReservedOff
	commitCorrupt(t, d, fmt.Sprintf("corrupt allocator state at offset %d: expected a reserved word of zero, found 0x1", off), func() error {
		return d.Update(func(tx *Txn) error {
			tx.writeU64(off, 1, kindMeta)
			return nil
		})
	})
}

// TestCheckFindsPagesPastFrontier sets the state bits of a page past the
// frontier, in the block the frontier lies in, whose metadata lies below
// it: the next grow would make free pages over that page, which would then
// belong to two, and Free and WriteAt would take it for allocated. Check
// must name it before, up to the last page below the capacity.
func TestCheckFindsPagesPastFrontier(t *testing.T) {
	for _, tc := range []struct {
		order int
		at    func(g *heapGeometry, frontier int64) int64 // the page's offset
		state pageState
	}{
		{0, func(g *heapGeometry, f int64) int64 { return f }, stateAllocated},
		{0, func(g *heapGeometry, f int64) int64 { return f + 3*g.pageBytes(0) }, stateFree},
		{2, func(g *heapGeometry, f int64) int64 { return f + 5*g.maxPageBytes() + g.pageBytes(2) }, statePending},
		{-1, func(g *heapGeometry, f int64) int64 { return f }, stateFree},
		// The last pages below the capacity, which ends inside the block.
		{-1, func(g *heapGeometry, f int64) int64 { return g.capacity - g.maxPageBytes() }, stateAllocated},
		{0, func(g *heapGeometry, f int64) int64 { return g.capacity - g.pageBytes(0) }, stateAllocated},
	} {
		d, _ := createTestDevice(t, smallHeapOptions())
		g := &d.alloc.g
		allocPages(t, d, 3, g.pageBytes(0))
		frontier := d.Stats().Frontier
		order := tc.order
		if order < 0 {
			order = g.maxOrder
		}
		off := tc.at(g, frontier)
		want := fmt.Sprintf("corrupt heap at offset %d: expected no page past the frontier %d, found order %d state %02b", off, frontier, order, tc.state)
		commitCorrupt(t, d, want, func() error {
			return d.Update(func(tx *Txn) error {
				tx.setPageState(g, order, off, tc.state)
				return nil
			})
		})
		d.Close()
	}
}

// TestCheckFindsPendingStampedAhead stamps a page of the pending queue
// with a transaction after the last committed one, keeping the queue in
// the order pages were freed: a release waits for a checkpoint of that
// transaction, holding back the page and every page queued after it, and
// Open refuses a tail stamped past 2^62. Check must name the page.
func TestCheckFindsPendingStampedAhead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		queue int                       // pages freed, each in a transaction of its own
		stamp func(txSeq uint64) uint64 // the tail's new stamp
	}{
		{"the tail, by one", 3, func(s uint64) uint64 { return s + 1 }},
		{"the only page, by 2^62", 1, func(uint64) uint64 { return maxTxSeq }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := createTestDevice(t, smallHeapOptions())
			pages := allocPages(t, d, tc.queue+1, 4096)
			for _, a := range pages[:tc.queue] {
				freePages(t, d, []Addr{a})
			}
			tail := d.alloc.last.pendTail
			if d.alloc.last.pendPages != int64(tc.queue) || tail != pages[tc.queue-1].Offset() {
				t.Fatalf("set-up: want %d pending pages ending at %d, found %d ending at %d", tc.queue, pages[tc.queue-1].Offset(), d.alloc.last.pendPages, tail)
			}
			// The forging transaction is the last committed one.
			stamp := tc.stamp(d.txSeq + 1)
			want := fmt.Sprintf("corrupt pending queue at offset %d: expected pages freed by committed transactions, up to %d, found transaction %d", tail, d.txSeq+1, stamp)
			commitCorrupt(t, d, want, func() error {
				return d.Update(func(tx *Txn) error {
					tx.writeU64(tail, stamp, kindLink)
					return nil
				})
			})
		})
	}
}

// TestCheckFindsStateCopyMismatch commits a word of the allocator state
// region that the allocator's copy of it, which the allocator acts on,
// does not hold. The next Open loads the region: a frontier moved back
// there grows the heap again over allocated pages, handing them out; a
// lost list head loses its pages. Check must name the word.
func TestCheckFindsStateCopyMismatch(t *testing.T) {
	// firstList returns the offset of the lowest non-empty free list's
	// head in the region.
	firstList := func(st *allocState) int64 {
		return stateOrdersOff + int64(bits.TrailingZeros64(st.nonEmpty))*stateOrderBytes
	}
	for _, tc := range []struct {
		name  string
		field func(st *allocState) int64                  // the word's offset in the region
		value func(g *heapGeometry, st *allocState) int64 // what the file gets
	}{
		{"frontier back one max page", func(*allocState) int64 { return stateFrontierOff },
			func(g *heapGeometry, st *allocState) int64 { return st.frontier - g.maxPageBytes() }},
		{"allocated pages", func(*allocState) int64 { return stateAllocPagesOff },
			func(g *heapGeometry, st *allocState) int64 { return st.allocPages + 1 }},
		{"a free list's head", firstList, func(g *heapGeometry, st *allocState) int64 { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := createTestDevice(t, smallHeapOptions())
			g := &d.alloc.g
			allocPages(t, d, 3, g.maxPageBytes())
			allocPages(t, d, 3, g.pageBytes(0))
			st := d.alloc.last
			if st.frontier < g.heapOff+2*g.maxPageBytes() || st.nonEmpty == 0 {
				t.Fatalf("set-up: want a frontier past two max pages and a free list, found %d and lists %b", st.frontier, st.nonEmpty)
			}
			field := tc.field(&st)
			at := d.geometry.state.off + field
			was, v := int64(binary.LittleEndian.Uint64(encodeState(&st, g.maxOrder+1)[field:])), tc.value(g, &st)
			want := fmt.Sprintf("corrupt allocator state at offset %d: expected the committed word the allocator holds, %d, found %d", at, was, v)
			commitCorrupt(t, d, want, func() error {
				return d.Update(func(tx *Txn) error {
					tx.writeU64(at, uint64(v), kindMeta)
					return nil
				})
			})
		})
	}
}

// TestCheckNamesUnlinkedPages marks an allocated page free or pending,
// on no list: a page lost to its owner, who can no longer free it, and
// to the allocator, which takes pages only from the lists. Check must name
// the page, not only the count that no longer matches.
func TestCheckNamesUnlinkedPages(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int64
		state pageState
		list  string // what Check names
	}{
		{"free", 4096, stateFree, "free list 0"},
		{"free at order 1", 8192, stateFree, "free list 1"},
		{"pending", 4096, statePending, "pending queue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := createTestDevice(t, smallHeapOptions())
			g := &d.alloc.g
			pages := allocPages(t, d, 4, tc.size)
			freePages(t, d, pages[:1]) // the queue is not empty
			a := pages[2]
			k := orderOfSize(g, a.Size())
			q := "list"
			if tc.state == statePending {
				q = "queue"
			}
			want := fmt.Sprintf("corrupt %s at offset %d: expected the order-%d page in state %02b reached from the %s's head, found it unreached", tc.list, a.Offset(), k, tc.state, q)
			commitCorrupt(t, d, want, func() error {
				return d.Update(func(tx *Txn) error {
					tx.setPageState(g, k, a.Offset(), tc.state)
					return nil
				})
			})
		})
	}
}
