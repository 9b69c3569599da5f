package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestBench(t *testing.T) {
	var out, errOut bytes.Buffer
	args := []string{"bench", "-duration", "100ms", "-committers", "4", "-nosync", "-file", filepath.Join(t.TempDir(), "dev")}
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"commit (1 committer)", "alloc+free", "sub-page", "log append", "Check: OK"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBenchJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	args := []string{"bench", "-duration", "50ms", "-committers", "2", "-nosync", "-json", "-file", filepath.Join(t.TempDir(), "dev")}
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var got struct {
		Results []benchResult
		Check   string
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v in %s", err, out.String())
	}
	if len(got.Results) != 5 || got.Check != "OK" {
		t.Fatalf("got %+v", got)
	}
	for _, r := range got.Results {
		if r.Count == 0 {
			t.Errorf("%s ran no operation", r.Op)
		}
	}
}

func TestUnknownVerb(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "unknown verb") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}
