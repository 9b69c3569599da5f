package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
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
		fmt.Sprintf(`(?m)^  0\s+256\s+%d\s+%d\s+%d\s`, wantClass.Parents, wantClass.SlotsUsed, wantClass.SlotsFree),
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
