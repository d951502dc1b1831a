// Command plurenet joins a private mesh, runs a relay, and inspects a running
// node. Run "plurenet help" for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one "plurenet NAME" subcommand. run gets the arguments after the
// name and a context that ends on SIGINT or SIGTERM.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

// commands is filled by each command's file in init, so that main.go stays
// the same when a command is added.
var commands []command

func register(c command) { commands = append(commands, c) }

// errUsage marks an error caused by the command line; main prints it with a
// hint to read the command's help and exits 2.
var errUsage = errors.New("usage")

func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printHelp(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	name := args[0]
	for _, c := range commands {
		if c.name != name {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := c.run(ctx, args[1:], stdout)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "plurenet %s: %v\n(run \"plurenet %s -h\" for its flags)\n", name, err, name)
			return 2
		default:
			fmt.Fprintf(stderr, "plurenet %s: %v\n", name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "plurenet: unknown command %q (run \"plurenet help\" for the list)\n", name)
	return 2
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "plurenet: a private mesh network over WireGuard, relays and direct UDP.")
	fmt.Fprintln(w, "\nUsage: plurenet COMMAND [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting, so
// that run decides the exit code.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("plurenet "+name, flag.ContinueOnError)
	// Errors are printed by run as one line; the full flag list only on -h.
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args and rejects stray positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fmt.Fprintf(os.Stdout, "Usage of %s:\n", fs.Name())
			fs.PrintDefaults()
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
