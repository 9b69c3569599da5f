package pagealloc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

// TestJournalRecordBound commits transactions whose lines are as costly to
// journal as lines get, a byte written, a byte left, across n lines of the
// root area: each must either be refused whole with ErrTooLarge or be
// found by Open after a crash at every sync point from its commit on. A
// bound that undercounts lets a record past the journal's largest, which
// recovery takes for a torn one (the commit is lost) or which runs off the
// ring's end.
func TestJournalRecordBound(t *testing.T) {
	o := crashOptions(t)
	// Alone, each line costs 32 entries of one byte: 24 bytes each.
	perLine := int64(lineBytes / 2 * (entryHeaderBytes + 8))
	fits := int((minJournalBytes/2 - recordHeaderBytes) / perLine)
	for _, lines := range []int{fits, fits + 1, 60, 250} {
		t.Run(fmt.Sprintf("lines=%d", lines), func(t *testing.T) {
			store := simstore.New(crashMaxBytes)
			defer store.Close()
			d, err := createOn(store, o)
			if err != nil {
				t.Fatal(err)
			}
			rootOff, _ := d.Root()
			want := make([]byte, lines*lineBytes)
			for i := 0; i < len(want); i += 2 {
				want[i] = 0xAB
			}
			from := store.Ops()
			err = d.Update(func(tx *Txn) error {
				for i := 0; i < len(want); i += 2 {
					if err := tx.Write(rootOff+int64(i), want[i:i+1]); err != nil {
						return err
					}
				}
				return nil
			})
			returned := store.Ops()
			switch {
			case lines <= fits && err != nil:
				t.Fatalf("a transaction whose record fits: %v", err)
			case lines > fits && !errors.Is(err, ErrTooLarge):
				t.Fatalf("a transaction whose record does not fit: %v, want ErrTooLarge", err)
			case err != nil:
				clear(want) // refused: nothing of it may appear
			}
			if err := d.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			points := 0
			for _, n := range append(store.SyncPoints(), store.Ops()) {
				if n <= from && n != store.Ops() {
					continue
				}
				points++
				rd := openImage(t, store, n, nil)
				got := make([]byte, len(want))
				if _, err := rd.ReadAt(got, rootOff); err != nil {
					t.Fatal(err)
				}
				if err := rd.Check(); err != nil {
					t.Errorf("Check of the image at op %d: %v", n, err)
				}
				rd.Close()
				// All or nothing; all once Commit has returned.
				switch {
				case bytes.Equal(got, want):
				case n < returned && !bytes.ContainsFunc(got, func(r rune) bool { return r != 0 }):
				default:
					t.Fatalf("image at op %d (Commit returned at op %d): the root area holds neither the committed bytes nor the old ones", n, returned)
				}
			}
			t.Logf("record of %d lines: %v; %d crash images opened", lines, err, points)
		})
	}
}

// TestRecordBoundsHold encodes random lines, alone and merged in groups of
// up to four transactions, and checks the record never exceeds the bounds
// Commit and the journal's grouping rely on.
func TestRecordBoundsHold(t *testing.T) {
	rng := rand.New(rand.NewPCG(journalTestSeed(t), 0))
	randomMask := func() uint64 {
		switch rng.IntN(4) {
		case 0:
			return rng.Uint64() // scattered
		case 1:
			return rng.Uint64() & rng.Uint64() & rng.Uint64()
		case 2:
			from := rng.IntN(lineBytes)
			return spanMask(from, from+1+rng.IntN(lineBytes-from)) // one run
		}
		return 0x5555555555555555 << rng.IntN(2) // every other byte
	}
	for range 2000 {
		txs := make([]*Txn, 1+rng.IntN(4))
		for i := range txs {
			tx := &Txn{}
			for range 1 + rng.IntN(8) {
				l, _ := tx.lines.add(int64(rng.IntN(12))) // neighbours: runs meet across lines
				dirty := randomMask()
				l.dirty |= dirty
				l.valid |= dirty
				l.link = l.link&^dirty | dirty&randomMask()
				l.user = l.user&^dirty | dirty&randomMask()
			}
			tx.measure()
			txs[i] = tx
		}
		_, refs := mergeLines(txs, nil)
		rec := make([]byte, recordHeaderBytes)
		if _, err := forEachRun(refs, true, nil, func(off int64, kind entryKind, data []byte) error {
			rec = appendEntry(rec, off, kind, data)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		bound := txs[0].soloBound()
		if len(txs) > 1 {
			bound = recordHeaderBytes
			for _, tx := range txs {
				bound += tx.mergedBytes()
			}
		}
		if int64(len(rec)) > bound {
			t.Fatalf("%d transactions encode to %d bytes, above their bound of %d", len(txs), len(rec), bound)
		}
	}
}

// TestMaxRecordFitsHeader: the largest record of any journal, however big,
// has a length its header can hold, and recovery compares lengths with.
func TestMaxRecordFitsHeader(t *testing.T) {
	for _, size := range []int64{minJournalBytes, 4 << 20, 8<<30 - 4096, 8 << 30, 8<<30 + 8192, 1 << 40} {
		m := maxRecordBytes(size)
		if m <= 0 || m > size/2 || m%8 != 0 || int64(uint32(m)) != m {
			t.Errorf("journal of %d bytes: largest record %d (as 32 bits: %d)", size, m, uint32(m))
		}
	}
}

// TestCommitCoversInPlaceWrites writes a page in place with WriteAt, then
// commits a root pointer to it, and opens what a crash at every point of
// that leaves, each with several fates for the unsynced writes: wherever
// the pointer is there, the bytes it points to must be too. The commit
// syncs the in-place bytes before its journal record can reach the disk.
func TestCommitCoversInPlaceWrites(t *testing.T) {
	store := simstore.New(crashMaxBytes)
	defer store.Close()
	d, err := createOn(store, crashOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	page := allocPages(t, d, 1, 16<<10)[0]
	data := bytes.Repeat([]byte{0x5a}, 16<<10)
	from := store.Ops()
	if _, err := d.WriteAt(data, page.Offset()); err != nil {
		t.Fatal(err)
	}
	var ptr [8]byte
	binary.LittleEndian.PutUint64(ptr[:], uint64(page))
	writeRoot(t, d, 0, ptr[:])
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for n := from; n <= store.Ops(); n++ {
		for s := range uint64(16) {
			rd := openImage(t, store, n, rand.New(rand.NewPCG(uint64(n), s)))
			got := make([]byte, len(data))
			if root := readRoot(t, rd, 0, 8); bytes.Equal(root, ptr[:]) {
				seen++
				if _, err := rd.ReadAt(got, page.Offset()); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("crash after op %d (stream %d): the committed pointer is there, the bytes it points to are not", n, s)
				}
			}
			rd.Close()
		}
	}
	if seen == 0 {
		t.Fatal("no crash image holds the commit")
	}
	t.Logf("%d crash images hold the pointer, and the bytes", seen)
}
