package pagealloc

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

var (
	closeRaceSeed   = flag.Uint64("closerace.seed", 0, "first round's seed of TestCloseRacesEveryCall (0: from the clock); round r runs seed+r")
	closeRaceRounds = flag.Int("closerace.rounds", 0, "rounds of TestCloseRacesEveryCall (0: the default for the build)")
)

const (
	crWorkers   = 6
	crPages     = 3  // pages each worker owns and writes in place
	crCells     = 8  // cells of such a page that WriteAt stamps
	crCellBytes = 32 // a stamp's 8 bytes, four times
	crSlotBytes = 256
	crStampLen  = 16 // bytes a transaction stamps at a page's or slot's start
)

// crRoundSeed is the seed of the round under way, for a worker that
// panics to name before the process ends.
var crRoundSeed atomic.Uint64

// TestCloseRacesEveryCall closes a device while goroutines make every
// kind of call on it, its logs and its sub-page class: reads and writes
// in place, transactions that allocate, free, write and read pages and
// slots, log appends written either way then committed or cancelled,
// walks, reads, GC passes and owner changes, CreateLog and DropLog,
// Check, Inspect, WalkHeap, Stats, Sync. Every call must return its
// normal result or ErrClosed (see crRace.want for what else each may
// return, and why); Close must return nil, every goroutine end soon after
// it, and every call then return ErrClosed. The device opened again must
// pass Check and hold what every Commit that returned nil committed: the
// pages and slots allocated, exactly, with their stamps, the root words,
// the bytes written in place, the carved logs, and every log entry whose
// Commit returned nil and whose owner holds it, while no entry whose
// Commit was never called (or was cancelled) appears.
func TestCloseRacesEveryCall(t *testing.T) {
	seed := testSeed(t, "closerace.seed", *closeRaceSeed)
	rounds := 200
	switch {
	case raceEnabled() || invariantsEnabled:
		rounds = 80
	case testing.Short():
		rounds = 80
	}
	if *closeRaceRounds > 0 {
		rounds = *closeRaceRounds
	}
	// A fault in a worker becomes a panic it reports with its round.
	fmt.Fprintf(os.Stderr, "closerace: seed %d, %d rounds\n", seed, rounds)
	start := time.Now()
	var total crCounts
	for round := range rounds {
		rs := seed + uint64(round)
		c := runCloseRace(t, rs, round)
		total.add(c)
		if t.Failed() {
			t.Fatalf("round %d failed: rerun it alone with -run '^TestCloseRacesEveryCall$' -closerace.seed=%d -closerace.rounds=1", round, rs)
		}
	}
	t.Logf("%d rounds in %v: %+v", rounds, time.Since(start).Round(time.Millisecond), total)
}

// crCounts counts what the workers' calls returned, over a round.
type crCounts struct {
	Before          int           // calls made before Close was called
	NilWhileClosing int           // calls that returned nil after Close was called
	Closing         time.Duration // Close's time, summed

	Calls, Closed, Commits, LogCommits, LogCancels, GCs, Drops, Creates, SimRounds int
}

func (c *crCounts) add(o crCounts) {
	c.Before += o.Before
	c.NilWhileClosing += o.NilWhileClosing
	c.Closing += o.Closing
	c.Calls += o.Calls
	c.Closed += o.Closed
	c.Commits += o.Commits
	c.LogCommits += o.LogCommits
	c.LogCancels += o.LogCancels
	c.GCs += o.GCs
	c.Drops += o.Drops
	c.Creates += o.Creates
	c.SimRounds += o.SimRounds
}

// crOwner is the owner of a shared log: a setLive, which indexes each
// entry by id from before its Commit, that follows GC's relocations,
// undone when their transaction rolls back.
type crOwner struct {
	setLive
	undo map[uint64]int64
}

func (o *crOwner) IsLive(off int64, entry []byte) bool {
	return len(entry) >= 8 && o.setLive.IsLive(off, entry)
}

func (o *crOwner) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	id := logID(entry)
	if at, ok := o.live[id]; ok && at == oldOff {
		if _, ok := o.undo[id]; !ok {
			o.undo[id] = oldOff
		}
		o.live[id] = newOff
	}
	return nil
}

func (o *crOwner) RelocationsEnded(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	relocationsEnded(o.live, o.undo, err)
}

// pick returns a live entry, if there is one.
func (o *crOwner) pick(rng *rand.Rand) (id uint64, off int64, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := rng.IntN(len(o.live) + 1)
	for id, off := range o.live {
		if n == 0 {
			return id, off, true
		}
		n--
	}
	return 0, 0, false
}

// crShared is a log every worker appends to, with an owner and GC.
type crShared struct {
	l     *Log
	name  string
	owner *crOwner
}

// crEntryState is what became of a log entry.
type crEntryState int

const (
	crReserved   crEntryState = iota // Append returned it; Commit not called
	crCommitting                     // Commit called: may be durable
	crCommitted                      // Commit returned nil
	crCancelled                      // Cancel returned nil: never an entry
)

// crRace is one round: the device, its handles and what the workers'
// calls committed.
type crRace struct {
	t      *testing.T
	seed   uint64
	path   string          // a file device, or
	store  *simstore.Store // a simulated one
	d      *Device
	class  *Subpages
	shared []*crShared
	root   int64
	nextID atomic.Uint64

	closeStarted atomic.Bool // set just before Close is called
	closeDone    atomic.Bool // set once Close has returned

	mu      sync.Mutex
	entries map[uint64]crEntryState // ids of every shared-log entry
	errs    []string
	counts  crCounts
}

