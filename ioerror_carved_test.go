package pagealloc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pagealloc/pagealloc/internal/simstore"
)

// TestIOErrorCarvedLogs fails each storage operation of a workload of
// carved logs in turn, as TestIOErrorAtEveryOperation does for the rest
// of the device: EIO once, and ENOSPC on every write from then on. The
// workload creates two logs with CreateLog, appends to both, collects one
// (its ring wraps), drops the other, creates a third and appends to it,
// and closes the device. At every point no call panics or hangs, the
// first error and every later one is ErrFailed, and the device, reopened
// as left and after a power loss, passes Check and holds:
//
//   - every log whose CreateLog returned nil and whose DropLog was not
//     called or failed, and none whose CreateLog was never called or
//     whose DropLog returned nil; a log whose CreateLog or DropLog failed
//     may be there or not;
//   - in each log there, every entry whose Commit returned nil and that
//     its owner kept, whole, and no entry whose Commit was never called;
//
// and it takes a new carved log and an entry in it.
func TestIOErrorCarvedLogs(t *testing.T) {
	o := crashOptions(t)
	o.MaxSize = 8 << 20
	clean, again := carvedSweepRun(t, o, nil), carvedSweepRun(t, o, nil)
	for _, c := range []*carvedSweep{clean, again} {
		if len(c.problems) > 0 || c.err != nil {
			t.Fatalf("clean run: first error %v:\n\t%s", c.err, strings.Join(c.problems, "\n\t"))
		}
	}
	same := sameTrace(clean.trace, again.trace)
	t.Logf("clean run: %d operations after Create (two runs alike: %v), %d entries committed", len(clean.trace), same, clean.committed)

	occ := traceOccurrences(clean.trace)
	for _, v := range []struct {
		name    string
		errno   syscall.Errno
		refuses func(simstore.Op) bool
	}{
		{"EIO once", syscall.EIO, nil},
		{"ENOSPC from then on", syscall.ENOSPC, func(op simstore.Op) bool { return op.Kind == simstore.OpWrite }},
	} {
		t.Run(v.name, func(t *testing.T) {
			points, unreached, failing := 0, 0, 0
			outcomes := map[string]int{}
			for i, want := range clean.trace {
				if v.refuses != nil && !v.refuses(want) {
					continue
				}
				points++
				res := carvedSweepRun(t, o, ioSweepFault(want, occ[i], v.errno, v.refuses))
				if res.failedOp == nil {
					unreached++
				}
				outcomes[res.outcome]++
				if len(res.problems) > 0 {
					failing++
					t.Errorf("failing %v: first error %v (from %s)\n\t%s", want, res.err, res.errCall, strings.Join(res.problems, "\n\t"))
					if failing == ioSweepMaxFailing {
						t.FailNow()
					}
				}
			}
			t.Logf("%d points, %d of whose operations never came", points, unreached)
			for _, o := range slices.Sorted(maps.Keys(outcomes)) {
				t.Logf("  %4d points: %s", outcomes[o], o)
			}
			if unreached > points/10 {
				t.Errorf("at %d of %d points the operation never came", unreached, points)
			}
		})
	}
}

// carvedLogModel is what the workload did to one carved log.
type carvedLogModel struct {
	name            string
	created         ioFate // ioRolledBack: CreateLog never called
	dropped         ioFate // ioRolledBack: DropLog never called
	entries         []*carvedEntry
	l               *Log
	owner           *setLive
	sizeBytes       int64
	nextID, deleted uint64
}

type carvedEntry struct {
	id   uint64
	off  int64
	size int
	fate ioFate
	kept bool // the owner still holds it
}

// carvedSweep is one run of the carved-log workload.
type carvedSweep struct {
	d    *Device
	logs []*carvedLogModel

	sweepTrace
	callLog
	committed int
	outcome   string
}

// ok is callLog.ok for a call made with the device failed only if an
// earlier call returned an error.
func (w *carvedSweep) ok(what string, err error) bool { return w.callLog.ok(what, false, err) }

// carvedSweepRun runs the workload on a new store with fault (nil: none,
// and the trace is recorded), then reopens what the store holds and
// checks it.
func carvedSweepRun(t *testing.T, o Options, fault func(simstore.Op) error) *carvedSweep {
	t.Helper()
	w := &carvedSweep{}
	guardedOnNewStore(t, ioSweepTimeout, "a carved-log run", w.problem, o, sweepStore, func(store *simstore.Store, d *Device) {
		w.d = d
		w.watch(store, fault)
		w.run()
		closeErr := d.Close()
		if closeErr != nil || w.err != nil {
			w.ok("Close", closeErr)
		}
		store.SetFault(nil)
		img, err := store.Image(store.Ops(), nil)
		if err != nil {
			w.problem("Image: %v", err)
			return
		}
		defer img.Close()
		found := [2]string{w.verify("as written", store), w.verify("after a crash", img)}
		switch {
		case w.err == nil:
			w.outcome = "nothing failed"
		default:
			w.outcome = fmt.Sprintf("%s failed first; as written %s, after a crash %s", strings.Fields(w.errCall)[0], found[0], found[1])
		}
	})
	return w
}

// settle waits until the journal's goroutine has nothing under way (see
// ioSweep.settle), so that the workload's operations come in one order.
func (w *carvedSweep) settle() { (&ioSweep{d: w.d}).settle() }

