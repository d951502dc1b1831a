package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/overlay"
)

// startEnrolled enrols a state dir with token and starts the member, as
// "plurenet up --invite TOKEN --state-dir DIR" does.
func startEnrolled(t *testing.T, token string) (*overlay.Node, string) {
	t.Helper()
	state := privateDir(t)
	s := upSettings{StateDir: state, Invite: token}
	owned, relays, err := s.applyEnrolment(quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := s.nodeConfig(quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Owned, cfg.Relays = owned, relays
	n, err := overlay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, state
}

// The command line of the issue: rotate-secret hands a new secret to the
// members a running member sees, both switch to it, and the owner dir's
// secret (what new invites carry) is the new one. A member offline at the
// time is named as left out.
func TestRotateSecret(t *testing.T) {
	relayURL := startTestRelay(t)
	own := filepath.Join(privateDir(t), "owner")
	runOK(t, "owner", "init", "--owner-dir", own, "--topic", "home", "--relay", relayURL)
	oldSecret, err := os.ReadFile(filepath.Join(own, secretFile))
	if err != nil {
		t.Fatal(err)
	}
	a, aState := startEnrolled(t, runOK(t, "invite", "--owner-dir", own, "--name", "alpha"))
	b, bState := startEnrolled(t, runOK(t, "invite", "--owner-dir", own, "--name", "beta"))
	runOK(t, "invite", "--owner-dir", own, "--name", "away")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.WaitMember(ctx, "beta"); err != nil {
		t.Fatal(err)
	}

	var errb bytes.Buffer
	if code := run([]string{"rotate-secret", "--owner-dir", own, "--state-dir", aState, "--overlap", "-1s"}, io.Discard, &errb); code == 0 {
		t.Fatal("a negative overlap was accepted")
	}
	out := runOK(t, "rotate-secret", "--owner-dir", own, "--state-dir", aState, "--overlap", "2s")
	if !strings.Contains(out, "to 2 members (alpha, beta)") || !strings.Contains(out, "not handed to away") {
		t.Fatalf("rotate-secret printed %q", out)
	}
	newSecret, err := os.ReadFile(filepath.Join(own, secretFile))
	if err != nil || bytes.Equal(newSecret, oldSecret) {
		t.Fatalf("the owner dir keeps the old secret (%v)", err)
	}
	for _, m := range []struct {
		n     *overlay.Node
		state string
	}{{a, aState}, {b, bState}} {
		waitRotation(ctx, t, m.n, 1)
		if got, err := os.ReadFile(filepath.Join(m.state, overlay.RotatedSecretFile)); err != nil || !bytes.Equal(got, newSecret) {
			t.Fatalf("%s keeps %q (%v), want the owner's new secret", m.state, got, err)
		}
	}
	// A member invited now starts on the new secret, meets the others,
	// and takes the rotation as its own.
	late, _ := startEnrolled(t, runOK(t, "invite", "--owner-dir", own, "--name", "late"))
	if _, err := late.WaitMember(ctx, "alpha"); err != nil {
		t.Fatal(err)
	}
	waitRotation(ctx, t, late, 1)
	if _, err := b.WaitMember(ctx, "late"); err != nil {
		t.Fatal(err)
	}
}

// waitRotation waits until n runs secret rotation gen.
func waitRotation(ctx context.Context, t *testing.T, n *overlay.Node, gen uint64) {
	t.Helper()
	for n.Status().Owned.SecretRotation != gen {
		select {
		case <-ctx.Done():
			t.Fatalf("%s does not run secret rotation %d", n.Status().Name, gen)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
