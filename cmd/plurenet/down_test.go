package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/overlay"
)

// upRun is a `plurenet up` running in-process.
type upRun struct {
	lines chan string // its stdout, line by line; closed when it returns
	done  chan error  // what it returned
}

// startUp runs `plurenet up args` until it returns or the test ends.
func startUp(t *testing.T, args ...string) *upRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	u := &upRun{lines: make(chan string, 64), done: make(chan error, 1)}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		err := runUp(ctx, args, pw)
		pw.Close()
		u.done <- err
	}()
	go func() {
		defer close(u.lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			u.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { cancel(); <-finished })
	return u
}

// waitLine returns the first submatch of re in the next lines of u.
func (u *upRun) waitLine(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	timeout := time.After(testkit.Patience)
	for {
		select {
		case l, ok := <-u.lines:
			if !ok {
				t.Fatalf("up returned before printing a line matching %s: %v", re, <-u.done)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m[1]
			}
		case <-timeout:
			t.Fatalf("up printed no line matching %s", re)
		}
	}
}

var upMetricsLine = regexp.MustCompile(`metrics on http://([0-9.:]+)/metrics`)

// TestDownStopsNode: `plurenet down` makes a running `plurenet up` leave the
// mesh and return nil, as SIGTERM does; the other member sees the Leave
// (it drops the node well before the member timeout would), and a second
// down finds no node. The node served its metrics on the loopback port
// --metrics-listen named until then.
func TestDownStopsNode(t *testing.T) {
	relayURL := startTestRelay(t)
	const topic, secret = "down-test", "down-test-secret-0123456789"
	dir := privateDir(t)
	u := startUp(t, "--topic", topic, "--key", secret, "--transport", "relay", "--relay", relayURL,
		"--state-dir", dir, "--name", "leaver", "--metrics-listen", "127.0.0.1:0", "--log-level", "error")
	metricsAddr := u.waitLine(t, upMetricsLine)

	watcher, err := overlay.New(overlay.Config{Topic: topic, Secret: secret, Name: "watcher", Transport: overlay.TransportRelay,
		Relays: []string{relayURL}, StateDir: privateDir(t), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Patience)
	defer cancel()
	if _, err := watcher.WaitMember(ctx, "leaver"); err != nil {
		t.Fatal(err)
	}
	// The watcher seeing the node does not mean the node has seen the
	// watcher yet (each learns of the other from its own announcement), so
	// the node's metrics are polled until they name it.
	for deadline := time.Now().Add(testkit.Patience); ; time.Sleep(50 * time.Millisecond) {
		code, body := httpGet(t, "http://"+metricsAddr+"/metrics")
		if code == 200 && strings.Contains(body, `plurenet_node_info{adapter="userspace"`) && strings.Contains(body, `name="watcher"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /metrics on %s: %d, want the node's metrics naming the watcher:\n%s", metricsAddr, code, body)
		}
	}

	var out strings.Builder
	if err := runDown(context.Background(), []string{"--state-dir", dir}, &out); err != nil {
		t.Fatalf("down: %v", err)
	}
	if !strings.Contains(out.String(), "stopped") {
		t.Errorf("down printed %q", out.String())
	}
	select {
	case err := <-u.done:
		if err != nil {
			t.Fatalf("up returned %v after down, want nil (exit 0)", err)
		}
	case <-time.After(testkit.Patience):
		t.Fatal("up still runs after down returned")
	}
	// Only the Leave removes it within Patience.
	if testkit.Patience >= mesh.MemberTimeout {
		t.Fatalf("testkit.Patience %s is not under mesh.MemberTimeout %s: the check below could pass on a timeout", testkit.Patience, mesh.MemberTimeout)
	}
	testkit.Eventually(t, "the watcher to drop the node that left", func() bool {
		return len(watcher.Status().Members) == 0
	})
	if err := runDown(context.Background(), []string{"--state-dir", dir}, io.Discard); !errors.Is(err, overlay.ErrNotRunning) {
		t.Fatalf("down with no node running: %v, want %v", err, overlay.ErrNotRunning)
	}
}
