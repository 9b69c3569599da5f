// Command pagealloc creates, inspects and exercises pagealloc device files.
//
// Usage:
//
//	pagealloc bench [flags]            run a mixed workload on a fresh device and print a table
//	pagealloc create [flags] FILE      create a device file with the given geometry
//	pagealloc stats [flags] FILE       print usage: pages, bytes, free lists, sub-pages, logs
//	pagealloc check [flags] FILE       check every invariant; exit status 1 on corruption
//	pagealloc dump [flags] FILE        print superblocks, journal, free lists, logs, sub-pages
//	pagealloc map [flags] FILE         draw the heap as a PNG, one pixel per page-group
//
// Every verb but bench and create opens the device read-only (a journal
// left by a crash is replayed in memory, not on disk), so inspecting a
// device never changes its file. Run "pagealloc VERB -h" for the flags of
// a verb. Sizes take a binary suffix: 4096, 64K, 16MiB, 1G, 2TiB.
//
// Exit status: 0 on success, 1 on failure or (check) corruption, 2 on a
// usage error.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/pagealloc/pagealloc"
)

// verb is one subcommand: it parses its own flags from args, writes its
// report to stdout and progress or notes to stderr.
type verb struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var verbs = []verb{
	{"bench", "run a mixed workload on a fresh device in a temporary directory and print a table", runBench},
	{"create", "create a device file with the given geometry", runCreate},
	{"stats", "print a device's usage: pages, bytes, free lists, sub-page classes, logs", runStats},
	{"check", "check every invariant of a device; exit status 1 on corruption", runCheck},
	{"dump", "print a device's superblocks, journal, free lists, logs and sub-page classes", runDump},
	{"map", "draw a device's heap as a PNG, one pixel per page-group", runMap},
}

// withoutLibraryName returns err's message without the name the library's
// errors start with, which the verb's prefix already gives: at the start
// of each of its lines, for errors the library joined.
func withoutLibraryName(err error) string {
	return strings.ReplaceAll(strings.TrimPrefix(err.Error(), "pagealloc: "), "\npagealloc: ", "\n")
}

// errUsage is returned by a verb whose arguments are wrong; the exit
// status is then 2.
var errUsage = errors.New("usage")

// errReported is returned by a verb that has already printed why it
// failed; the exit status is 1 and nothing more is printed.
var errReported = errors.New("reported")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stderr) // asked for, as "VERB -h" is: not a usage error
		return 0
	}
	for _, v := range verbs {
		if v.name != args[0] {
			continue
		}
		out := &recordingWriter{w: stdout}
		err := v.run(args[1:], out, stderr)
		if err == nil {
			err = out.err // a report cut short is no success
		}
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			if msg := strings.TrimPrefix(err.Error(), errUsage.Error()); msg != "" {
				fmt.Fprintf(stderr, "pagealloc %s%s\n", v.name, msg)
			}
			return 2
		case errors.Is(err, errReported):
			return 1
		}
		fmt.Fprintf(stderr, "pagealloc %s: %s\n", v.name, withoutLibraryName(err))
		return 1
	}
	fmt.Fprintf(stderr, "pagealloc: unknown verb %q\n", args[0])
	usage(stderr)
	return 2
}

// recordingWriter passes writes on to w and keeps the first error, for
// the writes whose error a verb does not look at (a line printed after
// its last table).
type recordingWriter struct {
	w   io.Writer
	err error
}

func (r *recordingWriter) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: pagealloc VERB [flags] [FILE]")
	for _, v := range verbs {
		fmt.Fprintf(w, "  %-8s %s\n", v.name, v.summary)
	}
	fmt.Fprintln(w, `Run "pagealloc VERB -h" for the flags of a verb.`)
}

// newFlagSet returns a flag set for a verb taking the arguments described
// by operands, printing its usage to stderr.
func newFlagSet(name, operands string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, strings.TrimSpace("usage: pagealloc "+name+" [flags] "+operands))
		fs.PrintDefaults()
	}
	return fs
}

