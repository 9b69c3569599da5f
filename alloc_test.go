package pagealloc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"iter"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
	"github.com/pagealloc/pagealloc/internal/storage"
)

// testOptions are small and fast: no fsync, a small journal so that tests
// wrap the ring and checkpoint, and a modest address space.
func testOptions() *Options {
	return &Options{NoSync: true, JournalSize: 64 << 10, MaxSize: testMaxSize, RootSize: 16 << 10}
}

// smallFileOptions are testOptions with pages of at most 64 KiB and a
// MaxSize of 4 MiB: a file small enough to copy whole and damage, several
// of which a 32-bit address space maps at once.
func smallFileOptions() *Options {
	return &Options{NoSync: true, MaxPageSize: 64 << 10, MaxSize: 4 << 20, JournalSize: 64 << 10, RootSize: 16 << 10}
}

// testMaxSize is testOptions' MaxSize: 1 GiB, or 256 MiB on 32 bits, where
// the tests that open a copy of a device beside it would otherwise run
// out of address space.
const testMaxSize = min(1<<30, math.MaxInt>>3+1)

// createTestDevice creates a device in a temporary directory and closes it
// when the test ends.
func createTestDevice(t testing.TB, opts *Options) (*Device, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "device")
	d, err := Create(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, path
}

// reopen closes d and opens the device at path again with opts; the
// test's end closes the new one.
func reopen(t testing.TB, d *Device, path string, opts *Options) *Device {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func writeRoot(t *testing.T, d *Device, rel int64, p []byte) {
	t.Helper()
	off, _ := d.Root()
	if err := d.Update(func(tx *Txn) error { return tx.Write(off+rel, p) }); err != nil {
		t.Fatal(err)
	}
}

func readRoot(t *testing.T, d *Device, rel int64, n int) []byte {
	t.Helper()
	off, _ := d.Root()
	p := make([]byte, n)
	if _, err := d.ReadAt(p, off+rel); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCreateWriteReopen(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	writeRoot(t, d, 100, []byte("root pointer"))
	if got := readRoot(t, d, 100, 12); string(got) != "root pointer" {
		t.Fatalf("read back %q", got)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	d, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := readRoot(t, d, 100, 12); string(got) != "root pointer" {
		t.Fatalf("after reopen read %q", got)
	}
	if _, size := d.Root(); size != 16<<10 {
		t.Fatalf("root size %d after reopen, want the size given at Create", size)
	}
}

func TestCreateIsSparse(t *testing.T) {
	if defaultMaxSize < 1<<40 {
		t.Skip("needs a 64-bit platform")
	}
	d, path := createTestDevice(t, &Options{MaxSize: 1 << 40, NoSync: true})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != d.geometry.heapOff {
		t.Fatalf("file is %d bytes, want only the %d bytes of headers", fi.Size(), d.geometry.heapOff)
	}
	if d.capacity != 1<<40 {
		t.Fatalf("capacity %d", d.capacity)
	}
}

func TestTxnSeesOwnWritesAndRollback(t *testing.T) {
	d, _ := createTestDevice(t, testOptions())
	off, _ := d.Root()
	writeRoot(t, d, 0, []byte("committed"))
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Write(off+2, []byte("XY")); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 9)
	if _, err := tx.ReadAt(p, off); err != nil || string(p) != "coXYitted" {
		t.Fatalf("txn read %q, %v", p, err)
	}
	if _, err := d.ReadAt(p, off); err != nil || string(p) != "committed" {
		t.Fatalf("device read %q before commit, %v", p, err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if got := readRoot(t, d, 0, 9); string(got) != "committed" {
		t.Fatalf("after rollback %q", got)
	}
	if err := tx.Commit(); !errors.Is(err, ErrTxDone) {
		t.Fatalf("Commit after Rollback: %v", err)
	}
	// Update rolls back on error and on panic.
	boom := errors.New("boom")
	if err := d.Update(func(tx *Txn) error { tx.Write(off, []byte("lost")); return boom }); err != boom {
		t.Fatalf("Update returned %v", err)
	}
	func() {
		defer func() { recover() }()
		d.Update(func(tx *Txn) error { tx.Write(off, []byte("lost")); panic("inside fn") })
	}()
	if got := readRoot(t, d, 0, 9); string(got) != "committed" {
		t.Fatalf("after failed Updates %q", got)
	}
}

func TestCommitTwiceAndUseAfterClose(t *testing.T) {
	d, _ := createTestDevice(t, testOptions())
	off, _ := d.Root()
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	tx.Write(off, []byte{1})
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); !errors.Is(err, ErrTxDone) {
		t.Fatalf("second Commit: %v", err)
	}
	if err := tx.Write(off, []byte{2}); !errors.Is(err, ErrTxDone) {
		t.Fatalf("Write after Commit: %v", err)
	}
	if err := tx.Rollback(); !errors.Is(err, ErrTxDone) {
		t.Fatalf("Rollback after Commit: %v", err)
	}
	d.Close()
	if _, err := d.Begin(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Begin after Close: %v", err)
	}
	if _, err := d.ReadAt(make([]byte, 1), off); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadAt after Close: %v", err)
	}
	if _, err := d.WriteAt(make([]byte, 1), d.geometry.heapOff); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteAt after Close: %v", err)
	}
	if _, err := d.Slice(off, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Slice after Close: %v", err)
	}
	if err := d.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close: %v", err)
	}
}

func TestWriteBounds(t *testing.T) {
	d, _ := createTestDevice(t, testOptions())
	off, size := d.Root()
	cases := []struct {
		name string
		off  int64
		n    int
		want error
	}{
		{"negative offset", -1, 1, ErrOutOfRange},
		{"past the end of the device", d.capacity, 1, ErrOutOfRange},
		{"superblock", 0, 8, ErrProtected},
		{"journal", d.geometry.journal.off + 100, 8, ErrProtected},
		{"allocator state", d.geometry.state.off, 8, ErrProtected},
		{"straddles the root area's end", off + size - 4, 8, ErrProtected},
	}
	for _, c := range cases {
		before := readAll(t, d)
		err := d.Update(func(tx *Txn) error { return tx.Write(c.off, make([]byte, c.n)) })
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Write returned %v, want %v", c.name, err, c.want)
		}
		if _, err := d.WriteAt(make([]byte, c.n), c.off); !errors.Is(err, c.want) {
			t.Errorf("%s: WriteAt returned %v, want %v", c.name, err, c.want)
		}
		if !bytes.Equal(before, readAll(t, d)) {
			t.Errorf("%s: a refused write changed the device", c.name)
		}
	}
	if _, err := d.WriteAt([]byte{1}, off); !errors.Is(err, ErrProtected) {
		t.Errorf("unjournaled write into the root area: %v", err)
	}
}

// readAll returns the device's committed bytes below its heap.
func readAll(t *testing.T, d *Device) []byte {
	t.Helper()
	p := make([]byte, d.geometry.heapOff)
	if _, err := d.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

// corruptCopy writes a copy of the device file at src, changed by edit,
// and returns its path.
func corruptCopy(t *testing.T, src string, edit func(b []byte) []byte) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.WriteFile(dst, edit(b), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// rewriteSuperblock decodes the copy at slot, lets edit change it, and
// encodes it back with a valid checksum.
func rewriteSuperblock(b []byte, slot uint64, edit func(sb *superblock)) {
	off := superblockOffset(slot)
	sb, err := decodeSuperblock(b[off:], off)
	if err != nil {
		panic(err)
	}
	edit(&sb)
	sb.encode(b[off:])
}

// putState returns an edit that overwrites the allocator state's word at
// off within the region with v.
func putState(d *Device, off int64, v uint64) func([]byte) []byte {
	at := d.geometry.state.off + off
	return func(b []byte) []byte {
		binary.LittleEndian.PutUint64(b[at:], v)
		return b
	}
}

// shiftRegions grows sb's root area by n bytes and moves the regions after
// it along, as a forged superblock whose checksum matches would.
func shiftRegions(sb *superblock, n int64) {
	sb.root.size += n
	sb.journal.off = sb.root.end()
	sb.state.off = sb.journal.end()
	sb.logs.off = sb.state.end()
}

func TestOpenBadFiles(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	writeRoot(t, d, 0, []byte("survives"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	flip := func(off int) func([]byte) []byte {
		return func(b []byte) []byte { b[off] ^= 0x40; return b }
	}
	cases := []struct {
		name string
		edit func([]byte) []byte
		want error // nil: must open and hold the committed state
	}{
		{"empty file", func(b []byte) []byte { return nil }, ErrCorrupt},
		{"truncated header", func(b []byte) []byte { return b[:5000] }, ErrCorrupt},
		{"truncated before the heap", func(b []byte) []byte { return b[:len(b)-4096] }, ErrCorrupt},
		{"wrong magic in both copies", func(b []byte) []byte { b[0], b[superblockSlotBytes] = 'X', 'X'; return b }, ErrCorrupt},
		{"both superblocks corrupt", func(b []byte) []byte { b[60] ^= 1; b[superblockSlotBytes+60] ^= 1; return b }, ErrCorrupt},
		{"newer format version", func(b []byte) []byte {
			for slot := uint64(0); slot < 2; slot++ {
				rewriteSuperblock(b, slot, func(sb *superblock) { sb.version = formatVersion + 1 })
			}
			return b
		}, ErrVersion},
		{"impossible geometry", func(b []byte) []byte {
			for slot := uint64(0); slot < 2; slot++ {
				rewriteSuperblock(b, slot, func(sb *superblock) { sb.minPage = 3000 })
			}
			return b
		}, ErrCorrupt},
		{"root area size overflowing", func(b []byte) []byte {
			for slot := uint64(0); slot < 2; slot++ {
				rewriteSuperblock(b, slot, func(sb *superblock) { shiftRegions(sb, 1<<63-4096-sb.root.size) })
			}
			return b
		}, ErrCorrupt},
		{"journal size overflowing", func(b []byte) []byte {
			for slot := uint64(0); slot < 2; slot++ {
				rewriteSuperblock(b, slot, func(sb *superblock) {
					sb.journal.size = 1<<63 - 8192 - sb.root.size
					sb.state.off = sb.journal.end()
					sb.logs.off = sb.state.end()
				})
			}
			return b
		}, ErrCorrupt},
		{"negative pending tail", putState(d, statePendingTailOff, 1<<63), ErrCorrupt},
		{"pending head without a tail", putState(d, statePendingHeadOff, uint64(d.geometry.heapOff)), ErrCorrupt},
		{"negative frontier", putState(d, stateFrontierOff, 1<<63), ErrCorrupt},
		{"frontier below the heap", putState(d, stateFrontierOff, 4096), ErrCorrupt},
		{"frontier off the max-page grid", putState(d, stateFrontierOff, uint64(d.alloc.last.frontier+4096)), ErrCorrupt},
		{"free list head outside the heap", putState(d, stateOrdersOff, uint64(d.geometry.state.off)), ErrCorrupt},
		{"superblock A corrupt", flip(70), nil},
		{"superblock B corrupt", flip(superblockSlotBytes + 70), nil},
		{"journal garbage", func(b []byte) []byte {
			for i := range 4096 {
				b[int(d.geometry.journal.off)+i] = byte(i * 7)
			}
			return b
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := corruptCopy(t, path, c.edit)
			before, _ := os.ReadFile(p)
			d, err := Open(p, &Options{NoSync: true})
			if c.want == nil {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if got := readRoot(t, d, 0, 8); string(got) != "survives" {
					t.Fatalf("root holds %q", got)
				}
				d.Close()
				return
			}
			if err == nil {
				d.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Open returned %v, want %v", err, c.want)
			}
			var ce *CorruptError
			if c.want == ErrCorrupt && !errors.As(err, &ce) {
				t.Fatalf("%v carries no *CorruptError", err)
			}
			after, _ := os.ReadFile(p)
			if !bytes.Equal(before, after) {
				t.Fatal("a failed Open changed the file")
			}
		})
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing"), nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Create(path, nil); !errors.Is(err, ErrExists) {
		t.Errorf("Create over an existing file: %v", err)
	}
	if _, err := Create(filepath.Join(t.TempDir(), "x"), &Options{MinPageSize: 100}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Create with a bad option: %v", err)
	}
}

// TestCreateRefusesPageSizes gives Create page sizes out of range, alone
// or against the other's default: each is refused with
// ErrInvalidArgument, the message naming the option at fault and the
// bounds it missed, and no file is left.
func TestCreateRefusesPageSizes(t *testing.T) {
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{MinPageSize: 100}, "MinPageSize 100 is not a power of two in [512, 1 GiB]"},
		{Options{MinPageSize: 256}, "MinPageSize 256 is not a power of two in [512, 1 GiB]"},
		{Options{MinPageSize: 2 << 30}, "MinPageSize 2147483648 is not a power of two in [512, 1 GiB]"},
		{Options{MaxPageSize: 1024}, "MaxPageSize 1024 is not a power of two in [MinPageSize 4096, 1 GiB]"},
		{Options{MinPageSize: 64 << 10, MaxPageSize: 32 << 10}, "MaxPageSize 32768 is not a power of two in [MinPageSize 65536, 1 GiB]"},
		{Options{MaxPageSize: 3000}, "MaxPageSize 3000 is not a power of two"},
		{Options{MaxPageSize: 2 << 30}, "MaxPageSize 2147483648 is not a power of two in [MinPageSize 4096, 1 GiB]"},
	} {
		path := filepath.Join(t.TempDir(), "x")
		d, err := Create(path, &c.opts)
		if err == nil {
			d.Close()
		}
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Create with MinPageSize %d, MaxPageSize %d: %v; want ErrInvalidArgument saying %q", c.opts.MinPageSize, c.opts.MaxPageSize, err, c.want)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Create with MinPageSize %d, MaxPageSize %d, refused, left a file (stat: %v)", c.opts.MinPageSize, c.opts.MaxPageSize, err)
		}
	}
}

