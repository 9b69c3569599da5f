//go:build unix

package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/pagealloc/pagealloc"
)

// TestVerbsRefuseDeviceOpenForWriting: a device some Device has open for
// writing changes under a reader, so the inspecting verbs refuse it
// (exit 1, "in use") rather than report what they half see; once it is
// closed they read it.
func TestVerbsRefuseDeviceOpenForWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device")
	d, err := pagealloc.Create(path, fixtureOptions())
	if err != nil {
		t.Fatal(err)
	}
	verbs := [][]string{{"stats", path}, {"check", path}, {"dump", path}, {"map", "-o", filepath.Join(t.TempDir(), "map.png"), path}}
	for _, args := range verbs {
		if code, _, stderr := runCLI(t, args...); code != 1 || !strings.Contains(stderr, "in use") {
			t.Errorf("%v beside a writer: exit %d, stderr %q; want 1 and \"in use\"", args, code, stderr)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, args := range verbs {
		if code, _, stderr := runCLI(t, args...); code != 0 {
			t.Errorf("%v after Close: exit %d, stderr %q; want 0", args, code, stderr)
		}
	}
}
