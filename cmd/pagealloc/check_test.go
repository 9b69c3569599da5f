package main

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/pagealloc/pagealloc"
)

// TestCheck damages copies of devices in the ways the format can be
// damaged and expects check to exit 1 naming the damaged offset; a clean
// device, and the states a crash legally leaves, exit 0.
func TestCheck(t *testing.T) {
	fixture := fixtureDevice(t)
	in := inspect(t, fixture)
	crashed := crashCopy(t)
	crashedIn := inspect(t, crashed)
	records := crashedIn.JournalState.Records
	// The copy the crash copy uses, which its journal's records follow.
	inUse := 0
	if crashedIn.Superblocks[1].InUse {
		inUse = 1
	}
	if len(records) != 4 {
		t.Fatalf("crash copy has %d journal records, want 4", len(records))
	}

	// A free page with a free page before it on its list.
	var second, first int64
	for _, fl := range in.FreeLists {
		if len(fl.First) >= 2 {
			first, second = fl.First[0], fl.First[1]
			break
		}
	}
	if second == 0 {
		t.Fatalf("the fixture has no free list of two pages: %+v", in.FreeLists)
	}
	// An order-0 free page.
	if in.FreeLists[0].Pages == 0 {
		t.Fatal("the fixture has no free page of order 0")
	}
	free0 := in.FreeLists[0].Head
	bitmapWord, freeBit := freeBitOf(in, free0)
	// The first log entry's frame header lies 24 bytes before its payload.
	entryOff := firstLogEntry(t, fixture) - 24

	cases := []struct {
		name   string
		path   string
		edit   func(b []byte)
		code   int
		output []string // each must appear in stdout
	}{
		{"clean", fixture, nil, 0, []string{"OK"}},
		{"free-list back link", fixture, func(b []byte) { b[second+1] ^= 0x10 }, 1,
			[]string{fmt.Sprintf("corrupt free list %d at offset %d: expected a back link to %d", orderOf(in, second), second, first)}},
		// The walk follows the bad link to whatever page it now names,
		// so which offsets are reported depends on the layout.
		{"free-list next link", fixture, func(b []byte) { b[first+8+1] ^= 0x10 }, 1,
			[]string{"corrupt free list"}},
		{"state bit", fixture, func(b []byte) { flipBit(b, bitmapWord, freeBit) }, 1,
			[]string{fmt.Sprintf("corrupt free list 0 at offset %d: expected only pages whose free bit is set", free0),
				fmt.Sprintf("corrupt heap at offset %d", free0)}},
		{"log entry payload", fixture, func(b []byte) { b[entryOff+24+10] ^= 1 }, 1,
			[]string{fmt.Sprintf(`log "wal": pagealloc: corrupt log entry at offset %d`, entryOff)}},
		{"crashed, journal intact", crashed, nil, 0, []string{"OK"}},
		{"journal record followed by a valid one", crashed, func(b []byte) { b[records[1].Offset+records[1].Bytes-3] ^= 0xff }, 1,
			[]string{fmt.Sprintf("corrupt journal record at offset %d", records[1].Offset)}},
		{"journal record header", crashed, func(b []byte) { b[records[2].Offset+10] ^= 1 }, 1,
			[]string{fmt.Sprintf("corrupt journal record at offset %d", records[2].Offset)}},
		{"torn last journal record", crashed, func(b []byte) { b[records[3].Offset+records[3].Bytes-3] ^= 0xff }, 0,
			[]string{fmt.Sprintf("note: the journal record at offset %d is torn", records[3].Offset), "OK"}},
		{"one superblock copy", fixture, func(b []byte) { b[4096+70] ^= 1 }, 0,
			[]string{"note: superblock B does not verify", "OK"}},
		{"both superblock copies", fixture, func(b []byte) { b[70] ^= 1; b[4096+70] ^= 1 }, 1,
			[]string{"corrupt superblock at offset 0", "corrupt superblock at offset 4096"}},
		// Records stamped after the copy's checkpoint follow it: damage
		// since, not a crash during its write.
		{"the newest superblock copy, records after it", crashed, func(b []byte) { b[4096*inUse+70] ^= 1 }, 1,
			[]string{fmt.Sprintf("superblock %c does not verify", 'A'+inUse), "the copy was damaged since"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.path
			if c.edit != nil {
				path = damagedCopy(t, c.path, c.edit)
			}
			code, stdout, stderr := runUnchanged(t, "check", path)
			t.Logf("exit %d:\n%s", code, stdout)
			if code != c.code {
				t.Errorf("exit %d, want %d; stdout:\n%s\nstderr: %s", code, c.code, stdout, stderr)
			}
			for _, want := range c.output {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			if c.code == 1 && (strings.Contains(stdout, "OK") || !strings.Contains(stderr, " violation")) {
				t.Errorf("a corrupt device printed OK or no count:\n%s\n%s", stdout, stderr)
			}
			// On stderr the verb names itself; the library's name is
			// left out, on every line of a joined error too.
			for _, line := range strings.Split(stderr, "\n") {
				if strings.HasPrefix(line, "pagealloc: ") {
					t.Errorf("a line begins with the library's name: %q", line)
				}
			}
		})
	}
}

// freeBitOf returns where the free bit of the order-0 page at off lies:
// the word of the first block's order-0 state bits holding it and its
// shift (format.go: page i at bits 2i and 2i+1 of word i/32, order 0
// first).
func freeBitOf(in *pagealloc.Inspection, off int64) (wordOff int64, shift uint) {
	page := (off - in.HeapOffset) / in.MinPageSize
	return in.HeapOffset + page/32*8, uint(page % 32 * 2)
}

func flipBit(b []byte, wordOff int64, bit uint) {
	w := binary.LittleEndian.Uint64(b[wordOff:])
	binary.LittleEndian.PutUint64(b[wordOff:], w^1<<bit)
}

// orderOf returns the order of the free list holding the page at off.
func orderOf(in *pagealloc.Inspection, off int64) int {
	for _, fl := range in.FreeLists {
		for _, p := range fl.First {
			if p == off {
				return fl.Order
			}
		}
	}
	return -1
}

// firstLogEntry returns the device offset of the payload of the first
// entry of the log "wal".
func firstLogEntry(t *testing.T, path string) int64 {
	t.Helper()
	d, err := pagealloc.Open(path, &pagealloc.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	l, err := d.Log("wal")
	if err != nil {
		t.Fatal(err)
	}
	for e, err := range l.Entries(0) {
		if err != nil {
			t.Fatal(err)
		}
		return e.Offset
	}
	t.Fatal("the log has no entry")
	return 0
}
