package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/owner"
	"github.com/plures/plurenet/internal/ownerfs"
	"github.com/plures/plurenet/overlay"
)

func init() {
	register(command{name: "rotate-secret", summary: "give the members of an owned mesh a new secret, sealed to each, through a running member", run: runRotateSecret})
}

// defaultOverlap is how long members have to receive a rotation before
// it takes over: a day reaches laptops that sleep overnight.
const defaultOverlap = 24 * time.Hour

func runRotateSecret(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("rotate-secret")
	dir := fs.String("owner-dir", "", ownerDirUsage())
	stateDir := fs.String("state-dir", "", "state dir of a running member: it names the members online, takes the new secret and spreads it")
	overlap := fs.Duration("overlap", defaultOverlap, "how long members have to receive the new secret before every member switches to it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 0 {
		return usageErrorf("rotate-secret takes no arguments, only flags")
	}
	if *stateDir == "" {
		return usageErrorf("--state-dir of a running member is required: it knows the members' keys and spreads the new secret")
	}
	if *overlap <= 0 {
		return usageErrorf("--overlap %v: want a positive duration (members offline for all of it lose the mesh)", *overlap)
	}
	k, st, err := loadOwner(*dir)
	if err != nil {
		return err
	}
	// The owner signs grants, not keys (members enrol offline): the
	// running member's view says which key holds each grant.
	qctx, cancel := context.WithTimeout(ctx, revokeTimeout)
	stat, err := overlay.QueryStatus(qctx, *stateDir)
	cancel()
	if err != nil {
		return fmt.Errorf("asking the member at %s for the members' keys: %w", *stateDir, err)
	}
	if stat.Owned == nil || stat.Owned.Owner != k.Public().String() {
		return fmt.Errorf("the member at %s is not in this owner's mesh (%s)", *stateDir, k.Public())
	}
	keys, names, err := rotationMembers(stat, st)
	if err != nil {
		return err
	}
	var missing []string
	for _, is := range st.Grants {
		if !st.revokedGrant(is.ID) && !slices.Contains(names, is.Name) && !slices.Contains(missing, is.Name) {
			missing = append(missing, is.Name)
		}
	}
	secret, err := mesh.GenerateSecret()
	if err != nil {
		return err
	}
	activate := time.Now().Add(*overlap)
	r, err := owner.NewRotation(mesh.TopicID(st.Topic), secret, activate, keys)
	if err != nil {
		return err
	}
	body, err := r.Marshal()
	if err != nil {
		return err
	}
	// Kept before it is handed over, so that a version is never signed
	// twice; running again makes a newer rotation, which replaces this
	// one on every member that holds it.
	st.Rotation.Version++
	d, err := k.SignDocument(owner.KindRotation, mesh.TopicID(st.Topic), st.Rotation.Version, body)
	if err != nil {
		return err
	}
	if err := saveOwnerState(*dir, st); err != nil {
		return err
	}
	if _, err := handOver(ctx, *stateDir, *dir, d.Append(nil), "secret rotation", st.Rotation.Version); err != nil {
		return err
	}
	// New invites carry the new secret.
	if err := ownerfs.WriteFile(filepath.Join(*dir, secretFile), []byte(secret+"\n")); err != nil {
		return fmt.Errorf("the rotation is handed over, but keeping the new secret in the owner dir failed (invites would carry the old one): %w", err)
	}
	fmt.Fprintf(stdout, "plurenet: secret rotation %d handed to %d members (%s), switching at %s\n",
		st.Rotation.Version, len(keys), strings.Join(names, ", "), r.Activate.UTC().Format(time.RFC3339))
	if len(missing) > 0 {
		fmt.Fprintf(stdout, "plurenet: not handed to %s (not online at that member): they lose the mesh at the switch; run rotate-secret again while they are online, or invite them again\n",
			strings.Join(missing, ", "))
	}
	return nil
}

// rotationMembers returns the keys and names of the running member and
// the certified members it sees, without the keys the owner revoked (the
// member already refuses revoked grants).
func rotationMembers(stat overlay.Status, st *ownerState) ([]nodekey.Public, []string, error) {
	var keys []nodekey.Public
	var names []string
	add := func(name, key string) error {
		if slices.Contains(st.Revocations.Keys, key) {
			return nil
		}
		k, err := nodekey.ParsePublic(key)
		if err != nil {
			return fmt.Errorf("member %q: %w", name, err)
		}
		keys, names = append(keys, k), append(names, name)
		return nil
	}
	if err := add(stat.Owned.Grant, stat.PublicKey); err != nil {
		return nil, nil, err
	}
	for _, m := range stat.Members {
		if !m.Certified {
			continue
		}
		if err := add(m.Name, m.PublicKey); err != nil {
			return nil, nil, err
		}
	}
	if len(keys) > owner.MaxRotationMembers {
		return nil, nil, fmt.Errorf("%d members, at most %d fit one rotation: invite the members again instead", len(keys), owner.MaxRotationMembers)
	}
	return keys, names, nil
}
