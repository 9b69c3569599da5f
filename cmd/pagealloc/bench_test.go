package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc"
)

func TestBench(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	code, stdout, stderr := runCLI(t, "bench", "-duration", "100ms", "-committers", "4", "-size", "256MiB", "-nosync", "-file", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"commit (1 committer)", "commit (4 committers)", "alloc+free", "sub-page", "log append", "pool get+put", "mixed",
		"p99.9 µs", "The device at the end:", "allocated", "sub-page class", "\nCheck: OK\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	// Not a terminal: one plain line per phase, no redrawing.
	if strings.Count(stderr, "\nbench: ") != 7 || strings.Contains(stderr, "\r") || !strings.Contains(stderr, "bench: 7/7 mixed") {
		t.Errorf("progress lines:\n%q", stderr)
	}
	// The device is kept when -file names it, and passes check.
	if code, stdout, _ := runCLI(t, "check", path); code != 0 || stdout != "OK\n" {
		t.Errorf("check of the bench device: exit %d, %q", code, stdout)
	}
}

func TestBenchJSON(t *testing.T) {
	code, stdout, stderr := runCLI(t, "bench", "-duration", "50ms", "-committers", "2", "-size", "64MiB", "-nosync", "-json", "-file", filepath.Join(t.TempDir(), "dev"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got struct {
		Results []benchResult
		Stats   deviceStats
		Check   string
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("%v in %s", err, stdout)
	}
	if len(got.Results) != 7 || got.Check != "OK" || got.Stats.Allocator.AllocatedPages == 0 || len(got.Stats.Logs) != 1 {
		t.Fatalf("got %+v", got)
	}
	for _, r := range got.Results {
		if r.Count == 0 || r.OpsPerS <= 0 || !(r.P50us <= r.P99us && r.P99us <= r.P999us && r.P999us <= r.Maxus) {
			t.Errorf("%s: %+v", r.Op, r)
		}
	}
}

// TestBenchTempDir runs bench as a newcomer would, without -file, and
// checks that it leaves nothing behind in the temporary directory.
func TestBenchTempDir(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	if code, _, stderr := runCLI(t, "bench", "-duration", "20ms", "-committers", "2", "-size", "64MiB", "-nosync"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("left in the temporary directory: %v %v", left, err)
	}
	// Below 64 MiB the workload has no room: a usage error, not a failure
	// halfway through (32 MiB ran out of log space in the log phase).
	for _, size := range []string{"1MiB", "32MiB", "63MiB"} {
		if code, _, stderr := runCLI(t, "bench", "-size", size); code != 2 || !strings.Contains(stderr, "at least 64MiB") {
			t.Errorf("-size %s: exit %d, %q; want 2 and the least size", size, code, stderr)
		}
	}
}

// TestBenchSizeForCommitters: every committer keeps a 64 KiB log entry in
// flight, and slots and pages of its own, so a device too small for the
// -committers given is a usage error, as a -size too small for any is,
// rather than a failure halfway through (64 MiB and 128 committers ran
// out of log space in the log phase); the least size it names is enough.
func TestBenchSizeForCommitters(t *testing.T) {
	code, _, stderr := runCLI(t, "bench", "-duration", "50ms", "-committers", "128", "-size", "64MiB", "-nosync", "-file", filepath.Join(t.TempDir(), "dev"))
	if code != 2 || !strings.Contains(stderr, "at least 128MiB") {
		t.Fatalf("-committers 128 -size 64MiB: exit %d, %q; want 2 and the least size", code, stderr)
	}
	if code, _, stderr := runCLI(t, "bench", "-duration", "50ms", "-committers", "128", "-size", "128MiB", "-nosync", "-file", filepath.Join(t.TempDir(), "dev")); code != 0 {
		t.Errorf("-committers 128 -size 128MiB: exit %d: %s", code, stderr)
	}
}

// TestBenchSizeUnmappable: a -size no address space maps is a flag out of
// range, a usage error as create's -max-size is, and leaves no file.
func TestBenchSizeUnmappable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "dev")
	code, _, stderr := runCLI(t, "bench", "-duration", "20ms", "-committers", "1", "-nosync", "-size", "4611686018427387904", "-file", file)
	if code != 2 || !strings.Contains(stderr, "-size") || !strings.Contains(stderr, "request too large") {
		t.Errorf("-size 2^62: exit %d, %q; want 2, naming -size and the library's refusal", code, stderr)
	}
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("-size 2^62, refused, left a file (stat: %v)", err)
	}
}

