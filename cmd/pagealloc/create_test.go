package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device")
	code, stdout, stderr := runCLI(t, "create", "-max-size", "1GiB", "-min-page", "8K", "-max-page", "1MiB",
		"-journal", "128K", "-root", "16K", "-log", "wal=1M", "-log", "index=64K", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	in := inspect(t, path)
	switch {
	case in.Capacity != 1<<30, in.MinPageSize != 8<<10, in.MaxPageSize != 1<<20,
		in.Journal.Size != 128<<10, in.Root.Size != 16<<10, in.Frontier != in.HeapOffset:
		t.Errorf("created %+v", in)
	}
	if len(in.Logs) != 2 || in.Logs[0].Name != "wal" || in.Logs[0].Ring.Size != 1<<20 || in.Logs[1].Name != "index" || in.Logs[1].Ring.Size != 64<<10 {
		t.Errorf("logs %+v", in.Logs)
	}
	for _, want := range []string{"created " + path, "pages 8KiB to 1MiB (8 orders)", "journal ring", "131072"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if code, _, _ := runCLI(t, "check", path); code != 0 {
		t.Errorf("check of a new device: exit %d", code)
	}

	// Defaults: no flag at all.
	plain := filepath.Join(t.TempDir(), "plain")
	if code, _, stderr := runCLI(t, "create", plain); code != 0 {
		t.Fatalf("create with defaults: exit %d: %s", code, stderr)
	}
	if in := inspect(t, plain); in.MinPageSize != 4096 || in.MaxPageSize != 16<<20 || in.Journal.Size != 4<<20 || len(in.Logs) != 0 {
		t.Errorf("defaults gave %+v", in)
	}

	for _, c := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{path}, 1, "pagealloc create: already exists: file"}, // the library's name said once
		{[]string{"-max-page", "3000", filepath.Join(t.TempDir(), "x")}, 2, "pagealloc create: invalid argument: MaxPageSize 3000"},
		{[]string{"-log", "wal=100", filepath.Join(t.TempDir(), "x")}, 2, "pagealloc create: invalid argument"},
		{[]string{"-log", "nosize", filepath.Join(t.TempDir(), "x")}, 2, "name=size"},
		{[]string{"-journal", "lots", filepath.Join(t.TempDir(), "x")}, 2, "not a byte count"},
		{[]string{"-max-size", "4611686018427387904", filepath.Join(t.TempDir(), "x")}, 2, "pagealloc create: request too large"},
		{[]string{}, 2, "exactly one FILE"},
	} {
		code, _, stderr := runCLI(t, append([]string{"create"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.err) {
			t.Errorf("create %v: exit %d, stderr %q; want %d and %q", c.args, code, stderr, c.code, c.err)
		}
		if c.code == 2 && len(c.args) > 0 {
			if _, err := os.Stat(c.args[len(c.args)-1]); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("create %v, refused, left a file (stat: %v)", c.args, err)
			}
		}
	}
}