// crWorker is one goroutine's state: what it owns and what its commits
// made durable.
type crWorker struct {
	r       *crRace
	id      int
	rng     *rand.Rand
	inplace []Addr            // pages written in place only
	cells   [][crCells]uint64 // their cells' stamps, as the last WriteAt that returned nil left them
	txPages map[Addr]uint64   // pages committed transactions allocated, and their stamps
	slots   map[Addr]uint64   // slots likewise
	rootVal uint64            // the worker's root word, as committed
	stamp   uint64

	// The worker's own carved log, created and dropped in turn.
	logName  string
	own      *Log   // nil while dropped
	ownRes   []*Log // every handle it had, for the calls after Close
	ownDone  []uint64
	ownMaybe map[uint64]bool // Commit returned ErrClosed
	lastRes  Reservation
	lastLog  *Log
	counts   crCounts
}

func (r *crRace) failf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) < 20 {
		r.errs = append(r.errs, fmt.Sprintf(format, args...))
	}
}

// want checks err, the result of call what, made by w: nil, or ErrClosed
// once Close has begun, or one of the errors allowed, which is what each
// call returns in normal use as its doc says (see the callers). A call
// begun after Close returned must return ErrClosed, unless allowed says
// closedToo (its argument checks come first). It returns whether err is
// nil.
func (w *crWorker) want(what string, began bool, err error, allowed ...error) bool {
	w.counts.Calls++
	r := w.r
	if !r.closeStarted.Load() {
		w.counts.Before++
	}
	if began {
		if !errors.Is(err, ErrClosed) {
			r.failf("worker %d: %s, begun after Close returned: %v, want ErrClosed", w.id, what, err)
		}
		w.counts.Closed++
		return false
	}
	if err == nil {
		if r.closeStarted.Load() {
			w.counts.NilWhileClosing++
		}
		return true
	}
	if errors.Is(err, ErrClosed) {
		w.counts.Closed++
		if !r.closeStarted.Load() {
			r.failf("worker %d: %s: %v before Close was called", w.id, what, err)
		}
		// Calls refused at their first look at the device race with
		// nothing: leave the cores to Close and the calls under way.
		time.Sleep(time.Duration(w.rng.IntN(50)) * time.Microsecond)
		return false
	}
	for _, a := range allowed {
		if errors.Is(err, a) {
			return false
		}
	}
	r.failf("worker %d: %s: unexpected error %v (close started %v)", w.id, what, err, r.closeStarted.Load())
	return false
}

func (w *crWorker) nextStamp() uint64 {
	w.stamp++
	return uint64(w.id+1)<<48 | w.stamp
}

func crStampBytes(v uint64, n int) []byte {
	p := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], v)
	}
	return p
}

