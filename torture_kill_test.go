//go:build unix

package pagealloc

// Process death: the test re-executes its own binary as a child that opens
// a device file in a temporary directory and runs a mixed workload on it
// (pages of every size and sub-page slots allocated, stamped with Txn.Write
// and freed, root-area writes, log appends with GC), and SIGKILLs it at a
// random moment, again and again. The child tells the parent over its
// stdout, one line per transaction:
//
//	P <id> <effects>   written holding the writer, just before Commit: the
//	                   lines P come in commit order
//	C <id>             written once Commit returned
//	L <id> <off> <n>   a log entry whose Log.Commit returned
//
// After each kill the parent reopens the file, runs Check, and requires the
// pages, slots, stamps and root area of the model after the first k
// transactions P announced, for a k that counts every transaction the
// child reported committed (C) and none it did not announce; and the last
// log entries reported committed to read back intact. The next child
// starts from what the parent found.

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var tortureKills = flag.Int("torture.kills", 0, "SIGKILLs of the child in TestTortureKill (0: 100)")

const (
	tortureKillsDefault = 100
	// The child reads these: the device file, and its generation (the
	// how-manieth child it is) and seed.
	tortureChildEnv = "PAGEALLOC_TORTURE_KILL_CHILD"
	// A child that outlives this was never killed: it exits.
	tortureChildLife = 30 * time.Second
	// The log owner keeps this many newest entries live; the parent
	// checks the newest tortureKillEntriesChecked reported committed (one
	// may be in flight beside them).
	tortureKillEntriesLive    = 8
	tortureKillEntriesChecked = tortureKillEntriesLive - 1
	tortureKillRootSlots      = 1024 // 16-byte stamps in the root area
	tortureKillCommitters     = 3
)

func tortureKillOptions() *Options {
	return &Options{
		MinPageSize: 4 << 10, MaxPageSize: 64 << 10,
		JournalSize: 128 << 10, RootSize: tortureKillRootSlots * buddyCrashSlotBytes,
		MaxSize: 1<<20 + 4<<20, GrowthStep: 256 << 10,
		LogRegions: []LogRegion{{"log", logCrashRingBytes}},
	}
}

// killEffect is one change a transaction made: a page or slot allocated
// and stamped ('A'), stamped again ('S'), freed ('F'), or a root slot
// stamped ('W', addr is the slot's index).
type killEffect struct {
	kind byte
	addr Addr
	gen  uint64
}

// killTxn is a transaction the child announced.
type killTxn struct {
	id        uint64
	effects   []killEffect
	committed bool // the child reported that Commit returned
}

// killState is what the device holds: every page and slot with its stamp,
// and the root slots stamped.
type killState struct {
	held  map[Addr]uint64
	roots map[int64]uint64
}

func (s killState) clone() killState {
	return killState{maps.Clone(s.held), maps.Clone(s.roots)}
}

func (s killState) apply(tx *killTxn) {
	for _, e := range tx.effects {
		switch e.kind {
		case 'A', 'S':
			s.held[e.addr] = e.gen
		case 'F':
			delete(s.held, e.addr)
		case 'W':
			s.roots[int64(e.addr)] = e.gen
		}
	}
}

