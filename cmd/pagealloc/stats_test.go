package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/pagealloc/pagealloc"
)

func TestStats(t *testing.T) {
	path := fixtureDevice(t)
	d, err := pagealloc.Open(path, &pagealloc.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	want := d.Stats()
	class, err := d.Subpages(256)
	if err != nil {
		t.Fatal(err)
	}
	wantClass := class.Stats()
	d.Close()
	if want.AllocatedPages == 0 || want.PendingPages == 0 || want.FreeBytes == 0 || wantClass.SlotsUsed == 0 {
		t.Fatalf("the fixture lacks allocated, pending or free pages or slots: %+v %+v", want, wantClass)
	}

	code, stdout, stderr := runUnchanged(t, "stats", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, line := range []string{
		fmt.Sprintf(`(?m)^  allocated\s+%d\s+%s\s`, want.AllocatedPages, regexp.QuoteMeta(humanBytes(want.UsedBytes))),
		fmt.Sprintf(`(?m)^  pending\s+%d\s+%s\s`, want.PendingPages, regexp.QuoteMeta(humanBytes(want.PendingBytes))),
		fmt.Sprintf(`(?m)^  0\s+4KiB\s+%d\s`, want.FreePages[0]),
		fmt.Sprintf(`(?m)^  0\s+256\s+%d\s+%d\s+%d\s+%d\s`, wantClass.Parents, wantClass.SlotsUsed, wantClass.SlotsPending, wantClass.SlotsFree),
		`(?m)^  wal\s+64KiB\s`,
	} {
		if !regexp.MustCompile(line).MatchString(stdout) {
			t.Errorf("output does not match %s:\n%s", line, stdout)
		}
	}

	code, stdout, stderr = runUnchanged(t, "stats", "-json", path)
	if code != 0 {
		t.Fatalf("-json: exit %d: %s", code, stderr)
	}
	var got deviceStats
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("%v in %s", err, stdout)
	}
	if !reflect.DeepEqual(got.Allocator, want) || len(got.Subpages) != 1 || got.Subpages[0].SubpageStats != wantClass ||
		len(got.Logs) != 1 || got.Logs[0].Name != "wal" {
		t.Errorf("-json gave %+v, want %+v and %+v", got, want, wantClass)
	}
}

// TestStatsBothSuperblocksDamaged: with neither superblock copy
// verifying, stats fails with both copies' errors, one a line, each
// without the library's name: the first line names the verb instead.
func TestStatsBothSuperblocksDamaged(t *testing.T) {
	path := damagedCopy(t, fixtureDevice(t), func(b []byte) { b[70] ^= 1; b[4096+70] ^= 1 })
	code, stdout, stderr := runUnchanged(t, "stats", path)
	if code != 1 || stdout != "" {
		t.Fatalf("exit %d, stdout %q; want 1 and nothing", code, stdout)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "pagealloc stats: ") ||
		!strings.Contains(lines[0], "corrupt superblock at offset 0") || !strings.HasPrefix(lines[1], "corrupt superblock at offset 4096") {
		t.Fatalf("stderr:\n%s\nwant the verb's name, then each copy's error on a line", stderr)
	}
}

// TestSubpageSlotsPending: slots freed but not yet reusable are neither
// used nor free; stats and dump show them, so that a class's used,
// pending and free slots add up to its parents' 63 each. Close makes them
// reusable: the device is copied while open, as a crash would leave it.
func TestSubpageSlotsPending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device")
	d, err := pagealloc.Create(path, fixtureOptions())
	if err != nil {
		t.Fatal(err)
	}
	class, err := d.Subpages(256)
	if err != nil {
		t.Fatal(err)
	}
	var slots []pagealloc.Addr
	err = d.Update(func(tx *pagealloc.Txn) error {
		for range 10 {
			a, err := class.Alloc(tx)
			if err != nil {
				return err
			}
			slots = append(slots, a)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Update(func(tx *pagealloc.Txn) error {
		for _, a := range slots[:3] {
			if err := class.Free(tx, a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	image, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "crashed")
	if err := os.WriteFile(path, image, 0o644); err != nil {
		t.Fatal(err)
	}
	c := inspect(t, path).SubpageClasses[0]
	if c.Parents != 1 || c.SlotsUsed != 7 || c.SlotsPending != 3 || c.SlotsFree != 53 {
		t.Fatalf("class after 10 allocs and 3 frees: %+v", c)
	}
	for verb, re := range map[string]string{
		"stats": `(?m)^  sub-page class\s+slot size\s+parents\s+slots used\s+slots pending\s+slots free\s+overhead\n  0\s+256\s+1\s+7\s+3\s+53\s`,
		"dump":  `(?m)^  class\s+slot size\s+parent size\s+parents\s+slots used\s+slots pending\s+slots free\s+overhead\s+list head\n  0\s+256\s+16KiB\s+1\s+7\s+3\s+53\s`,
	} {
		code, stdout, stderr := runUnchanged(t, verb, path)
		if code != 0 || !regexp.MustCompile(re).MatchString(stdout) {
			t.Errorf("%s: exit %d, stderr %q; output does not match %s:\n%s", verb, code, stderr, re, stdout)
		}
	}
}
