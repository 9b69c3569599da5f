package pagealloc

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
)

// Transactions keep their writes in 64-byte lines: a copy of the committed
// bytes of the line, with the written bytes changed and marked. Reads inside
// the transaction look in its lines first, then in the overlay of writes
// committed but not yet at home, then in the mapping.

const (
	lineShift = 6
	lineBytes = 1 << lineShift
)

// line is one 64-byte span of the device as a transaction sees it: the
// bytes it holds (valid) lie over the committed bytes. A line starts empty,
// or as a copy of a committed version still waiting to go home; the other
// bytes are read from home when asked for, so that a line only written
// costs no read of the device. After the transaction commits its lines
// never change again, so readers may use them without a lock.
type line struct {
	data  [lineBytes]byte
	valid uint64 // bit i: data[i] holds the byte (written, or copied from a committed version)
	dirty uint64 // bit i: byte i was written
	link  uint64 // bit i: byte i was last written as a free-list link
	user  uint64 // bit i: byte i was last written by the caller (Txn.Write)
	// inherited: bit i: data[i] is a free-list link copied from an
	// earlier version of the line (see lineFor), not written here.
	inherited uint64
	// copied: bit i: data[i] is a byte of the caller's (Txn.Write) copied
	// from an earlier version of the line, not written here. It is the
	// committed byte only while a version before this one is on its way
	// home: once that is home, the caller may write the byte in place
	// (see Device.WriteAt), and home has the newer one. overlayOnto and
	// holds leave such bytes out (see readOver).
	copied uint64

	// parent: the line starts a page whose sub-page parent bit the
	// transaction holding the line has seen set, so that it need not
	// look again (subpage.go). Only that transaction's table uses it.
	parent bool
}

func (l *line) kindAt(i int) entryKind {
	switch bit := uint64(1) << i; {
	case l.link&bit != 0:
		return kindLink
	case l.user&bit != 0:
		return kindUser
	}
	return kindMeta
}

// spanMask returns the bits [from, to) of a 64-bit line mask.
func spanMask(from, to int) uint64 {
	return (^uint64(0) >> (lineBytes - (to - from))) << from
}

// overlayOnto copies into p, the bytes at off within l's line, those that l
// holds but for the caller's bytes it copied.
func (l *line) overlayOnto(p []byte, off int64) { l.overlayMask(p, off, l.valid&^l.copied) }

// overlayMask copies into p, the bytes at off within l's line, those of
// valid, a mask of bytes l holds.
func (l *line) overlayMask(p []byte, off int64, valid uint64) {
	from := int(off & (lineBytes - 1))
	want := spanMask(from, from+len(p))
	m := valid & want
	if m == want {
		copy(p, l.data[from:])
		return
	}
	for m != 0 {
		i := bits.TrailingZeros64(m)
		j := i + bits.TrailingZeros64(^(m >> i))
		copy(p[i-from:j-from], l.data[i:j])
		m &^= spanMask(i, j)
	}
}

// holds reports whether l holds all n bytes at from, none of them a
// caller's byte it copied.
func (l *line) holds(from, n int) bool {
	m := spanMask(from, from+n)
	return l.valid&^l.copied&m == m
}

// Txn is the one writing transaction of a device, begun with Begin or
// Update. Its writes are visible to its own reads, reach the device
// atomically at Commit, and vanish at Rollback. A Txn must be used by one
// goroutine at a time.
type Txn struct {
	d     *Device
	lines lineTable
	// allocated are the pages tx's Alloc handed out (see settleLines).
	allocated []Addr
	seq       uint64 // commit order, set by Commit
	done      bool
	// stray is set, with the line's offset in strayOff, once tx writes a
	// line where no transaction may (see lineFor); Commit refuses it.
	stray    bool
	strayOff int64
	// runs and dirtyBytes measure tx's lines once it commits, for the
	// bounds on the journal record they need (see soloBound).
	runs, dirtyBytes int64
	// cause is why tx was rolled back, if it was not its owner's choice,
	// for participants to pass on (see abort).
	cause error

	// participants are the components whose in-memory state tx changed.
	participants []participant
}