// TestCreateRefusesRegionSizes gives Create a journal or root area size
// that is no multiple of 4 KiB or out of range, or a negative growth step:
// each is refused with ErrInvalidArgument, the message naming the option
// at fault and what it must be, and no file is left.
func TestCreateRefusesRegionSizes(t *testing.T) {
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{JournalSize: 60 << 10}, "JournalSize 61440 is not a multiple of 4 KiB >= 64 KiB"},
		{Options{JournalSize: 64<<10 + 512}, "JournalSize 66048 is not a multiple of 4 KiB >= 64 KiB"},
		{Options{JournalSize: -(64 << 10)}, "JournalSize -65536 is not a multiple of 4 KiB >= 64 KiB"},
		{Options{RootSize: -4096}, "RootSize -4096 is not a positive multiple of 4 KiB"},
		{Options{RootSize: 6000}, "RootSize 6000 is not a positive multiple of 4 KiB"},
		{Options{GrowthStep: -1}, "GrowthStep -1 is negative"},
	} {
		path := filepath.Join(t.TempDir(), "x")
		d, err := Create(path, &c.opts)
		if err == nil {
			d.Close()
		}
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Create with %+v: %v; want ErrInvalidArgument saying %q", c.opts, err, c.want)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Create with %+v, refused, left a file (stat: %v)", c.opts, err)
		}
	}
}

// TestMaxSizeOutOfRange gives Create and Open a negative MaxSize, refused
// with ErrInvalidArgument, and one no address space can map (past an int
// on 32 bits, past the 47 bits a 64-bit process maps), refused with
// ErrTooLarge, alike at both. Create leaves no file, Open the file as it
// was.
func TestMaxSizeOutOfRange(t *testing.T) {
	d, path := createTestDevice(t, &Options{NoSync: true})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		maxSize int64
		want    error
		says    string
	}{
		{-4096, ErrInvalidArgument, "MaxSize -4096 is negative"},
		{1 << 62, ErrTooLarge, "4611686018427387904"},
	} {
		fresh := filepath.Join(t.TempDir(), "x")
		if d, err := Create(fresh, &Options{NoSync: true, MaxSize: c.maxSize}); !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			if err == nil {
				d.Close()
			}
			t.Errorf("Create with MaxSize %d: %v; want %v saying %q", c.maxSize, err, c.want, c.says)
		}
		if _, err := os.Stat(fresh); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Create with MaxSize %d, refused, left a file (stat: %v)", c.maxSize, err)
		}
		if d, err := Open(path, &Options{NoSync: true, MaxSize: c.maxSize}); !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			if err == nil {
				d.Close()
			}
			t.Errorf("Open with MaxSize %d: %v; want %v saying %q", c.maxSize, err, c.want, c.says)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a refused Open changed the file")
	}
}

// journalRecords lists the start offsets and lengths of the records in a
// device file whose ring starts at ringOff with its head at 0.
func journalRecords(t *testing.T, b []byte, ringOff int64) (offs []int64, lens []int64) {
	t.Helper()
	pos := ringOff
	for {
		h, ok := parseRecordHeader(b[pos:], 1<<30)
		if !ok {
			return offs, lens
		}
		offs, lens = append(offs, pos), append(lens, int64(h.length))
		pos += int64(h.length)
	}
}

// TestJournalTailAndCorruption copies a device file while it is open (a
// crash that kept every write), then damages its journal.
func TestJournalTailAndCorruption(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	for i := range 3 {
		writeRoot(t, d, int64(i)*8, bytes.Repeat([]byte{byte('a' + i)}, 8))
	}
	ringOff := d.geometry.journal.off
	snapshot, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offs, lens := journalRecords(t, snapshot, ringOff)
	if len(offs) != 3 {
		t.Fatalf("found %d journal records, want 3", len(offs))
	}
	wantRoot := func(d *Device, want string) {
		t.Helper()
		if got := readRoot(t, d, 0, 24); string(got) != want {
			t.Fatalf("root holds %q, want %q", got, want)
		}
	}
	rootOff, _ := d.Root()
	// Each copy loses the home writes, as if the crash came before the
	// journal applied them: what the root holds comes from replay alone.
	open := func(edit func(b []byte)) (*Device, error) {
		p := corruptCopy(t, path, func(b []byte) []byte { clear(b[rootOff : rootOff+24]); edit(b); return b })
		return Open(p, &Options{NoSync: true})
	}
	// Undamaged: all three replay.
	rd, err := open(func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	wantRoot(rd, "aaaaaaaabbbbbbbbcccccccc")
	rd.Close()

	// A torn or zeroed last record is a torn tail: the first two survive.
	for name, edit := range map[string]func(b []byte){
		"torn":   func(b []byte) { b[offs[2]+lens[2]-3] ^= 0xff },
		"zeroed": func(b []byte) { clear(b[offs[2] : offs[2]+lens[2]]) },
	} {
		rd, err := open(edit)
		if err != nil {
			t.Fatalf("%s tail: %v", name, err)
		}
		wantRoot(rd, "aaaaaaaabbbbbbbb\x00\x00\x00\x00\x00\x00\x00\x00")
		rd.Close()
	}

	// A bad record with a good one after it is corruption, reported with
	// the bad record's offset.
	_, err = open(func(b []byte) { b[offs[1]+lens[1]-3] ^= 0xff })
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Offset != offs[1] {
		t.Fatalf("corrupt middle record: %v, want a CorruptError at offset %d", err, offs[1])
	}
	if want := fmt.Sprintf("follows at offset %d", offs[2]); !strings.Contains(err.Error(), want) {
		t.Fatalf("corrupt middle record: %q does not name the next record (%q)", err, want)
	}

	// Forged headers after the tail, each claiming a later record as long
	// as the journal allows: checking them all would checksum this ring
	// a thousand times over, growing with the square of the ring's size.
	// A journal the package wrote never holds that many: corrupt.
	_, err = open(func(b []byte) {
		ring := d.geometry.journal
		for off := offs[2] + lens[2]; off+recordHeaderBytes <= ring.end(); off += recordHeaderBytes {
			putRecordHeader(b[off:], recordHeader{length: uint32(d.journal.maxRecord), seq: 1 << 40, pos: uint64(off - ring.off), crc: 1})
		}
	})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "claiming sequence") {
		t.Fatalf("a ring of forged headers: %v, want ErrCorrupt for too many records claiming later sequences", err)
	}

	// Records whose checksums verify but whose entries write over a
	// superblock or into the journal ring: nothing a transaction writes.
	for _, target := range []int64{0, superblockSlotBytes, ringOff, ringOff + 4096} {
		_, err = open(func(b []byte) {
			rec := b[offs[0] : offs[0]+lens[0]]
			binary.LittleEndian.PutUint64(rec[recordHeaderBytes:], uint64(target))
			binary.LittleEndian.PutUint32(rec[recordCRCOff:], recordChecksum(rec))
		})
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("a record writing at %d: %v, want ErrCorrupt", target, err)
		}
	}

	// A record whose checksum verifies but whose body is impossible.
	_, err = open(func(b []byte) {
		rec := b[offs[0] : offs[0]+lens[0]]
		binary.LittleEndian.PutUint16(rec[recordHeaderBytes+12:], 9) // unknown kind
		binary.LittleEndian.PutUint32(rec[recordCRCOff:], recordChecksum(rec))
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("record with a bad entry: %v", err)
	}

	// Records whose checksums verify but whose checkpoint stamp names a
	// head before the one in use, or past it but not the record's own
	// position, or its own position while the copy not in use verifies
	// (it is older than the one in use: no later checkpoint completed).
	inUse := newestSuperblock(snapshot)
	off := superblockOffset(inUse.seq + 1)
	if _, err := decodeSuperblock(snapshot[off:off+superblockBytes], off); err != nil {
		t.Fatalf("the copy beside the one in use: %v", err)
	}
	pos := uint64(offs[2] - ringOff)
	stamps := []uint64{pos + 8, pos}
	if inUse.journalHead > 0 {
		stamps = append(stamps, inUse.journalHead-8)
	}
	for _, stamp := range stamps {
		_, err = open(func(b []byte) {
			rec := b[offs[2] : offs[2]+lens[2]]
			binary.LittleEndian.PutUint64(rec[recordHeaderBytes+entryHeaderBytes:], stamp)
			binary.LittleEndian.PutUint32(rec[recordCRCOff:], recordChecksum(rec))
		})
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "checkpoint stamp") {
			t.Errorf("record at %d stamped %d, with the head at %d in use: %v, want ErrCorrupt for the stamp", pos, stamp, inUse.journalHead, err)
		}
	}
}

