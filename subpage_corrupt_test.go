package pagealloc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The sub-page allocator follows links it reads from the device (a class's
// list head and queue ends in the class table, a parent header's next,
// prev and pendNext) at use time: Open does not walk them. These tests
// corrupt them in a closed device and hold the allocator to the contract
// TestBuddyCorruptLinks holds the buddy allocator to.

// Slot sizes of the classes of a corruptSubpages device: class A, the one
// the cases corrupt (8 KiB parents), and two more that the workload also
// uses, so that a Free in one drains the others' queues (drainOther).
var corruptSubpageSizes = [3]int64{128, 64, 1024}

// corruptSubpages is a closed device's file with three sub-page classes and
// a caller's page, and what it holds. Class A has three parents: p1 is
// full, p2 heads its partial list with 10 free slots, and p3 follows it with
// 53 free slots; the pending queues are empty (Close drained them).
type corruptSubpages struct {
	path       string
	opts       *Options
	g          heapGeometry
	tableOff   int64 // the class table
	index      [3]int
	root       region
	p1, p2, p3 int64
	parents    []int64 // every parent of every class
	// live slots hold their pattern; the workload never frees them.
	live []Addr
	// loose slots are allocated too: the workload holds them from the
	// start and frees them in its first transaction (p2 and p3 hold only
	// loose slots, so that they empty).
	loose []Addr
	// pinned slots are allocated, and held by the workload for good (pin).
	pinned []Addr
	// caller is a page of class A's parent size from Txn.Alloc, and
	// callerData the bytes its owner wrote: a pattern, or a copy of a
	// parent header where a case makes the caller write one (forge).
	caller     Addr
	callerData []byte
	rootData   []byte // the caller's root area's bytes
}

// newCorruptSubpages builds the device corruptSubpages describes: the
// slots of class A are allocated parent by parent, then 53 slots of p3
// and 10 of p2 are freed, and Close releases them, pushing p3 and then p2
// onto the list.
func newCorruptSubpages(t *testing.T) *corruptSubpages {
	t.Helper()
	opts := subpageOptions()
	d, path := createTestDevice(t, opts)
	var classes [3]*Subpages
	h := &corruptSubpages{path: path, opts: opts, g: d.alloc.g, root: d.geometry.root,
		tableOff: d.geometry.state.off + subpageTableOff}
	for i, size := range corruptSubpageSizes {
		classes[i] = mustSubpages(t, d, int(size))
		h.index[i] = classes[i].index
	}
	a := allocSlots(t, d, classes[0], 3*63)
	h.p1, h.p2, h.p3 = parentOf(a[0]), parentOf(a[63]), parentOf(a[126])
	if parentOf(a[62]) != h.p1 || parentOf(a[125]) != h.p2 || parentOf(a[188]) != h.p3 {
		t.Fatalf("set-up: class A's slots are not in three parents of 63")
	}
	freeSlots(t, d, classes[0], slices.Concat(a[136:189], a[63:73]))
	h.live = append(h.live, a[:53]...)
	h.loose = append(h.loose, a[53:63]...)
	h.loose = append(h.loose, a[73:136]...)
	b := allocSlots(t, d, classes[1], 70) // two parents
	h.live = append(h.live, b[:60]...)
	h.loose = append(h.loose, b[60:]...)
	c := allocSlots(t, d, classes[2], 8)
	h.live = append(h.live, c[:5]...)
	h.loose = append(h.loose, c[5:]...)
	for _, s := range slices.Concat(a[:136], b, c) {
		if p := parentOf(s); !slices.Contains(h.parents, p) {
			h.parents = append(h.parents, p)
		}
	}
	// The root area holds a pattern too: a wild link may point there.
	h.rootData = bytes.Repeat([]byte("rootarea"), int(h.root.size/8))
	if err := d.Update(func(tx *Txn) error { return tx.Write(h.root.off, h.rootData) }); err != nil {
		t.Fatal(err)
	}
	h.caller = allocPages(t, d, 1, 128*subpageSlotsPerParent)[0]
	h.callerData = pattern(h.caller)
	if _, err := d.WriteAt(h.callerData, h.caller.Offset()); err != nil {
		t.Fatal(err)
	}
	for _, s := range h.live {
		if _, err := d.WriteAt(pattern(s), s.Offset()); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	f := readFile(t, path)
	cl := h.class(f, 0)
	p1, p2, p3 := readHeader(f, h.p1), readHeader(f, h.p2), readHeader(f, h.p3)
	if cl.head != h.p2 || p2.next != h.p3 || p3.prev != h.p2 || p3.next != 0 || p1.free() != 0 || cl.pendHead != 0 {
		t.Fatalf("set-up: want class A's list p2 %d, p3 %d with p1 %d full and no queue, found class %+v, headers %+v %+v %+v", h.p2, h.p3, h.p1, cl, p1, p2, p3)
	}
	return h
}

// parentOf returns the offset of the parent holding slot a.
func parentOf(a Addr) int64 { return a.Offset() &^ (a.Size()*subpageSlotsPerParent - 1) }

// entry returns the offset of class i's (A, B or C) class table entry.
func (h *corruptSubpages) entry(i int) int64 {
	return h.tableOff + int64(h.index[i])*subpageClassBytes
}

// class decodes class i's entry in the file's bytes b.
func (h *corruptSubpages) class(b []byte, i int) subpageClass {
	return decodeSubpageClass(b[h.entry(i):])
}

// readHeader decodes the parent header at p in the file's bytes b.
func readHeader(b []byte, p int64) subpageHeader {
	var hd subpageHeader
	hd.decode(b[p : p+subpageHeaderBytes])
	return hd
}

func writeHeader(b []byte, p int64, hd subpageHeader) {
	var e [subpageHeaderBytes]byte
	hd.encodeTo(&e)
	copy(b[p:], e[:])
}

// header is a header of class A with only its header slot and slot 1
// allocated, and the rest free: what a parent of the class holds.
func (h *corruptSubpages) header() subpageHeader {
	return subpageHeader{magic: subpageMagic, class: h.index[0], slotShift: 7, mask: subpageEmptyMask | 2}
}

// forge returns an edit that has the caller's page start with hd: its
// owner's bytes, which it may write.
func (h *corruptSubpages) forge(hd subpageHeader) func([]byte) {
	var e [subpageHeaderBytes]byte
	hd.encodeTo(&e)
	copy(h.callerData, e[:])
	return func(b []byte) { copy(b[h.caller.Offset():], e[:]) }
}

// queue returns an edit that queues the parent p of class A as a Free of
// its loose slot s, stamped stamp, would have, with pendNext next, and
// counts the slot pending in the class; s is no longer the workload's.
// The class table's queue ends are the caller's to set.
func (h *corruptSubpages) queue(p int64, s Addr, stamp uint64, next int64) func([]byte) {
	i := slices.Index(h.loose, s)
	if i < 0 || parentOf(s) != p {
		panic("queue: not a loose slot of the parent")
	}
	h.loose = slices.Delete(h.loose, i, i+1)
	bit := uint64(1) << ((s.Offset() - p) >> 7)
	e := h.entry(0)
	return func(b []byte) {
		hd := readHeader(b, p)
		hd.mask &^= bit
		hd.pend |= bit
		hd.flags |= subpageFlagQueued
		hd.pendSeq = stamp
		hd.pendNext = next
		writeHeader(b, p, hd)
		c := decodeSubpageClass(b[e:])
		binary.LittleEndian.PutUint64(b[e+subpageClassUsedOff:], uint64(c.used-1))
		binary.LittleEndian.PutUint64(b[e+subpageClassPendingOff:], uint64(c.pending+1))
	}
}

// queueEnds returns an edit that sets class A's pending queue head and
// tail.
func (h *corruptSubpages) queueEnds(head, tail int64) func([]byte) {
	return edits(putU64(h.entry(0)+subpageClassPendHeadOff, uint64(head)), putU64(h.entry(0)+subpageClassPendTailOff, uint64(tail)))
}

// pin keeps the workload from freeing the loose slots of p, so that no Free
// rewrites p's header over a case's damage.
func (h *corruptSubpages) pin(p int64) {
	h.loose = slices.DeleteFunc(h.loose, func(a Addr) bool {
		if parentOf(a) == p {
			h.pinned = append(h.pinned, a)
			return true
		}
		return false
	})
}

// looseIn returns the i-th loose slot in parent p.
func (h *corruptSubpages) looseIn(p int64, i int) Addr {
	for _, s := range h.loose {
		if parentOf(s) == p {
			if i == 0 {
				return s
			}
			i--
		}
	}
	panic("looseIn: no such slot")
}

func edits(es ...func([]byte)) func([]byte) {
	return func(b []byte) {
		for _, e := range es {
			e(b)
		}
	}
}

// TestSubpageCorruptLinks corrupts a link of class A's partial list or
// pending queue (in the class table or a parent's header), a mask's header
// bit or a stamp in a closed device, often pointing it at a caller's page
// that holds a copy of a parent header, then runs sub-page allocations and
// frees in three classes, waiting for checkpoints so that frees are
// released, and Close, which drains the queues. The allocator follows
// these links at use time, past Open's checks: each corruption must come
// back as ErrCorrupt from Check (and from an Alloc or Free where the case
// says the workload meets it), and none may make Alloc hand out a slot
// outside a parent, a live slot or one twice, write into a live slot or
// the caller's page, free the caller's page, panic, fail Close, or commit
// a state Open then refuses.
func TestSubpageCorruptLinks(t *testing.T) {
	if invariantsEnabled {
		// That build checks the whole device after every commit and
		// panics at the first on a corrupt one, by design
		// (TestInvariantsStopCorruptCommit): there is no workload to run.
		t.Skip("the invariants build panics at the first commit on a corrupt device")
	}
	seed := testSeed(t, "subpage.seed", *subpageSeed)
	head := func(h *corruptSubpages, v int64) func([]byte) {
		return putU64(h.entry(0)+subpageClassHeadOff, uint64(v))
	}
	cases := []struct {
		name string
		edit func(h *corruptSubpages) func([]byte)
		// The workload must meet the corruption: an Alloc or a Free
		// returns ErrCorrupt.
		wantOpErr bool
	}{
		// The class table's list head, which Alloc takes a slot from.
		{"head misaligned", func(h *corruptSubpages) func([]byte) { return head(h, h.p2+8) }, true},
		{"head at a caller page holding a header", func(h *corruptSubpages) func([]byte) {
			return edits(h.forge(h.header()), head(h, h.caller.Offset()))
		}, true},
		{"head huge", func(h *corruptSubpages) func([]byte) { return head(h, 1<<62) }, true},
		{"head negative", func(h *corruptSubpages) func([]byte) { return head(h, -4096) }, true},
		{"head at the root area", func(h *corruptSubpages) func([]byte) { return head(h, h.root.off) }, true},
		{"head at a full parent", func(h *corruptSubpages) func([]byte) { return head(h, h.p1) }, true},
		// The next link of a parent on the list: Alloc follows it when
		// the parent fills (p2 after 10 slots, p3 after 53 more).
		{"next wild", func(h *corruptSubpages) func([]byte) {
			return putU64(h.p2+subpageNextOff, uint64(h.caller.Offset()+64))
		}, true},
		{"next at a caller page holding a header", func(h *corruptSubpages) func([]byte) {
			hd := h.header()
			hd.prev = h.p2 // links back: only the parent bit tells
			return edits(h.forge(hd), putU64(h.p2+subpageNextOff, uint64(h.caller.Offset())))
		}, true},
		{"next past the file", func(h *corruptSubpages) func([]byte) { return putU64(h.p2+subpageNextOff, 1<<62) }, true},
		// The pending queue's tail, which a Free links its parent to.
		{"queue tail wild", func(h *corruptSubpages) func([]byte) { return h.queueEnds(0, h.root.off) }, true},
		{"queue tail at a caller page holding a header", func(h *corruptSubpages) func([]byte) {
			hd := h.header()
			hd.flags, hd.pend, hd.pendSeq = subpageFlagQueued, 4, 1
			return edits(h.forge(hd), h.queueEnds(0, h.caller.Offset()))
		}, true},
		{"queue tail past the file", func(h *corruptSubpages) func([]byte) { return h.queueEnds(0, 1<<62) }, true},
		{"queue tail negative", func(h *corruptSubpages) func([]byte) { return h.queueEnds(0, -1<<40) }, true},
		// A queued parent's pendNext at the caller's page, which holds
		// the header of an empty queued parent: released, it would go
		// back to the buddy allocator.
		{"pendNext at a caller page holding an empty queued header", func(h *corruptSubpages) func([]byte) {
			hd := h.header()
			hd.mask, hd.pend, hd.flags, hd.pendSeq = subpageEmptyMask, 2, subpageFlagQueued, 1
			return edits(h.forge(hd), h.queue(h.p1, h.looseIn(h.p1, 0), 1, h.caller.Offset()), h.queueEnds(h.p1, h.caller.Offset()))
		}, true},
		{"queue head misaligned", func(h *corruptSubpages) func([]byte) {
			return edits(h.queue(h.p1, h.looseIn(h.p1, 0), 1, 0), h.queueEnds(h.p1+8, h.p1+8))
		}, true},
		// A queued parent's pendNext cut to 0 short of the tail: the
		// parents after it would leave the queue unreleased, and the
		// queue's head go to 0 with its tail set.
		{"pendNext 0 before the tail", func(h *corruptSubpages) func([]byte) {
			return edits(h.queue(h.p1, h.looseIn(h.p1, 0), 1, 0), h.queue(h.p2, h.looseIn(h.p2, 0), 1, 0), h.queueEnds(h.p1, h.p2))
		}, true},
		// List links detach writes through when p2 or p3 empties.
		{"prev wild", func(h *corruptSubpages) func([]byte) {
			return putU64(h.p2+subpagePrevOff, uint64(h.caller.Offset()+64-subpageNextOff))
		}, true},
		{"last parent's next at a caller page holding a header", func(h *corruptSubpages) func([]byte) {
			hd := h.header()
			hd.prev = h.p3
			return edits(h.forge(hd), putU64(h.p3+subpageNextOff, uint64(h.caller.Offset())))
		}, true},
		// A full parent regains free slots and is pushed onto the list
		// through its head: p1, once a checkpoint covers the frees of
		// its loose slots. (p2 and p3 stay, so that no release of theirs
		// sets the head first.)
		{"push through a wild head", func(h *corruptSubpages) func([]byte) {
			h.pin(h.p2)
			h.pin(h.p3)
			return head(h, h.caller.Offset()+64-subpagePrevOff)
		}, true},
		{"push through a head at a caller page holding a header", func(h *corruptSubpages) func([]byte) {
			h.pin(h.p2)
			h.pin(h.p3)
			return edits(h.forge(h.header()), head(h, h.caller.Offset()))
		}, true},
		// Links left on a full parent, which is on no list: not a state
		// any transaction leaves. They would be harmless (pushing p1 back
		// sets both), so p1 is kept full for Check to see them.
		{"next on a full parent", func(h *corruptSubpages) func([]byte) {
			h.pin(h.p1)
			return putU64(h.p1+subpageNextOff, uint64(h.p2))
		}, false},
		{"prev on a full parent", func(h *corruptSubpages) func([]byte) {
			h.pin(h.p1)
			return putU64(h.p1+subpagePrevOff, uint64(h.p3))
		}, false},
		// The header slot's bit in the allocated mask of the head.
		{"mask bit 0 cleared", func(h *corruptSubpages) func([]byte) {
			return func(b []byte) {
				m := binary.LittleEndian.Uint64(b[h.p2+subpageMaskOff:])
				binary.LittleEndian.PutUint64(b[h.p2+subpageMaskOff:], m&^1)
			}
		}, true},
		// A slot both allocated and pending, stamped by a transaction no
		// checkpoint covers (so no Free into p2 releases it first): the
		// header contradicts itself, and Free of the slot must say so,
		// not blame the caller with ErrInvalidFree (a double free).
		{"pending bit on an allocated slot", func(h *corruptSubpages) func([]byte) {
			s := h.looseIn(h.p2, 0)
			return edits(putU64(h.p2+subpagePendOff, 1<<((s.Offset()-h.p2)>>7)), putU64(h.p2+subpagePendSeqOff, 1<<61))
		}, true},
		// The buddy allocator's pending queue, ending at a parent: an
		// emptied parent released to the buddy allocator meets it, and
		// must stay a parent rather than leak.
		{"buddy queue ends at a parent", func(h *corruptSubpages) func([]byte) {
			state := h.tableOff - subpageTableOff
			return edits(putU64(state+statePendingHeadOff, uint64(h.p1)), putU64(state+statePendingTailOff, uint64(h.p1)))
		}, false},
		// A queued parent stamped by a transaction far in the future
		// would hold the queue up for ever.
		{"pendSeq stamp 2^62", func(h *corruptSubpages) func([]byte) {
			defer h.pin(h.p1) // a Free into p1 would stamp it anew
			return edits(h.queue(h.p1, h.looseIn(h.p1, 0), 1<<62, 0), h.queueEnds(h.p1, h.p1))
		}, true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newCorruptSubpages(t)
			edit := c.edit(h)
			path := corruptCopy(t, h.path, func(b []byte) []byte { edit(b); return b })
			damageCase(t, h, path, rand.New(rand.NewPCG(seed, uint64(i))), c.wantOpErr)
		})
	}
}

// TestSubpageCheckFindsClassAndParentDamage damages a closed device's
// sub-page state in ways Open takes and Check must name: a class table
// entry with another class's slot size, or with a slot size that is no
// power of two (which Inspect must leave out of its classes, and not
// panic on); and a parent bit set over the caller's page holding the
// header of a class whose parents are half its size. Opened read-only,
// the file must stay as it was.
func TestSubpageCheckFindsClassAndParentDamage(t *testing.T) {
	h := newCorruptSubpages(t)
	b := readFile(t, h.path)
	slotB := h.entry(1) + subpageClassSlotOff
	classB := h.class(b, 1)
	for _, c := range []struct {
		name string
		edit func([]byte)
		want string
	}{
		{"two classes of one slot size", putU64(slotB, uint64(corruptSubpageSizes[0])),
			fmt.Sprintf("corrupt sub-page class table at offset %d: expected one class per slot size, found %d in classes %d and %d", h.entry(1), corruptSubpageSizes[0], h.index[0], h.index[1])},
		{"slot size not a power of two", putU64(slotB, 100),
			fmt.Sprintf("corrupt sub-page class table at offset %d: expected entry %d: a power-of-two slot size", h.entry(1), h.index[1])},
		{"parent bit over a page twice the parent's size", func(b []byte) {
			hd := h.header()
			hd.class, hd.slotShift = h.index[1], uint(bits.TrailingZeros64(uint64(classB.slotBytes)))
			writeHeader(b, h.caller.Offset(), hd)
			w, bit := h.g.parentBitPos(h.caller.Offset())
			binary.LittleEndian.PutUint64(b[w:], binary.LittleEndian.Uint64(b[w:])|1<<bit)
		}, fmt.Sprintf("corrupt sub-page parent at offset %d: expected an allocated page of %d bytes under the parent bit", h.caller.Offset(), classB.slotBytes*subpageSlotsPerParent)},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := corruptCopy(t, h.path, func(b []byte) []byte { c.edit(b); return b })
			before := readFile(t, p)
			d, err := Open(p, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Check: %v; want ErrCorrupt naming %q", err, c.want)
			}
			in, err := d.Inspect()
			if err != nil {
				t.Fatal(err)
			}
			// Inspect lists the classes whose slot size is one.
			var listed, valid []int
			for _, sc := range in.SubpageClasses {
				listed = append(listed, sc.Index)
			}
			for i := range h.index {
				if validPageSize(h.class(before, i).slotBytes) {
					valid = append(valid, h.index[i])
				}
			}
			if !slices.Equal(listed, valid) {
				t.Errorf("Inspect lists classes %v, want those of a power-of-two slot size, %v", listed, valid)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, readFile(t, p)) {
				t.Error("a read-only device changed the file")
			}
		})
	}
}

