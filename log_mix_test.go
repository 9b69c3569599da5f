package pagealloc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

var (
	mixSeed  = flag.Uint64("logmix.seed", 0, "first seed of TestLogMix (0: from the clock)")
	mixDur   = flag.Duration("logmix.dur", 2*time.Second, "how long TestLogMix runs seeds, on each kind of device")
	mixSteps = flag.Int("logmix.steps", 3000, "steps per seed in TestLogMix")
	mixPend  = flag.Int("logmix.pend", 12, "most reservations pending at once in TestLogMix")
)

// mixOwner is a relocating owner whose Relocate fails failPct% of the
// time, undoing its relocations when told of a rollback.
type mixOwner struct {
	mu       sync.Mutex
	live     map[uint64]int64 // id -> payload offset
	undo     map[uint64]int64 // id -> offset before this transaction
	rng      *rand.Rand
	failPct  int
	fails    int
	relocs   int
	mismatch []string
}

func (o *mixOwner) IsLive(off int64, entry []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	at, ok := o.live[logID(entry)]
	return ok && at == off
}

func (o *mixOwner) Relocate(tx *Txn, oldOff, newOff int64, entry []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.rng.IntN(100) < o.failPct {
		o.fails++
		return errors.New("mix: the owner refuses")
	}
	id := logID(entry)
	at, ok := o.live[id]
	if !ok {
		return nil
	}
	if at != oldOff {
		o.mismatch = append(o.mismatch, fmt.Sprintf("Relocate of %d from %d, owner has it at %d", id, oldOff, at))
		return errors.New("mix: mismatch")
	}
	if _, ok := o.undo[id]; !ok {
		o.undo[id] = oldOff
	}
	o.live[id] = newOff
	o.relocs++
	return nil
}

func (o *mixOwner) RelocationsEnded(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	relocationsEnded(o.live, o.undo, err)
}

// relocationsEnded is a RelocationsEnded of an owner whose entries live
// at live (id -> payload offset) and whose GC transaction moved those in
// undo from where undo has them: if it rolled back (err), each still live
// goes back there. The undo map is emptied for the next transaction.
func relocationsEnded(live, undo map[uint64]int64, err error) {
	if err != nil {
		for id, off := range undo {
			if _, ok := live[id]; ok {
				live[id] = off
			}
		}
	}
	clear(undo)
}

// mixEntry is one reservation of TestLogMix and what became of it.
type mixEntry struct {
	id    uint64
	size  int
	r     Reservation
	state mixState
	done  chan error // the Commit's result, while committing
}

// mixState is where a reservation of TestLogMix is: the order matters.
type mixState int

const (
	mixPending mixState = iota
	mixCommitting
	mixCommitted
	mixCancelled
)

// logMix is one seed's run of TestLogMix: the device, the log, its owner
// and every reservation, with counts of what the run did.
type logMix struct {
	t       *testing.T
	seed    uint64
	rng     *rand.Rand
	store   *simstore.Store
	path    string // file device: no crash images
	d       *Device
	l       *Log
	owner   *mixOwner
	all     []*mixEntry
	hist    []*mixEntry // every reservation of this generation
	log     []string
	pending []*mixEntry
	stale   []Reservation // cancelled reservations
	nextID  uint64
	maxEnd  uint64 // largest end of a reservation not cancelled
	step    int
	gen     int // log generation (DropLog + CreateLog)

	gcDone   chan error
	gcCancel context.CancelFunc

	*mixCounts // shared by the seeds of one device kind
}

// mixCounts counts what TestLogMix's seeds did.
type mixCounts struct {
	appends, noSpace, commits, cancels, gcs, gcErrs, drops, dropRefused, reopens, crashChecks, staleTried int
	relocs, refusedRelocs                                                                                 int
}

func (m *logMix) fatalf(format string, args ...any) {
	m.t.Helper()
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	m.t.Fatalf("seed %d step %d gen %d: %s\nstats %+v\n%s", m.seed, m.step, m.gen, fmt.Sprintf(format, args...), m.l.Stats(), buf[:n])
}

func (m *logMix) logf(format string, args ...any) {
	m.log = append(m.log, fmt.Sprintf("step %d: ", m.step)+fmt.Sprintf(format, args...)+fmt.Sprintf(" | tail %d", m.l.Stats().Tail))
}

