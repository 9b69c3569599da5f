package pagealloc

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The golden images in testdata/golden are devices written by the code of
// each past format version, through testdata/golden/gen: a seeded workload
// of pages, sub-page slots, journaled and in-place writes, frees and log
// entries, once closed cleanly and once copied while open, its last
// transactions in the journal only. Each has a manifest of what it holds.
// They are written once per version and never again: a file in the field
// does not change when this code does.

// goldenManifest is the manifest gen writes beside each image.
type goldenManifest struct {
	FormatVersion int    `json:"format_version"`
	Image         string `json:"image"`
	Crashed       bool   `json:"crashed"`
	Root          uint32 `json:"root"`
	Pages         []struct {
		Addr    Addr   `json:"addr"`
		Pattern uint32 `json:"pattern"`
	} `json:"pages"`
	Slots []struct {
		SlotBytes int    `json:"slot_bytes"`
		Addr      Addr   `json:"addr"`
		Pattern   uint32 `json:"pattern"`
	} `json:"slots"`
	Classes []struct {
		SlotBytes int   `json:"slot_bytes"`
		Parents   int64 `json:"parents"`
		SlotsUsed int64 `json:"slots_used"`
	} `json:"classes"`
	Logs []struct {
		Name    string `json:"name"`
		Entries []struct {
			Pattern uint32 `json:"pattern"`
			Length  int    `json:"length"`
		} `json:"entries"`
	} `json:"logs"`
	Stats struct {
		UsedBytes      int64 `json:"used_bytes"`
		AllocatedPages int64 `json:"allocated_pages"`
		Frontier       int64 `json:"frontier"`
	} `json:"stats"`
}

const (
	goldenEdgeBytes = 64 // the patterned bytes at each end of a page
	goldenRootBytes = 48 // the patterned bytes at the start of the root area
	goldenFixedLog  = "wal"
)

// goldenFill returns n bytes of pattern p, as gen's fill writes them.
func goldenFill(p uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(p >> (8 * (i % 4)))
		if i%64 == 63 {
			b[i] = byte(i / 64)
		}
	}
	return b
}

// TestGoldenImages opens every golden image read-only and for writing,
// checks that it holds what its manifest says and passes Check, then
// frees everything in it and checks that the device comes back empty. A
// format version without an image fails: each needs one, written by its
// own code.
func TestGoldenImages(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	versions := map[int]int{}
	for _, p := range paths {
		m := readGoldenManifest(t, p)
		versions[m.FormatVersion]++
		t.Run(strings.TrimSuffix(filepath.Base(p), ".json"), func(t *testing.T) {
			checkGoldenImage(t, m)
		})
	}
	for v := 1; v <= formatVersion; v++ {
		if versions[v] == 0 {
			t.Errorf("no golden image of format version %d: write one with testdata/golden/gen, using the code of that version", v)
		}
	}
}

// readGoldenManifest reads the manifest at path.
func readGoldenManifest(t *testing.T, path string) *goldenManifest {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m goldenManifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &m
}

