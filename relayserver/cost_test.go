package relayserver_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

// What one client can make the relay spend is linear in what it is charged
// (docs/security.md, "Relay resource limits"). These tests each failed on the
// relay before the member cap, the fan-out charge and the prefix limits.

// A Broadcast costs the relay one frame per receiver, so its sender is
// charged for each. Before, an empty Broadcast was charged its 1 byte and
// fanned out to every member: 2,000 of them into 400 members queued ~20 MB
// for 2,000 bytes charged.
func TestBroadcastAmplificationBounded(t *testing.T) {
	const (
		members = 100
		flood   = 2000
		rate    = 10_000 // bytes/s; the burst is raised to one frame
	)
	r := newRelay(t, relayserver.Config{
		RateBytesPerSec:    rate,
		RateBurstBytes:     1,
		MaxConnsPerIP:      -1,
		HandshakeRatePerIP: -1,
	})
	rv := testkit.Admission(1)
	attacker := connect(t, r, testkit.Key(t), rv)
	for range members - 1 {
		connect(t, r, testkit.Key(t), rv) // reads nothing: its queue keeps what it is sent
	}
	start := time.Now()
	for range flood {
		attacker.broadcast("")
	}
	// Every Broadcast ends as rate limited (counted once) or fanned out
	// (each copy queued or dropped for a full queue).
	testkit.Eventually(t, "every broadcast handled", func() bool {
		copies := metric(t, r, `plurenet_relay_frames_forwarded_total{kind="broadcast"}`) +
			metric(t, r, `plurenet_relay_drops_total{reason="queue_full"}`)
		return metric(t, r, `plurenet_relay_drops_total{reason="rate_limited"}`)+copies/(members-1) >= flood
	})
	elapsed := time.Since(start)

	copies := metric(t, r, `plurenet_relay_frames_forwarded_total{kind="broadcast"}`)
	queued := copies * (1 + relayproto.KeySize) // an empty BroadcastRecv
	// Whatever the machine's speed, the rate limit cannot have let more
	// through than its burst, its rate over the run, and one frame's
	// charge (the debt a charge above the burst may leave).
	oneCharge := relayproto.Charge(1+relayproto.KeySize, members-1)
	budget := float64(relayproto.MaxFrame) + rate*elapsed.Seconds() + float64(oneCharge)
	t.Logf("%d empty broadcasts into %d members in %v: %.0f copies queued, %.0f bytes; the rate limit allows at most %.0f",
		flood, members, elapsed.Round(time.Millisecond), copies, queued, budget)
	if queued > budget {
		t.Fatalf("the relay queued %.0f bytes of broadcasts where the sender's rate allows %.0f: fan-out is not charged", queued, budget)
	}
	charged := metric(t, r, "plurenet_relay_rate_charged_bytes_total")
	// Charged: each copy's size plus FrameOverhead, so queued < charged;
	// the unicast "done" is in charged too.
	if charged == 0 || queued > charged {
		t.Fatalf("queued %.0f bytes for %.0f bytes charged, want queued <= charged", queued, charged)
	}
	t.Logf("queued/charged = %.2f (the relay before this fix: ~1,400)", queued/charged)
	if drops := metric(t, r, `plurenet_relay_drops_total{reason="rate_limited"}`); drops == 0 {
		t.Fatal("no broadcast was rate limited")
	}
}

func TestMaxMembersPerRendezvous(t *testing.T) {
	r := newRelay(t, relayserver.Config{MaxMembersPerRendezvous: 3})
	rv := testkit.Admission(1)
	k1, k2, k3 := testkit.Key(t), testkit.Key(t), testkit.Key(t)
	first := connect(t, r, k1, rv)
	connect(t, r, k2, rv)
	connect(t, r, k3, rv)

	refuse := func() {
		t.Helper()
		ws := dialWS(t, r.url, nil)
		sh := readServerHello(t, ws)
		k := testkit.Key(t)
		ch := answer(t, sh, k, k, rv)
		writeMsg(t, ws, ch.Append(nil))
		expectClose(t, ws, relayproto.ErrRendezvousFull, websocket.StatusTryAgainLater)
	}
	refuse() // a fourth key
	if got := metric(t, r, `plurenet_relay_handshakes_total{result="rendezvous_full"}`); got != 1 {
		t.Fatalf("rendezvous_full = %v, want 1", got)
	}
	// A member's second connection (make-before-break) adds no key.
	connect(t, r, k2, rv)
	// The cap is per rendezvous.
	connect(t, r, testkit.Key(t), testkit.Admission(2))
	// A place frees when a key's last connection leaves.
	writeMsg(t, first.ws, relayproto.AppendLeave(nil))
	expectClose(t, first.ws, 0, websocket.StatusNormalClosure)
	testkit.Eventually(t, "k1 gone", func() bool { return r.srv.Stats().Connections == 4 })
	connect(t, r, testkit.Key(t), rv)
	refuse() // a fifth key
}

// Each prefix level counted through X-Forwarded-For, as the relay sees a
// client behind its ingress: one home's /56 cannot hold more than its
// share by spreading over its /64s.
func TestIPv6PrefixLimitsHTTP(t *testing.T) {
	r := newRelay(t, relayserver.Config{MaxConnsPerIP: 1, TrustProxyHeaders: true})
	for _, s := range []struct {
		addr string
		want int
	}{
		{"2001:db8:0:100::1", http.StatusSwitchingProtocols},
		{"2001:db8:0:101::1", http.StatusSwitchingProtocols}, // the /56 holds 2 (twice the per-address 1)
		{"2001:db8:0:102::1", http.StatusTooManyRequests},
		{"2001:db8:0:200::1", http.StatusSwitchingProtocols},
		{"2001:db8:0:201::1", http.StatusSwitchingProtocols}, // the /48 holds 4
		{"2001:db8:0:300::1", http.StatusTooManyRequests},
		{"2001:db8:1::1", http.StatusSwitchingProtocols},
	} {
		if got := dialStatus(t, r, xff(s.addr)); got != s.want {
			t.Fatalf("from %s: HTTP %d, want %d", s.addr, got, s.want)
		}
	}
	if got := metric(t, r, `plurenet_relay_handshakes_total{result="refused_ip_conns"}`); got != 2 {
		t.Fatalf("refused_ip_conns = %v, want 2", got)
	}
}
