package pagealloc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"maps"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

var (
	logSeedFlag = flag.Uint64("log.seed", 0, "seed for the log tests; 0 picks one from the clock")
	logOpsFlag  = flag.Int("log.appends", 0, "appends in TestLogModel; 0 means the default (50,000)")
)

// logTestSeed returns the seed for a test and logs how to rerun it.
func logTestSeed(t testing.TB) uint64 {
	t.Helper()
	return testSeed(t, "log.seed", *logSeedFlag)
}

// logContentSource backs entry contents: entry id's payload is a window of
// it chosen by id, so expected bytes cost no generation.
var logContentSource = func() []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 3<<20)
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b
}()

// logContent returns the payload of entry id of size bytes: the id, then
// bytes of the source from an offset the id picks.
func logContent(id uint64, size int) []byte {
	start := int((id * 0x9e3779b97f4a7c15) % (1 << 21))
	p := bytes.Clone(logContentSource[start : start+size])
	var idb [8]byte
	binary.LittleEndian.PutUint64(idb[:], id)
	copy(p, idb[:])
	return p
}

// isContent reports whether p is entry id's payload, without a copy.
func isContent(p []byte, id uint64) bool {
	start := int((id * 0x9e3779b97f4a7c15) % (1 << 21))
	if len(p) > 8 {
		return bytes.Equal(p[8:], logContentSource[start+8:start+len(p)]) && logID(p) == id
	}
	var idb [8]byte
	binary.LittleEndian.PutUint64(idb[:], id)
	return bytes.Equal(p, idb[:len(p)])
}

// logID reads the id back from a payload of at least 8 bytes.
func logID(p []byte) uint64 { return binary.LittleEndian.Uint64(p) }