func runCloseRace(t *testing.T, seed uint64, round int) crCounts {
	crRoundSeed.Store(seed)
	rng := rand.New(rand.NewPCG(seed, 0x636c6f7365))
	r := &crRace{t: t, seed: seed, entries: map[uint64]crEntryState{}}
	o, err := (&Options{
		NoSync:      rng.IntN(4) != 0,
		MaxSize:     16 << 20,
		MaxPageSize: 64 << 10,
		JournalSize: 128 << 10,
		RootSize:    4096,
		LogRegions:  []LogRegion{{Name: "fixed", Size: 64 << 10}},
	}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if round%3 == 2 {
		// A simulated store: no writable mapping, so Log.Write stages
		// its frames. It must sync for its image to keep anything.
		o.NoSync = false
		r.store = simstore.New(o.MaxSize)
		r.d = deviceOn(t, r.store, o)
		r.counts.SimRounds++
	} else {
		r.path = filepath.Join(t.TempDir(), "device")
		d, err := Create(r.path, &o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		r.d = d
	}
	d := r.d
	r.root, _ = d.Root()
	carved, err := d.CreateLog("carved", 32<<10)
	if err != nil {
		t.Fatal(err)
	}
	r.shared = []*crShared{{l: mustLog(t, d, "fixed"), name: "fixed"}, {l: carved, name: "carved"}}
	for _, s := range r.shared {
		s.owner = &crOwner{setLive: setLive{live: map[uint64]int64{}}, undo: map[uint64]int64{}}
		if err := s.l.SetOwner(s.owner, nil); err != nil {
			t.Fatal(err)
		}
	}
	if r.class, err = d.Subpages(crSlotBytes); err != nil {
		t.Fatal(err)
	}
	// Rings part full, their tails anywhere, so that appends wrap and
	// GC has entries to pass and to move while Close comes.
	for _, s := range r.shared {
		for range rng.IntN(int(2 * s.l.Stats().SizeBytes / 800)) {
			id := r.nextID.Add(1)
			res, err := s.l.Append(8 + rng.IntN(1500))
			if errors.Is(err, ErrNoSpace) {
				if err := s.l.GC(context.Background()); err != nil {
					t.Fatal(err)
				}
				res, err = s.l.Append(8 + rng.IntN(1500))
			}
			if errors.Is(err, ErrNoSpace) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			s.owner.add(id, res.Offset())
			r.entries[id] = crCommitting
			if _, err := d.WriteAt(logContent(id, res.Size()), res.Offset()); err != nil {
				t.Fatal(err)
			}
			if err := s.l.Commit(res); err != nil {
				t.Fatal(err)
			}
			r.entries[id] = crCommitted
			if rng.IntN(3) != 0 {
				s.owner.remove(id)
			}
		}
	}
	workers := make([]*crWorker, crWorkers)
	for i := range workers {
		w := &crWorker{r: r, id: i, rng: rand.New(rand.NewPCG(seed, uint64(i))),
			txPages: map[Addr]uint64{}, slots: map[Addr]uint64{}, ownMaybe: map[uint64]bool{},
			logName: fmt.Sprintf("w%d", i)}
		workers[i] = w
		w.inplace = allocSized(t, d, crPages, func() int64 { return 4096 << rng.IntN(5) })
		w.cells = make([][crCells]uint64, crPages)
		for p, a := range w.inplace {
			for c := range crCells {
				v := w.nextStamp()
				if _, err := d.WriteAt(crStampBytes(v, crCellBytes), a.Offset()+int64(c)*crCellBytes); err != nil {
					t.Fatal(err)
				}
				w.cells[p][c] = v
			}
		}
		if i%2 == 0 {
			l, err := d.CreateLog(w.logName, 16<<10)
			if err != nil {
				t.Fatal(err)
			}
			w.own = l
			w.ownRes = append(w.ownRes, l)
			for range rng.IntN(8) {
				id := r.nextID.Add(1)
				res, err := l.Append(8 + rng.IntN(3000))
				if errors.Is(err, ErrNoSpace) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := l.Write(res, logContent(id, res.Size())); err != nil {
					t.Fatal(err)
				}
				if err := l.Commit(res); err != nil {
					t.Fatal(err)
				}
				w.ownDone = append(w.ownDone, id)
			}
		}
	}

	// Go.
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}
	delay := time.Duration(rng.IntN(4000)) * time.Microsecond
	if rng.IntN(3) == 0 {
		delay = time.Duration(4000+rng.IntN(16000)) * time.Microsecond
	}
	time.Sleep(delay)
	closers := 1 + rng.IntN(2) // sometimes a second Close at once
	closed := make(chan error, closers)
	r.closeStarted.Store(true)
	closeStart := time.Now()
	for range closers {
		go func() { closed <- d.Close() }()
	}
	for i := range closers {
		select {
		case err := <-closed:
			if err != nil {
				r.failf("Close %d of %d: %v", i+1, closers, err)
			}
		case <-time.After(crTimeout()):
			r.report()
			t.Fatalf("seed %d: Close has not returned after %v (%d Close calls)\n%s", seed, crTimeout(), closers, allStacks())
		}
	}
	r.closeDone.Store(true)
	r.counts.Closing = time.Since(closeStart)
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(crTimeout()):
		r.report()
		t.Fatalf("seed %d: workers still running %v after Close returned\n%s", seed, crTimeout(), allStacks())
	}
	if d.Close() != nil {
		r.failf("a Close after Close did not return nil")
	}
	// Every call again, one at a time, from here.
	last := &crWorker{r: r, id: -1, rng: rng, ownMaybe: map[uint64]bool{}}
	for _, w := range workers {
		last.ownRes = append(last.ownRes, w.ownRes...)
		if w.lastLog != nil {
			last.lastRes, last.lastLog = w.lastRes, w.lastLog
		}
	}
	last.closedCalls()
	for _, w := range workers {
		r.counts.add(w.counts)
	}
	if r.report() {
		return r.counts
	}
	r.verify(workers)
	return r.counts
}

// crTimeout is how long Close and the workers after it may take.
func crTimeout() time.Duration {
	if raceEnabled() {
		return 120 * time.Second
	}
	return 30 * time.Second
}

func allStacks() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// report fails the test with the round's errors, if any.
func (r *crRace) report() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) == 0 {
		return false
	}
	r.t.Errorf("seed %d:\n%s", r.seed, joinLines(r.errs))
	return true
}

func joinLines(s []string) string {
	out := ""
	for _, l := range s {
		out += "  " + l + "\n"
	}
	return out
}

// run makes random calls until Close has returned, then makes every call
// once more, which must each return ErrClosed.
func (w *crWorker) run() {
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(os.Stderr, "closerace: worker %d panicked in the round of seed %d (rerun with -run '^TestCloseRacesEveryCall$' -closerace.seed=%d -closerace.rounds=1)\n", w.id, crRoundSeed.Load(), crRoundSeed.Load())
			panic(p)
		}
	}()
	// A fault reading or writing the unmapped file becomes a panic here,
	// which names the round above, rather than a crash that does not.
	debug.SetPanicOnFault(true)
	for !w.r.closeDone.Load() {
		w.step()
	}
	w.closedCalls()
}

