package main

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/bits"
	"os"

	"github.com/pagealloc/pagealloc"
)

// mapClass is what a pixel of the map shows: the state holding most of
// the bytes of its page-group.
type mapClass uint8

const (
	mapNone        mapClass = iota // past the frontier: the rest of the last row
	mapMetadata                    // superblocks, root area, allocator state, log table, block state bits
	mapPadding                     // unused: the heap starts on a max-page boundary
	mapJournal                     // the journal ring
	mapLog                         // log-structured rings
	mapAllocated                   // pages handed out
	mapSubpages                    // pages carved into sub-page slots
	mapPending                     // freed, waiting for a checkpoint
	mapFree                        // on a free list
	mapUnaccounted                 // claimed by no state bit: corruption
	mapClasses
)

var mapLegend = [mapClasses]struct {
	name   string
	colour color.RGBA
}{
	mapNone:        {"(past the frontier)", color.RGBA{0xff, 0xff, 0xff, 0xff}},
	mapMetadata:    {"metadata", color.RGBA{0x34, 0x3a, 0x40, 0xff}},
	mapPadding:     {"padding", color.RGBA{0xce, 0xd4, 0xda, 0xff}},
	mapJournal:     {"journal", color.RGBA{0xf7, 0x67, 0x07, 0xff}},
	mapLog:         {"log", color.RGBA{0x1c, 0x7e, 0xd6, 0xff}},
	mapAllocated:   {"allocated", color.RGBA{0xe0, 0x31, 0x31, 0xff}},
	mapSubpages:    {"sub-pages", color.RGBA{0xae, 0x3e, 0xc9, 0xff}},
	mapPending:     {"pending", color.RGBA{0xfa, 0xb0, 0x05, 0xff}},
	mapFree:        {"free", color.RGBA{0x8c, 0xe9, 0x9a, 0xff}},
	mapUnaccounted: {"unaccounted", color.RGBA{0x00, 0x00, 0x00, 0xff}},
}

var kindClass = map[pagealloc.PageKind]mapClass{
	pagealloc.PageMetadata:    mapMetadata,
	pagealloc.PageAllocated:   mapAllocated,
	pagealloc.PageSubpages:    mapSubpages,
	pagealloc.PageFree:        mapFree,
	pagealloc.PagePending:     mapPending,
	pagealloc.PageUnaccounted: mapUnaccounted,
	pagealloc.PageLog:         mapLog,
}