// TestJournalRecordDecodeCorrupt damages the first of three records in a
// copy of an open device's file (a crash that kept every write): a length
// that is no record's, which makes it no record at all, with valid ones
// after it; or, its checksum recomputed, an entry count one too many or
// one too few, or an entry longer than what is left of the record. Each
// Open, read-only or not, must refuse the file with a CorruptError at the
// record's offset naming the damage, and leave the file as it was.
func TestJournalRecordDecodeCorrupt(t *testing.T) {
	d, path := createTestDevice(t, smallFileOptions())
	for i := range 3 {
		writeRoot(t, d, int64(i)*8, bytes.Repeat([]byte{byte('a' + i)}, 8))
	}
	snapshot := readFile(t, path)
	offs, lens := journalRecords(t, snapshot, d.geometry.journal.off)
	if len(offs) != 3 {
		t.Fatalf("found %d journal records, want 3", len(offs))
	}
	h, _ := parseRecordHeader(snapshot[offs[0]:], 1<<30)
	if h.count < 1 || lens[0] <= recordHeaderBytes+entryHeaderBytes {
		t.Fatalf("set-up: the first record has %d entries in %d bytes", h.count, lens[0])
	}
	rec := func(b []byte) []byte { return b[offs[0] : offs[0]+lens[0]] }
	// length sets the first record's length; count and entryLen set its
	// entry count or its first entry's length, and recompute its checksum.
	length := func(n uint32) func(b []byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(rec(b)[4:], n) }
	}
	reseal := func(r []byte) { binary.LittleEndian.PutUint32(r[recordCRCOff:], recordChecksum(r)) }
	count := func(n uint32) func(b []byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(rec(b)[24:], n); reseal(rec(b)) }
	}
	entryLen := func(n uint32) func(b []byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(rec(b)[recordHeaderBytes+8:], n); reseal(rec(b)) }
	}
	later := fmt.Sprintf("a valid record with sequence %d (record %d follows at offset %d)", h.seq, h.seq+1, offs[1])
	for _, c := range []struct {
		name string
		edit func(b []byte)
		want string // the CorruptError's Expected, up to its end or a comma
	}{
		{"length not a multiple of 8", length(uint32(lens[0]) + 4), later},
		{"length below a header", length(recordHeaderBytes - 8), later},
		{"length past the largest record", length(uint32(d.journal.maxRecord) + 8), later},
		{"one entry too many", count(h.count + 1), fmt.Sprintf("%d entries, found %d", h.count+1, h.count)},
		{"one entry too few", count(h.count - 1), "no bytes after the last entry, found "},
		{"entry past the record's end", entryLen(uint32(lens[0])), fmt.Sprintf("entry 0 of %d bytes inside the record", lens[0])},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := corruptCopy(t, path, func(b []byte) []byte { c.edit(b); return b })
			refusedOpens(t, p, func(ro bool, err error) {
				var ce *CorruptError
				if !errors.As(err, &ce) || ce.Offset != offs[0] || ce.What != "journal record" || !strings.HasPrefix(ce.Expected, c.want) {
					t.Errorf("Open (read-only %v): %v; want a CorruptError for the journal record at offset %d expecting %q", ro, err, offs[0], c.want)
				}
			})
		})
	}
}

// newestSuperblock returns the newest superblock copy that verifies in a
// device file's bytes.
func newestSuperblock(b []byte) superblock {
	var newest superblock
	for slot := range uint64(2) {
		off := superblockOffset(slot)
		if sb, err := decodeSuperblock(b[off:off+superblockBytes], off); err == nil && sb.seq > newest.seq {
			newest = sb
		}
	}
	return newest
}

func TestReadOnlyReplaysInMemory(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	writeRoot(t, d, 0, []byte("journaled"))
	p := corruptCopy(t, path, func(b []byte) []byte { return b })
	before, _ := os.ReadFile(p)
	ro, err := Open(p, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := readRoot(t, ro, 0, 9); string(got) != "journaled" {
		t.Fatalf("read-only device shows %q", got)
	}
	if _, err := ro.Begin(); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Begin on a read-only device: %v", err)
	}
	if _, err := ro.WriteAt([]byte{1}, ro.geometry.heapOff); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("WriteAt on a read-only device: %v", err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(p)
	if !bytes.Equal(before, after) {
		t.Fatal("a read-only open changed the file")
	}
}

// TestTooLargeTransaction refuses a transaction too large for the journal
// and holds the bound Txn.Commit documents for contiguous writes: 87
// bytes of record for every 64 written, in half the journal, which is
// about 37% of it; the largest such write commits, 64 bytes more do not.
func TestTooLargeTransaction(t *testing.T) {
	const journalBytes = 64 << 10
	d, _ := createTestDevice(t, &Options{NoSync: true, JournalSize: journalBytes, RootSize: 64 << 10})
	off, _ := d.Root()
	write := func(n int) error {
		return d.Update(func(tx *Txn) error { return tx.Write(off, make([]byte, n)) })
	}
	if err := write(40 << 10); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("40 KiB transaction in a 64 KiB journal: %v", err)
	}
	largest := (journalBytes/2 - recordOverheadBytes) * 64 / 87 &^ 63
	if share := float64(largest) / journalBytes; share < 0.36 || share > 0.37 {
		t.Fatalf("the largest contiguous write is %.3f of the journal, not about 37%%", share)
	}
	if err := write(largest); err != nil {
		t.Fatalf("a contiguous write of %d bytes in a %d-byte journal: %v", largest, journalBytes, err)
	}
	if err := write(largest + 64); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a contiguous write of %d bytes in a %d-byte journal: %v, want ErrTooLarge", largest+64, journalBytes, err)
	}
	writeRoot(t, d, 0, []byte("still usable"))
}

// TestNoGoroutineLeft checks that Close stops everything the device started.
func TestNoGoroutineLeft(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 5 {
		d, _ := createTestDevice(t, testOptions())
		writeRoot(t, d, 0, []byte("x"))
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestCloseWaitsForOpenTxn checks that Close lets the open transaction
// finish and commits it.
func TestCloseWaitsForOpenTxn(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	off, _ := d.Root()
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error)
	go func() { closed <- d.Close() }()
	time.Sleep(20 * time.Millisecond)
	tx.Write(off, []byte("last"))
	if err := tx.Commit(); err != nil {
		t.Fatalf("Commit during Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	d, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := readRoot(t, d, 0, 4); string(got) != "last" {
		t.Fatalf("root holds %q", got)
	}
}

// TestCloseSyncsWriteAtUnderWay has a WriteAt that passed its check of
// the device before Close began write its bytes once Close has stopped
// the journal: Close waits for it, so the bytes must be durable when both
// return nil, as at every Close. Close synced them only through its own
// transactions, before the write.
func TestCloseSyncsWriteAtUnderWay(t *testing.T) {
	d, store := simDevice(t, crashOptions(t))
	page := allocPages(t, d, 1, 4096)[0]
	coverCommitted(t, d) // nothing left for Close's checkpoint to write
	entered, release := make(chan int, 1), make(chan struct{})
	store.SetFault(func(op simstore.Op) error {
		if op.Kind == simstore.OpWrite && op.Off == page.Offset() {
			entered <- op.Index
			<-release // with the store locked: nothing else writes meanwhile
		}
		return nil
	})
	wrote := make(chan error, 1)
	go func() {
		_, err := d.WriteAt([]byte("in place"), page.Offset())
		wrote <- err
	}()
	index := <-entered
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	<-d.journal.stopped
	close(release)
	if err := errors.Join(<-wrote, <-closed); err != nil {
		t.Fatal(err)
	}
	if syncs := store.SyncPoints(); len(syncs) == 0 || syncs[len(syncs)-1] < index {
		t.Fatalf("the WriteAt (op %d) and Close returned nil, and no sync follows the write (syncs at ops %v)", index, syncs)
	}
}

// TestCloseSyncsWritableMap writes through a slice of a writable mapping,
// which leaves no trace for the device to see, then closes: Close syncs
// after the write, as Sync would, though nothing else is left to sync.
func TestCloseSyncsWritableMap(t *testing.T) {
	o := crashOptions(t)
	o.WritableMap = true
	d, store := simDevice(t, o)
	page := allocPages(t, d, 1, 4096)[0]
	coverCommitted(t, d) // nothing left for Close's checkpoint to write
	s, err := d.Slice(page.Offset(), 8)
	if err != nil {
		t.Fatal(err)
	}
	copy(s, "in place")
	written := store.Ops()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if syncs := store.SyncPoints(); len(syncs) == 0 || syncs[len(syncs)-1] < written {
		t.Fatalf("no sync after the write through the mapping, before op %d (syncs at ops %v)", written, syncs)
	}
}

// TestWriteAtRefusesAllocationNotDurable writes in place, from another
// goroutine, into a page whose allocating Commit has been called but whose
// record is not yet synced: until it is, a crash brings the page back as
// a free page, its free-list header where the write went. WriteAt refuses
// it with ErrProtected, and accepts it once the Commit returns. It took
// it before, and a crash left a free list that Check reported corrupt.
func TestWriteAtRefusesAllocationNotDurable(t *testing.T) {
	d, store := simDevice(t, crashOptions(t))
	freePages(t, d, allocPages(t, d, 8, 4096))
	coverCommitted(t, d)
	releaseCovered(t, d) // free pages with their headers at home
	coverCommitted(t, d)
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	page, err := tx.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("the new owner's bytes over the page's first ones")
	d.syncMu.Lock() // the journal waits here before it writes the record
	committed := make(chan error, 1)
	go func() { committed <- tx.Commit() }()
	for len(d.pending.list()) == 0 { // Commit has published tx
		runtime.Gosched()
	}
	_, werr := d.WriteAt(data, page.Offset())
	// A crash now, with the write reaching the disk on its own.
	serr := store.Sync()
	crashed := store.Ops()
	d.syncMu.Unlock()
	if err := errors.Join(serr, <-committed); err != nil {
		t.Fatal(err)
	}
	rd := openImage(t, store, crashed, nil)
	defer rd.Close()
	if err := rd.Check(); err != nil {
		t.Errorf("a crash before the allocation was durable, with the WriteAt (%v) on disk: %v", werr, err)
	}
	if !errors.Is(werr, ErrProtected) {
		t.Errorf("WriteAt before the allocation is durable: %v, want ErrProtected", werr)
	}
	if _, err := d.WriteAt(data, page.Offset()); err != nil {
		t.Fatalf("WriteAt once the Commit returned: %v", err)
	}
}

// TestHugeGrowthStep grows a device whose GrowthStep is larger than its
// capacity: the file grows to the capacity, without overflowing.
func TestHugeGrowthStep(t *testing.T) {
	o := testOptions()
	o.GrowthStep = math.MaxInt64
	d, _ := createTestDevice(t, o)
	a := allocPages(t, d, 1, 4096)[0]
	if st := d.Stats(); st.FileSize != o.MaxSize || a.Offset()+a.Size() > st.FileSize {
		t.Fatalf("after the first Alloc: file of %d bytes, page %v; want the file at the capacity %d", st.FileSize, a, o.MaxSize)
	}
	mustCheck(t, d)
}

// TestGrowthStepAnySize grows a device by a GrowthStep that is not a power
// of two: the file grows to multiples of it.
func TestGrowthStepAnySize(t *testing.T) {
	o := testOptions()
	o.MaxPageSize = 64 << 10
	o.GrowthStep = 3 * 128 << 10
	d, _ := createTestDevice(t, o)
	for i := 0; i < 40; i++ {
		allocPages(t, d, 1, 64<<10)
		if st := d.Stats(); st.FileSize%o.GrowthStep != 0 || st.FileSize < st.Frontier {
			t.Fatalf("after %d pages: a file of %d bytes, frontier at %d; want a multiple of %d covering the frontier", i+1, st.FileSize, st.Frontier, o.GrowthStep)
		}
	}
	mustCheck(t, d)
}

// TestOpenGrowthStep opens a device with each GrowthStep: zero grows the
// file by the default 64 MiB, as at Create, where Open grew it one max
// page at a time; a negative one is ErrInvalidArgument, as at Create,
// where Open took it.
func TestOpenGrowthStep(t *testing.T) {
	o := testOptions()
	o.MaxPageSize = 64 << 10
	d, path := createTestDevice(t, o)
	allocPages(t, d, 1, 64<<10)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, step := range []int64{-1, math.MinInt64} {
		bad := *o
		bad.GrowthStep = step
		if d, err := Open(path, &bad); !errors.Is(err, ErrInvalidArgument) {
			if err == nil {
				d.Close()
			}
			t.Fatalf("Open with GrowthStep %d: %v, want ErrInvalidArgument", step, err)
		}
	}
	def := *o
	def.GrowthStep = 0
	d, err := Open(path, &def)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for i := range 4 {
		allocPages(t, d, 1, 64<<10)
		if st := d.Stats(); st.FileSize%defaultGrowthStep != 0 || st.FileSize < st.Frontier {
			t.Fatalf("after %d pages: a file of %d bytes, frontier at %d; want a multiple of the default step %d covering the frontier", i+1, st.FileSize, st.Frontier, int64(defaultGrowthStep))
		}
	}
	mustCheck(t, d)
}

// TestHugeRegionSizes creates devices whose journal or root area is too
// large for any file: ErrTooLarge, no file left behind, where the sizes'
// sum overflowed before and the error came untyped from the filesystem.
func TestHugeRegionSizes(t *testing.T) {
	const huge = math.MaxInt64 &^ 4095
	type tc struct {
		name string
		o    Options
	}
	cases := []tc{
		{"JournalSize", Options{JournalSize: huge}},
		{"RootSize", Options{RootSize: huge}},
		{"RootSize beside the largest MaxSize", Options{RootSize: huge, MaxSize: math.MaxInt}},
	}
	if strconv.IntSize == 64 {
		// Fits the layout's arithmetic, not ext4's 16 TiB files nor
		// the address space: refused by one or the other.
		cases = append(cases, tc{"RootSize of 2^60", Options{RootSize: 1 << 60, MaxSize: math.MaxInt}})
	}
	for _, tc := range cases {
		path := filepath.Join(t.TempDir(), "device")
		o := tc.o
		o.NoSync = true
		d, err := Create(path, &o)
		if err == nil {
			d.Close()
		}
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: Create: %v, want ErrTooLarge", tc.name, err)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: the refused file is left behind: %v", tc.name, err)
		}
	}
}

