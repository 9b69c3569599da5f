package pagealloc

// The on-disk format. Every offset, field and constant a device file holds
// is defined in this file and nowhere else.
//
// Do not change: on-disk format. Any change to a constant, a field order or
// an encoding below needs a new formatVersion.
//
// A device file, at byte offsets (all little-endian):
//
//	0        4 KiB    8 KiB                                                    heapOff
//	+--------+--------+-----------+-------------------+-----------+-----------+------------------
//	| super- | super- | root area | journal ring      | allocator | log       | heap: block 0 |
//	| block A| block B| (caller's)| (JournalSize)     | state     | regions   | block 1 | ...
//	+--------+--------+-----------+-------------------+-----------+-----------+------------------
//	                                                                           ^ aligned to MaxPageSize
//
// Superblock (one 4 KiB slot each; the newest copy whose checksum verifies
// wins, so a torn superblock write never loses the device):
//
//	off  size  field
//	  0     8  magic "PAGEALOC"
//	  8     4  format version
//	 12     4  flags (zero)
//	 16     8  sequence: which copy is newer; copy A holds even, B odd
//	 24     8  device id (random at Create)
//	 32     8  capacity: bytes of address space reserved (MaxSize)
//	 40     8  min page size
//	 48     8  max page size
//	 56    16  root area: offset, size
//	 72    16  journal ring: offset, size
//	 88    16  allocator state: offset, size
//	104    16  log regions: offset, size
//	120     8  heap offset
//	128     8  journal head: virtual ring offset of the oldest record not yet checkpointed
//	136     8  journal head sequence: the sequence number the record at the head must carry
//	144     8  transaction sequence: the last transaction the checkpoint covers
//	152   100  reserved (zero)
//	252     4  CRC-32C (Castagnoli) of bytes 0..251
//
// Journal ring: a byte ring addressed by a virtual offset that only grows
// (physical = ringOff + virtual mod ringSize). A record may wrap around the
// ring's end. Records start at 8-byte-aligned virtual offsets, so the first
// eight bytes of a record (magic, length) always sit in one 512-byte sector
// and are never torn apart.
//
//	record header (32 bytes)
//	  0  4  magic "PAJR"
//	  4  4  length of the whole record, header included, a multiple of 8
//	  8  8  sequence number (one more than the record before it)
//	 16  8  virtual offset of this record (a stale record from an earlier lap never matches)
//	 24  4  entry count
//	 28  4  CRC-32C of bytes 0..27 and of the record after the header
//	entries, each
//	  0  8  device offset of the bytes
//	  8  4  length
//	 12  2  kind: 1 metadata, 2 free-page link, 3 caller's journaled bytes
//	 14  2  reserved (zero)
//	 16  …  the bytes, padded with zeroes to a multiple of 8
//
// The first entry of a record is its checkpoint stamp: kind 1, 8 bytes at
// the allocator state's reserved word, holding the journal head of the
// newest superblock copy written when the record was. Replay does not
// apply it; recovery reads it (journal.stamps). A checkpoint moves the
// head to the tail, where the next record goes: so the first record after
// it is stamped with its own position, and the records the checkpoint
// covered with an earlier head. When the newest copy does not verify, a
// record past the other copy's head stamped with its own position shows
// that a checkpoint completed there (a crash during a checkpoint's write
// leaves no record after it), and recovery starts at it. A record whose
// first entry is not a stamp is replayed without this check.
//
// Allocator state (the allocator state region; zero on a new device):
//
//	  0  8  frontier: end of the heap handed to the allocator so far (0: heap offset)
//	  8  8  pending queue head (page offset, 0 if empty)
//	 16  8  pending queue tail
//	 24  8  allocated pages
//	 32  8  allocated bytes
//	 40  8  pending pages
//	 48  8  pending bytes
//	 56  8  reserved (zero): the journal's checkpoint stamps name it, and
//	        replay never writes them here (see Journal ring)
//	 64  …  per order k from 0: free list head (8), free pages (8)
//
// Heap blocks: the heap is cut into blocks of blockBytes (the larger of
// 1 GiB and twice MaxPageSize). Each block starts with its metadata: for
// each order k from 0 (MinPageSize) up, two bits per page of that order in
// the block, packed into little-endian 64-bit words, page i at bits 2i and
// 2i+1 of word i/32:
//
//	bit 2i    free:  on free list k, or (with the allocated bit) pending
//	bit 2i+1  allocated
//	00 not a page at this order   10 free   01 allocated   11 pending
//
// From version 2 the bitmaps are followed by the sub-page parent bits
// (see "Sub-pages"). The metadata rounded up to MinPageSize is never
// handed out; the rest of the block's first max page is cut into free
// pages when the frontier reaches it.
//
// Page headers, in the first bytes of a free or pending page (written as
// free-list links, see kindLink):
//
//	free page                       pending page
//	 0  8  previous on the list       0  8  sequence of the transaction that freed it
//	 8  8  next on the list           8  8  next in the pending queue
//	16  4  magic "FREE"              16  4  magic "PEND"
//	20  1  order                     20  1  order
//	21  3  zero                      21  3  zero
//
// Sub-pages (subpage.go), format version 2 and later. A version-1 device
// has no parent bits (below) and its class table is never read: Subpages
// refuses it with ErrVersion.
//
// Parent bits: in every heap block, right after the order bitmaps and
// inside the metadata that is never handed out, one bit per granule of
// max(4 KiB, MinPageSize) bytes of the block (granule i at bit i%64 of
// little-endian word i/64). The bit is set exactly while an allocated page
// starting at that granule is a sub-page parent. The caller can write
// neither the metadata nor a parent's header, so a page is a parent
// because the allocator says so, never because of the bytes it holds.
//
// Class table, in the allocator state region at subpageTableOff,
// subpageClassLimit entries of one 64-byte line each. The classes in use
// are entries 0..n-1 (slot size not zero); a class's index never changes
// once written:
//
//	  0  8  slot size in bytes (0: entry unused), a power of two
//	  8  8  partial list head: a parent with a free slot (0 if none)
//	 16  8  parents of the class
//	 24  8  slots allocated
//	 32  8  pending queue head: the parent queued longest (0 if none)
//	 40  8  pending queue tail
//	 48  8  slots pending
//	 56  8  the newest transaction that made one of the class's slots pending
//
// A sub-page parent is an allocated buddy page of 64 slots of one class's
// slot size (so slot size is at least 64 bytes and the low 6 bits of a
// slot's offset are free for its Addr's size). Slot 0 holds the header, one
// 64-byte line, so 63 slots are handed out and the header costs 1/64 of
// the parent:
//
//	  0  4  magic "PASP"
//	  4  1  class index
//	  5  1  log2 of the slot size
//	  6  1  flags: 1 queued on the pending queue; 2 freed into after it was
//	        queued (not covered at the head: requeue at the tail)
//	  7  1  zero
//	  8  8  allocated mask: bit i set while slot i is allocated; bit 0 (the header) always set
//	 16  8  pending mask: bit i set while slot i is freed but not reusable yet
//	 24  8  previous parent on the class's partial list (0: the head)
//	 32  8  next parent on the class's partial list
//	 40  8  next parent on the class's pending queue
//	 48  8  the newest transaction that made one of its slots pending (0: none)
//	 56  8  zero
//
// A slot is free, allocated or pending. A parent is on its class's partial
// list exactly while it has a free slot. It joins its class's pending
// queue (a FIFO; flag 1 while on it) when a slot of it becomes pending, and
// leaves it only at the head, so a queued parent may have no pending slot
// left (they were released while it was touched for another reason); a
// parent with a pending slot is always queued. A pending slot becomes free
// once a checkpoint covers the transaction in bytes 48..55; a parent with
// no allocated slot left goes back to the buddy allocator when it leaves
// the queue, and the buddy's pending header overwrites the magic. Every
// header, link and parent bit is journaled as kindMeta.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

