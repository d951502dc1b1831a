package relayserver_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

// dialStatus attempts an upgrade with header and returns the HTTP status (101
// when it succeeded; the connection is then closed at test end).
func dialStatus(t *testing.T, r *testRelay, header http.Header) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, r.url, &websocket.DialOptions{Subprotocols: []string{relayproto.Subprotocol}, HTTPHeader: header})
	if err == nil {
		t.Cleanup(func() { ws.CloseNow() })
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	return resp.StatusCode
}

func xff(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }

func TestMaxConnsPerIP(t *testing.T) {
	r := newRelay(t, relayserver.Config{MaxConnsPerIP: 2})
	first := connect(t, r, testkit.Key(t), testkit.Admission(1))
	connect(t, r, testkit.Key(t), testkit.Admission(2))
	if got := dialStatus(t, r, nil); got != http.StatusTooManyRequests {
		t.Fatalf("third connection from one address: HTTP %d, want 429", got)
	}
	if got := metric(t, r, `plurenet_relay_handshakes_total{result="refused_ip_conns"}`); got != 1 {
		t.Fatalf("refused_ip_conns = %v, want 1", got)
	}
	if got := metric(t, r, `plurenet_relay_source_addresses`); got != 1 {
		t.Fatalf("source_addresses = %v, want 1", got)
	}
	first.ws.CloseNow()
	testkit.Eventually(t, "a slot freed", func() bool { return r.srv.Stats().Connections == 1 })
	connect(t, r, testkit.Key(t), testkit.Admission(1))
}

func TestHandshakeRatePerIP(t *testing.T) {
	// A bucket of 3 that refills once in 1000 s: the fourth attempt in
	// this test is refused whatever the machine's speed.
	r := newRelay(t, relayserver.Config{HandshakeRatePerIP: 0.001, HandshakeBurstPerIP: 3})
	for i := range 3 {
		if got := dialStatus(t, r, nil); got != http.StatusSwitchingProtocols {
			t.Fatalf("attempt %d: HTTP %d", i, got)
		}
	}
	if got := dialStatus(t, r, nil); got != http.StatusTooManyRequests {
		t.Fatalf("fourth attempt: HTTP %d, want 429", got)
	}
	if got := metric(t, r, `plurenet_relay_handshakes_total{result="refused_ip_rate"}`); got != 1 {
		t.Fatalf("refused_ip_rate = %v, want 1", got)
	}
}

func TestPerIPLimitsDisabled(t *testing.T) {
	r := newRelay(t, relayserver.Config{MaxConnsPerIP: relayserver.Unlimited, HandshakeRatePerIP: relayserver.Unlimited, HandshakeBurstPerIP: 1})
	for i := range 10 {
		if got := dialStatus(t, r, nil); got != http.StatusSwitchingProtocols {
			t.Fatalf("attempt %d: HTTP %d with the limits off", i, got)
		}
	}
}

func TestTrustProxyHeaders(t *testing.T) {
	cases := []struct {
		name   string
		trust  bool
		second http.Header // the first connection comes "from" 192.0.2.1
		want   int
	}{
		{"trusted, another client", true, xff("192.0.2.2"), http.StatusSwitchingProtocols},
		{"trusted, same client", true, xff("192.0.2.1"), http.StatusTooManyRequests},
		// Only the last entry is the proxy's; a client-supplied first
		// entry does not make it someone else.
		{"trusted, spoofed first entry", true, xff("198.51.100.7, 192.0.2.1"), http.StatusTooManyRequests},
		{"trusted, two headers", true, http.Header{"X-Forwarded-For": {"198.51.100.7", "192.0.2.1"}}, http.StatusTooManyRequests},
		{"trusted, same IPv6 /64", true, xff("2001:db8::2"), http.StatusSwitchingProtocols},
		// Not trusted: the header is ignored and every test connection
		// comes from 127.0.0.1.
		{"untrusted", false, xff("192.0.2.2"), http.StatusTooManyRequests},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRelay(t, relayserver.Config{MaxConnsPerIP: 1, TrustProxyHeaders: c.trust})
			if got := dialStatus(t, r, xff("192.0.2.1")); got != http.StatusSwitchingProtocols {
				t.Fatalf("first connection: HTTP %d", got)
			}
			if got := dialStatus(t, r, c.second); got != c.want {
				t.Fatalf("second connection: HTTP %d, want %d", got, c.want)
			}
		})
	}
	t.Run("IPv6 /64 counts once", func(t *testing.T) {
		r := newRelay(t, relayserver.Config{MaxConnsPerIP: 1, TrustProxyHeaders: true})
		if got := dialStatus(t, r, xff("2001:db8:1:2::1")); got != http.StatusSwitchingProtocols {
			t.Fatalf("first: HTTP %d", got)
		}
		if got := dialStatus(t, r, xff("2001:db8:1:2:ffff::9")); got != http.StatusTooManyRequests {
			t.Fatalf("same /64: HTTP %d, want 429", got)
		}
		if got := dialStatus(t, r, xff("2001:db8:1:3::1")); got != http.StatusSwitchingProtocols {
			t.Fatalf("another /64: HTTP %d", got)
		}
	})
}

// One rendezvous per connection is structural in the protocol: the
// rendezvous is fixed by the ClientHello, and a second ClientHello (or any
// frame naming another rendezvous) does not exist after the handshake. A
// client that tries is cut off.
func TestOneRendezvousPerConnection(t *testing.T) {
	r := newRelay(t, relayserver.Config{})
	k := testkit.Key(t)
	c := connect(t, r, k, testkit.Admission(1))
	writeMsg(t, c.ws, []byte{byte(relayproto.TypeClientHello), relayproto.Version})
	expectClose(t, c.ws, relayproto.ErrBadFrame, websocket.StatusProtocolError)
	if got := r.srv.Stats().Rendezvous; got != 0 {
		t.Fatalf("%d rendezvous after the connection was cut", got)
	}
}