// step makes one call, or a few that belong together.
func (w *crWorker) step() {
	r, d, rng := w.r, w.r.d, w.rng
	began := r.closeDone.Load()
	switch op := rng.IntN(20); op {
	case 0, 1: // ReadAt a cell written in place
		p, c := rng.IntN(crPages), rng.IntN(crCells)
		buf := make([]byte, crCellBytes)
		_, err := d.ReadAt(buf, w.inplace[p].Offset()+int64(c)*crCellBytes)
		if w.want("ReadAt", began, err) {
			if want := crStampBytes(w.cells[p][c], crCellBytes); string(buf) != string(want) {
				r.failf("worker %d: ReadAt of cell %d of %v: %x, want %x", w.id, c, w.inplace[p], buf, want)
			}
		}
	case 2, 3: // WriteAt a cell
		p, c := rng.IntN(crPages), rng.IntN(crCells)
		v := w.nextStamp()
		n, err := d.WriteAt(crStampBytes(v, crCellBytes), w.inplace[p].Offset()+int64(c)*crCellBytes)
		if w.want("WriteAt", began, err) {
			if n != crCellBytes {
				r.failf("worker %d: WriteAt wrote %d bytes", w.id, n)
			}
			w.cells[p][c] = v
		}
	case 4: // the calls with no error
		_ = d.Stats()
		if off, size := d.Root(); off != r.root || size != 4096 {
			r.failf("worker %d: Root() = %d, %d", w.id, off, size)
		}
		for _, s := range r.shared {
			_ = s.l.Stats()
			_ = s.l.Name()
		}
		_ = r.class.Stats()
		if w.own != nil {
			_ = w.own.Stats()
		}
		w.counts.Calls++
	case 5:
		w.want("Check", began, d.Check())
	case 6:
		in, err := d.Inspect()
		if w.want("Inspect", began, err) && in == nil {
			r.failf("worker %d: Inspect returned nil, nil", w.id)
		}
	case 7:
		n := 0
		err := d.WalkHeap(func(HeapExtent) bool { n++; return rng.IntN(50) != 0 })
		w.want("WalkHeap", began, err)
	case 8:
		w.want("Sync", began, d.Sync())
	case 9, 10:
		w.update(began)
	case 11:
		w.beginRollback(began)
	case 12, 13, 14:
		w.appendShared(began)
	case 15:
		w.readShared(began)
	case 16:
		w.gcShared(began)
	case 17:
		w.ownLog(began)
	case 18:
		size := crSlotBytes << rng.IntN(3) // 256, 512 or 1024: the last two created here
		s, err := d.Subpages(size)
		if w.want("Subpages", began, err) && s.SlotBytes() != int64(size) {
			r.failf("worker %d: Subpages(%d) gave a class of %d", w.id, size, s.SlotBytes())
		}
	case 19:
		s := r.shared[rng.IntN(len(r.shared))]
		switch rng.IntN(3) {
		case 0:
			l, err := d.Log(s.name)
			if w.want("Device.Log", began, err) && l != s.l {
				r.failf("worker %d: Log(%q) gave another handle", w.id, s.name)
			}
		case 1:
			w.want("SetOwner", began, s.l.SetOwner(s.owner, nil))
		case 2: // the owner forgets an entry: GC may reclaim it
			if id, _, ok := s.owner.pick(rng); ok {
				s.owner.remove(id)
			}
		}
	}
}

// update runs a transaction that allocates, stamps and frees pages and
// slots and writes the worker's root word. Update returns ErrClosed only
// from Begin, before fn runs; once fn runs, Close waits for the Commit.
// ErrNoSpace: Txn.Alloc and Subpages.Alloc on a full device (their docs).
func (w *crWorker) update(began bool) {
	r, d, rng := w.r, w.r.d, w.rng
	var (
		ran                  bool
		allocated, freed     []Addr
		slotsGot, slotsFreed []Addr
		stamps               = map[Addr]uint64{}
		bug                  error
	)
	rootVal := w.rootVal + 1
	errBug := errors.New("bug")
	fail := func(format string, args ...any) error {
		bug = fmt.Errorf(format, args...)
		return errBug
	}
	err := d.Update(func(tx *Txn) error {
		ran = true
		for range rng.IntN(3) {
			a, err := tx.Alloc(4096 << rng.IntN(5))
			if errors.Is(err, ErrNoSpace) {
				return err
			}
			if err != nil {
				return fail("Txn.Alloc: %v", err)
			}
			v := w.nextStamp()
			if err := tx.Write(a.Offset(), crStampBytes(v, crStampLen)); err != nil {
				return fail("Txn.Write into %v: %v", a, err)
			}
			allocated = append(allocated, a)
			stamps[a] = v
		}
		if len(w.txPages) > 0 && rng.IntN(2) == 0 {
			a := crAny(w.txPages, rng)
			if err := w.checkTxStamp(tx, a, w.txPages[a]); err != nil {
				return fail("%v", err)
			}
			if err := tx.Free(a); err != nil {
				return fail("Txn.Free(%v): %v", a, err)
			}
			freed = append(freed, a)
		}
		if rng.IntN(2) == 0 {
			a, err := r.class.Alloc(tx)
			if errors.Is(err, ErrNoSpace) {
				return err
			}
			if err != nil {
				return fail("Subpages.Alloc: %v", err)
			}
			v := w.nextStamp()
			if err := tx.Write(a.Offset(), crStampBytes(v, crStampLen)); err != nil {
				return fail("Txn.Write into slot %v: %v", a, err)
			}
			slotsGot = append(slotsGot, a)
			stamps[a] = v
		}
		if len(w.slots) > 0 && rng.IntN(2) == 0 {
			a := crAny(w.slots, rng)
			if err := w.checkTxStamp(tx, a, w.slots[a]); err != nil {
				return fail("%v", err)
			}
			if err := r.class.Free(tx, a); err != nil {
				return fail("Subpages.Free(%v): %v", a, err)
			}
			slotsFreed = append(slotsFreed, a)
		}
		if err := tx.Write(r.root+8*int64(w.id), crStampBytes(rootVal, 8)); err != nil {
			return fail("Txn.Write into the root area: %v", err)
		}
		if rng.IntN(4) == 0 { // hold the transaction while Close waits
			time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
		}
		return nil
	})
	if bug != nil {
		r.failf("worker %d: in Update: %v", w.id, bug)
		return
	}
	if errors.Is(err, ErrClosed) && ran {
		r.failf("worker %d: Update ran its function, then returned %v", w.id, err)
		return
	}
	if !w.want("Update", began, err, ErrNoSpace) {
		return
	}
	w.counts.Commits++
	w.rootVal = rootVal
	for _, a := range freed {
		delete(w.txPages, a)
	}
	for _, a := range allocated {
		w.txPages[a] = stamps[a]
	}
	for _, a := range slotsFreed {
		delete(w.slots, a)
	}
	for _, a := range slotsGot {
		w.slots[a] = stamps[a]
	}
}