const (
	// formatVersion is the version Create writes. Version 2 added the
	// sub-page parent bits to each block's metadata (see "Sub-pages") and
	// the carved log table; this package reads versions 1 and 2.
	formatVersion = 2

	superblockSlotBytes = 4096
	superblockBytes     = 256 // encoded length inside a slot
	superblockCRCOff    = superblockBytes - 4

	defaultRootBytes    = 4096
	defaultJournalBytes = 4 << 20
	minJournalBytes     = 64 << 10
	stateBytes          = 64 << 10

	// journalPosLimit bounds the journal's virtual offsets. Past 2^64
	// they would wrap to zero, and a ring whose size does not divide
	// 2^64 would put the records after the wrap at physical offsets that
	// do not follow those before it, over records not yet checkpointed.
	// No journal writes 2^62 bytes in its life.
	journalPosLimit = 1 << 62

	recordHeaderBytes = 32
	recordCRCOff      = 28
	entryHeaderBytes  = 16
	// stampEntryBytes is the checkpoint stamp every record begins with,
	// and recordOverheadBytes what a record holds beside its writes.
	stampEntryBytes     = entryHeaderBytes + 8
	recordOverheadBytes = recordHeaderBytes + stampEntryBytes

	// sectorBytes is the unit a power loss may tear writes at.
	sectorBytes = 512

	stateFrontierOff    = 0
	statePendingHeadOff = 8
	statePendingTailOff = 16
	stateAllocPagesOff  = 24
	stateAllocBytesOff  = 32
	statePendPagesOff   = 40
	statePendBytesOff   = 48
	stateReservedOff    = 56
	stateOrdersOff      = 64
	stateOrderBytes     = 16

	minBlockBytes = 1 << 30

	pageHeaderBytes = 24
	headerMagicOff  = 16
	headerOrderOff  = 20
)

// Page header magics.
const (
	freeMagic    = uint32('F') | uint32('R')<<8 | uint32('E')<<16 | uint32('E')<<24
	pendingMagic = uint32('P') | uint32('E')<<8 | uint32('N')<<16 | uint32('D')<<24
)

// pageState is a page's two bits at one order.
type pageState uint8