// simDevice creates a device with options o on a simulated store, which
// the test can crash, fault or trace; both are closed when it ends.
func simDevice(t *testing.T, o Options) (*Device, *simstore.Store) {
	t.Helper()
	store := simstore.New(o.MaxSize)
	return deviceOn(t, store, o), store
}

// deviceOn creates a device with options o on store; both are closed when
// the test ends.
func deviceOn(t *testing.T, store storage.Storage, o Options) *Device {
	t.Helper()
	d, err := createOn(store, o)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Close()
		store.Close()
	})
	return d
}

// openImage opens what a crash after the store's first n operations
// leaves, with the unsynced ones' fates drawn from rng (nil: all lost);
// the caller closes the device.
func openImage(t *testing.T, store *simstore.Store, n int, rng *rand.Rand) *Device {
	t.Helper()
	img, err := store.Image(n, rng)
	if err != nil {
		t.Fatal(err)
	}
	d, err := openOn(img, &Options{})
	if err != nil {
		img.Close()
		t.Fatalf("crash after op %d: Open: %v", n, err)
	}
	return d
}

// TestFailedDeviceWakesCheckpointWaiters fails the device (an I/O error)
// while a transaction is open, then has it allocate past the free pages,
// where Alloc waits for a checkpoint to free pending ones: a failed
// device takes none, so Alloc must return the failure, and Close must not
// wait for the transaction forever.
func TestFailedDeviceWakesCheckpointWaiters(t *testing.T) {
	o := crashOptions(t)
	o.NoSync = true
	d, store := simDevice(t, o)
	pages := fillHeap(t, d, 4096)
	freePages(t, d, pages[:2])
	coverCommitted(t, d)
	releaseCovered(t, d)
	freePages(t, d, pages[2:3]) // pending, and no checkpoint covers it
	if st := d.Stats(); st.FreeBytes != 2*4096 || st.PendingBytes != 4096 {
		t.Fatalf("before: %d bytes free and %d pending, want 8192 and 4096", st.FreeBytes, st.PendingBytes)
	}
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected I/O error")
	store.SetFault(func(op simstore.Op) error { return injected })
	if _, err := d.WriteAt([]byte("x"), pages[3].Offset()); !errors.Is(err, ErrFailed) {
		t.Fatalf("WriteAt with the disk failing: %v, want ErrFailed", err)
	}
	store.SetFault(nil)
	done := make(chan error, 2)
	go func() {
		var err error
		for range 3 {
			if _, err = tx.Alloc(4096); err != nil {
				break
			}
		}
		tx.Rollback()
		done <- err
		done <- d.Close()
	}()
	for _, what := range []string{"the third Alloc", "Close"} {
		select {
		case err := <-done:
			if !errors.Is(err, ErrFailed) {
				t.Errorf("%s on a failed device: %v, want ErrFailed", what, err)
			}
		case <-time.After(20 * time.Second): // a hang, not a speed goal
			t.Fatalf("%s still waiting 20 s after the device failed", what)
		}
	}
}

// TestNilArgumentsRefused passes nil where a function or a context is
// due, and a capacity no address space holds: typed errors, or for a nil
// context the background one, never a panic.
func TestNilArgumentsRefused(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	if err := d.Update(nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Update(nil): %v, want ErrInvalidArgument", err)
	}
	if err := d.WalkHeap(nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("WalkHeap(nil): %v, want ErrInvalidArgument", err)
	}
	l := mustCreateLog(t, d, "c", 4096)
	if err := l.SetOwner(allLive{}, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	if err := l.GC(nil); err != nil {
		t.Errorf("Log.GC(nil): %v", err)
	}
	p, err := NewPool(1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b, err := p.Get(nil)
	if err != nil {
		t.Fatalf("Pool.Get(nil): %v", err)
	}
	if err := p.Put(b); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, d)
	if err := d.Close(); err != nil { // the read-only Open below needs the file
		t.Fatal(err)
	}
	if defaultMaxSize >= 1<<40 {
		if d, err := Open(path, &Options{MaxSize: math.MaxInt64 &^ 4095, ReadOnly: true}); !errors.Is(err, ErrTooLarge) {
			if err == nil {
				d.Close()
			}
			t.Errorf("Open with a MaxSize no address space holds: %v, want ErrTooLarge", err)
		}
		if _, err := NewPool(1<<24, 1<<24); !errors.Is(err, ErrTooLarge) {
			t.Errorf("NewPool of 256 TiB: %v, want ErrTooLarge", err)
		}
	}
}

// TestSliceReadOnlyShowsReplay opens read-only what a crash left just
// after a commit of journaled bytes, whose home writes were never synced:
// the journal is replayed in memory, and Slice, like ReadAt, shows the
// bytes. Ranges the replay does not touch are views of the mapping.
func TestSliceReadOnlyShowsReplay(t *testing.T) {
	d, store := simDevice(t, crashOptions(t))
	page := allocPages(t, d, 2, 4096)
	coverCommitted(t, d) // the allocation is at home; only the write below is not
	data := []byte("journaled bytes, at home only once a checkpoint syncs them")
	off := page[0].Offset() + 100
	if err := d.Update(func(tx *Txn) error { return tx.Write(off, data) }); err != nil {
		t.Fatal(err)
	}
	img, err := store.Image(store.Ops(), nil) // every unsynced write lost
	if err != nil {
		t.Fatal(err)
	}
	ro, err := openOn(img, &Options{ReadOnly: true})
	if err != nil {
		img.Close()
		t.Fatal(err)
	}
	defer ro.Close()
	got := make([]byte, len(data))
	if _, err := ro.ReadAt(got, off); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAt: %q, %v; want %q", got, err, data)
	}
	// The whole file spans more lines than the replay's table has slots:
	// found by a scan of the table rather than a probe per line.
	whole := ro.Stats().FileSize
	for _, r := range []struct{ off, n int64 }{{off, int64(len(data))}, {page[0].Offset(), 4096}, {off + 7, 9}, {0, whole}} {
		s, err := ro.Slice(r.off, r.n)
		if err != nil {
			t.Fatalf("Slice(%d, %d): %v", r.off, r.n, err)
		}
		want := make([]byte, r.n)
		if _, err := ro.ReadAt(want, r.off); err != nil {
			t.Fatal(err)
		}
		if i := firstDiff(s, want); i >= 0 {
			t.Errorf("Slice(%d, %d) differs from ReadAt at byte %d: %#x, want %#x", r.off, r.n, i, s[i], want[i])
		}
	}
	// The second page holds nothing the replay wrote: a view, no copy.
	s, err := ro.Slice(page[1].Offset(), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if &s[0] != &ro.view[page[1].Offset()] {
		t.Errorf("Slice of a range the replay did not touch is a copy, want a view of the mapping")
	}
}

// firstDiff returns the first index where a and b, of equal length,
// differ, or -1.
func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestNilReceiversRefused calls every exported method of every handle
// type on a nil handle and on a zero one (a handle not made by the
// package's constructors), with zero arguments: each returns
// ErrInvalidArgument where it returns an error, zero values where it has
// none to return, and never panics. Methods added later are called too.
func TestNilReceiversRefused(t *testing.T) {
	for _, handles := range [][]any{
		{(*Device)(nil), (*Txn)(nil), (*Log)(nil), (*Pool)(nil), (*Subpages)(nil), (*Buffer)(nil)},
		{new(Device), new(Txn), new(Log), new(Pool), new(Subpages), new(Buffer)},
	} {
		calls := 0
		for _, h := range handles {
			v := reflect.ValueOf(h)
			kind := "nil"
			if !v.IsNil() {
				kind = "zero"
			}
			for i := range v.NumMethod() {
				checkNilCall(t, fmt.Sprintf("%T.%s on %s", h, v.Type().Method(i).Name, kind), v.Method(i))
				calls++
			}
		}
		if calls < 40 {
			t.Errorf("called %d methods, want the 40 or more the handles have", calls)
		}
	}
}

// checkNilCall calls m, a method of a nil or zero handle, named with which in name,, with zero arguments and
// checks its results, walking an iterator it returns.
func checkNilCall(t *testing.T, name string, m reflect.Value) {
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s: panic %v", name, r)
		}
	}()
	args := make([]reflect.Value, m.Type().NumIn())
	for j := range args {
		args[j] = reflect.Zero(m.Type().In(j))
	}
	for j, r := range m.Call(args) {
		switch {
		case r.Type() == reflect.TypeFor[error]():
			if err, _ := r.Interface().(error); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
			}
		case r.Type() == reflect.TypeFor[iter.Seq2[Entry, error]]():
			n := 0
			for _, err := range r.Interface().(iter.Seq2[Entry, error]) {
				if n++; !errors.Is(err, ErrInvalidArgument) {
					t.Errorf("%s yields %v, want ErrInvalidArgument", name, err)
				}
			}
			if n != 1 {
				t.Errorf("%s yields %d times, want once", name, n)
			}
		case strings.HasPrefix(name, "*pagealloc.Buffer.Index "):
			if r.Int() != -1 {
				t.Errorf("%s: %d, want -1", name, r.Int())
			}
		case !r.IsZero():
			t.Errorf("%s: result %d is %v, want its zero value", name, j, r)
		}
	}
}

