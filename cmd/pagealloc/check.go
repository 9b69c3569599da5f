package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/pagealloc/pagealloc"
)

// runCheck checks a device: the superblocks and journal (by opening it),
// every allocator and sub-page invariant (Device.Check), and every log
// entry between head and durable tail. It prints each violation, naming
// its offset, or "OK"; a corrupt device makes it fail with exit status 1.
// States a crash legally leaves (one torn superblock copy, a torn last
// journal record) are printed as notes and are not violations.
func runCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", "FILE", stderr)
	maxSize := maxSizeFlag(fs)
	path, err := parseFileArgs(fs, args)
	if err != nil {
		return err
	}
	violations, err := checkDevice(path, int64(*maxSize), stdout)
	if err != nil {
		return err
	}
	if len(violations) == 0 {
		_, err := fmt.Fprintln(stdout, "OK")
		return err // the verdict did not reach its reader
	}
	for _, v := range violations {
		fmt.Fprintln(stdout, v)
	}
	fmt.Fprintf(stderr, "pagealloc check: %s: %d violation%s\n", path, len(violations), plural(len(violations)))
	return errReported
}

// checkDevice returns every violation found in the device at path, after
// printing notes on what a crash legally left. An error is returned only
// when the device cannot be checked at all (a missing file, a newer format).
func checkDevice(path string, maxSize int64, notes io.Writer) ([]error, error) {
	d, err := openReadOnly(path, maxSize)
	if errors.Is(err, pagealloc.ErrCorrupt) {
		// Open refuses a device whose superblocks or journal are corrupt;
		// its error names each offset.
		return flatten(err), nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	in, err := d.Inspect()
	if err != nil {
		return nil, err
	}
	var violations []error
	for i, sb := range in.Superblocks {
		switch {
		case sb.Problem == "":
		case in.JournalState.LostHead != 0:
			// Damage, not a crash: the journal holds records written
			// after this copy's checkpoint completed.
			violations = append(violations, fmt.Errorf("superblock %c does not verify (%s), yet journal records show that its checkpoint, with the head at %d, completed: the copy was damaged since; Open recovers from those records, and opening the device for writing writes the copy again", 'A'+i, sb.Problem, in.JournalState.LostHead))
		default:
			fmt.Fprintf(notes, "note: superblock %c does not verify (%s); a checkpoint cut short by a crash leaves this, and the other copy is in use\n", 'A'+i, sb.Problem)
		}
	}
	if js := in.JournalState; js.Torn {
		fmt.Fprintf(notes, "note: the journal record at offset %d is torn; a crash during its write leaves this, and its commit never returned\n", js.TailOffset)
	}
	violations = append(violations, flatten(d.Check())...)
	for _, info := range in.Logs {
		l, err := d.Log(info.Name)
		if err != nil {
			return nil, err
		}
		for _, err := range l.Entries(0) {
			if err != nil {
				violations = append(violations, fmt.Errorf("log %q: %w", info.Name, err))
			}
		}
	}
	return violations, nil
}

// flatten lists the violations joined in err (as Check and Open join
// them), or nothing for nil. An error that wraps several causes for
// another reason, such as a corruption together with its kind, stays one.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range joined.Unwrap() {
		if !errors.Is(e, pagealloc.ErrCorrupt) {
			return []error{err}
		}
		out = append(out, flatten(e)...)
	}
	return out
}