// participant is a component that keeps an in-memory copy of on-disk
// state (list heads, counters, tails) and changes it inside transactions.
type participant interface {
	// prepare writes tx's pending changes into tx before it commits; an
	// error aborts the commit and rolls tx back.
	prepare(tx *Txn) error
	// committed adopts tx's changes; tx has its sequence number and its
	// writes are visible to the next transaction.
	committed(tx *Txn)
	// rolledBack forgets tx's changes. tx still holds the writer: no
	// other transaction has begun since.
	rolledBack(tx *Txn)
}

// join registers p with tx once.
func (tx *Txn) join(p participant) {
	for _, q := range tx.participants {
		if q == p {
			return
		}
	}
	tx.participants = append(tx.participants, p)
}

// Write journals p at off: it is visible to later reads in tx and reaches
// the device atomically with the rest of the transaction. The caller may
// write its root area (see Device.Root) and pages it owns, including those
// tx allocated, each write inside one page. Inside a sub-page parent the
// check is per page, as for Device.WriteAt: any slot's bytes are
// accepted, allocated or not, and only the header's are refused, so
// writing a slot after freeing it is the caller's bug to avoid. Bytes
// written with Write must not also be written with Device.WriteAt (see
// there).
func (tx *Txn) Write(off int64, p []byte) error {
	if tx.unmade() {
		return errNil("Txn")
	}
	if tx.done {
		return ErrTxDone
	}
	if err := tx.d.checkUserWrite(off, int64(len(p)), tx); err != nil {
		return err
	}
	tx.write(off, p, kindUser)
	return nil
}

