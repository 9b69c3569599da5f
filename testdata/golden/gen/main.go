// Command gen writes the golden device images in testdata/golden: a
// device made by a fixed, seeded workload through the public API, once
// closed cleanly and once as a crash leaves it, each beside a manifest of
// what it must hold. TestGoldenImages opens every image with the current
// code and compares. An image is written once per format version, by the
// code of that version, and never again: it stands for the files of that
// version in the field. When a change makes Create write a new version,
// run, from the repository's root,
//
//	go run ./testdata/golden/gen -out testdata/golden
//
// and commit the new files with it. The files are named for the version
// the device says it has; gen refuses to replace existing ones. It uses
// only API that every format version has, so that it builds against older
// code too, as it did to write the version 1 images (CreateLog, which
// version 1 lacks, is called only where the device has it).
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"github.com/pagealloc/pagealloc"
)

// Manifest is what an image holds, as the code that wrote it reports it.
// golden_test.go reads the same layout.
type Manifest struct {
	FormatVersion int     `json:"format_version"`
	Image         string  `json:"image"`   // the gzip-compressed device file, beside the manifest
	Crashed       bool    `json:"crashed"` // written while open: Open must replay the journal
	Root          uint32  `json:"root"`    // the pattern of the root area's first rootBytes
	Pages         []Page  `json:"pages"`   // allocated pages
	Slots         []Slot  `json:"slots"`   // allocated sub-page slots
	Classes       []Class `json:"classes"` // sub-page classes, after a writable Open
	Logs          []Log   `json:"logs"`
	Stats         Stats   `json:"stats"` // after a writable Open
}

// Page is an allocated page: its Addr word, and the pattern of the
// edgeBytes at its start (the next pattern is at its end).
type Page struct {
	Addr    uint64 `json:"addr"`
	Pattern uint32 `json:"pattern"`
}

// Slot is an allocated sub-page slot of a class, and the pattern of its
// whole content.
type Slot struct {
	SlotBytes int    `json:"slot_bytes"`
	Addr      uint64 `json:"addr"`
	Pattern   uint32 `json:"pattern"`
}

// Class is a sub-page class's counts.
type Class struct {
	SlotBytes int   `json:"slot_bytes"`
	Parents   int64 `json:"parents"`
	SlotsUsed int64 `json:"slots_used"`
}

// Log is a log's durable entries in order.
type Log struct {
	Name    string  `json:"name"`
	Entries []Entry `json:"entries"`
}

// Entry is a log entry's payload: length bytes of a pattern.
type Entry struct {
	Pattern uint32 `json:"pattern"`
	Length  int    `json:"length"`
}

// Stats are the device's counts that do not depend on timing.
type Stats struct {
	UsedBytes      int64 `json:"used_bytes"`
	AllocatedPages int64 `json:"allocated_pages"`
	Frontier       int64 `json:"frontier"`
}

const (
	edgeBytes = 64
	rootBytes = 48
)

// fill returns n bytes of pattern p: its four bytes over and over, each
// 64th byte replaced by its index over 64 so that bytes moved by a
// multiple of four show. Unlike random bytes they compress well.
// golden_test.go has the same function.
func fill(p uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(p >> (8 * (i % 4)))
		if i%64 == 63 {
			b[i] = byte(i / 64)
		}
	}
	return b
}

var classes = []int{64, 512}

func main() {
	out := flag.String("out", "testdata/golden", "directory to write the images and manifests to")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// workload is the state the generator keeps beside the device.
type workload struct {
	d     *pagealloc.Device
	rng   *rand.Rand
	pages map[pagealloc.Addr]uint32 // the pattern of each page's start
	slots map[pagealloc.Addr]Slot
	subs  map[int]*pagealloc.Subpages
	logs  []*pagealloc.Log
	root  uint32
	entry map[[2]uint32]Entry // by a payload's first 4 bytes and length

	// inPlace, if not nil, collects the ranges written with WriteAt.
	inPlace [][2]int64
}

func run(out string) error {
	dir, err := os.MkdirTemp("", "golden")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "device")
	opts := &pagealloc.Options{
		MaxSize:     64 << 20,
		GrowthStep:  64 << 10,
		MinPageSize: 4096,
		MaxPageSize: 64 << 10,
		JournalSize: 256 << 10,
		LogRegions:  []pagealloc.LogRegion{{Name: "wal", Size: 64 << 10}},
	}
	d, err := pagealloc.Create(path, opts)
	if err != nil {
		return err
	}
	version, err := superblockVersion(path)
	if err != nil {
		return err
	}
	base := fmt.Sprintf("v%d", version)
	for _, name := range []string{base + "-closed.json", base + "-crash.json"} {
		if _, err := os.Stat(filepath.Join(out, name)); err == nil {
			return fmt.Errorf("%s already holds %s: the images of a version are never written again", out, name)
		}
	}
	w := &workload{d: d, rng: rand.New(rand.NewPCG(uint64(version), 7)),
		pages: map[pagealloc.Addr]uint32{}, slots: map[pagealloc.Addr]Slot{}, subs: map[int]*pagealloc.Subpages{},
		entry: map[[2]uint32]Entry{}}
	if err := w.openLogs(true); err != nil {
		return err
	}
	if err := w.round(40, 12); err != nil {
		return err
	}
	if err := d.Close(); err != nil {
		return err
	}
	if err := w.save(path, out, base+"-closed", version, false); err != nil {
		return err
	}

	// Reopened, the device takes a second round; reopened again, a short
	// one, whose transactions the crash image holds in the journal only.
	// (A round that frees more than the device has free asks for a
	// checkpoint, which would leave nothing to replay.)
	var before []byte
	for _, n := range []int{16, 4} {
		if w.d, err = pagealloc.Open(path, &pagealloc.Options{NoSync: true, GrowthStep: 64 << 10}); err != nil {
			return err
		}
		w.subs, w.logs = map[int]*pagealloc.Subpages{}, nil
		if err := w.openLogs(false); err != nil {
			return err
		}
		if n == 4 {
			if before, err = os.ReadFile(path); err != nil {
				return err
			}
			w.inPlace = [][2]int64{}
		}
		if err := w.round(n, n/4); err != nil {
			return err
		}
		if n == 16 {
			if err := w.d.Close(); err != nil {
				return err
			}
		}
	}
	img, err := w.crashImage(path, before, opts.JournalSize)
	if err != nil {
		return err
	}
	if err := w.d.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		return err
	}
	return w.save(path, out, base+"-crash", version, true)
}