// createLogDevice creates a device with the given log rings and closes it
// when the test ends.
func createLogDevice(t testing.TB, rings ...LogRegion) (*Device, string) {
	t.Helper()
	o := testOptions()
	o.LogRegions = rings
	o.MaxPageSize = 64 << 10
	path := filepath.Join(t.TempDir(), "device")
	d, err := Create(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, path
}

// mustLog returns the log called name.
func mustLog(t testing.TB, d *Device, name string) *Log {
	t.Helper()
	l, err := d.Log(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// appendEntryT appends, writes and commits one entry.
func appendEntryT(t testing.TB, l *Log, p []byte) Reservation {
	t.Helper()
	r, err := l.Append(len(p))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.d.WriteAt(p, r.Offset()); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(r); err != nil {
		t.Fatal(err)
	}
	return r
}

// checkLogInvariants checks the positions every log must keep.
func checkLogInvariants(t testing.TB, l *Log) LogStats {
	t.Helper()
	s := l.Stats()
	if !(s.Head <= s.DurableTail && s.DurableTail <= s.Tail) {
		t.Fatalf("positions out of order: head %d durable tail %d tail %d", s.Head, s.DurableTail, s.Tail)
	}
	if s.UsedBytes+s.FreeBytes != s.SizeBytes || s.UsedBytes != s.Tail-s.Head || s.FreeBytes < 0 {
		t.Fatalf("used %d + free %d != size %d, or used != tail - head", s.UsedBytes, s.FreeBytes, s.SizeBytes)
	}
	return s
}

// walkLogUpTo returns the entries before position end, copied.
func walkLogUpTo(t testing.TB, l *Log, end int64) []Entry {
	t.Helper()
	var out []Entry
	for e, err := range l.Entries(0) {
		if err != nil || e.Pos >= end {
			break
		}
		e.Data = bytes.Clone(e.Data)
		out = append(out, e)
	}
	return out
}

// walkLog returns every entry Entries yields from the head, copied.
func walkLog(t testing.TB, l *Log) []Entry {
	t.Helper()
	var out []Entry
	for e, err := range l.Entries(0) {
		if err != nil {
			t.Fatalf("Entries: %v", err)
		}
		e.Data = bytes.Clone(e.Data)
		out = append(out, e)
	}
	return out
}

func TestLogAppendCommitReadReopen(t *testing.T) {
	d, path := createLogDevice(t, LogRegion{"values", 64 << 10}, LogRegion{"wal", 8 << 10})
	l := mustLog(t, d, "values")
	if l2 := mustLog(t, d, "values"); l2 != l {
		t.Fatal("Log returned two different *Log for one name")
	}
	var want [][]byte
	var offs []int64
	for i := range 20 {
		p := logContent(uint64(i), 8+i*97)
		r := appendEntryT(t, l, p)
		want, offs = append(want, p), append(offs, r.Offset())
	}
	s := checkLogInvariants(t, l)
	if s.DurableTail != s.Tail || s.Head != 0 {
		t.Fatalf("after sequential commits: %+v", s)
	}
	check := func(l *Log) {
		t.Helper()
		got := walkLog(t, l)
		if len(got) != len(want) {
			t.Fatalf("walked %d entries, want %d", len(got), len(want))
		}
		for i, e := range got {
			if !bytes.Equal(e.Data, want[i]) || e.Offset != offs[i] {
				t.Fatalf("entry %d: offset %d (want %d), bytes differ: %v", i, e.Offset, offs[i], !bytes.Equal(e.Data, want[i]))
			}
			p, err := l.Read(offs[i])
			if err != nil || !bytes.Equal(p, want[i]) {
				t.Fatalf("Read(%d): %v", offs[i], err)
			}
			if i > 0 && got[i-1].Next > e.Pos {
				t.Fatalf("entry %d at %d before the previous one's end %d", i, e.Pos, got[i-1].Next)
			}
		}
		// Resuming mid-way yields the rest.
		n := 0
		for _, err := range l.Entries(got[5].Next) {
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if n != len(want)-6 {
			t.Fatalf("resuming after entry 5 yielded %d entries, want %d", n, len(want)-6)
		}
	}
	check(l)
	d2 := reopen(t, d, path, &Options{NoSync: true})
	l = mustLog(t, d2, "values")
	if got := checkLogInvariants(t, l); got.Head != s.Head || got.DurableTail != s.DurableTail || got.Tail != s.Tail {
		t.Fatalf("after reopen %+v, before %+v", got, s)
	}
	check(l)
	if w := mustLog(t, d2, "wal"); w.Stats().SizeBytes != 8<<10 || w.Stats().UsedBytes != 0 {
		t.Fatalf("second log: %+v", w.Stats())
	}
}

// TestLogOutOfOrderCommit commits the second of two reservations first: its
// Commit must wait, and the durable tail must not pass the first.
func TestLogOutOfOrderCommit(t *testing.T) {
	d, _ := createLogDevice(t, LogRegion{"log", 64 << 10})
	l := mustLog(t, d, "log")
	a, err := l.Append(100)
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Append(200)
	if err != nil {
		t.Fatal(err)
	}
	d.WriteAt(logContent(1, 100), a.Offset())
	d.WriteAt(logContent(2, 200), b.Offset())
	done := make(chan error, 1)
	go func() { done <- l.Commit(b) }()
	select {
	case err := <-done:
		t.Fatalf("Commit of the second reservation returned %v before the first was committed", err)
	case <-time.After(50 * time.Millisecond):
	}
	if s := l.Stats(); s.DurableTail != 0 {
		t.Fatalf("durable tail %d passed an uncommitted reservation", s.DurableTail)
	}
	if n := len(walkLog(t, l)); n != 0 {
		t.Fatalf("%d entries visible before the first commit", n)
	}
	if err := l.Commit(a); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := walkLog(t, l); len(got) != 2 || got[1].Offset != b.Offset() {
		t.Fatalf("after both commits: %d entries", len(got))
	}
}

func TestLogBadInput(t *testing.T) {
	d, _ := createLogDevice(t, LogRegion{"log", 16 << 10}, LogRegion{"other", 4 << 10})
	l := mustLog(t, d, "log")
	other := mustLog(t, d, "other")
	appendEntryT(t, l, logContent(1, 1000))

	expect := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	// Every refused call leaves the log exactly as it was.
	unchanged := func(what string, fn func()) {
		t.Helper()
		before, bytesBefore := l.Stats(), readAll(t, d)
		fn()
		if after := l.Stats(); after != before {
			t.Errorf("%s changed the stats: %+v -> %+v", what, before, after)
		}
		if !bytes.Equal(bytesBefore, readAll(t, d)) {
			t.Errorf("%s changed the device", what)
		}
	}

	_, err := d.Log("missing")
	expect("unknown log name", err, ErrNotFound)
	unchanged("Append(0)", func() { _, err := l.Append(0); expect("Append(0)", err, ErrInvalidArgument) })
	unchanged("Append(-1)", func() { _, err := l.Append(-1); expect("Append(-1)", err, ErrInvalidArgument) })
	unchanged("Append(too large)", func() { _, err := l.Append(16<<10 - 23); expect("Append larger than the ring", err, ErrTooLarge) })
	unchanged("Commit(zero)", func() { expect("Commit of the zero Reservation", l.Commit(Reservation{}), ErrNotReserved) })
	unchanged("Cancel(zero)", func() { expect("Cancel of the zero Reservation", l.Cancel(Reservation{}), ErrNotReserved) })

	// A reservation of another log, or committed already.
	r, err := other.Append(10)
	if err != nil {
		t.Fatal(err)
	}
	unchanged("Commit(foreign)", func() { expect("Commit of another log's reservation", l.Commit(r), ErrNotReserved) })
	if err := other.Commit(r); err != nil {
		t.Fatal(err)
	}
	expect("second Commit", other.Commit(r), ErrNotReserved)
	expect("Cancel after Commit", other.Cancel(r), ErrNotReserved)

	// Writes the guard refuses: outside a reservation, over a frame header,
	// past the payload, after Commit, journaled, into the table.
	r, err = l.Append(100)
	if err != nil {
		t.Fatal(err)
	}
	unchanged("refused writes", func() {
		for _, w := range []struct {
			what string
			off  int64
			n    int
		}{
			{"before the reservation", r.Offset() - 1000, 8},
			{"over the frame header", r.Offset() - 8, 16},
			{"past the payload", r.Offset() + 96, 8},
			{"committed entry", l.ring.off + logFrameHeaderBytes, 8},
			{"log table", d.geometry.logs.off, 8},
		} {
			_, err := d.WriteAt(make([]byte, w.n), w.off)
			expect("WriteAt "+w.what, err, ErrProtected)
		}
		err := d.Update(func(tx *Txn) error { return tx.Write(r.Offset(), make([]byte, 8)) })
		expect("journaled write into a reservation", err, ErrProtected)
	})
	unchanged("bad Log.Write", func() {
		expect("Log.Write of the wrong length", l.Write(r, make([]byte, 99)), ErrInvalidArgument)
		expect("Log.Write of another log's reservation", other.Write(r, make([]byte, 100)), ErrNotReserved)
	})
	if _, err := d.WriteAt(logContent(2, 100), r.Offset()); err != nil {
		t.Fatalf("write inside the reservation: %v", err)
	}
	if err := l.Cancel(r); err != nil {
		t.Fatal(err)
	}
	_, err = d.WriteAt(make([]byte, 8), r.Offset())
	expect("WriteAt after Cancel", err, ErrProtected)
	expect("Log.Write after Cancel", l.Write(r, make([]byte, 100)), ErrNotReserved)
	expect("Commit after Cancel", l.Commit(r), ErrNotReserved)
	if got := walkLog(t, l); len(got) != 1 {
		t.Fatalf("a cancelled entry is visible: %d entries", len(got))
	}

	// No space: fill the ring, with no GC.
	var filled int
	for {
		r, err := l.Append(1000)
		if err != nil {
			expect("Append to a full ring", err, ErrNoSpace)
			break
		}
		d.WriteAt(logContent(uint64(10+filled), 1000), r.Offset())
		if err := l.Commit(r); err != nil {
			t.Fatal(err)
		}
		filled++
	}
	unchanged("Append when full", func() { _, err := l.Append(1000); expect("Append when full", err, ErrNoSpace) })
	unchanged("GC without an owner", func() { expect("GC without an owner", l.GC(context.Background()), ErrInvalidArgument) })
	if err := l.SetOwner(nil, &LogOptions{GCThresholdBytes: 1 << 20}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("threshold above the ring: %v", err)
	}
	// An entry that fits the ring but not beside the room kept for GC's
	// copies can never be appended: ErrTooLarge, not ErrNoSpace.
	owner := relocatingSet{&setLive{live: map[uint64]int64{}}}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1, RelocationReserveBytes: 8 << 10}); err != nil {
		t.Fatal(err)
	}
	unchanged("Append(beyond the reserve)", func() {
		_, err := l.Append(8 << 10)
		expect("Append of an entry too large beside the reserve", err, ErrTooLarge)
	})

	// Closed device.
	pending, err := other.Append(8)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	_, err = d.Log("log")
	expect("Log after Close", err, ErrClosed)
	_, err = l.Append(8)
	expect("Append after Close", err, ErrClosed)
	expect("Commit after Close", other.Commit(pending), ErrClosed)
	expect("GC after Close", l.GC(context.Background()), ErrClosed)
	expect("SetOwner after Close", l.SetOwner(allLive{}, nil), ErrClosed)
	yielded := false
	for _, err := range l.Entries(0) {
		expect("Entries after Close", err, ErrClosed)
		yielded = true
	}
	if !yielded {
		t.Error("Entries after Close yielded nothing, want ErrClosed")
	}
	_, err = l.Read(l.ring.off + logFrameHeaderBytes)
	expect("Read after Close", err, ErrClosed)
	// An offset where no entry could start is ErrClosed too, not ErrNotFound.
	_, err = l.Read(1)
	expect("Read of no entry's offset after Close", err, ErrClosed)
}

func TestLogRegionsOptions(t *testing.T) {
	for _, c := range []struct {
		name  string
		rings []LogRegion
		want  error
	}{
		{"empty name", []LogRegion{{"", 4096}}, ErrInvalidArgument},
		{"long name", []LogRegion{{string(make([]byte, 33)), 4096}}, ErrInvalidArgument},
		{"zero byte in name", []LogRegion{{"a\x00b", 4096}}, ErrInvalidArgument},
		{"duplicate", []LogRegion{{"a", 4096}, {"a", 4096}}, ErrInvalidArgument},
		{"unaligned size", []LogRegion{{"a", 5000}}, ErrInvalidArgument},
		{"zero size", []LogRegion{{"a", 0}}, ErrInvalidArgument},
		{"more than the layout sums", []LogRegion{{"a", 1 << 60}, {"b", 1 << 60}, {"c", 1 << 60}}, ErrTooLarge},
	} {
		o := testOptions()
		o.LogRegions = c.rings
		if _, err := Create(filepath.Join(t.TempDir(), "d"), o); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// allLive keeps every entry and cannot relocate.
type allLive struct{}

func (allLive) IsLive(int64, []byte) bool { return true }

// setLive is an owner whose live entries are a set of ids, kept at the
// offsets it was told about. Wrapped in relocatingSet it relocates too.
type setLive struct {
	mu        sync.Mutex
	live      map[uint64]int64 // id -> payload offset
	relocated int
	check     func(off int64, entry []byte) // nil: none
	pinned    map[int64]bool                // offsets live whatever they hold
}

func (s *setLive) IsLive(off int64, entry []byte) bool {
	if s.check != nil {
		s.check(off, entry)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.live[logID(entry)]
	return ok && at == off || s.pinned[off]
}

func (s *setLive) add(id uint64, off int64) {
	s.mu.Lock()
	s.live[id] = off
	s.mu.Unlock()
}

func (s *setLive) remove(id uint64) {
	s.mu.Lock()
	delete(s.live, id)
	s.mu.Unlock()
}

func (s *setLive) offset(id uint64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live[id]
}

// relocatingSet is a setLive that follows its entries when GC moves them.
type relocatingSet struct{ *setLive }

func (s relocatingSet) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := logID(entry)
	at, ok := s.live[id]
	if !ok {
		return nil // deleted since GC asked: the copy is garbage
	}
	if at != oldOff {
		return fmt.Errorf("relocating entry %d from %d, which the owner has at %d", id, oldOff, at)
	}
	s.live[id] = newOff
	s.relocated++
	return nil
}

// endingSet is a relocatingSet told how GC's transactions end, which
// undoes the relocations of a transaction rolled back, as
// RelocationsEnder asks; failAt makes its n-th Relocate (counting from 1)
// fail.
type endingSet struct {
	relocatingSet
	calls, failAt int
	ended         []error
	undo          map[uint64]int64 // id -> offset before this transaction
	// bloatAt is the Relocate call (from 1) that journals more than the
	// journal takes, so that Commit fails; 0: none.
	bloatAt int
	// d, if set, is the device whose writer slot each RelocationsEnded
	// call finds taken (writerHeld) or free.
	d          *Device
	writerHeld []bool
}

func (s *endingSet) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	if s.calls++; s.calls == s.failAt {
		return errors.New("the owner refuses")
	}
	if s.calls == s.bloatAt {
		a, err := tx.Alloc(64 << 10)
		if err != nil {
			return err
		}
		if err := tx.Write(a.Offset(), make([]byte, 64<<10)); err != nil {
			return err
		}
	}
	if s.undo == nil {
		s.undo = map[uint64]int64{}
	}
	if _, ok := s.undo[logID(entry)]; !ok {
		s.undo[logID(entry)] = oldOff
	}
	return s.relocatingSet.Relocate(tx, oldOff, newOff, entry)
}

func (s *endingSet) RelocationsEnded(err error) {
	s.ended = append(s.ended, err)
	if s.d != nil {
		s.writerHeld = append(s.writerHeld, !writerFree(s.d))
	}
	if err != nil {
		for id, off := range s.undo {
			s.add(id, off)
		}
	}
	clear(s.undo)
}

// writerFree reports whether no transaction holds d's writer slot.
func writerFree(d *Device) bool {
	if !d.writer.TryLock() {
		return false
	}
	d.writer.Unlock()
	return true
}

// TestLogRelocationsEnded: a RelocationsEnder hears once per GC
// transaction how it ended: the error that rolled it back after its
// second Relocate failed (or, with bloat, after Commit refused the
// transaction as too large for the journal), then nil for the pass that
// commits. It hears of the rollback before the transaction gives up the
// writer slot: another transaction that began first could see, and
// journal, the owner's void relocations.
func TestLogRelocationsEnded(t *testing.T) {
	for _, bloat := range []bool{false, true} {
		t.Run(fmt.Sprintf("bloat=%v", bloat), func(t *testing.T) {
			d, _ := createLogDevice(t, LogRegion{"log", 64 << 10})
			l := mustLog(t, d, "log")
			owner := &endingSet{relocatingSet: relocatingSet{&setLive{live: map[uint64]int64{}}}, failAt: 2, d: d}
			if bloat {
				owner.failAt, owner.bloatAt = 0, 2
			}
			if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
				t.Fatal(err)
			}
			for id := range uint64(3) {
				owner.add(id, appendEntryT(t, l, logContent(id, 100)).Offset())
			}
			err := l.GC(context.Background())
			if err == nil || len(owner.ended) != 1 || !errors.Is(owner.ended[0], err) || bloat != errors.Is(err, ErrTooLarge) {
				t.Fatalf("GC with a failing transaction: %v; ended %v, want that error once", err, owner.ended)
			}
			if err := l.GC(context.Background()); err != nil || len(owner.ended) != 2 || owner.ended[1] != nil {
				t.Fatalf("GC: %v; ended %v, want a nil after the error", err, owner.ended)
			}
			if !owner.writerHeld[0] || owner.writerHeld[1] {
				t.Fatalf("writer slot taken at each RelocationsEnded: %v, want [true false]", owner.writerHeld)
			}
			for id := range uint64(3) {
				if p, err := l.Read(owner.offset(id)); err != nil || !isContent(p, id) {
					t.Fatalf("entry %d after relocation: %v", id, err)
				}
			}
			if st := d.Stats(); st.AllocatedPages != 0 {
				t.Fatalf("%d pages allocated, want the rolled-back transaction's page back", st.AllocatedPages)
			}
			mustCheck(t, d)
		})
	}
}

// TestLogAbandonedCopiesGiveBackTheirRoom: a GC pass whose transaction
// does not commit (its owner's Relocate fails or panics, its IsLive
// panics after two entries were copied, or its context ends while it
// waits for a reservation before its copies) gives the room
// of its copies back to the log. In a ring filled to its relocation
// reserve, the copies left as garbage took the reserve, and no later pass
// could copy the live entry at the head again: the log stayed full for
// good, though half of it was garbage.
func TestLogAbandonedCopiesGiveBackTheirRoom(t *testing.T) {
	for _, how := range []string{"Relocate fails", "Relocate panics", "IsLive panics", "the context ends"} {
		t.Run(how, func(t *testing.T) {
			d, _ := createLogDevice(t, LogRegion{"log", 64 << 10})
			l := mustLog(t, d, "log")
			p := &panickingSet{endingSet: endingSet{relocatingSet: relocatingSet{&setLive{live: map[uint64]int64{}}}}}
			owner := &p.endingSet
			switch how {
			case "Relocate fails":
				owner.failAt = 1
			case "Relocate panics":
				p.panicAt = 1
			case "IsLive panics":
				p.livePanicAt = 4 // entries 0 and 2, live, copied
			}
			if err := l.SetOwner(p, &LogOptions{GCThresholdBytes: -1}); err != nil {
				t.Fatal(err)
			}
			// With the context ending, the newest entry stays reserved.
			next, held := fillHalfLive(t, l, owner, how == "the context ends")
			full := l.Stats()
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err, recovered := runGC(l, ctx); err == nil && recovered == nil {
				t.Fatal("GC succeeded, want its transaction abandoned")
			}
			if s := l.Stats(); s.Tail != full.Tail || s.Relocations == 0 {
				t.Fatalf("after the abandoned pass the tail is at %d after %d relocations, want it back at %d after at least one", s.Tail, s.Relocations, full.Tail)
			}
			if held.log != nil {
				if err := l.Commit(held); err != nil {
					t.Fatal(err)
				}
			}
			wantReclaimedHalfLive(t, d, l, owner, next)
		})
	}
}

// fillHalfLive appends entries of 1,000 bytes to l, from id 0, until it
// has no room, every other one live in owner, and commits each; with
// hold it leaves the newest reserved, written, and returns it. It returns
// the id after the last.
func fillHalfLive(t *testing.T, l *Log, owner *endingSet, hold bool) (next uint64, held Reservation) {
	t.Helper()
	for ; ; next++ {
		data := logContent(next, 1000)
		r, err := l.Append(len(data))
		if errors.Is(err, ErrNoSpace) {
			return next, held
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Write(r, data); err != nil {
			t.Fatal(err)
		}
		if next%2 == 0 {
			owner.add(next, r.Offset())
		}
		if hold {
			if r, held = held, r; r.log == nil {
				continue
			}
		}
		if err := l.Commit(r); err != nil {
			t.Fatal(err)
		}
	}
}

// wantReclaimedHalfLive runs a GC of l, filled by fillHalfLive up to id
// next, that must free a quarter of the ring at least (half of it is
// garbage); then it appends entry next, reads every live entry back and
// checks d.
func wantReclaimedHalfLive(t *testing.T, d *Device, l *Log, owner *endingSet, next uint64) {
	t.Helper()
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.FreeBytes < s.SizeBytes/4 {
		t.Fatalf("GC freed %d of %d bytes, want a quarter of the ring at least: half of it is garbage", s.FreeBytes, s.SizeBytes)
	}
	appendEntryT(t, l, logContent(next, 1000))
	for live := uint64(0); live < next; live += 2 {
		if data, err := l.Read(owner.offset(live)); err != nil || !isContent(data, live) {
			t.Fatalf("live entry %d: %v", live, err)
		}
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestLogJournaledCopiesReused: the copies of a GC transaction that does
// not commit cannot go back to the log once another transaction has
// journaled a tail over them: here the Commit of a reservation before
// them, which the owner makes while GC asks it about an entry. The next
// pass relocates each entry to the copy already made of it rather than
// copy it again, so a ring filled to its relocation reserve does not stay
// full.
func TestLogJournaledCopiesReused(t *testing.T) {
	d, _, l, owner := logWithFailingRelocate(t)
	next, held := fillHalfLive(t, l, owner, true)
	full := l.Stats()
	failGCUnderTail(t, l, owner, held, false)
	if s := l.Stats(); s.DurableTail <= full.Tail {
		t.Fatalf("after the failed pass the durable tail is at %d, want past the copies after %d", s.DurableTail, full.Tail)
	}
	wantReclaimedHalfLive(t, d, l, owner, next)
}

// TestLogJournaledCopiesReusedAfterReopen: the copies of
// TestLogJournaledCopiesReused, journaled garbage, outlive the process
// that made them. After a reopen nothing in memory says whose copies they
// are, yet the first pass must still find the room to move the head.
func TestLogJournaledCopiesReusedAfterReopen(t *testing.T) {
	d, _, l, owner, next := reopenedWithLeftCopies(t)
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	wantReclaimedHalfLive(t, d, l, owner, next)
}

// reopenedWithLeftCopies returns TestLogJournaledCopiesReusedAfterReopen's
// log, reopened: full to its relocation reserve with the journaled garbage
// copies a failed pass left, which nothing in memory remembers, with no
// owner set; next is fillHalfLive's.
func reopenedWithLeftCopies(t *testing.T) (d *Device, path string, l *Log, owner *endingSet, next uint64) {
	t.Helper()
	d, path, l, owner = logWithFailingRelocate(t)
	next, held := fillHalfLive(t, l, owner, true)
	failGCUnderTail(t, l, owner, held, true)
	if s := l.Stats(); s.DurableTail != s.Tail || s.FreeBytes >= logFrameBytes(1000) {
		t.Fatalf("after the failed pass %+v, want the durable tail over every copy, and no room for another", s)
	}
	d = reopenLogDevice(t, d, path)
	return d, path, mustLog(t, d, "log"), owner, next
}

// TestLogCopiesOfAPassCutByACrash: the copies of
// TestLogJournaledCopiesReusedAfterReopen without any failure, left by a
// crash in the middle of a pass, after an appender's Commit made them
// durable and before the pass committed. The recovered log, full to its
// relocation reserve, must still give its garbage back.
func TestLogCopiesOfAPassCutByACrash(t *testing.T) {
	_, store, l, owner := simLogDevice(t, 0)
	next, held := fillHalfLive(t, l, owner, true)
	before := maps.Clone(owner.live)
	crash := commitHeldUnderGC(l, owner, &held, 1000, store)
	if err := l.GC(context.Background()); err != nil || crash.err != nil || crash.at < 0 {
		t.Fatalf("GC: %v; the held reservation's Commit: %v, at op %d", err, crash.err, crash.at)
	}
	img := openImage(t, store, crash.at, nil)
	defer img.Close()
	mustCheck(t, img)
	li := mustLog(t, img, "log")
	if s := li.Stats(); s.DurableTail != s.Tail || s.FreeBytes >= logFrameBytes(1000) {
		t.Fatalf("recovered %+v, want the copies durable and no room for another", s)
	}
	recovered := &endingSet{relocatingSet: relocatingSet{&setLive{live: before}}}
	if err := li.SetOwner(recovered, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	wantReclaimedHalfLive(t, img, li, recovered, next)
}

// TestLogCopiesAdoptedInARun: the copies a pass left behind (after a
// failed Relocate and a Close, or a crash) are of entries of different
// sizes: four of 2,000 bytes, then one of 3,800 bytes the pass had no room
// left to copy. After Open, copying the first four again into the room
// that adopting one copy frees would leave their old copies holding the
// reserve, and no room for the big one: each entry must take the copy
// already made of it. With drop, the owner lets the first entry go after
// the reopen, so that the first live entry GC meets is not at the head.
func TestLogCopiesAdoptedInARun(t *testing.T) {
	for _, c := range []struct{ crash, drop bool }{{false, false}, {true, false}, {true, true}} {
		crash := c.crash
		t.Run(fmt.Sprintf("crash=%v,drop=%v", crash, c.drop), func(t *testing.T) {
			failAt := 1
			if crash {
				failAt = 0
			}
			d, store, l, owner := simLogDevice(t, failAt)
			for id := range uint64(5) {
				owner.add(id, appendEntryT(t, l, logContent(id, 2000+1800*int(id/4))).Offset())
			}
			var held Reservation
			for id := uint64(5); ; id++ {
				r, err := l.Append(1000)
				if errors.Is(err, ErrNoSpace) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := l.Write(r, logContent(id, 1000)); err != nil {
					t.Fatal(err)
				}
				if id%6 == 0 {
					owner.add(id, r.Offset())
				}
				if r, held = held, r; r.log != nil {
					if err := l.Commit(r); err != nil {
						t.Fatal(err)
					}
				}
			}
			before := maps.Clone(owner.live)
			cut := commitHeldUnderGC(l, owner, &held, 2000, store)
			if err := l.GC(context.Background()); crash != (err == nil) || cut.err != nil || cut.at < 0 {
				t.Fatalf("GC: %v; the held reservation's Commit: %v, at op %d", err, cut.err, cut.at)
			}
			owner.check = nil
			if !crash {
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
				cut.at = store.Ops()
			}
			d = openImage(t, store, cut.at, nil)
			defer d.Close()
			mustCheck(t, d)
			l = mustLog(t, d, "log")
			if s := l.Stats(); s.FreeBytes >= logFrameBytes(2000) {
				t.Fatalf("recovered %+v, want the copies of the four there and no room for another", s)
			}
			if c.drop {
				delete(before, 0)
			}
			owner = &endingSet{relocatingSet: relocatingSet{&setLive{live: before}}}
			if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
				t.Fatal(err)
			}
			if err := l.GC(context.Background()); err != nil {
				t.Fatal(err)
			}
			if s := l.Stats(); s.FreeBytes < s.SizeBytes/4 {
				t.Fatalf("GC freed %d of %d bytes, want a quarter of the ring at least: two thirds of it is garbage", s.FreeBytes, s.SizeBytes)
			}
			appendEntryT(t, l, logContent(1<<20, 1000))
			for id := range before {
				if data, err := l.Read(owner.offset(id)); err != nil || !isContent(data, id) {
					t.Fatalf("live entry %d: %v", id, err)
				}
			}
			mustCheck(t, d)
		})
	}
}

// simLogDevice returns a device on the simulated store, syncing, with a
// 64 KiB log whose owner's Relocate call failAt fails (0: none), and no
// background GC.
func simLogDevice(t *testing.T, failAt int) (*Device, *simstore.Store, *Log, *endingSet) {
	t.Helper()
	o, err := (&Options{MaxSize: 8 << 20, MaxPageSize: 64 << 10, JournalSize: 64 << 10, LogRegions: []LogRegion{{"log", 64 << 10}}}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	d, store := simDevice(t, o)
	l := mustLog(t, d, "log")
	owner := &endingSet{relocatingSet: relocatingSet{&setLive{live: map[uint64]int64{}}}, failAt: failAt}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	return d, store, l, owner
}

// heldCommit is what commitHeldUnderGC saw of the held reservation's
// Commit: its error and, with a store, the store's trace length just after
// it (-1 until it is made).
type heldCommit struct {
	err error
	at  int
}

// commitHeldUnderGC has owner's IsLive commit *held, a reservation before
// GC's copies, once GC has copied an entry and, with room > 0, the ring has
// no room left for an entry of room bytes: the tail that Commit journals
// covers the copies. With store, the trace length it records is a crash in
// the middle of the pass, with those copies durable.
func commitHeldUnderGC(l *Log, owner *endingSet, held *Reservation, room int64, store *simstore.Store) *heldCommit {
	c := &heldCommit{at: -1}
	owner.check = func(int64, []byte) {
		s := l.Stats()
		if held.log != nil && s.Relocations > 0 && (room == 0 || s.FreeBytes < logFrameBytes(room)) {
			c.err, *held = l.Commit(*held), Reservation{}
			if store != nil {
				c.at = store.Ops()
			}
		}
	}
	return c
}

// TestLogLiveCopyNotAdopted: the entry a pass relocates the head's entry
// to after a reopen (see TestLogJournaledCopiesReusedAfterReopen) must be
// garbage. Here the owner holds the copies live as entries of their own:
// the pass must leave the ring as it is.
func TestLogLiveCopyNotAdopted(t *testing.T) {
	d, path, l, owner, next := reopenedWithLeftCopies(t)
	owner.pinned = map[int64]bool{}
	for e, err := range l.Entries(l.Stats().Head) {
		if err != nil {
			t.Fatal(err)
		}
		if id := logID(e.Data); id%2 == 0 && owner.offset(id) != e.Offset {
			owner.pinned[e.Offset] = true
		}
	}
	if len(owner.pinned) == 0 {
		t.Fatal("no copy of a live entry after the reopen")
	}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	before := l.Stats()
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Head != before.Head || s.Relocations != 0 {
		t.Fatalf("GC with every copy held live: %+v, want the head at %d and no relocation", s, before.Head)
	}
	// Nothing has changed: the next pass asks about the head's entry only.
	asked := 0
	owner.check = func(int64, []byte) { asked++ }
	if err := l.GC(context.Background()); err != nil || asked != 1 {
		t.Fatalf("a second GC: %v, asking IsLive %d times; want nil, once", err, asked)
	}
	owner.check = nil
	for off := range owner.pinned {
		if data, err := l.Read(off); err != nil || !isContent(data, logID(data)) {
			t.Fatalf("pinned copy at %d: %v", off, err)
		}
	}
	owner.pinned = nil
	d = reopenLogDevice(t, d, path)
	l = mustLog(t, d, "log")
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	wantReclaimedHalfLive(t, d, l, owner, next)
}

// TestLogAdoptionSearchCutByAPanic: the search through the ring that the
// first entry GC copies after a reopen makes for the copy a failed pass
// left (see TestLogJournaledCopiesReusedAfterReopen) asks IsLive about the
// copy it finds. An IsLive that panics there cuts the search short; the
// next pass must make it again, not take it as made and leave the ring
// full for good.
func TestLogAdoptionSearchCutByAPanic(t *testing.T) {
	d, _, l, owner, next := reopenedWithLeftCopies(t)
	// IsLive's first call is about the head's entry, its second about the
	// copy the search finds.
	p := &panickingSet{endingSet: *owner, livePanicAt: 2}
	if err := l.SetOwner(p, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	if _, recovered := runGC(l, context.Background()); recovered == nil {
		t.Fatalf("GC asked IsLive %d times without a panic, want one at the copy the search finds", p.liveCalls)
	}
	wantReclaimedHalfLive(t, d, l, &p.endingSet, next)
}

// logWithFailingRelocate returns a device at path with a 64 KiB log whose
// owner's first Relocate fails, and no background GC.
func logWithFailingRelocate(t *testing.T) (d *Device, path string, l *Log, owner *endingSet) {
	t.Helper()
	d, path = createLogDevice(t, LogRegion{"log", 64 << 10})
	l = mustLog(t, d, "log")
	owner = &endingSet{relocatingSet: relocatingSet{&setLive{live: map[uint64]int64{}}}, failAt: 1}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	return d, path, l, owner
}

// failGCUnderTail runs a GC of l that fails at owner's first Relocate,
// after owner's IsLive has committed held, a reservation before GC's
// copies, once GC has made one (all: once the ring has no room for
// another): the tail that Commit journals covers the copies, which the
// failed transaction then cannot give back.
func failGCUnderTail(t *testing.T, l *Log, owner *endingSet, held Reservation, all bool) {
	t.Helper()
	room := int64(0)
	if all {
		room = 1000
	}
	c := commitHeldUnderGC(l, owner, &held, room, nil)
	defer func() { owner.check = nil }()
	if err := l.GC(context.Background()); err == nil || c.err != nil || held.log != nil {
		t.Fatalf("GC: %v, the held reservation's Commit: %v (made: %v); want Relocate's failure and a nil", err, c.err, held.log == nil)
	}
}

// TestLogReusedCopyNotPassedInItsChunk: a copy that an earlier pass left
// (see TestLogJournaledCopiesReused) may lie close behind its entry,
// where the pass that relocates the entry to it meets it too. Until that
// pass's transaction commits, the owner does not hold the copy live: the
// pass must commit before it reaches the copy, not move the head past it
// as garbage and lose the entry.
func TestLogReusedCopyNotPassedInItsChunk(t *testing.T) {
	d, _, l, owner := logWithFailingRelocate(t)
	owner.add(0, appendEntryT(t, l, logContent(0, 1000)).Offset()) // live
	appendEntryT(t, l, logContent(1, 1000))                        // dead
	held, err := l.Append(1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(held, logContent(2, 1000)); err != nil {
		t.Fatal(err)
	}
	failGCUnderTail(t, l, owner, held, false)
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if data, err := l.Read(owner.offset(0)); err != nil || !isContent(data, 0) {
		t.Fatalf("entry 0 after GC, at %d: %v (%+v)", owner.offset(0), err, l.Stats())
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// panickingSet is an endingSet whose n-th Relocate (counting from 1)
// panics, and whose livePanicAt-th IsLive does.
type panickingSet struct {
	endingSet
	panicAt                int
	liveCalls, livePanicAt int
}

func (s *panickingSet) IsLive(off int64, entry []byte) bool {
	if s.liveCalls++; s.liveCalls == s.livePanicAt {
		panic("the owner panics")
	}
	return s.endingSet.IsLive(off, entry)
}

func (s *panickingSet) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	if s.calls+1 == s.panicAt {
		s.calls++
		panic("the owner panics")
	}
	return s.endingSet.Relocate(tx, oldOff, newOff, entry)
}

// TestLogRelocatePanicRollsBack: a Relocate that panics has GC roll its
// transaction back, tell the RelocationsEnder, and let the panic go on to
// GC's caller, as Update does for its fn. So does a RelocationsEnded that
// panics when told of a rollback (of a failed Relocate, or of a Commit
// refused as too large), which GC calls from inside the rollback, where
// the writer slot is held: the rollback ends first. Either way the writer
// slot is free again and the log and device go on: a later GC relocates
// every entry.
func TestLogRelocatePanicRollsBack(t *testing.T) {
	for _, c := range []struct {
		name, want string
		owner      func(base endingSet) (RelocationsEnder, *endingSet)
	}{
		{"Relocate panics", "the owner panics", func(base endingSet) (RelocationsEnder, *endingSet) {
			o := &panickingSet{endingSet: base, panicAt: 2}
			return o, &o.endingSet
		}},
		{"RelocationsEnded panics after a failed Relocate", "RelocationsEnded panics", func(base endingSet) (RelocationsEnder, *endingSet) {
			base.failAt = 1
			o := &endPanicSet{endingSet: base, armed: true}
			return o, &o.endingSet
		}},
		{"RelocationsEnded panics after a failed Commit", "RelocationsEnded panics", func(base endingSet) (RelocationsEnder, *endingSet) {
			base.bloatAt = 1
			o := &endPanicSet{endingSet: base, armed: true}
			return o, &o.endingSet
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, _ := createLogDevice(t, LogRegion{"log", 64 << 10})
			l := mustLog(t, d, "log")
			owner, set := c.owner(endingSet{relocatingSet: relocatingSet{&setLive{live: map[uint64]int64{}}}})
			if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
				t.Fatal(err)
			}
			for id := range uint64(3) {
				set.add(id, appendEntryT(t, l, logContent(id, 100)).Offset())
			}
			before := l.Stats()
			if err, recovered := runGC(l, context.Background()); recovered != c.want {
				t.Fatalf("GC: %v, recovered %v; want the owner's panic", err, recovered)
			}
			if !writerFree(d) {
				d.writer.Unlock() // let the test's Close end rather than wait forever
				t.Fatal("the writer slot is still held after the panic: GC's transaction was neither committed nor rolled back")
			}
			// The relocations were rolled back with the transaction:
			// the owner, told so, undid them.
			if len(set.ended) != 1 || set.ended[0] == nil {
				t.Fatalf("ended %v, want one error for the transaction the panic rolled back", set.ended)
			}
			if s := checkLogInvariants(t, l); s.Head != before.Head {
				t.Fatalf("head %d after the rolled-back pass, want %d", s.Head, before.Head)
			}
			if err := l.GC(context.Background()); err != nil || len(set.ended) != 2 || set.ended[1] != nil {
				t.Fatalf("GC after the panic: %v; ended %v, want a nil after the error", err, set.ended)
			}
			for id := range uint64(3) {
				if p, err := l.Read(set.offset(id)); err != nil || !isContent(p, id) {
					t.Fatalf("entry %d after relocation: %v", id, err)
				}
			}
			mustCheck(t, d)
		})
	}
}

// endPanicSet is an endingSet whose RelocationsEnded panics, once, when
// told of a rollback, after undoing the relocations.
type endPanicSet struct {
	endingSet
	armed bool
}

func (s *endPanicSet) RelocationsEnded(err error) {
	s.endingSet.RelocationsEnded(err)
	if err != nil && s.armed {
		s.armed = false
		panic("RelocationsEnded panics")
	}
}

// relocateReader is a relocatingSet that reads, inside each Relocate, the
// entry at its old and at its new offset, as a reader following the
// owner's index might then.
type relocateReader struct {
	relocatingSet
	l                  *Log
	oldReads, newReads []error
}

func (s *relocateReader) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	_, err := s.l.Read(oldOff)
	s.oldReads = append(s.oldReads, err)
	_, err = s.l.Read(newOff)
	s.newReads = append(s.newReads, err)
	return s.relocatingSet.Relocate(tx, oldOff, newOff, entry)
}

// TestLogReadDuringRelocate holds Relocate's documented contract: while
// GC's transaction is open, the entry reads at its old offset and not yet
// at its new one (ErrNotFound); once GC returns, the other way round.
func TestLogReadDuringRelocate(t *testing.T) {
	d, _ := createLogDevice(t, LogRegion{"log", 64 << 10})
	l := mustLog(t, d, "log")
	owner := &relocateReader{relocatingSet: relocatingSet{&setLive{live: map[uint64]int64{}}}, l: l}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	old := appendEntryT(t, l, logContent(0, 100)).Offset()
	owner.add(0, old)
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(owner.oldReads) != 1 || owner.oldReads[0] != nil || !errors.Is(owner.newReads[0], ErrNotFound) {
		t.Fatalf("reads inside Relocate: old offset %v, new offset %v; want the old one read and ErrNotFound at the new one", owner.oldReads, owner.newReads)
	}
	if p, err := l.Read(owner.offset(0)); err != nil || !isContent(p, 0) {
		t.Fatalf("the entry at its new offset after GC: %v", err)
	}
	if _, err := l.Read(old); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the entry at its old offset after GC: %v, want ErrNotFound", err)
	}
}

// TestLogGCStopsAtLiveEntry: without Relocator, GC passes dead entries and
// stops at the first live one; once it dies, GC goes on.
func TestLogGCStopsAtLiveEntry(t *testing.T) {
	d, _ := createLogDevice(t, LogRegion{"log", 64 << 10})
	l := mustLog(t, d, "log")
	owner := &setLive{live: map[uint64]int64{}}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	var rs []Reservation
	for i := range 10 {
		r := appendEntryT(t, l, logContent(uint64(i), 500))
		rs = append(rs, r)
	}
	owner.add(3, rs[3].Offset())
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := checkLogInvariants(t, l); s.Head != rs[3].Pos() {
		t.Fatalf("head %d, want it stopped at the live entry at %d", s.Head, rs[3].Pos())
	}
	if _, err := l.Read(rs[2].Offset()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Read of a reclaimed entry: %v", err)
	}
	if p, err := l.Read(rs[3].Offset()); err != nil || logID(p) != 3 {
		t.Fatalf("Read of the live entry: %v", err)
	}
	owner.remove(3)
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := checkLogInvariants(t, l); s.Head != s.DurableTail || s.UsedBytes != 0 {
		t.Fatalf("everything dead but %+v", s)
	}
}

// TestLogRelocationKeepsReclaiming pins one entry at the head for the whole
// test: GC relocates it each lap and space keeps being reclaimed across
// more than ten wraps of the ring.
func TestLogRelocationKeepsReclaiming(t *testing.T) {
	const ringBytes = 64 << 10
	d, path := createLogDevice(t, LogRegion{"log", ringBytes})
	l := mustLog(t, d, "log")
	owner := &setLive{live: map[uint64]int64{}}
	if err := l.SetOwner(relocatingSet{owner}, &LogOptions{GCThresholdBytes: ringBytes / 4}); err != nil {
		t.Fatal(err)
	}
	pinned := appendEntryT(t, l, logContent(0, 3000))
	owner.add(0, pinned.Offset())
	for i := uint64(1); l.Stats().Head < 12*ringBytes; i++ {
		p := logContent(i, 100+int(i*37%2000))
		r, err := l.Append(len(p))
		for errors.Is(err, ErrNoSpace) {
			if err := l.GC(context.Background()); err != nil {
				t.Fatal(err)
			}
			r, err = l.Append(len(p))
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.WriteAt(p, r.Offset()); err != nil {
			t.Fatal(err)
		}
		if err := l.Commit(r); err != nil {
			t.Fatal(err)
		}
		// A short-lived entry: live for a while, then dead.
		owner.add(i, r.Offset())
		if i > 4 {
			owner.remove(i - 4)
		}
		checkLogInvariants(t, l)
		if i > 100_000 {
			t.Fatalf("the head stalled: %+v", l.Stats())
		}
	}
	s := checkLogInvariants(t, l)
	t.Logf("wraps %d, relocations %d, reclaimed %d bytes, relocated %d bytes, GC runs %d",
		s.Head/ringBytes, s.Relocations, s.ReclaimedBytes, s.RelocatedBytes, s.GCRuns)
	if s.ReclaimedBytes < 10*ringBytes || owner.relocated < 10 {
		t.Fatalf("reclaimed %d bytes with %d relocations", s.ReclaimedBytes, owner.relocated)
	}
	p, err := l.Read(owner.offset(0))
	if err != nil || !bytes.Equal(p, logContent(0, 3000)) {
		t.Fatalf("the pinned entry after %d relocations: %v", owner.relocated, err)
	}
	// The owner's pointer and the head agree after reopen too.
	off := owner.offset(0)
	d2 := reopen(t, d, path, &Options{NoSync: true})
	if p, err := mustLog(t, d2, "log").Read(off); err != nil || !bytes.Equal(p, logContent(0, 3000)) {
		t.Fatalf("the pinned entry after reopen: %v", err)
	}
}

// TestLogCancelledPaddingStaysCounted: a reservation that skipped the
// ring's end and is cancelled gives its padding back to appends with the
// rest of its space, and PaddingBytes, which counts as appends reserve,
// keeps counting it, as LogStats documents.
func TestLogCancelledPaddingStaysCounted(t *testing.T) {
	const ringBytes = 16 << 10
	d, _ := createLogDevice(t, LogRegion{"log", ringBytes})
	l := mustLog(t, d, "log")
	// Nothing is live: GC makes room before the ring's end.
	if err := l.SetOwner(&setLive{live: map[uint64]int64{}}, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	appendEntryT(t, l, logContent(0, 10000))
	appendEntryT(t, l, logContent(1, 2000))
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := l.Stats()
	frame := logFrameBytes(6000)
	pad := ringBytes - before.Tail%ringBytes
	if before.Tail%ringBytes+frame <= ringBytes || before.UsedBytes != 0 {
		t.Fatalf("the tail at %d with %d bytes used, want the entry to need padding and none used", before.Tail, before.UsedBytes)
	}
	r, err := l.Append(6000)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pos() != before.Tail+pad {
		t.Fatalf("the reservation is at %d, want %d, past %d bytes of padding", r.Pos(), before.Tail+pad, pad)
	}
	if err := l.Cancel(r); err != nil {
		t.Fatal(err)
	}
	after := l.Stats()
	if after.Tail != before.Tail {
		t.Errorf("after Cancel the tail is at %d, want %d: the padding given back too", after.Tail, before.Tail)
	}
	if got := after.PaddingBytes - before.PaddingBytes; got != pad {
		t.Errorf("PaddingBytes grew by %d, want the cancelled reservation's %d", got, pad)
	}
}

// TestLogCopyPaddingCounted: a relocated copy that must skip the ring's
// end counts the padding it skips both in PaddingBytes and, with its
// frame, in RelocatedBytes, as LogStats documents.
func TestLogCopyPaddingCounted(t *testing.T) {
	const ringBytes = 16 << 10
	d, _ := createLogDevice(t, LogRegion{"log", ringBytes})
	l := mustLog(t, d, "log")
	owner := &setLive{live: map[uint64]int64{}}
	if err := l.SetOwner(relocatingSet{owner}, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	appendEntryT(t, l, logContent(0, 10000)) // dead
	live := appendEntryT(t, l, logContent(1, 3000))
	owner.add(1, live.Offset())
	appendEntryT(t, l, logContent(2, 900)) // dead
	before := l.Stats()
	frame := logFrameBytes(3000)
	pad := int64(0)
	if phys := before.Tail % ringBytes; phys+frame > ringBytes {
		pad = ringBytes - phys
	}
	if pad == 0 {
		t.Fatalf("the tail at %d leaves room for the copy before the ring's end", before.Tail)
	}
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := checkLogInvariants(t, l)
	if got := after.PaddingBytes - before.PaddingBytes; got != pad {
		t.Errorf("PaddingBytes grew by %d, want the copy's %d", got, pad)
	}
	if got := after.RelocatedBytes - before.RelocatedBytes; got != pad+frame || after.Relocations-before.Relocations != 1 {
		t.Errorf("RelocatedBytes grew by %d in %d relocations, want %d in one", got, after.Relocations-before.Relocations, pad+frame)
	}
	if p, err := l.Read(owner.offset(1)); err != nil || !isContent(p, 1) {
		t.Fatalf("the relocated entry: %v", err)
	}
}

// TestLogCloseStopsGC checks that Close leaves no goroutine behind, with
// background GC started and commits waiting.
func TestLogCloseStopsGC(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 5 {
		d, _ := createLogDevice(t, LogRegion{"a", 64 << 10}, LogRegion{"b", 64 << 10})
		for _, name := range []string{"a", "b"} {
			l := mustLog(t, d, name)
			if err := l.SetOwner(&setLive{live: map[uint64]int64{}}, &LogOptions{GCThresholdBytes: 60 << 10}); err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				appendEntryT(t, l, logContent(uint64(i), 1000))
			}
		}
		// A commit that waits for an earlier reservation never committed.
		l := mustLog(t, d, "a")
		l.Append(10)
		r, _ := l.Append(10)
		waiting := make(chan error)
		go func() { waiting <- l.Commit(r) }()
		time.Sleep(5 * time.Millisecond)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-waiting; !errors.Is(err, ErrClosed) {
			t.Fatalf("a commit waiting at Close returned %v", err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
}

// TestLogConcurrent runs appenders, relocating background GC and readers
// at once, for the race detector; then every live entry must read back.
func TestLogConcurrent(t *testing.T) {
	const ringBytes = 512 << 10
	d, _ := createLogDevice(t, LogRegion{"log", ringBytes})
	l := mustLog(t, d, "log")
	owner := &setLive{live: map[uint64]int64{}}
	if err := l.SetOwner(relocatingSet{owner}, nil); err != nil {
		t.Fatal(err)
	}
	const appenders, each = 4, 400
	var wg sync.WaitGroup
	errs := make(chan error, appenders+1)
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(a), 7))
			for i := range each {
				id := uint64(a*each + i)
				p := logContent(id, 8+rng.IntN(4000))
				r, err := l.Append(len(p))
				for try := 0; errors.Is(err, ErrNoSpace) && try < 1000; try++ {
					if err := l.GC(context.Background()); err != nil {
						errs <- err
						return
					}
					r, err = l.Append(len(p))
				}
				if err != nil {
					errs <- fmt.Errorf("%w; %+v", err, l.Stats())
					return
				}
				owner.add(id, r.Offset()) // live before GC can see it
				if _, err := d.WriteAt(p, r.Offset()); err != nil {
					errs <- err
					return
				}
				if err := l.Commit(r); err != nil {
					errs <- err
					return
				}
				// Each appender keeps its last 8 entries, and one in 50 for
				// good: the live set stays well inside the ring.
				if i >= 8 && (i-8)%50 != 0 {
					owner.remove(uint64(a*each + i - 8))
				}
			}
		}()
	}
	stop := make(chan struct{})
	go func() {
		defer close(errs)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for e, err := range l.Entries(0) {
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(e.Data, logContent(logID(e.Data), len(e.Data))) {
					errs <- fmt.Errorf("entry at %d holds bytes of no entry", e.Pos)
					return
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	for err := range errs {
		t.Fatal(err)
	}
	s := checkLogInvariants(t, l)
	owner.mu.Lock()
	defer owner.mu.Unlock()
	for id, off := range owner.live {
		p, err := l.Read(off)
		if err != nil || !bytes.Equal(p, logContent(id, len(p))) {
			t.Fatalf("live entry %d at %d: %v", id, off, err)
		}
	}
	t.Logf("%d live entries; %+v", len(owner.live), s)
}

// TestLogReadOnly opens a device with a log read-only: entries read back,
// and anything that would write is refused.
func TestLogReadOnly(t *testing.T) {
	d, path := createLogDevice(t, LogRegion{"log", 16 << 10})
	l := mustLog(t, d, "log")
	r := appendEntryT(t, l, logContent(5, 300))
	ro := reopen(t, d, path, &Options{ReadOnly: true})
	l = mustLog(t, ro, "log")
	if p, err := l.Read(r.Offset()); err != nil || logID(p) != 5 {
		t.Fatalf("Read: %v", err)
	}
	if _, err := l.Append(10); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Append on a read-only device: %v", err)
	}
	if err := l.GC(context.Background()); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("GC on a read-only device: %v", err)
	}
}

// TestLogPaddingAndCorruption fills a ring so that entries wrap, damages a
// frame and checks that walking and reading report it.
func TestLogPaddingAndCorruption(t *testing.T) {
	d, path := createLogDevice(t, LogRegion{"log", 8 << 10})
	l := mustLog(t, d, "log")
	owner := &setLive{live: map[uint64]int64{}}
	l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1})
	var last Reservation
	for i := range 12 {
		if i%3 == 0 {
			if err := l.GC(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		last = appendEntryT(t, l, logContent(uint64(i), 1500))
	}
	s := checkLogInvariants(t, l)
	if s.PaddingBytes == 0 || s.Head < 8<<10 {
		t.Fatalf("expected wrap-around with padding: %+v", s)
	}
	for _, e := range walkLog(t, l) {
		if !bytes.Equal(e.Data, logContent(logID(e.Data), 1500)) {
			t.Fatalf("entry at %d damaged", e.Pos)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	bad := corruptCopy(t, path, func(b []byte) []byte { b[last.Offset()+700] ^= 1; return b })
	d2, err := Open(bad, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	l = mustLog(t, d2, "log")
	if _, err := l.Read(last.Offset()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read of a damaged entry: %v", err)
	}
	var walkErr error
	for _, err := range l.Entries(0) {
		walkErr = err
	}
	if !errors.Is(walkErr, ErrCorrupt) {
		t.Fatalf("walking over a damaged entry: %v", walkErr)
	}
	// GC refuses to relocate it, and says so. (A dead one it passes
	// without reading: the owner's index no longer points there.)
	everything := &setLive{live: map[uint64]int64{}}
	for _, e := range walkLogUpTo(t, l, last.Pos()) {
		everything.add(logID(e.Data), e.Offset)
	}
	everything.add(11, last.Offset())
	l.SetOwner(relocatingSet{everything}, &LogOptions{GCThresholdBytes: -1})
	if err := l.GC(context.Background()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GC relocating a damaged entry: %v", err)
	}
	if err := l.GC(context.Background()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GC after finding damage: %v, want the same error again", err)
	}
	logs := d2.geometry.logs.off
	if err := d2.Close(); err != nil { // one device mapped at a time: 32-bit address spaces hold no more
		t.Fatal(err)
	}
	if _, err := Open(corruptCopy(t, path, func(b []byte) []byte { b[logs+70] ^= 1; return b }), &Options{NoSync: true}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a damaged log table: %v", err)
	}
}

func goldenLogTable() ([]byte, region) {
	logs := region{1 << 20, logTableBytes(2) + 8192 + 4096}
	slots := []logSlot{
		{name: "values", ring: region{logs.off + 4096, 8192}, head: 64, tail: 8000},
		{name: "wal", ring: region{logs.off + 4096 + 8192, 4096}, head: 1 << 40, tail: 1<<40 + 4096},
	}
	b := make([]byte, logTableHeaderBytes+2*logSlotBytes)
	encodeLogTable(b, slots)
	return b, logs
}

func TestLogTableRoundTrip(t *testing.T) {
	b, logs := goldenLogTable()
	slots, err := decodeLogTable(b, logs)
	if err != nil {
		t.Fatal(err)
	}
	again := make([]byte, len(b))
	encodeLogTable(again, slots)
	if !bytes.Equal(b, again) {
		t.Fatal("log table does not survive decode and encode")
	}
	for i := range logTableHeaderBytes + logSlotFixedBytes {
		c := bytes.Clone(b)
		c[i] ^= 0x10
		if _, err := decodeLogTable(c, logs); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipping a bit of byte %d: %v", i, err)
		}
	}
}

// readFrom returns a read function over table stored at off, zeroes
// elsewhere, that adds the bytes it is asked for to *asked.
func readFrom(table []byte, off int64, asked *int64) func(p []byte, at int64) error {
	return func(p []byte, at int64) error {
		*asked += int64(len(p))
		clear(p)
		if at-off < int64(len(table)) {
			copy(p, table[at-off:])
		}
		return nil
	}
}

// TestReadLogTable reads a table of 100 logs, two pages of slots, as Open
// does; then the table of two logs in a 2 GiB region with its count
// damaged (one bit flipped, and the largest the region allows): refused,
// having read and allocated a page of slots, not the hundreds of
// megabytes the count names.
func TestReadLogTable(t *testing.T) {
	const n = 100
	logs := region{1 << 20, logTableBytes(n) + n*4096}
	want := make([]logSlot, n)
	for i := range want {
		want[i] = logSlot{name: fmt.Sprintf("log%d", i), ring: region{logs.off + logTableBytes(n) + int64(i)*4096, 4096}, head: 8, tail: 16}
	}
	table := make([]byte, logTableHeaderBytes+n*logSlotBytes)
	encodeLogTable(table, want)
	var asked int64
	got, err := readLogTable(logs, readFrom(table, logs.off, &asked))
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("readLogTable of %d logs: %v, %d slots", n, err, len(got))
	}
	if asked != int64(len(table)) {
		t.Errorf("read %d bytes of a %d-byte table", asked, len(table))
	}

	golden, small := goldenLogTable()
	logs = region{small.off, 2 << 30}
	for _, count := range []uint32{2 | 1<<24, uint32((logs.size - logTableHeaderBytes) / logSlotBytes)} {
		b := bytes.Clone(golden)
		binary.LittleEndian.PutUint32(b[logTableCountOff:], count)
		asked = 0
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := readLogTable(logs, readFrom(b, logs.off, &asked))
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("count %d: %v, want ErrCorrupt", count, err)
		}
		if allocated := after.TotalAlloc - before.TotalAlloc; asked > 4096+logTableHeaderBytes || allocated > 1<<20 {
			t.Errorf("count %d: read %d bytes and allocated %d to refuse it", count, asked, allocated)
		}
	}
}

func FuzzLogTable(f *testing.F) {
	b, logs := goldenLogTable()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		// Read from a region holding b then zeroes, as decoded whole.
		var asked int64
		read, rerr := readLogTable(logs, readFrom(b, logs.off, &asked))
		whole, werr := decodeLogTable(append(bytes.Clone(b), make([]byte, max(0, logs.size-int64(len(b))))...), logs)
		if (werr == nil) != (rerr == nil) || werr == nil && !slices.Equal(read, whole) {
			t.Fatalf("decodeLogTable: %v; readLogTable: %v, %d slots", werr, rerr, len(read))
		}
		if rerr != nil && !errors.Is(rerr, ErrCorrupt) {
			t.Fatalf("readLogTable's error %v is not ErrCorrupt", rerr)
		}
		slots, err := decodeLogTable(b, logs)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		for _, s := range slots {
			if s.head > s.tail || s.tail-s.head > uint64(s.ring.size) || s.ring.off < logs.off || s.ring.end() > logs.end() {
				t.Fatalf("accepted an impossible slot %+v", s)
			}
		}
	})
}

// goldenCarvedLogTable is a carved log table with two logs, in slots 0
// and 5, of a device with 4 KiB to 64 KiB pages.
func goldenCarvedLogTable() ([]byte, *superblock) {
	sb := &superblock{minPage: 4096, maxPage: 64 << 10, heapOff: 1 << 20, capacity: 1 << 30}
	b := make([]byte, carvedLogLimit*logSlotBytes)
	encodeLogSlot(b, logSlot{name: "index", ring: region{sb.heapOff + 64<<10, 64 << 10}, head: 4096, tail: 4096 + 60000})
	encodeLogSlot(b[5*logSlotBytes:], logSlot{name: "blobs", ring: region{sb.heapOff + 8192, 4096}, head: 1 << 40, tail: 1<<40 + 4096})
	return b, sb
}

func TestCarvedLogTableRoundTrip(t *testing.T) {
	b, sb := goldenCarvedLogTable()
	slots, used, err := decodeCarvedLogTable(b, sb, 0)
	if err != nil {
		t.Fatal(err)
	}
	again := make([]byte, len(b))
	n := 0
	for i, s := range slots {
		if used[i] {
			encodeLogSlot(again[i*logSlotBytes:], s)
			n++
		}
	}
	if n != 2 || !bytes.Equal(b, again) {
		t.Fatalf("carved log table of %d used slots does not survive decode and encode", n)
	}
	bad := []struct {
		what string
		edit func(b []byte)
	}{
		{"an empty name in a used slot", func(b []byte) { b[0] = 0 }},
		{"a zero byte inside the name", func(b []byte) { b[1] = 0 }},
		{"a ring below the heap", func(b []byte) { binary.LittleEndian.PutUint64(b[logSlotRingOff:], uint64(sb.heapOff-65536)) }},
		{"a ring not aligned to its size", func(b []byte) { binary.LittleEndian.PutUint64(b[logSlotRingOff:], uint64(sb.heapOff+4096)) }},
		{"a ring size not a power of two", func(b []byte) { binary.LittleEndian.PutUint64(b[logSlotSizeOff:], 3*4096) }},
		{"a ring above MaxPageSize", func(b []byte) { binary.LittleEndian.PutUint64(b[logSlotSizeOff:], 128<<10) }},
		{"a ring past the capacity", func(b []byte) { binary.LittleEndian.PutUint64(b[logSlotRingOff:], uint64(sb.capacity)) }},
		{"head past tail", func(b []byte) { binary.LittleEndian.PutUint64(b[logSlotHeadOff:], 4096+60008) }},
		{"more used than the ring", func(b []byte) {
			binary.LittleEndian.PutUint64(b[logSlotHeadOff:], 0)
			binary.LittleEndian.PutUint64(b[logSlotTailOff:], 64<<10+8)
		}},
		{"a name twice", func(b []byte) { copy(b[5*logSlotBytes:], "index\x00") }},
		{"a stray byte in an unused slot", func(b []byte) { b[2*logSlotBytes+40] = 1 }},
	}
	for _, c := range bad {
		x := bytes.Clone(b)
		c.edit(x)
		if _, _, err := decodeCarvedLogTable(x, sb, 0); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", c.what, err)
		}
	}
}

func FuzzCarvedLogTable(f *testing.F) {
	b, sb := goldenCarvedLogTable()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		slots, used, err := decodeCarvedLogTable(b, sb, 0)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		for i, s := range slots {
			r := s.ring
			if used[i] && (s.head > s.tail || s.tail-s.head > uint64(r.size) || r.off < sb.heapOff || r.size > sb.maxPage || r.off%r.size != 0 || r.end() > sb.capacity) {
				t.Fatalf("accepted an impossible slot %+v", s)
			}
		}
	})
}

func FuzzLogFrame(f *testing.F) {
	entry := make([]byte, logFrameHeaderBytes)
	putLogFrame(entry, logFrame{pos: 4096, frameBytes: logFrameBytes(100), payloadBytes: 100, payloadCRC: 7})
	pad := make([]byte, logFrameHeaderBytes)
	putLogFrame(pad, logFrame{padding: true, pos: 4096, frameBytes: 512})
	f.Add(entry, int64(1024))
	f.Add(pad, int64(512))
	f.Add(pad, int64(16))
	f.Fuzz(func(t *testing.T, b []byte, room int64) {
		fr, err := parseLogFrame(b, 4096, room, 0)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if fr.pos != 4096 || fr.frameBytes > room || fr.frameBytes <= 0 && room > 0 || fr.frameBytes%8 != 0 && room >= logFrameHeaderBytes {
			t.Fatalf("accepted %+v with room %d", fr, room)
		}
	})
}

// The model test: one log driven by random steps and compared after each
// with a trivial model of what it must hold.

// modelItem is one frame the model expects in the ring.
type modelItem struct {
	id        uint64
	size      int
	start     uint64 // padding before the frame starts here
	pos, end  uint64
	res       Reservation
	state     int // itemReserved, itemCommitting, itemDone, itemCancelled
	deathStep int // the step from which the owner calls it dead; -1: live for good
	crc       uint32
	done      chan error // Commit's result, for itemCommitting
}

const (
	itemReserved = iota
	itemCommitting
	itemDone
	itemCancelled
)

type logModel struct {
	t    *testing.T
	seed uint64
	rng  *rand.Rand
	d    *Device
	path string
	l    *Log
	size uint64

	head, tail uint64
	items      []*modelItem // in position order, from the head
	byOff      map[int64]*modelItem
	step       int
	nextID     uint64
	durableMin uint64 // the largest end whose Commit returned
	reserve    uint64 // free bytes appends must leave, per the owner set
	pinned     []*modelItem

	// What GC told the owner, checked against the model after the pass.
	liveAsked   int
	relocations []modelRelocation

	appends, noSpace, commits, cancels, gcs, relocated, reopens int
	appendedBytes                                               int64
}

type modelRelocation struct{ oldOff, newOff int64 }

// modelOwner answers GC from the model, checking the bytes it is shown.
type modelOwner struct{ m *logModel }

func (o modelOwner) IsLive(off int64, entry []byte) bool {
	m := o.m
	it := m.byOff[off]
	if it == nil {
		m.t.Errorf("step %d: GC asked about offset %d, where the model has no entry", m.step, off)
		return false
	}
	if crc32.Checksum(entry, castagnoli) != it.crc || len(entry) != it.size {
		m.t.Errorf("GC showed entry %d with bytes the model does not hold", it.id)
	}
	m.liveAsked++
	return m.isLive(it)
}

type modelRelocator struct{ modelOwner }

func (o modelRelocator) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	m := o.m
	m.relocations = append(m.relocations, modelRelocation{oldOff, newOff})
	if it := m.byOff[oldOff]; it == nil || !m.isLive(it) {
		m.t.Errorf("GC relocated %d, which the model holds no live entry at", oldOff)
	}
	return nil
}

func (m *logModel) isLive(it *modelItem) bool {
	return it.deathStep < 0 || m.step < it.deathStep
}

// sizeFor draws an entry size from 1 B to 1 MiB, mostly small so that many
// thousand appends stay cheap.
func (m *logModel) sizeFor() int {
	switch r := m.rng.IntN(100); {
	case r < 60:
		return 1 + m.rng.IntN(256)
	case r < 88:
		return 257 + m.rng.IntN(16<<10-256)
	case r < 98:
		return 16<<10 + 1 + m.rng.IntN(112<<10)
	default:
		return 128<<10 + 1 + m.rng.IntN(896<<10)
	}
}

// predict returns where an append of size bytes lands, as the format says,
// and whether it leaves keep bytes free.
func (m *logModel) predict(size int, keep uint64) (start, pos, end uint64, ok bool) {
	frame := uint64(logFrameBytes(int64(size)))
	pad := uint64(0)
	if phys := m.tail % m.size; phys+frame > m.size {
		pad = m.size - phys
	}
	return m.tail, m.tail + pad, m.tail + pad + frame, m.tail-m.head+pad+frame+keep <= m.size
}

func (m *logModel) payloadOff(pos uint64) int64 {
	return m.l.ring.off + int64(pos%m.size) + logFrameHeaderBytes
}

func (m *logModel) doAppend() {
	t := m.t
	size := m.sizeFor()
	start, pos, end, ok := m.predict(size, m.reserve)
	r, err := m.l.Append(size)
	// A Commit under way may have given the cancelled space at the tail
	// back before this Append: the model takes the cancelled items at its
	// tail back, one by one, until it predicts what the log did.
	for err == nil && (!ok || r.Pos() != int64(pos)) && m.retractOne() {
		start, pos, end, ok = m.predict(size, m.reserve)
	}
	if !ok {
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("step %d: Append(%d) with %d free: %v, want ErrNoSpace", m.step, size, m.size-(m.tail-m.head), err)
		}
		m.noSpace++
		return
	}
	if err != nil {
		t.Fatalf("step %d: Append(%d): %v", m.step, size, err)
	}
	if r.Pos() != int64(pos) || r.Offset() != m.payloadOff(pos) || r.Size() != size {
		t.Fatalf("step %d: Append(%d) at pos %d offset %d, model says %d, %d", m.step, size, r.Pos(), r.Offset(), pos, m.payloadOff(pos))
	}
	id := m.nextID
	m.nextID++
	p := logContent(id, size)
	// Log.Write, or WriteAt in a few pieces as a caller filling a buffer
	// might, or both (WriteAt after Write: Commit must rewrite the header).
	how := m.rng.IntN(4)
	if how != 0 {
		if err := m.l.Write(r, logContent(id^0xdead, size)); err != nil {
			t.Fatalf("step %d: Log.Write: %v", m.step, err)
		}
	}
	if how == 1 {
		if err := m.l.Write(r, p); err != nil {
			t.Fatalf("step %d: Log.Write: %v", m.step, err)
		}
	} else {
		for from := 0; from < size; {
			n := min(size-from, 1+m.rng.IntN(size))
			if _, err := m.d.WriteAt(p[from:from+n], r.Offset()+int64(from)); err != nil {
				t.Fatalf("step %d: WriteAt into a reservation: %v", m.step, err)
			}
			from += n
		}
	}
	death := m.step + 1 + int(m.rng.ExpFloat64()*40)
	if m.rng.IntN(50) == 0 {
		death = m.step + 500 + m.rng.IntN(2000)
	}
	it := &modelItem{id: id, size: size, start: start, pos: pos, end: end, res: r, deathStep: death, crc: crc32.Checksum(p, castagnoli)}
	if size <= 64<<10 && m.rng.IntN(100) == 0 {
		// Pinned until a few newer pins replace it: such entries sit at
		// the head lap after lap, and only relocation gets past them.
		it.deathStep = -1
		m.pinned = append(m.pinned, it)
		if len(m.pinned) > 6 {
			m.pinned[0].deathStep = m.step + 1
			m.pinned = m.pinned[1:]
		}
	}
	m.items = append(m.items, it)
	m.byOff[r.Offset()] = it
	m.tail = end
	m.appends++
	m.appendedBytes += int64(size)
}

// pending returns the items whose Commit has not been called.
func (m *logModel) pending() []*modelItem {
	var out []*modelItem
	for _, it := range m.items {
		if it.state == itemReserved {
			out = append(out, it)
		}
	}
	return out
}

// settle waits for every Commit in the contiguous run of committed or
// cancelled items from the head, and returns the run's end.
func (m *logModel) settle() uint64 {
	end := m.head
	for _, it := range m.items {
		if it.state == itemReserved {
			break
		}
		if it.state == itemCommitting {
			if err := <-it.done; err != nil {
				m.t.Fatalf("step %d: Commit of entry %d: %v", m.step, it.id, err)
			}
			it.state = itemDone
			m.durableMin = max(m.durableMin, it.end)
		}
		end = it.end
	}
	return end
}

func (m *logModel) doCommit(cancel bool) {
	p := m.pending()
	if len(p) == 0 {
		return
	}
	it := p[m.rng.IntN(len(p))]
	if cancel {
		if err := m.l.Cancel(it.res); err != nil {
			m.t.Fatalf("step %d: Cancel: %v", m.step, err)
		}
		it.state = itemCancelled
		delete(m.byOff, it.res.Offset())
		m.cancels++
		// Cancelled items at the tail may go back to appends at once.
		m.dropPast(uint64(m.l.Stats().Tail), "Cancel")
		return
	}
	it.state = itemCommitting
	it.done = make(chan error, 1)
	go func(r Reservation) { it.done <- m.l.Commit(r) }(it.res)
	m.commits++
}

// drain commits every pending reservation, in random order.
func (m *logModel) drain() {
	for len(m.pending()) > 0 {
		m.doCommit(m.rng.IntN(20) == 0)
	}
	m.settle()
}

// doGC runs a full GC pass, relocating when no reservation is pending (a
// relocated copy waits for the appends before it), and checks what it did.
func (m *logModel) doGC(relocate bool) {
	t := m.t
	m.settle()
	// The same reserve for both owners: had appends filled the ring while
	// the owner could not relocate, a pinned entry at the head would stop
	// GC for good.
	opts := &LogOptions{GCThresholdBytes: -1, RelocationReserveBytes: int64(m.reserve)}
	if relocate {
		m.drain()
		m.l.SetOwner(modelRelocator{modelOwner{m}}, opts)
	} else {
		m.l.SetOwner(modelOwner{m}, opts)
	}
	m.retractedBy(uint64(m.l.Stats().Tail)) // the copies go to the tail
	before := m.l.Stats()
	m.relocations = m.relocations[:0]
	if err := m.l.GC(context.Background()); err != nil {
		t.Fatalf("step %d: GC: %v", m.step, err)
	}
	m.gcs++
	after := m.l.Stats()
	limit := uint64(before.DurableTail)
	newHead := uint64(after.Head)
	// Every relocation copied a live entry to the model's tail, in order.
	// The copies enter byOff only once the head has passed the old items:
	// until then the model's window may exceed the ring, and an old item
	// may share a copy's ring offset.
	var copies []*modelItem
	for _, rel := range m.relocations {
		old := m.byOff[rel.oldOff]
		// Room is not checked here: the pass may have moved the head
		// between chunks.
		start, pos, end, _ := m.predict(old.size, 0)
		if m.payloadOff(pos) != rel.newOff {
			t.Fatalf("step %d: GC copied entry %d to %d, the model's tail is at offset %d", m.step, old.id, rel.newOff, m.payloadOff(pos))
		}
		moved := *old
		moved.start, moved.pos, moved.end, moved.state = start, pos, end, itemDone
		moved.res = Reservation{}
		old.id = ^uint64(0) // the old copy is garbage now
		old.deathStep = 0
		m.items = append(m.items, &moved)
		copies = append(copies, &moved)
		m.tail = end
		m.relocated++
	}
	// The head passed only dead entries, padding and relocated ones, and
	// stopped at an item boundary.
	i := 0
	for ; i < len(m.items) && m.items[i].end <= newHead; i++ {
		it := m.items[i]
		if it.state != itemCancelled && it.id != ^uint64(0) && m.isLive(it) {
			t.Fatalf("step %d: GC passed the live entry %d at %d", m.step, it.id, it.pos)
		}
		if it.state != itemCancelled {
			delete(m.byOff, m.payloadOff(it.pos))
		}
	}
	if i < len(m.items) {
		// GC may pass the padding before a frame and stop at the frame.
		switch it := m.items[i]; {
		case newHead == it.pos && it.state != itemCancelled:
			it.start = newHead
		case newHead != it.start:
			t.Fatalf("step %d: head %d inside the item [%d, %d)", m.step, newHead, it.start, it.end)
		}
	}
	m.items = m.items[i:]
	m.head = newHead
	for _, c := range copies {
		m.byOff[m.payloadOff(c.pos)] = c
	}
	for _, it := range m.items {
		if it.id == ^uint64(0) {
			t.Fatalf("step %d: the old copy of a relocated entry at %d is still before the head %d", m.step, it.pos, newHead)
		}
	}
	// It stopped early only at a live entry it could not move.
	if newHead < limit {
		it := m.items[0]
		if !m.isLive(it) || it.state == itemCancelled {
			t.Fatalf("step %d: GC stopped at %d before the durable tail %d, at an entry that is dead", m.step, newHead, limit)
		}
		if relocate {
			if _, _, _, ok := m.predict(it.size, 0); ok {
				t.Fatalf("step %d: GC stopped at live entry %d though there was room to relocate it", m.step, it.id)
			}
		}
	}
}

func (m *logModel) reopen() {
	m.drain()
	if err := m.d.Close(); err != nil {
		m.t.Fatal(err)
	}
	d, err := Open(m.path, &Options{NoSync: true})
	if err != nil {
		m.t.Fatal(err)
	}
	m.d = d
	m.l = mustLog(m.t, d, "log")
	m.t.Cleanup(func() { d.Close() })
	m.reopens++
	m.l.SetOwner(modelOwner{m}, &LogOptions{GCThresholdBytes: -1, RelocationReserveBytes: int64(m.reserve)})
	// A cancelled item at the end may never have been journaled: the tail
	// after reopen is the durable one. drain settled every Commit, so only
	// cancelled items may lie past it.
	m.dropPast(uint64(m.l.Stats().Tail), "reopen")
}

// retractedBy takes into the model a tail that a Commit moved back, to
// the start of cancelled items at the tail: the Commit of the last
// reservation before them gives their space back.
func (m *logModel) retractedBy(tail uint64) {
	if tail < m.tail {
		m.dropPast(tail, "a Commit")
	}
}

// retractOne forgets the last item if it was cancelled, moving the tail
// back to its start as the log may, and reports whether it did.
func (m *logModel) retractOne() bool {
	if len(m.items) == 0 || m.items[len(m.items)-1].state != itemCancelled {
		return false
	}
	m.tail = m.items[len(m.items)-1].start
	m.items = m.items[:len(m.items)-1]
	return true
}

// dropPast forgets the items from tail on, which the log dropped when
// how (Cancel or reopen) moved its tail back there: they must all be
// cancelled ones. A committed entry, one being committed or reserved, or
// a copy GC relocated (durable with its pass) lost here is a failure, not
// something for the model to forget.
func (m *logModel) dropPast(tail uint64, how string) {
	for len(m.items) > 0 && m.items[len(m.items)-1].start >= tail {
		it := m.items[len(m.items)-1]
		if it.state != itemCancelled {
			what := map[int]string{itemReserved: "reserved", itemCommitting: "being committed", itemDone: "whose Commit returned"}[it.state]
			if it.res == (Reservation{}) {
				what = "that GC relocated"
			}
			m.t.Fatalf("seed %d step %d: %s lost entry %d at [%d, %d), %s: the tail came back at %d, the model's was %d",
				m.seed, m.step, how, it.id, it.pos, it.end, what, tail, m.tail)
		}
		m.items = m.items[:len(m.items)-1]
	}
	m.tail = tail
}

// check compares the log with the model: positions, every frame header in
// [head, durable tail), and the payloads of a few entries (all of them
// when full is set).
func (m *logModel) check(full bool) {
	t := m.t
	s := checkLogInvariants(t, m.l)
	m.retractedBy(uint64(s.Tail))
	prefix := m.head
	for _, it := range m.items {
		if it.state == itemReserved || it.state == itemCommitting {
			break
		}
		prefix = it.end
	}
	switch {
	case uint64(s.Head) != m.head || uint64(s.Tail) != m.tail:
		t.Fatalf("step %d: head %d tail %d, model %d %d", m.step, s.Head, s.Tail, m.head, m.tail)
	case uint64(s.DurableTail) > prefix:
		t.Fatalf("step %d: durable tail %d passes the committed prefix ending at %d", m.step, s.DurableTail, prefix)
	case uint64(s.DurableTail) < min(m.durableMin, prefix):
		t.Fatalf("step %d: durable tail %d below the end %d of a returned Commit", m.step, s.DurableTail, m.durableMin)
	}
	durable := uint64(s.DurableTail)
	var sample []*modelItem
	for _, it := range m.items {
		if it.end > durable || it.state == itemCancelled {
			continue
		}
		// The frame header matches what the model wrote.
		at := m.l.ring.off + int64(it.pos%m.size)
		hdr, err := m.d.Slice(at, logFrameHeaderBytes)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parseLogFrame(hdr, it.pos, int64(m.size-it.pos%m.size), at)
		if err != nil || f.padding || int(f.payloadBytes) != it.size || f.payloadCRC != it.crc {
			t.Fatalf("step %d: frame of entry %d at %d: %+v, %v", m.step, it.id, it.pos, f, err)
		}
		if it.id != ^uint64(0) {
			sample = append(sample, it)
		}
	}
	if !full {
		// The newest durable entry and one at random; all of them at
		// the periodic full checks.
		m.rng.Shuffle(len(sample), func(i, j int) { sample[i], sample[j] = sample[j], sample[i] })
		sample = sample[:min(len(sample), 2)]
	}
	for _, it := range sample {
		p, err := m.l.Read(m.payloadOff(it.pos))
		if err != nil || !isContent(p, it.id) || len(p) != it.size {
			t.Fatalf("step %d: entry %d at %d does not read back: %v", m.step, it.id, it.pos, err)
		}
	}
	if full {
		// The walk yields exactly the model's durable entries, in order.
		var want []*modelItem
		for _, it := range m.items {
			if it.end <= durable && it.state != itemCancelled {
				want = append(want, it)
			}
		}
		i := 0
		for e, err := range m.l.Entries(0) {
			if err != nil {
				t.Fatalf("step %d: Entries: %v", m.step, err)
			}
			if i >= len(want) || uint64(e.Pos) != want[i].pos || crc32.Checksum(e.Data, castagnoli) != want[i].crc {
				t.Fatalf("step %d: walk entry %d at %d does not match the model", m.step, i, e.Pos)
			}
			i++
		}
		if i != len(want) {
			t.Fatalf("step %d: walked %d entries, model has %d", m.step, i, len(want))
		}
	}
}

func TestLogModel(t *testing.T) {
	seed := logTestSeed(t)
	appends := 50_000
	if *logOpsFlag > 0 {
		appends = *logOpsFlag
	} else if raceEnabled() || testing.Short() {
		appends = 5_000
	}
	const ringBytes = 4 << 20
	d, path := createLogDevice(t, LogRegion{"log", ringBytes})
	m := &logModel{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x10c)), d: d, path: path,
		l: mustLog(t, d, "log"), size: ringBytes, byOff: map[int64]*modelItem{},
	}
	m.reserve = ringBytes / 8
	m.l.SetOwner(modelOwner{m}, &LogOptions{GCThresholdBytes: -1, RelocationReserveBytes: int64(m.reserve)})
	start := time.Now()
	for m.appends < appends {
		m.step++
		// GC mostly when space runs short: a full pass relocates every
		// live entry, and doing that every few steps would only measure
		// copying.
		short := m.size-(m.tail-m.head) < m.size/2 || m.rng.IntN(10) == 0
		switch r := m.rng.IntN(100); {
		case r < 50:
			if len(m.pending()) < 24 {
				m.doAppend()
			}
		case r < 80:
			m.doCommit(false)
		case r < 82:
			m.doCommit(true)
		case r < 93:
			if short {
				m.doGC(false)
			}
		case r < 97:
			if short {
				m.doGC(true)
			}
		case r < 99:
			m.drain()
		default:
			if m.rng.IntN(10) == 0 {
				m.reopen()
			}
		}
		m.settle()
		m.check(m.step%1024 == 0)
	}
	// A seed whose GC always kept ahead never met a full ring (likelier in
	// the short run): append and commit, without GC, until one is refused.
	for m.noSpace == 0 {
		m.step++
		m.doAppend()
		m.doCommit(false)
		m.settle()
		m.check(false)
	}
	m.drain()
	m.check(true)
	s := m.l.Stats()
	t.Logf("%d steps in %v: %d appends (%d MiB), %d refused for space, %d commits, %d cancels, %d GC passes, %d relocations, %d reopens, %d ring wraps; stats %+v",
		m.step, time.Since(start).Round(time.Millisecond), m.appends, m.appendedBytes>>20, m.noSpace, m.commits, m.cancels, m.gcs, m.relocated, m.reopens, s.Head/ringBytes, s)
	if m.relocated == 0 || m.noSpace == 0 || s.Head/ringBytes < 10 {
		t.Fatalf("the workload missed a case: %d relocations, %d refusals, %d wraps", m.relocated, m.noSpace, s.Head/ringBytes)
	}
}

