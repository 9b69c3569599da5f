package pagealloc

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestReadAtSeesWholeCommits rewrites a page in one transaction after
// another, each filling it with one byte value, while a reader reads the
// whole page with ReadAt: every read must show one transaction's page,
// never a mix of two (the journal writes each commit home while readers
// copy from the mapping).
func TestReadAtSeesWholeCommits(t *testing.T) {
	d, _ := createTestDevice(t, testOptions())
	a := allocPages(t, d, 1, 4096)[0]
	commits := 20000
	if testing.Short() {
		commits = 2000
	}
	var stop atomic.Bool
	var reads, torn atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p := make([]byte, 4096)
		for !stop.Load() {
			if _, err := d.ReadAt(p, a.Offset()); err != nil {
				t.Error(err)
				return
			}
			reads.Add(1)
			for _, b := range p {
				if b != p[0] {
					if torn.Add(1) == 1 {
						seen := map[byte]int{}
						for _, c := range p {
							seen[c]++
						}
						t.Errorf("ReadAt mixed commits: byte value -> count %v", seen)
					}
					break
				}
			}
		}
	}()
	buf := make([]byte, 4096)
	for i := 1; i <= commits; i++ {
		for j := range buf {
			buf[j] = byte(i)
		}
		if err := d.Update(func(tx *Txn) error { return tx.Write(a.Offset(), buf) }); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d commits, %d reads, %d mixed", commits, reads.Load(), torn.Load())
}