func TestLatencyHistogram(t *testing.T) {
	var h latencyHistogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		perMille int64
		want     time.Duration
	}{{500, 500 * time.Microsecond}, {990, 990 * time.Microsecond}, {999, 999 * time.Microsecond}} {
		got := h.percentile(c.perMille)
		if diff := got - c.want; diff < -c.want/30 || diff > c.want/30 {
			t.Errorf("p%v = %v, want %v within 3%%", float64(c.perMille)/10, got, c.want)
		}
	}
	if h.max != time.Millisecond || h.n != 1000 {
		t.Errorf("max %v, n %d", h.max, h.n)
	}
	for ns := uint64(0); ns < 1<<20; ns = ns*5/4 + 1 {
		if mid := uint64(bucketMiddle(latencyBucket(ns))); mid+mid/30 < ns || mid > ns+ns/30+1 {
			t.Errorf("%d ns lands in a bucket around %d ns", ns, mid)
		}
	}
}

// TestPercentileNearestRank: the p-th percentile is the latency of the
// call at rank ceil(p·n) in increasing order, the least that a share p of
// the calls did not exceed; not the one after it.
func TestPercentileNearestRank(t *testing.T) {
	var h latencyHistogram
	for range 99 {
		h.add(10 * time.Nanosecond)
	}
	h.add(time.Millisecond)
	if got := h.percentile(990); got != 10*time.Nanosecond {
		t.Errorf("99 calls of 10ns and one of 1ms: p99 = %v, want 10ns", got)
	}
	if got := h.percentile(999); got < time.Millisecond*97/100 || got > time.Millisecond {
		t.Errorf("99 calls of 10ns and one of 1ms: p99.9 = %v, want 1ms within 3%%", got)
	}
	var two latencyHistogram
	two.add(1 * time.Nanosecond)
	two.add(2 * time.Nanosecond)
	if got := two.percentile(500); got != time.Nanosecond {
		t.Errorf("calls of 1ns and 2ns: p50 = %v, want 1ns", got)
	}
}

// TestBenchOneCommitter: with -committers 1 the concurrent commit phase
// would be the single committer's again: it runs once, and no label reads
// "1 committers".
func TestBenchOneCommitter(t *testing.T) {
	code, stdout, stderr := runCLI(t, "bench", "-duration", "1ms", "-committers", "1", "-size", "64MiB", "-nosync", "-file", filepath.Join(t.TempDir(), "dev"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout+stderr, "1 committers") || strings.Count(stdout, "commit (1 committer)") != 1 {
		t.Errorf("labels for one committer:\n%s\n%s", stdout, stderr)
	}
}

// TestRunPhaseStopsAtFirstFailure runs a phase of an hour in which one
// goroutine's call fails at once: the others stop with it, and the phase
// returns that failure, rather than running to the deadline.
func TestRunPhaseStopsAtFirstFailure(t *testing.T) {
	failure := errors.New("the device failed")
	var calls atomic.Int64
	ph := benchPhase{name: "failing", n: 4, op: func(_ context.Context, g int, rng *rand.Rand) error {
		if g == 0 {
			return failure
		}
		calls.Add(1)
		time.Sleep(time.Millisecond)
		return nil
	}}
	wantPhaseFailure(t, ph, failure, func() string { return fmt.Sprintf("%d calls made", calls.Load()) })
}

// wantPhaseFailure runs a phase of an hour and wants it to end with
// failure within 20 s; why tells what it did if it hangs.
func wantPhaseFailure(t *testing.T, ph benchPhase, failure error, why func() string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := runPhase(context.Background(), ph, time.Hour, new(atomic.Int64))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, failure) {
			t.Errorf("runPhase: %v, want %v", err, failure)
		}
	case <-time.After(20 * time.Second): // a hang, not a speed goal
		t.Fatalf("runPhase still running 20 s after a call failed: %s", why())
	}
}

// TestRunPhaseInterruptsWaitingCalls: a call waiting inside the library
// (a Get from a pool whose one buffer is held) returns once another
// goroutine's call has failed, so that the phase ends with that failure
// instead of hanging.
func TestRunPhaseInterruptsWaitingCalls(t *testing.T) {
	pool, err := pagealloc.NewPool(1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	held, err := pool.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Put(held)
	failure := errors.New("the device failed")
	get := poolOp(pool)
	var waiting atomic.Int64
	ph := benchPhase{name: "waiting", n: 3, op: func(ctx context.Context, g int, rng *rand.Rand) error {
		if g == 0 {
			for waiting.Load() < 2 { // fail once the others wait
				time.Sleep(time.Millisecond)
			}
			return failure
		}
		waiting.Add(1)
		return get(ctx, g, rng)
	}}
	wantPhaseFailure(t, ph, failure, func() string { return "the pool's waiting Gets were not interrupted" })
}