// The crash test: appenders, deletions and relocating background GC run on
// a simulated store; then, for every sync point and many random points of
// its trace, the test opens what a power loss there would have left and
// checks the log's contract. The owner keeps its index (entry id -> offset)
// in the root area, journaled, as a storage engine would: written after
// Commit returns, repointed by Relocate in GC's transaction, cleared by a
// deletion whose entry GC may reclaim only once the clearing is durable.

const (
	logCrashRingBytes = 256 << 10
	logCrashSlotBytes = 16 // offset u64, id+1 u32, size u32
)

var logCrashPointsFlag = flag.Int("log.points", 0, "random crash points in TestLogCrash; 0 means the default (1,500; a quarter under -race or -tags invariants)")

// crashOwner is the storage engine of the crash test.
type crashOwner struct {
	d        *Device
	rootOff  int64
	slots    int64
	mu       sync.Mutex
	live     map[uint64]*crashLive // id -> where the entry is now
	relocate int

	// failEvery makes the first Relocate fail, and every failEvery-th
	// after it (0: none), which rolls its GC transaction back; failed
	// counts them. The first fails so that a workload whose GC relocates
	// little (under the race detector, on a loaded machine) still fails
	// one.
	failEvery, calls, failed int
	moves                    []crashMove // this transaction's, to undo if it fails
}

