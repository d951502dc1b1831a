package main

import (
	"context"
	"fmt"
	"io"

	"github.com/plures/plurenet/internal/mesh"
)

func init() {
	register(command{name: "key", summary: "generate a mesh secret, or print this node's public key", run: runKey})
}

func runKey(_ context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("want a subcommand: \"key generate\" (a new mesh secret) or \"key public\" (this node's public key)")
	}
	switch args[0] {
	case "generate":
		if err := parseFlags(newFlagSet("key generate"), args[1:]); err != nil {
			return err
		}
		// 256 random bits in the generated format, which members use
		// without the Argon2id stretching a chosen secret needs.
		secret, err := mesh.GenerateSecret()
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, secret)
		return nil
	case "public":
		fs := newFlagSet("key public")
		stateDir := fs.String("state-dir", "", stateDirUsage())
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		dir := stateDirOf(*stateDir)
		k, _, err := mesh.LoadOrCreateKey(dir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, k.Public())
		return nil
	}
	return usageErrorf("unknown key subcommand %q: want generate or public", args[0])
}
