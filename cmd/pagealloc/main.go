// Command pagealloc creates, inspects and exercises pagealloc device files.
//
// Usage:
//
//	pagealloc bench [flags]    run a mixed workload on a fresh device and print a table
//
// Run "pagealloc VERB -h" for the flags of a verb.
package main

import (
	"fmt"
	"io"
	"os"
)

// verb is one subcommand: it parses its own flags from args and writes its
// report to stdout.
type verb struct {
	name    string
	summary string
	run     func(args []string, stdout io.Writer) error
}

var verbs = []verb{
	{"bench", "run a mixed workload on a fresh device in a temporary directory and print a table", runBench},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "help" {
		usage(stderr)
		return 2
	}
	for _, v := range verbs {
		if v.name == args[0] {
			if err := v.run(args[1:], stdout); err != nil {
				fmt.Fprintf(stderr, "pagealloc %s: %v\n", v.name, err)
				return 1
			}
			return 0
		}
	}
	fmt.Fprintf(stderr, "pagealloc: unknown verb %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: pagealloc VERB [flags]")
	for _, v := range verbs {
		fmt.Fprintf(w, "  %-8s %s\n", v.name, v.summary)
	}
}
