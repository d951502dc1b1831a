//go:build linux

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/owner"
	"github.com/plures/plurenet/overlay"
)

// revokeMembers is how many members of the owned mesh must drop the
// revoked one in the revocation row; one more is revoked.
const revokeMembers = 3

// revokeLoopback measures, on an in-process owned mesh of userspace nodes
// over an in-process relay, the time from handing a revocation to one
// member (what "plurenet revoke" does) to the last member dropping the
// revoked one from its membership and WireGuard.
func revokeLoopback(ctx context.Context) *row {
	r := &row{section: sectionLoopback, label: fmt.Sprintf("revoke to the last of %d members dropping the peer", revokeMembers), note: "in-process owned mesh"}
	d, err := runRevokeLoopback(ctx)
	if err != nil {
		r.err = err
		return r
	}
	r.note = d.Round(time.Microsecond).String()
	return r
}

func runRevokeLoopback(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, overlayWait)
	defer cancel()
	// Errors only: every member warns about the revocation it applies.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	relayURL, stop, err := startLoopbackRelay(log)
	if err != nil {
		return 0, err
	}
	defer stop()
	dir, err := os.MkdirTemp("", "plurenet-bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	const topic = "plurenet-bench-owned"
	ok, err := owner.NewKey()
	if err != nil {
		return 0, err
	}
	secret, err := mesh.GenerateSecret()
	if err != nil {
		return 0, err
	}
	var nodes []*overlay.Node
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for i := range revokeMembers + 1 {
		name := fmt.Sprintf("m%d", i)
		id, err := owner.NewGrantID()
		if err != nil {
			return 0, err
		}
		g, err := ok.SignGrant(owner.Grant{ID: id, Topic: mesh.TopicID(topic), Name: name})
		if err != nil {
			return 0, err
		}
		n, err := overlay.New(overlay.Config{
			StateDir: filepath.Join(dir, name),
			Topic:    topic,
			Secret:   secret,
			Name:     name,
			Relays:   []string{relayURL},
			Owned:    &overlay.Owned{Owner: ok.Public(), Grant: g},
			Logger:   log.With("node", name),
		})
		if err != nil {
			return 0, err
		}
		nodes = append(nodes, n)
	}
	revoked := nodes[revokeMembers]
	for _, n := range nodes[:revokeMembers] {
		if _, err := n.WaitMember(ctx, "m"+fmt.Sprint(revokeMembers)); err != nil {
			return 0, fmt.Errorf("members meeting: %w", err)
		}
	}
	body, err := (&owner.Revocations{Keys: []nodekey.Public{revoked.PublicKey()}}).Marshal()
	if err != nil {
		return 0, err
	}
	doc, err := ok.SignDocument(owner.KindRevocations, mesh.TopicID(topic), 1, body)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := overlay.PushDocument(ctx, filepath.Join(dir, "m0"), doc.Append(nil)); err != nil {
		return 0, err
	}
	key := revoked.PublicKey().String()
	for _, n := range nodes[:revokeMembers] {
		for slices.ContainsFunc(n.Status().Members, func(m overlay.MemberStatus) bool { return m.PublicKey == key }) {
			select {
			case <-ctx.Done():
				return 0, fmt.Errorf("%s still holds the revoked member: %w", n.Status().Name, ctx.Err())
			case <-time.After(time.Millisecond):
			}
		}
	}
	return time.Since(start), nil
}