// TestOpenRefusesHugeStamps opens files whose newest pending page or a
// sub-page class carries a transaction number near 2^64: Open continues
// the numbering after them, which would wrap within two transactions and
// make every later sequence comparison wrong. Refused as corrupt.
func TestOpenRefusesHugeStamps(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	pages := allocPages(t, d, 2, 4096)
	freePages(t, d, pages[:1])
	tail := d.alloc.last.pendTail
	if tail == 0 {
		t.Fatal("no pending page")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	class := d.geometry.state.off + subpageTableOff
	for _, c := range []struct {
		name          string
		stamp, report int64 // where the stamp lies, and the offset the error names
	}{
		{"the newest pending page", tail, tail},
		{"a sub-page class", class + subpageClassFields[7], class},
	} {
		p := corruptCopy(t, path, func(b []byte) []byte { binary.LittleEndian.PutUint64(b[c.stamp:], 1<<64-2); return b })
		rd, err := Open(p, &Options{NoSync: true})
		if err == nil {
			rd.Close()
		}
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Offset != c.report {
			t.Errorf("%s stamped 2^64-2: %v, want a CorruptError at offset %d", c.name, err, c.report)
		}
	}
}

// TestCloseReadOnlyWritesNothing opens read-only a device whose file
// reaches past the allocator's frontier (it grows a GrowthStep at a time)
// and closes it: the store must see no write, sync, truncate or punch.
// A writable device's Close cuts such a file down to the frontier.
func TestCloseReadOnlyWritesNothing(t *testing.T) {
	o := crashOptions(t)
	o.GrowthStep = 1 << 20
	d, store := simDevice(t, o)
	allocPages(t, d, 1, 4096)
	if size, frontier := d.Stats().FileSize, d.Stats().Frontier; size <= frontier {
		t.Fatalf("the file is %d bytes, the frontier at %d: want a file past the frontier", size, frontier)
	}
	img, err := store.Image(store.Ops(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var ops []simstore.Op
	img.SetFault(func(op simstore.Op) error {
		ops = append(ops, op)
		return errors.New("a read-only device changed its store")
	})
	ro, err := openOn(img, &Options{ReadOnly: true})
	if err != nil {
		img.Close()
		t.Fatal(err)
	}
	if err := ro.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if len(ops) > 0 {
		t.Errorf("the read-only device's Open and Close tried %d changes to the store, first %v", len(ops), ops[0])
	}
}

// TestFailedOpenKeepsCapacity opens, with a MaxSize below the allocator's
// frontier, a copy of a device that a crash left with journal records to
// replay and a file cut short of the frontier (its growth lost). The Open
// fails; it must not record the MaxSize it was given, which would make
// every later Open without one refuse the device as corrupt.
func TestFailedOpenKeepsCapacity(t *testing.T) {
	o := testOptions()
	o.MaxPageSize = 64 << 10
	o.GrowthStep = 64 << 10
	d, path := createTestDevice(t, o)
	pages := allocPages(t, d, 8, 64<<10)
	frontier := d.alloc.last.frontier
	if d.journal.tail == d.journal.head {
		t.Fatal("the allocations left no journal record to replay")
	}
	cut := pages[1].Offset() // the file as a crash that lost its growth leaves it
	p := corruptCopy(t, path, func(b []byte) []byte { return b[:cut] })
	small := &Options{NoSync: true, MaxSize: cut + 64<<10}
	if small.MaxSize >= frontier {
		t.Fatalf("MaxSize %d is not below the frontier %d", small.MaxSize, frontier)
	}
	if rd, err := Open(p, small); err == nil {
		rd.Close()
		t.Fatalf("Open with a MaxSize of %d below the frontier %d succeeded", small.MaxSize, frontier)
	}
	rd, err := Open(p, &Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open after a failed Open with a small MaxSize: %v", err)
	}
	defer rd.Close()
	if got := rd.Stats().Capacity; got != o.MaxSize {
		t.Errorf("capacity %d after the failed Open, want the recorded %d", got, o.MaxSize)
	}
	mustCheck(t, rd)
}

// TestOpenRefusesHugeSuperblockNumbers opens devices whose superblocks,
// checksums intact, carry a copy, transaction or journal record sequence
// number, or a journal head, near 2^64. Accepted, the numbers that follow
// wrap within a few commits: a page freed after the wrap is handed out
// again before any checkpoint covers its free, and a crash leaves a
// journal whose replay takes the records from before the wrap for later
// ones and refuses the device. A wrapped head puts the records after the
// wrap at physical offsets that do not follow those before it (a ring
// that is not a power of two, as this one, does not divide 2^64), over
// records no checkpoint covers yet. Refused as corrupt, as stamps that
// large in the allocator's pages are: no journal writes 2^62 bytes in its
// life.
func TestOpenRefusesHugeSuperblockNumbers(t *testing.T) {
	o := testOptions()
	o.JournalSize = 76 << 10
	d, path := createTestDevice(t, o)
	writeRoot(t, d, 0, []byte("survives"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(sb *superblock)
	}{
		{"a transaction sequence", func(sb *superblock) { sb.txSeq = 1<<64 - 1 }},
		{"a journal head sequence", func(sb *superblock) { sb.headSeq = 1<<64 - 2 }},
		// Parity kept: the copies at 2^64-2 and 2^64-1. The first
		// checkpoint would number its copy 0, and the next Open would
		// take the stale one at 2^64-1, whose journal head new records
		// may have overwritten.
		{"a copy sequence", func(sb *superblock) { sb.seq = 1<<64 - 2 + sb.seq%2 }},
		{"a journal head of 2^64-4096", func(sb *superblock) { sb.journalHead = 1<<64 - 4096 }},
	} {
		p := corruptCopy(t, path, func(b []byte) []byte {
			for slot := uint64(0); slot < 2; slot++ {
				rewriteSuperblock(b, slot, c.edit)
			}
			return b
		})
		rd, err := Open(p, &Options{NoSync: true})
		if err == nil {
			rd.Close()
		}
		var ce *CorruptError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.Offset != 0 {
			t.Errorf("%s in both superblocks: %v, want a CorruptError at offset 0", c.name, err)
		}
	}
}

// resealSuperblock recomputes the checksum of the copy at slot in a device
// file's bytes b, as a forged copy whose checksum matches would carry it.
func resealSuperblock(b []byte, slot uint64) {
	off := superblockOffset(slot)
	binary.LittleEndian.PutUint32(b[off+superblockCRCOff:], crc32.Checksum(b[off:off+superblockCRCOff], castagnoli))
}

// TestOpenRefusesSuperblockFields opens devices whose two superblock
// copies, their checksums recomputed, each carry one field that no
// device of this package holds: a format version of 0, nonzero flags or
// reserved bytes, a max page size out of range, the allocator state, the
// log regions or the heap away from where Create puts them, a capacity
// below the headers. Each Open, read-only or not, must refuse the file
// with a CorruptError for each copy naming what it expected there, and
// leave the file as it was.
func TestOpenRefusesSuperblockFields(t *testing.T) {
	d, path := createTestDevice(t, smallFileOptions())
	writeRoot(t, d, 0, []byte("survives"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	sb := newestSuperblock(readFile(t, path))
	if sb.heapOff == sb.logs.end() {
		t.Fatalf("set-up: the heap at %d starts right at the log regions' end: no capacity lies between them", sb.heapOff)
	}
	// raw edits the copy's bytes; the checksum is recomputed after.
	raw := func(at int, v byte) func(b []byte, slot uint64) {
		return func(b []byte, slot uint64) { b[superblockOffset(slot)+int64(at)] = v }
	}
	field := func(edit func(sb *superblock)) func(b []byte, slot uint64) {
		return func(b []byte, slot uint64) { rewriteSuperblock(b, slot, edit) }
	}
	for _, c := range []struct {
		name string
		edit func(b []byte, slot uint64)
		want string
	}{
		{"format version 0", field(func(sb *superblock) { sb.version = 0 }), "format version >= 1"},
		{"flags", raw(12, 1), fmt.Sprintf("zero flags and reserved bytes in version %d", sb.version)},
		{"reserved byte", raw(200, 0x80), fmt.Sprintf("zero flags and reserved bytes in version %d", sb.version)},
		{"max page below min page", field(func(sb *superblock) { sb.maxPage = sb.minPage / 2 }),
			"a power-of-two max page size between min page size and 1 GiB"},
		{"max page not a power of two", field(func(sb *superblock) { sb.maxPage = 3 * sb.minPage }),
			"a power-of-two max page size between min page size and 1 GiB"},
		{"max page above 1 GiB", field(func(sb *superblock) { sb.maxPage = 2 << 30 }),
			"a power-of-two max page size between min page size and 1 GiB"},
		{"state a page after the journal", field(func(sb *superblock) { sb.state.off += 4096 }),
			"the allocator state after the journal ring, within the capacity"},
		{"state of another size", field(func(sb *superblock) { sb.state.size += 4096 }),
			"the allocator state after the journal ring, within the capacity"},
		{"log regions a page after the state", field(func(sb *superblock) { sb.logs.off += 4096 }),
			"the log regions after the allocator state, within the capacity"},
		{"log regions of a size not a multiple of 4 KiB", field(func(sb *superblock) { sb.logs.size = 100 }),
			"the log regions after the allocator state, within the capacity"},
		{"heap off the max-page grid", field(func(sb *superblock) { sb.heapOff += sb.minPage }),
			"the heap at the first max-page boundary after the log regions"},
		{"heap a max page late", field(func(sb *superblock) { sb.heapOff += sb.maxPage }),
			"the heap at the first max-page boundary after the log regions"},
		{"heap inside the log regions", field(func(sb *superblock) { sb.heapOff -= sb.maxPage }),
			"the heap at the first max-page boundary after the log regions"},
		{"capacity ending before the heap", field(func(sb *superblock) { sb.capacity = sb.logs.end() }),
			"a capacity at least as large as the headers"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := corruptCopy(t, path, func(b []byte) []byte {
				for slot := range uint64(2) {
					c.edit(b, slot)
					resealSuperblock(b, slot)
				}
				return b
			})
			refusedOpens(t, p, func(ro bool, err error) {
				var ce *CorruptError
				if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.Offset != 0 || ce.Expected != c.want {
					t.Errorf("Open (read-only %v): %v; want a CorruptError at offset 0 expecting %q", ro, err, c.want)
					return
				}
				for slot := range uint64(2) {
					if want := fmt.Sprintf("corrupt superblock at offset %d: expected %s", superblockOffset(slot), c.want); !strings.Contains(err.Error(), want) {
						t.Errorf("Open (read-only %v): %v; want %q", ro, err, want)
					}
				}
			})
		})
	}
}

// TestOpenRefusesNewerVersionCopy opens a device whose newer superblock
// copy, its checksum intact, carries a format version this package does
// not read, and whose older copy one it does: what a newer package's
// checkpoint leaves. The device is the newer format's: ErrVersion, and
// the file unchanged, where Open fell back to the older copy and wrote
// the device as its own.
func TestOpenRefusesNewerVersionCopy(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	writeRoot(t, d, 0, []byte("survives"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	p := corruptCopy(t, path, func(b []byte) []byte {
		var a superblock // the copy in use
		for slot := uint64(0); slot < 2; slot++ {
			sb, err := decodeSuperblock(b[superblockOffset(slot):], superblockOffset(slot))
			if err != nil {
				t.Fatal(err)
			}
			if sb.seq >= a.seq {
				a = sb
			}
		}
		slot := (a.seq + 1) % 2 // the older copy becomes the newest
		rewriteSuperblock(b, slot, func(sb *superblock) {
			*sb = a
			sb.seq, sb.version = a.seq+1, formatVersion+1
		})
		return b
	})
	before, _ := os.ReadFile(p)
	rd, err := Open(p, &Options{NoSync: true})
	if err == nil {
		writeRoot(t, rd, 0, []byte("written!"))
		rd.Close()
	}
	if !errors.Is(err, ErrVersion) {
		t.Errorf("Open with the newest superblock copy of version %d: %v, want ErrVersion", formatVersion+1, err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("the Open changed the file")
	}
}

// TestOpenFileBeyondCapacity opens a device whose file was extended past
// the capacity its superblock records. Without a MaxSize, Open refuses it
// with ErrInvalidArgument, says so, and leaves the file as it was; with a
// MaxSize that covers the file, it opens and passes Check.
func TestOpenFileBeyondCapacity(t *testing.T) {
	o := testOptions()
	o.MaxSize = 64 << 20
	d, path := createTestDevice(t, o)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	size := o.MaxSize + 1<<20
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, path)
	if d, err := Open(path, nil); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "exceed the device's capacity") {
		if err == nil {
			d.Close()
		}
		t.Errorf("Open of a file past its capacity without a MaxSize: %v, want ErrInvalidArgument saying the file exceeds the capacity", err)
	}
	if i := firstDiff(readFile(t, path), before); i >= 0 {
		t.Errorf("the refused Open changed the file at byte %d", i)
	}
	d, err := Open(path, &Options{MaxSize: size})
	if err != nil {
		t.Fatalf("Open with a MaxSize that covers the file: %v", err)
	}
	defer d.Close()
	mustCheck(t, d)
}

// TestReadOnlyOpenLostGrowth opens read-only what a crash may leave: the
// journal record of a transaction that grew the heap, without the growth
// of the file (a size change, not yet synced) or the record's home
// writes. A writable Open grows the file again; a read-only one must open
// too, pass Check, and read what the writable one reads, zeroes and the
// replayed bytes past the file's end included, through ReadAt and Slice.
func TestReadOnlyOpenLostGrowth(t *testing.T) {
	d, store, o, size := growthDevice(t)
	data := []byte("journaled bytes in a page past the file's end after the crash")
	var off int64
	if err := d.Update(func(tx *Txn) error {
		for off < size {
			a, err := tx.Alloc(o.MaxPageSize)
			if err != nil {
				return err
			}
			off = a.Offset() + 100
		}
		return tx.Write(off, data)
	}); err != nil {
		t.Fatal(err)
	}
	frontier := d.Stats().Frontier
	if d.checkpointTxSeq.Load() == d.txSeq {
		t.Fatal("a checkpoint covered the transaction that grew the file: its record is no longer needed")
	}
	rw, err := openOn(lostGrowth(t, store, size), &Options{})
	if err != nil {
		t.Fatalf("writable Open: %v", err)
	}
	defer rw.Close()
	ro, err := openOn(lostGrowth(t, store, size), &Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only Open of a file that lost its growth: %v", err)
	}
	defer ro.Close()
	mustCheck(t, ro)
	from := size - 4096
	want := make([]byte, frontier-from)
	if _, err := rw.ReadAt(want, from); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want[off-from:off-from+int64(len(data))], data) {
		t.Fatalf("the writable Open does not read the journaled bytes at %d", off)
	}
	got := make([]byte, len(want))
	if n, err := ro.ReadAt(got, from); err != nil || n != len(got) {
		t.Fatalf("read-only ReadAt of [%d, %d): %d bytes, %v", from, frontier, n, err)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Errorf("read-only ReadAt differs from the writable Open's at %d: %#x, want %#x", from+int64(i), got[i], want[i])
	}
	s, err := ro.Slice(from, frontier-from)
	if err != nil {
		t.Fatalf("read-only Slice of [%d, %d): %v", from, frontier, err)
	}
	if i := firstDiff(s, want); i >= 0 {
		t.Errorf("read-only Slice differs from the writable Open's at %d: %#x, want %#x", from+int64(i), s[i], want[i])
	}
	if n, err := ro.ReadAt(got[:1], frontier); n != 0 || err != io.EOF {
		t.Errorf("read-only ReadAt at the frontier %d: %d bytes, %v; want io.EOF", frontier, n, err)
	}
}

// growthDevice returns a simulated device whose file holds three max
// pages, a checkpoint covering them, and grows by one max page at a time:
// the next max page allocated grows the file past size.
func growthDevice(t *testing.T) (d *Device, store *simstore.Store, o Options, size int64) {
	t.Helper()
	o = crashOptions(t)
	o.GrowthStep = o.MaxPageSize
	d, store = simDevice(t, o)
	allocPages(t, d, 3, o.MaxPageSize)
	coverCommitted(t, d)
	return d, store, o, d.Stats().FileSize
}

// lostGrowth returns the image of store crashed now, cut back to size: a
// crash that lost the file's growth (a size change not synced yet).
func lostGrowth(t *testing.T, store *simstore.Store, size int64) *simstore.Store {
	t.Helper()
	img, err := store.Image(store.Ops(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestReadOnlyOpenLostGrowthCarvedLog carves a log from the heap in a
// transaction that grows the file, and loses the growth in a crash: the
// read-only Open accepts the ring past the file's end, as the writable
// Open that grows the file again does, since its empty log reads nothing
// there. A log with entries past the file's end is corruption, since the
// journal synced the entries before the tail that covers them.
func TestReadOnlyOpenLostGrowthCarvedLog(t *testing.T) {
	for _, c := range []struct{ entries, past bool }{{false, false}, {true, false}, {false, true}} {
		entries := c.entries
		t.Run(fmt.Sprintf("entries=%v,wholly-past=%v", entries, c.past), func(t *testing.T) {
			d, store, o, size := growthDevice(t)
			if c.past { // a page before the ring, growing the file first
				allocPages(t, d, 1, o.MaxPageSize)
			}
			l, err := d.CreateLog("carved", o.MaxPageSize)
			if err != nil {
				t.Fatal(err)
			}
			if ring := l.ring; ring.end() <= size || c.past && ring.off < size {
				t.Fatalf("the ring [%d, +%d) lies inside the file's first %d bytes, or starts there", ring.off, ring.size, size)
			}
			if entries {
				r, err := l.Append(100)
				if err == nil {
					err = l.Write(r, bytes.Repeat([]byte{1}, 100))
				}
				if err == nil {
					err = l.Commit(r)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			ro, err := openOn(lostGrowth(t, store, size), &Options{ReadOnly: true})
			if entries {
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "entries between head") {
					t.Fatalf("read-only Open of a log with entries past the file's end: %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("read-only Open of a file that lost its growth: %v", err)
			}
			defer ro.Close()
			mustCheck(t, ro)
			rl, err := ro.Log("carved")
			if err != nil {
				t.Fatal(err)
			}
			for e, err := range rl.Entries(0) {
				t.Errorf("the carved log holds an entry: %+v, %v", e, err)
			}
		})
	}
}

// TestOpenRecordsMaxSize opens a device for writing with a MaxSize other
// than the one it was created with, closes it, and opens it again without
// one: the capacity is the MaxSize the writable Open was given, whether or
// not that Open committed anything. A read-only Open records nothing, nor
// does one that fails after its journal started (at a corrupt log table).
func TestOpenRecordsMaxSize(t *testing.T) {
	o := testOptions()
	o.LogRegions = []LogRegion{{Name: "events", Size: 16 << 10}}
	d, path := createTestDevice(t, o)
	logs := d.geometry.logs
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	broken := corruptCopy(t, path, func(b []byte) []byte { b[logs.off+logTableCRCOff] ^= 1; return b })
	if rd, err := Open(broken, &Options{NoSync: true, MaxSize: o.MaxSize / 2}); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			rd.Close()
		}
		t.Fatalf("Open with a corrupt log table: %v, want ErrCorrupt", err)
	}
	for slot := uint64(0); slot < 2; slot++ {
		sb, err := decodeSuperblock(readFile(t, broken)[superblockOffset(slot):], superblockOffset(slot))
		if err != nil || sb.capacity != o.MaxSize {
			t.Errorf("superblock %d after the failed Open: capacity %d (%v), want %d", slot, sb.capacity, err, o.MaxSize)
		}
	}
	capacityAfter := func(opts *Options, write bool) int64 {
		t.Helper()
		d, err := Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		if write {
			writeRoot(t, d, 0, []byte("x"))
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		d, err = Open(path, &Options{NoSync: true, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		return d.Stats().Capacity
	}
	for i, c := range []struct {
		opts  Options
		write bool
		want  int64
	}{
		{Options{NoSync: true, MaxSize: o.MaxSize / 2}, true, o.MaxSize / 2},
		{Options{NoSync: true, MaxSize: o.MaxSize / 4}, false, o.MaxSize / 4},
		{Options{NoSync: true, MaxSize: o.MaxSize / 2, ReadOnly: true}, false, o.MaxSize / 4},
		{Options{NoSync: true}, false, o.MaxSize / 4},
	} {
		if got := capacityAfter(&c.opts, c.write); got != c.want {
			t.Errorf("%d: after an Open with MaxSize %d (read-only %v, writing %v): capacity %d, want %d", i, c.opts.MaxSize, c.opts.ReadOnly, c.write, got, c.want)
		}
	}
}

// TestOpenMaxSizeBelowFrontier opens what a crash that lost the file's
// growth leaves (the file shorter than the allocator's frontier) with a
// MaxSize that covers the file but not the frontier, or not the writes
// past the file's end a journal record holds. The MaxSize is what is
// wrong, not the file: ErrInvalidArgument, not ErrCorrupt, the file left
// as it was, and an Open without a MaxSize succeeds.
func TestOpenMaxSizeBelowFrontier(t *testing.T) {
	o := testOptions()
	o.MaxPageSize = 64 << 10
	o.GrowthStep = 64 << 10
	d, path := createTestDevice(t, o)
	pages := allocPages(t, d, 8, 64<<10)
	cut := pages[1].Offset() // the file as a crash that lost its growth leaves it
	frontier := d.alloc.last.frontier
	grown := corruptCopy(t, path, func(b []byte) []byte { return b[:cut] })
	// Links written into the free pages the split of a new max page
	// leaves, in a record no checkpoint covers.
	coverCommitted(t, d)
	split := d.alloc.last.frontier
	small := allocPages(t, d, 12, 4096)
	if d.journal.tail == d.journal.head {
		t.Fatal("the allocations left no journal record to replay")
	}
	if last := small[len(small)-1].Offset(); last < split || last >= split+64<<10 {
		t.Fatalf("the last small page is at %d, not in the new max page at %d", last, split)
	}
	linked := corruptCopy(t, path, func(b []byte) []byte { return b[:cut] })
	for _, c := range []struct {
		path              string
		maxSize, frontier int64
	}{
		{grown, cut, frontier},
		{grown, cut + 64<<10, frontier},
		{linked, split + 4096, d.alloc.last.frontier},
	} {
		if c.maxSize >= c.frontier {
			t.Fatalf("MaxSize %d is not below the frontier %d", c.maxSize, c.frontier)
		}
		before, err := os.ReadFile(c.path)
		if err != nil {
			t.Fatal(err)
		}
		rd, err := Open(c.path, &Options{NoSync: true, MaxSize: c.maxSize})
		if err == nil {
			rd.Close()
		}
		if !errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrCorrupt) {
			t.Errorf("Open of a file of %d bytes with a MaxSize of %d: %v, want ErrInvalidArgument and not ErrCorrupt", cut, c.maxSize, err)
		}
		// Refused before its recovery wrote anything: the records
		// replay at the next Open, as they would have.
		if after, err := os.ReadFile(c.path); err != nil {
			t.Fatal(err)
		} else if !bytes.Equal(after, before) {
			t.Errorf("the Open refused with a MaxSize of %d changed the file", c.maxSize)
		}
	}
	for _, p := range []string{grown, linked} {
		rd, err := Open(p, &Options{NoSync: true})
		if err != nil {
			t.Fatalf("Open without a MaxSize: %v", err)
		}
		mustCheck(t, rd)
		rd.Close()
	}
}

// TestLargerMaxSizeRecordedBeforeGrowth opens a device for writing with a
// MaxSize twice the one it was created with, grows the heap past the old
// one and crashes before any checkpoint: the crash images, with the
// file's growth and without it, open without a MaxSize, read-only and
// for writing, and pass Check. Before, the larger MaxSize was recorded
// only at the next checkpoint, and an Open without one refused the file
// (ErrInvalidArgument) or called its frontier corrupt.
func TestLargerMaxSizeRecordedBeforeGrowth(t *testing.T) {
	o := smallFileOptions() // MaxSize 4 MiB
	o.JournalSize = 1 << 20 // no checkpoint of the ring's own during the test
	o.GrowthStep = 64 << 10
	d, path := createTestDevice(t, o)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path, &Options{NoSync: true, MaxSize: 8 << 20, GrowthStep: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for d.alloc.last.frontier <= 4<<20 {
		allocPages(t, d, 4, 64<<10)
	}
	if d.journal.head == d.journal.tail {
		t.Fatal("set-up: a checkpoint covered the growth")
	}
	images := map[string]string{
		"growth kept": corruptCopy(t, path, func(b []byte) []byte { return b }),
		"growth lost": corruptCopy(t, path, func(b []byte) []byte { return b[:4<<20] }),
	}
	for name, image := range images {
		for _, ro := range []bool{true, false} {
			rd, err := Open(image, &Options{NoSync: true, ReadOnly: ro})
			if err != nil {
				t.Errorf("%s, read-only %v: Open without a MaxSize: %v", name, ro, err)
				continue
			}
			if err := rd.Check(); err != nil {
				t.Errorf("%s, read-only %v: Check: %v", name, ro, err)
			}
			if got := rd.Stats().Capacity; got != 8<<20 {
				t.Errorf("%s, read-only %v: capacity %d, want the 8 MiB recorded", name, ro, got)
			}
			if err := rd.Close(); err != nil {
				t.Errorf("%s, read-only %v: Close: %v", name, ro, err)
			}
		}
	}
}

// TestLargerMaxSizeLostGrowthCrash opens, with a larger MaxSize and the
// default GrowthStep, a device whose heap grew in a record a crash kept and
// whose file growth it lost, and crashes that Open at every operation: the
// recovery grows the file back before the larger MaxSize is recorded, so it
// must not grow it past the capacity the file records, or a crash between
// the two leaves a file that an Open without a MaxSize refuses.
func TestLargerMaxSizeLostGrowthCrash(t *testing.T) {
	// growthDevice's, on a store that maps the larger MaxSize.
	o := crashOptions(t)
	o.GrowthStep = o.MaxPageSize
	store := simstore.New(2 * o.MaxSize)
	d := deviceOn(t, store, o)
	allocPages(t, d, 3, o.MaxPageSize)
	coverCommitted(t, d)
	size := d.Stats().FileSize
	allocPages(t, d, 1, o.MaxPageSize) // grows the heap past the file's size
	img := lostGrowth(t, store, size)
	if err := img.Sync(); err != nil { // the lost growth is what the disk holds
		t.Fatal(err)
	}
	base := img.Ops()
	rd, err := openOn(img, &Options{MaxSize: 2 * o.MaxSize})
	if err != nil {
		t.Fatal(err)
	}
	if rd.zeroEnd != 0 || rd.size.Load() <= size {
		t.Fatalf("set-up: the Open did not grow back the file's %d bytes", size)
	}
	opened := img.Ops()
	if err := rd.Close(); err != nil {
		t.Fatal(err)
	}
	for n := base; n <= opened; n++ {
		crashed, err := img.Image(n, nil)
		if err != nil {
			t.Fatal(err)
		}
		cd, err := openOn(crashed, &Options{})
		if err != nil {
			crashed.Close()
			t.Errorf("crash after %d of the Open's %d operations: Open without a MaxSize: %v", n-base, opened-base, err)
			continue
		}
		if err := cd.Check(); err != nil {
			t.Errorf("crash after %d of the Open's %d operations: Check: %v", n-base, opened-base, err)
		}
		if err := cd.Close(); err != nil {
			t.Errorf("crash after %d of the Open's %d operations: Close: %v", n-base, opened-base, err)
		}
	}
}

// TestOpenRefusedBeforeRecoveryWrites opens a file whose journal holds a
// record to replay and whose log table is corrupt: Open returns ErrCorrupt
// before its recovery writes anything, so the file is left as it was, and
// a read-only Open of it (which replays in memory) sees the same. In the
// second case the record grew the heap and a crash lost the file's growth:
// the refused Open does not grow the file back either.
func TestOpenRefusedBeforeRecoveryWrites(t *testing.T) {
	for _, lost := range []bool{false, true} {
		t.Run(fmt.Sprintf("lost-growth=%v", lost), func(t *testing.T) {
			o := testOptions()
			o.MaxPageSize = 64 << 10
			o.GrowthStep = 64 << 10
			o.LogRegions = []LogRegion{{Name: "events", Size: 16 << 10}}
			d, path := createTestDevice(t, o)
			allocPages(t, d, 3, o.MaxPageSize)
			coverCommitted(t, d)
			size := d.Stats().FileSize
			writeRoot(t, d, 0, []byte("replayed"))
			if lost {
				for d.Stats().Frontier <= size {
					allocPages(t, d, 1, o.MaxPageSize)
				}
			}
			if d.checkpointTxSeq.Load() == d.txSeq {
				t.Fatal("a checkpoint covers the writes: no journal record to replay")
			}
			slot := d.geometry.logs.off + logTableHeaderBytes + logSlotRingOff
			damaged := corruptCopy(t, path, func(b []byte) []byte {
				b[slot] ^= 0x10 // the ring no longer follows the table
				return b[:size]
			})
			refusedOpens(t, damaged, func(ro bool, err error) {
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("Open (read-only %v) of a device with a corrupt log table: %v, want ErrCorrupt", ro, err)
				}
			})
		})
	}
}

// refusedOpens opens the device at path for writing, then read-only,
// handing each Open's error to check, and fails t if either changed the
// file.
func refusedOpens(t *testing.T, path string, check func(readOnly bool, err error)) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		d, err := Open(path, &Options{NoSync: true, ReadOnly: ro})
		if err == nil {
			d.Close()
		}
		check(ro, err)
		if after, err := os.ReadFile(path); err != nil {
			t.Fatal(err)
		} else if !bytes.Equal(after, before) {
			t.Errorf("the Open (read-only %v) changed the file (%d bytes, %d before)", ro, len(after), len(before))
		}
	}
}

// TestOpenRefusesDamagedFrontier damages the allocator's frontier word in
// a closed device's file, moving it past the file's end: no journal record
// moves it there, and the checkpoint at Close synced the file's size, so
// it is not growth a crash lost. Open returns ErrCorrupt, writable or
// read-only, rather than grow the file to it, and leaves the file as it
// was; the same move made by a record (TestOpenMaxSizeBelowFrontier, the
// lost-growth tests) opens.
func TestOpenRefusesDamagedFrontier(t *testing.T) {
	o := testOptions()
	o.MaxPageSize = 64 << 10
	o.GrowthStep = 64 << 10
	d, path := createTestDevice(t, o)
	allocPages(t, d, 4, 64<<10)
	word := d.geometry.state.off + stateFrontierOff
	frontier := d.alloc.last.frontier
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	damaged := corruptCopy(t, path, func(b []byte) []byte {
		if got := int64(binary.LittleEndian.Uint64(b[word:])); got != frontier {
			t.Fatalf("the file's frontier word holds %d, want %d", got, frontier)
		}
		binary.LittleEndian.PutUint64(b[word:], uint64(frontier+64<<20))
		return b
	})
	refusedOpens(t, damaged, func(ro bool, err error) {
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Offset != word {
			t.Errorf("Open (read-only %v) of a device whose frontier word lies past its file: %v, want a CorruptError at %d", ro, err, word)
		}
	})
}

// TestCreateCrashLeavesNoHalfDevice crashes Create at every operation,
// keeping, dropping or tearing each unsynced write as the seeds say: the
// file left either holds no superblock that verifies, so that it claims
// to be no device, or opens as the whole device Create formats, its log
// regions included.
func TestCreateCrashLeavesNoHalfDevice(t *testing.T) {
	o := crashOptions(t)
	o.LogRegions = []LogRegion{{Name: "events", Size: 16 << 10}}
	store := simstore.New(o.MaxSize)
	d, err := createOn(store, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ops := store.Ops()
	for n := 0; n <= ops; n++ {
		for seed := uint64(0); seed < 16; seed++ {
			img, err := store.Image(n, rand.New(rand.NewPCG(seed, uint64(n))))
			if err != nil {
				t.Fatal(err)
			}
			size, _ := img.Size()
			if _, err := readSuperblock(img, size); err != nil {
				img.Close()
				continue // no device
			}
			rd, err := openOn(img, &Options{})
			if err == nil {
				if _, err = rd.Log("events"); err == nil {
					err = rd.Check()
				}
				rd.Close()
			}
			if err != nil {
				t.Fatalf("crash after op %d of %d (seed %d; %s): the file has a superblock but: %v", n, ops, seed, img.Describe(), err)
			}
			img.Close()
		}
	}
}

// TestOpenReadOnlyWritableMap opens a device read-only with WritableMap:
// a mapping that is writable by the option's word and read-only by the
// file's open, whose first write through a slice would fault and end the
// process. Open refuses the pair with ErrInvalidArgument and holds no lock
// after it.
func TestOpenReadOnlyWritableMap(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := Open(path, &Options{NoSync: true, ReadOnly: true, WritableMap: true})
	if err == nil {
		rd.Close()
	}
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Open with ReadOnly and WritableMap: %v, want ErrInvalidArgument", err)
	}
	d, err = Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open for writing after the refused Open: %v", err)
	}
	d.Close()
}

// TestDamagedNewestSuperblock damages the newest superblock copy after its
// checkpoint completed and a record followed it. Open must not take the
// other copy's head and replay the records that checkpoint covered: among
// them is the journaled write of a page's first owner, and the page has
// been freed, handed out again and written in place by its second owner
// since. The records' checkpoint stamps show where the checkpoint moved
// the head. A second round damages the copy that the recovery from the
// first wrote again, with the same sequence number, over the records of
// both rounds.
func TestDamagedNewestSuperblock(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	p := journaledThenFreed(t, d, "P OLD")
	coverCommitted(t, d) // p may be handed out again
	reuse(t, d, p, "P NEW")
	// A page journaled by its first owner and freed, after the checkpoint
	// whose copy round 1 damages: its recovery replays them.
	r := journaledThenFreed(t, d, "R OLD")
	damaged, lost := damagedNewestCopy(t, path)
	ro, err := Open(damaged, &Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("round 1, read-only Open: %v", err)
	}
	checkDamagedOpen(t, ro, lost, map[Addr]string{p: "P NEW"})
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = Open(damaged, &Options{NoSync: true})
	if err != nil {
		t.Fatalf("round 1, writable Open: %v", err)
	}
	defer d.Close()
	checkDamagedOpen(t, d, lost, map[Addr]string{p: "P NEW"})
	in, _ := d.Inspect() // it wrote the copy again
	for i, sb := range in.Superblocks {
		if sb.Problem != "" {
			t.Errorf("superblock %c after a writable Open: %s", 'A'+i, sb.Problem)
		}
	}
	// Round 2: that recovery covered r's free; r goes to a new owner, and
	// the copy the recovery wrote is damaged in turn, before another
	// checkpoint. Records stamped with both rounds' heads follow the
	// other copy's.
	reuse(t, d, r, "R NEW")
	// Inspect walks the journal from the copy the recovery wrote, as on
	// any device opened for writing, no longer from the lost head.
	in, _ = d.Inspect()
	for _, sb := range in.Superblocks {
		if js := in.JournalState; sb.InUse && (js.Head != sb.JournalHead || js.Head <= lost || len(js.Records) == 0) {
			t.Errorf("after the recovery and a commit, the journal walked from %d (%d records); want the copy in use's head %d, past the lost head %d", js.Head, len(js.Records), sb.JournalHead, lost)
		}
	}
	damaged, lost = damagedNewestCopy(t, damaged)
	d2, err := Open(damaged, &Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("round 2, Open: %v", err)
	}
	defer d2.Close()
	checkDamagedOpen(t, d2, lost, map[Addr]string{p: "P NEW", r: "R NEW"})
}

// TestLostHeadPastPositionLimit: with the newest superblock copy damaged,
// Open looks through the ring for the first record after the lost
// checkpoint, by its stamp. A record there that checks but names a
// position past 2^62 (which no journal reaches: a forged or damaged one)
// must not be taken for it: a checkpoint of that head would write a
// superblock no later Open takes. It is damage past the journal's end,
// and Open refuses the file as corrupt, leaving it as it was.
func TestLostHeadPastPositionLimit(t *testing.T) {
	d, path := createTestDevice(t, testOptions())
	p := journaledThenFreed(t, d, "P OLD")
	coverCommitted(t, d)
	reuse(t, d, p, "P NEW")
	journaledThenFreed(t, d, "R OLD")
	ring := d.journal.ring
	damaged, _ := damagedNewestCopy(t, path)
	// A record at the ring's last 8 KiB, stamped with its own position:
	// on the ring's grid, past 2^62.
	phys := ring.size - 8192
	pos := uint64(1)<<62 + uint64(phys)
	rec := make([]byte, recordHeaderBytes)
	rec = appendEntry(rec, d.geometry.state.off+stateReservedOff, kindMeta, binary.LittleEndian.AppendUint64(nil, pos))
	putRecordHeader(rec, recordHeader{length: uint32(len(rec)), seq: 1 << 40, pos: pos, count: 1})
	binary.LittleEndian.PutUint32(rec[recordCRCOff:], recordChecksum(rec))
	forged := corruptCopy(t, damaged, func(b []byte) []byte {
		copy(b[ring.off+phys:], rec)
		return b
	})
	refusedOpens(t, forged, func(ro bool, err error) {
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open (read-only %v) of a journal with a record past 2^62 after the lost head: %v, want ErrCorrupt", ro, err)
		}
	})
}

// TestDamagedNewestSuperblockWrapped damages the newest superblock copy
// after records past its head have wrapped around the ring over those
// at the other copy's head: the journal no longer scans from the copy in
// use, and Open must find the first record after the lost checkpoint by
// its stamp instead of calling the journal corrupt.
func TestDamagedNewestSuperblockWrapped(t *testing.T) {
	d, path := createTestDevice(t, &Options{NoSync: true, JournalSize: 64 << 10, RootSize: 64 << 10, MaxSize: testMaxSize})
	first, second, third := bytes.Repeat([]byte{1}, 20000), bytes.Repeat([]byte{2}, 24000), bytes.Repeat([]byte{3}, 24000)
	writeRoot(t, d, 0, first)
	writeRoot(t, d, 20000, second)
	coverCommitted(t, d)
	writeRoot(t, d, 0, third) // wraps around the ring's end
	damaged, lost := damagedNewestCopy(t, path)
	if in, _ := d.Inspect(); in.JournalState.Tail <= uint64(d.geometry.journal.size) {
		t.Fatalf("the journal's tail %d has not wrapped around its ring of %d bytes", in.JournalState.Tail, d.geometry.journal.size)
	}
	for _, ro := range []bool{true, false} {
		d, err := Open(damaged, &Options{ReadOnly: ro})
		if err != nil {
			t.Fatalf("Open (read-only %v): %v", ro, err)
		}
		if got := readRoot(t, d, 0, 44000); !bytes.Equal(got, append(third, second[4000:]...)) {
			t.Errorf("read-only %v: the root area does not hold the last two writes", ro)
		}
		in, err := d.Inspect()
		if err != nil {
			t.Fatal(err)
		}
		if js := in.JournalState; js.LostHead != lost || ro && (js.Head != lost || len(js.Records) != 1) {
			t.Errorf("read-only %v: LostHead %d, head %d, %d records; want %d, and on a read-only device the one record from there", ro, js.LostHead, js.Head, len(js.Records), lost)
		}
		if err := d.Check(); err != nil {
			t.Error(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// journaledThenFreed allocates a page, journals data into it and frees it,
// in two transactions, and returns it.
func journaledThenFreed(t *testing.T, d *Device, data string) Addr {
	t.Helper()
	var a Addr
	if err := d.Update(func(tx *Txn) (err error) {
		if a, err = tx.Alloc(4096); err != nil {
			return err
		}
		return tx.Write(a.Offset()+100, []byte(data))
	}); err != nil {
		t.Fatal(err)
	}
	freePages(t, d, []Addr{a})
	return a
}

// reuse allocates pages until a, whose free a checkpoint covers, is
// handed out again, and writes data into it in place.
func reuse(t *testing.T, d *Device, a Addr, data string) {
	t.Helper()
	found := false
	if err := d.Update(func(tx *Txn) error {
		for range 256 {
			b, err := tx.Alloc(4096)
			if found = b == a; found || err != nil {
				return err
			}
		}
		return nil
	}); err != nil || !found {
		t.Fatalf("256 pages allocated (%v), none the freed page %v", err, a)
	}
	if _, err := d.WriteAt([]byte(data), a.Offset()+100); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// damagedNewestCopy copies the device file at path, as a crash now would
// leave it, with one bit of its newest superblock copy flipped, and
// returns the copy and the head that copy recorded.
func damagedNewestCopy(t *testing.T, path string) (string, uint64) {
	t.Helper()
	var newest superblock
	damaged := corruptCopy(t, path, func(b []byte) []byte {
		newest = newestSuperblock(b)
		b[superblockOffset(newest.seq)+40] ^= 1
		return b
	})
	return damaged, newest.journalHead
}

// checkDamagedOpen checks a device opened from a damaged copy: each page
// holds its new owner's bytes, Inspect reports the lost head, and Check
// passes.
func checkDamagedOpen(t *testing.T, d *Device, lost uint64, want map[Addr]string) {
	t.Helper()
	for a, data := range want {
		got := make([]byte, len(data))
		if _, err := d.ReadAt(got, a.Offset()+100); err != nil {
			t.Fatal(err)
		}
		if string(got) != data {
			t.Errorf("page %v, written in place by its new owner, holds %q, want %q", a, got, data)
		}
	}
	in, err := d.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	if in.JournalState.LostHead != lost {
		t.Errorf("LostHead %d, want %d", in.JournalState.LostHead, lost)
	}
	if err := d.Check(); err != nil {
		t.Error(err)
	}
}
