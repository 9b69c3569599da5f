package storage

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReserveErrors checks what each errno fallocate may return means to
// a caller of Reserve.
func TestReserveErrors(t *testing.T) {
	for _, tc := range []struct {
		errno                error
		noSpace, unsupported bool
	}{
		{unix.ENOSPC, true, false},
		{unix.EDQUOT, true, false},
		{unix.EOPNOTSUPP, false, true},
		{unix.ENOSYS, false, true},
		{unix.EIO, false, false},
		{unix.EBADF, false, false},
	} {
		err := reserveError("f", tc.errno)
		if errors.Is(err, ErrNoSpace) != tc.noSpace || errors.Is(err, errors.ErrUnsupported) != tc.unsupported || !errors.Is(err, tc.errno) {
			t.Errorf("%v: %v matches ErrNoSpace %v, ErrUnsupported %v, itself %v; want %v, %v, true",
				tc.errno, err, errors.Is(err, ErrNoSpace), errors.Is(err, errors.ErrUnsupported), errors.Is(err, tc.errno), tc.noSpace, tc.unsupported)
		}
	}
	if err := reserveError("f", nil); err != nil {
		t.Errorf("no errno: %v", err)
	}
}

// TestReserve reserves a range of a real file: the size stays, the blocks
// are there.
func TestReserve(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	f, err := CreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	if err := f.Reserve(256<<10, 512<<10); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if size, held := st.Size, st.Blocks*512; size != 1<<20 || held < 512<<10 {
		t.Errorf("after reserving 512 KiB of a 1 MiB file: size %d, %d bytes held", size, held)
	}
}

// TestRetryEINTR checks that fdatasync and fallocate are called again
// after a signal interrupts them, and only then.
func TestRetryEINTR(t *testing.T) {
	for _, tc := range []struct {
		results []error // what each call returns
		want    error
	}{
		{[]error{nil}, nil},
		{[]error{unix.EINTR, unix.EINTR, nil}, nil},
		{[]error{unix.EINTR, unix.ENOSPC, nil}, unix.ENOSPC},
		{[]error{unix.EIO, nil}, unix.EIO},
	} {
		calls := 0
		err := retryEINTR(func() error { calls++; return tc.results[calls-1] })
		if wantCalls := slices.IndexFunc(tc.results, func(e error) bool { return e != unix.EINTR }) + 1; err != tc.want || calls != wantCalls {
			t.Errorf("%v: returned %v after %d calls, want %v after %d", tc.results, err, calls, tc.want, wantCalls)
		}
	}
}
