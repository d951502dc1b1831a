package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/plures/plurenet/internal/mesh"
)

func init() {
	register(command{name: "key", summary: "generate a mesh secret, or print this node's public key", run: runKey})
}

// secretBytes is the entropy of a generated mesh secret: 256 bits, the
// strength of the keys derived from it.
const secretBytes = 32

func runKey(_ context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("want a subcommand: \"key generate\" (a new mesh secret) or \"key public\" (this node's public key)")
	}
	switch args[0] {
	case "generate":
		if err := parseFlags(newFlagSet("key generate"), args[1:]); err != nil {
			return err
		}
		b := make([]byte, secretBytes)
		if _, err := rand.Read(b); err != nil {
			return fmt.Errorf("reading randomness: %w", err)
		}
		fmt.Fprintln(stdout, base64.RawURLEncoding.EncodeToString(b))
		return nil
	case "public":
		fs := newFlagSet("key public")
		stateDir := fs.String("state-dir", "", stateDirUsage())
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		dir := pick(*stateDir, getenv("PLURENET_STATE_DIR"), defaultStateDir(getenv))
		k, _, err := mesh.LoadOrCreateKey(dir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, k.Public())
		return nil
	}
	return usageErrorf("unknown key subcommand %q: want generate or public", args[0])
}
