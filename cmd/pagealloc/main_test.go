package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pagealloc/pagealloc"
)

// runCLI runs the command with args and returns its exit status and
// output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// fixtureOptions make a small device: pages of 4 to 64 KiB, a 256 KiB
// journal, a file that grows 1 MiB at a time, and one 64 KiB log.
func fixtureOptions() *pagealloc.Options {
	return &pagealloc.Options{
		NoSync:      true,
		MaxSize:     64 << 20,
		MaxPageSize: 64 << 10,
		JournalSize: 256 << 10,
		GrowthStep:  1 << 20,
		LogRegions:  []pagealloc.LogRegion{{Name: "wal", Size: 64 << 10}},
	}
}

// createClosed creates a device at path with o and closes it: its heap
// holds nothing.
func createClosed(t *testing.T, path string, o *pagealloc.Options) {
	t.Helper()
	d, err := pagealloc.Create(path, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// fixtureDevice creates a closed device holding allocated, free and
// pending pages of every size, a sub-page class with slots in use, and log
// entries, from a fixed sequence of operations, and returns its path. It
// is reopened after the allocations, so that the pages freed before
// become free pages (reusable once a checkpoint covers their free) and
// those freed after stay pending.
func fixtureDevice(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "device")
	d, err := pagealloc.Create(path, fixtureOptions())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var pages []pagealloc.Addr
	fixtureWorkload(t, d, rng, &pages)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if d, err = pagealloc.Open(path, &pagealloc.Options{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// The first transaction since the reopen releases the pages freed
	// before it onto the free lists; these frees stay pending.
	for range 20 {
		j := rng.IntN(len(pages))
		if err := d.Update(func(tx *pagealloc.Txn) error { return tx.Free(pages[j]) }); err != nil {
			t.Fatal(err)
		}
		pages = append(pages[:j], pages[j+1:]...)
	}
	l, err := d.Log("wal")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		r, err := l.Append(1000)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Write(r, bytes.Repeat([]byte{byte('a' + i)}, 1000)); err != nil {
			t.Fatal(err)
		}
		if err := l.Commit(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// fixtureWorkload runs 300 transactions, each allocating a page of 4 to
// 64 KiB and a 256-byte slot, every third also freeing a page of pages.
func fixtureWorkload(t *testing.T, d *pagealloc.Device, rng *rand.Rand, pages *[]pagealloc.Addr) {
	t.Helper()
	class, err := d.Subpages(256)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		err := d.Update(func(tx *pagealloc.Txn) error {
			if len(*pages) > 0 && i%3 == 0 {
				j := rng.IntN(len(*pages))
				if err := tx.Free((*pages)[j]); err != nil {
					return err
				}
				*pages = append((*pages)[:j], (*pages)[j+1:]...)
			}
			a, err := tx.Alloc(int64(4096) << rng.IntN(5))
			if err != nil {
				return err
			}
			*pages = append(*pages, a)
			_, err = class.Alloc(tx)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// crashCopy commits four transactions of root-area writes on a device
// and copies the file while the device is still open: the image a crash
// that kept every write leaves, with four journal records no checkpoint
// covers. It returns the copy's path. The device was closed and opened
// once before, after a first write, so that its two superblock copies
// record different journal heads.
func crashCopy(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "device")
	d, err := pagealloc.Create(path, fixtureOptions())
	if err != nil {
		t.Fatal(err)
	}
	rootOff, _ := d.Root()
	if err := d.Update(func(tx *pagealloc.Txn) error { return tx.Write(rootOff, []byte("first")) }); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if d, err = pagealloc.Open(path, fixtureOptions()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i := range 4 {
		err := d.Update(func(tx *pagealloc.Txn) error { return tx.Write(rootOff+int64(i)*8, []byte("12345678")) })
		if err != nil {
			t.Fatal(err)
		}
	}
	image, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "crashed")
	if err := os.WriteFile(copyPath, image, 0o644); err != nil {
		t.Fatal(err)
	}
	return copyPath
}

// inspect opens the device at path read-only and returns its inspection.
func inspect(t *testing.T, path string) *pagealloc.Inspection {
	t.Helper()
	d, in, err := openInspected(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	return in
}

// damagedCopy writes a copy of the file at path changed by edit and
// returns the copy's path.
func damagedCopy(t *testing.T, path string, edit func(b []byte)) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edit(b)
	dst := filepath.Join(t.TempDir(), "damaged")
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// runUnchanged runs the command on the device at path, the last argument,
// and fails the test if the file's bytes or size changed.
func runUnchanged(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	path := args[len(args)-1]
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, args...)
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("%v changed the device file", args)
	}
	return code, stdout, stderr
}

// TestInspectingVerbsLeaveFileUnchanged runs every verb that only looks
// at a device on a closed device and on one a crash left with journal
// records to replay, which opening it for writing would apply to the file.
func TestInspectingVerbsLeaveFileUnchanged(t *testing.T) {
	png := filepath.Join(t.TempDir(), "map.png")
	for _, dev := range []struct {
		path    string
		records int // journal records to replay
	}{{fixtureDevice(t), 0}, {crashCopy(t), 4}} {
		path := dev.path
		if n := len(inspect(t, path).JournalState.Records); n != dev.records {
			t.Fatalf("%s has %d journal records to replay, want %d", path, n, dev.records)
		}
		for _, args := range inspectingVerbs(path, png) {
			if code, _, stderr := runUnchanged(t, args...); code != 0 {
				t.Errorf("%v: exit %d: %s", args, code, stderr)
			}
		}
	}
}

// inspectingVerbs returns the command lines of every verb that only looks
// at the device at path; map writes its image to png.
func inspectingVerbs(path, png string) [][]string {
	return [][]string{
		{"stats", path},
		{"stats", "-json", path},
		{"check", path},
		{"dump", path},
		{"dump", "-pages", "-json", path},
		{"map", "-o", png, path},
	}
}

// TestVerbsOnGoldenImages runs every inspecting verb on the devices that
// the code of each format version wrote (testdata/golden, see the
// package's TestGoldenImages), crashed ones with records to replay
// included: each exits 0 and leaves the file unchanged.
func TestVerbsOnGoldenImages(t *testing.T) {
	images, err := filepath.Glob(filepath.Join("..", "..", "testdata", "golden", "*.dev.gz"))
	if err != nil || len(images) == 0 {
		t.Fatalf("no golden images (%v)", err)
	}
	dir := t.TempDir()
	png := filepath.Join(dir, "map.png")
	for _, image := range images {
		name := strings.TrimSuffix(filepath.Base(image), ".dev.gz")
		path := filepath.Join(dir, name)
		f, err := os.Open(image)
		if err != nil {
			t.Fatal(err)
		}
		z, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", image, err)
		}
		img, err := io.ReadAll(z)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", image, err)
		}
		if err := os.WriteFile(path, img, 0o644); err != nil {
			t.Fatal(err)
		}
		records := len(inspect(t, path).JournalState.Records)
		if crashed := strings.HasSuffix(name, "-crash"); crashed != (records > 0) {
			t.Errorf("%s: %d journal records to replay", name, records)
		}
		for _, args := range inspectingVerbs(path, png) {
			if code, _, stderr := runUnchanged(t, args...); code != 0 {
				t.Errorf("%s: %v: exit %d: %s", name, args[:len(args)-1], code, stderr)
			}
		}
	}
}

// TestInspectingVerbsMaxSize grows a device's file past the capacity it
// records, as an Open with a larger MaxSize whose superblock copy was lost
// since leaves it: every inspecting verb refuses it, naming MaxSize, and
// works with -max-size covering the file, leaving the file unchanged.
func TestInspectingVerbsMaxSize(t *testing.T) {
	path := fixtureDevice(t) // MaxSize 64 MiB
	if err := os.Truncate(path, 65<<20); err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(t.TempDir(), "map.png")
	for _, args := range [][]string{
		{"stats", path},
		{"check", path},
		{"dump", path},
		{"map", "-o", png, path},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != 1 || !strings.Contains(stderr, "MaxSize") {
			t.Errorf("%v: exit %d: %s; want 1, naming MaxSize", args, code, stderr)
		}
		withFlag := append([]string{args[0], "-max-size", "128MiB"}, args[1:]...)
		if code, _, stderr := runUnchanged(t, withFlag...); code != 0 {
			t.Errorf("%v: exit %d: %s", withFlag, code, stderr)
		}
	}
	if code, _, stderr := runCLI(t, "check", "-max-size", "64MiB", path); code != 1 || !strings.Contains(stderr, "MaxSize") {
		t.Errorf("check -max-size 64MiB of a 65 MiB file: exit %d: %s; want 1, naming MaxSize", code, stderr)
	}
}

// TestMaxSizeShowsRecordedCapacity: a device mapped with a -max-size
// other than the capacity it records (a capacity a 32-bit build cannot
// map, a file grown past it) still shows, in stats and dump, the
// capacity it records, with the mapped one beside it.
func TestMaxSizeShowsRecordedCapacity(t *testing.T) {
	path := fixtureDevice(t) // MaxSize 64 MiB
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dump"}, "capacity 64MiB, file"},
		{[]string{"dump", "-max-size", "48MiB"}, "capacity 64MiB (mapped: 48MiB, -max-size), file"},
		{[]string{"dump", "-max-size", "128MiB"}, "capacity 64MiB (mapped: 128MiB, -max-size), file"},
		{[]string{"stats"}, "of 64.0 MiB capacity;"},
		{[]string{"stats", "-max-size", "48MiB"}, "of 64.0 MiB capacity (mapped: 48.0 MiB, -max-size);"},
		{[]string{"stats", "-max-size", "128MiB"}, "of 64.0 MiB capacity (mapped: 128.0 MiB, -max-size);"},
	} {
		args := append(c.args, path)
		code, stdout, stderr := runUnchanged(t, args...)
		if code != 0 || !strings.Contains(stdout, c.want) {
			line := regexp.MustCompile(`(?m)^.*capacity.*$`).FindString(stdout)
			t.Errorf("%v: exit %d (%s), prints %q; want it to hold %q", args[:len(args)-1], code, stderr, line, c.want)
		}
	}
}

func TestUsage(t *testing.T) {
	if code, _, stderr := runCLI(t, "frobnicate"); code != 2 || !strings.Contains(stderr, "unknown verb") {
		t.Errorf("unknown verb: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr := runCLI(t)
	if code != 2 {
		t.Errorf("no verb: exit %d", code)
	}
	for _, v := range verbs {
		if !strings.Contains(stderr, v.name) {
			t.Errorf("usage does not list %s:\n%s", v.name, stderr)
		}
	}
	for _, args := range [][]string{{"stats"}, {"check", "a", "b"}, {"dump", "-nosuchflag", "x"}, {"map"}} {
		if code, _, _ := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, _, stderr := runCLI(t, "stats", filepath.Join(t.TempDir(), "missing")); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing file: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, "dump", "-h"); code != 0 || !strings.Contains(stderr, "-pages") {
		t.Errorf("dump -h: exit %d, %q", code, stderr)
	}
}

// TestHelpExitsZero: asking for help, of the command as of a verb, is
// not a usage error: the usage goes to stderr and the exit status is 0.
// No verb at all is one (2).
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"-help"}, {"--help"}, {"help"}, {"stats", "-h"}} {
		if code, _, stderr := runCLI(t, args...); code != 0 || !strings.Contains(stderr, "usage: pagealloc") {
			t.Errorf("%v: exit %d, stderr %q; want 0 and the usage", args, code, stderr)
		}
	}
	if code, _, _ := runCLI(t); code != 2 {
		t.Errorf("no verb: exit %d, want 2", code)
	}
}

func TestParseBytes(t *testing.T) {
	for text, want := range map[string]int64{
		"4096": 4096, "64K": 64 << 10, "64KiB": 64 << 10, "16MiB": 16 << 20, "1g": 1 << 30, "2TiB": 2 << 40, "512B": 512,
	} {
		got, err := parseBytes(text)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", text, got, err, want)
		}
		if back, err := parseBytes(formatBytes(got)); err != nil || back != got {
			t.Errorf("formatBytes(%d) = %q reads back as %d, %v", got, formatBytes(got), back, err)
		}
	}
	for _, bad := range []string{"", "K", "-4K", "4X", "1.5G", "99999999999T"} {
		if n, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", bad, n)
		}
	}
}

