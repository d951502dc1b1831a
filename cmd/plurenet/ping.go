package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/plures/plurenet/overlay"
)

func init() {
	register(command{name: "ping", summary: "measure the round trip to a member and show which path carries it", run: runPing})
}

// maxPings bounds -c so a typo cannot keep the command running for hours.
const maxPings = 1000

func runPing(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("ping")
	stateDir := fs.String("state-dir", "", stateDirUsage())
	count := fs.Int("c", 4, "number of pings")
	interval := fs.Duration("i", time.Second, "time between pings")
	// The member comes first, like ping(8); flags may follow it.
	var peer string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		peer, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case peer == "":
		return usageErrorf("want a member: plurenet ping NAME|IP [-c N]")
	case *count < 1 || *count > maxPings:
		return usageErrorf("-c %d: want 1 to %d", *count, maxPings)
	case *interval < 10*time.Millisecond:
		return usageErrorf("-i %v: want at least 10ms", *interval)
	}
	dir := stateDirOf(*stateDir)
	var answered int
	var lastErr error
	for i := range *count {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(*interval):
			}
		}
		qctx, cancel := context.WithTimeout(ctx, statusTimeout+time.Second)
		res, err := overlay.QueryPing(qctx, dir, peer)
		cancel()
		if err != nil {
			lastErr = err
			fmt.Fprintf(stdout, "no answer from %s: %v\n", peer, err)
			continue
		}
		answered++
		fmt.Fprintf(stdout, "pong from %s (%s) via %s in %v\n", peer, res.IP, res.Path, res.RTT.Round(10*time.Microsecond))
	}
	if answered == 0 {
		return fmt.Errorf("%s did not answer: %w", peer, lastErr)
	}
	return nil
}