// checkTxStamp checks, through tx, that a begins with stamp v.
func (w *crWorker) checkTxStamp(tx *Txn, a Addr, v uint64) error {
	buf := make([]byte, crStampLen)
	if _, err := tx.ReadAt(buf, a.Offset()); err != nil {
		return fmt.Errorf("Txn.ReadAt of %v: %v", a, err)
	}
	if want := crStampBytes(v, crStampLen); string(buf) != string(want) {
		return fmt.Errorf("Txn.ReadAt of %v: %x, want %x", a, buf, want)
	}
	return nil
}

func crAny[V any](m map[Addr]V, rng *rand.Rand) Addr {
	keys := make([]Addr, 0, len(m))
	for a := range m {
		keys = append(keys, a)
	}
	slices.Sort(keys)
	return keys[rng.IntN(len(keys))]
}

// beginRollback holds a transaction that allocates and reads, and rolls
// it back: Close waits for it.
func (w *crWorker) beginRollback(began bool) {
	r, d, rng := w.r, w.r.d, w.rng
	tx, err := d.Begin()
	if !w.want("Begin", began, err) {
		return
	}
	if _, err := tx.Alloc(4096); err != nil && !errors.Is(err, ErrNoSpace) {
		r.failf("worker %d: Txn.Alloc in a transaction to roll back: %v", w.id, err)
	}
	if len(w.txPages) > 0 {
		a := crAny(w.txPages, rng)
		if err := w.checkTxStamp(tx, a, w.txPages[a]); err != nil {
			r.failf("worker %d: %v", w.id, err)
		}
	}
	if rng.IntN(2) == 0 {
		time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
	}
	if err := tx.Rollback(); err != nil {
		r.failf("worker %d: Rollback: %v", w.id, err)
	}
}

// appendShared appends an entry to a shared log, writes it with
// Log.Write or WriteAt, and commits or cancels it. ErrNoSpace: Append on
// a ring with no room now (its doc); GC makes room.
func (w *crWorker) appendShared(began bool) {
	r, d, rng := w.r, w.r.d, w.rng
	s := r.shared[rng.IntN(len(r.shared))]
	id := r.nextID.Add(1)
	size := 8 + rng.IntN(1500)
	res, err := s.l.Append(size)
	if !w.want("Log.Append", began, err, ErrNoSpace) {
		if errors.Is(err, ErrNoSpace) && rng.IntN(2) == 0 {
			w.gc(s, began)
		}
		return
	}
	w.lastRes, w.lastLog = res, s.l
	r.mu.Lock()
	r.entries[id] = crReserved
	r.mu.Unlock()
	// Indexed before Commit: GC may ask about it once it is durable.
	s.owner.add(id, res.Offset())
	if rng.IntN(3) == 0 {
		time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
	}
	p := logContent(id, size)
	if rng.IntN(2) == 0 {
		err = s.l.Write(res, p)
		if !w.want("Log.Write", began, err) {
			s.owner.remove(id)
			return
		}
	} else {
		_, err = d.WriteAt(p, res.Offset())
		if !w.want("WriteAt into a reservation", began, err) {
			s.owner.remove(id)
			return
		}
	}
	if rng.IntN(5) == 0 {
		s.owner.remove(id)
		if w.want("Log.Cancel", began, s.l.Cancel(res)) {
			w.counts.LogCancels++
			r.mu.Lock()
			r.entries[id] = crCancelled
			r.mu.Unlock()
		}
		return
	}
	r.mu.Lock()
	r.entries[id] = crCommitting
	r.mu.Unlock()
	if !w.want("Log.Commit", began, s.l.Commit(res)) {
		s.owner.remove(id) // perhaps durable: garbage then
		return
	}
	w.counts.LogCommits++
	r.mu.Lock()
	r.entries[id] = crCommitted
	r.mu.Unlock()
	if rng.IntN(3) == 0 { // the owner lets it go at once
		s.owner.remove(id)
	}
}

// readShared walks a shared log or reads a live entry of it. Read may
// return ErrNotFound for an entry GC relocates meanwhile (Relocator's
// doc: the copy reads only once its transaction is durable, and the old
// one is reclaimed once it is).
func (w *crWorker) readShared(began bool) {
	r, rng := w.r, w.rng
	s := r.shared[rng.IntN(len(r.shared))]
	if rng.IntN(2) == 0 {
		id, off, ok := s.owner.pick(rng)
		if !ok {
			return
		}
		p, err := s.l.Read(off)
		switch {
		case !w.want("Log.Read", began, err, ErrNotFound):
		case len(p) >= 8 && logID(p) == id:
			if !isContent(p, id) {
				r.failf("worker %d: Log.Read of entry %d in log %q: bytes not its own", w.id, id, s.name)
			}
		default:
			// Another entry starts there only once GC relocated and
			// reclaimed this one since the owner said where it was.
			r.checkEntry(w, s.name, p)
		}
		return
	}
	n := 0
	for e, err := range s.l.Entries(0) {
		if !w.want("Log.Entries", began, err) {
			break
		}
		r.checkEntry(w, s.name, e.Data)
		if n++; rng.IntN(40) == 0 {
			break
		}
	}
}