// ReadAt reads the device as tx sees it: committed state with tx's own
// writes on top. It implements io.ReaderAt.
func (tx *Txn) ReadAt(p []byte, off int64) (int, error) {
	if tx.unmade() {
		return 0, errNil("Txn")
	}
	if tx.done {
		return 0, ErrTxDone
	}
	if off < 0 {
		return 0, fmt.Errorf("%w: read at %d", ErrOutOfRange, off)
	}
	size := tx.d.size.Load()
	if off >= size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	tx.read(p[:n], off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Commit makes the transaction's writes durable and visible to everyone,
// and ends it. It returns once they are durable, along with every WriteAt
// that returned before Commit was called. Another transaction may begin
// while Commit waits for the disk, which is how concurrent commits come to
// share one journal write.
//
// A transaction whose record may not fit in half the journal is rolled
// back instead, and Commit returns ErrTooLarge. What a record may take is
// counted line by line: each run of bytes the transaction wrote within
// one 64-byte line costs 16 bytes of entry header and up to 7 of padding
// besides the bytes themselves, so long contiguous writes cost 87 bytes
// for every 64 and a transaction of them fits 32/87 of
// Options.JournalSize (about 37%) in bytes written. The pending pages
// the allocator releases into a transaction (see Alloc), and the pending
// sub-page slots (see Subpages.Free), count too: if
// they made it too large, the next Begin releases them in transactions
// of their own first, so that tried again it does not carry them.
//
// ErrFailed means an I/O error failed the device, perhaps after the
// transaction's record reached the journal (the writes to the bytes' home
// locations follow it, and a full filesystem refuses them where the file
// has holes, unless Options.Preallocate reserved them): whether it is
// durable is known only once the device is opened again, which finds it
// wholly present or wholly absent.
func (tx *Txn) Commit() error {
	if tx.unmade() {
		return errNil("Txn")
	}
	if tx.done {
		return ErrTxDone
	}
	d := tx.d
	if f := d.failure.Load(); f != nil {
		return tx.abort(f)
	}
	for _, p := range tx.participants {
		if err := p.prepare(tx); err != nil {
			return tx.abort(err)
		}
	}
	tx.settleLines()
	if tx.stray {
		return tx.abort(corruptf(tx.strayOff, "transaction", "writes to the root area, the allocator's state, the log table and the heap only, found one at %d (a corrupt link followed)", tx.strayOff))
	}
	if bound := tx.soloBound(); bound > d.journal.maxRecord {
		return tx.abort(fmt.Errorf("%w: transaction needs up to %d journal bytes, the journal takes %d", ErrTooLarge, bound, d.journal.maxRecord))
	}
	tx.done = true
	if tx.lines.len() == 0 && !d.userDataDirty() {
		// Nothing to write, but the state tx read may belong to commits
		// still on their way to disk: wait for them. Participants still
		// hear that tx ended (a log's flush leader, say, hands over).
		for _, p := range tx.participants {
			p.committed(tx)
		}
		g := d.journal.lastGroup()
		d.writer.Unlock()
		if g != nil {
			<-g.done
			return g.err
		}
		return nil
	}
	d.txSeq++
	d.txLines = tx.lines.len()
	tx.seq = d.txSeq
	d.pending.add(tx)
	for _, p := range tx.participants {
		p.committed(tx)
	}
	g, lead := d.journal.enqueue(tx)
	d.writer.Unlock()
	if lead {
		d.journal.lead(g)
	}
	<-g.done
	if invariantsEnabled && g.err == nil {
		d.assertInvariants()
	}
	return g.err
}

// settleLines readies tx's lines for the journal: it drops the links that
// died in tx (see dropDeadLinks) and measures what is left (see measure).
// With pages allocated, both are done in one walk over the lines: in a
// large transaction each line is a cache miss.
func (tx *Txn) settleLines() {
	held := tx.heldPages()
	if len(held) == 0 {
		tx.measure()
		return
	}
	tx.runs, tx.dirtyBytes = 0, 0
	i := 0
	for _, r := range tx.lines.sorted(&tx.d.deadSort) {
		l := r.l
		if l.link != 0 || l.valid != l.dirty {
			off := r.idx << lineShift
			for i < len(held) && held[i].Offset()+held[i].Size() <= off {
				i++
			}
			if i < len(held) && held[i].Offset() <= off {
				l.dropDeadLinks()
			}
		}
		tx.runs += int64(l.runs())
		tx.dirtyBytes += int64(bits.OnesCount64(l.dirty))
	}
	tx.allocated = held[:0]
}

// heldPages returns, in ascending order, the pages tx allocated that are
// still allocated, in tx.allocated's space.
func (tx *Txn) heldPages() []Addr {
	g := &tx.d.alloc.g
	held := tx.allocated[:0]
	for _, a := range tx.allocated {
		if tx.pageState(g, int(uint(a&addrSizeMask)-g.minShift), a.Offset()) == stateAllocated {
			held = append(held, a)
		}
	}
	// Addrs sort as their offsets do: the size lies below the offset's
	// lowest bit, and allocated pages do not share an offset.
	slices.Sort(held)
	return held
}

// dropDeadLinks forgets the free-list links written into l, a line of a
// page its transaction leaves allocated (a page pushed on a list and
// popped again, or merged into one that was): their bytes are the new
// owner's, so neither the journal nor home, nor readers of the committed
// version, may see them. Replay and home writes apply the same rule
// (Device.keepLink); doing it at commit keeps them out of the record and
// out of the overlay. Only a page the transaction allocated can hold its
// links and be allocated at its end. The bytes of the line that the
// transaction did not write go too: copied from a version still on its way
// home (see lineFor), they are links of an earlier transaction, and kept
// in the overlay they would hide the owner's in-place writes.
func (l *line) dropDeadLinks() {
	l.dirty &^= l.link
	l.valid = l.dirty
	l.link, l.inherited, l.copied = 0, 0, 0
}

// Rollback discards the transaction's writes and ends it.
func (tx *Txn) Rollback() error {
	if tx.unmade() {
		return errNil("Txn")
	}
	if tx.done {
		return ErrTxDone
	}
	tx.done = true
	tx.lines = lineTable{}
	for _, p := range tx.participants {
		p.rolledBack(tx)
	}
	tx.d.writer.Unlock()
	return nil
}

// abort rolls tx back because of err, which it returns; participants find
// err in tx.cause.
func (tx *Txn) abort(err error) error {
	tx.cause = err
	tx.Rollback()
	return err
}

// measure counts the journal entries tx's lines make on their own, line
// by line, and their dirty bytes.
func (tx *Txn) measure() {
	tx.runs, tx.dirtyBytes = 0, 0
	for _, r := range tx.lines.slots {
		if r.l != nil {
			tx.runs += int64(r.l.runs())
			tx.dirtyBytes += int64(bits.OnesCount64(r.l.dirty))
		}
	}
}

// runs returns the number of entries l's dirty bytes make on their own: a
// run starts at every dirty byte whose predecessor is clean or, it may
// be, of another kind.
func (l *line) runs() int {
	inner := l.dirty & (l.dirty << 1) // dirty, and so is the byte before
	changes := inner & ((l.link ^ l.link<<1) | (l.user ^ l.user<<1))
	return bits.OnesCount64(l.dirty&^inner | changes)
}

// soloBound is an upper bound on the bytes of a record holding tx alone,
// once measured: an entry costs its header, its bytes and at most 7 bytes
// of padding, and runs that meet across lines only join.
func (tx *Txn) soloBound() int64 {
	return recordOverheadBytes + tx.runs*(entryHeaderBytes+7) + tx.dirtyBytes
}

// mergedBytes bounds what tx adds to a record it shares with other
// transactions. Their lines merge, and a run of one transaction
// overwritten in its middle by a later one of another kind comes out as
// three: every run edge of every transaction, its start and its end, can
// start an entry, so twice the runs.
func (tx *Txn) mergedBytes() int64 {
	return 2*tx.runs*(entryHeaderBytes+7) + tx.dirtyBytes
}

// write records p at off in tx's lines, as kind.
func (tx *Txn) write(off int64, p []byte, kind entryKind) {
	for len(p) > 0 {
		idx := off >> lineShift
		from := int(off & (lineBytes - 1))
		n := min(len(p), lineBytes-from)
		l := tx.lineFor(idx)
		copy(l.data[from:], p[:n])
		m := spanMask(from, from+n)
		l.valid |= m
		l.dirty |= m
		l.inherited &^= m
		l.copied &^= m
		switch kind {
		case kindLink:
			l.link |= m
			l.user &^= m
		case kindUser:
			l.user |= m
			l.link &^= m
		default:
			l.link &^= m
			l.user &^= m
		}
		p = p[n:]
		off += int64(n)
	}
}

// read fills p with the bytes at off as tx sees them.
func (tx *Txn) read(p []byte, off int64) {
	for len(p) > 0 {
		idx := off >> lineShift
		from := int(off & (lineBytes - 1))
		n := min(len(p), lineBytes-from)
		l := tx.lines.line(idx)
		if l == nil || !l.holds(from, n) {
			tx.d.readCommitted(p[:n], off)
		}
		if l != nil {
			l.overlayOnto(p[:n], off)
		}
		p = p[n:]
		off += int64(n)
	}
}

// readProtectedLine returns line idx as tx sees it: tx's copy of it, or
// buf filled from committed state if tx has none. The line must hold only
// library state that nothing writes in place (Device.WriteAt refuses it):
// a line tx holds is completed from committed state on the way, so that
// later reads find every byte in it. Committed state does not change
// under an open transaction (there is one writer), so the copy stays
// true; the bytes are not marked dirty. Elsewhere a clean byte kept in a
// line could hide a later in-place write from readers of the
// transaction's committed version. The caller must not change the line.
func (tx *Txn) readProtectedLine(buf *[lineBytes]byte, idx int64) *[lineBytes]byte {
	l := tx.lines.line(idx)
	if l == nil {
		tx.d.readCommitted(buf[:], idx<<lineShift)
		return buf
	}
	if l.valid != ^uint64(0) {
		var b [lineBytes]byte
		tx.d.readCommitted(b[:], idx<<lineShift)
		l.overlayOnto(b[:], idx<<lineShift)
		l.data, l.valid = b, ^uint64(0)
	}
	return &l.data
}

// readU64 reads the little-endian word at off, which must be 8-byte
// aligned, as tx sees it.
func (tx *Txn) readU64(off int64) uint64 {
	l := tx.lines.line(off >> lineShift)
	switch {
	case l == nil:
		return tx.d.committedU64(off)
	case l.holds(int(off&(lineBytes-1)), 8):
		return binary.LittleEndian.Uint64(l.data[off&(lineBytes-1):])
	}
	var b [8]byte
	tx.d.readCommitted(b[:], off)
	l.overlayOnto(b[:], off)
	return binary.LittleEndian.Uint64(b[:])
}

// writeU64 writes the little-endian word v at off, which must be 8-byte
// aligned, as kind.
func (tx *Txn) writeU64(off int64, v uint64, kind entryKind) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	tx.write(off, b[:], kind)
}

// lineFor returns tx's copy of line idx, making it on first touch.
func (tx *Txn) lineFor(idx int64) *line {
	l, fresh := tx.lines.add(idx)
	if !fresh {
		return l
	}
	if !tx.stray && !tx.d.txWritable(idx) {
		tx.stray, tx.strayOff = true, idx<<lineShift
	}
	// A version still on its way home holds bytes home does not have
	// yet; start from it. Home needs no reading until someone reads.
	if p := tx.d.pending.get(idx); p != nil {
		l.data, l.valid = p.data, p.valid
		l.copied = (p.user | p.copied) & p.valid
		// Its free-list links only while the page they head is still
		// free or pending: one handed out since is its owner's, written
		// in place, and links kept in tx's version would hide those
		// bytes from its readers until it reached home (they never go
		// there: only written bytes do). Dead links are read from home,
		// where no one needs them. Until tx is done, only tx changes
		// the page's state, and dropDeadLinks sees to the pages it
		// allocates.
		if links := (p.link | p.inherited) & p.valid; links != 0 {
			if tx.d.keepLink(tx.readU64, idx<<lineShift) {
				l.inherited = links
			} else {
				l.valid &^= links
			}
		}
	}
	return l
}

// txWritable reports whether a transaction may write line idx: not below
// the root area (the superblocks), not in the journal's ring, not past the
// device's capacity. The allocators check every link they follow from
// disk; this is the backstop, so that a link no check caught fails the
// commit with ErrCorrupt instead of making a write that recovery would
// refuse to replay, or that the journal could not place.
func (d *Device) txWritable(idx int64) bool {
	ring := d.journal.ring
	return idx >= d.geometry.root.off>>lineShift && idx <= (d.capacity-1)>>lineShift &&
		(idx < ring.off>>lineShift || idx > (ring.end()-1)>>lineShift)
}

// readCommitted fills p, which lies within one line, with committed bytes:
// home, with any version still on its way home laid over it.
func (d *Device) readCommitted(p []byte, off int64) {
	pl, older := d.pending.version(off>>lineShift, math.MaxUint64)
	d.readOver(p, off, pl, older)
}

// readOver fills p, which lies within one line, with the bytes at home
// with pl, a version of the line from the overlay or nil, laid over them.
// The caller's bytes that pl copied count only if older: then the
// version they came from, or one before it, is on its way home too, and
// home may not have them yet. Otherwise home has them, and perhaps newer
// bytes written in place since.
func (d *Device) readOver(p []byte, off int64, pl *line, older bool) {
	from := int(off & (lineBytes - 1))
	valid := uint64(0)
	if pl != nil {
		valid = pl.valid
		if !older {
			valid &^= pl.copied
		}
	}
	if want := spanMask(from, from+len(p)); valid&want != want {
		// Offsets come from on-disk links: a corrupt one may be
		// negative, which reads as zeroes rather than faulting.
		n := 0
		if size := d.size.Load(); off >= 0 {
			n = copy(p, d.view[min(off, size):size])
		}
		clear(p[n:]) // past the end of the file: the bytes a later growth exposes
	}
	if pl != nil {
		pl.overlayMask(p, off, valid)
	}
}

// durableU64 reads the little-endian word at off, which must be 8-byte
// aligned, as the durable transactions left it: committed state without
// the transactions in the overlay that the journal has not synced yet.
// Home holds none of their bytes: the journal writes a record's lines
// home only once the record is synced.
func (d *Device) durableU64(off int64) uint64 {
	var b [8]byte
	// The sequence is loaded before the overlay's list: a transaction
	// synced meanwhile counts as not.
	pl, older := d.pending.version(off>>lineShift, d.durableTxSeq.Load())
	d.readOver(b[:], off, pl, older)
	return binary.LittleEndian.Uint64(b[:])
}

// committedU64 reads the little-endian word at off, which must be 8-byte
// aligned, from committed state.
func (d *Device) committedU64(off int64) uint64 {
	var b [8]byte
	d.readCommitted(b[:], off)
	return binary.LittleEndian.Uint64(b[:])
}

// overlay holds the transactions committed but not yet written to their
// home locations, oldest first, so that reads see commits the journal has
// not applied. A transaction's lines no longer change once it commits, and
// each starts from the version before it (see lineFor), so the newest
// transaction holding a line holds the line's newest bytes, but for the
// free-list links of a page handed out since, which no one reads, and for
// the caller's bytes it copied, which count only while an older version is
// not yet at home (see line.copied). Readers take no lock: they load the
// current list, which is replaced, never changed.
type overlay struct {
	mu       sync.Mutex // serialises add and release
	txs      atomic.Pointer[[]*Txn]
	released chan struct{} // closed by the next release, or nil
}

// nextRelease returns a channel that the next release closes.
func (o *overlay) nextRelease() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.released == nil {
		o.released = make(chan struct{})
	}
	return o.released
}