// crashMove is a relocation the owner made in memory, from old to new.
type crashMove struct {
	id       uint64
	old, new int64
}

// errRelocateInjected is the failure of crashOwner's first Relocate and
// every failEvery-th after it.
var errRelocateInjected = errors.New("relocate failure injected by the test")

type crashLive struct {
	off      int64
	size     int
	deleting bool // its clearing is committed or on its way: Relocate must not index it again
}

func (o *crashOwner) slotOff(id uint64) int64 {
	return o.rootOff + int64(id%uint64(o.slots))*logCrashSlotBytes
}

func (o *crashOwner) IsLive(off int64, entry []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.live[logID(entry)]
	return e != nil && e.off == off
}

func (o *crashOwner) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.calls++; o.failEvery > 0 && (o.calls-1)%o.failEvery == 0 {
		o.failed++
		return errRelocateInjected
	}
	id := logID(entry)
	e := o.live[id]
	if e == nil {
		return nil // deleted since GC asked: the copy is garbage
	}
	if e.off != oldOff {
		return fmt.Errorf("relocate of entry %d from %d: the owner has it at %d", id, oldOff, e.off)
	}
	e.off = newOff
	o.moves = append(o.moves, crashMove{id, oldOff, newOff})
	o.relocate++
	if e.deleting {
		return nil
	}
	return tx.Write(o.slotOff(id), o.slot(id, e))
}

