package pagealloc

import (
	"fmt"

	"github.com/pagealloc/pagealloc/internal/storage"
)

// Placeholder until the log-structured region lands: devices have no log
// regions, and asking for one is an error.

// logSet is the device's log regions.
type logSet struct{}

// logRegionsBytes returns the bytes the log regions of a new device take.
func logRegionsBytes(regions []LogRegion) (int64, error) {
	if len(regions) != 0 {
		return 0, fmt.Errorf("%w: log regions are not supported yet", ErrInvalidArgument)
	}
	return 0, nil
}

// initLogRegions writes the initial state of the log regions of a new
// device.
func initLogRegions(store storage.Storage, logs region, regions []LogRegion) error { return nil }

// openLogs loads the log regions of an opened device.
func (d *Device) openLogs() error { return nil }

// closeLogs stops the log regions' background work before the device
// closes.
func (d *Device) closeLogs() {}

// logWritable reports whether the caller may write n bytes at off inside
// the log regions.
func (d *Device) logWritable(off, n int64, journaled bool) error {
	return fmt.Errorf("%w: [%d, +%d) is not inside a log reservation", ErrProtected, off, n)
}
