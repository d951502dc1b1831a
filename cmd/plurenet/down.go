package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/plures/plurenet/overlay"
)

func init() {
	register(command{name: "down", summary: "stop a running node (it leaves the mesh as on SIGTERM)", run: runDown})
}

// defaultDownWait bounds how long down waits for the node to leave: a node
// stops in well under a second (a Leave to each relay, flushing at most
// about a second per relay), so this is only a ceiling for a stuck one.
const defaultDownWait = 15 * time.Second

func runDown(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("down")
	stateDir := fs.String("state-dir", "", stateDirUsage())
	wait := fs.Duration("wait", defaultDownWait, "how long to wait for the node to leave")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *wait <= 0 {
		return usageErrorf("--wait %s: want a positive duration, e.g. 15s", *wait)
	}
	dir := stateDirOf(*stateDir)
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	if err := overlay.RequestStop(ctx, dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "plurenet: the node with state dir %s left the mesh and stopped\n", dir)
	return nil
}