// RelocationsEnded undoes the transaction's moves if it did not commit.
func (o *crashOwner) RelocationsEnded(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.moves) - 1; err != nil && i >= 0; i-- {
		m := o.moves[i]
		if e := o.live[m.id]; e != nil && e.off == m.new {
			e.off = m.old
			o.relocate--
		}
	}
	o.moves = o.moves[:0]
}

func (o *crashOwner) slot(id uint64, e *crashLive) []byte {
	var b [logCrashSlotBytes]byte
	if e != nil {
		binary.LittleEndian.PutUint64(b[0:], uint64(e.off))
		binary.LittleEndian.PutUint32(b[8:], uint32(id+1))
		binary.LittleEndian.PutUint32(b[12:], uint32(e.size))
	}
	return b[:]
}

// index records entry id's offset, as the owner has it now, durably.
func (o *crashOwner) index(id uint64) error {
	return o.d.Update(func(tx *Txn) error {
		o.mu.Lock()
		defer o.mu.Unlock()
		e := o.live[id]
		if e == nil || e.deleting {
			return nil
		}
		return tx.Write(o.slotOff(id), o.slot(id, e))
	})
}

// remove clears entry id from the index; GC may reclaim it once that is
// durable.
func (o *crashOwner) remove(id uint64) error {
	err := o.d.Update(func(tx *Txn) error {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.live[id].deleting = true
		return tx.Write(o.slotOff(id), o.slot(id, nil))
	})
	if err != nil {
		return err
	}
	o.mu.Lock()
	delete(o.live, id)
	o.mu.Unlock()
	return nil
}

// crashEntry is what the workload knows of one entry.
type crashEntry struct {
	id                                         uint64
	size                                       int
	firstOff                                   int64
	reservedAt, commitAt, returnedAt, deleteAt int // trace lengths; -1: never
}

// logCrashAppender appends entries to a log from several goroutines, as
// the crash tests' storage engine: it writes each entry with Log.Write or
// with two WriteAt calls, commits it (now and then cancels it instead),
// indexes it with its owner and deletes older ones, and records in entries
// the trace lengths at which each step began and ended.
type logCrashAppender struct {
	d     *Device
	l     *Log
	store *simstore.Store
	owner *crashOwner
	// pool, if set, stages each entry's bytes in one of its buffers, as
	// an engine writing from pooled I/O buffers would; nil allocates.
	pool *Pool

	mu      sync.Mutex
	entries []*crashEntry
	nextID  uint64
}