// TestTortureKill kills a child running the workload at random moments
// and checks each time what the file holds; see the top of this file.
func TestTortureKill(t *testing.T) {
	if os.Getenv(tortureChildEnv) != "" {
		tortureChild(os.Getenv(tortureChildEnv))
		return
	}
	seed := testSeed(t, "torture.seed", *tortureSeed)
	kills := tortureKillsDefault
	if *tortureKills > 0 {
		kills = *tortureKills
	}
	path := filepath.Join(t.TempDir(), "device")
	d, err := Create(path, tortureKillOptions())
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range tortureSlotSizes {
		if _, err := d.Subpages(size); err != nil {
			d.Close()
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	st := killState{held: map[Addr]uint64{}, roots: map[int64]uint64{}}
	var tot killTotals
	rng := rand.New(rand.NewPCG(seed, 0))
	start := time.Now()
	for gen := 1; tot.kills < kills && !t.Failed(); gen++ {
		txns, entries, early := tortureKillOnce(t, path, gen, seed, rng)
		tot.kills++
		if early {
			tot.early++
		}
		st = tortureKillVerify(t, path, gen, st, txns, entries, &tot)
	}
	tortureReport(t, "process death: %d SIGKILLs (%d before the child had opened the device); %d transactions reported committed, %d announced but not, of which %d had reached the file; %d log entries reported committed",
		tot.kills, tot.early, tot.committed, tot.announced, tot.beyond, tot.entries)
	tortureReport(t, "process death: after each kill Open and Check, then %d pages and slots, %d root stamps and %d log entries verified; %v", tot.pages, tot.roots, tot.entriesRead, time.Since(start).Round(time.Millisecond))
	tortureReport(t, "process death: violations: %d", tot.violations)
}

type killTotals struct {
	kills, early, committed, announced, beyond, entries int
	pages, roots, entriesRead, violations               int
}

// tortureKillOnce runs one child on path and kills it at a random moment;
// it returns the transactions it announced, the log entries it reported
// committed (id, offset, size), and whether the kill came before the
// child said it had opened the device.
func tortureKillOnce(t *testing.T, path string, gen int, seed uint64, rng *rand.Rand) ([]*killTxn, [][3]int64, bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTortureKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s", tortureChildEnv, path),
		fmt.Sprintf("PAGEALLOC_TORTURE_KILL_GEN=%d", gen), fmt.Sprintf("PAGEALLOC_TORTURE_KILL_SEED=%d", seed))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var lines []string
	read := make(chan error, 1)
	go func() {
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				// A line cut by the kill carries nothing.
				read <- err
				return
			}
			line = strings.TrimSuffix(line, "\n")
			if line == "R" {
				close(ready)
				continue
			}
			lines = append(lines, line)
		}
	}()
	early := rng.IntN(8) == 0
	if early {
		// Now and then during Open: a crash inside recovery.
		time.Sleep(time.Duration(rng.IntN(15_000)) * time.Microsecond)
	} else {
		select {
		case <-ready:
		case <-time.After(tortureChildLife):
		}
		time.Sleep(time.Duration(rng.IntN(40_000)) * time.Microsecond)
	}
	select {
	case <-ready:
		early = false
	default:
	}
	// A child that already ended on its own is reported below.
	_ = cmd.Process.Signal(syscall.SIGKILL)
	readErr := <-read
	err = cmd.Wait()
	txns, entries, parseErr := parseKillReports(lines)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child %d ended on its own (%v, %v) before the kill; its stderr:\n%s", gen, err, parseErr, stderr.String())
	}
	if parseErr != nil || readErr != io.EOF {
		t.Fatalf("child %d: %v, %v; its stderr:\n%s", gen, parseErr, readErr, stderr.String())
	}
	return txns, entries, early
}

// parseKillReports reads the child's lines.
func parseKillReports(lines []string) ([]*killTxn, [][3]int64, error) {
	var txns []*killTxn
	byID := map[uint64]*killTxn{}
	var entries [][3]int64
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "E" {
			return nil, nil, fmt.Errorf("the child failed: %s", line)
		}
		nums := make([]uint64, len(f)-1)
		for i, s := range f[1:] {
			if s == "A" || s == "S" || s == "F" || s == "W" {
				continue
			}
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("bad report %q", line)
			}
			nums[i] = n
		}
		switch {
		case f[0] == "P" && len(f) >= 2:
			tx := &killTxn{id: nums[0]}
			for i := 2; i+2 < len(f); i += 3 {
				tx.effects = append(tx.effects, killEffect{kind: f[i][0], addr: Addr(nums[i]), gen: nums[i+1]})
			}
			txns = append(txns, tx)
			byID[tx.id] = tx
		case f[0] == "C" && len(f) == 2 && byID[nums[0]] != nil:
			byID[nums[0]].committed = true
		case f[0] == "L" && len(f) == 4:
			entries = append(entries, [3]int64{int64(nums[0]), int64(nums[1]), int64(nums[2])})
		default:
			return nil, nil, fmt.Errorf("bad report %q", line)
		}
	}
	return txns, entries, nil
}

