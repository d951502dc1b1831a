package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	relayLine   = regexp.MustCompile(`listening on ws://([0-9.:]+)/v1/relay`)
	metricsLine = regexp.MustCompile(`metrics on http://([0-9.:]+)/metrics`)
)

// quietRelay are the arguments of a test relay on a free loopback port,
// with no STUN responder and no logs.
var quietRelay = []string{"--listen", "127.0.0.1:0", "--stun-listen=", "--drain-grace", "100ms", "--log-level", "error"}

// startRelayCmd runs `plurenet relay` with args and returns its relay and
// metrics addresses (the latter "" when it printed none) once it listens.
// The relay stops at test end.
func startRelayCmd(t *testing.T, args ...string) (relayAddr, metricsAddr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := runRelay(ctx, args, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if m := metricsLine.FindStringSubmatch(sc.Text()); m != nil {
			metricsAddr = m[1]
		}
		if m := relayLine.FindStringSubmatch(sc.Text()); m != nil {
			relayAddr = m[1]
			break
		}
	}
	if relayAddr == "" {
		t.Fatalf("relay printed no listen line: %v", sc.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	return relayAddr, metricsAddr
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The relay's metrics tell whoever reads them how many clients it serves and
// how its limits stand: by default they are served nowhere, and never on the
// listener clients reach, which keeps /healthz for platform probes.
func TestRelayMetricsNotPublic(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		relayAddr, metricsAddr := startRelayCmd(t, quietRelay...)
		if metricsAddr != "" {
			t.Fatalf("metrics served on %s without --metrics-listen", metricsAddr)
		}
		if code, _ := httpGet(t, "http://"+relayAddr+"/metrics"); code != http.StatusNotFound {
			t.Fatalf("GET /metrics on the relay listener: %d, want 404", code)
		}
		if code, body := httpGet(t, "http://"+relayAddr+"/healthz"); code != http.StatusOK || body != "ok\n" {
			t.Fatalf("GET /healthz: %d %q", code, body)
		}
	})
	t.Run("own listener", func(t *testing.T) {
		relayAddr, metricsAddr := startRelayCmd(t, append(quietRelay, "--metrics-listen", "127.0.0.1:0")...)
		if metricsAddr == "" {
			t.Fatal("no metrics line printed")
		}
		if code, _ := httpGet(t, "http://"+relayAddr+"/metrics"); code != http.StatusNotFound {
			t.Fatalf("GET /metrics on the relay listener: %d, want 404", code)
		}
		code, body := httpGet(t, "http://"+metricsAddr+"/metrics")
		if code != http.StatusOK || !strings.Contains(body, "\nplurenet_relay_connections 0\n") {
			t.Fatalf("GET /metrics on the metrics listener: %d\n%s", code, body)
		}
	})
	t.Run("same address refused", func(t *testing.T) {
		err := runRelay(context.Background(), []string{"--listen", "127.0.0.1:8080", "--metrics-listen", "127.0.0.1:8080"}, io.Discard)
		if err == nil || !errors.Is(err, errUsage) || !strings.Contains(err.Error(), `--metrics-listen "127.0.0.1:8080" must differ from --listen`) {
			t.Fatalf("err = %v", err)
		}
	})
}
