package pagealloc_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pagealloc/pagealloc"
)

// A storage engine allocates a page and points its root at it in one
// transaction: after a crash, both happened or neither did.
func ExampleDevice_Update() {
	dir, err := os.MkdirTemp("", "pagealloc-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "engine.dev")
	d, err := pagealloc.Create(path, nil)
	if err != nil {
		panic(err)
	}
	rootOff, _ := d.Root() // a few bytes for the engine's own root pointers
	var page pagealloc.Addr
	err = d.Update(func(tx *pagealloc.Txn) (err error) {
		page, err = tx.Alloc(10_000) // rounds up to a 16 KiB page
		if err != nil {
			return err
		}
		var ptr [8]byte
		binary.LittleEndian.PutUint64(ptr[:], uint64(page)) // offset and size in one word
		return tx.Write(rootOff, ptr[:])                    // journaled with the allocation
	})
	if err != nil {
		panic(err)
	}
	// Bulk data goes in place, outside the journal.
	if _, err := d.WriteAt([]byte("hello, page"), page.Offset()); err != nil {
		panic(err)
	}
	if err := d.Close(); err != nil { // Close syncs; so would the next Commit
		panic(err)
	}

	d, err = pagealloc.Open(path, nil)
	if err != nil {
		panic(err)
	}
	defer d.Close()
	var ptr [8]byte
	if _, err := d.ReadAt(ptr[:], rootOff); err != nil {
		panic(err)
	}
	found := pagealloc.Addr(binary.LittleEndian.Uint64(ptr[:]))
	data := make([]byte, 11)
	if _, err := d.ReadAt(data, found.Offset()); err != nil {
		panic(err)
	}
	fmt.Println(found.Size(), found == page, string(data))
	fmt.Println(d.Stats().AllocatedPages, d.Check())
	// Output:
	// 16384 true hello, page
	// 1 <nil>
}

// An append is reserved without I/O, written by the owner and committed:
// Commit returns once the entry is durable.
func ExampleLog_Append() {
	dir, err := os.MkdirTemp("", "pagealloc-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	d, err := pagealloc.Create(filepath.Join(dir, "values.dev"), &pagealloc.Options{
		LogRegions: []pagealloc.LogRegion{{Name: "values", Size: 1 << 20}},
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	log, err := d.Log("values")
	if err != nil {
		panic(err)
	}
	for _, value := range []string{"alpha", "beta", "gamma"} {
		r, err := log.Append(len(value))
		if err != nil {
			panic(err)
		}
		if err := log.Write(r, []byte(value)); err != nil {
			panic(err)
		}
		if err := log.Commit(r); err != nil {
			panic(err)
		}
	}
	for e, err := range log.Entries(0) {
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s at position %d\n", e.Data, e.Pos)
	}
	st := log.Stats()
	fmt.Println(st.UsedBytes, "of", st.SizeBytes, "bytes used")
	// Output:
	// alpha at position 0
	// beta at position 32
	// gamma at position 64
	// 96 of 1048576 bytes used
}

// Small objects take slots of a size class: 63 slots of 256 bytes share
// one 16 KiB parent page, allocated and freed in O(1).
func ExampleSubpages_Alloc() {
	dir, err := os.MkdirTemp("", "pagealloc-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	d, err := pagealloc.Create(filepath.Join(dir, "objects.dev"), nil)
	if err != nil {
		panic(err)
	}
	defer d.Close()
	class, err := d.Subpages(256) // created once, then found again after reopen
	if err != nil {
		panic(err)
	}
	var slots []pagealloc.Addr
	err = d.Update(func(tx *pagealloc.Txn) error {
		for range 3 {
			a, err := class.Alloc(tx)
			if err != nil {
				return err
			}
			slots = append(slots, a)
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	// A slot is an Addr like a page: offset and size in one word.
	fmt.Println(slots[0].Size(), slots[1].Offset()-slots[0].Offset(), slots[2].Offset()-slots[0].Offset())
	if err := d.Update(func(tx *pagealloc.Txn) error { return class.Free(tx, slots[1]) }); err != nil {
		panic(err)
	}
	st := class.Stats()
	// The freed slot waits for a checkpoint before it is handed out again.
	fmt.Printf("%d parent of %d bytes, %d slots used, %d pending, %d free\n", st.Parents, st.ParentBytes, st.SlotsUsed, st.SlotsPending, st.SlotsFree)
	// Output:
	// 256 256 512
	// 1 parent of 16384 bytes, 2 slots used, 1 pending, 60 free
}

// Get hands out aligned buffers with stable addresses, waiting while none
// is free; a context bounds the wait.
func ExamplePool_Get() {
	pool, err := pagealloc.NewPool(2, 4096) // two 4 KiB buffers, 4096-aligned
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	a, err := pool.Get(context.Background())
	if err != nil {
		panic(err)
	}
	b, err := pool.Get(context.Background())
	if err != nil {
		panic(err)
	}
	copy(a.Bytes(), "page image")
	fmt.Println(len(a.Bytes()), string(a.Bytes()[:10]), pool.Stats().InUse)

	// The pool is empty: Get waits until a Put or the context's end.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err = pool.Get(ctx)
	fmt.Println(errors.Is(err, context.DeadlineExceeded))

	go func() { pool.Put(b) }() // another goroutine returns one
	c, err := pool.Get(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Index() == b.Index())
	for _, buf := range []*pagealloc.Buffer{a, c} {
		if err := pool.Put(buf); err != nil {
			panic(err)
		}
	}
	fmt.Println(pool.Stats().InUse)
	// Output:
	// 4096 page image 2
	// true
	// true
	// 0
}