// tortureKillVerify opens the file after a kill and checks it against the
// state before the child, st, and the transactions it announced; it
// returns the state found.
func tortureKillVerify(t *testing.T, path string, gen int, st killState, txns []*killTxn, entries [][3]int64, tot *killTotals) killState {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		tot.violations++
		t.Errorf("after child %d was killed: %s", gen, fmt.Sprintf(format, args...))
	}
	lo := 0
	for i, tx := range txns {
		if tx.committed {
			lo = i + 1
			tot.committed++
		} else {
			tot.announced++
		}
	}
	tot.entries += len(entries)
	d, err := Open(path, nil)
	if err != nil {
		fail("Open: %v", err)
		return st
	}
	defer d.Close()
	found, err := tortureKillFound(d)
	if err != nil {
		fail("%v", err)
		return st
	}
	// The state after txns[:k], for the k that fits: every one reported
	// committed, and perhaps some announced after them.
	want := st.clone()
	for _, tx := range txns[:lo] {
		want.apply(tx)
	}
	k := lo
	for ; !maps.Equal(found.held, want.held) || !maps.Equal(found.roots, want.roots); k++ {
		if k == len(txns) {
			fail("the file holds %d pages and slots and %d root stamps, the state after no prefix of the %d announced transactions from %d (every one reported committed): %s",
				len(found.held), len(found.roots), len(txns), lo, killDiff(found, st, txns[:lo]))
			return found
		}
		want.apply(txns[k])
	}
	tot.beyond += k - lo
	tot.pages += len(found.held)
	tot.roots += len(found.roots)
	l, err := d.Log("log")
	if err != nil {
		fail("Log: %v", err)
		return found
	}
	for e, err := range l.Entries(0) {
		if err != nil {
			fail("log walk: %v", err)
			break
		}
		if len(e.Data) < 8 || !isContent(e.Data, logID(e.Data)) {
			fail("log entry at %d holds bytes of no entry", e.Pos)
		}
	}
	for _, e := range entries[max(0, len(entries)-tortureKillEntriesChecked):] {
		p, err := l.Read(e[1])
		if err != nil || len(p) != int(e[2]) || !isContent(p, uint64(e[0])) {
			fail("log entry %d at %d, reported committed: %d bytes, %v", e[0], e[1], len(p), err)
		}
		tot.entriesRead++
	}
	if err := d.Close(); err != nil {
		fail("Close: %v", err)
	}
	return found
}

// killDiff names a few differences between what the file holds and the
// state after txns.
func killDiff(found, st killState, txns []*killTxn) string {
	want := st.clone()
	for _, tx := range txns {
		want.apply(tx)
	}
	var diffs []string
	for _, a := range slices.Sorted(maps.Keys(want.held)) {
		if g, ok := found.held[a]; !ok || g != want.held[a] {
			diffs = append(diffs, fmt.Sprintf("%v: stamp %d, want %d", a, g, want.held[a]))
		}
	}
	for _, a := range slices.Sorted(maps.Keys(found.held)) {
		if _, ok := want.held[a]; !ok {
			diffs = append(diffs, fmt.Sprintf("%v held, want free", a))
		}
	}
	for _, i := range slices.Sorted(maps.Keys(want.roots)) {
		if found.roots[i] != want.roots[i] {
			diffs = append(diffs, fmt.Sprintf("root slot %d: stamp %d, want %d", i, found.roots[i], want.roots[i]))
		}
	}
	return strings.Join(diffs[:min(len(diffs), 6)], "; ")
}

// tortureKillFound reads what d holds: Check, then every page and slot
// with the generation of its stamp (which must name it), and the stamped
// root slots.
func tortureKillFound(d *Device) (killState, error) {
	held, err := tortureHoldings(d)
	if err != nil {
		return killState{}, err
	}
	s := killState{held: map[Addr]uint64{}, roots: map[int64]uint64{}}
	buf := make([]byte, buddyCrashSlotBytes)
	for a := range held {
		if _, err := d.ReadAt(buf, a.Offset()); err != nil {
			return s, err
		}
		owner, gen := killStamp(buf)
		if owner != uint64(a) {
			return s, fmt.Errorf("%v holds the stamp of %v (generation %d)", a, Addr(owner), gen)
		}
		s.held[a] = gen
	}
	off, _ := d.Root()
	for i := range int64(tortureKillRootSlots) {
		if _, err := d.ReadAt(buf, off+i*buddyCrashSlotBytes); err != nil {
			return s, err
		}
		if owner, gen := killStamp(buf); gen != 0 {
			if owner != uint64(i) {
				return s, fmt.Errorf("root slot %d holds the stamp of slot %d", i, owner)
			}
			s.roots[i] = gen
		}
	}
	return s, nil
}

func killStamp(b []byte) (owner, gen uint64) {
	return logID(b), logID(b[8:])
}

// ---------------------------------------------------------------------------
// The child.

// tortureChild runs the workload on the device at path until it is
// killed, reporting on stdout. It never returns.
func tortureChild(path string) {
	gen, _ := strconv.ParseUint(os.Getenv("PAGEALLOC_TORTURE_KILL_GEN"), 10, 64)
	seed, _ := strconv.ParseUint(os.Getenv("PAGEALLOC_TORTURE_KILL_SEED"), 10, 64)
	c := &killChild{gen: gen}
	if err := c.run(path, seed); err != nil {
		c.report("E %v", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(2)
	}
	os.Exit(3) // never killed
}

type killChild struct {
	gen  uint64
	mu   sync.Mutex // one report at a time
	next uint64     // stamps and ids: gen<<32 | next
	d    *Device
}

func (c *killChild) report(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	os.Stdout.WriteString(fmt.Sprintf(format, args...) + "\n")
}

func (c *killChild) newGen() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	return c.gen<<32 | c.next
}

