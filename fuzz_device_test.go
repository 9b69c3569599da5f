package pagealloc

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"testing"
	"time"
)

// A device damage input is a sequence of patches, each of patchBytes
// bytes; bytes past the last whole patch, or past maxPatches of them, are
// ignored:
//
//	0  1  place and value: the low four bits pick the kind of place
//	      (systemImage.damageAt, modulo its kinds), the high four the kind
//	      of value (modulo pointerKinds+1: a pointer of that kind, or the
//	      value as it is)
//	1  4  which word of that kind of place, the choices of damageAt
//	      taken in turn from it as the digits of a mixed-radix number
//	5  8  the value; for a pointer, the choices of systemImage.pointer
//	      taken from it in the same way
const (
	patchBytes = 13
	maxPatches = 8
)

// digits returns a pick for damageAt and pointer that takes its choices
// from x: the first choice of n is x mod n, the next comes from x / n.
func digits(x uint64) func(n int64) int64 {
	return func(n int64) int64 {
		d := int64(x % uint64(n))
		x /= uint64(n)
		return d
	}
}

// encodePatch is one patch of a device damage input.
func encodePatch(place, kind int, word uint32, v uint64) []byte {
	b := make([]byte, patchBytes)
	b[0] = byte(kind<<4 | place)
	binary.LittleEndian.PutUint32(b[1:], word)
	binary.LittleEndian.PutUint64(b[5:], v)
	return b
}

// damage writes the patches of data into a copy of im's device and
// returns it with a description of each patch.
func (im *systemImage) damage(data []byte) ([]byte, []string) {
	b := slices.Clone(im.clean)
	var what []string
	for i := 0; i+patchBytes <= len(data) && i < maxPatches*patchBytes; i += patchBytes {
		p := data[i : i+patchBytes]
		at := im.damageAt(int(p[0]&0x0f)%im.damageKinds(), digits(uint64(binary.LittleEndian.Uint32(p[1:]))))
		v := binary.LittleEndian.Uint64(p[5:])
		if k := int(p[0]>>4) % (pointerKinds + 1); k < pointerKinds {
			v = im.pointer(k, digits(v))
		}
		if at+8 > int64(len(b)) {
			continue
		}
		binary.LittleEndian.PutUint64(b[at:], v)
		what = append(what, fmt.Sprintf("%d=%#x", at, v))
	}
	return b, what
}

// FuzzDeviceDamage is the coverage-guided form of
// TestSystemRandomCorruption: the fuzzer chooses the words written into
// the device (see patchBytes) and, through a generator seeded from its
// input, the sizes the driver allocates, and every call must still return
// nil or one of the package's errors, never panic or hang.
func FuzzDeviceDamage(f *testing.F) {
	if invariantsEnabled {
		f.Skip("the invariants build panics at the first commit on a corrupt device")
	}
	im := buildSystemImage(f, rand.New(rand.NewPCG(1, 0)))
	// The kinds of place (systemImage.targets in their order, then pages
	// and parents) and of value (pointer's kinds, then raw).
	const (
		state, logs, meta, fixedRing, carvedRing, page, parent = 0, 1, 2, 3, 4, 5, 6
		toPage, toParent, toHeap, raw                          = 0, 1, 2, 3
	)
	// Word w of parent or page i, the choices in damageAt's order.
	parentWord := func(i, w int) uint32 { return uint32(i + len(im.parents)*w) }
	pageWord := func(i, w int) uint32 { return uint32(i + len(im.pages)*w) }
	const classTable, carvedTable = subpageTableOff / 8, carvedLogTableOff / 8 // in words
	seeds := [][][]byte{
		{}, // the clean device
		{encodePatch(state, toPage, stateOrdersOff/8, 30)},       // an allocated page at the head of free list 0
		{encodePatch(state, toParent, statePendingHeadOff/8, 2)}, // a parent at the head of the pending queue
		{encodePatch(state, toPage, classTable+1, 40)},           // a page as the first class's partial list head
		{encodePatch(state, toParent, classTable+4, 1)},          // a parent as the first class's pending head
		{encodePatch(state, raw, carvedTable+6, 1<<20)},          // the carved log's head past its tail
		{encodePatch(parent, toParent, parentWord(0, 4), 3)},     // a parent's next on the partial list
		{encodePatch(parent, raw, parentWord(1, 1), 0)},          // a parent without its allocated mask
		{encodePatch(page, toPage, pageWord(3, 0), 5)},           // the first word of a freed page
		{encodePatch(meta, toHeap, 0, 12345), encodePatch(meta, raw, 1, ^uint64(0))},
		{
			encodePatch(logs, raw, 15, 0xff), // the fixed log's tail
			encodePatch(fixedRing, raw, 0, 0x0123456789abcdef),
		},
		{encodePatch(carvedRing, toHeap, 3, 999)},
		{
			encodePatch(state, toParent, statePendingTailOff/8, 5),
			encodePatch(parent, toPage, parentWord(4, 5), 50),
			encodePatch(page, toParent, pageWord(40, 1), 7),
			encodePatch(state, raw, stateFrontierOff/8, 0),
		},
	}
	for _, s := range seeds {
		f.Add(slices.Concat(s...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, what := im.damage(data)
		t.Logf("damage %v", what)
		path := filepath.Join(t.TempDir(), "copy")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		h := fnv.New64a()
		h.Write(data)
		// The fuzzer has no limit of its own on one input's time: a
		// device that hangs a call ends the process, which the fuzzer
		// records as a failure with this input.
		hang := time.AfterFunc(2*time.Minute, func() {
			debug.SetTraceback("all")
			panic(fmt.Sprintf("FuzzDeviceDamage: damage %v still running after two minutes", what))
		})
		defer hang.Stop()
		driveSystem(t, path, im, rand.New(rand.NewPCG(h.Sum64(), 0)))
	})
}