// checkEntry checks that p, read from a shared log, is an entry whose
// Commit was called, intact.
func (r *crRace) checkEntry(w *crWorker, log string, p []byte) {
	if len(p) < 8 {
		r.failf("worker %d: log %q holds an entry of %d bytes", w.id, log, len(p))
		return
	}
	id := logID(p)
	r.mu.Lock()
	st, ok := r.entries[id]
	r.mu.Unlock()
	switch {
	case !ok || st == crReserved || st == crCancelled:
		r.failf("worker %d: log %q returned entry %d (known %v, state %d), whose Commit was never called", w.id, log, id, ok, st)
	case !isContent(p, id):
		r.failf("worker %d: log %q returned entry %d with bytes not its own", w.id, log, id)
	}
}

func (w *crWorker) gcShared(began bool) {
	s := w.r.shared[w.rng.IntN(len(w.r.shared))]
	w.gc(s, began)
}

// gc runs a pass, with a deadline sometimes: GC returns the context's
// error when it ends first (its doc).
func (w *crWorker) gc(s *crShared, began bool) {
	ctx, cancel := context.WithCancel(context.Background())
	if w.rng.IntN(2) == 0 {
		ctx, cancel = context.WithTimeout(context.Background(), time.Duration(w.rng.IntN(2000))*time.Microsecond)
	}
	defer cancel()
	if w.want("Log.GC", began, s.l.GC(ctx), context.DeadlineExceeded) {
		w.counts.GCs++
	}
}

// ownLog creates, drops, appends to, walks and looks up the worker's own
// carved log, which no one else touches. CreateLog: ErrNoSpace on a full
// heap (its doc). Append: ErrNoSpace once the ring is full (no GC here);
// the worker drops the log then.
func (w *crWorker) ownLog(began bool) {
	r, d, rng := w.r, w.r.d, w.rng
	if w.own == nil {
		switch rng.IntN(3) {
		case 0:
			_, err := d.Log(w.logName)
			if err == nil {
				r.failf("worker %d: Log(%q) found a dropped log", w.id, w.logName)
			} else {
				w.want("Device.Log of a dropped log", began, err, ErrNotFound)
			}
		default:
			l, err := d.CreateLog(w.logName, 16<<10)
			if w.want("CreateLog", began, err, ErrNoSpace) {
				w.counts.Creates++
				w.own, w.ownDone, w.ownMaybe = l, nil, map[uint64]bool{}
				w.ownRes = append(w.ownRes, l)
			}
		}
		return
	}
	l := w.own
	switch rng.IntN(6) {
	case 0:
		got, err := d.Log(w.logName)
		if w.want("Device.Log", began, err) && got != l {
			r.failf("worker %d: Log(%q) gave another handle", w.id, w.logName)
		}
	case 1:
		if w.want("DropLog", began, d.DropLog(w.logName)) {
			w.counts.Drops++
			w.own = nil
		}
	case 2:
		var got []uint64
		for e, err := range l.Entries(0) {
			if !w.want("Log.Entries of the own log", began, err) {
				return
			}
			got = append(got, logID(e.Data))
			if !isContent(e.Data, logID(e.Data)) {
				r.failf("worker %d: own log holds entry %d with bytes not its own", w.id, logID(e.Data))
			}
		}
		if err := w.ownHolds(got); err != nil {
			r.failf("worker %d: %v", w.id, err)
		}
	default:
		id := r.nextID.Add(1)
		size := 8 + rng.IntN(3000)
		res, err := l.Append(size)
		if !w.want("Log.Append to the own log", began, err, ErrNoSpace) {
			if errors.Is(err, ErrNoSpace) && w.want("DropLog of a full log", began, d.DropLog(w.logName)) {
				w.counts.Drops++
				w.own = nil
			}
			return
		}
		p := logContent(id, size)
		if rng.IntN(2) == 0 {
			err = l.Write(res, p)
		} else {
			_, err = d.WriteAt(p, res.Offset())
		}
		if !w.want("Log.Write or WriteAt to the own log", began, err) {
			return
		}
		err = l.Commit(res)
		if errors.Is(err, ErrClosed) {
			w.ownMaybe[id] = true
		}
		if w.want("Log.Commit to the own log", began, err) {
			w.ownDone = append(w.ownDone, id)
		}
	}
}

// ownHolds checks the ids of the own log's entries: every committed one,
// in order, and besides them only those whose Commit returned ErrClosed.
func (w *crWorker) ownHolds(got []uint64) error {
	i := 0
	for _, id := range got {
		switch {
		case i < len(w.ownDone) && id == w.ownDone[i]:
			i++
		case w.ownMaybe[id]:
		default:
			return fmt.Errorf("log %q holds entry %d, neither committed next (%d of %v) nor perhaps committed", w.logName, id, i, w.ownDone)
		}
	}
	if i < len(w.ownDone) {
		return fmt.Errorf("log %q holds entries %v: committed %v, missing from %d on", w.logName, got, w.ownDone, i)
	}
	return nil
}

