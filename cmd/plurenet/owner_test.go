package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("plurenet %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// The command lines of the issue: owner init, invite, and enrolling from
// the token, after which the state dir alone says everything.
func TestOwnerInviteEnrol(t *testing.T) {
	own := filepath.Join(privateDir(t), "owner")
	pub := runOK(t, "owner", "init", "--owner-dir", own, "--topic", "home", "--relay", "ws://127.0.0.1:9")
	if !strings.HasPrefix(pub, "owner:") {
		t.Fatalf("owner init printed %q, want the owner public key", pub)
	}
	for _, f := range []string{ownerKeyFile, secretFile, ownerStateFile} {
		if st, err := os.Stat(filepath.Join(own, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v; want mode 0600", f, st, err)
		}
	}
	if st, _ := os.Stat(own); st.Mode().Perm() != 0o700 {
		t.Fatalf("owner dir mode %v, want 0700", st.Mode().Perm())
	}
	token := runOK(t, "invite", "--owner-dir", own, "--name", "laptop", "--tags", "dev", "--ip", "100.64.0.5", "--expires", "72h")
	if strings.Contains(token, "\n") || !strings.HasPrefix(token, "pninv1.") {
		t.Fatalf("invite printed %q, want one token line", token)
	}
	if code := run([]string{"invite", "--owner-dir", own, "--name", "laptop"}, io.Discard, io.Discard); code == 0 {
		t.Fatal("a second grant for the same name was signed")
	}

	state := filepath.Join(privateDir(t), "state")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := upSettings{StateDir: state, Invite: token}
	owned, relays, err := s.applyEnrolment(log)
	if err != nil || owned == nil {
		t.Fatalf("enrolling: %v, %v", owned, err)
	}
	if owned.Owner.String() != pub || owned.Grant.Name != "laptop" || len(relays) != 1 {
		t.Fatalf("enrolled as %+v with relays %v", owned.Grant.Grant, relays)
	}
	// A later start: no token.
	s = upSettings{StateDir: state}
	if owned, _, err = s.applyEnrolment(log); err != nil || owned == nil {
		t.Fatalf("starting enrolled: %v, %v", owned, err)
	}
	if s.Topic != "home" || s.Name != "laptop" || s.IP != "100.64.0.5" || s.KeyFile != filepath.Join(state, secretFile) {
		t.Fatalf("settings from the enrolment: %+v", s)
	}
	if _, err := s.nodeConfig(log); err != nil {
		t.Fatalf("node config of an enrolled state dir: %v", err)
	}
	// Given differently again: refused.
	s = upSettings{StateDir: state, Name: "other"}
	if _, _, err := s.applyEnrolment(log); err == nil {
		t.Fatal("--name other accepted for a state dir enrolled as laptop")
	}
	// Another token into an enrolled state dir: refused.
	other := runOK(t, "invite", "--owner-dir", own, "--name", "server")
	s = upSettings{StateDir: state, Invite: other}
	if _, _, err := s.applyEnrolment(log); err == nil {
		t.Fatal("a second invite replaced the enrolment")
	}

	// policy set: a bad file is refused before anything is signed; a good
	// one is signed and kept even when no member takes it, and the same
	// rules keep their version.
	files := t.TempDir()
	policyFile := func(name, body string) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	policyVersion := func() uint64 {
		_, st, err := loadOwner(own)
		if err != nil {
			t.Fatal(err)
		}
		return st.Policy.Version
	}
	bad := policyFile("bad.json", `{"allow":[{"from":"tag:dev","to":"tag:server","ports":["tcp/22"],"port":"8000"}]}`)
	var errb bytes.Buffer
	if code := run([]string{"policy", "set", "--owner-dir", own, "--state-dir", state, bad}, io.Discard, &errb); code == 0 || !strings.Contains(errb.String(), "port") {
		t.Fatalf("a policy with an unknown field: exit %d, %q", code, errb.String())
	}
	if v := policyVersion(); v != 0 {
		t.Fatalf("a refused policy was signed as version %d", v)
	}
	good := policyFile("good.json", `{"allow":[{"from":"tag:dev","to":"tag:server","ports":["tcp/22"]}]}`)
	for range 2 {
		errb.Reset()
		if code := run([]string{"policy", "set", "--owner-dir", own, "--state-dir", state, good}, io.Discard, &errb); code == 0 || !strings.Contains(errb.String(), "no plurenet node is running") {
			t.Fatalf("policy set with no member running: exit %d, %q", code, errb.String())
		}
		if v := policyVersion(); v != 1 {
			t.Fatalf("policy version %d kept, want 1", v)
		}
	}
}
