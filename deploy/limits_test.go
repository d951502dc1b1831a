package deploy_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
)

// Relay resource limits (docs/security.md), checked on both relays.

func testMetricsNotPublic(t *testing.T, tg *target) {
	if code, _ := get(t, tg.base+"/metrics"); code != http.StatusNotFound {
		t.Errorf("GET /metrics on the relay listener = %d, want 404: clients must not read the metrics", code)
	}
	if code, body := get(t, tg.base+"/healthz"); code != http.StatusOK || body != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 ok on the relay listener, where platforms probe", code, body)
	}
	code, body := get(t, tg.metrics+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "plurenet_relay_connections") ||
		!strings.Contains(body, "plurenet_relay_rate_charged_bytes_total") {
		t.Errorf("GET /metrics on the metrics listener = %d\n%s", code, body)
	}
}

// testMembersCap runs with maxMembers 3.
func testMembersCap(t *testing.T, tg *target) {
	rv := testkit.Admission(30)
	k1 := testkit.Key(t)
	connect(t, tg, k1, rv)
	connect(t, tg, testkit.Key(t), rv)
	connect(t, tg, testkit.Key(t), rv)
	r := dialRaw(t, tg)
	fourth := testkit.Key(t)
	h := r.hello(fourth, fourth, rv)
	r.write(h.Append(nil))
	r.expectFatal(relayproto.ErrRendezvousFull, websocket.StatusTryAgainLater)
	// A member's second connection adds no key; another rendezvous is
	// another count.
	connect(t, tg, k1, rv)
	connect(t, tg, fourth, testkit.Admission(31))
}

// testSnapshotOrder: a joiner's snapshot is written whole before any later
// presence change, however it is queued (the Node relay streams it 64
// frames at a time), so a PeerGone never overtakes its PeerPresent.
func testSnapshotOrder(t *testing.T, tg *target) {
	const members = 90 // over the Node relay's window of 64; under the handshake burst of 100
	rv := testkit.Admission(34)
	var first *raw
	for i := range members {
		r := connect(t, tg, testkit.Key(t), rv) // reads nothing
		if i == 0 {
			first = r
		}
	}
	joiner := dialRaw(t, tg)
	joiner.join(testkit.Key(t), rv)
	// The joiner is in: its snapshot is queued. Now a member leaves.
	first.write(relayproto.AppendLeave(nil))
	present := map[relayproto.Key]bool{}
	for {
		f := joiner.next()
		if f.Type == relayproto.TypePeerPresent {
			present[f.Key] = true
			continue
		}
		if f.Type != relayproto.TypePeerGone {
			t.Fatalf("joiner got %v", f.Type)
		}
		if !present[f.Key] || len(present) != members {
			t.Fatalf("PeerGone %v after %d of %d snapshot frames (present before: %v)", f.Key.ShortString(), len(present), members, present[f.Key])
		}
		return
	}
}

// testBroadcastCharged runs with rate 1000 and burst 100,000 bytes: a 4000-
// byte broadcast to 10 members is charged 10 × (4033 + 64) = 40,970 bytes,
// so two pass from a full bucket and the rest wait for it to refill. When it
// was charged its 4001 bytes once, 24 of them passed.
func testBroadcastCharged(t *testing.T, tg *target) {
	const receivers = 10
	rv := testkit.Admission(32)
	sender := connect(t, tg, testkit.Key(t), rv)
	first := testkit.Key(t)
	rx := connect(t, tg, first, rv)
	for range receivers - 1 {
		connect(t, tg, testkit.Key(t), rv) // reads nothing
	}
	payload := make([]byte, 4000)
	for range 10 {
		sender.write(relayproto.AppendBroadcast(nil, payload))
	}
	// Handled in order: the marker arrives after every broadcast that passed.
	sender.write(relayproto.AppendSend(nil, first.Public(), []byte("done")))
	got := 0
	for {
		f := rx.next()
		if f.Type == relayproto.TypeRecv {
			break
		}
		if f.Type == relayproto.TypeBroadcastRecv {
			got++
		}
	}
	if got != 2 {
		t.Fatalf("%d of 10 broadcasts to %d members passed a 100,000-byte burst, want 2", got, receivers)
	}
	// The sender was told, without being cut off.
	for {
		f := sender.next()
		if f.Type == relayproto.TypeError {
			if f.Code != relayproto.ErrRateLimited {
				t.Fatalf("sender got Error %v: %s", f.Code, f.Message)
			}
			break
		}
	}
}