// run is the workload; it stops at the first error.
func (w *carvedSweep) run() {
	a := w.create("a", 64<<10)
	if a == nil || !w.appendTo(a, 12, 1500) {
		return
	}
	b := w.create("b", 32<<10)
	if b == nil || !w.appendTo(b, 6, 1200) {
		return
	}
	// The owner lets go of the older half of a's entries; GC reclaims
	// them, and the appends after it wrap the ring.
	for _, e := range a.entries[:len(a.entries)/2] {
		a.owner.remove(e.id)
		e.kept = false
	}
	if !w.ok("GC of a", a.l.GC(context.Background())) {
		return
	}
	w.settle()
	if !w.appendTo(a, 10, 2500) {
		return
	}
	b.dropped = ioFailed
	if !w.ok("DropLog(b)", w.d.DropLog("b")) {
		return
	}
	b.dropped = ioCommitted
	w.settle()
	c := w.create("c", 16<<10)
	if c == nil {
		return
	}
	w.appendTo(c, 3, 800)
}

// create carves a log and sets its owner; nil if it failed.
func (w *carvedSweep) create(name string, size int64) *carvedLogModel {
	m := &carvedLogModel{name: name, created: ioFailed, sizeBytes: size, owner: &setLive{live: map[uint64]int64{}}}
	w.logs = append(w.logs, m)
	l, err := w.d.CreateLog(name, size)
	if !w.ok("CreateLog("+name+")", err) {
		return nil
	}
	w.settle()
	m.created, m.l = ioCommitted, l
	if err := l.SetOwner(m.owner, &LogOptions{GCThresholdBytes: -1}); err != nil {
		w.problem("SetOwner(%s): %v", name, err)
		return nil
	}
	return m
}

// carvedPayload is the payload of entry id of the log named name.
func carvedPayload(name string, id uint64, size int) []byte {
	p := logContent(id, size)
	copy(p[8:], name)
	return p
}

// appendTo appends n entries of about size bytes to m, each written in
// place and committed; it reports whether all went well.
func (w *carvedSweep) appendTo(m *carvedLogModel, n, size int) bool {
	for i := range n {
		id := m.nextID
		m.nextID++
		sz := size + i*8
		r, err := m.l.Append(sz)
		if !w.ok(fmt.Sprintf("Append to %s", m.name), err) {
			return false
		}
		e := &carvedEntry{id: id, off: r.Offset(), size: sz, kept: true}
		m.entries = append(m.entries, e)
		m.owner.add(id, e.off)
		if _, err := w.d.WriteAt(carvedPayload(m.name, id, sz), e.off); !w.ok(fmt.Sprintf("WriteAt into %s", m.name), err) {
			return false
		}
		e.fate = ioFailed
		if !w.ok(fmt.Sprintf("Commit to %s", m.name), m.l.Commit(r)) {
			return false
		}
		e.fate = ioCommitted
		w.committed++
		w.settle()
	}
	return true
}

// verify opens store and checks it against the model; it says which
// uncertain calls (a CreateLog, DropLog or Commit that failed) it found
// done.
func (w *carvedSweep) verify(label string, store *simstore.Store) string {
	rd, err := openOn(ioSweepStore{store}, &Options{})
	if err != nil {
		w.problem("%s: Open: %v", label, err)
		return "?"
	}
	defer rd.Close()
	if err := rd.Check(); err != nil {
		w.problem("%s: Check: %v", label, err)
	}
	var uncertain []string
	for _, m := range w.logs {
		l, err := rd.Log(m.name)
		there := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			w.problem("%s: Log(%s): %v", label, m.name, err)
			continue
		}
		switch {
		case m.created == ioFailed:
			uncertain = append(uncertain, fmt.Sprintf("CreateLog(%s) %s", m.name, doneOrNot(there)))
		case m.dropped == ioFailed:
			uncertain = append(uncertain, fmt.Sprintf("DropLog(%s) %s", m.name, doneOrNot(!there)))
		case there != (m.dropped == ioRolledBack):
			w.problem("%s: log %s there: %v (created %v, dropped %v)", label, m.name, there, m.created, m.dropped)
		}
		if !there {
			continue
		}
		if st := l.Stats(); st.SizeBytes != m.sizeBytes {
			w.problem("%s: log %s has a ring of %d bytes, want %d", label, m.name, st.SizeBytes, m.sizeBytes)
		}
		for _, e := range m.entries {
			p, err := l.Read(e.off)
			whole := err == nil && bytes.Equal(p, carvedPayload(m.name, e.id, e.size))
			switch {
			case e.fate == ioCommitted && e.kept && !whole:
				w.problem("%s: log %s entry %d at %d, committed and kept: %v", label, m.name, e.id, e.off, err)
			case e.fate == ioRolledBack && whole:
				w.problem("%s: log %s entry %d at %d, never committed, reads back", label, m.name, e.id, e.off)
			case e.fate == ioFailed:
				uncertain = append(uncertain, fmt.Sprintf("Commit %s", doneOrNot(whole)))
			}
		}
	}
	// The table and the heap take a new log.
	if l, err := rd.CreateLog("new", 16<<10); err != nil {
		w.problem("%s: CreateLog after reopening: %v", label, err)
	} else if r, err := l.Append(100); err != nil {
		w.problem("%s: Append after reopening: %v", label, err)
	} else if err := l.Commit(r); err != nil {
		w.problem("%s: Commit after reopening: %v", label, err)
	}
	if len(uncertain) == 0 {
		return "nothing uncertain"
	}
	return strings.Join(uncertain, ", ")
}

func doneOrNot(done bool) string {
	if done {
		return "done"
	}
	return "not done"
}