// TestFileOperandAfterDashDash: "--" ends a verb's flags, so a file whose
// name starts with "-" can be named after it; flags may still follow an
// operand given before any "--", and a second operand is a usage error
// either way.
func TestFileOperandAfterDashDash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "-json")
	createClosed(t, path, fixtureOptions())
	t.Chdir(dir)
	if code, stdout, stderr := runCLI(t, "check", "--", "-json"); code != 0 || stdout != "OK\n" {
		t.Errorf("check -- -json: exit %d, stdout %q, stderr %q; want 0 and OK", code, stdout, stderr)
	}
	if code, stdout, stderr := runCLI(t, "stats", "-json", "--", "-json"); code != 0 || !strings.HasPrefix(stdout, "{") {
		t.Errorf("stats -json -- -json: exit %d, stdout %q, stderr %q; want 0 and JSON", code, stdout, stderr)
	}
	if code, stdout, stderr := runCLI(t, "stats", "./-json", "-json"); code != 0 || !strings.HasPrefix(stdout, "{") {
		t.Errorf("stats ./-json -json: exit %d, stdout %q, stderr %q; want 0 and JSON", code, stdout, stderr)
	}
	for _, args := range [][]string{{"stats", "--", "-json", "-json"}, {"stats", "./-json", "--", "-json"}} {
		if code, _, stderr := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, stderr %q; want 2", args, code, stderr)
		}
	}
}