func (m *logMix) setOwner() {
	if err := m.l.SetOwner(m.owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		m.fatalf("SetOwner: %v", err)
	}
}

func (m *logMix) newLog() {
	l, err := m.d.CreateLog("mix", 64<<10)
	if err != nil {
		m.fatalf("CreateLog: %v", err)
	}
	m.l = l
	m.owner.mu.Lock()
	m.owner.live = map[uint64]int64{}
	m.owner.undo = map[uint64]int64{}
	m.owner.mu.Unlock()
	m.all, m.pending, m.stale, m.maxEnd, m.hist = nil, nil, nil, 0, nil
	m.setOwner()
}

func (m *logMix) size() int {
	switch r := m.rng.IntN(100); {
	case r < 70:
		return 8 + m.rng.IntN(600)
	case r < 95:
		return 600 + m.rng.IntN(4000)
	default:
		return 4600 + m.rng.IntN(16<<10)
	}
}

func (m *logMix) doAppend() {
	size := m.size()
	durable := uint64(m.l.Stats().DurableTail)
	r, err := m.l.Append(size)
	if errors.Is(err, ErrNoSpace) {
		m.noSpace++
		return
	}
	if err != nil {
		m.fatalf("Append(%d): %v", size, err)
	}
	m.maxEnd = 0
	kept := m.hist[:0]
	for _, e := range m.hist {
		end := e.r.pos + uint64(logFrameBytes(int64(e.size)))
		if e.state != mixCancelled {
			m.maxEnd = max(m.maxEnd, end)
		}
		if end > durable || e.state < mixCommitted {
			kept = append(kept, e)
		}
	}
	m.hist = kept
	if r.start < m.maxEnd || r.start < durable {
		for _, e := range m.hist {
			if e.r.pos+uint64(logFrameBytes(int64(e.size))) > r.start {
				m.t.Logf("overlapped: entry %d [%d, pos %d) size %d state %d", e.id, e.r.start, e.r.pos, e.size, e.state)
			}
		}
		for _, s := range m.log[max(0, len(m.log)-60):] {
			m.t.Log(s)
		}
		m.fatalf("Append at [%d, pos %d) overlaps a reservation not cancelled ending at %d, or the durable tail %d", r.start, r.pos, m.maxEnd, durable)
	}
	id := m.nextID
	m.nextID++
	p := logContent(id, size)
	switch m.rng.IntN(4) {
	case 0:
		if err := m.l.Write(r, p); err != nil {
			m.fatalf("Write: %v", err)
		}
	case 1:
		if _, err := m.d.WriteAt(p, r.Offset()); err != nil {
			m.fatalf("WriteAt: %v", err)
		}
	case 2:
		if err := m.l.Write(r, logContent(id^0xdead, size)); err != nil {
			m.fatalf("Write: %v", err)
		}
		for from := 0; from < size; {
			n := min(size-from, 1+m.rng.IntN(size))
			if _, err := m.d.WriteAt(p[from:from+n], r.Offset()+int64(from)); err != nil {
				m.fatalf("WriteAt after Write: %v", err)
			}
			from += n
		}
	case 3:
		if err := m.l.Write(r, logContent(id^0xbeef, size)); err != nil {
			m.fatalf("Write: %v", err)
		}
		if err := m.l.Write(r, p); err != nil {
			m.fatalf("Write: %v", err)
		}
	}
	// Indexed before Commit, as GarbageChecker asks.
	m.owner.mu.Lock()
	m.owner.live[id] = r.Offset()
	m.owner.mu.Unlock()
	e := &mixEntry{id: id, size: size, r: r}
	m.all = append(m.all, e)
	m.hist = append(m.hist, e)
	m.logf("append %d [%d, pos %d, end %d) epoch %d", id, r.start, r.pos, r.pos+uint64(logFrameBytes(int64(size))), r.epoch)
	m.pending = append(m.pending, e)
	m.appends++
}

func (m *logMix) takePending() *mixEntry {
	if len(m.pending) == 0 {
		return nil
	}
	i := m.rng.IntN(len(m.pending))
	e := m.pending[i]
	m.pending = append(m.pending[:i], m.pending[i+1:]...)
	return e
}