// crashImage returns the file at path as a crash would leave it right
// after the last commit's record was synced: none of the short round's
// journaled writes home, which only a checkpoint syncs. The rest is as
// synced: its in-place writes (each commit syncs those first), the log
// frames (in place too) and the journal ring. before is the file as the
// round found it.
func (w *workload) crashImage(path string, before []byte, journalBytes int64) ([]byte, error) {
	img, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	root, rootBytes := w.d.Root()
	ring := [2]int64{root + rootBytes, root + rootBytes + journalBytes} // after the root area
	if !bytes.Equal(img[:root], before[:root]) {
		return nil, fmt.Errorf("a checkpoint ran during the short round: the crash image would have nothing to replay")
	}
	keep := append(w.inPlace, ring)
	for _, l := range w.logs {
		// Every frame, its header before its payload: those older than
		// the round are alike in both.
		for e, err := range l.Entries(0) {
			if err != nil {
				return nil, err
			}
			keep = append(keep, [2]int64{e.Offset - 64, e.Offset + e.Next - e.Pos})
		}
	}
	crashed := make([]byte, len(img))
	copy(crashed, before)
	for _, r := range keep {
		lo, hi := max(r[0], 0), min(r[1], int64(len(img)))
		if lo < hi {
			copy(crashed[lo:hi], img[lo:hi])
		}
	}
	return crashed, nil
}

// superblockVersion returns the format version in the first superblock
// of the device file at path: a uint32 after the 8-byte magic.
func superblockVersion(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [12]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return 0, err
	}
	return int(binary.LittleEndian.Uint32(b[8:])), nil
}

// openLogs opens the log region and, where the device can carve logs,
// the carved one (creating it if create).
func (w *workload) openLogs(create bool) error {
	l, err := w.d.Log("wal")
	if err != nil {
		return err
	}
	w.logs = append(w.logs, l)
	type carver interface {
		CreateLog(name string, sizeBytes int64) (*pagealloc.Log, error)
	}
	if c, ok := any(w.d).(carver); ok {
		if create {
			l, err = c.CreateLog("carved", 16<<10)
		} else {
			l, err = w.d.Log("carved")
		}
		if err != nil {
			return err
		}
		w.logs = append(w.logs, l)
	}
	for _, n := range classes {
		s, err := w.d.Subpages(n)
		if err != nil {
			return err
		}
		w.subs[n] = s
	}
	return nil
}