const (
	stateNone      pageState = 0b00
	stateFree      pageState = 0b01 // the free bit (bit 2i)
	stateAllocated pageState = 0b10 // the allocated bit (bit 2i+1)
	statePending   pageState = 0b11
)

// Sub-page parent bits, class table and parent header (subpage.go).
const (
	subpageFormatVersion = 2 // the first version with parent bits

	subpageTableOff   = 4096 // in the allocator state region; the buddy's state ends well before
	subpageClassLimit = 64
	subpageClassBytes = 64

	subpageClassSlotOff     = 0
	subpageClassHeadOff     = 8
	subpageClassParentsOff  = 16
	subpageClassUsedOff     = 24
	subpageClassPendHeadOff = 32
	subpageClassPendTailOff = 40
	subpageClassPendingOff  = 48
	subpageClassPendSeqOff  = 56

	subpageSlotsPerParent = 64 // slot 0 holds the header
	subpageMinSlotShift   = 6  // 64-byte slots: Addr keeps the size in the low 6 bits
	subpageMinParentShift = subpageMinSlotShift + 6

	subpageHeaderBytes = 64
	subpageClassOff    = 4
	subpageShiftOff    = 5
	subpageFlagsOff    = 6
	subpageMaskOff     = 8
	subpagePendOff     = 16
	subpagePrevOff     = 24
	subpageNextOff     = 32
	subpagePendNextOff = 40
	subpagePendSeqOff  = 48
	subpageSpareOff    = 56

	subpageFlagQueued  = 1
	subpageFlagRequeue = 2
)

// subpageMagic starts the header of a sub-page parent.
const subpageMagic = uint32('P') | uint32('A')<<8 | uint32('S')<<16 | uint32('P')<<24

var (
	superblockMagic = [8]byte{'P', 'A', 'G', 'E', 'A', 'L', 'O', 'C'}
	recordMagic     = uint32('P') | uint32('A')<<8 | uint32('J')<<16 | uint32('R')<<24
	castagnoli      = crc32.MakeTable(crc32.Castagnoli)
)

// entryKind says how replay treats a journaled write.
type entryKind uint16

const (
	// kindMeta is the library's own metadata: superblock-adjacent state,
	// bitmaps. Always replayed.
	kindMeta entryKind = 1
	// kindLink is a free-list link stored inside a free page. Replayed only
	// if that page is still free when replay ends: had it been allocated
	// since, its bytes belong to the new owner and must not be overwritten.
	kindLink entryKind = 2
	// kindUser is the caller's own journaled bytes (Txn.Write). Always
	// replayed.
	kindUser entryKind = 3
)

// region is a contiguous byte range of the device file.
type region struct{ off, size int64 }

func (r region) end() int64 { return r.off + r.size }

// within reports whether r lies in [0, limit), its end computed without
// overflow.
func (r region) within(limit int64) bool {
	return r.off >= 0 && r.size >= 0 && r.off <= limit && r.size <= limit-r.off
}

func (r region) contains(off, n int64) bool { return off >= r.off && n >= 0 && off+n <= r.end() }

func (r region) overlaps(off, n int64) bool { return off < r.end() && off+n > r.off }

// superblock is the decoded form of one superblock copy.
type superblock struct {
	version     uint32
	seq         uint64
	deviceID    uint64
	capacity    int64
	minPage     int64
	maxPage     int64
	root        region
	journal     region
	state       region
	logs        region
	heapOff     int64
	journalHead uint64
	headSeq     uint64
	txSeq       uint64
}

func (sb *superblock) encode(dst []byte) {
	clear(dst[:superblockBytes])
	copy(dst[0:8], superblockMagic[:])
	le := binary.LittleEndian
	le.PutUint32(dst[8:], sb.version)
	le.PutUint64(dst[16:], sb.seq)
	le.PutUint64(dst[24:], sb.deviceID)
	le.PutUint64(dst[32:], uint64(sb.capacity))
	le.PutUint64(dst[40:], uint64(sb.minPage))
	le.PutUint64(dst[48:], uint64(sb.maxPage))
	putRegion(dst[56:], sb.root)
	putRegion(dst[72:], sb.journal)
	putRegion(dst[88:], sb.state)
	putRegion(dst[104:], sb.logs)
	le.PutUint64(dst[120:], uint64(sb.heapOff))
	le.PutUint64(dst[128:], sb.journalHead)
	le.PutUint64(dst[136:], sb.headSeq)
	le.PutUint64(dst[144:], sb.txSeq)
	le.PutUint32(dst[superblockCRCOff:], crc32.Checksum(dst[:superblockCRCOff], castagnoli))
}

func putRegion(dst []byte, r region) {
	binary.LittleEndian.PutUint64(dst, uint64(r.off))
	binary.LittleEndian.PutUint64(dst[8:], uint64(r.size))
}

func getRegion(src []byte) region {
	return region{int64(binary.LittleEndian.Uint64(src)), int64(binary.LittleEndian.Uint64(src[8:]))}
}