// run appends count entries, keeping about the last six of its own.
func (a *logCrashAppender) run(rng *rand.Rand, count int) error {
	l, store, owner := a.l, a.store, a.owner
	var mine []*crashEntry // live, oldest first
	for range count {
		size := 8 + rng.IntN(6000)
		r, err := appendOrGC(l, size)
		if err != nil {
			return fmt.Errorf("%w; %+v", err, l.Stats())
		}
		a.mu.Lock()
		id := a.nextID
		a.nextID++
		e := &crashEntry{id: id, size: size, firstOff: r.Offset(), reservedAt: store.Ops(), commitAt: -1, returnedAt: -1, deleteAt: -1}
		a.entries = append(a.entries, e)
		a.mu.Unlock()
		owner.mu.Lock()
		owner.live[id] = &crashLive{off: r.Offset(), size: size}
		owner.mu.Unlock()
		if err := a.write(rng, r, id); err != nil {
			return err
		}
		if rng.IntN(40) == 0 {
			// Given up: never visible, and the tail must pass it.
			owner.mu.Lock()
			delete(owner.live, id)
			owner.mu.Unlock()
			if err := l.Cancel(r); err != nil {
				return err
			}
			continue
		}
		a.mu.Lock()
		e.commitAt = store.Ops()
		a.mu.Unlock()
		if err := l.Commit(r); err != nil {
			return err
		}
		a.mu.Lock()
		e.returnedAt = store.Ops()
		a.mu.Unlock()
		if err := owner.index(id); err != nil {
			return err
		}
		mine = append(mine, e)
		// Keep about the last six, and now and then one for long.
		if len(mine) > 6 {
			victim := rng.IntN(len(mine) - 5)
			if rng.IntN(8) == 0 {
				victim = 0 // pinned ones go too, eventually
			} else if victim == 0 && len(mine) < 12 {
				continue
			}
			v := mine[victim]
			mine = append(mine[:victim], mine[victim+1:]...)
			a.mu.Lock()
			v.deleteAt = store.Ops()
			a.mu.Unlock()
			if err := owner.remove(v.id); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendOrGC appends an entry of size bytes, running GC when the ring is
// full, up to a hundred times.
func appendOrGC(l *Log, size int) (Reservation, error) {
	r, err := l.Append(size)
	for try := 0; errors.Is(err, ErrNoSpace) && try < 100; try++ {
		if err := l.GC(context.Background()); err != nil && !errors.Is(err, errRelocateInjected) {
			return r, err
		}
		r, err = l.Append(size)
	}
	return r, err
}

// write writes entry id's bytes into r: with Log.Write, or in two WriteAt
// calls, the second half first.
func (a *logCrashAppender) write(rng *rand.Rand, r Reservation, id uint64) error {
	p := logContent(id, r.Size())
	if a.pool == nil {
		return a.writeFrom(rng, r, p)
	}
	b, err := a.pool.Get(context.Background())
	if err != nil {
		return err
	}
	err = a.writeFrom(rng, r, append(b.Bytes()[:0], p...))
	return errors.Join(err, a.pool.Put(b))
}

func (a *logCrashAppender) writeFrom(rng *rand.Rand, r Reservation, p []byte) error {
	if rng.IntN(2) == 0 {
		return a.l.Write(r, p)
	}
	half := rng.IntN(len(p))
	if _, err := a.d.WriteAt(p[half:], r.Offset()+int64(half)); err != nil {
		return err
	}
	_, err := a.d.WriteAt(p[:half], r.Offset())
	return err
}

// createLogCrashDevice creates a device of opts on a simulated store and
// returns it, the store (closed when the test ends), and how many
// operations creating it took.
func createLogCrashDevice(t *testing.T, opts *Options) (*Device, *simstore.Store, int) {
	t.Helper()
	o, err := opts.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	store := simstore.New(o.MaxSize)
	t.Cleanup(func() { store.Close() })
	// Slow syncs, as a disk's are, so that commits queue behind a journal
	// write and appends overlap the transactions that free their space.
	d, err := createOn(crashStore{Store: store, syncDelay: 50 * time.Microsecond}, o)
	if err != nil {
		t.Fatal(err)
	}
	return d, store, store.Ops()
}

func TestLogCrash(t *testing.T) {
	seed := logTestSeed(t)
	d, store, createdAt := createLogCrashDevice(t, &Options{
		MaxSize:     8 << 20,
		MaxPageSize: 64 << 10,
		JournalSize: minJournalBytes,
		RootSize:    64 << 10,
		LogRegions:  []LogRegion{{"log", logCrashRingBytes}},
	})
	l := mustLog(t, d, "log")
	rootOff, rootSize := d.Root()
	// One Relocate in 25 fails and rolls its GC transaction back, which
	// leaves copies behind.
	owner := &crashOwner{d: d, rootOff: rootOff, slots: rootSize / logCrashSlotBytes, live: map[uint64]*crashLive{}, failEvery: 25}
	// A low threshold and reserve keep the ring nearly full, so appends
	// race for space the moment GC frees it: the harshest case for the
	// rule that freed space is reused only once its release is durable.
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: 24 << 10, RelocationReserveBytes: 16 << 10}); err != nil {
		t.Fatal(err)
	}

	const appenders = 3
	perAppender := 350
	if raceEnabled() {
		perAppender = 150
	}
	ap := &logCrashAppender{d: d, l: l, store: store, owner: owner}
	var wg sync.WaitGroup
	errs := make(chan error, appenders)
	start := time.Now()
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ap.run(rand.New(rand.NewPCG(seed, uint64(a))), perAppender); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	entries := ap.entries
	stats := l.Stats()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ops, syncs := store.Ops(), store.SyncPoints()
	t.Logf("workload: %d entries, %d relocations (%d failed Relocate calls), %d ring wraps, %d GC runs; %d ops, %d syncs; %v",
		len(entries), owner.relocate, owner.failed, stats.Head/logCrashRingBytes, stats.GCRuns, ops, len(syncs), time.Since(start).Round(time.Millisecond))
	if stats.Head < 3*logCrashRingBytes || owner.relocate == 0 || owner.failed == 0 {
		t.Fatalf("the workload did not wrap the ring, relocate, and fail a Relocate: %+v", stats)
	}

	randomPoints := crashSampledPoints(1500)
	if *logCrashPointsFlag > 0 {
		randomPoints = *logCrashPointsFlag
	}
	points, syncPoints := logCrashPoints(t, syncs, createdAt, ops, randomPoints, seed)
	start = time.Now()
	c := &logCrashChecker{t: t, entries: entries, rootOff: rootOff, slots: rootSize / logCrashSlotBytes}
	for i, n := range points {
		c.check(store, n, rand.New(rand.NewPCG(seed, uint64(i))), i%20 == 0)
		if c.violations > 10 {
			t.Fatal("too many violations; stopping")
		}
	}
	t.Logf("crash points: %d (%d at syncs, %d random); per image on average %.1f entries checked through the index, %.1f walked; %d images appended to after recovery; %v",
		len(points), syncPoints, randomPoints, float64(c.indexed)/float64(len(points)), float64(c.walked)/float64(len(points)), c.reused, time.Since(start).Round(time.Millisecond))
	t.Logf("violations: %d", c.violations)
}

// logCrashPoints returns the trace lengths to crash at, ascending (the
// store replays its trace once for ascending points): just before and just
// after every sync from op from on (in a sampled run, those crashSyncSample
// keeps), then random points up to total. It also returns how many are at
// syncs.
func logCrashPoints(t *testing.T, syncs []int, from, total, random int, seed uint64) (points []int, atSyncs int) {
	t.Helper()
	var fromOn []int
	for _, i := range syncs {
		if i >= from {
			fromOn = append(fromOn, i)
		}
	}
	for _, i := range crashSyncSample(t, fromOn, seed) {
		points = append(points, i, i+1)
	}
	atSyncs = len(points)
	rng := rand.New(rand.NewPCG(seed, 99))
	for range random {
		points = append(points, from+rng.IntN(total-from+1))
	}
	sort.Ints(points)
	return points, atSyncs
}

type logCrashChecker struct {
	t       *testing.T
	entries []*crashEntry
	rootOff int64
	slots   int64

	violations, indexed, walked, reused int
	// image names the image in failures, with its count of operations
	// after it: "crash after" if empty.
	image string
}

func (c *logCrashChecker) fail(n int, img *simstore.Store, format string, args ...any) {
	c.t.Helper()
	c.violations++
	image := c.image
	if image == "" {
		image = "crash after"
	}
	c.t.Errorf("%s %d ops: %s (%s)", image, n, fmt.Sprintf(format, args...), img.Describe())
}

// check opens the image of a crash after n operations and checks: every
// entry the recovered index names reads back intact at its offset (GC never
// passed a live entry, relocation and head moved together); every entry
// whose Commit had returned, and whose deletion had not begun, is found;
// no entry whose Commit had not begun is visible; nothing torn is
// returned. With reuse, the recovered log must take new entries.
func (c *logCrashChecker) check(store *simstore.Store, n int, rng *rand.Rand, reuse bool) {
	img, err := store.Image(n, rng)
	if err != nil {
		c.t.Fatal(err)
	}
	defer img.Close()
	d, err := openOn(img, &Options{})
	if err != nil {
		c.fail(n, img, "Open: %v", err)
		return
	}
	defer d.Close()
	c.checkOpen(d, img, n, reuse)
}

// checkOpen checks the log "log" of d, recovered from img, the image of a
// crash after n operations, as check does.
func (c *logCrashChecker) checkOpen(d *Device, img *simstore.Store, n int, reuse bool) {
	l, err := d.Log("log")
	if err != nil {
		c.fail(n, img, "Log: %v", err)
		return
	}
	s := l.Stats()
	if !(s.Head <= s.DurableTail && s.DurableTail == s.Tail && s.UsedBytes+s.FreeBytes == s.SizeBytes) {
		c.fail(n, img, "recovered positions %+v", s)
	}
	byID := make(map[uint64]*crashEntry, len(c.entries))
	for _, e := range c.entries {
		byID[e.id] = e
	}
	// The index.
	root := make([]byte, c.slots*logCrashSlotBytes)
	if _, err := d.ReadAt(root, c.rootOff); err != nil {
		c.t.Fatal(err)
	}
	index := make(map[uint64]int64)
	for i := int64(0); i < c.slots; i++ {
		slot := root[i*logCrashSlotBytes:]
		idPlus := binary.LittleEndian.Uint32(slot[8:])
		if idPlus == 0 {
			continue
		}
		id, off, size := uint64(idPlus-1), int64(binary.LittleEndian.Uint64(slot)), int(binary.LittleEndian.Uint32(slot[12:]))
		index[id] = off
		p, err := l.Read(off)
		c.indexed++
		if err != nil || len(p) != size || !isContent(p, id) {
			c.fail(n, img, "indexed entry %d at %d (head %d, durable tail %d): %v", id, off, s.Head, s.DurableTail, err)
		}
	}
	// The walk.
	seen := make(map[uint64]bool)
	for e, err := range l.Entries(0) {
		if err != nil {
			c.fail(n, img, "walk: %v", err)
			break
		}
		c.walked++
		if len(e.Data) < 8 || !isContent(e.Data, logID(e.Data)) {
			c.fail(n, img, "walked entry at %d holds bytes of no entry", e.Pos)
			continue
		}
		id := logID(e.Data)
		w := byID[id]
		if w == nil || w.commitAt < 0 || w.commitAt > n {
			c.fail(n, img, "entry %d at %d is visible though its Commit had not begun", id, e.Pos)
		}
		seen[id] = true
	}
	for _, e := range c.entries {
		switch {
		case e.returnedAt >= 0 && e.returnedAt <= n && (e.deleteAt < 0 || e.deleteAt >= n) && !seen[e.id]:
			c.fail(n, img, "entry %d, whose Commit returned at op %d, is gone", e.id, e.returnedAt)
		case e.reservedAt <= n && (e.commitAt < 0 || e.commitAt > n):
			// A later entry may sit there once a cancelled one's space
			// came round again; this one must not.
			if p, err := l.Read(e.firstOff); err == nil && (len(p) < 8 || logID(p) == e.id) || err != nil && !errors.Is(err, ErrNotFound) {
				c.fail(n, img, "Read of entry %d, reserved but not committed: %v", e.id, err)
			}
		}
	}
	if reuse {
		// As the engine would after a restart, GC keeps what the index
		// names: copies that GC transactions rolled back before the
		// crash left behind must not hold the ring full.
		c.reused++
		owner := &setLive{live: index}
		if err := l.SetOwner(relocatingSet{owner}, &LogOptions{GCThresholdBytes: -1}); err != nil {
			c.t.Fatal(err)
		}
		if err := l.GC(context.Background()); err != nil {
			c.fail(n, img, "GC after recovery: %v", err)
		}
		for i := range 3 {
			p := logContent(1<<40+uint64(i), 3000)
			r, err := l.Append(len(p))
			if err == nil {
				_, err = d.WriteAt(p, r.Offset())
			}
			if err == nil {
				err = l.Commit(r)
			}
			if err == nil {
				_, err = l.Read(r.Offset())
			}
			if err != nil {
				c.fail(n, img, "append after recovery: %v", err)
			}
		}
	}
}

// gatedStore is a simulated store whose syncs can be held up, to look at a
// log while a transaction waits for the disk.
type gatedStore struct {
	*simstore.Store
	mu      sync.Mutex
	armed   bool
	blocked chan struct{} // closed when a sync starts waiting
	release chan struct{} // closed to let it go on
}

func (g *gatedStore) Sync() error {
	g.mu.Lock()
	armed := g.armed
	g.armed = false
	g.mu.Unlock()
	if armed {
		close(g.blocked)
		<-g.release
	}
	return g.Store.Sync()
}

// arm makes the next sync wait until release is called (at the latest
// when the test ends, so that a failure does not hang Close).
func (g *gatedStore) arm(t *testing.T) (blocked <-chan struct{}, release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed = true
	g.blocked, g.release = make(chan struct{}), make(chan struct{})
	release = sync.OnceFunc(func() { close(g.release) })
	t.Cleanup(release)
	return g.blocked, release
}

// TestLogDurabilityOrder holds the disk still while a Commit and a GC pass
// wait for it: the entry must stay invisible and Commit must not return
// until the tail is durable, and the space GC freed must not be handed out
// before the new head is durable (a crash would bring the old head back,
// pointing at overwritten bytes).
func TestLogDurabilityOrder(t *testing.T) {
	o, err := (&Options{MaxSize: 4 << 20, MaxPageSize: 64 << 10, JournalSize: minJournalBytes, LogRegions: []LogRegion{{"log", 64 << 10}}}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedStore{Store: simstore.New(o.MaxSize)}
	t.Cleanup(func() { g.Store.Close() })
	d, err := createOn(g, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	l := mustLog(t, d, "log")
	l.SetOwner(&setLive{live: map[uint64]int64{}}, &LogOptions{GCThresholdBytes: -1})

	r, err := l.Append(1000)
	if err != nil {
		t.Fatal(err)
	}
	d.WriteAt(logContent(1, 1000), r.Offset())
	blocked, release := g.arm(t)
	done := make(chan error, 1)
	go func() { done <- l.Commit(r) }()
	<-blocked
	select {
	case err := <-done:
		t.Fatalf("Commit returned %v while its tail waited for the disk", err)
	case <-time.After(20 * time.Millisecond):
	}
	if n := len(walkLog(t, l)); n != 0 || l.Stats().DurableTail != 0 {
		t.Fatalf("%d entries visible, durable tail %d, before the tail is durable", n, l.Stats().DurableTail)
	}
	if _, err := l.Read(r.Offset()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Read before the tail is durable: %v", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(walkLog(t, l)); n != 1 {
		t.Fatalf("%d entries visible after Commit returned", n)
	}

	// Fill the ring, then free it all with GC held at the disk.
	for {
		r, err := l.Append(1000)
		if errors.Is(err, ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		d.WriteAt(logContent(2, 1000), r.Offset())
		if err := l.Commit(r); err != nil {
			t.Fatal(err)
		}
	}
	full := l.Stats()
	blocked, release = g.arm(t)
	go func() { done <- l.GC(context.Background()) }()
	<-blocked
	time.Sleep(5 * time.Millisecond)
	if _, err := l.Append(1000); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Append while GC's head waits for the disk: %v, want ErrNoSpace", err)
	}
	if s := l.Stats(); s.Head != full.Head {
		t.Fatalf("head moved to %d before it was durable", s.Head)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := checkLogInvariants(t, l); s.Head != full.DurableTail {
		t.Fatalf("GC left the head at %d, want %d", s.Head, full.DurableTail)
	}
	if _, err := l.Append(1000); err != nil {
		t.Fatalf("Append after GC: %v", err)
	}
}

// TestLogRelocationWaitsForEarlierAppends: a relocated copy lands behind a
// reservation not yet committed, so the tail cannot cover the copy yet and
// GC must not move the head past the original until it can.
func TestLogRelocationWaitsForEarlierAppends(t *testing.T) {
	d, _ := createLogDevice(t, LogRegion{"log", 64 << 10})
	l := mustLog(t, d, "log")
	owner := &setLive{live: map[uint64]int64{}}
	l.SetOwner(relocatingSet{owner}, &LogOptions{GCThresholdBytes: -1})
	pinned := appendEntryT(t, l, logContent(0, 2000))
	owner.add(0, pinned.Offset())
	for i := 1; i < 5; i++ {
		appendEntryT(t, l, logContent(uint64(i), 2000))
	}
	r, err := l.Append(100)
	if err != nil {
		t.Fatal(err)
	}
	before := l.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := l.GC(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GC with an earlier reservation open: %v, want it to wait until ctx ends", err)
	}
	if s := l.Stats(); s.Head != before.Head || owner.offset(0) != pinned.Offset() || owner.relocated != 0 {
		t.Fatalf("GC moved the head to %d or the owner's entry to %d before its copy could be durable", s.Head, owner.offset(0))
	}
	d.WriteAt(logContent(9, 100), r.Offset())
	if err := l.Commit(r); err != nil {
		t.Fatal(err)
	}
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := checkLogInvariants(t, l)
	if s.Head <= before.Head || owner.relocated == 0 {
		t.Fatalf("GC did not move on once the reservation committed: %+v", s)
	}
	if p, err := l.Read(owner.offset(0)); err != nil || !isContent(p, 0) {
		t.Fatalf("relocated entry: %v", err)
	}
}

// TestLogGCDeadlineBehindAnotherPass calls GC with a deadline while
// another pass waits for an earlier reservation: it must return the
// deadline's error when the deadline passes, not wait for the other pass
// to end. Before, it waited for the lock the other pass held; a watchdog
// commits the reservation after 10 s so that such a wait ends.
func TestLogGCDeadlineBehindAnotherPass(t *testing.T) {
	d, _ := createLogDevice(t, LogRegion{"log", 64 << 10})
	l := mustLog(t, d, "log")
	owner := &setLive{live: map[uint64]int64{}}
	l.SetOwner(relocatingSet{owner}, &LogOptions{GCThresholdBytes: -1})
	owner.add(0, appendEntryT(t, l, logContent(0, 2000)).Offset())
	r, err := l.Append(100)
	if err != nil {
		t.Fatal(err)
	}
	runs := l.Stats().GCRuns
	first := make(chan error, 1)
	go func() { first <- l.GC(context.Background()) }()
	for l.Stats().GCRuns == runs { // under way, waiting for r
		time.Sleep(time.Millisecond)
	}
	second := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		second <- l.GC(ctx)
	}()
	var got error
	select {
	case got = <-second:
	case <-time.After(10 * time.Second):
		t.Error("GC with a 50 ms deadline still waits for the other pass after 10 s")
	}
	d.WriteAt(logContent(9, 100), r.Offset())
	if err := l.Commit(r); err != nil {
		t.Fatal(err)
	}
	if got == nil {
		got = <-second
	}
	if !errors.Is(got, context.DeadlineExceeded) {
		t.Errorf("GC behind another pass: %v, want context.DeadlineExceeded", got)
	}
	if err := <-first; err != nil {
		t.Fatalf("the first pass: %v", err)
	}
	checkLogInvariants(t, l)
}

// valueIndex is a storage engine's index of its value log, for the example:
// key -> offset of the entry that holds the value. A put indexes its entry
// before committing it, so that GC never finds it dead in between.
type valueIndex struct {
	mu    sync.Mutex
	offs  map[string]int64
	moves map[string][2]int64 // relocations of GC's open transaction: key -> old, new
}

// IsLive reports whether the index points at off.
func (x *valueIndex) IsLive(off int64, entry []byte) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	key, _, _ := bytes.Cut(entry, []byte("="))
	return x.offs[string(key)] == off
}

// Relocate repoints the key at the entry's new copy, until GC's
// transaction ends (RelocationsEnded). A real engine would also journal
// its on-disk index in tx.
func (x *valueIndex) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	key, _, _ := bytes.Cut(entry, []byte("="))
	if x.offs[string(key)] == oldOff {
		x.offs[string(key)] = newOff
		x.moves[string(key)] = [2]int64{oldOff, newOff}
	}
	return nil
}

// RelocationsEnded keeps the relocations if GC's transaction committed,
// and points the keys back at their old entries if not.
func (x *valueIndex) RelocationsEnded(err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for key, m := range x.moves {
		if err != nil && x.offs[key] == m[1] {
			x.offs[key] = m[0]
		}
	}
	clear(x.moves)
}

func ExampleDevice_CreateLog() {
	dir, err := os.MkdirTemp("", "pagealloc-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	d, err := Create(filepath.Join(dir, "device"), &Options{MaxSize: 1 << 30})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	// A ring of one 1 MiB heap page, recorded durably with its page.
	wal, err := d.CreateLog("wal", 1<<20)
	if err != nil {
		panic(err)
	}
	entry := []byte("set a=1")
	r, err := wal.Append(len(entry))
	if err != nil {
		panic(err)
	}
	if err := wal.Write(r, entry); err != nil {
		panic(err)
	}
	if err := wal.Commit(r); err != nil {
		panic(err)
	}
	fmt.Println(wal.Stats().SizeBytes, d.Stats().AllocatedPages)
	// Dropping it frees the page in the transaction that forgets the log.
	if err := d.DropLog("wal"); err != nil {
		panic(err)
	}
	_, err = d.Log("wal")
	fmt.Println(errors.Is(err, ErrNotFound), d.Stats().AllocatedPages)
	// Output:
	// 1048576 1
	// true 0
}

func ExampleLog() {
	dir, err := os.MkdirTemp("", "pagealloc-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	d, err := Create(filepath.Join(dir, "device"), &Options{
		MaxSize:    1 << 30,
		LogRegions: []LogRegion{{Name: "values", Size: 1 << 20}},
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	log, err := d.Log("values")
	if err != nil {
		panic(err)
	}
	index := &valueIndex{offs: map[string]int64{}, moves: map[string][2]int64{}}
	if err := log.SetOwner(index, nil); err != nil {
		panic(err)
	}
	put := func(key, value string) {
		entry := []byte(key + "=" + value)
		r, err := log.Append(len(entry))
		if err != nil {
			panic(err)
		}
		if err := log.Write(r, entry); err != nil {
			panic(err)
		}
		// Indexed first: GC may look at the entry once it is durable,
		// before Commit returns.
		index.mu.Lock()
		index.offs[key] = r.Offset()
		index.mu.Unlock()
		if err := log.Commit(r); err != nil { // durable once it returns
			panic(err) // a real engine would point the key back
		}
	}
	put("a", "1")
	put("b", "2")
	put("a", "3") // the first entry for a is garbage now
	// A full pass drops a=1 and moves the live entries behind it to the
	// tail, repointing the index.
	if err := log.GC(context.Background()); err != nil {
		panic(err)
	}
	for e, err := range log.Entries(0) {
		if err != nil {
			panic(err)
		}
		fmt.Println(string(e.Data))
	}
	// Output:
	// b=2
	// a=3
}

// Carved logs: rings allocated from the heap by CreateLog.

// carvedLogDevice creates a device without log regions, with 4 KiB to
// 64 KiB pages, and closes it when the test ends.
func carvedLogDevice(t *testing.T, opts *Options) (*Device, string) {
	t.Helper()
	o := testOptions()
	if opts != nil {
		o = opts
	}
	if o.MaxPageSize == 0 {
		o.MaxPageSize = 64 << 10
	}
	return createTestDevice(t, o)
}

func mustCreateLog(t testing.TB, d *Device, name string, size int64) *Log {
	t.Helper()
	l, err := d.CreateLog(name, size)
	if err != nil {
		t.Fatalf("CreateLog(%q, %d): %v", name, size, err)
	}
	return l
}

// reopenLogDevice closes d, opens the device at path again and checks it.
func reopenLogDevice(t *testing.T, d *Device, path string) *Device {
	t.Helper()
	d = reopen(t, d, path, &Options{NoSync: true})
	mustCheck(t, d)
	return d
}

func mustCheck(t *testing.T, d *Device) {
	t.Helper()
	if err := d.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

// wantEntries checks that l holds exactly the entries with ids, in order.
func wantEntries(t *testing.T, l *Log, ids []uint64, size int) {
	t.Helper()
	got := walkLog(t, l)
	if len(got) != len(ids) {
		t.Fatalf("log %q holds %d entries, want %d", l.Name(), len(got), len(ids))
	}
	for i, e := range got {
		if len(e.Data) != size || !isContent(e.Data, ids[i]) {
			t.Fatalf("log %q entry %d is not entry %d", l.Name(), i, ids[i])
		}
	}
}

func TestCreateLogDropLogReopen(t *testing.T) {
	d, path := carvedLogDevice(t, nil)
	a := mustCreateLog(t, d, "a", 40000) // rounded up to a 64 KiB page
	b := mustCreateLog(t, d, "b", 1)     // rounded up to MinPageSize
	if got := a.Stats().SizeBytes; got != 64<<10 {
		t.Fatalf("log a has %d bytes of ring, want 65536", got)
	}
	if got := b.Stats().SizeBytes; got != 4096 {
		t.Fatalf("log b has %d bytes of ring, want 4096", got)
	}
	if l := mustLog(t, d, "a"); l != a {
		t.Fatal("Device.Log returned another *Log than CreateLog")
	}
	if st := d.Stats(); st.AllocatedPages != 2 || st.UsedBytes != 64<<10+4096 {
		t.Fatalf("two carved logs, allocator stats %+v", st)
	}
	var aIDs, bIDs []uint64
	for i := range uint64(20) {
		appendEntryT(t, a, logContent(i, 1000))
		aIDs = append(aIDs, i)
		if i%5 == 0 {
			appendEntryT(t, b, logContent(100+i, 1000))
			bIDs = append(bIDs, 100+i)
		}
	}
	mustCheck(t, d)
	d = reopenLogDevice(t, d, path)
	a, b = mustLog(t, d, "a"), mustLog(t, d, "b")
	wantEntries(t, a, aIDs, 1000)
	wantEntries(t, b, bIDs, 1000)
	ringA := a.ring
	last := appendEntryT(t, a, logContent(50, 1000)) // a reservation of the log about to go

	statsBefore := a.Stats()
	if err := d.DropLog("a"); err != nil {
		t.Fatal(err)
	}
	if got := a.Stats(); got != statsBefore {
		t.Errorf("Stats of the dropped log %+v, want those it had when dropped, %+v", got, statsBefore)
	}
	if _, err := d.Log("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Log of a dropped log: %v, want ErrNotFound", err)
	}
	if _, err := a.Append(10); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append to a dropped log: %v, want ErrClosed", err)
	}
	yielded := false
	for _, err := range a.Entries(0) {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Entries of a dropped log: %v, want ErrClosed", err)
		}
		yielded = true
	}
	if !yielded {
		t.Fatal("Entries of a dropped log yielded nothing, want ErrClosed")
	}
	if _, err := a.Read(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read of a dropped log: %v, want ErrClosed", err)
	}
	for what, err := range map[string]error{
		"SetOwner": a.SetOwner(allLive{}, nil),
		"GC":       a.GC(context.Background()),
		"Write":    a.Write(last, logContent(99, 1000)),
		"Commit":   a.Commit(last),
		"Cancel":   a.Cancel(last),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s on a dropped log: %v, want ErrClosed", what, err)
		}
	}
	if st := d.Stats(); st.AllocatedPages != 1 || st.PendingPages != 1 || st.PendingBytes != 64<<10 {
		t.Fatalf("after dropping log a, allocator stats %+v: its page should be pending", st)
	}
	mustCheck(t, d)
	wantEntries(t, b, bIDs, 1000)
	d = reopenLogDevice(t, d, path)
	if _, err := d.Log("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a dropped log came back after reopen: %v", err)
	}
	b = mustLog(t, d, "b")
	wantEntries(t, b, bIDs, 1000)
	// The name is free again; the new log is empty whatever its page held.
	a = mustCreateLog(t, d, "a", 64<<10)
	if got := walkLog(t, a); len(got) != 0 {
		t.Fatalf("a new log holds %d entries", len(got))
	}
	t.Logf("first ring of a [%d, +%d), second [%d, +%d)", ringA.off, ringA.size, a.ring.off, a.ring.size)
	appendEntryT(t, a, logContent(7, 500))
	wantEntries(t, a, []uint64{7}, 500)
	if st := d.Stats(); st.AllocatedPages != 2 {
		t.Fatalf("two carved logs, %d allocated pages", st.AllocatedPages)
	}
	mustCheck(t, d)
}

