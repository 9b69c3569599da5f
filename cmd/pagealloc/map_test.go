package main

import (
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pagealloc/pagealloc"
)

func TestMap(t *testing.T) {
	path := fixtureDevice(t)
	in := inspect(t, path)
	out := filepath.Join(t.TempDir(), "map.png")
	const width = 64
	code, stdout, stderr := runUnchanged(t, "map", "-o", out, "-group", "4K", "-width", fmt.Sprint(width), "-scale", "1", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	img := decodePNG(t, out)
	groups := int((in.Frontier + 4095) / 4096)
	if b := img.Bounds(); b.Dx() != width || b.Dy() != (groups+width-1)/width {
		t.Fatalf("image is %v, want %d wide for %d page-groups", b, width, groups)
	}
	classAt := func(off int64) mapClass {
		i := int(off / 4096)
		r, g, b, _ := img.At(i%width, i/width).RGBA()
		for c, l := range mapLegend {
			if lr, lg, lb, _ := l.colour.RGBA(); lr == r && lg == g && lb == b {
				return mapClass(c)
			}
		}
		t.Fatalf("pixel of offset %d has an unknown colour", off)
		return 0
	}
	// Every page is at least a page-group here, so each of its pixels
	// shows its own state.
	d, err := pagealloc.Open(path, &pagealloc.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var pixels [mapClasses]int
	err = d.WalkHeap(func(e pagealloc.HeapExtent) bool {
		for off := e.Offset; off < e.End(); off += 4096 {
			if got := classAt(off); got != kindClass[e.Kind] {
				t.Fatalf("pixel of offset %d shows %s, the page is %s", off, mapLegend[got].name, e.Kind)
			}
			pixels[kindClass[e.Kind]]++
		}
		return true
	})
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	for off, c := range map[int64]mapClass{
		0: mapMetadata, in.Journal.Offset: mapJournal, in.Logs[0].Ring.Offset: mapLog, in.Logs[0].Ring.End() - 4096: mapLog,
		in.AllocatorState.Offset: mapMetadata,
	} {
		if got := classAt(off); got != c {
			t.Errorf("pixel of offset %d shows %s, want %s", off, mapLegend[got].name, mapLegend[c].name)
		}
	}
	// The legend counts the page-groups of each heap state.
	for _, c := range []mapClass{mapAllocated, mapSubpages, mapPending, mapFree} {
		if pixels[c] == 0 {
			t.Errorf("the fixture has no %s page", mapLegend[c].name)
		}
		l := mapLegend[c]
		re := fmt.Sprintf(`(?m)^  #%02x%02x%02x\s+%s\s+%d\s`, l.colour.R, l.colour.G, l.colour.B, l.name, pixels[c])
		if !regexp.MustCompile(re).MatchString(stdout) {
			t.Errorf("legend does not match %s:\n%s", re, stdout)
		}
	}

	// Defaults: a square power-of-two width, scaled up to 512 pixels.
	if code, _, stderr := runUnchanged(t, "map", "-o", out, path); code != 0 {
		t.Fatalf("defaults: exit %d: %s", code, stderr)
	}
	if b := decodePNG(t, out).Bounds(); b.Dx() != 512 || b.Dy() > 512 {
		t.Errorf("default image is %v", b)
	}
	// -heap: the heap alone, starting with the first block's state bits.
	code, _, stderr = runUnchanged(t, "map", "-heap", "-o", out, "-group", "4K", "-width", fmt.Sprint(width), "-scale", "1", path)
	if code != 0 {
		t.Fatalf("-heap: exit %d: %s", code, stderr)
	}
	heapGroups := int((in.Frontier - in.HeapOffset) / 4096)
	heapImg := decodePNG(t, out)
	if b := heapImg.Bounds(); b.Dx() != width || b.Dy() != (heapGroups+width-1)/width {
		t.Errorf("-heap image is %v for %d page-groups", b, heapGroups)
	}
	if r, g, b, _ := heapImg.At(0, 0).RGBA(); [3]uint32{r, g, b} != [3]uint32{0x3434, 0x3a3a, 0x4040} {
		t.Errorf("-heap: the first pixel is %x %x %x, not metadata", r, g, b)
	}

	// A page that lost its state bit is drawn as unaccounted, and map
	// fails, asking for a check.
	free0 := in.FreeLists[0].Head
	word, shift := freeBitOf(in, free0)
	damaged := damagedCopy(t, path, func(b []byte) { flipBit(b, word, shift) })
	code, stdout, stderr = runUnchanged(t, "map", "-o", out, "-group", "4K", "-width", fmt.Sprint(width), "-scale", "1", damaged)
	if code != 1 || !strings.Contains(stderr, "run pagealloc check") || !regexp.MustCompile(`(?m)^  #000000\s+unaccounted\s+1\s+4.0 KiB`).MatchString(stdout) {
		t.Errorf("damaged device: exit %d, stderr %q, legend:\n%s", code, stderr, stdout)
	}
	img = decodePNG(t, out)
	if got := classAt(free0); got != mapUnaccounted {
		t.Errorf("the page that lost its state bit shows %s", mapLegend[got].name)
	}

	if code, _, stderr := runUnchanged(t, "map", "-o", path, path); code != 2 {
		t.Errorf("-o naming the device: exit %d, %s", code, stderr)
	}
	for _, bad := range [][]string{
		{"-group", "3000"},
		{"-scale", "100000"},
		{"-scale", "-1"},
		{"-width", "-1"},
		{"-width", "1000000000"},
		{"-pixels", "0"},
		{"-width", "16384", "-scale", "2"}, // too wide
	} {
		args := append(append([]string{"map", "-o", out}, bad...), path)
		if code, _, stderr := runUnchanged(t, args...); code != 2 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want a usage error (exit 2)", bad, code, stderr)
		}
	}
}

// TestMapCarvedLog maps a device with a carved log, whose ring is a heap
// page: the legend's shares add up to the whole file, as without one.
func TestMapCarvedLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device")
	d, err := pagealloc.Create(path, fixtureOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateLog("carved", 64<<10); err != nil {
		d.Close()
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "map.png")
	code, stdout, stderr := runUnchanged(t, "map", "-o", out, "-group", "4K", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	total := 0.0
	for _, m := range regexp.MustCompile(`(?m)\s([0-9.]+)%$`).FindAllStringSubmatch(stdout, -1) {
		share, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		total += share
	}
	if total < 99.5 || total > 100.5 {
		t.Errorf("the legend's shares add up to %.1f%%:\n%s", total, stdout)
	}
	if !strings.Contains(stdout, "padding") {
		t.Errorf("no padding row between the log regions and the heap:\n%s", stdout)
	}
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestMapTooTall asks for a map whose height in screen pixels is 2^31:
// 2^17 rows of one page-group each, scaled 2^14 times. That is a usage
// error (exit 2). The product used to be taken in int, which on a 32-bit
// platform wrapped to a negative number that passed the bound, and map
// panicked drawing an image of impossible size
// (GOARCH=386 go test -run TestMapTooTall ./cmd/pagealloc).
func TestMapTooTall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device")
	// The heap starts at 64 MiB: 2^17 page-groups of 512 bytes before it.
	createClosed(t, path, &pagealloc.Options{NoSync: true, MaxSize: 128 << 20, MinPageSize: 512, MaxPageSize: 64 << 20, JournalSize: 64 << 10})
	out := filepath.Join(t.TempDir(), "map.png")
	code, _, stderr := runUnchanged(t, "map", "-o", out, "-group", "512", "-width", "1", "-scale", "16384", path)
	if code != 2 || !strings.Contains(stderr, "more than 16384 pixels a side") {
		t.Errorf("a map 2^31 pixels tall: exit %d, stderr %q; want a usage error (exit 2)", code, stderr)
	}
}

// TestMapEmptyHeap: with -heap, a device whose heap holds nothing yet has
// nothing to draw: map says so and fails (exit 1), writing no image,
// rather than write one of no page-group. Without -heap the headers are
// drawn.
func TestMapEmptyHeap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device")
	createClosed(t, path, fixtureOptions())
	out := filepath.Join(t.TempDir(), "map.png")
	code, _, stderr := runUnchanged(t, "map", "-heap", "-o", out, path)
	if code != 1 || !strings.Contains(stderr, "heap") || !strings.Contains(stderr, "empty") {
		t.Errorf("map -heap of an empty heap: exit %d, stderr %q; want 1, saying the heap is empty", code, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("map -heap of an empty heap wrote %s (%v)", out, err)
	}
	if code, _, stderr := runUnchanged(t, "map", "-o", out, path); code != 0 {
		t.Errorf("map of a device with an empty heap: exit %d: %s", code, stderr)
	}
}
