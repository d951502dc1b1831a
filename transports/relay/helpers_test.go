package relay

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/internal/wscork"
	"github.com/plures/plurenet/relayserver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout only keeps a broken test from hanging; nothing is asserted
// about how long things take.
const testTimeout = 20 * time.Second

// quietLogger drops logs unless RELAY_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("RELAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testRelay is a relayserver behind an httptest server on 127.0.0.1.
type testRelay struct {
	srv *relayserver.Server
	ts  *httptest.Server
	url string // ws://127.0.0.1:port
}

// startRelay serves a new relay on ln (a fresh 127.0.0.1 port if nil).
func startRelay(t testing.TB, cfg relayserver.Config, ln net.Listener) *testRelay {
	t.Helper()
	return serveRelay(t, cfg, ln, false)
}

// startTLSRelay is startRelay over TLS with httptest's certificate
// (r.ts.Certificate()).
func startTLSRelay(t testing.TB, cfg relayserver.Config) *testRelay {
	t.Helper()
	return serveRelay(t, cfg, nil, true)
}

func serveRelay(t testing.TB, cfg relayserver.Config, ln net.Listener, useTLS bool) *testRelay {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	srv, err := relayserver.New(cfg)
	if err != nil {
		t.Fatalf("relayserver.New: %v", err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	if ln != nil {
		ts.Listener.Close()
		ts.Listener = ln
	}
	r := &testRelay{srv: srv, ts: ts}
	if useTLS {
		// The untrusted-certificate test makes the server log a failed
		// TLS handshake; that is expected, not news.
		ts.Config.ErrorLog = log.New(io.Discard, "", 0)
		// As relayserver.Serve does: a Conn below TLS.
		ts.Listener = wscork.NewListener(ts.Listener)
		ts.StartTLS()
		r.url = "wss" + strings.TrimPrefix(ts.URL, "https")
	} else {
		ts.Start()
		r.url = "ws" + strings.TrimPrefix(ts.URL, "http")
	}
	t.Cleanup(r.stop)
	return r
}

// stop kills the relay: connections are cut, the listener closed. It is safe
// to call twice.
func (r *testRelay) stop() {
	r.srv.Close()
	r.ts.CloseClientConnections()
	r.ts.Close()
}

// newAdmission returns the admission key of a fresh mesh.
func newAdmission(t testing.TB) relayproto.AdmissionKey {
	t.Helper()
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		t.Fatal(err)
	}
	return relayproto.NewAdmissionKey(seed)
}

// newClient starts a client with fast reconnects and closes it at cleanup.
func newClient(t testing.TB, cfg Config) *Client {
	t.Helper()
	if cfg.PrivateKey.IsZero() {
		cfg.PrivateKey = testkit.Key(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 20 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 200 * time.Millisecond
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitConnected(t testing.TB, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected: %v (status %+v)", err, c.Status())
	}
}

// recvMatch returns the first message for which match is true, discarding
// others.
func recvMatch(t testing.TB, c *Client, what string, match func(Message) bool) Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v (status %+v)", what, err, c.Status())
		}
		if match(m) {
			return m
		}
	}
}

func waitPresent(t testing.TB, c *Client, k nodekey.Public) {
	t.Helper()
	recvMatch(t, c, "PeerPresent "+k.ShortString(), func(m Message) bool {
		return m.Kind == KindPeerPresent && m.From == k
	})
}

// sendUntilReceived sends payload from a to b every few milliseconds until b
// receives it: for moments when b may not be registered at the relay yet.
func sendUntilReceived(t testing.TB, a, b *Client, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			err := a.Send(b.PublicKey(), []byte(payload))
			if err != nil && !errors.Is(err, ErrNotConnected) && !errors.Is(err, ErrQueueFull) {
				t.Errorf("Send: %v", err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer wg.Wait()
	defer cancel()
	for {
		m, err := b.Recv(ctx)
		if err != nil {
			t.Fatalf("waiting for %q: %v (sender %+v, receiver %+v)", payload, err, a.Status(), b.Status())
		}
		if m.Kind == KindUnicast && m.From == a.PublicKey() && string(m.Payload) == payload {
			return
		}
	}
}