// checkGoldenImage makes TestGoldenImages' checks on a copy of m's image.
func checkGoldenImage(t *testing.T, m *goldenManifest) {
	img := readGoldenImage(t, filepath.Join("testdata", "golden", m.Image))
	path := filepath.Join(t.TempDir(), "device")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}

	// Read-only first: it must replay a crash image's journal in memory
	// and change nothing in the file.
	d, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only Open: %v", err)
	}
	if replayed := d.journal.replay != nil; replayed != m.Crashed {
		t.Errorf("read-only Open replayed the journal: %v, want %v", replayed, m.Crashed)
	}
	if v := d.geometry.version; v != uint32(m.FormatVersion) {
		t.Errorf("the device reads as format version %d, want %d", v, m.FormatVersion)
	}
	checkGoldenContent(t, d, m, false)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if now, err := os.ReadFile(path); err != nil || !bytes.Equal(now, img) {
		t.Fatalf("the read-only Open changed the file (err %v)", err)
	}

	d, err = Open(path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	checkGoldenContent(t, d, m, true)

	// Everything in it can be freed, and a new entry appended to each
	// log; the carved logs are dropped. The sub-page slots of a version
	// that cannot use them stay, in their parents.
	subpages := m.FormatVersion >= subpageFormatVersion
	err = d.Update(func(tx *Txn) error {
		for _, p := range m.Pages {
			if err := tx.Free(p.Addr); err != nil {
				return err
			}
		}
		for _, s := range m.Slots {
			if !subpages {
				break
			}
			sp, err := d.Subpages(s.SlotBytes)
			if err != nil {
				return err
			}
			if err := sp.Free(tx, s.Addr); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("freeing what the image holds: %v", err)
	}
	for _, ml := range m.Logs {
		l, err := d.Log(ml.Name)
		if err != nil {
			t.Fatal(err)
		}
		appendEntry := goldenFill(0x600d, 100)
		r, err := l.Append(len(appendEntry))
		if err == nil {
			err = l.Write(r, appendEntry)
		}
		if err == nil {
			err = l.Commit(r)
		}
		if err != nil {
			t.Fatalf("appending to log %q: %v", ml.Name, err)
		}
		if got, err := l.Read(r.Offset()); err != nil || !bytes.Equal(got, appendEntry) {
			t.Errorf("log %q: the entry appended reads %x, %v", ml.Name, got, err)
		}
		if ml.Name != goldenFixedLog {
			if err := d.DropLog(ml.Name); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, err = d.CreateLog("new", 8<<10)
	if wantErr := m.FormatVersion < carvedLogsVersion; wantErr != errors.Is(err, ErrVersion) {
		t.Errorf("CreateLog on a device of format version %d: %v", m.FormatVersion, err)
	}
	if err == nil {
		if err := d.DropLog("new"); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Check(); err != nil {
		t.Errorf("Check after freeing everything: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d, err = Open(path, nil)
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer d.Close()
	if err := d.Check(); err != nil {
		t.Errorf("Check after reopening: %v", err)
	}
	parents := int64(0)
	if !subpages {
		for _, c := range m.Classes {
			parents += c.Parents
		}
	}
	if st := d.Stats(); st.AllocatedPages != parents || st.PendingPages != 0 || parents == 0 && st.UsedBytes != 0 {
		t.Errorf("after freeing everything and reopening: %d pages (%d bytes) allocated, %d pending; want the %d sub-page parents and none pending", st.AllocatedPages, st.UsedBytes, st.PendingPages, parents)
	}
	var a Addr
	err = d.Update(func(tx *Txn) (err error) {
		a, err = tx.Alloc(64 << 10)
		return err
	})
	if err != nil {
		t.Fatalf("allocating in the emptied device: %v", err)
	}
	if _, err := d.WriteAt(goldenFill(1, 64), a.Offset()); err != nil {
		t.Fatal(err)
	}
}

// checkGoldenContent checks that d holds what m says, and passes Check.
// The sub-page counts are those after a writable Open, which may give
// back parents whose slots were all freed. A device of a format version
// before sub-pages' own must refuse them (README: its slots stay
// readable).
func checkGoldenContent(t *testing.T, d *Device, m *goldenManifest, writable bool) {
	t.Helper()
	if err := d.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
	read := func(off int64, n int) []byte {
		b := make([]byte, n)
		if _, err := d.ReadAt(b, off); err != nil {
			t.Fatalf("ReadAt(%d, +%d): %v", off, n, err)
		}
		return b
	}
	rootOff, _ := d.Root()
	if got := read(rootOff, goldenRootBytes); !bytes.Equal(got, goldenFill(m.Root, goldenRootBytes)) {
		t.Errorf("the root area starts %x, want pattern %#x", got, m.Root)
	}
	for _, p := range m.Pages {
		head := read(p.Addr.Offset(), goldenEdgeBytes)
		tail := read(p.Addr.Offset()+p.Addr.Size()-goldenEdgeBytes, goldenEdgeBytes)
		if !bytes.Equal(head, goldenFill(p.Pattern, goldenEdgeBytes)) || !bytes.Equal(tail, goldenFill(p.Pattern+1, goldenEdgeBytes)) {
			t.Errorf("%v holds %x … %x, want patterns %#x and %#x", p.Addr, head, tail, p.Pattern, p.Pattern+1)
		}
	}
	for _, s := range m.Slots {
		if got := read(s.Addr.Offset(), s.SlotBytes); !bytes.Equal(got, goldenFill(s.Pattern, s.SlotBytes)) {
			t.Errorf("slot %v holds %x, want pattern %#x", s.Addr, got, s.Pattern)
		}
	}
	for _, ml := range m.Logs {
		l, err := d.Log(ml.Name)
		if err != nil {
			t.Errorf("log %q: %v", ml.Name, err)
			continue
		}
		i := 0
		for e, err := range l.Entries(0) {
			if err != nil {
				t.Errorf("log %q, entry %d: %v", ml.Name, i, err)
				break
			}
			if i >= len(ml.Entries) {
				t.Errorf("log %q holds more than its %d entries", ml.Name, len(ml.Entries))
				break
			}
			if want := ml.Entries[i]; !bytes.Equal(e.Data, goldenFill(want.Pattern, want.Length)) {
				t.Errorf("log %q, entry %d at %d: %d bytes %x, want %d of pattern %#x", ml.Name, i, e.Pos, len(e.Data), e.Data, want.Length, want.Pattern)
			}
			i++
		}
		if i < len(ml.Entries) {
			t.Errorf("log %q holds %d entries, want %d", ml.Name, i, len(ml.Entries))
		}
	}
	st := d.Stats()
	if st.AllocatedPages != m.Stats.AllocatedPages || st.UsedBytes != m.Stats.UsedBytes || st.Frontier != m.Stats.Frontier {
		t.Errorf("Stats: %d pages, %d bytes allocated, frontier %d; want %d, %d, %d",
			st.AllocatedPages, st.UsedBytes, st.Frontier, m.Stats.AllocatedPages, m.Stats.UsedBytes, m.Stats.Frontier)
	}
	for _, c := range m.Classes {
		s, err := d.Subpages(c.SlotBytes)
		if m.FormatVersion < subpageFormatVersion {
			if !errors.Is(err, ErrVersion) {
				t.Errorf("Subpages(%d) on a device of format version %d: %v, want ErrVersion", c.SlotBytes, m.FormatVersion, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("sub-page class of %d bytes: %v", c.SlotBytes, err)
			continue
		}
		ss := s.Stats()
		if ss.SlotsUsed != c.SlotsUsed || writable && ss.Parents != c.Parents {
			t.Errorf("sub-page class of %d bytes: %d slots used in %d parents, want %d in %d", c.SlotBytes, ss.SlotsUsed, ss.Parents, c.SlotsUsed, c.Parents)
		}
	}
}

// openGoldenImage opens a copy of the golden image name (as
// "v1-closed") with o; the test's end closes it.
func openGoldenImage(t *testing.T, name string, o *Options) *Device {
	t.Helper()
	path := filepath.Join(t.TempDir(), "device")
	if err := os.WriteFile(path, readGoldenImage(t, filepath.Join("testdata", "golden", name+".dev.gz")), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// readGoldenImage returns the device file compressed at path.
func readGoldenImage(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	img, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}