// runMap draws the device file from offset 0 (with -heap, from the heap's
// first byte) to the allocator's frontier
// as a PNG, one pixel per page-group, left to right and top to bottom, and
// prints the legend with what each colour holds.
func runMap(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("map", "FILE", stderr)
	out := fs.String("o", "map.png", "the PNG file to write")
	var group sizeValue
	fs.Var(&group, "group", "`bytes` per pixel, a power of two >= the min page (default: the smallest that keeps the map within -pixels)")
	maxPixels := fs.Int("pixels", 1<<18, "most pixels the map may have when -group is not set")
	width := fs.Int("width", 0, "pixels per row (default: about the square root of the pixel count, a power of two)")
	heapOnly := fs.Bool("heap", false, "draw the heap alone, from its first byte, leaving out the headers, journal and logs")
	scale := fs.Int("scale", 0, "screen pixels per side of a page-group's square (default: enough for an image 512 wide)")
	maxSize := maxSizeFlag(fs)
	path, err := parseFileArgs(fs, args)
	if err != nil {
		return err
	}
	if *width < 0 || *width > mapMaxSide || *scale < 0 || *scale > mapMaxSide || *maxPixels < 1 {
		return fmt.Errorf("%w: -width and -scale must be 0 (the default) to %d, -pixels 1 or more", errUsage, mapMaxSide)
	}
	if err := refuseSameFile(path, *out); err != nil {
		return err
	}
	d, in, err := openInspected(path, int64(*maxSize))
	if err != nil {
		return err
	}
	defer d.Close()
	start, end := int64(0), in.Frontier
	if *heapOnly {
		start = in.HeapOffset
		if end <= start {
			return fmt.Errorf("the heap of %s is empty (its frontier is at its first byte, %d): nothing to draw with -heap", path, start)
		}
	}
	groupBytes := int64(group)
	if groupBytes == 0 {
		groupBytes = in.MinPageSize
		for (end-start+groupBytes-1)/groupBytes > int64(max(*maxPixels, 1)) {
			groupBytes *= 2
		}
	}
	if groupBytes < in.MinPageSize || groupBytes&(groupBytes-1) != 0 {
		return fmt.Errorf("%w: -group %d is not a power of two >= the min page %d", errUsage, groupBytes, in.MinPageSize)
	}
	pixels := (end - start + groupBytes - 1) / groupBytes
	w, sc, h := mapLayout(int(min(pixels, mapMaxSide*mapMaxSide+1)), *width, *scale)
	// In int64: the height reaches 2^42, past a 32-bit int.
	if wide, tall := int64(w)*int64(sc), int64(h)*int64(sc); pixels > mapMaxSide*mapMaxSide || wide > mapMaxSide || tall > mapMaxSide {
		return fmt.Errorf("%w: a map of %d page-groups in %d×%d pixels is more than %d pixels a side: raise -group, or lower -width or -scale", errUsage, pixels, wide, tall, mapMaxSide)
	}
	m := newHeapMap(start, end, groupBytes)
	if !*heapOnly {
		m.add(0, in.Root.Offset, mapMetadata) // the superblocks
		m.add(in.Root.Offset, in.Root.Size, mapMetadata)
		m.add(in.Journal.Offset, in.Journal.Size, mapJournal)
		m.add(in.AllocatorState.Offset, in.AllocatorState.Size, mapMetadata)
		at := in.LogRegions.Offset
		for _, l := range in.Logs {
			if l.Carved {
				continue // a heap page: the walk below draws it
			}
			m.add(at, l.Ring.Offset-at, mapMetadata) // the log table
			m.add(l.Ring.Offset, l.Ring.Size, mapLog)
			at = l.Ring.End()
		}
		m.add(at, in.HeapOffset-at, mapPadding)
	}
	err = d.WalkHeap(func(e pagealloc.HeapExtent) bool {
		m.add(e.Offset, e.Size, kindClass[e.Kind])
		return true
	})
	if err != nil {
		return err
	}
	m.flush()
	img := m.image(*width, *scale)
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return m.printLegend(stdout, *out, img, in)
}

// refuseSameFile keeps map from writing its picture over the device.
func refuseSameFile(device, out string) error {
	a, errA := os.Stat(device)
	b, errB := os.Stat(out)
	if errA == nil && errB == nil && os.SameFile(a, b) {
		return fmt.Errorf("%w: -o %s is the device file itself", errUsage, out)
	}
	return nil
}

// heapMap accumulates, for each page-group of the file from start, the
// bytes each class holds, fed with extents in increasing offset order.
type heapMap struct {
	start      int64 // the file offset of the first pixel
	groupBytes int64
	groupShift uint
	pixels     []mapClass
	cur        int64 // the group being accumulated
	curBytes   [mapClasses]int64
	next       int64 // where the next extent must start

	bytes    [mapClasses]int64 // per class, exact
	freeRuns int64             // maximal runs of free pages
	freeRun  int64             // bytes of the run ending at next, if free
	maxRun   int64
}

func newHeapMap(start, end, groupBytes int64) *heapMap {
	return &heapMap{
		start:      start,
		next:       start,
		groupBytes: groupBytes,
		groupShift: uint(bits.TrailingZeros64(uint64(groupBytes))),
		pixels:     make([]mapClass, (end-start+groupBytes-1)/groupBytes),
	}
}

// add records that [off, off+n) holds class c. Extents arrive in order;
// a gap before off would be a bug in the caller, so it is drawn as
// unaccounted rather than hidden.
func (m *heapMap) add(off, n int64, c mapClass) {
	if n <= 0 {
		return
	}
	if off > m.next {
		m.add(m.next, off-m.next, mapUnaccounted)
	}
	m.bytes[c] += n
	if c == mapFree {
		if m.freeRun == 0 {
			m.freeRuns++
		}
		m.freeRun += n
		m.maxRun = max(m.maxRun, m.freeRun)
	} else {
		m.freeRun = 0
	}
	end := off + n
	m.next = end
	// Pixels count from start: offsets are relative to it from here on.
	off, end = off-m.start, end-m.start
	for off < end {
		g := off >> m.groupShift
		if g != m.cur {
			m.flush()
			m.cur = g
		}
		groupEnd := (g + 1) << m.groupShift
		if off == g<<m.groupShift && end >= groupEnd {
			// Whole groups of one class need no counting.
			whole := (end - off) >> m.groupShift
			for i := range whole {
				m.pixels[g+i] = c
			}
			off += whole << m.groupShift
			m.cur = off >> m.groupShift
			continue
		}
		step := min(end, groupEnd) - off
		m.curBytes[c] += step
		off += step
	}
}