// checkParents fails if a page that was a parent of the fixture's is
// allocated in the buddy allocator but no longer a parent: a leak.
func (h *corruptSubpages) checkParents(t *testing.T, d *Device) {
	t.Helper()
	for _, a := range slices.Concat(h.live, h.loose, h.pinned) {
		p, size := parentOf(a), a.Size()*subpageSlotsPerParent
		order := bits.TrailingZeros64(uint64(size)) - int(h.g.minShift)
		if !d.subpageParentAt(nil, p, size) && d.committedPageState(&h.g, order, p) == stateAllocated {
			t.Fatalf("parent %d is allocated and no longer a parent: leaked", p)
		}
	}
}

// churn runs transactions of sub-page allocations and frees in the three
// classes: the first allocates 80 slots of class A (filling p2 and p3)
// and then frees every slot it holds, loose ones included (emptying p2
// and p3); the next allocate 8 slots of random classes each and free down
// to 64 held; the last frees all. Each waits for a checkpoint to cover
// it, so that the next releases its frees. Every slot Alloc returns must
// be a slot, not a header, of a committed parent of its class, and
// overlap neither a live slot, the caller's page nor another slot held.
// It returns the first ErrCorrupt an Alloc or Free returned; any other
// error fails the test. A Free that fails may have freed its slot before
// it met the damage: the committed header says.
func (h *corruptSubpages) churn(t *testing.T, d *Device, rng *rand.Rand) error {
	t.Helper()
	var classes [3]*Subpages
	for i, size := range corruptSubpageSizes {
		classes[i] = mustSubpages(t, d, int(size))
		if classes[i].index != h.index[i] {
			t.Fatalf("class of %d-byte slots at entry %d, want %d", size, classes[i].index, h.index[i])
		}
	}
	classOf := func(a Addr) *Subpages { return classes[slices.Index(corruptSubpageSizes[:], a.Size())] }
	owner := map[int64]Addr{} // every 64 bytes of a slot or page held, and its holder
	hold := func(a Addr) {
		for off := a.Offset(); off < a.Offset()+a.Size(); off += 1 << subpageMinSlotShift {
			if o, ok := owner[off]; ok {
				t.Fatalf("Alloc returned %v, which overlaps %v", a, o)
			}
			owner[off] = a
		}
	}
	drop := func(a Addr) {
		for off := a.Offset(); off < a.Offset()+a.Size(); off += 1 << subpageMinSlotShift {
			delete(owner, off)
		}
	}
	// allocated reports whether a is allocated or pending in its committed
	// parent.
	allocated := func(a Addr) bool {
		p := parentOf(a)
		if !d.subpageParentAt(nil, p, a.Size()*subpageSlotsPerParent) {
			return false
		}
		var b [subpageHeaderBytes]byte
		d.readCommittedRange(b[:], p)
		hd := readHeader(b[:], 0)
		bit := uint64(1) << ((a.Offset() - p) / a.Size())
		return hd.magic == subpageMagic && hd.class == classOf(a).index && 1<<hd.slotShift == a.Size() && (hd.mask|hd.pend)&bit != 0
	}
	for _, a := range h.live {
		hold(a)
	}
	for _, a := range slices.Concat(h.loose, h.pinned) {
		hold(a)
	}
	hold(h.caller)
	mine := slices.Clone(h.loose)
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
			t.Fatalf("Alloc or Free: %v, want nil, ErrCorrupt or ErrNoSpace", err)
		}
	}
	const rounds = 30
	for round := range rounds {
		var got, doubt []Addr
		err := d.Update(func(tx *Txn) error {
			n, keep := 8, 64
			switch round {
			case 0:
				n, keep = 80, 0
			case rounds - 1:
				n, keep = 0, 0
			}
			for range n {
				s := classes[rng.IntN(len(classes))]
				if round == 0 {
					s = classes[0]
				}
				a, err := s.Alloc(tx)
				if err != nil {
					note(err)
					continue
				}
				if a.Size() != s.SlotBytes() || a.Offset()&(a.Size()-1) != 0 || a.Offset() == parentOf(a) {
					t.Fatalf("Alloc returned %v, not a slot of %d bytes", a, s.SlotBytes())
				}
				hold(a)
				got = append(got, a)
				mine = append(mine, a)
			}
			rng.Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
			for len(mine) > keep {
				a := mine[len(mine)-1]
				mine = mine[:len(mine)-1]
				if err := classOf(a).Free(tx, a); err != nil {
					note(err)
					doubt = append(doubt, a)
					break
				}
				drop(a)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range got {
			if !allocated(a) {
				t.Fatalf("Alloc returned %v, which is no slot of a parent of its class once committed", a)
			}
		}
		for _, a := range doubt {
			if h.allocatedIn(d, a) {
				mine = append(mine, a)
			} else {
				drop(a)
			}
		}
		coverCommitted(t, d)
	}
	return corrupt
}

// allocatedIn reports whether the slot a is allocated in its committed
// parent's mask.
func (h *corruptSubpages) allocatedIn(d *Device, a Addr) bool {
	var b [subpageHeaderBytes]byte
	d.readCommittedRange(b[:], parentOf(a))
	return readHeader(b[:], 0).mask&(1<<((a.Offset()-parentOf(a))/a.Size())) != 0
}

func (h *corruptSubpages) options() *Options { return h.opts }

// intact fails as checkLive and checkParents do.
func (h *corruptSubpages) intact(t *testing.T, d *Device) {
	t.Helper()
	h.checkLive(t, d)
	h.checkParents(t, d)
}

// checkLive fails if a live slot, the caller's page or the root area does
// not hold the bytes written into it, or the caller's page is no longer
// an allocated page.
func (h *corruptSubpages) checkLive(t *testing.T, d *Device) {
	t.Helper()
	for _, a := range h.live {
		got := make([]byte, a.Size())
		if _, err := d.ReadAt(got, a.Offset()); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, pattern(a)) {
			t.Fatalf("live slot %v was written over", a)
		}
	}
	got := make([]byte, h.caller.Size())
	if _, err := d.ReadAt(got, h.caller.Offset()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, h.callerData) {
		i := 0
		for got[i] == h.callerData[i] {
			i++
		}
		t.Fatalf("the caller's page %v was written over, at +%d: % x, want % x", h.caller, i, got[i:min(i+8, len(got))], h.callerData[i:min(i+8, len(got))])
	}
	root := make([]byte, len(h.rootData))
	if _, err := d.ReadAt(root, h.root.off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(root, h.rootData) {
		t.Fatalf("the root area was written over")
	}
	order := bits.TrailingZeros64(uint64(h.caller.Size())) - int(h.g.minShift)
	if s := d.committedPageState(&h.g, order, h.caller.Offset()); s != stateAllocated || d.subpageParentAt(nil, h.caller.Offset(), h.caller.Size()) {
		t.Fatalf("the caller's page %v is in state %d (want %d, allocated), parent bit %v", h.caller, s, stateAllocated, d.subpageParentAt(nil, h.caller.Offset(), h.caller.Size()))
	}
}

var subpageCorruptRounds = flag.Int("subpagecorrupt.rounds", 250, "corrupted devices in TestSubpageRandomCorruption")

// TestSubpageRandomCorruption is TestSubpageCorruptLinks with random
// damage. Class A's pending queue holds two parents (p1 and p3, each with a
// slot pending), so that its links are there to corrupt. Each round writes
// one to three random values (the parent of a live slot, another parent,
// the caller's page, an aligned heap offset, a misaligned one, zero, any
// word, a negative one) into the words of parents' headers and into the
// class table's list heads, queue ends and pending counters, then runs
// the same workload. A mask word never loses the bit of a slot allocated
// but its header's: the mask is a slot's only record, and nothing can tell
// a cleared bit (TestSubpageCorruptLinks's mask case covers the header's).
// Open may refuse the file with ErrCorrupt; if it opens, nothing the
// workload does may panic, hand out a live slot or one twice, write into a
// live slot or the caller's page, fail the device or Close, or leave a file
// Open refuses.
func TestSubpageRandomCorruption(t *testing.T) {
	if invariantsEnabled {
		t.Skip("the invariants build panics at the first commit on a corrupt device")
	}
	seed := testSeed(t, "subpage.seed", *subpageSeed)
	rng := rand.New(rand.NewPCG(seed, 0))
	h := newCorruptSubpages(t)
	queued := edits(h.queue(h.p1, h.looseIn(h.p1, 0), 1, h.p3), h.queue(h.p3, h.looseIn(h.p3, 0), 1, 0), h.queueEnds(h.p1, h.p3))
	clean := readFile(t, h.path)
	queued(clean)
	{
		path := filepath.Join(t.TempDir(), "queued")
		if err := os.WriteFile(path, clean, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := Open(path, &Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Check(); err != nil {
			t.Fatalf("set-up: the queued device: %v", err)
		}
		d.Close()
	}
	// Slots allocated in each parent: a mask keeps them.
	held := map[int64]uint64{}
	for _, a := range slices.Concat(h.live, h.loose, h.pinned) {
		held[parentOf(a)] |= 1 << ((a.Offset() - parentOf(a)) / a.Size())
	}
	var liveParents []int64
	for _, a := range h.live {
		if p := parentOf(a); !slices.Contains(liveParents, p) {
			liveParents = append(liveParents, p)
		}
	}
	frontier := int64(len(clean))
	value := func() uint64 {
		switch rng.IntN(8) {
		case 0:
			return uint64(liveParents[rng.IntN(len(liveParents))])
		case 1:
			return uint64(h.parents[rng.IntN(len(h.parents))])
		case 2:
			return uint64(h.caller.Offset())
		case 3:
			return uint64(h.g.heapOff + rng.Int64N(frontier-h.g.heapOff)&^(4<<10-1))
		case 4:
			return uint64(h.parents[rng.IntN(len(h.parents))] + 8*(1+rng.Int64N(8)))
		case 5:
			return 0
		case 6:
			return -uint64(1 + rng.Int64N(1<<40))
		}
		return rng.Uint64()
	}
	var tally damageTally
	for round := range *subpageCorruptRounds {
		b := slices.Clone(clean)
		var what []string
		for range 1 + rng.IntN(3) {
			if rng.IntN(2) == 0 { // a word of a parent's header
				p := h.parents[rng.IntN(len(h.parents))]
				at := p + 8*(1+rng.Int64N(6)) // mask, pend, prev, next, pendNext, pendSeq
				v := value()
				if at == p+subpageMaskOff {
					v |= held[p] | subpageEmptyMask
					if rng.IntN(4) == 0 {
						v &^= subpageEmptyMask
					}
				}
				binary.LittleEndian.PutUint64(b[at:], v)
				what = append(what, fmt.Sprintf("header word %d of parent %d = %#x", at-p, p, v))
			} else { // a class table word
				i := rng.IntN(len(corruptSubpageSizes))
				words := []int64{subpageClassHeadOff, subpageClassPendHeadOff, subpageClassPendTailOff, subpageClassPendingOff}
				at := h.entry(i) + words[rng.IntN(len(words))]
				v := value()
				binary.LittleEndian.PutUint64(b[at:], v)
				what = append(what, fmt.Sprintf("class %d word %d = %#x", i, at-h.entry(i), v))
			}
		}
		tally.add(damageRound(t, h, b, round, what, rand.New(rand.NewPCG(seed, uint64(round)+1))))
	}
	tally.report(t)
}

// TestSubpageFreeDamagedHeader damages, in a closed device, the header of
// a parent of class A (256-byte slots): its magic, its class index, its
// slot size. Free of a live slot there must report the damage, ErrCorrupt
// naming the parent, as Alloc reaching the same header does, and change
// nothing: not ErrInvalidFree, which says the caller's address is wrong
// (with the class index or the slot size damaged, it said the slot lay in
// a parent of another class, "class 0, not 0"; with the magic, Free wrote
// through the header). Free of a class A address at the start of class
// B's (512-byte slots) parent stays ErrInvalidFree.
func TestSubpageFreeDamagedHeader(t *testing.T) {
	d, path := createTestDevice(t, subpageOptions())
	a, b := mustSubpages(t, d, 256), mustSubpages(t, d, 512)
	slots := allocSlots(t, d, a, 3)
	other := allocSlots(t, d, b, 1)[0]
	p := parentOf(slots[0])
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		at   int64
		v    byte
	}{
		{"magic", p, 0},
		{"class index", p + subpageClassOff, 5},
		{"slot size", p + subpageShiftOff, 9},
	} {
		d, err := Open(corruptCopy(t, path, func(f []byte) []byte { f[c.at] = c.v; return f }), subpageOptions())
		if err != nil {
			t.Fatal(err)
		}
		a := mustSubpages(t, d, 256)
		before := a.Stats()
		err = d.Update(func(tx *Txn) error { return a.Free(tx, slots[1]) })
		want := fmt.Sprintf("corrupt sub-page class %d parent at offset %d", a.index, p)
		if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrInvalidFree) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s damaged: Free of a live slot: %v; want ErrCorrupt naming %q", c.name, err, want)
		}
		if after := a.Stats(); after != before {
			t.Errorf("%s damaged: the refused Free changed the class: %+v, before %+v", c.name, after, before)
		}
		if _, err := allocIn(d, a); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s damaged: Alloc: %v; want ErrCorrupt", c.name, err)
		}
		inB := Addr(other.Offset()&^(512*subpageSlotsPerParent-1)+256) | 8
		if err := d.Update(func(tx *Txn) error { return a.Free(tx, inB) }); !errors.Is(err, ErrInvalidFree) || errors.Is(err, ErrCorrupt) {
			t.Errorf("%s damaged: Free of %v, in class B's parent: %v; want ErrInvalidFree", c.name, inB, err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// allocIn allocates one slot of s in a transaction of its own.
func allocIn(d *Device, s *Subpages) (a Addr, err error) {
	err = d.Update(func(tx *Txn) (err error) { a, err = s.Alloc(tx); return err })
	return a, err
}