// round allocates n pages and 3n slots over several transactions, writes
// them, frees some of each, writes the root and appends to every log.
func (w *workload) round(n, frees int) error {
	d := w.d
	for batch := 0; batch < 4; batch++ {
		var fresh []pagealloc.Addr
		var freshSlots []Slot
		err := d.Update(func(tx *pagealloc.Txn) error {
			for range n / 4 {
				a, err := tx.Alloc(4096 << w.rng.IntN(5))
				if err != nil {
					return err
				}
				fresh = append(fresh, a)
			}
			for range 3 * n / 4 {
				c := classes[w.rng.IntN(len(classes))]
				a, err := w.subs[c].Alloc(tx)
				if err != nil {
					return err
				}
				freshSlots = append(freshSlots, Slot{SlotBytes: c, Addr: uint64(a)})
			}
			root, _ := d.Root()
			w.root = w.rng.Uint32()
			return tx.Write(root, fill(w.root, rootBytes))
		})
		if err != nil {
			return err
		}
		for i, a := range fresh {
			p := w.rng.Uint32()
			head, tail := fill(p, edgeBytes), fill(p+1, edgeBytes)
			if i%3 == 0 {
				// A journaled write in the page, beside the in-place ones.
				if err := d.Update(func(tx *pagealloc.Txn) error { return tx.Write(a.Offset(), head) }); err != nil {
					return err
				}
			} else if err := w.writeAt(head, a.Offset()); err != nil {
				return err
			}
			if err := w.writeAt(tail, a.Offset()+a.Size()-edgeBytes); err != nil {
				return err
			}
			w.pages[a] = p
		}
		for _, s := range freshSlots {
			s.Pattern = w.rng.Uint32()
			if err := w.writeAt(fill(s.Pattern, s.SlotBytes), pagealloc.Addr(s.Addr).Offset()); err != nil {
				return err
			}
			w.slots[pagealloc.Addr(s.Addr)] = s
		}
		for _, l := range w.logs {
			for range 3 {
				e := Entry{Pattern: w.rng.Uint32(), Length: 4 + w.rng.IntN(300)}
				p := fill(e.Pattern, e.Length)
				w.entry[entryKey(p)] = e
				r, err := l.Append(len(p))
				if err != nil {
					return err
				}
				if err := l.Write(r, p); err != nil {
					return err
				}
				if err := l.Commit(r); err != nil {
					return err
				}
			}
		}
	}
	return d.Update(func(tx *pagealloc.Txn) error {
		for _, a := range w.pick(keys(w.pages), frees) {
			if err := tx.Free(a); err != nil {
				return err
			}
			delete(w.pages, a)
		}
		for _, a := range w.pick(keys(w.slots), 2*frees) {
			if err := w.subs[w.slots[a].SlotBytes].Free(tx, a); err != nil {
				return err
			}
			delete(w.slots, a)
		}
		return nil
	})
}

// writeAt writes p at off in place, noting the range if w collects them.
func (w *workload) writeAt(p []byte, off int64) error {
	if w.inPlace != nil {
		w.inPlace = append(w.inPlace, [2]int64{off, off + int64(len(p))})
	}
	_, err := w.d.WriteAt(p, off)
	return err
}

// entryKey names a payload of at least 4 bytes by its pattern and length.
func entryKey(p []byte) [2]uint32 {
	return [2]uint32{uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16 | uint32(p[3])<<24, uint32(len(p))}
}

// pick returns n of addrs, chosen at random.
func (w *workload) pick(addrs []pagealloc.Addr, n int) []pagealloc.Addr {
	w.rng.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	return addrs[:min(n, len(addrs))]
}

func keys[V any](m map[pagealloc.Addr]V) []pagealloc.Addr {
	ks := make([]pagealloc.Addr, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// save writes the device file at path, compressed, and its manifest into
// out as name.dev.gz and name.json. The counts come from a writable Open
// of a copy, which the test's Open must match.
func (w *workload) save(path, out, name string, version int, crashed bool) error {
	img, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	m := Manifest{FormatVersion: version, Image: name + ".dev.gz", Crashed: crashed,
		Root: w.root}
	for _, a := range keys(w.pages) {
		m.Pages = append(m.Pages, Page{Addr: uint64(a), Pattern: w.pages[a]})
	}
	for _, a := range keys(w.slots) {
		m.Slots = append(m.Slots, w.slots[a])
	}
	copyPath := path + ".copy"
	if err := os.WriteFile(copyPath, img, 0o644); err != nil {
		return err
	}
	defer os.Remove(copyPath)
	d, err := pagealloc.Open(copyPath, &pagealloc.Options{NoSync: true})
	if err != nil {
		return err
	}
	st := d.Stats()
	m.Stats = Stats{UsedBytes: st.UsedBytes, AllocatedPages: st.AllocatedPages, Frontier: st.Frontier}
	for _, n := range classes {
		s, err := d.Subpages(n)
		if err != nil {
			return err
		}
		ss := s.Stats()
		m.Classes = append(m.Classes, Class{SlotBytes: n, Parents: ss.Parents, SlotsUsed: ss.SlotsUsed})
	}
	for _, l := range w.logs {
		dl, err := d.Log(l.Name())
		if err != nil {
			return err
		}
		ml := Log{Name: l.Name()}
		for e, err := range dl.Entries(0) {
			if err != nil {
				return err
			}
			me, ok := w.entry[entryKey(e.Data)]
			if !ok || !bytes.Equal(e.Data, fill(me.Pattern, me.Length)) {
				return fmt.Errorf("log %q holds an entry the workload did not append at %d", l.Name(), e.Pos)
			}
			ml.Entries = append(ml.Entries, me)
		}
		m.Logs = append(m.Logs, ml)
	}
	if err := d.Close(); err != nil {
		return err
	}
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	zw.Write(img)
	if err := zw.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, m.Image), z.Bytes(), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(&m, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, name+".json"), append(js, '\n'), 0o644)
}