func (m *logMix) doCommit(e *mixEntry) {
	e.state = mixCommitting
	e.done = make(chan error, 1)
	m.logf("commit %d", e.id)
	go func(r Reservation) { e.done <- m.l.Commit(r) }(e.r)
	m.commits++
}

func (m *logMix) doCancel(e *mixEntry) {
	m.owner.mu.Lock()
	delete(m.owner.live, e.id)
	m.owner.mu.Unlock()
	if err := m.l.Cancel(e.r); err != nil {
		m.fatalf("Cancel: %v", err)
	}
	e.state = mixCancelled
	m.logf("cancel %d", e.id)
	m.stale = append(m.stale, e.r)
	m.cancels++
}

// tryStale checks that a cancelled reservation never becomes live again.
func (m *logMix) tryStale() {
	if len(m.stale) == 0 {
		return
	}
	r := m.stale[m.rng.IntN(len(m.stale))]
	m.staleTried++
	if err := m.l.Write(r, make([]byte, r.size)); err == nil {
		m.fatalf("Write of a cancelled reservation at [%d, pos %d) epoch %d (log epoch %d) succeeded", r.start, r.pos, r.epoch, m.l.epoch)
	}
	if err := m.l.Cancel(r); err == nil {
		m.fatalf("Cancel of a cancelled reservation at [%d, pos %d) epoch %d succeeded", r.start, r.pos, r.epoch)
	}
}

func (m *logMix) deleteOne() {
	if len(m.all) == 0 {
		return
	}
	e := m.all[m.rng.IntN(len(m.all))]
	if e.state != mixCommitted {
		return
	}
	m.owner.mu.Lock()
	delete(m.owner.live, e.id)
	m.owner.mu.Unlock()
}

// settle collects the Commits that returned.
func (m *logMix) settle(wait bool) {
	for _, e := range m.all {
		if e.state != mixCommitting {
			continue
		}
		var err error
		if wait {
			select {
			case err = <-e.done:
			case <-time.After(30 * time.Second):
				m.fatalf("Commit of entry %d at %d still waits after 30 s", e.id, e.r.pos)
			}
		} else {
			select {
			case err = <-e.done:
			default:
				continue
			}
		}
		if err != nil {
			m.fatalf("Commit of entry %d at %d: %v", e.id, e.r.pos, err)
		}
		e.state = mixCommitted
	}
	kept := m.all[:0]
	for _, e := range m.all {
		if e.state == mixCancelled {
			continue
		}
		if e.state == mixCommitted {
			m.owner.mu.Lock()
			_, ok := m.owner.live[e.id]
			m.owner.mu.Unlock()
			if !ok {
				continue
			}
		}
		kept = append(kept, e)
	}
	m.all = kept
}

func (m *logMix) startGC() {
	if m.gcDone != nil {
		return
	}
	m.owner.mu.Lock()
	m.owner.failPct = []int{0, 0, 20, 50, 100}[m.rng.IntN(5)]
	m.owner.mu.Unlock()
	var ctx context.Context
	var cancel context.CancelFunc
	switch m.rng.IntN(3) {
	case 0:
		ctx, cancel = context.WithCancel(context.Background())
	case 1:
		ctx, cancel = context.WithTimeout(context.Background(), time.Duration(m.rng.IntN(3000))*time.Microsecond)
	default:
		ctx, cancel = context.WithCancel(context.Background())
	}
	done := make(chan error, 1)
	l := m.l
	go func() { done <- l.GC(ctx) }()
	m.gcDone, m.gcCancel = done, cancel
	m.logf("GC start, failPct %d", m.owner.failPct)
	m.gcs++
}

func (m *logMix) waitGC(cancel bool) {
	if m.gcDone == nil {
		return
	}
	if cancel {
		m.gcCancel()
	}
	select {
	case err := <-m.gcDone:
		m.logf("GC end (cancel %v): %v", cancel, err)
		if err != nil {
			m.gcErrs++
		}
		if err != nil && !mixGCErrOK(err) {
			m.fatalf("GC: %v", err)
		}
	case <-time.After(30 * time.Second):
		m.fatalf("GC still runs after 30 s")
	}
	m.gcCancel()
	m.gcDone, m.gcCancel = nil, nil
	m.owner.mu.Lock()
	mm := m.owner.mismatch
	m.owner.mu.Unlock()
	if len(mm) > 0 {
		m.fatalf("owner mismatch: %v", mm)
	}
}

