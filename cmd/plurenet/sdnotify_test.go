package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/overlay"
)

// notifyWait bounds the wait for one notification: a node starts in well
// under a second, so this only keeps a broken run from hanging.
const notifyWait = 30 * time.Second

// fakeSystemd listens where $NOTIFY_SOCKET points for the rest of the test,
// as systemd does for a Type=notify unit.
func fakeSystemd(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	setTestEnv(t, map[string]string{"NOTIFY_SOCKET": path})
	return conn
}

// setTestEnv makes getenv answer env's values, and the process
// environment's for other names, until the test ends.
func setTestEnv(t *testing.T, env map[string]string) {
	t.Helper()
	old := getenv
	getenv = func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
	t.Cleanup(func() { getenv = old })
}

// nextNotification returns the next datagram sent to conn, failing the
// test if the command sending it returns first (with what it returned).
func nextNotification(t *testing.T, conn *net.UnixConn, done chan error) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(notifyWait)); err != nil {
		t.Fatal(err)
	}
	type result struct {
		msg string
		err error
	}
	got := make(chan result, 1)
	go func() {
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		got <- result{string(buf[:n]), err}
	}()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("no notification: %v", r.err)
		}
		return r.msg
	case err := <-done:
		done <- err // for the caller's own wait
		<-got       // the read ends at its deadline at the latest
		t.Fatalf("returned before notifying systemd: %v", err)
		return ""
	}
}

// TestSystemdNotify: under Type=notify units, "plurenet relay" says
// READY=1 once it answers HTTP, "plurenet up" once the node answers on its
// control socket (here, a node of that relay), and each says STOPPING=1
// when it stops.
func TestSystemdNotify(t *testing.T) {
	sd := fakeSystemd(t)

	relayCtx, stopRelay := context.WithCancel(context.Background())
	defer stopRelay()
	relayDone, relayFinished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(relayFinished)
		relayDone <- runRelay(relayCtx, []string{"--listen", "127.0.0.1:0", "--stun-listen", "off", "--log-level", "error"}, io.Discard)
	}()
	// Before fakeSystemd's cleanup restores getenv, which the command reads.
	t.Cleanup(func() { stopRelay(); <-relayFinished })
	ready := nextNotification(t, sd, relayDone)
	addr, ok := strings.CutPrefix(ready, "READY=1\nSTATUS=serving ")
	if !ok {
		t.Fatalf("relay's first notification %q: want READY=1 and the address served", ready)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("relay sent READY=1 but does not answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("relay /healthz after READY=1: %s", resp.Status)
	}

	// A directory the node creates: it refuses one others may enter.
	stateDir := filepath.Join(t.TempDir(), "state")
	nodeCtx, stopNode := context.WithCancel(context.Background())
	defer stopNode()
	nodeDone, nodeFinished := make(chan error, 1), make(chan struct{})
	t.Cleanup(func() { stopNode(); <-nodeFinished })
	var out bytes.Buffer
	go func() {
		defer close(nodeFinished)
		// The relay path only: the node talks to nothing but the
		// loopback relay.
		nodeDone <- runUp(nodeCtx, []string{"--topic", "sdnotify", "--key", "sdnotify-secret-0123456789",
			"--transport", "relay", "--relay", "ws://" + addr,
			"--state-dir", stateDir, "--name", "notified", "--log-level", "error"}, &out)
	}()
	ready = nextNotification(t, sd, nodeDone)
	if !regexp.MustCompile(`^READY=1\nSTATUS=up: IPv4 \d+\.\d+\.\d+\.\d+, IPv6 [0-9a-f:]+$`).MatchString(ready) {
		t.Fatalf("node's first notification %q: want READY=1 and a status with the node's addresses", ready)
	}
	qctx, qcancel := context.WithTimeout(nodeCtx, notifyWait)
	st, err := overlay.QueryStatus(qctx, stateDir)
	qcancel()
	if err != nil {
		t.Fatalf("node sent READY=1 but its control socket does not answer: %v", err)
	}
	if !strings.Contains(ready, st.IPv4) {
		t.Fatalf("status line %q does not name the node's IPv4 %s", ready, st.IPv4)
	}

	stopNode()
	if got := nextNotification(t, sd, nil); got != "STOPPING=1" {
		t.Fatalf("node's notification on leaving = %q, want STOPPING=1", got)
	}
	if err := <-nodeDone; err != nil {
		t.Fatalf("up: %v\n%s", err, out.String())
	}
	stopRelay()
	if got := nextNotification(t, sd, nil); got != "STOPPING=1" {
		t.Fatalf("relay's notification on stopping = %q, want STOPPING=1", got)
	}
	if err := <-relayDone; err != nil {
		t.Fatalf("relay: %v", err)
	}
}

// TestSystemdNotifyBadSocket: a notification that cannot be sent is a
// warning naming the socket, not a failure of the service.
func TestSystemdNotifyBadSocket(t *testing.T) {
	for name, sock := range map[string]string{
		"relative path": "notify.sock",
		"no listener":   filepath.Join(t.TempDir(), "absent.sock"),
	} {
		t.Run(name, func(t *testing.T) {
			setTestEnv(t, map[string]string{"NOTIFY_SOCKET": sock})
			var logs bytes.Buffer
			stopping := systemdReady(slog.New(slog.NewTextHandler(&logs, nil)), "up")
			stopping()
			got := logs.String()
			if strings.Count(got, "cannot notify systemd") != 2 || !strings.Contains(got, sock) {
				t.Fatalf("log = %q: want two warnings naming %s", got, sock)
			}
		})
	}
}