func (c *killChild) run(path string, seed uint64) error {
	d, err := Open(path, nil)
	if err != nil {
		return err
	}
	c.d = d
	held, err := tortureHoldings(d)
	if err != nil {
		return err
	}
	var classes []*Subpages
	for _, size := range tortureSlotSizes {
		s, err := d.Subpages(size)
		if err != nil {
			return err
		}
		classes = append(classes, s)
	}
	l, err := d.Log("log")
	if err != nil {
		return err
	}
	owner := &setLive{live: map[uint64]int64{}}
	if err := l.SetOwner(owner, &LogOptions{GCThresholdBytes: 64 << 10}); err != nil {
		return err
	}
	// Each committer owns a share of what the file holds.
	owned := make([][]Addr, tortureKillCommitters)
	for _, a := range slices.Sorted(maps.Keys(held)) {
		i := int(uint64(a) * 0x9e3779b97f4a7c15 >> 60 % tortureKillCommitters)
		owned[i] = append(owned[i], a)
	}
	c.report("R")
	errs := make(chan error, tortureKillCommitters+1)
	for i := range tortureKillCommitters {
		go func() {
			errs <- c.committer(rand.New(rand.NewPCG(seed, c.gen<<8|uint64(i))), classes, owned[i])
		}()
	}
	go func() { errs <- c.appender(rand.New(rand.NewPCG(seed, c.gen<<8|0xff)), l, owner) }()
	select {
	case err := <-errs:
		return err
	case <-time.After(tortureChildLife):
		return nil
	}
}

// committer runs mixed transactions until the child dies.
func (c *killChild) committer(rng *rand.Rand, classes []*Subpages, owned []Addr) error {
	g := &c.d.alloc.g
	rootOff, _ := c.d.Root()
	for {
		tx, err := c.d.Begin()
		if err != nil {
			return err
		}
		var fx strings.Builder
		mine := slices.Clone(owned)
		stamp := func(kind byte, a Addr) error {
			gen := c.newGen()
			fmt.Fprintf(&fx, " %c %d %d", kind, uint64(a), gen)
			return tx.Write(a.Offset(), buddyCrashSlot(a, gen))
		}
		for n := 1 + rng.IntN(6); n > 0 && err == nil; n-- {
			var a Addr
			switch r := rng.IntN(100); {
			case r < 30:
				if a, err = tx.Alloc(buddyCrashSize(rng, g)); err == nil {
					mine = append(mine, a)
					err = stamp('A', a)
				}
			case r < 55:
				if a, err = classes[rng.IntN(len(classes))].Alloc(tx); err == nil {
					mine = append(mine, a)
					err = stamp('A', a)
				}
			case r < 85 && len(mine) > 0:
				i := rng.IntN(len(mine))
				a = mine[i]
				mine = slices.Delete(mine, i, i+1)
				if a.Size() < g.pageBytes(0) {
					err = subpageClassOf(classes, a).Free(tx, a)
				} else {
					err = tx.Free(a)
				}
				fmt.Fprintf(&fx, " F %d 0", uint64(a))
			case r < 92 && len(mine) > 0:
				err = stamp('S', mine[rng.IntN(len(mine))])
			default:
				slot := rng.Int64N(tortureKillRootSlots)
				gen := c.newGen()
				fmt.Fprintf(&fx, " W %d %d", slot, gen)
				err = tx.Write(rootOff+slot*buddyCrashSlotBytes, buddyCrashSlot(Addr(slot), gen))
			}
		}
		if errors.Is(err, ErrNoSpace) {
			err = nil
			if fx.Len() == 0 {
				tx.Rollback()
				continue
			}
		}
		if err != nil {
			tx.Rollback()
			return err
		}
		if fx.Len() == 0 {
			tx.Rollback()
			continue
		}
		id := c.newGen()
		c.report("P %d%s", id, fx.String())
		if err := tx.Commit(); err != nil {
			return err
		}
		c.report("C %d", id)
		owned = mine
	}
}

// appender appends log entries until the child dies, keeping the newest
// few live.
func (c *killChild) appender(rng *rand.Rand, l *Log, owner *setLive) error {
	var live []uint64
	for {
		size := 8 + rng.IntN(6000)
		r, err := appendOrGC(l, size)
		if err != nil {
			return err
		}
		id := c.newGen()
		owner.add(id, r.Offset())
		live = append(live, id)
		if err := l.Write(r, logContent(id, size)); err != nil {
			return err
		}
		if err := l.Commit(r); err != nil {
			return err
		}
		c.report("L %d %d %d", id, r.Offset(), size)
		if len(live) > tortureKillEntriesLive {
			owner.remove(live[0])
			live = live[1:]
		}
	}
}