// parseFileArgs parses a verb's flags, which may come before or after its
// one FILE operand, and returns the file.
func parseFileArgs(fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", err
		}
		return "", errUsage // the flag package has printed why
	}
	rest := fs.Args()
	// Flags may follow the operand too ("pagealloc stats dev -json"),
	// unless "--" ended them: then what follows is operands only, and a
	// file may be named "-json".
	ended := len(rest) < len(args) && args[len(args)-len(rest)-1] == "--"
	if len(rest) > 1 && !ended {
		if err := fs.Parse(rest[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", err
			}
			return "", errUsage
		}
		if fs.NArg() == 0 {
			rest = rest[:1]
		}
	}
	if len(rest) == 1 {
		return rest[0], nil
	}
	fs.Usage()
	return "", fmt.Errorf("%w: want exactly one FILE", errUsage)
}

// maxSizeFlag registers the -max-size flag of a verb that inspects a
// device, and returns its value: 0 unless given.
func maxSizeFlag(fs *flag.FlagSet) *sizeValue {
	var v sizeValue
	fs.Var(&v, "max-size", "the address space to map, in `bytes` (the library's Options.MaxSize), for a file grown past the capacity its device records or a capacity this platform cannot map (default: the recorded capacity)")
	return &v
}

// openReadOnly opens the device at path for inspection, mapping maxSize
// bytes (0: the capacity the device records): nothing is written to the
// file, and a journal left by a crash is replayed in memory.
func openReadOnly(path string, maxSize int64) (*pagealloc.Device, error) {
	return pagealloc.Open(path, &pagealloc.Options{ReadOnly: true, MaxSize: maxSize})
}

// openInspected opens the device at path read-only, as openReadOnly does,
// and inspects it. The caller closes the device.
func openInspected(path string, maxSize int64) (*pagealloc.Device, *pagealloc.Inspection, error) {
	d, err := openReadOnly(path, maxSize)
	if err != nil {
		return nil, nil, err
	}
	in, err := d.Inspect()
	if err != nil {
		d.Close()
		return nil, nil, err
	}
	return d, in, nil
}

// sizeValue is a flag holding a byte count written with an optional binary
// suffix (K, KiB, M, MiB, G, GiB, T, TiB; a plain number is bytes).
type sizeValue int64

// String writes the size with the largest suffix that keeps it whole.
func (s *sizeValue) String() string { return formatBytes(int64(*s)) }

// Set parses a size such as 4096, 64K or 16MiB.
func (s *sizeValue) Set(text string) error {
	n, err := parseBytes(text)
	if err != nil {
		return err
	}
	*s = sizeValue(n)
	return nil
}

var byteSuffixes = []struct {
	suffix string
	shift  uint
}{
	{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10},
	{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}, {"B", 0},
}

func parseBytes(text string) (int64, error) {
	t := strings.TrimSpace(text)
	shift := uint(0)
	for _, s := range byteSuffixes {
		if len(t) > len(s.suffix) && strings.EqualFold(t[len(t)-len(s.suffix):], s.suffix) {
			t, shift = t[:len(t)-len(s.suffix)], s.shift
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is not a byte count such as 4096, 64K or 16MiB", text)
	}
	return n << shift, nil
}

// formatBytes writes n with the largest binary suffix that keeps it whole,
// so that parseBytes reads it back exactly.
func formatBytes(n int64) string {
	for _, s := range byteSuffixes[:4] {
		if unit := int64(1) << s.shift; n != 0 && n%unit == 0 {
			return strconv.FormatInt(n/unit, 10) + s.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// humanBytes writes n rounded to a tenth of its unit, for tables.
func humanBytes(n int64) string {
	f, unit := float64(n), "B"
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if f < 1024 {
			break
		}
		f, unit = f/1024, u
	}
	if unit == "B" {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, unit)
}

// plural returns the ending of a noun counted n times: "s" unless n is 1.
func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
