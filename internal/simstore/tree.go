package simstore

// The durable contents of a store are kept as a persistent radix tree of
// 4 KiB pages rather than as flat bytes, so that a snapshot at every sync
// point costs only the pages written since the previous one: an editor
// copies a node or page the first time it changes it and shares everything
// else with the snapshot it started from (path copying). Snapshots are never
// changed after their editor is dropped, so they may be read without a lock.

const (
	pageBytes   = 4096
	sectorBytes = 512
	fanoutBits  = 6
	fanout      = 1 << fanoutBits
)

// token marks the nodes and pages one editor owns and may change in place.
// It has a field because distinct zero-size allocations may share an address.
type token struct{ _ byte }

type page struct {
	owner *token
	data  [pageBytes]byte
}

// node is an interior node (kids used) or, at level 0, a leaf (pages used).
// One type for both wastes 512 bytes per 64 pages, which buys simpler code.
type node struct {
	owner *token
	kids  [fanout]*node
	pages [fanout]*page
}

// state is durable contents: a missing page reads as zeroes, and no byte at
// or beyond size is ever non-zero, so growing the size needs no writes.
type state struct {
	root *node
	size int64
}

// levelsFor returns how many tree levels address every page of maxSize bytes.
func levelsFor(maxSize int64) int {
	pages := (maxSize + pageBytes - 1) / pageBytes
	levels := 1
	for span := int64(fanout); span < pages; span *= fanout {
		levels++
	}
	return levels
}

// editor changes a state; what it changes is private to it until it is done.
type editor struct {
	levels int
	tok    *token
	st     state
}

func newEditor(levels int, from state) *editor {
	return &editor{levels: levels, tok: new(token), st: from}
}

func (e *editor) own(n *node) *node {
	if n == nil {
		return &node{owner: e.tok}
	}
	if n.owner == e.tok {
		return n
	}
	c := *n
	c.owner = e.tok
	return &c
}

// pageAt returns page idx, or nil when it reads as zeroes.
func pageAt(levels int, st state, idx int64) *page {
	n := st.root
	for level := levels - 1; level > 0 && n != nil; level-- {
		n = n.kids[(idx>>(level*fanoutBits))&(fanout-1)]
	}
	if n == nil {
		return nil
	}
	return n.pages[idx&(fanout-1)]
}

// ownPage returns page idx ready to be changed, copying it and its path if
// they are shared with a snapshot.
func (e *editor) ownPage(idx int64) *page {
	e.st.root = e.own(e.st.root)
	n := e.st.root
	for level := e.levels - 1; level > 0; level-- {
		slot := (idx >> (level * fanoutBits)) & (fanout - 1)
		n.kids[slot] = e.own(n.kids[slot])
		n = n.kids[slot]
	}
	slot := idx & (fanout - 1)
	p := n.pages[slot]
	switch {
	case p == nil:
		p = &page{owner: e.tok}
	case p.owner != e.tok:
		c := &page{owner: e.tok, data: p.data}
		p = c
	}
	n.pages[slot] = p
	return p
}

func (e *editor) write(off int64, data []byte) {
	if len(data) == 0 {
		return
	}
	end := off + int64(len(data))
	for len(data) > 0 {
		p := e.ownPage(off / pageBytes)
		n := copy(p.data[off%pageBytes:], data)
		data = data[n:]
		off += int64(n)
	}
	e.extend(end)
}

func (e *editor) extend(end int64) {
	if end > e.st.size {
		e.st.size = end
	}
}

func (e *editor) truncate(size int64) {
	if size < e.st.size {
		e.zero(size, e.st.size)
	}
	e.st.size = size
}

func (e *editor) punch(off, length int64) {
	e.zero(off, min(off+length, e.st.size))
}

// zero clears bytes [lo, hi): whole pages are dropped from the tree, and
// only the partial pages at either end are copied and cleared.
func (e *editor) zero(lo, hi int64) {
	if lo%pageBytes != 0 && lo < hi {
		end := min(hi, (lo/pageBytes+1)*pageBytes)
		e.zeroPart(lo, end)
		lo = end
	}
	if hi%pageBytes != 0 && lo < hi {
		start := max(lo, hi/pageBytes*pageBytes)
		e.zeroPart(start, hi)
		hi = start
	}
	if lo < hi {
		e.st.root = e.drop(e.st.root, e.levels-1, 0, lo/pageBytes, hi/pageBytes)
	}
}

// zeroPart clears [lo, hi) within one page, leaving a missing page missing.
func (e *editor) zeroPart(lo, hi int64) {
	if lo >= hi {
		return
	}
	idx := lo / pageBytes
	if pageAt(e.levels, e.st, idx) == nil {
		return
	}
	p := e.ownPage(idx)
	clear(p.data[lo-idx*pageBytes : hi-idx*pageBytes])
}

// drop removes pages [lo, hi) below n, which covers pages from base on, and
// returns what replaces n. Whole subtrees in the range go at once, so
// shrinking a large file costs per subtree, not per page.
func (e *editor) drop(n *node, level int, base, lo, hi int64) *node {
	if n == nil {
		return nil
	}
	span := int64(1) << ((level + 1) * fanoutBits)
	if lo <= base && base+span <= hi {
		return nil
	}
	n = e.own(n)
	childSpan := span / fanout
	for i := range fanout {
		childBase := base + int64(i)*childSpan
		if childBase+childSpan <= lo || childBase >= hi {
			continue
		}
		if level == 0 {
			n.pages[i] = nil
		} else {
			n.kids[i] = e.drop(n.kids[i], level-1, childBase, lo, hi)
		}
	}
	return n
}

// eachPage calls fn for every page present below n in index order.
func eachPage(n *node, level int, base int64, fn func(idx int64, p *page)) {
	if n == nil {
		return
	}
	childSpan := int64(1) << (level * fanoutBits)
	for i := range fanout {
		if level == 0 {
			if p := n.pages[i]; p != nil {
				fn(base+int64(i), p)
			}
		} else {
			eachPage(n.kids[i], level-1, base+int64(i)*childSpan, fn)
		}
	}
}
