package relayserver_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
)

// The member cap holds across instances: Redis counts the keys of a
// rendezvous, and an instance that admitted a key on its own (older or
// empty) view evicts it when Redis says the rendezvous is full.
func TestBackplaneMemberCap(t *testing.T) {
	rds := startRedis(t)
	cfg := backplaneConfig(rds)
	cfg.MaxMembersPerRendezvous = 2
	a := newRelay(t, cfg)
	b := newRelay(t, cfg)
	rv := testkit.Admission(8)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", rds.port)})
	t.Cleanup(func() { rdb.Close() })
	rvHash := rv.Rendezvous()
	inRedis := func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		n, err := rdb.HLen(ctx, "plurenet:relay:v1:members:"+hex.EncodeToString(rvHash[:])).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	a1 := join(t, a.url, testkit.Key(t), rv)
	a2 := join(t, a.url, testkit.Key(t), rv)
	a1.awaitPresent(a2.key)
	testkit.Eventually(t, "both of a's members in Redis", func() bool { return inRedis() == 2 })

	// b has no one in rv, so no view of it: it admits the key, and Redis
	// refuses it.
	late := connect(t, b, testkit.Key(t), rv)
	expectClose(t, late.ws, relayproto.ErrRendezvousFull, websocket.StatusTryAgainLater)
	// The eviction is counted after the connection is failed, so its
	// close can reach the client first.
	testkit.Eventually(t, "evicted = 1", func() bool { return metric(t, b, "plurenet_relay_backplane_evicted_total") == 1 })
	if n := inRedis(); n != 2 {
		t.Fatalf("%d members in Redis, cap 2", n)
	}

	// A place freed on a is one b can fill; then b's own view is full,
	// and b refuses the next key before its Welcome.
	a1.close()
	testkit.Eventually(t, "a1 gone from Redis", func() bool { return inRedis() == 1 })
	b1 := join(t, b.url, testkit.Key(t), rv)
	b1.awaitPresent(a2.key)
	a2.awaitPresent(b1.key)
	ws := dialWS(t, b.url, nil)
	sh := readServerHello(t, ws)
	k := testkit.Key(t)
	ch := answer(t, sh, k, k, rv)
	writeMsg(t, ws, ch.Append(nil))
	if frames := expectClose(t, ws, relayproto.ErrRendezvousFull, websocket.StatusTryAgainLater); len(frames) != 0 {
		t.Fatalf("refused joiner got %d frames before its Error (a Welcome?)", len(frames))
	}
	if got := metric(t, b, `plurenet_relay_handshakes_total{result="rendezvous_full"}`); got != 1 {
		t.Fatalf("rendezvous_full on b = %v, want 1", got)
	}
	if n := inRedis(); n != 2 {
		t.Fatalf("%d members in Redis, cap 2", n)
	}
}