// TestCarvedLogBeside checks that carved logs and logs laid out at Create
// share one name space, and that a log laid out at Create is not dropped.
func TestCarvedLogBeside(t *testing.T) {
	d, path := createLogDevice(t, LogRegion{"fixed", 16 << 10})
	if _, err := d.CreateLog("fixed", 4096); !errors.Is(err, ErrExists) {
		t.Fatalf("CreateLog of a Create-time name: %v, want ErrExists", err)
	}
	if err := d.DropLog("fixed"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("DropLog of a Create-time log: %v, want ErrInvalidArgument", err)
	}
	c := mustCreateLog(t, d, "carved", 8192)
	appendEntryT(t, mustLog(t, d, "fixed"), logContent(1, 100))
	appendEntryT(t, c, logContent(2, 100))
	d = reopenLogDevice(t, d, path)
	wantEntries(t, mustLog(t, d, "fixed"), []uint64{1}, 100)
	wantEntries(t, mustLog(t, d, "carved"), []uint64{2}, 100)
}

// blockingOwner holds GC inside IsLive until released.
type blockingOwner struct {
	entered chan struct{}
	release chan struct{}
}

func (o *blockingOwner) IsLive(int64, []byte) bool {
	select {
	case o.entered <- struct{}{}:
	default:
	}
	<-o.release
	return false
}