// closedCalls makes every call once Close has returned: each must return
// ErrClosed; those with no error must not panic. A few argument checks
// come first by their docs (Update(nil), WalkHeap(nil), Subpages.Alloc(nil)
// are ErrInvalidArgument).
func (w *crWorker) closedCalls() {
	r, d := w.r, w.r.d
	const began = true
	buf := make([]byte, 16)
	off := r.root
	w.want("closed ReadAt", began, errOf(d.ReadAt(buf, off)))
	w.want("closed WriteAt", began, errOf(d.WriteAt(buf, off)))
	w.want("closed Slice", began, errOf(d.Slice(off, 16)))
	w.want("closed Sync", began, d.Sync())
	w.want("closed Check", began, d.Check())
	w.want("closed Inspect", began, errOf(d.Inspect()))
	w.want("closed WalkHeap", began, d.WalkHeap(func(HeapExtent) bool { return true }))
	w.want("closed Begin", began, errOf(d.Begin()))
	w.want("closed Update", began, d.Update(func(*Txn) error {
		r.failf("worker %d: Update on a closed device ran its function", w.id)
		return nil
	}))
	w.want("closed Subpages", began, errOf(d.Subpages(crSlotBytes)))
	w.want("closed Subpages of a new size", began, errOf(d.Subpages(2048)))
	w.want("closed CreateLog", began, errOf(d.CreateLog(fmt.Sprintf("n%d", w.id+1), 4096)))
	w.want("closed DropLog", began, d.DropLog("carved"))
	w.want("closed Log", began, errOf(d.Log("fixed")))
	if err := d.Update(nil); !errors.Is(err, ErrInvalidArgument) {
		r.failf("worker %d: closed Update(nil): %v", w.id, err)
	}
	if err := d.WalkHeap(nil); !errors.Is(err, ErrInvalidArgument) {
		r.failf("worker %d: closed WalkHeap(nil): %v", w.id, err)
	}
	if _, err := r.class.Alloc(nil); !errors.Is(err, ErrInvalidArgument) {
		r.failf("worker %d: closed Subpages.Alloc(nil): %v", w.id, err)
	}
	_, _, _ = d.Stats(), r.class.Stats(), r.class.SlotBytes()
	_, _ = d.Root()
	logs := append([]*Log{}, w.ownRes...)
	for _, s := range r.shared {
		logs = append(logs, s.l)
	}
	for _, l := range logs {
		_, _ = l.Stats(), l.Name()
		w.want("closed Log.Append", began, errOf(l.Append(8)))
		w.want("closed Log.Read", began, errOf(l.Read(l.ring.off+logFrameHeaderBytes)))
		w.want("closed Log.GC", began, l.GC(context.Background()))
		w.want("closed Log.SetOwner", began, l.SetOwner(nil, nil))
		n := 0
		for _, err := range l.Entries(0) {
			w.want("closed Log.Entries", began, err)
			if n++; n > 1 {
				r.failf("worker %d: Entries on a closed device yielded twice", w.id)
				break
			}
		}
		if n == 0 {
			r.failf("worker %d: Entries on a closed device yielded nothing, not ErrClosed", w.id)
		}
	}
	if l := w.lastLog; l != nil {
		res := w.lastRes
		w.want("closed Log.Write", began, l.Write(res, make([]byte, res.Size())))
		w.want("closed Log.Commit", began, l.Commit(res))
		w.want("closed Log.Cancel", began, l.Cancel(res))
	}
}

// verify opens the device again and checks it against what the workers'
// calls committed.
func (r *crRace) verify(workers []*crWorker) {
	t := r.t
	var d *Device
	var err error
	if r.store != nil {
		img, ierr := r.store.Image(r.store.Ops(), nil)
		if ierr != nil {
			t.Fatal(ierr)
		}
		d, err = openOn(img, &Options{})
		if err != nil {
			img.Close()
		}
	} else {
		d, err = Open(r.path, &Options{NoSync: true})
	}
	if err != nil {
		t.Fatalf("seed %d: Open after Close: %v", r.seed, err)
	}
	defer d.Close()
	slots, _, pages, err := subpageSlots(d) // runs Check
	if err != nil {
		t.Fatalf("seed %d: reopened: %v", r.seed, err)
	}
	wantPages, wantSlots := map[Addr]bool{}, map[Addr]bool{}
	ringPage := func(l *Log) Addr { return makeAddr(l.ring.off, uint(bits.TrailingZeros64(uint64(l.ring.size)))) }
	buf := make([]byte, crCellBytes)
	for _, w := range workers {
		for p, a := range w.inplace {
			wantPages[a] = true
			for c := range crCells {
				if _, err := d.ReadAt(buf, a.Offset()+int64(c)*crCellBytes); err != nil {
					t.Fatal(err)
				}
				if want := crStampBytes(w.cells[p][c], crCellBytes); string(buf) != string(want) {
					r.failf("reopened: worker %d's cell %d of %v written in place holds %x, want %x (the last WriteAt that returned nil)", w.id, c, a, buf, want)
				}
			}
		}
		for a, v := range w.txPages {
			wantPages[a] = true
			r.wantStamp(d, fmt.Sprintf("worker %d's page %v", w.id, a), a, v)
		}
		for a, v := range w.slots {
			wantSlots[a] = true
			r.wantStamp(d, fmt.Sprintf("worker %d's slot %v", w.id, a), a, v)
		}
		r.wantBytes(d, fmt.Sprintf("worker %d's root word", w.id), r.root+8*int64(w.id), crStampBytes(w.rootVal, 8))
		l, err := d.Log(w.logName)
		switch {
		case w.own == nil && err == nil:
			r.failf("reopened: worker %d's log %q, dropped, is there", w.id, w.logName)
		case w.own == nil && !errors.Is(err, ErrNotFound):
			r.failf("reopened: Log(%q): %v", w.logName, err)
		case w.own != nil && err != nil:
			r.failf("reopened: worker %d's log %q, created, is missing: %v", w.id, w.logName, err)
		case w.own != nil:
			if l.ring != w.own.ring {
				r.failf("reopened: log %q's ring is %v, was %v", w.logName, l.ring, w.own.ring)
			}
			wantPages[ringPage(l)] = true
			var got []uint64
			for e, err := range l.Entries(0) {
				if err != nil {
					r.failf("reopened: walking log %q: %v", w.logName, err)
					break
				}
				if !isContent(e.Data, logID(e.Data)) {
					r.failf("reopened: log %q holds entry %d with bytes not its own", w.logName, logID(e.Data))
				}
				got = append(got, logID(e.Data))
			}
			if err := w.ownHolds(got); err != nil {
				r.failf("reopened: worker %d: %v", w.id, err)
			}
		}
	}
	for _, s := range r.shared {
		l, err := d.Log(s.name)
		if err != nil {
			t.Fatalf("seed %d: reopened: %v", r.seed, err)
		}
		if s.name == "carved" {
			wantPages[ringPage(l)] = true
		}
		// Every entry the owner holds, where it holds it.
		for id, off := range s.owner.live {
			p, err := l.Read(off)
			switch {
			case err != nil:
				r.failf("reopened: log %q: entry %d, committed and live at %d: %v", s.name, id, off, err)
			case !isContent(p, id):
				r.failf("reopened: log %q: entry %d at %d holds bytes not its own", s.name, id, off)
			}
		}
		for e, err := range l.Entries(0) {
			if err != nil {
				r.failf("reopened: walking log %q: %v", s.name, err)
				break
			}
			r.checkEntry(&crWorker{id: -1}, s.name, e.Data)
		}
	}
	if got, want := sortedAddrs(pages), sortedAddrs(wantPages); !slices.Equal(got, want) {
		r.failf("reopened: allocated pages %v, want %v (committed)", got, want)
	}
	if got, want := sortedAddrs(slots), sortedAddrs(wantSlots); !slices.Equal(got, want) {
		r.failf("reopened: allocated slots %v, want %v (committed)", got, want)
	}
	r.report()
}