// list returns the transactions in the overlay, oldest first.
func (o *overlay) list() []*Txn {
	if p := o.txs.Load(); p != nil {
		return *p
	}
	return nil
}

// get returns the newest committed version of line idx not yet at home,
// or nil.
func (o *overlay) get(idx int64) *line {
	l, _ := o.version(idx, math.MaxUint64)
	return l
}

// version returns the newest version of line idx not yet at home that a
// transaction numbered seq or below committed, or nil, and, if it holds
// bytes of the caller's that it copied (line.copied), whether an older
// version of the line is not yet at home either.
func (o *overlay) version(idx int64, seq uint64) (l *line, older bool) {
	txs := o.list()
	for i := len(txs) - 1; i >= 0; i-- {
		if txs[i].seq > seq {
			continue
		}
		if l = txs[i].lines.line(idx); l == nil {
			continue
		}
		if l.copied != 0 {
			for _, tx := range txs[:i] {
				if tx.lines.line(idx) != nil {
					return l, true
				}
			}
		}
		return l, false
	}
	return nil, false
}

// holdsAny reports whether a transaction in the overlay holds a line with
// an index in [lo, hi].
func (o *overlay) holdsAny(lo, hi int64) bool {
	for _, tx := range o.list() {
		if tx.lines.holdsAny(lo, hi) {
			return true
		}
	}
	return false
}