// failingWriter refuses every write, as a full disk or a closed pipe does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no room to write") }

// TestCheckOKUnwritten: check's verdict is what it prints; if printing OK
// fails, check fails too instead of exiting 0 with nothing said.
func TestCheckOKUnwritten(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"check", fixtureDevice(t)}, failingWriter{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "no room to write") {
		t.Errorf("check with stdout failing: exit %d, stderr %q; want 1 and the write's error", code, stderr.String())
	}
}

// shortWriter takes room bytes, then refuses every write, as a disk that
// fills up does.
type shortWriter struct{ room int }

func (w *shortWriter) Write(p []byte) (int, error) {
	if len(p) > w.room {
		n := w.room
		w.room = 0
		return n, errors.New("no room to write")
	}
	w.room -= len(p)
	return len(p), nil
}

// TestOutputCutShortFails: output that cannot be written whole is a
// failure (exit 1), wherever it is cut: here in its last line.
func TestOutputCutShortFails(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh") // no logs, no sub-pages: its dump ends in "none"
	if code, _, stderr := runCLI(t, "create", "-max-size", "64MiB", fresh); code != 0 {
		t.Fatalf("create: exit %d: %s", code, stderr)
	}
	png := filepath.Join(dir, "map.png")
	n := 0
	for _, args := range [][]string{
		{"create", "-max-size", "64MiB", "NEW"},
		{"stats", fresh},
		{"dump", fresh},
		{"map", "-o", png, fresh},
	} {
		with := func() []string { // a new file for each create
			n++
			a := slices.Clone(args)
			if i := slices.Index(a, "NEW"); i >= 0 {
				a[i] = filepath.Join(dir, fmt.Sprint("new", n))
			}
			return a
		}
		code, stdout, stderr := runCLI(t, with()...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		var errOut bytes.Buffer
		if code := run(with(), &shortWriter{room: len(stdout) - 1}, &errOut); code != 1 || !strings.Contains(errOut.String(), "no room to write") {
			t.Errorf("%v with its last byte unwritten: exit %d, stderr %q; want 1 and the write's error", args, code, errOut.String())
		}
	}
}
