package pagealloc

import (
	"encoding/binary"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// The journal is a ring of records in the device file (see format.go).
// One goroutine owns it: it takes every transaction committed since its
// last write, writes them as one record, syncs once, applies the writes to
// their home locations and wakes the committers. That is group commit: N
// concurrent committers cost about one fsync. A lone committer with a
// small transaction writes its group itself instead, when no one else is
// writing (see lead): the hand-over to that goroutine and back costs more
// than the write, and the lines are still in the committer's cache.
//
// Order of a group, each step finishing before the next starts:
//  1. if the caller wrote data with WriteAt since the last sync, sync it, so
//     that no durable record can point at data that is not;
//  2. append the record and sync: the transactions are now durable;
//  3. write home locations (no sync) and drop them from the overlay;
//  4. wake the committers.
//
// Steps 3 and 4 swap when the group wrote only the library's own state
// within the file's current size: reads of that state go through the
// overlay, which keeps the lines until they are home, so the committers
// may go on while the journal writes them. Bytes written with Txn.Write
// are home before Commit returns, for readers of Device.Slice.
//
// A checkpoint (ring half full, a record that does not fit, a component
// that asks for one, or Close) syncs the home locations and moves the
// head recorded in the superblock past every applied record.

// group is the set of transactions one journal write makes durable.
type group struct {
	txns []*Txn
	done chan struct{} // closed once every txn is durable, or failed
	err  error
}

type journal struct {
	d         *Device
	ring      region // the ring's bytes in the file
	maxRecord int64  // the largest record: half the ring, so a checkpoint always makes room

	// capacity is what checkpoints record: the file's, or the Open's
	// once the Open has got far enough to keep it (see openOn).
	capacity atomic.Int64

	// writing is held by whoever writes records: the goroutine running
	// run, or a committer writing its own group (see lead).
	writing sync.Mutex

	// Owned by the holder of writing (and by recover before run starts).
	sb      superblock // the superblock as last written; head fields change at checkpoint
	head    uint64     // virtual offset of the oldest record not checkpointed
	tail    uint64     // virtual offset where the next record goes
	nextSeq uint64     // sequence number of the next record
	recBuf  []byte
	homeBuf []byte
	keepBuf []bool // commitChunk's keepLink verdicts, for applyHome
	sortBuf sortBuffers

	// lostHead is the journal head that a checkpoint recorded in a
	// superblock copy damaged since, as recovery found it (see stamps),
	// or 0, and lostHeadSeq the sequence number of the record there. Set
	// before the journal starts, read-only after.
	lostHead, lostHeadSeq uint64
	// replay holds what recover replayed, or nil if nothing, and
	// replayEnd the end of its furthest write. On a device opened for
	// writing, finishRecovery writes it home and drops it; on a read-only
	// one it stays, as the overlay does.
	replay    *Txn
	replayEnd int64

	mu             sync.Mutex
	cond           sync.Cond
	open           *group // the group new commits join
	lastTxns       int    // transactions in the last group taken to be written
	last           *group // the newest group, for commits with nothing to write
	stopping       bool
	wantCheckpoint bool
	checkpointed   chan struct{} // closed and replaced at every checkpoint
	stopped        chan struct{}
	stopErr        error
}

// maxRecordBytes is the largest record a ring of size bytes takes: half
// the ring, so that a checkpoint always makes room for one, and no more
// than a record header's 32-bit length says.
func maxRecordBytes(size int64) int64 { return min(size/2, 1<<32-1) &^ 7 }

func newJournal(d *Device, sb superblock) *journal {
	j := &journal{
		d:         d,
		ring:      sb.journal,
		maxRecord: maxRecordBytes(sb.journal.size),
		sb:        sb,
		head:      sb.journalHead,
		tail:      sb.journalHead,
		nextSeq:   sb.headSeq,
		stopped:   make(chan struct{}),

		checkpointed: make(chan struct{}),
	}
	j.capacity.Store(sb.capacity)
	j.cond.L = &j.mu
	return j
}

func (j *journal) start() { go j.run() }

// stop writes what is queued, checkpoints, and ends the goroutine.
func (j *journal) stop() error {
	j.mu.Lock()
	j.stopping = true
	j.mu.Unlock()
	j.cond.Signal()
	<-j.stopped
	return j.stopErr
}

// leadLines is the most lines a group its committer writes (see lead) may
// hold. A large transaction's group goes to the journal's goroutine, which
// wakes its committer before writing the lines home where it may (see the
// top of this file), rather than after.
const leadLines = 256

// lines counts the lines of g's transactions.
func (g *group) lines() int {
	n := 0
	for _, tx := range g.txns {
		n += tx.lines.len()
	}
	return n
}

// enqueue adds a committed transaction to the open group and returns it.
// It reports whether the committer is to write the group itself (see
// lead): a small transaction that opened the group, after a group of one,
// as a lone committer's are. Otherwise it wakes the journal's goroutine.
func (j *journal) enqueue(tx *Txn) (g *group, lead bool) {
	j.mu.Lock()
	g = j.open
	if g == nil {
		g = &group{done: make(chan struct{})}
		j.open, j.last = g, g
		lead = j.lastTxns <= 1 && tx.lines.len() <= leadLines
	}
	g.txns = append(g.txns, tx)
	j.mu.Unlock()
	if !lead {
		j.cond.Signal()
	}
	return g, lead
}

func (j *journal) lastGroup() *group {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.last
}

func (j *journal) run() {
	defer close(j.stopped)
	for {
		j.mu.Lock()
		for j.open == nil && !j.stopping && !j.wantCheckpoint {
			j.cond.Wait()
		}
		j.mu.Unlock()
		if j.serve() {
			return
		}
	}
}

// serve takes the right to write records, then writes the open group and
// any checkpoint asked for, or on stopping the final checkpoint. It
// reports whether the goroutine is to end.
func (j *journal) serve() (stopped bool) {
	j.writing.Lock()
	defer j.writing.Unlock()
	j.mu.Lock()
	g := j.open
	j.open = nil
	if g != nil {
		j.lastTxns = len(g.txns)
	}
	forced := j.wantCheckpoint
	j.wantCheckpoint = false
	stopping := j.stopping
	j.mu.Unlock()
	if g == nil && !stopping {
		// A checkpoint was asked for, or a committer wrote the group
		// this goroutine was woken for (see lead).
		if forced && j.d.failure.Load() == nil {
			if err := j.checkpoint(); err != nil {
				j.d.fail(err)
			}
		}
		return false
	}
	if g == nil { // stopping, and nothing left to write
		if j.d.failure.Load() == nil {
			if err := j.checkpoint(); err != nil {
				j.stopErr = j.d.fail(err)
			}
		} else {
			j.stopErr = j.d.failure.Load()
		}
		return true
	}
	j.write(g, forced)
	return false
}

// write commits g, then checkpoints if forced (one was asked for before g
// was taken) or the ring is half full. The caller holds writing.
func (j *journal) write(g *group, forced bool) {
	j.commit(g)
	if g.err == nil && (forced || j.tail-j.head > uint64(j.ring.size/2)) {
		if err := j.checkpoint(); err != nil {
			j.d.fail(err)
		}
	}
}

// lead writes g from the committer's own goroutine, as enqueue asked, if
// no one is writing records and g is still open and small. Otherwise
// whoever writes takes g next: the journal's goroutine, or a committer
// that finds g open once it has written its own and wakes that goroutine.
// Like that goroutine, it checkpoints after g if one was asked for or the
// ring is half full.
func (j *journal) lead(g *group) {
	if !j.writing.TryLock() {
		return
	}
	j.mu.Lock()
	mine := j.open == g && g.lines() <= leadLines
	forced := false
	if mine {
		j.open = nil
		j.lastTxns = len(g.txns)
		forced, j.wantCheckpoint = j.wantCheckpoint, false
	}
	j.mu.Unlock()
	if mine {
		j.write(g, forced)
	}
	j.writing.Unlock()
	// Work that came while this goroutine wrote is the journal
	// goroutine's: wake it.
	j.mu.Lock()
	work := j.open != nil || j.wantCheckpoint || j.stopping
	j.mu.Unlock()
	if work {
		j.cond.Signal()
	}
}

// commit makes a group durable, in as many records as it needs (a
// transaction never spans two records), applies it at home, and wakes its
// committers.
func (j *journal) commit(g *group) {
	d := j.d
	wake := func(err error) {
		g.err = err
		close(g.done)
	}
	if f := d.failure.Load(); f != nil {
		wake(f)
		return
	}
	if err := d.syncUserData(); err != nil {
		wake(d.fail(err))
		return
	}
	txns := g.txns
	for len(txns) > 0 {
		// A transaction alone always fits (Commit checked); others join
		// it while their merged bounds do.
		n, bound := 1, recordOverheadBytes+txns[0].mergedBytes()
		for n < len(txns) && bound+txns[n].mergedBytes() <= j.maxRecord {
			bound += txns[n].mergedBytes()
			n++
		}
		last := n == len(txns)
		later, refs, err := j.commitChunk(txns[:n], last)
		if err != nil {
			wake(d.fail(err))
			return
		}
		d.durableTxSeq.Store(txns[n-1].seq)
		if later != nil {
			wake(nil)
			if err := j.applyHome(later, refs, j.keepBuf); err != nil {
				d.fail(err)
				return
			}
			d.pending.release(txns[n-1].seq)
			return
		}
		txns = txns[n:]
	}
	wake(nil)
}

// syncUserData syncs the bytes written in place since the last sync, if
// any, before a journal record that may point at them is written. If a
// Device.Sync has taken them, it waits for that sync to complete, and
// returns the failure if it failed: the bytes may be lost.
func (d *Device) syncUserData() error {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	if f := d.failure.Load(); f != nil {
		return f
	}
	if d.userDirty.Swap(false) {
		return d.sync()
	}
	return nil
}

// groupWord returns a reader of the aligned word at an offset as it is at
// the end of the group whose lines are lines: those lines over home, which
// the journal's goroutine has brought up to the group before.
func (d *Device) groupWord(lines *lineTable) func(off int64) uint64 {
	size := d.size.Load()
	return func(off int64) uint64 {
		var b [8]byte
		if off+8 <= size {
			copy(b[:], d.view[off:])
		}
		if l := lines.line(off >> lineShift); l != nil {
			l.overlayOnto(b[:], off)
		}
		return binary.LittleEndian.Uint64(b[:])
	}
}

// userDataDirty reports whether bytes written in place wait for a sync.
// A Device.Sync under way has taken them but not made them durable yet:
// it waits for that sync to complete first. If that sync failed the
// device, the bytes may be lost and count as waiting, so that the
// commit promising them meets the failure.
func (d *Device) userDataDirty() bool {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	return d.userDirty.Load() || d.failure.Load() != nil
}

// commitChunk writes txns as one record. It applies them at home too,
// unless mayDefer allows leaving that until the committers are awake and
// step 3 may swap with step 4 (see the top of this file): then it returns
// the lines to apply, as applyHome takes them.
func (j *journal) commitChunk(txns []*Txn, mayDefer bool) (later *lineTable, refs []lineRef, err error) {
	lines, refs := mergeLines(txns, &j.sortBuf)
	if len(refs) == 0 {
		// Only empty commits asking for the user data sync: nothing of
		// them waits to go home.
		j.d.pending.release(txns[len(txns)-1].seq)
		return nil, nil, nil
	}
	// Encoded in the device's aligned record buffer; recBuf only if it is
	// out (see staging).
	staged := stage(j.d.staging.records)
	defer unstage(staged)
	rec := staged.bytesOr(j.recBuf)[:0]
	rec = append(rec, make([]byte, recordHeaderBytes)...)
	var stamp [8]byte // append fills it in
	rec = appendEntry(rec, j.stampOff(), kindMeta, stamp[:])
	count := uint32(1)
	// What decides whether home writes may follow the wake-up (see the
	// top of this file): bytes of the caller's, writes past the file's
	// end, and links into pages the group hands out, which its home
	// writes skip but the overlay would still show over the new owner's
	// in-place bytes until then. (Txn.Commit drops those of a lone
	// transaction; the links of a page merged into a larger free one are
	// skipped too, harmlessly: no one owns them.)
	//
	// Whether each link is kept is decided here once, for applyHome too:
	// the group's home writes come next, and nothing else writes the
	// bits the decision reads in between.
	user, end, skipped := false, int64(0), false
	word := j.d.groupWord(lines)
	j.keepBuf = j.keepBuf[:0]
	j.homeBuf, err = forEachRun(refs, true, j.homeBuf, func(off int64, kind entryKind, data []byte) error {
		rec = appendEntry(rec, off, kind, data)
		count++
		user = user || kind == kindUser
		if kind == kindLink {
			keep := j.d.keepLink(word, off)
			j.keepBuf = append(j.keepBuf, keep)
			skipped = skipped || mayDefer && !keep && j.d.allocatedAt(word, off)
		}
		end = off + int64(len(data))
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if staged == nil {
		j.recBuf = rec
	}
	if err := j.append(rec, count); err != nil {
		return nil, nil, err
	}
	if mayDefer && !user && !skipped && end <= j.d.size.Load() {
		return lines, refs, nil
	}
	if err := j.applyHome(lines, refs, j.keepBuf); err != nil {
		return nil, nil, err
	}
	j.d.pending.release(txns[len(txns)-1].seq)
	return nil, nil, nil
}

// append writes one record at the tail and syncs it. The record begins
// with its checkpoint stamp, which append fills in: after the checkpoint
// it may make first, so that the stamp names the head of the newest
// superblock copy.
func (j *journal) append(rec []byte, count uint32) error {
	length := uint64(len(rec))
	if length > uint64(j.maxRecord) {
		// The bounds that group transactions into records make this
		// unreachable; written, the record would be taken for a torn one.
		return fmt.Errorf("pagealloc: a journal record of %d bytes, above the largest of %d", length, j.maxRecord)
	}
	if j.tail+length-j.head > uint64(j.ring.size) {
		if err := j.checkpoint(); err != nil {
			return err
		}
	}
	binary.LittleEndian.PutUint64(rec[recordHeaderBytes+entryHeaderBytes:], j.sb.journalHead)
	h := recordHeader{length: uint32(length), seq: j.nextSeq, pos: j.tail, count: count}
	putRecordHeader(rec, h)
	binary.LittleEndian.PutUint32(rec[recordCRCOff:], recordChecksum(rec))
	if err := j.writeRing(rec, j.tail); err != nil {
		return err
	}
	if err := j.d.sync(); err != nil {
		return err
	}
	j.tail += length
	j.nextSeq++
	return nil
}

// writeRing writes p at virtual offset pos, wrapping at the ring's end.
func (j *journal) writeRing(p []byte, pos uint64) error {
	phys := int64(pos % uint64(j.ring.size))
	first := min(int64(len(p)), j.ring.size-phys)
	if _, err := j.d.store.WriteAt(p[:first], j.ring.off+phys); err != nil {
		return err
	}
	if first < int64(len(p)) {
		if _, err := j.d.store.WriteAt(p[first:], j.ring.off); err != nil {
			return err
		}
	}
	return nil
}

// readRing fills p from virtual offset pos, wrapping at the ring's end.
func (j *journal) readRing(p []byte, pos uint64) {
	phys := int64(pos % uint64(j.ring.size))
	n := copy(p, j.d.view[j.ring.off+phys:j.ring.end()])
	copy(p[n:], j.d.view[j.ring.off:])
}

// applyHome writes merged lines to their home locations, joining
// neighbouring runs into one write, and grows the recorded size if the
// writes went past it.
//
// A link written into a page that is allocated at the end of the group is
// skipped: the page's bytes are its new owner's, who may be writing them
// in place already (see Device.keepLink). lines holds the group's lines
// (refs in order), so that the group's final state is those lines over
// home, which has every group before it. keeps, if not nil, holds
// keepLink's verdict on each run of links in turn, as commitChunk found
// it.
func (j *journal) applyHome(lines *lineTable, refs []lineRef, keeps []bool) error {
	d := j.d
	d.homeMu.Lock()
	d.homeSeq.Add(1)
	defer func() {
		d.homeSeq.Add(1)
		d.homeMu.Unlock()
	}()
	end := int64(0)
	size := d.size.Load()
	word := d.groupWord(lines)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var err error
	j.homeBuf, err = forEachRun(refs, true, j.homeBuf, func(off int64, kind entryKind, data []byte) error {
		if kind == kindLink {
			var keep bool
			if keeps != nil {
				keep, keeps = keeps[0], keeps[1:]
			} else {
				keep = d.keepLink(word, off)
			}
			if !keep {
				return nil
			}
		}
		end = max(end, off+int64(len(data)))
		if off+int64(len(data)) <= size && d.homeView != nil && copyMapped(d.homeView[off:], data) {
			return nil
		}
		_, err := d.store.WriteAt(data, off)
		return err
	})
	if err != nil {
		return err
	}
	d.growMu.Lock()
	if end > d.size.Load() {
		d.size.Store(end)
	}
	d.growMu.Unlock()
	return nil
}

// copyMapped copies src into dst, a writable mapping of the file, and
// reports whether it could: a fault (the filesystem cannot back the page:
// out of space, an I/O error) is recovered from, so that the caller can
// retry with WriteAt and report that error instead of crashing. The caller
// must have enabled debug.SetPanicOnFault.
func copyMapped(dst, src []byte) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	copy(dst, src)
	return true
}

// checkpoint makes every applied record unnecessary: it syncs the home
// locations, then records the tail as the new head in the older
// superblock copy. A failed device takes none: a record whose home writes
// failed, after its committers were woken, must stay in the journal.
func (j *journal) checkpoint() error {
	if f := j.d.failure.Load(); f != nil {
		return f
	}
	if j.head == j.tail && j.capacity.Load() == j.sb.capacity {
		// Nothing applied since the last one: everything durable is
		// already covered, and the capacity recorded.
		j.covered()
		return nil
	}
	d := j.d
	if err := d.sync(); err != nil {
		return err
	}
	sb := j.sb
	sb.seq++
	sb.journalHead, sb.headSeq = j.tail, j.nextSeq
	sb.txSeq = d.durableTxSeq.Load()
	sb.capacity = j.capacity.Load()
	var buf [superblockBytes]byte
	sb.encode(buf[:])
	if _, err := d.store.WriteAt(buf[:], superblockOffset(sb.seq)); err != nil {
		return err
	}
	if err := d.sync(); err != nil {
		return err
	}
	j.sb = sb
	j.head = j.tail
	j.covered()
	return nil
}

// covered records that a checkpoint now covers every durable transaction
// and wakes those waiting for one.
func (j *journal) covered() {
	j.d.checkpointTxSeq.Store(j.d.durableTxSeq.Load())
	j.mu.Lock()
	close(j.checkpointed)
	j.checkpointed = make(chan struct{})
	j.mu.Unlock()
}

// waitCheckpoint asks for a checkpoint and waits until one covers the
// transaction txSeq, which must have been committed.
func (j *journal) waitCheckpoint(txSeq uint64) error {
	for j.d.checkpointTxSeq.Load() < txSeq {
		if f := j.d.failure.Load(); f != nil {
			return f // a failed device takes no checkpoint
		}
		j.mu.Lock()
		ch := j.checkpointed
		j.mu.Unlock()
		j.requestCheckpoint()
		select {
		case <-ch:
		case <-j.d.failed:
		case <-j.stopped:
			return ErrClosed
		}
	}
	return nil
}

// requestCheckpoint asks for a checkpoint after the next group, for a
// component waiting on one (freed pages are reused only after it).
func (j *journal) requestCheckpoint() {
	j.mu.Lock()
	j.wantCheckpoint = true
	j.mu.Unlock()
	j.cond.Signal()
}

// scannedRecord is a record found valid by recovery.
type scannedRecord struct {
	pos, seq uint64
	entries  []journalEntry
}

// readRecord returns the record at virtual offset pos if it is valid there
// with sequence seq: right magic, length, position, sequence and checksum.
// The record is read into buf if it is large enough, else into new memory.
func (j *journal) readRecord(pos, seq uint64, buf []byte) ([]byte, recordHeader, bool) {
	var hb [recordHeaderBytes]byte
	j.readRing(hb[:], pos)
	h, ok := parseRecordHeader(hb[:], uint32(j.maxRecord))
	if !ok || h.seq != seq || h.pos != pos {
		return nil, h, false
	}
	rec := buf
	if uint32(cap(rec)) < h.length {
		rec = make([]byte, h.length)
	}
	rec = rec[:h.length]
	j.readRing(rec, pos)
	if recordChecksum(rec) != h.crc {
		return nil, h, false
	}
	return rec, h, true
}

// scan reads the valid records from the head. The first invalid record
// ends the journal (a torn tail), unless a valid record with a later
// sequence number lies anywhere in the ring: records are written one at a
// time, each synced before the next, so that can only be corruption.
func (j *journal) scan() ([]scannedRecord, error) {
	var recs []scannedRecord
	pos, seq := j.head, j.nextSeq
	for pos-j.head < uint64(j.ring.size) {
		rec, h, ok := j.readRecord(pos, seq, nil) // entries alias it
		if !ok {
			break
		}
		if pos+uint64(h.length)-j.head > uint64(j.ring.size) {
			return nil, corruptf(j.physOff(pos), "journal record", "a record inside the ring's live span")
		}
		// Bounded by the recorded capacity too: a write past a smaller
		// MaxSize is the MaxSize's fault, which recover reports.
		entries, err := decodeEntries(rec, h.count, max(j.d.capacity, j.sb.capacity), j.physOff(pos))
		if err != nil {
			return nil, err
		}
		if err := j.checkTargets(entries, j.physOff(pos)); err != nil {
			return nil, err
		}
		recs = append(recs, scannedRecord{pos: pos, seq: seq, entries: entries})
		pos += uint64(h.length)
		seq++
	}
	if later, laterOff, ok, err := j.findLaterRecord(seq); err != nil {
		return nil, err
	} else if ok {
		return nil, corruptf(j.physOff(pos), "journal record", "a valid record with sequence %d (record %d follows at offset %d)", seq, later, laterOff)
	}
	j.tail, j.nextSeq = pos, seq
	return recs, nil
}

// checkTargets refuses a record with an entry where no transaction
// writes: the superblocks, which only checkpoints write, or the journal's
// own ring. Replaying it would overwrite what recovery stands on.
func (j *journal) checkTargets(entries []journalEntry, recOff int64) error {
	for i, e := range entries {
		end := e.off + int64(len(e.data))
		if e.off < j.d.geometry.root.off || e.off < j.ring.end() && end > j.ring.off {
			return corruptf(recOff, "journal record", "entry %d outside the superblocks and the journal ring, found [%d, +%d)", i, e.off, len(e.data))
		}
	}
	return nil
}

func (j *journal) physOff(pos uint64) int64 { return j.ring.off + int64(pos%uint64(j.ring.size)) }

// findLaterRecord looks for a valid record anywhere in the ring whose
// sequence number is seq or later, and returns its sequence number and
// file offset.
func (j *journal) findLaterRecord(seq uint64) (later uint64, off int64, ok bool, err error) {
	over := j.ringRecords(func(h recordHeader) bool { return h.seq >= seq }, func(h recordHeader, _ []byte) bool {
		later, off, ok = h.seq, j.physOff(h.pos), true
		return false
	})
	if over >= 0 {
		return 0, 0, false, corruptf(over, "journal record", "at most %d bytes of records claiming sequence %d or later", 2*j.ring.size, seq)
	}
	return later, off, ok, nil
}

// ringRecords looks at every 8-byte-aligned position of the ring for a
// record header that claim accepts, and calls fn with each such record
// that is valid there, until fn returns false.
//
// Each claimed header costs a checksum of its record, up to half the
// ring. A journal this package wrote has at most one lap of records
// (which do not overlap) and one torn record, so their checksums together
// cover less than twice the ring; once the claims add up to more, it
// stops and returns the file offset of the header past that (-1 if none):
// forged headers filling a ring would cost checksums quadratic in its
// size, about two minutes for the default 4 MiB.
func (j *journal) ringRecords(claim func(recordHeader) bool, fn func(h recordHeader, rec []byte) bool) (over int64) {
	ring := j.d.view[j.ring.off:j.ring.end()]
	budget := 2 * uint64(j.ring.size)
	var buf []byte
	for phys := 0; phys+8 <= len(ring); phys += 8 {
		if binary.LittleEndian.Uint32(ring[phys:]) != recordMagic {
			continue
		}
		var hb [recordHeaderBytes]byte
		j.readRing(hb[:], uint64(phys))
		h, ok := parseRecordHeader(hb[:], uint32(j.maxRecord))
		if !ok || h.pos%uint64(j.ring.size) != uint64(phys) || !claim(h) {
			continue
		}
		if uint64(h.length) > budget {
			return j.ring.off + int64(phys)
		}
		budget -= uint64(h.length)
		if uint32(cap(buf)) < h.length {
			buf = make([]byte, h.length)
		}
		if rec, _, ok := j.readRecord(h.pos, h.seq, buf); ok && !fn(h, rec) {
			break
		}
	}
	return -1
}

// stamps checks the records' checkpoint stamps (see format.go) against
// the superblock copy in use, takes them out of the entries, and returns
// the records to replay. A record at the position its stamp names is the
// first after a checkpoint that moved the head there: past the copy in
// use, that checkpoint's copy was written whole and damaged since (or
// written again, with the same sequence number, by a recovery from such
// damage, and damaged in turn). The records before it are those that
// checkpoint covered, whose home writes it synced, and replaying them
// could put an old owner's journaled bytes over a page handed out again
// since, or over bytes written in place since. They are dropped, as
// recovery from that copy would have.
func (j *journal) stamps(recs []scannedRecord) ([]scannedRecord, error) {
	head, first := j.head, 0
	for i := range recs {
		r := &recs[i]
		stamp, ok := j.stampOf(r.entries)
		if !ok {
			continue
		}
		r.entries = r.entries[1:]
		switch {
		case stamp == head:
		case stamp > head && stamp == r.pos && !j.otherCopyVerifies():
			head, first = stamp, i
			j.lostHead, j.lostHeadSeq = stamp, r.seq
		case stamp > head && stamp == r.pos:
			return nil, corruptf(j.physOff(r.pos), "journal record", "a checkpoint stamp naming head %d, found its own position %d, as after a checkpoint whose superblock copy is lost, though the copy it would have replaced verifies", head, stamp)
		default:
			return nil, corruptf(j.physOff(r.pos), "journal record", "a checkpoint stamp naming head %d, or its own position %d past it, found %d", head, r.pos, stamp)
		}
	}
	return recs[first:], nil
}

// findLostHead looks through the ring for records past the head in use
// that are stamped with their own position: each is the first after a
// checkpoint whose superblock copy no longer verifies (see stamps). It
// returns the newest one's position and sequence number.
func (j *journal) findLostHead() (pos, seq uint64, found bool) {
	if j.otherCopyVerifies() {
		return 0, 0, false
	}
	// Bounded as a superblock's head is: the checkpoint that records
	// this one must be one the next Open takes.
	claim := func(h recordHeader) bool {
		return h.pos > j.head && h.pos < journalPosLimit && h.seq > j.nextSeq && h.seq < maxTxSeq && (!found || h.pos > pos)
	}
	j.ringRecords(claim, func(h recordHeader, rec []byte) bool {
		entries, err := decodeEntries(rec, h.count, max(j.d.capacity, j.sb.capacity), j.physOff(h.pos))
		if stamp, ok := j.stampOf(entries); err == nil && ok && stamp == h.pos {
			pos, seq, found = h.pos, h.seq, true
		}
		return true
	})
	return pos, seq, found
}

// otherCopyVerifies reports whether the superblock copy not in use
// verifies. If it does, it is older than the one in use, and no record
// can name a newer checkpoint.
func (j *journal) otherCopyVerifies() bool {
	off := superblockOffset(j.sb.seq + 1)
	_, err := decodeSuperblock(j.d.view[off:off+superblockBytes], off)
	return err == nil
}

// stampOf returns the checkpoint stamp that a record's entries begin
// with, if they do.
func (j *journal) stampOf(entries []journalEntry) (uint64, bool) {
	if len(entries) == 0 {
		return 0, false
	}
	e := entries[0]
	if e.kind != kindMeta || e.off != j.stampOff() || len(e.data) != 8 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(e.data), true
}

// stampOff is the device offset that checkpoint stamps name: the
// allocator state's reserved word, which no transaction writes.
func (j *journal) stampOff() int64 { return j.d.geometry.state.off + stateReservedOff }

// recover replays the journal: it lays every valid record over the
// mapping in memory, where Open reads the state it checks. Opened for
// writing, the device then writes them home (finishRecovery), once Open
// has found nothing to refuse: an Open that fails leaves the file as it
// was.
func (j *journal) recover() error {
	recs, err := j.scan()
	if err != nil {
		// The records from the head in use may have been written over
		// since a checkpoint whose copy is now damaged: replay from
		// that checkpoint's head, which no record before it is needed
		// for.
		pos, seq, ok := j.findLostHead()
		if !ok {
			return err
		}
		j.head, j.nextSeq = pos, seq
		j.lostHead, j.lostHeadSeq = pos, seq
		if recs, err = j.scan(); err != nil {
			return err
		}
	}
	if recs, err = j.stamps(recs); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	d := j.d
	replay := &Txn{d: d}
	var links []journalEntry
	end := int64(0)
	for _, r := range recs {
		for _, e := range r.entries {
			end = max(end, e.off+int64(len(e.data)))
			if e.kind == kindLink {
				links = append(links, e)
				continue
			}
			replay.write(e.off, e.data, e.kind)
		}
	}
	if end > d.capacity {
		return errMaxSizeBelow(d.capacity, "the end of the journal's writes at", end)
	}
	// Links go last, and only into pages still free at the end: a page
	// allocated since belongs to its new owner, whose data is in place.
	for _, e := range links {
		if d.keepLink(replay.readU64, e.off) {
			replay.write(e.off, e.data, kindLink)
		}
	}
	d.pending.add(replay)
	j.replay, j.replayEnd = replay, end
	return nil
}

// replayed reports whether the records recover replayed wrote the n bytes
// at off, which lie in one line.
func (j *journal) replayed(off int64, n int) bool {
	if j.replay == nil {
		return false
	}
	from := int(off & (lineBytes - 1))
	m := spanMask(from, from+n)
	l := j.replay.lines.line(off >> lineShift)
	return l != nil && l.dirty&m == m
}

// finishRecovery writes the records recover replayed to their home
// locations, syncs and checkpoints, leaving the ring empty. The device is
// open for writing, and the journal has not started.
func (j *journal) finishRecovery() error {
	replay := j.replay
	if replay == nil {
		return nil
	}
	// A crash may have lost the file's growth, which is not journaled:
	// grow it back first, reserving it with Options.Preallocate, rather
	// than let the writes past its end leave holes.
	if err := j.d.growTo(j.replayEnd, 1); err != nil {
		return err
	}
	if err := j.applyHome(&replay.lines, replay.lines.sorted(nil), nil); err != nil {
		return err
	}
	if err := j.checkpoint(); err != nil {
		return err
	}
	j.replay = nil
	j.d.pending.release(replay.seq) // at home now
	return nil
}