// drain commits or cancels every pending reservation.
func (m *logMix) drain() {
	for len(m.pending) > 0 {
		e := m.takePending()
		if m.rng.IntN(4) == 0 {
			m.doCancel(e)
		} else {
			m.doCommit(e)
		}
	}
}

// quiesce ends GC and every reservation, then checks.
func (m *logMix) quiesce() {
	m.drain()
	m.waitGC(m.rng.IntN(2) == 0)
	m.settle(true)
	m.check(m.d, m.l, "")
}

// check reads back every committed entry the owner holds live.
func (m *logMix) check(d *Device, l *Log, what string) {
	s := checkLogInvariants(m.t, l)
	if s.UsedBytes > s.SizeBytes {
		m.fatalf("%s: used %d > size", what, s.UsedBytes)
	}
	m.owner.mu.Lock()
	live := make(map[uint64]int64, len(m.owner.live))
	for id, off := range m.owner.live {
		live[id] = off
	}
	m.owner.mu.Unlock()
	for _, e := range m.all {
		if e.state != mixCommitted {
			continue
		}
		off, ok := live[e.id]
		if !ok {
			continue
		}
		p, err := l.Read(off)
		if err != nil || !isContent(p, e.id) || len(p) != e.size {
			m.fatalf("%s: committed entry %d (reserved at %d) does not read back at offset %d: %v", what, e.id, e.r.pos, off, err)
		}
	}
	for _, err := range l.Entries(0) {
		if err != nil {
			m.fatalf("%s: Entries: %v", what, err)
		}
	}
	if err := d.Check(); err != nil {
		m.fatalf("%s: Check: %v", what, err)
	}
}

// crashCheck opens what a crash now would leave, while reservations and
// Commits may be under way, and checks the entries whose Commit returned.
func (m *logMix) crashCheck() {
	if m.store == nil {
		return
	}
	m.settle(false)
	n := m.store.Ops()
	img, err := m.store.Image(n, nil)
	if err != nil {
		m.fatalf("Image: %v", err)
	}
	d, err := openOn(img, &Options{})
	if err != nil {
		m.fatalf("crash image: Open: %v", err)
	}
	defer func() { d.Close(); img.Close() }()
	l, err := d.Log("mix")
	if err != nil {
		m.fatalf("crash image: Log: %v", err)
	}
	// The owner's offsets are durable only without a GC transaction in
	// flight: check only when none runs.
	if m.gcDone == nil {
		m.check(d, l, "crash image")
	} else if err := d.Check(); err != nil {
		m.fatalf("crash image: Check: %v", err)
	}
	m.crashChecks++
}

func (m *logMix) reopen() {
	m.quiesce()
	if err := m.d.Close(); err != nil {
		m.fatalf("Close: %v", err)
	}
	if m.store == nil {
		d, err := Open(m.path, &Options{NoSync: true})
		if err != nil {
			m.fatalf("reopen: %v", err)
		}
		m.d = d
		if m.l, err = d.Log("mix"); err != nil {
			m.fatalf("reopen: Log: %v", err)
		}
		m.logf("reopened")
		m.setOwner()
		m.check(m.d, m.l, "reopen")
		m.reopens++
		return
	}
	img, err := m.store.Image(m.store.Ops(), nil)
	if err != nil {
		m.fatalf("Image: %v", err)
	}
	m.store.Close()
	d, err := openOn(img, &Options{})
	if err != nil {
		m.fatalf("reopen: %v", err)
	}
	m.store, m.d = img, d
	m.logf("reopened")
	if m.l, err = d.Log("mix"); err != nil {
		m.fatalf("reopen: Log: %v", err)
	}
	m.setOwner()
	m.check(m.d, m.l, "reopen")
	m.reopens++
}