// flush sets the pixel of the group being accumulated, if any bytes were
// counted for it, to the class holding the most of them.
func (m *heapMap) flush() {
	best, total := mapNone, int64(0)
	for c, n := range m.curBytes {
		total += n
		if n > m.curBytes[best] {
			best = mapClass(c)
		}
	}
	if total > 0 && m.cur < int64(len(m.pixels)) {
		m.pixels[m.cur] = best
	}
	m.curBytes = [mapClasses]int64{}
}

// mapMaxSide bounds the image's width and height, in pixels.
const mapMaxSide = 1 << 14

// mapLayout returns the rows' width for n pixels (width, or if 0 a power
// of two near the square root of n), the side of each pixel's square
// (scale, or if 0 enough for about 512 pixels across) and the number of
// rows.
func mapLayout(n, width, scale int) (w, s, h int) {
	if width <= 0 {
		width = 1
		for width*width < n {
			width *= 2
		}
	}
	if scale <= 0 {
		scale = max(1, 512/width)
	}
	return width, scale, max(1, (n+width-1)/width)
}

// image lays the pixels out as mapLayout says.
func (m *heapMap) image(width, scale int) *image.Paletted {
	width, scale, height := mapLayout(len(m.pixels), width, scale)
	palette := make(color.Palette, mapClasses)
	for c, l := range mapLegend {
		palette[c] = l.colour
	}
	img := image.NewPaletted(image.Rect(0, 0, width*scale, height*scale), palette)
	for i, c := range m.pixels {
		x, y := i%width*scale, i/width*scale
		for dy := range scale {
			row := img.Pix[(y+dy)*img.Stride+x:]
			for dx := range scale {
				row[dx] = uint8(c)
			}
		}
	}
	return img
}

func (m *heapMap) printLegend(w io.Writer, out string, img *image.Paletted, in *pagealloc.Inspection) error {
	var pixels [mapClasses]int
	for _, c := range m.pixels {
		pixels[c]++
	}
	b := img.Bounds()
	fmt.Fprintf(w, "wrote %s: %d×%d, one pixel per %s page-group, file offsets %d to %d (the frontier), row by row\n",
		out, b.Dx(), b.Dy(), formatBytes(m.groupBytes), m.start, m.next)
	tw := table(w, "colour", "state", "page-groups", "bytes", "share")
	for c := mapMetadata; c < mapClasses; c++ {
		l := mapLegend[c]
		if m.bytes[c] == 0 && (c < mapAllocated || c == mapUnaccounted) {
			continue // not drawn (-heap), or not there: only corruption leaves unaccounted space
		}
		share := 0.0
		if m.next > m.start {
			share = 100 * float64(m.bytes[c]) / float64(m.next-m.start)
		}
		row(tw, fmt.Sprintf("#%02x%02x%02x", l.colour.R, l.colour.G, l.colour.B), l.name, pixels[c], humanBytes(m.bytes[c]), fmt.Sprintf("%.1f%%", share))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "free space: %s in %d runs, the largest %s; largest free page %s\n",
		humanBytes(m.bytes[mapFree]), m.freeRuns, humanBytes(m.maxRun), humanBytes(largestFreePage(in)))
	if m.bytes[mapUnaccounted] > 0 {
		return errors.New("the heap has unaccounted space: run pagealloc check")
	}
	return nil
}

func largestFreePage(in *pagealloc.Inspection) int64 {
	largest := int64(0)
	for _, fl := range in.FreeLists {
		if fl.Pages > 0 {
			largest = fl.PageBytes
		}
	}
	return largest
}