func TestCreateLogBadInput(t *testing.T) {
	o := testOptions()
	o.MaxPageSize = 64 << 10
	o.MaxSize = 2 << 20
	d, path := carvedLogDevice(t, o)
	l := mustCreateLog(t, d, "log", 8192)
	appendEntryT(t, l, logContent(1, 100))

	// Every refused call leaves the device as it was.
	refused := func(what string, want error, fn func() error) {
		t.Helper()
		before, stats, logs := readAll(t, d), d.Stats(), slices.Clone(d.logs.all())
		if err := fn(); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
		if !bytes.Equal(before, readAll(t, d)) {
			t.Errorf("%s changed the device headers", what)
		}
		if after := d.Stats(); fmt.Sprint(after) != fmt.Sprint(stats) {
			t.Errorf("%s changed the allocator: %+v -> %+v", what, stats, after)
		}
		if !slices.Equal(logs, d.logs.all()) {
			t.Errorf("%s changed the set of logs", what)
		}
		mustCheck(t, d)
	}
	create := func(name string, size int64) func() error {
		return func() error { _, err := d.CreateLog(name, size); return err }
	}
	refused("duplicate name", ErrExists, create("log", 4096))
	refused("empty name", ErrInvalidArgument, create("", 4096))
	refused("name of 33 bytes", ErrInvalidArgument, create(string(bytes.Repeat([]byte{'n'}, 33)), 4096))
	refused("name with a zero byte", ErrInvalidArgument, create("a\x00b", 4096))
	refused("zero size", ErrInvalidArgument, create("zero", 0))
	refused("negative size", ErrInvalidArgument, create("negative", -4096))
	refused("size above MaxPageSize", ErrTooLarge, create("large", 64<<10+1))
	refused("drop of an unknown name", ErrNotFound, func() error { return d.DropLog("missing") })

	// The ring's page is the log's: the caller may neither free it nor
	// write it outside a reservation.
	refused("Free of the ring's page", ErrInvalidFree, func() error {
		return d.Update(func(tx *Txn) error { return tx.Free(makeAddr(l.ring.off, 13)) })
	})
	refused("WriteAt into the ring", ErrProtected, func() error {
		_, err := d.WriteAt([]byte("stray"), l.ring.off+4000)
		return err
	})
	refused("Txn.Write into the ring", ErrProtected, func() error {
		return d.Update(func(tx *Txn) error { return tx.Write(l.ring.off+4000, []byte("stray")) })
	})

	// In use: a reservation not yet committed.
	r, err := l.Append(100)
	if err != nil {
		t.Fatal(err)
	}
	refused("drop with a reservation", ErrInUse, func() error { return d.DropLog("log") })
	if _, err := d.WriteAt(logContent(2, 100), r.Offset()); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(r); err != nil {
		t.Fatal(err)
	}
	// In use: a GC pass under way.
	owner := &blockingOwner{entered: make(chan struct{}, 1), release: make(chan struct{})}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	gcDone := make(chan error, 1)
	go func() { gcDone <- l.GC(context.Background()) }()
	<-owner.entered
	refused("drop during GC", ErrInUse, func() error { return d.DropLog("log") })
	close(owner.release)
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	wantEntries(t, l, nil, 0) // GC reclaimed both, being told they are dead

	// All carved slots taken.
	for i := 1; i < carvedLogLimit; i++ {
		mustCreateLog(t, d, fmt.Sprintf("log%d", i), 4096)
	}
	refused("a slot more than the table holds", ErrNoSpace, create("one more", 4096))
	for i := 1; i < carvedLogLimit; i++ {
		if err := d.DropLog(fmt.Sprintf("log%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The heap full: MaxSize leaves room for few max pages.
	var big []string
	for i := 0; ; i++ {
		name := fmt.Sprintf("big%d", i)
		if _, err := d.CreateLog(name, 64<<10); err != nil {
			if !errors.Is(err, ErrNoSpace) {
				t.Fatalf("CreateLog until the heap is full: %v", err)
			}
			break
		}
		big = append(big, name)
	}
	if st := d.Stats(); len(big) < 10 || len(big) >= carvedLogLimit-1 || st.LargestFreePage >= 64<<10 {
		t.Fatalf("%d logs of 64 KiB fit a 2 MiB device before ErrNoSpace; allocator stats %+v", len(big), st)
	}
	refused("no page left", ErrNoSpace, create("no room", 64<<10))
	for _, name := range big {
		if err := d.DropLog(name); err != nil {
			t.Fatal(err)
		}
	}
	wantEntries(t, l, nil, 0)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	// A version 1 device has no carved log table. A fresh one: version 1
	// lays out a heap block's state bits differently, so only a device
	// with no heap block yet reads the same under both versions.
	_, path = carvedLogDevice(t, o)
	old := corruptCopy(t, path, func(b []byte) []byte {
		for slot := uint64(0); slot < 2; slot++ {
			rewriteSuperblock(b, slot, func(sb *superblock) { sb.version = 1 })
		}
		// A version 1 device never held a carved log.
		clear(b[d.geometry.state.off+carvedLogTableOff : d.geometry.state.off+carvedLogTableOff+carvedLogLimit*logSlotBytes])
		return b
	})
	d, err = Open(old, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	refused("CreateLog on a version 1 device", ErrVersion, create("new", 4096))
}

// TestCheckCarvedRingOnParent points a carved log's ring at a sub-page
// parent of the same size, an allocated page two owners would write: Open
// must refuse it (the log would write over the parent's header and
// slots), and Check must report it.
func TestCheckCarvedRingOnParent(t *testing.T) {
	d, path := carvedLogDevice(t, nil)
	l := mustCreateLog(t, d, "c", 64<<10)
	class, err := d.Subpages(1024) // 64 slots: 64 KiB parents
	if err != nil {
		t.Fatal(err)
	}
	var slot Addr
	if err := d.Update(func(tx *Txn) (err error) { slot, err = class.Alloc(tx); return err }); err != nil {
		t.Fatal(err)
	}
	ringAt := l.slotOff + logSlotRingOff
	parent := slot.Offset() &^ (64<<10 - 1)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	bad := corruptCopy(t, path, func(b []byte) []byte {
		binary.LittleEndian.PutUint64(b[ringAt:], uint64(parent))
		return b
	})
	for _, ro := range []bool{true, false} {
		d, err := Open(bad, &Options{ReadOnly: ro, NoSync: true})
		if err == nil {
			d.Close()
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "sub-page parent") {
			t.Fatalf("Open (read-only %v) of a ring on a sub-page parent: %v, want ErrCorrupt", ro, err)
		}
	}
	// Check, on a device opened before the damage was done.
	d, err = Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	commitCorrupt(t, d, "sub-page parent", func() error {
		return d.Update(func(tx *Txn) error {
			tx.writeU64(ringAt, uint64(parent), kindMeta)
			return nil
		})
	})
}

// TestDropLogPageReusedAtOnce carves and drops a log over and over while
// another goroutine allocates pages of the ring's size, writes and frees
// them: a page DropLog freed may be handed out as soon as a checkpoint
// covers the free, and its new owner's writes and free must not be
// refused as the dropped log's.
func TestDropLogPageReusedAtOnce(t *testing.T) {
	d, _ := carvedLogDevice(t, &Options{NoSync: true, MaxPageSize: 64 << 10, JournalSize: minJournalBytes})
	var stop atomic.Bool
	done := make(chan error, 1)
	go func() {
		for !stop.Load() {
			if _, err := d.CreateLog("x", 64<<10); err != nil {
				done <- err
				return
			}
			if err := d.DropLog("x"); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	defer func() {
		stop.Store(true)
		if err := <-done; err != nil {
			t.Errorf("carving and dropping: %v", err)
		}
	}()
	for i := range 500 {
		var page Addr
		err := d.Update(func(tx *Txn) (err error) {
			if page, err = tx.Alloc(64 << 10); err != nil {
				return err
			}
			return tx.Write(page.Offset(), []byte("mine"))
		})
		if err != nil {
			t.Fatalf("round %d: Txn.Write into a page just allocated: %v", i, err)
		}
		if _, err := d.WriteAt([]byte("data"), page.Offset()+8); err != nil {
			t.Fatalf("round %d: WriteAt into %v: %v", i, page, err)
		}
		if err := d.Update(func(tx *Txn) error { return tx.Free(page) }); err != nil {
			t.Fatalf("round %d: Free of %v: %v", i, page, err)
		}
	}
}

// TestDropLogFailedCommitStopsLog fails the disk under a DropLog whose
// commit has begun: the log is out of the set by then, so DropLog, not
// Close, must stop its background GC.
func TestDropLogFailedCommitStopsLog(t *testing.T) {
	o := crashOptions(t)
	o.NoSync = true
	d, store := simDevice(t, o)
	l, err := d.CreateLog("carved", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetOwner(allLive{}, nil); err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected I/O error")
	store.SetFault(func(op simstore.Op) error { return injected })
	err = d.DropLog("carved")
	store.SetFault(nil)
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("DropLog with the disk failing: %v, want ErrFailed", err)
	}
	d.Close()
	select {
	case <-l.gcDone:
	case <-time.After(20 * time.Second): // a leak, not a speed goal
		t.Fatal("the dropped log's GC goroutine outlives Close")
	}
}

// TestOpenRefusesCarvedRingOutsideHeap forges a carved log's ring to lie
// past the file, and on a free page: Open must refuse both as corrupt
// (reads of the ring go straight to the mapping, and past the file they
// would kill the process), not leave it to Check.
func TestOpenRefusesCarvedRingOutsideHeap(t *testing.T) {
	d, path := carvedLogDevice(t, nil)
	l := mustCreateLog(t, d, "c", 4096)
	appendEntryT(t, l, logContent(1, 100))
	free := allocPages(t, d, 1, 4096)[0]
	freePages(t, d, []Addr{free})
	ringAt, capacity := l.slotOff+logSlotRingOff, d.capacity
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for what, off := range map[string]int64{"past the file": capacity - 4096, "on a free page": free.Offset()} {
		bad := corruptCopy(t, path, func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[ringAt:], uint64(off))
			return b
		})
		for _, ro := range []bool{true, false} {
			d, err := Open(bad, &Options{ReadOnly: ro})
			if err == nil {
				d.Close()
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open (read-only %v) of a ring %s: %v, want ErrCorrupt", ro, what, err)
			}
		}
	}
}

// TestDropLogAfterCancel drops a log whose last reservation was cancelled:
// the cancelled span past the durable tail is no reservation in use.
func TestDropLogAfterCancel(t *testing.T) {
	d, _ := carvedLogDevice(t, nil)
	l := mustCreateLog(t, d, "c", 8<<10)
	appendEntryT(t, l, logContent(1, 100))
	r, err := l.Append(100)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Cancel(r); err != nil {
		t.Fatal(err)
	}
	if err := d.DropLog("c"); err != nil {
		t.Fatalf("DropLog after the only reservation was cancelled: %v (log stats %+v)", err, l.Stats())
	}
	if _, err := d.Log("c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Log after DropLog: %v, want ErrNotFound", err)
	}
	mustCheck(t, d)
}

// TestDropLogGuardsRingWhileWaiting frees a log's ring page from a
// transaction that was open before DropLog began: DropLog waits for the
// writer with the log already closed, and its own transaction is the only
// one that may free the page.
func TestDropLogGuardsRingWhileWaiting(t *testing.T) {
	d, _ := carvedLogDevice(t, nil)
	l := mustCreateLog(t, d, "c", 8<<10)
	appendEntryT(t, l, logContent(1, 100))
	ring := makeAddr(l.ring.off, uint(bits.TrailingZeros64(l.size)))
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	dropped := make(chan error, 1)
	go func() { dropped <- d.DropLog("c") }()
	for !l.closing.Load() { // DropLog has closed the log and waits for tx
		time.Sleep(time.Millisecond)
	}
	if err := tx.Free(ring); !errors.Is(err, ErrInvalidFree) {
		t.Errorf("Free of the ring while DropLog waits: %v, want ErrInvalidFree", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-dropped; err != nil {
		t.Fatalf("DropLog: %v", err)
	}
	if st := d.Stats(); st.PendingBytes != 8<<10 {
		t.Errorf("after DropLog, %d bytes pending, want the ring's %d", st.PendingBytes, 8<<10)
	}
	mustCheck(t, d)
}

// hookStore is a simulated store that calls hook before each write.
type hookStore struct {
	*simstore.Store
	mu   sync.Mutex
	hook func(p []byte, off int64)
}

func (h *hookStore) WriteAt(p []byte, off int64) (int, error) {
	h.mu.Lock()
	f := h.hook
	h.mu.Unlock()
	if f != nil {
		f(p, off)
	}
	return h.Store.WriteAt(p, off)
}

func (h *hookStore) setHook(f func(p []byte, off int64)) {
	h.mu.Lock()
	h.hook = f
	h.mu.Unlock()
}

// TestLogGCCopyNotWritable writes into the copy GC is making of a live
// entry, between its payload and its header: no reservation of the
// caller's covers the copy, so the write must be refused and the entry
// must survive the relocation intact.
func TestLogGCCopyNotWritable(t *testing.T) {
	o, err := (&Options{MaxSize: 8 << 20, MaxPageSize: 64 << 10, JournalSize: minJournalBytes, LogRegions: []LogRegion{{"log", 512 << 10}}}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	h := &hookStore{Store: simstore.New(o.MaxSize)}
	t.Cleanup(func() { h.Store.Close() })
	d, err := createOn(h, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	l := mustLog(t, d, "log")
	owner := &setLive{live: map[uint64]int64{}}
	if err := l.SetOwner(relocatingSet{owner}, &LogOptions{GCThresholdBytes: -1, RelocationReserveBytes: -1}); err != nil {
		t.Fatal(err)
	}
	const size = 100 << 10 // above logJoinedWriteMaxBytes: payload and header go out apart
	r := appendEntryT(t, l, logContent(1, size))
	owner.add(1, r.Offset())
	copyPayload := l.payloadOff(uint64(r.Pos() + logFrameBytes(size)))
	strayErr := errors.New("GC wrote no header at the copy")
	h.setHook(func(p []byte, off int64) {
		if off == copyPayload-logFrameHeaderBytes && len(p) == logFrameHeaderBytes {
			h.setHook(nil)
			_, strayErr = d.WriteAt([]byte("garbage!"), copyPayload)
		}
	})
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(strayErr, ErrProtected) {
		t.Errorf("WriteAt into GC's copy: %v, want ErrProtected", strayErr)
	}
	if owner.offset(1) == r.Offset() {
		t.Fatal("GC did not relocate the entry")
	}
	got, err := l.Read(owner.offset(1))
	if err != nil || !bytes.Equal(got, logContent(1, size)) {
		t.Fatalf("the relocated entry: %v, intact %v", err, bytes.Equal(got, logContent(1, size)))
	}
}

// TestLogLargestEntryCancelled cancels an entry of the largest size a log
// takes, in a ring of 8 GiB (sparse): the padding frame that replaces it
// must record its whole length in the 32-bit field, so that the entries
// after it stay readable and GC can pass it.
func TestLogLargestEntryCancelled(t *testing.T) {
	if defaultMaxSize < 16<<30 {
		t.Skip("an 8 GiB ring needs a 64-bit platform")
	}
	if frame := logFrameBytes(logMaxPayloadBytes); frame > 1<<32-8 {
		t.Fatalf("the largest frame is %d bytes; a 32-bit length holds at most %d", frame, int64(1<<32-8))
	}
	o := testOptions()
	o.MaxSize = 16 << 30
	o.LogRegions = []LogRegion{{"big", 8 << 30}}
	d, _ := createTestDevice(t, o)
	l := mustLog(t, d, "big")
	var largest64 int64 = logMaxPayloadBytes // the constant overflows a 32-bit int
	largest := int(largest64)
	if _, err := l.Append(largest + 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of %d bytes: %v, want ErrTooLarge", largest+1, err)
	}
	r, err := l.Append(largest)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Cancel(r); err != nil {
		t.Fatal(err)
	}
	after := appendEntryT(t, l, logContent(1, 100))
	var seen []int64
	for e, err := range l.Entries(0) {
		if err != nil {
			t.Fatalf("Entries past the cancelled entry: %v", err)
		}
		seen = append(seen, e.Pos)
	}
	if !slices.Equal(seen, []int64{after.Pos()}) {
		t.Fatalf("entries at %v, want only the one at %d", seen, after.Pos())
	}
	if err := l.SetOwner(allLive{}, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	if err := l.GC(context.Background()); err != nil {
		t.Fatalf("GC over the cancelled entry: %v", err)
	}
	if st := l.Stats(); st.Head != after.Pos() {
		t.Fatalf("GC left the head at %d, want it at the live entry's %d", st.Head, after.Pos())
	}
	mustCheck(t, d)
}

var carvedCrashPointsFlag = flag.Int("carved.points", 0, "random crash points in TestCarvedLogCrash; 0 means the default (1,000; a quarter under -race or -tags invariants)")

// carvedCrashLog is what the crash workload knows of one carved log. Names
// are never reused, so that a name found after a crash says which log it is.
type carvedCrashLog struct {
	name                                   string
	createAt, createdAt, dropAt, droppedAt int // trace lengths; -1: never
	entries                                []*crashEntry
}

// TestCarvedLogCrash carves, appends to and drops logs from two goroutines
// on a simulated store, then opens what a power loss would leave at every
// sync point and at random points, and checks: Check passes; every log
// whose CreateLog returned, and whose DropLog had not begun, is there; no
// log whose CreateLog had not begun or whose DropLog returned is; every
// page allocated is the ring of exactly one log (no leak, nothing owned
// twice); every entry whose Commit returned reads back intact and no entry
// whose Commit had not begun is visible.
func TestCarvedLogCrash(t *testing.T) {
	seed := logTestSeed(t)
	d, store, createdAt := createLogCrashDevice(t, &Options{MaxSize: 8 << 20, MaxPageSize: 64 << 10, JournalSize: minJournalBytes})

	const workers = 2
	const opsPerWorker = 200
	var (
		mu     sync.Mutex
		logs   []*carvedCrashLog
		nextID uint64
		counts struct{ creates, drops, appends, full int }
	)
	ops := func() int { return store.Ops() }
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var mine []*carvedCrashLog
			drop := func(i int) error {
				m := mine[i]
				mine = append(mine[:i], mine[i+1:]...)
				mu.Lock()
				m.dropAt = ops()
				counts.drops++
				mu.Unlock()
				if err := d.DropLog(m.name); err != nil {
					return fmt.Errorf("DropLog(%q): %w", m.name, err)
				}
				mu.Lock()
				m.droppedAt = ops()
				mu.Unlock()
				return nil
			}
			for range opsPerWorker {
				switch op := rng.IntN(20); {
				case len(mine) < 2 || op == 0:
					mu.Lock()
					m := &carvedCrashLog{name: fmt.Sprintf("w%d-log%d", w, len(logs)), createAt: ops(), createdAt: -1, dropAt: -1, droppedAt: -1}
					logs = append(logs, m)
					counts.creates++
					mu.Unlock()
					if _, err := d.CreateLog(m.name, int64(4096+rng.IntN(28<<10))); err != nil {
						errs <- fmt.Errorf("CreateLog(%q): %w", m.name, err)
						return
					}
					mu.Lock()
					m.createdAt = ops()
					mu.Unlock()
					mine = append(mine, m)
				case op == 1:
					if err := drop(rng.IntN(len(mine))); err != nil {
						errs <- err
						return
					}
				default:
					i := rng.IntN(len(mine))
					m := mine[i]
					l, err := d.Log(m.name)
					if err != nil {
						errs <- err
						return
					}
					size := 8 + rng.IntN(3000)
					r, err := l.Append(size)
					if errors.Is(err, ErrNoSpace) {
						// Full: this log has served.
						mu.Lock()
						counts.full++
						mu.Unlock()
						if err := drop(i); err != nil {
							errs <- err
							return
						}
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					id := nextID
					nextID++
					e := &crashEntry{id: id, size: size, firstOff: r.Offset(), reservedAt: ops(), commitAt: -1, returnedAt: -1, deleteAt: -1}
					m.entries = append(m.entries, e)
					counts.appends++
					mu.Unlock()
					p := logContent(id, size)
					if rng.IntN(2) == 0 {
						err = l.Write(r, p)
					} else {
						_, err = d.WriteAt(p, r.Offset())
					}
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					e.commitAt = ops()
					mu.Unlock()
					if err := l.Commit(r); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					e.returnedAt = ops()
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	total, syncs := store.Ops(), store.SyncPoints()
	t.Logf("workload: %d CreateLog, %d DropLog (%d of full logs), %d entries; %d ops, %d syncs",
		counts.creates, counts.drops, counts.full, counts.appends, total, len(syncs))
	if counts.drops < 10 || counts.full == 0 {
		t.Fatalf("the workload missed a case: %+v", counts)
	}

	randomPoints := crashSampledPoints(1000)
	if *carvedCrashPointsFlag > 0 {
		randomPoints = *carvedCrashPointsFlag
	}
	points, syncPoints := logCrashPoints(t, syncs, createdAt, total, randomPoints, seed)
	violations, present, entries := 0, 0, 0
	for i, n := range points {
		p, e, ok := checkCarvedCrash(t, store, n, rand.New(rand.NewPCG(seed, uint64(i))), logs, i%20 == 0)
		present, entries = present+p, entries+e
		if !ok {
			violations++
		}
		if violations > 10 {
			t.Fatal("too many violations; stopping")
		}
	}
	t.Logf("crash points: %d (%d at syncs, %d random); per image on average %.1f logs and %.1f entries checked",
		len(points), syncPoints, randomPoints, float64(present)/float64(len(points)), float64(entries)/float64(len(points)))
}

// checkCarvedCrash checks the image of a crash after n operations (see
// TestCarvedLogCrash) and returns how many logs and entries it checked.
// With reuse it also carves, appends to and drops logs on the image.
func checkCarvedCrash(t *testing.T, store *simstore.Store, n int, rng *rand.Rand, logs []*carvedCrashLog, reuse bool) (present, checked int, ok bool) {
	t.Helper()
	img, err := store.Image(n, rng)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	ok = true
	fail := func(format string, args ...any) {
		t.Helper()
		ok = false
		t.Errorf("crash after %d ops: %s (%s)", n, fmt.Sprintf(format, args...), img.Describe())
	}
	d, err := openOn(img, &Options{})
	if err != nil {
		fail("Open: %v", err)
		return 0, 0, ok
	}
	defer d.Close()
	if err := d.Check(); err != nil {
		fail("Check: %v", err)
	}
	found := make(map[string]*Log)
	rings := make(map[int64]string)
	for _, l := range d.logs.all() {
		found[l.name] = l
		if other, dup := rings[l.ring.off]; dup {
			fail("logs %q and %q share the page at %d", l.name, other, l.ring.off)
		}
		rings[l.ring.off] = l.name
	}
	if st := d.Stats(); st.AllocatedPages != int64(len(found)) {
		fail("%d allocated pages for %d logs: a page leaked", st.AllocatedPages, len(found))
	}
	known := make(map[string]bool)
	for _, m := range logs {
		known[m.name] = true
		l := found[m.name]
		switch {
		case l == nil && m.createdAt >= 0 && m.createdAt <= n && (m.dropAt < 0 || m.dropAt > n):
			fail("log %q, whose CreateLog returned at op %d, is gone", m.name, m.createdAt)
		case l != nil && m.createAt > n:
			fail("log %q is there though its CreateLog began at op %d", m.name, m.createAt)
		case l != nil && m.droppedAt >= 0 && m.droppedAt <= n:
			fail("log %q is there though its DropLog returned at op %d", m.name, m.droppedAt)
		}
		if l == nil {
			continue
		}
		present++
		seen := make(map[uint64]bool)
		byID := make(map[uint64]*crashEntry, len(m.entries))
		for _, e := range m.entries {
			byID[e.id] = e
		}
		for e, err := range l.Entries(0) {
			if err != nil {
				fail("log %q walk: %v", m.name, err)
				break
			}
			checked++
			if len(e.Data) < 8 || !isContent(e.Data, logID(e.Data)) {
				fail("log %q entry at %d holds bytes of no entry", m.name, e.Pos)
				continue
			}
			w := byID[logID(e.Data)]
			if w == nil || w.commitAt < 0 || w.commitAt > n {
				fail("log %q entry %d is visible though its Commit had not begun", m.name, logID(e.Data))
			}
			seen[logID(e.Data)] = true
		}
		for _, e := range m.entries {
			if e.returnedAt >= 0 && e.returnedAt <= n && !seen[e.id] {
				fail("log %q entry %d, whose Commit returned at op %d, is gone", m.name, e.id, e.returnedAt)
			}
		}
	}
	for name := range found {
		if !known[name] {
			fail("a log %q no one created", name)
		}
	}
	if reuse {
		l, err := d.CreateLog("after recovery", 16<<10)
		if err == nil {
			appendEntryT(t, l, logContent(1<<40, 3000))
			for name := range found {
				err = d.DropLog(name)
				break
			}
		}
		if err == nil {
			err = d.Check()
		}
		if err != nil {
			fail("carving, appending and dropping after recovery: %v", err)
		}
	}
	return present, checked, ok
}

// TestLogWriteThenChange covers Log.Write followed by a change in place
// (Device.WriteAt), a second Write, and Cancel, on a real file (where
// Write copies into the writable mapping) and on a simulated store (where
// it stages the frame for the flush leader to write): Commit must make
// durable exactly the bytes last written, and a cancelled entry must
// never show.
func TestLogWriteThenChange(t *testing.T) {
	for _, onFile := range []bool{true, false} {
		t.Run(fmt.Sprintf("file=%v", onFile), func(t *testing.T) {
			var d *Device
			var path string
			if onFile {
				d, path = createLogDevice(t, LogRegion{"log", 64 << 10})
			} else {
				o, err := (&Options{MaxSize: 4 << 20, MaxPageSize: 64 << 10, JournalSize: minJournalBytes, LogRegions: []LogRegion{{"log", 64 << 10}}}).withDefaults()
				if err != nil {
					t.Fatal(err)
				}
				store := simstore.New(o.MaxSize)
				t.Cleanup(func() { store.Close() })
				if d, err = createOn(store, o); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { d.Close() })
			}
			if got := d.homeView != nil; got != onFile {
				t.Fatalf("writable mapping: %v, want %v", got, onFile)
			}
			l := mustLog(t, d, "log")
			reserve := func() Reservation {
				t.Helper()
				r, err := l.Append(1000)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			// Written, then half of it changed in place.
			r1 := reserve()
			if err := l.Write(r1, logContent(1, 1000)); err != nil {
				t.Fatal(err)
			}
			want1 := logContent(2, 1000)
			copy(want1[500:], logContent(1, 1000)[500:])
			if _, err := d.WriteAt(want1[:500], r1.Offset()); err != nil {
				t.Fatal(err)
			}
			// Written twice: the second wins.
			r2 := reserve()
			if err := l.Write(r2, logContent(3, 1000)); err != nil {
				t.Fatal(err)
			}
			if err := l.Write(r2, logContent(4, 1000)); err != nil {
				t.Fatal(err)
			}
			// Written, then cancelled.
			r3 := reserve()
			if err := l.Write(r3, logContent(5, 1000)); err != nil {
				t.Fatal(err)
			}
			if err := l.Cancel(r3); err != nil {
				t.Fatal(err)
			}
			r4 := reserve()
			if err := l.Write(r4, logContent(6, 1000)); err != nil {
				t.Fatal(err)
			}
			// Out of order: r4's Commit waits for r1 and r2.
			r4done := make(chan error, 1)
			go func() { r4done <- l.Commit(r4) }()
			for _, r := range []Reservation{r1, r2} {
				if err := l.Commit(r); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-r4done; err != nil {
				t.Fatal(err)
			}
			got := walkLog(t, l)
			if len(got) != 3 || !bytes.Equal(got[0].Data, want1) || !isContent(got[1].Data, 4) || !isContent(got[2].Data, 6) {
				t.Fatalf("the log holds %d entries, not the bytes last written", len(got))
			}
			if p, err := l.Read(r3.Offset()); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Read of a cancelled entry: %d bytes, %v", len(p), err)
			}
			if !onFile {
				return
			}
			// The copies through the mapping are in the file, for another
			// reader and after reopening.
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !isContent(raw[r4.Offset():r4.Offset()+1000], 6) || !bytes.Equal(raw[r1.Offset():r1.Offset()+1000], want1) {
				t.Fatal("the file does not hold the entries Write copied into the mapping")
			}
			d, err = Open(path, &Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if got := walkLog(t, mustLog(t, d, "log")); len(got) != 3 || !bytes.Equal(got[0].Data, want1) || !isContent(got[2].Data, 6) {
				t.Fatalf("after reopening the log holds %d entries, not the bytes last written", len(got))
			}
		})
	}
}

// readingSet is a relocatingSet that reads each relocated entry back at
// its new offset as soon as GC says the relocations hold.
type readingSet struct {
	relocatingSet
	l      *Log
	newOff []int64
	errs   []error
}

func (s *readingSet) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	s.newOff = append(s.newOff, newOff)
	return s.relocatingSet.Relocate(tx, oldOff, newOff, entry)
}

func (s *readingSet) RelocationsEnded(err error) {
	if err == nil {
		for _, off := range s.newOff {
			if _, rerr := s.l.Read(off); rerr != nil {
				s.errs = append(s.errs, rerr)
			}
		}
	}
	s.newOff = s.newOff[:0]
}

// TestLogRelocatedReadableWhenEnded: a Commit's flush journals the tail
// over GC's copy, and GC's transaction, which moves the head past the old
// copy, commits after it. Once GC says its relocations hold, the copy
// reads back at its new offset, even if that Commit has not returned yet:
// the transaction that journaled the tail over the copy came first, so it
// is durable too.
func TestLogRelocatedReadableWhenEnded(t *testing.T) {
	d, _ := createLogDevice(t, LogRegion{"log", 64 << 10})
	l := mustLog(t, d, "log")
	owner := &readingSet{relocatingSet: relocatingSet{&setLive{live: map[uint64]int64{}}}, l: l}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	owner.add(0, appendEntryT(t, l, logContent(0, 2000)).Offset())
	// One P runs the goroutines the journal wakes in a fixed order: the
	// one woken last first.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const pause = 2 * time.Millisecond // long enough for a goroutine to block
	openGroup := func() bool {
		d.journal.mu.Lock()
		defer d.journal.mu.Unlock()
		return d.journal.open != nil
	}
	for round := range 20 {
		// The journal's goroutine stalls on the flush's group until GC's
		// transaction waits in the next one.
		d.syncMu.Lock()
		// The flush leader, a transaction of the test's, then GC queue
		// for the writer slot hold has, and get it in that order.
		hold, err := d.Begin()
		if err != nil {
			t.Fatal(err)
		}
		r, err := l.Append(100)
		if err != nil {
			t.Fatal(err)
		}
		d.WriteAt(logContent(1, 100), r.Offset())
		commitDone := make(chan error, 1)
		go func() { commitDone <- l.Commit(r) }()
		time.Sleep(pause)
		between, release := make(chan error), make(chan struct{})
		go func() {
			tx, err := d.Begin()
			between <- err
			if err == nil {
				<-release
				tx.Rollback()
			}
		}()
		time.Sleep(pause)
		relocations := l.Stats().Relocations
		gcDone := make(chan error, 1)
		go func() { gcDone <- l.GC(context.Background()) }()
		for l.Stats().Relocations == relocations {
			runtime.Gosched()
		}
		time.Sleep(pause)
		hold.Rollback()
		if err := <-between; err != nil { // the flush has committed
			t.Fatal(err)
		}
		for openGroup() {
			runtime.Gosched()
		}
		close(release)
		for !openGroup() {
			runtime.Gosched()
		}
		d.syncMu.Unlock()
		for _, c := range []chan error{gcDone, commitDone} {
			if err := <-c; err != nil {
				t.Fatal(err)
			}
		}
		if len(owner.errs) > 0 {
			t.Fatalf("round %d: relocated entry at %d not readable once GC ended: %v", round, owner.offset(0), owner.errs[0])
		}
	}
}

// TestLogEntriesFromInsidePadding: a position in the last 23 bytes of a
// lap, where a frame has no room for a header and only the implicit
// padding to the ring's end may start, is refused as any other position
// no frame starts at, misaligned or inside that padding; the padding's
// own start walks on to the next lap.
func TestLogEntriesFromInsidePadding(t *testing.T) {
	const ring = 16 << 10
	d, _ := createLogDevice(t, LogRegion{"log", ring})
	l := mustLog(t, d, "log")
	owner := &setLive{live: map[uint64]int64{}}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	// A dead entry, then a live one ending 16 bytes before the lap's end,
	// too few for a header: implicit padding follows it.
	appendEntryT(t, l, logContent(0, 4000))
	b := appendEntryT(t, l, logContent(1, ring-16-int(logFrameBytes(4000))-logFrameHeaderBytes))
	owner.add(1, b.Offset())
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := appendEntryT(t, l, logContent(2, 100))
	if c.Pos() != ring {
		t.Fatalf("entry after the padding at %d, want %d", c.Pos(), ring)
	}
	first := func(from int64) (Entry, error) {
		for e, err := range l.Entries(from) {
			return e, err
		}
		return Entry{}, errors.New("nothing yielded")
	}
	if e, err := first(ring - 16); err != nil || e.Pos != c.Pos() {
		t.Fatalf("Entries from the padding's start: entry at %d, %v; want the entry at %d", e.Pos, err, c.Pos())
	}
	for _, from := range []int64{ring - 24, ring - 20, ring - 15, ring - 8, ring - 3, ring - 1, b.Pos() + 4} {
		if e, err := first(from); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Entries from %d, where no frame starts: entry at %d, %v; want ErrInvalidArgument", from, e.Pos, err)
		}
	}
}