// tryDrop drops the log while Commits and Cancels may be under way; a
// DropLog that returns nil must have found everything durable.
func (m *logMix) tryDrop() {
	if m.rng.IntN(4) != 0 {
		m.waitGC(true)
	}
	// Resolve the pending ones concurrently with DropLog.
	var ops []func()
	for len(m.pending) > 0 {
		e := m.takePending()
		if m.rng.IntN(2) == 0 {
			m.doCancel(e)
		} else {
			e.state = mixCommitting
			e.done = make(chan error, 1)
			r := e.r
			ops = append(ops, func() { e.done <- m.l.Commit(r) })
			m.commits++
		}
	}
	dropDone := make(chan error, 1)
	go func() { dropDone <- m.d.DropLog("mix") }()
	// An appender beside DropLog: an Append that succeeds must either
	// keep the log (ErrInUse) or be refused; its Commit must never fail.
	type late struct {
		appendErr, writeErr, commitErr error
	}
	var lateDone chan late
	if m.rng.IntN(2) == 0 {
		lateDone = make(chan late, 1)
		l, id, size := m.l, m.nextID, 8+m.rng.IntN(500)
		m.nextID++
		useWrite := m.rng.IntN(2) == 0
		go func() {
			var x late
			runtime.Gosched()
			r, err := l.Append(size)
			if x.appendErr = err; err == nil {
				if useWrite {
					x.writeErr = l.Write(r, logContent(id, size))
				}
				x.commitErr = l.Commit(r)
			}
			lateDone <- x
		}()
	}
	for _, op := range ops {
		go op()
		if m.rng.IntN(2) == 0 {
			runtime.Gosched()
		}
	}
	var err error
	select {
	case err = <-dropDone:
	case <-time.After(30 * time.Second):
		m.fatalf("DropLog still waits after 30 s")
	}
	var x late
	if lateDone != nil {
		select {
		case x = <-lateDone:
		case <-time.After(30 * time.Second):
			m.fatalf("an Append/Commit beside DropLog still waits after 30 s (DropLog: %v)", err)
		}
		if x.appendErr == nil && (x.writeErr != nil || x.commitErr != nil) {
			m.fatalf("DropLog returned %v; the reservation appended beside it then failed: Write %v, Commit %v", err, x.writeErr, x.commitErr)
		}
	}
	if errors.Is(err, ErrInUse) {
		m.dropRefused++
		m.settle(true)
		m.waitGC(true)
		return
	}
	if err != nil {
		m.fatalf("DropLog: %v", err)
	}
	// Dropped: every Commit under way must have returned nil.
	for _, e := range m.all {
		if e.state == mixCommitting {
			select {
			case err := <-e.done:
				if err != nil {
					m.fatalf("DropLog returned nil, and the Commit of entry %d at %d then returned %v", e.id, e.r.pos, err)
				}
			case <-time.After(30 * time.Second):
				m.fatalf("DropLog returned nil, and the Commit of entry %d still waits", e.id)
			}
			e.state = mixCommitted
		}
	}
	m.drops++
	if m.gcDone != nil {
		// A GC begun before the drop, that did not yet hold gcMu.
		if err := <-m.gcDone; err != nil && !errors.Is(err, ErrClosed) && !mixGCErrOK(err) {
			m.fatalf("GC beside a DropLog that returned nil: %v", err)
		}
		m.gcCancel()
		m.gcDone, m.gcCancel = nil, nil
	}
	if err := m.d.Check(); err != nil {
		m.fatalf("Check after DropLog: %v", err)
	}
	m.gen++
	m.newLog()
}

func (m *logMix) run(steps int) {
	for m.step = 0; m.step < steps; m.step++ {
		switch r := m.rng.IntN(1000); {
		case r < 330:
			if len(m.pending) < *mixPend {
				m.doAppend()
			}
		case r < 560:
			if e := m.takePending(); e != nil {
				m.doCommit(e)
			}
		case r < 700:
			if e := m.takePending(); e != nil {
				m.doCancel(e)
			}
		case r < 730:
			m.tryStale()
		case r < 790:
			m.deleteOne()
		case r < 850:
			m.startGC()
		case r < 880:
			// GC waits for the reservations before its copies.
			m.waitGC(len(m.pending) > 0 || m.rng.IntN(2) == 0)
		case r < 900:
			m.settle(false)
		case r < 940:
			if m.rng.IntN(50) == 0 {
				time.Sleep(time.Duration(m.rng.IntN(500)) * time.Microsecond)
			} else {
				runtime.Gosched()
			}
		case r < 960:
			m.quiesce()
		case r < 975:
			m.crashCheck()
		case r < 985:
			if m.rng.IntN(5) == 0 {
				m.reopen()
			}
		default:
			if m.rng.IntN(3) == 0 {
				m.tryDrop()
			}
		}
	}
	m.quiesce()
	m.reopen()
}