// add publishes a committing transaction's lines.
func (o *overlay) add(tx *Txn) {
	o.mu.Lock()
	txs := append(slices.Clip(o.list()), tx)
	o.txs.Store(&txs)
	o.mu.Unlock()
}

// release forgets the transactions up to seq, once their lines are at home.
func (o *overlay) release(seq uint64) {
	o.mu.Lock()
	txs := o.list()
	n := 0
	for n < len(txs) && txs[n].seq <= seq {
		n++
	}
	rest := slices.Clone(txs[n:])
	o.txs.Store(&rest)
	if o.released != nil {
		close(o.released)
		o.released = nil
	}
	o.mu.Unlock()
}

// overlayRead lays the bytes of txs, a list the overlay held, over p,
// which holds the home bytes at off read after the list was taken.
func overlayRead(txs []*Txn, p []byte, off int64) {
	if len(txs) == 0 || len(p) == 0 {
		return
	}
	first, last := off>>lineShift, (off+int64(len(p))-1)>>lineShift
	overlayOne := func(idx int64, l *line) {
		lo, hi := max(idx<<lineShift, off), min((idx+1)<<lineShift, off+int64(len(p)))
		l.overlayOnto(p[lo-off:hi-off], lo)
	}
	for _, tx := range txs { // oldest first: newer bytes land last
		t := &tx.lines
		from, to := max(first, t.minIdx), min(last, t.maxIdx)
		if to-from >= int64(len(t.slots)) { // cheaper to visit every entry
			for _, r := range t.slots {
				if r.l != nil && r.idx >= from && r.idx <= to {
					overlayOne(r.idx, r.l)
				}
			}
			continue
		}
		for idx := from; idx <= to; idx++ {
			if l := t.line(idx); l != nil {
				overlayOne(idx, l)
			}
		}
	}
}

