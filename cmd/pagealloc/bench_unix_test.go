//go:build unix

package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// benchChildEnv tells TestBenchInterrupt's child process to run bench.
const benchChildEnv = "PAGEALLOC_BENCH_CHILD"

// TestBenchInterrupt: bench stopped with an interrupt (^C) while its
// phases run stops them, exits 1 saying so and removes the temporary
// directory it made, as it does when it ends on its own.
func TestBenchInterrupt(t *testing.T) {
	if os.Getenv(benchChildEnv) != "" {
		os.Exit(run([]string{"bench", "-duration", "10m", "-committers", "2", "-size", "64MiB", "-nosync"}, os.Stdout, os.Stderr))
	}
	tmp := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), benchChildEnv+"=1", "TMPDIR="+tmp)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first progress line comes once the device is made and the
	// phases begin.
	r := bufio.NewReader(stderr)
	first, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "bench: 7 phases") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("first line %q, %v", first, err)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(rest), "interrupted") {
		t.Errorf("interrupted bench: %v (exit %d), stderr %q; want exit 1 and \"interrupted\"", err, code, first+string(rest))
	}
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("left in the temporary directory: %v %v", left, err)
	}
}