// TestLogMix drives a carved log from one goroutine that appends (the
// frame staged by Log.Write, written with WriteAt, or both), commits in
// goroutines of their own, cancels, deletes entries from its owner, runs
// GC passes beside all that (Relocate refusing 0 to 100% of the time, the
// pass cancelled or timing out, so chunks roll back and give their copies
// back), drops and recreates the log while Commits and Cancels resolve,
// and reopens the device. It checks that every Append lies past every
// reservation not cancelled and past the durable tail, that a cancelled
// Reservation never works again, that a DropLog that returns nil leaves
// no Commit failing or waiting, and, whenever it quiesces, after a crash
// image of the simulated store and after a reopen, that every committed
// entry its owner holds reads back, Entries walks the ring and Check
// passes. It runs seeds for -logmix.dur on the simulated store and as
// long on a file (whose writable mapping takes Log.Write's frames); a
// seed fixes the operations, not the goroutines' timing, so a failure
// prints the seed, the step, the last operations and every stack.
func TestLogMix(t *testing.T) {
	first := *mixSeed
	if first == 0 {
		first = uint64(time.Now().UnixNano())
	}
	t.Logf("first seed %d (rerun with -run '^TestLogMix$' -logmix.seed=%d)", first, first)
	for _, onFile := range []bool{false, true} {
		t.Run(fmt.Sprintf("file=%v", onFile), func(t *testing.T) {
			var total mixCounts
			seed, seeds := first, 0
			for deadline := time.Now().Add(*mixDur); seeds == 0 || time.Now().Before(deadline); seed++ {
				seeds++
				if !t.Run(fmt.Sprint(seed), func(t *testing.T) { runLogMix(t, seed, onFile, &total) }) {
					break
				}
			}
			t.Logf("seeds %d to %d: %d appends (%d refused for room), %d commits, %d cancels, %d stale reservations tried, %d GC passes (%d ended early), %d relocations, %d refused Relocates, %d drops (%d refused), %d reopens, %d crash images",
				first, seed-1, total.appends, total.noSpace, total.commits, total.cancels, total.staleTried, total.gcs, total.gcErrs, total.relocs, total.refusedRelocs, total.drops, total.dropRefused, total.reopens, total.crashChecks)
		})
	}
}

// runLogMix runs one seed of TestLogMix, counting in total.
func runLogMix(t *testing.T, seed uint64, onFile bool, total *mixCounts) {
	m := &logMix{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 73)),
		owner: &mixOwner{rng: rand.New(rand.NewPCG(seed, 37))}, mixCounts: total}
	var err error
	if onFile {
		o := testOptions()
		o.MaxPageSize = 64 << 10
		m.path = filepath.Join(t.TempDir(), "device")
		m.d, err = Create(m.path, o)
	} else {
		o, oerr := (&Options{MaxSize: 64 << 20, MaxPageSize: 64 << 10, JournalSize: 64 << 10}).withDefaults()
		if oerr != nil {
			t.Fatal(oerr)
		}
		m.store = simstore.New(o.MaxSize)
		m.d, err = createOn(m.store, o)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m.gcCancel != nil {
			m.gcCancel()
		}
		m.d.Close()
		if m.store != nil {
			m.store.Close()
		}
	})
	m.newLog()
	m.run(*mixSteps)
	m.owner.mu.Lock()
	total.refusedRelocs += m.owner.fails
	total.relocs += m.owner.relocs
	m.owner.mu.Unlock()
}

// mixGCErrOK reports whether err is one TestLogMix's GC passes may end
// with: their context ended, or the owner refused a relocation.
func mixGCErrOK(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "mix: the owner refuses")
}