// mergeLines folds the lines of txs, oldest first, into one version per
// line: the newest bytes, and for each byte the kind of its last write. It
// returns them as a table and in ascending order of index, sorted in b
// (see lineTable.sorted).
func mergeLines(txs []*Txn, b *sortBuffers) (*lineTable, []lineRef) {
	if len(txs) == 1 {
		return &txs[0].lines, txs[0].lines.sorted(b)
	}
	merged := new(lineTable)
	for _, tx := range txs {
		for _, r := range tx.lines.slots {
			l := r.l
			if l == nil {
				continue
			}
			m, fresh := merged.add(r.idx)
			if fresh {
				*m = *l
				continue
			}
			m.valid |= l.valid
			l.overlayOnto(m.data[:], r.idx<<lineShift)
			m.link = m.link&^l.dirty | l.link
			m.user = m.user&^l.dirty | l.user
			m.dirty |= l.dirty
		}
	}
	return merged, merged.sorted(b)
}

// forEachRun calls fn for every maximal run of written bytes in lines,
// visiting idxs in order and joining runs that touch. With byKind, a run
// also ends where the kind of write changes. buf is scratch space; the
// data passed to fn is valid only during the call.
func forEachRun(refs []lineRef, byKind bool, buf []byte, fn func(off int64, kind entryKind, data []byte) error) ([]byte, error) {
	runOff, runKind := int64(-1), entryKind(0)
	buf = buf[:0]
	for _, r := range refs {
		l := r.l
		base := r.idx << lineShift
		for rest := l.dirty; rest != 0; {
			from := bits.TrailingZeros64(rest)
			to := from + bits.TrailingZeros64(^(rest >> from))
			kind := kindMeta
			if byKind {
				kind = l.kindAt(from)
				same := ^(l.link | l.user) // the bytes of kind's kind
				switch kind {
				case kindLink:
					same = l.link
				case kindUser:
					same = l.user &^ l.link
				}
				to = min(to, from+bits.TrailingZeros64(^(same>>from)))
			}
			off := base + int64(from)
			if len(buf) > 0 && (runOff+int64(len(buf)) != off || runKind != kind) {
				if err := fn(runOff, runKind, buf); err != nil {
					return buf, err
				}
				buf = buf[:0]
			}
			if len(buf) == 0 {
				runOff, runKind = off, kind
			}
			buf = append(buf, l.data[from:to]...)
			rest &^= spanMask(from, to)
		}
	}
	if len(buf) > 0 {
		if err := fn(runOff, runKind, buf); err != nil {
			return buf, err
		}
	}
	return buf, nil
}