// decodeSuperblock parses and validates the copy stored at slotOff. It
// returns ErrVersion for a newer format, with the version and sequence
// number decoded, and a *CorruptError for anything else it cannot accept;
// it never panics on any input.
func decodeSuperblock(src []byte, slotOff int64) (superblock, error) {
	var sb superblock
	what := "superblock"
	if len(src) < superblockBytes {
		return sb, corruptf(slotOff, what, "%d bytes, found %d", superblockBytes, len(src))
	}
	if [8]byte(src[0:8]) != superblockMagic {
		return sb, corruptf(slotOff, what, "magic %q", superblockMagic[:])
	}
	le := binary.LittleEndian
	if want, got := le.Uint32(src[superblockCRCOff:]), crc32.Checksum(src[:superblockCRCOff], castagnoli); want != got {
		return sb, corruptf(slotOff, what, "checksum %#08x, computed %#08x", want, got)
	}
	sb.version = le.Uint32(src[8:])
	sb.seq = le.Uint64(src[16:]) // for a newer version too: which copy is newer
	if sb.version > formatVersion {
		return sb, fmtVersionError(sb.version)
	}
	if sb.version == 0 {
		return sb, corruptf(slotOff, what, "format version >= 1")
	}
	if le.Uint32(src[12:]) != 0 || !allZero(src[152:superblockCRCOff]) {
		return sb, corruptf(slotOff, what, "zero flags and reserved bytes in version %d", sb.version)
	}
	sb.seq = le.Uint64(src[16:])
	sb.deviceID = le.Uint64(src[24:])
	sb.capacity = int64(le.Uint64(src[32:]))
	sb.minPage = int64(le.Uint64(src[40:]))
	sb.maxPage = int64(le.Uint64(src[48:]))
	sb.root = getRegion(src[56:])
	sb.journal = getRegion(src[72:])
	sb.state = getRegion(src[88:])
	sb.logs = getRegion(src[104:])
	sb.heapOff = int64(le.Uint64(src[120:]))
	sb.journalHead = le.Uint64(src[128:])
	sb.headSeq = le.Uint64(src[136:])
	sb.txSeq = le.Uint64(src[144:])
	if err := sb.validate(); err != "" {
		return sb, corruptf(slotOff, what, "%s", err)
	}
	return sb, nil
}