// testPrefixLimits runs with one connection per address and the proxy
// headers trusted: an IPv6 /56 holds two, a /48 four.
func testPrefixLimits(t *testing.T, tg *target) {
	for _, s := range []struct {
		addr string
		want int
	}{
		{"2001:db8:0:100::1", http.StatusSwitchingProtocols},
		{"2001:db8:0:100::2", http.StatusTooManyRequests}, // the same /64
		{"2001:db8:0:101::1", http.StatusSwitchingProtocols},
		{"2001:db8:0:1ff::1", http.StatusTooManyRequests}, // the /56 holds 2
		{"2001:db8:0:200::1", http.StatusSwitchingProtocols},
		{"2001:db8:0:2ab::1", http.StatusSwitchingProtocols},
		{"2001:db8:0:300::1", http.StatusTooManyRequests}, // the /48 holds 4
		{"2001:db8:1::1", http.StatusSwitchingProtocols},
		{"192.0.2.1", http.StatusSwitchingProtocols},
	} {
		if got := dialFrom(t, tg, s.addr); got != s.want {
			t.Fatalf("from %s: HTTP %d, want %d", s.addr, got, s.want)
		}
	}
}

// dialFrom attempts an upgrade as the proxy would forward one from addr,
// and returns the HTTP status (101 if admitted; the connection stays open
// to the end of the test).
func dialFrom(t *testing.T, tg *target, addr string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, tg.url, &websocket.DialOptions{
		Subprotocols: []string{relayproto.Subprotocol},
		HTTPHeader:   http.Header{"X-Forwarded-For": {addr}},
	})
	if err == nil {
		t.Cleanup(func() { ws.CloseNow() })
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", tg.url, err)
	}
	return resp.StatusCode
}

// waitMembersInRedis waits until rv's presence hash in Redis holds n keys.
func waitMembersInRedis(t *testing.T, redisURL string, rv relayproto.Rendezvous, n int64) {
	t.Helper()
	key := "plurenet:relay:v1:members:" + hex.EncodeToString(rv[:])
	waitRedis(t, redisURL, func(ctx context.Context, rdb *redis.Client) error {
		got, err := rdb.HLen(ctx, key).Result()
		if err != nil || got != n {
			return fmt.Errorf("the rendezvous has %d members in Redis (err %v), want %d", got, err, n)
		}
		return nil
	})
}

// TestBackplaneMemberCap: the member cap holds across instances of either
// implementation: an instance that admits a key on its own view evicts it
// when Redis says the rendezvous is full.
func TestBackplaneMemberCap(t *testing.T) {
	for _, pair := range [][2]impl{
		{impls[1], impls[1]}, // node + node
		{impls[0], impls[1]}, // go, then node
		{impls[1], impls[0]}, // node, then go
	} {
		t.Run(pair[0].name+"+"+pair[1].name, func(t *testing.T) {
			redisURL := startRedis(t)
			o := options{redis: redisURL, maxMembers: 2}
			i1 := pair[0].start(t, o)
			i2 := pair[1].start(t, o)
			rv := testkit.Admission(33)
			ka, kb := testkit.Key(t), testkit.Key(t)
			meet(t, i1, i1, ka, kb, rv)
			waitMembersInRedis(t, redisURL, rv.Rendezvous(), 2)
			// i2 has no one in rv: it admits the key on its empty view,
			// and Redis refuses it.
			late := dialRaw(t, i2)
			late.join(testkit.Key(t), rv)
			late.expectFatal(relayproto.ErrRendezvousFull, websocket.StatusTryAgainLater)
		})
	}
}
