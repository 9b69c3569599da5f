package pagealloc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// goldenSuperblock and goldenRecord are valid encodings, the seeds the fuzz
// targets start from.
func goldenSuperblock() []byte {
	o, _ := (&Options{MaxSize: 1 << 30}).withDefaults()
	sb := superblock{
		version: formatVersion, seq: 7, deviceID: 0x1234, txSeq: 99, capacity: o.MaxSize,
		minPage: o.MinPageSize, maxPage: o.MaxPageSize,
		root: region{8192, 4096}, journal: region{12288, 1 << 20},
	}
	sb.state = region{sb.journal.end(), stateBytes}
	sb.logs = region{sb.state.end(), 0}
	sb.heapOff = alignUp(sb.logs.end(), sb.maxPage)
	b := make([]byte, superblockBytes)
	sb.encode(b)
	return b
}

func goldenRecord() []byte {
	rec := make([]byte, recordHeaderBytes)
	rec = appendEntry(rec, 8192, kindUser, []byte("root pointer"))
	rec = appendEntry(rec, 1<<24, kindLink, bytes.Repeat([]byte{0xab}, 16))
	rec = appendEntry(rec, 1<<22, kindMeta, []byte{1, 2, 3})
	putRecordHeader(rec, recordHeader{length: uint32(len(rec)), seq: 42, pos: 4096, count: 3})
	binary.LittleEndian.PutUint32(rec[recordCRCOff:], recordChecksum(rec))
	return rec
}

func TestSuperblockRoundTrip(t *testing.T) {
	b := goldenSuperblock()
	sb, err := decodeSuperblock(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	again := make([]byte, superblockBytes)
	sb.encode(again)
	if !bytes.Equal(b, again) {
		t.Fatal("superblock does not survive decode and encode")
	}
	for i := range superblockBytes {
		c := bytes.Clone(b)
		c[i] ^= 0x10
		if _, err := decodeSuperblock(c, 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipping a bit of byte %d: %v", i, err)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	rec := goldenRecord()
	h, ok := parseRecordHeader(rec, 1<<20)
	if !ok || h.seq != 42 || h.pos != 4096 || h.count != 3 || recordChecksum(rec) != h.crc {
		t.Fatalf("header %+v ok=%v", h, ok)
	}
	entries, err := decodeEntries(rec, h.count, 1<<30, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 || string(entries[0].data) != "root pointer" || entries[1].kind != kindLink || entries[2].off != 1<<22 {
		t.Fatalf("entries %+v", entries)
	}
	if _, err := decodeEntries(rec, h.count, 1<<22, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("entry past the device's end: %v", err)
	}
	bad := bytes.Clone(rec)
	bad[recordHeaderBytes+15] = 1 // the first entry's reserved bytes
	if _, err := decodeEntries(bad, h.count, 1<<30, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("entry with reserved bytes set: %v", err)
	}
}

// FuzzDecodeSuperblock feeds arbitrary bytes to the superblock decoder: it
// must return an error or a superblock that encodes back to the same bytes,
// and never panic.
func FuzzDecodeSuperblock(f *testing.F) {
	f.Add(goldenSuperblock())
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := decodeSuperblock(b, 0)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		for _, r := range []region{sb.root, sb.journal, sb.state, sb.logs} {
			if !r.within(sb.capacity) {
				t.Fatalf("accepted region [%d, +%d) outside the capacity %d", r.off, r.size, sb.capacity)
			}
		}
		again := make([]byte, superblockBytes)
		sb.encode(again)
		if !bytes.Equal(again, b[:superblockBytes]) {
			t.Fatal("accepted superblock does not re-encode to itself")
		}
	})
}

// FuzzDecodeRecord feeds arbitrary bytes to the journal record decoder: a
// record either fails its header or checksum, or decodes into entries that
// lie inside it and inside the device, or is reported corrupt. Never a panic.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(goldenRecord())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := parseRecordHeader(b, 1<<20)
		if !ok || int(h.length) > len(b) {
			return
		}
		rec := b[:h.length]
		// Checksums rarely match fuzzed bytes; decode regardless, as
		// recovery would after a lucky collision.
		entries, err := decodeEntries(rec, h.count, 1<<30, 0)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		for _, e := range entries {
			if e.off < 0 || e.off+int64(len(e.data)) > 1<<30 || len(e.data) == 0 {
				t.Fatalf("entry %+v escapes the device", e)
			}
		}
	})
}

// TestFuzzSeeds checks that the seed corpus in testdata/fuzz matches the
// current encodings; PAGEALLOC_UPDATE_TESTDATA=1 rewrites it.
func TestFuzzSeeds(t *testing.T) {
	seeds := map[string][]byte{
		"FuzzDecodeSuperblock/valid": goldenSuperblock(),
		"FuzzDecodeRecord/valid":     goldenRecord(),
	}
	for name, b := range seeds {
		path := filepath.Join("testdata", "fuzz", name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		if os.Getenv("PAGEALLOC_UPDATE_TESTDATA") != "" {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (regenerate with PAGEALLOC_UPDATE_TESTDATA=1)", err)
		}
		if string(got) != want {
			t.Fatalf("%s is stale: the format changed (regenerate with PAGEALLOC_UPDATE_TESTDATA=1)", path)
		}
	}
}

// TestDecodeEntriesHugeCount decodes a record whose entry count has the
// top bit set: ErrCorrupt, where on 32-bit platforms the count, converted
// to a negative int, sized the entry slice and panicked.
func TestDecodeEntriesHugeCount(t *testing.T) {
	for _, count := range []uint32{1 << 31, 1<<32 - 1} {
		rec := make([]byte, recordHeaderBytes+entryHeaderBytes+8)
		putRecordHeader(rec, recordHeader{length: uint32(len(rec)), count: count})
		_, err := decodeEntries(rec, count, 1<<30, 0)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("a record claiming %d entries: %v, want ErrCorrupt", count, err)
		}
	}
}