// validate reports the first impossible field, or "" when the geometry is
// one this package could have written.
func (sb *superblock) validate() string {
	switch {
	case !validPageSize(sb.minPage) || sb.minPage < minPageBytesFloor:
		return "a power-of-two min page size of at least 512"
	case !validPageSize(sb.maxPage) || sb.maxPage < sb.minPage || sb.maxPage > maxPageBytesCeiling:
		return "a power-of-two max page size between min page size and 1 GiB"
	// Each region within the capacity before the next is placed after
	// it: no end overflows.
	case sb.root.off != 2*superblockSlotBytes || sb.root.size <= 0 || sb.root.size%4096 != 0 || !sb.root.within(sb.capacity):
		return "the root area right after the superblocks, a multiple of 4 KiB within the capacity"
	case sb.journal.off != sb.root.end() || sb.journal.size < minJournalBytes || sb.journal.size%4096 != 0 || !sb.journal.within(sb.capacity):
		return "the journal ring after the root area, a multiple of 4 KiB of at least 64 KiB within the capacity"
	case sb.state.off != sb.journal.end() || sb.state.size != stateBytes || !sb.state.within(sb.capacity):
		return "the allocator state after the journal ring, within the capacity"
	case sb.logs.off != sb.state.end() || sb.logs.size < 0 || sb.logs.size%4096 != 0 || !sb.logs.within(sb.capacity):
		return "the log regions after the allocator state, within the capacity"
	case sb.heapOff < sb.logs.end() || sb.heapOff%sb.maxPage != 0 || sb.heapOff-sb.logs.end() >= sb.maxPage:
		return "the heap at the first max-page boundary after the log regions"
	case sb.capacity < sb.heapOff:
		return "a capacity at least as large as the headers"
	case sb.journalHead%8 != 0 || sb.journalHead >= journalPosLimit:
		return "an 8-byte-aligned journal head below 2^62"
	// Numbers that large wrap within a few commits (see maxTxSeq); a
	// copy numbered past 2^64 by a checkpoint would lose to the stale
	// one.
	case sb.txSeq >= maxTxSeq || sb.headSeq >= maxTxSeq || sb.seq >= maxTxSeq:
		return "copy, transaction and journal record sequence numbers below 2^62"
	}
	return ""
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func validPageSize(n int64) bool { return n > 0 && n&(n-1) == 0 }

// recordHeader is the decoded fixed part of a journal record.
type recordHeader struct {
	length uint32
	seq    uint64
	pos    uint64
	count  uint32
	crc    uint32
}

func putRecordHeader(dst []byte, h recordHeader) {
	le := binary.LittleEndian
	le.PutUint32(dst[0:], recordMagic)
	le.PutUint32(dst[4:], h.length)
	le.PutUint64(dst[8:], h.seq)
	le.PutUint64(dst[16:], h.pos)
	le.PutUint32(dst[24:], h.count)
	le.PutUint32(dst[28:], h.crc)
}

// parseRecordHeader decodes a header without verifying the checksum. ok is
// false when the bytes cannot be the start of a record of at most maxLength
// bytes: wrong magic, impossible length.
func parseRecordHeader(src []byte, maxLength uint32) (h recordHeader, ok bool) {
	if len(src) < recordHeaderBytes {
		return h, false
	}
	le := binary.LittleEndian
	if le.Uint32(src[0:]) != recordMagic {
		return h, false
	}
	h = recordHeader{
		length: le.Uint32(src[4:]),
		seq:    le.Uint64(src[8:]),
		pos:    le.Uint64(src[16:]),
		count:  le.Uint32(src[24:]),
		crc:    le.Uint32(src[28:]),
	}
	if h.length < recordHeaderBytes || h.length%8 != 0 || h.length > maxLength {
		return h, false
	}
	return h, true
}

// recordChecksum computes the checksum a record stores: over the header
// up to the checksum field, then over everything after the header.
func recordChecksum(rec []byte) uint32 {
	c := crc32.Update(0, castagnoli, rec[:recordCRCOff])
	return crc32.Update(c, castagnoli, rec[recordHeaderBytes:])
}

// journalEntry is one decoded write of a record. data aliases the record.
type journalEntry struct {
	off  int64
	kind entryKind
	data []byte
}

// decodeEntries parses the entries of a record whose checksum verified. A
// record with a good checksum and a bad body was written by a broken
// program or damaged in a way the checksum missed: corruption, never a
// torn tail.
func decodeEntries(rec []byte, count uint32, capacity int64, recOff int64) ([]journalEntry, error) {
	entries := make([]journalEntry, 0, int(min(int64(count), int64(len(rec)/entryHeaderBytes))))
	rest := rec[recordHeaderBytes:]
	le := binary.LittleEndian
	for i := uint32(0); i < count; i++ {
		if len(rest) < entryHeaderBytes {
			return nil, corruptf(recOff, "journal record", "%d entries, found %d", count, i)
		}
		off := int64(le.Uint64(rest[0:]))
		n := int64(le.Uint32(rest[8:]))
		kind := entryKind(le.Uint16(rest[12:]))
		padded := (n + 7) &^ 7
		switch {
		case kind < kindMeta || kind > kindUser:
			return nil, corruptf(recOff, "journal record", "entry %d of a known kind, found kind %d", i, kind)
		case le.Uint16(rest[14:]) != 0:
			return nil, corruptf(recOff, "journal record", "entry %d with zero reserved bytes, found %#04x", i, le.Uint16(rest[14:]))
		case off < 0 || n <= 0 || off > capacity-n:
			return nil, corruptf(recOff, "journal record", "entry %d inside the device, found [%d, +%d)", i, off, n)
		case int64(len(rest))-entryHeaderBytes < padded:
			return nil, corruptf(recOff, "journal record", "entry %d of %d bytes inside the record", i, n)
		}
		entries = append(entries, journalEntry{off: off, kind: kind, data: rest[entryHeaderBytes : entryHeaderBytes+n]})
		rest = rest[entryHeaderBytes+padded:]
	}
	if len(rest) != 0 {
		return nil, corruptf(recOff, "journal record", "no bytes after the last entry, found %d", len(rest))
	}
	return entries, nil
}

// appendEntry appends one encoded entry to a record being built.
func appendEntry(rec []byte, off int64, kind entryKind, data []byte) []byte {
	var h [entryHeaderBytes]byte
	binary.LittleEndian.PutUint64(h[0:], uint64(off))
	binary.LittleEndian.PutUint32(h[8:], uint32(len(data)))
	binary.LittleEndian.PutUint16(h[12:], uint16(kind))
	rec = append(rec, h[:]...)
	rec = append(rec, data...)
	var zero [8]byte
	return append(rec, zero[:(8-len(data)%8)%8]...)
}

// ---------------------------------------------------------------------------
// Log regions (logstructured.go). Do not change: on-disk format.
//
// The log regions start with the log table, then each ring in table order,
// each a multiple of 4 KiB; the table takes a whole number of 4 KiB pages.
//
//	log table header (64 bytes)
//	  0  8  magic "PALOGTAB"
//	  8  4  log count
//	 12  4  CRC-32C of bytes 0..11 and of bytes 0..47 of every slot: the
//	        parts fixed at Create (head and tail change through the journal)
//	 16 48  reserved (zero)
//	slot i (64 bytes) at 64 + 64*i, so head and tail share one journal line
//	  0 32  name, zero-padded, no zero byte inside
//	 32  8  ring offset in the device: right after the table or the ring before
//	 40  8  ring size, a positive multiple of 4 KiB
//	 48  8  head: virtual position of the oldest byte not reclaimed
//	 56  8  durable tail: virtual position past the newest durable entry
//
// A ring holds frames at 8-byte-aligned virtual positions (physical = ring
// offset + position mod ring size). A frame never wraps around the ring's
// end: an append that would is preceded by padding to the end. Where fewer
// than 24 bytes remain before the end, the padding is implicit (no header).
//
//	frame header (24 bytes)
//	  0  4  magic "PALE" (entry) or "PALP" (padding)
//	  4  4  entry: payload bytes; padding: frame bytes, header included
//	  8  8  virtual position of this frame (a stale frame from an earlier lap never matches)
//	 16  4  CRC-32C of the payload (zero for padding)
//	 20  4  CRC-32C of bytes 0..19
//	 24  …  entry: the payload, padded to a multiple of 8 (padding bytes are undefined)
//
// Only frames in [head, durable tail) are ever read. The durable tail is
// journaled only after every frame below it was synced.
//
// Carved log table (format version 2: Device.CreateLog, Device.DropLog), in
// the allocator state region at carvedLogTableOff, right after the sub-page
// class table: carvedLogLimit slots laid out as log table slots above, so
// head and tail sit at the same offsets. A slot whose bytes are all zero is
// unused; a used one names a log whose ring is one allocated heap page:
//
//	  0 32  name, zero-padded, no zero byte inside
//	 32  8  ring offset: the page's offset, aligned to its size
//	 40  8  ring size: the page's size, a power of two from min to max page size
//	 48  8  head
//	 56  8  durable tail
//
// A slot changes only through the journal, in the transaction that
// allocates its page (CreateLog) or frees it (DropLog, which zeroes the
// slot), so that a crash finds the page and the slot both or neither. The
// table has no checksum of its own: the journal's records carry one. A
// version 1 device holds zeroes there (no carved logs) and is never given
// any, so a package that reads only version 1 never sees one.

const (
	logTableHeaderBytes = 64
	logTableCountOff    = 8
	logTableCRCOff      = 12
	logSlotBytes        = 64
	logSlotFixedBytes   = 48 // name, ring offset, ring size: covered by the table CRC
	logNameMaxBytes     = 32
	logSlotRingOff      = 32
	logSlotSizeOff      = 40
	logSlotHeadOff      = 48
	logSlotTailOff      = 56

	carvedLogTableOff = subpageTableOff + subpageClassLimit*subpageClassBytes // in the allocator state region
	carvedLogLimit    = 64
	carvedLogsVersion = 2 // the first format version with the carved log table

	logFrameHeaderBytes = 24
	logFrameCRCOff      = 20
	// A padding frame stores its whole length in the 32-bit field, and a
	// cancelled entry becomes one: frames stay 8-aligned and at most
	// 1<<32 - 8 bytes, header included.
	logMaxPayloadBytes = 1<<32 - 8 - logFrameHeaderBytes
)

var (
	logTableMagic   = [8]byte{'P', 'A', 'L', 'O', 'G', 'T', 'A', 'B'}
	logEntryMagic   = uint32('P') | uint32('A')<<8 | uint32('L')<<16 | uint32('E')<<24
	logPaddingMagic = uint32('P') | uint32('A')<<8 | uint32('L')<<16 | uint32('P')<<24
)

// logTableBytes is the size of the table of count logs: whole 4 KiB pages,
// so the rings after it stay 4 KiB-aligned.
func logTableBytes(count int) int64 {
	return alignUp(logTableHeaderBytes+int64(count)*logSlotBytes, 4096)
}

// logSlot is the decoded form of one log table slot.
type logSlot struct {
	name       string
	ring       region
	head, tail uint64
}

// liveEnd returns the end of the device bytes that the entries between
// s's head and tail lie in: the ring's end if they wrap around it, 0 if
// there are none.
func (s *logSlot) liveEnd() int64 {
	live := int64(s.tail - s.head)
	if live == 0 {
		return 0
	}
	return min(s.ring.off+int64(s.head%uint64(s.ring.size))+live, s.ring.end())
}

// encodeLogTable encodes the table of slots into dst, which holds at least
// logTableBytes(len(slots)) bytes.
func encodeLogTable(dst []byte, slots []logSlot) {
	n := logTableHeaderBytes + len(slots)*logSlotBytes
	clear(dst[:n])
	le := binary.LittleEndian
	copy(dst[0:8], logTableMagic[:])
	le.PutUint32(dst[logTableCountOff:], uint32(len(slots)))
	for i, s := range slots {
		encodeLogSlot(dst[logTableHeaderBytes+i*logSlotBytes:], s)
	}
	le.PutUint32(dst[logTableCRCOff:], logTableChecksum(dst[:n]))
}

// encodeLogSlot encodes s into the logSlotBytes of dst; a zero s encodes
// an unused carved slot.
func encodeLogSlot(dst []byte, s logSlot) {
	clear(dst[:logSlotBytes])
	copy(dst[:logNameMaxBytes], s.name)
	putRegion(dst[logSlotRingOff:], s.ring)
	binary.LittleEndian.PutUint64(dst[logSlotHeadOff:], s.head)
	binary.LittleEndian.PutUint64(dst[logSlotTailOff:], s.tail)
}

// decodeLogSlot decodes the slot in the logSlotBytes of b. nameOK is false
// when the name is empty or not zero-padded.
func decodeLogSlot(b []byte) (s logSlot, nameOK bool) {
	name := b[:logNameMaxBytes]
	nameLen := 0
	for nameLen < len(name) && name[nameLen] != 0 {
		nameLen++
	}
	le := binary.LittleEndian
	s = logSlot{
		name: string(name[:nameLen]),
		ring: getRegion(b[logSlotRingOff:]),
		head: le.Uint64(b[logSlotHeadOff:]),
		tail: le.Uint64(b[logSlotTailOff:]),
	}
	return s, nameLen > 0 && allZero(name[nameLen:])
}

// positionsProblem reports what is wrong with s's head and tail, or "".
func (s logSlot) positionsProblem() string {
	if s.head > s.tail || s.tail-s.head > uint64(s.ring.size) || s.head%8 != 0 || s.tail%8 != 0 {
		return fmt.Sprintf("head <= tail within one ring, 8-byte aligned, found head %d tail %d", s.head, s.tail)
	}
	if s.tail > logPosLimit {
		return fmt.Sprintf("a tail at most %d, found %d", uint64(logPosLimit), s.tail)
	}
	return ""
}

// decodeCarvedLogTable parses the carved log table in src (carvedLogLimit
// slots) of a device of geometry sb, stored at off. used[i] is false for
// an unused slot. The rings must be pages this geometry could hand out;
// whether the allocator has them allocated is Device.Check's to say. It
// never panics on any input.
func decodeCarvedLogTable(src []byte, sb *superblock, off int64) (slots []logSlot, used []bool, err error) {
	what := "carved log table"
	if len(src) < carvedLogLimit*logSlotBytes {
		return nil, nil, corruptf(off, what, "%d bytes, found %d", carvedLogLimit*logSlotBytes, len(src))
	}
	slots, used = make([]logSlot, carvedLogLimit), make([]bool, carvedLogLimit)
	for i := range slots {
		at := off + int64(i)*logSlotBytes
		b := src[i*logSlotBytes : (i+1)*logSlotBytes]
		if allZero(b) {
			continue
		}
		s, nameOK := decodeLogSlot(b)
		r := s.ring
		switch {
		case !nameOK:
			return nil, nil, corruptf(at, what, "slot %d all zero or holding a zero-padded name", i)
		case !validPageSize(r.size) || r.size < sb.minPage || r.size > sb.maxPage || r.off < sb.heapOff || r.off%r.size != 0 || r.off > sb.capacity-r.size:
			return nil, nil, corruptf(at, what, "slot %d ring on a heap page of %d to %d bytes, found [%d, +%d)", i, sb.minPage, sb.maxPage, r.off, r.size)
		case s.positionsProblem() != "":
			return nil, nil, corruptf(at, what, "slot %d %s", i, s.positionsProblem())
		}
		for j := range i {
			if used[j] && slots[j].name == s.name {
				return nil, nil, corruptf(at, what, "unique names, found %q twice", s.name)
			}
		}
		slots[i], used[i] = s, true
	}
	return slots, used, nil
}

func logTableChecksum(table []byte) uint32 {
	c := crc32.Update(0, castagnoli, table[:logTableCRCOff])
	for off := logTableHeaderBytes; off+logSlotBytes <= len(table); off += logSlotBytes {
		c = crc32.Update(c, castagnoli, table[off:off+logSlotFixedBytes])
	}
	return c
}

// ringFollows reports whether ring starts at next, where the table or the
// ring before it ends, and ends inside the log regions logs, as Create
// lays rings out.
func ringFollows(ring region, next int64, logs region) bool {
	return ring.off == next && ring.size > 0 && ring.size <= logs.end()-next
}

// decodeLogTable parses and validates the table at the start of the log
// regions logs; src holds the header and every slot. The rings must be
// laid out as Create lays them out, and head and tail must be positions a
// log could have reached. It never panics on any input.
func decodeLogTable(src []byte, logs region) ([]logSlot, error) {
	what := "log table"
	if len(src) < logTableHeaderBytes {
		return nil, corruptf(logs.off, what, "%d bytes, found %d", logTableHeaderBytes, len(src))
	}
	if [8]byte(src[0:8]) != logTableMagic {
		return nil, corruptf(logs.off, what, "magic %q", logTableMagic[:])
	}
	le := binary.LittleEndian
	count := int64(le.Uint32(src[logTableCountOff:]))
	n := logTableHeaderBytes + count*logSlotBytes
	if count == 0 || n > int64(len(src)) || logTableBytes(int(count)) > logs.size {
		return nil, corruptf(logs.off, what, "1 to %d logs, found %d", (min(int64(len(src)), logs.size)-logTableHeaderBytes)/logSlotBytes, count)
	}
	table := src[:n]
	if want, got := le.Uint32(table[logTableCRCOff:]), logTableChecksum(table); want != got {
		return nil, corruptf(logs.off, what, "checksum %#08x, computed %#08x", want, got)
	}
	if !allZero(table[logTableCRCOff+4 : logTableHeaderBytes]) {
		return nil, corruptf(logs.off, what, "zero reserved bytes")
	}
	slots := make([]logSlot, count)
	next := logs.off + logTableBytes(int(count))
	for i := range slots {
		at := logTableHeaderBytes + int64(i)*logSlotBytes
		s, nameOK := decodeLogSlot(table[at : at+logSlotBytes])
		switch {
		case !nameOK:
			return nil, corruptf(logs.off+at, what, "slot %d to hold a zero-padded name", i)
		case !ringFollows(s.ring, next, logs) || s.ring.size%4096 != 0:
			return nil, corruptf(logs.off+at, what, "slot %d ring at %d, a multiple of 4 KiB inside the log regions, found [%d, +%d)", i, next, s.ring.off, s.ring.size)
		case s.positionsProblem() != "":
			return nil, corruptf(logs.off+at, what, "slot %d %s", i, s.positionsProblem())
		}
		for _, t := range slots[:i] {
			if t.name == s.name {
				return nil, corruptf(logs.off+at, what, "unique names, found %q twice", s.name)
			}
		}
		slots[i] = s
		next = s.ring.end()
	}
	return slots, nil
}

// logFrame is the decoded header of one frame.
type logFrame struct {
	padding      bool
	pos          uint64
	frameBytes   int64  // the whole frame, header included
	payloadBytes uint32 // entries only
	payloadCRC   uint32 // entries only
}

// logFrameBytes is the size of the frame of an entry of payload bytes.
func logFrameBytes(payload int64) int64 { return logFrameHeaderBytes + (payload+7)&^7 }

// putLogFrame encodes f's header into dst.
func putLogFrame(dst []byte, f logFrame) {
	le := binary.LittleEndian
	if f.padding {
		le.PutUint32(dst[0:], logPaddingMagic)
		le.PutUint32(dst[4:], uint32(f.frameBytes))
		le.PutUint32(dst[16:], 0)
	} else {
		le.PutUint32(dst[0:], logEntryMagic)
		le.PutUint32(dst[4:], f.payloadBytes)
		le.PutUint32(dst[16:], f.payloadCRC)
	}
	le.PutUint64(dst[8:], f.pos)
	le.PutUint32(dst[logFrameCRCOff:], crc32.Checksum(dst[:logFrameCRCOff], castagnoli))
}

// isLogFrameHeader reports whether src starts with a frame header, of an
// entry or a padding, whose checksum checks, whatever position it names.
func isLogFrameHeader(src []byte) bool {
	le := binary.LittleEndian
	if magic := le.Uint32(src); magic != logEntryMagic && magic != logPaddingMagic {
		return false
	}
	return le.Uint32(src[logFrameCRCOff:]) == crc32.Checksum(src[:logFrameCRCOff], castagnoli)
}

// errNoFrame is matched, beside ErrCorrupt, by the error parseLogFrame
// returns when the bytes are no frame of the position asked for at all.
var errNoFrame = errors.New("no frame of that position here")

// parseLogFrame decodes the header in src of the frame expected at virtual
// position pos, with roomBytes left before the ring's end; at is its device
// offset, for errors. With fewer than 24 bytes of room the frame is the
// implicit padding to the end and src is not read. The payload checksum is
// not checked here. It never panics on any input.
func parseLogFrame(src []byte, pos uint64, roomBytes int64, at int64) (logFrame, error) {
	what := "log frame"
	if roomBytes < logFrameHeaderBytes {
		return logFrame{padding: true, pos: pos, frameBytes: roomBytes}, nil
	}
	if len(src) < logFrameHeaderBytes {
		return logFrame{}, corruptf(at, what, "%d header bytes, found %d", logFrameHeaderBytes, len(src))
	}
	le := binary.LittleEndian
	magic := le.Uint32(src[0:])
	if magic != logEntryMagic && magic != logPaddingMagic {
		return logFrame{}, fmt.Errorf("%w (%w)", corruptf(at, what, "magic \"PALE\" or \"PALP\" at position %d", pos), errNoFrame)
	}
	if want, got := le.Uint32(src[logFrameCRCOff:]), crc32.Checksum(src[:logFrameCRCOff], castagnoli); want != got {
		return logFrame{}, corruptf(at, what, "header checksum %#08x, computed %#08x", want, got)
	}
	f := logFrame{padding: magic == logPaddingMagic, pos: le.Uint64(src[8:])}
	if f.pos != pos {
		return logFrame{}, fmt.Errorf("%w (%w)", corruptf(at, what, "position %d, found %d", pos, f.pos), errNoFrame)
	}
	length := int64(le.Uint32(src[4:]))
	if f.padding {
		f.frameBytes = length
		if length < logFrameHeaderBytes || length%8 != 0 || length > roomBytes || le.Uint32(src[16:]) != 0 {
			return logFrame{}, corruptf(at, what, "padding of 24 to %d bytes, a multiple of 8, found %d", roomBytes, length)
		}
		return f, nil
	}
	f.payloadBytes = uint32(length)
	f.payloadCRC = le.Uint32(src[16:])
	f.frameBytes = logFrameBytes(length)
	if length == 0 || f.frameBytes > roomBytes {
		return logFrame{}, corruptf(at, what, "an entry of 1 to %d payload bytes, found %d", roomBytes-logFrameHeaderBytes, length)
	}
	return f, nil
}