// wantStamp checks that page or slot a on the reopened device begins with
// stamp v.
func (r *crRace) wantStamp(d *Device, what string, a Addr, v uint64) {
	r.wantBytes(d, what, a.Offset(), crStampBytes(v, crStampLen))
}

// wantBytes checks that the reopened device holds want at off.
func (r *crRace) wantBytes(d *Device, what string, off int64, want []byte) {
	buf := make([]byte, len(want))
	if _, err := d.ReadAt(buf, off); err != nil {
		r.failf("reopened: reading %s: %v", what, err)
		return
	}
	if string(buf) != string(want) {
		r.failf("reopened: %s holds %x, want %x (as last committed)", what, buf, want)
	}
}

// TestCloseRacesLogWriteWithoutMapping is a Log.Write of an entry that
// needs padding before it, on a store with no writable mapping (not
// Linux, or the simulated store), racing Close: writeNow's writeMapped
// finds the device open and no mapping and lets go of lifeMu, and Close
// runs whole before writeHeaders, given the payload, takes it. Write must
// return ErrClosed, as any call that meets Close, and leave the closed
// device not failed: writeHeaders must not write into the closed store.
// The test makes writeNow's calls in its order with Close between them;
// racing the public calls hits that window about once in 6,000 tries on
// two cores.
func TestCloseRacesLogWriteWithoutMapping(t *testing.T) {
	d, l, r := crPaddedReservation(t)
	p := make([]byte, r.Size())
	// writeNow, up to its call of writeHeaders.
	l.mu.Lock()
	i := l.liveLocked(r, spanReserved)
	if i < 0 {
		l.mu.Unlock()
		t.Fatal("no live span")
	}
	l.spans[i].state = spanSealing
	s := l.spans[i]
	l.mu.Unlock()
	crc := crc32.Checksum(p, castagnoli)
	if err := l.writeMapped(s, p, crc); !errors.Is(err, errUnmapped) {
		t.Fatalf("writeMapped: %v, want errUnmapped", err)
	}
	// Close, run whole here, as another goroutine may.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	err := l.writeHeaders(s, false, p, crc)
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Log.Write with Close run between writeMapped and writeHeaders: %v, want ErrClosed", err)
	}
	if f := d.failure.Load(); f != nil {
		t.Errorf("the closed device is marked failed: %v", f)
	}
}

// crPaddedReservation returns a device on the simulated store, its log
// "fixed" and a reservation there of an entry that needs padding before
// it at the ring's end.
func crPaddedReservation(t *testing.T) (*Device, *Log, Reservation) {
	t.Helper()
	o, err := (&Options{MaxSize: 8 << 20, MaxPageSize: 64 << 10, JournalSize: 64 << 10, RootSize: 4096,
		LogRegions: []LogRegion{{Name: "fixed", Size: 64 << 10}}}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	d := deviceOn(t, simstore.New(o.MaxSize), o)
	l := mustLog(t, d, "fixed")
	if err := l.SetOwner(deadOwner{}, &LogOptions{GCThresholdBytes: -1}); err != nil {
		t.Fatal(err)
	}
	for range 60 { // 60 frames of 1 KiB: 4 KiB left at the ring's end
		appendEntryT(t, l, make([]byte, 1000))
	}
	if err := l.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := l.Append(5000)
	if err != nil {
		t.Fatal(err)
	}
	if r.pos-r.start < logFrameHeaderBytes {
		t.Fatalf("no padding before the reservation: start %d, pos %d", r.start, r.pos)
	}
	return d, l, r
}
