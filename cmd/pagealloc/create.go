package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pagealloc/pagealloc"
)

// logFlag collects repeated -log name=size flags.
type logFlag []pagealloc.LogRegion

// String lists the regions as name=size pairs.
func (l *logFlag) String() string {
	var parts []string
	for _, r := range *l {
		parts = append(parts, r.Name+"="+formatBytes(r.Size))
	}
	return strings.Join(parts, ",")
}

// Set adds the region name=size.
func (l *logFlag) Set(text string) error {
	name, size, ok := strings.Cut(text, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q is not name=size", text)
	}
	n, err := parseBytes(size)
	if err != nil {
		return err
	}
	*l = append(*l, pagealloc.LogRegion{Name: name, Size: n})
	return nil
}

// runCreate creates a device file with the geometry the flags give, then
// prints its layout. Zero flags take the library's defaults.
func runCreate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("create", "FILE", stderr)
	var maxSize, minPage, maxPage, journal, root sizeValue
	var logs logFlag
	fs.Var(&maxSize, "max-size", "the most `bytes` the file may ever hold, reserved as address space (default 1TiB; 1GiB on 32-bit)")
	fs.Var(&minPage, "min-page", "smallest page in `bytes`, a power of two >= 512 (default 4KiB)")
	fs.Var(&maxPage, "max-page", "largest page in `bytes`, a power of two <= 1GiB (default 16MiB)")
	fs.Var(&journal, "journal", "journal ring size in `bytes`, a multiple of 4KiB >= 64KiB (default 4MiB)")
	fs.Var(&root, "root", "caller's root area size in `bytes`, a multiple of 4KiB (default 4KiB)")
	fs.Var(&logs, "log", "add a log-structured region `name=size` (size a multiple of 4KiB); repeatable")
	path, err := parseFileArgs(fs, args)
	if err != nil {
		return err
	}
	d, err := pagealloc.Create(path, &pagealloc.Options{
		MaxSize:     int64(maxSize),
		MinPageSize: int64(minPage),
		MaxPageSize: int64(maxPage),
		JournalSize: int64(journal),
		RootSize:    int64(root),
		LogRegions:  logs,
	})
	if errors.Is(err, pagealloc.ErrInvalidArgument) || errors.Is(err, pagealloc.ErrTooLarge) {
		// Every argument Create can refuse came from a flag, and so did
		// every size too large for the platform or its address space.
		return fmt.Errorf("%w: %s", errUsage, withoutLibraryName(err))
	}
	if err != nil {
		return err
	}
	in, err := d.Inspect()
	if err != nil {
		d.Close()
		return err
	}
	if err := d.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created %s\n", path)
	return printLayout(stdout, in)
}
