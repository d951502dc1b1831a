package relayserver_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
	"github.com/plures/plurenet/transports/relay"
)

// backplaneConfig is a relay on rds with short presence timers, so that an
// instance's death is noticed within the test's patience. The refresh is
// well under half the TTL: a loaded -race run must not expire live members.
func backplaneConfig(rds *testRedis) relayserver.Config {
	return relayserver.Config{
		Backplane:        rds.url,
		BackplaneTTL:     3 * time.Second,
		BackplaneRefresh: 300 * time.Millisecond,
	}
}

// member is a transports/relay client with a reader that records presence
// changes and collects data messages, so the test can wait for either while
// it keeps sending.
type member struct {
	t   testing.TB
	c   *relay.Client
	key nodekey.Public
	in  chan relay.Message // data messages
	wg  sync.WaitGroup

	mu      sync.Mutex
	present map[nodekey.Public]bool
	gone    []nodekey.Public // every PeerGone, in order
}

func join(t testing.TB, url string, priv nodekey.Private, rv relayproto.AdmissionKey) *member {
	t.Helper()
	c, err := relay.New(relay.Config{
		URL: url, PrivateKey: priv, Admission: rv,
		Logger:     slog.New(slog.DiscardHandler),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	m := &member{t: t, c: c, key: priv.Public(), in: make(chan relay.Message, 1024), present: map[nodekey.Public]bool{}}
	m.wg.Go(func() {
		defer close(m.in)
		for {
			msg, err := c.Recv(context.Background())
			if err != nil {
				return
			}
			switch msg.Kind {
			case relay.KindPeerPresent:
				m.mu.Lock()
				m.present[msg.From] = true
				m.mu.Unlock()
			case relay.KindPeerGone:
				m.mu.Lock()
				delete(m.present, msg.From)
				m.gone = append(m.gone, msg.From)
				m.mu.Unlock()
			default:
				select {
				case m.in <- msg:
				default: // the test is not waiting for data now
				}
			}
		}
	})
	t.Cleanup(m.close)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *member) close() {
	m.c.Close()
	m.wg.Wait()
}

// await reads data messages until one matches, failing after patience.
// again, if not nil, is called at once and then every 200 ms, e.g. to resend
// a frame that may have been lost while the instances were still learning of
// each other.
func (m *member) await(what string, match func(relay.Message) bool, again func()) relay.Message {
	m.t.Helper()
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	if again != nil {
		again()
	}
	for {
		select {
		case msg, ok := <-m.in:
			if !ok {
				m.t.Fatalf("%s: client closed while waiting for %s", m.key.ShortString(), what)
			}
			if match(msg) {
				return msg
			}
		case <-tick.C:
			if again != nil {
				again()
			}
		case <-deadline.C:
			m.t.Fatalf("%s: gave up waiting for %s", m.key.ShortString(), what)
		}
	}
}

func (m *member) isPresent(k nodekey.Public) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.present[k]
}

func (m *member) awaitPresent(k nodekey.Public) {
	m.t.Helper()
	testkit.Eventually(m.t, m.key.ShortString()+" sees "+k.ShortString(), func() bool { return m.isPresent(k) })
}

// awaitGone waits for a PeerGone of k and fails if any other key was
// reported gone.
func (m *member) awaitGone(k nodekey.Public) {
	m.t.Helper()
	testkit.Eventually(m.t, m.key.ShortString()+" hears "+k.ShortString()+" is gone", func() bool { return !m.isPresent(k) })
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range m.gone {
		if g != k {
			m.t.Fatalf("%s: unexpected PeerGone %s", m.key.ShortString(), g.ShortString())
		}
	}
}

// exchange has from send (or broadcast, to == nil) payload until to... every
// receiver in rcv has it.
func exchange(t testing.TB, from *member, to *nodekey.Public, payload string, rcv ...*member) {
	t.Helper()
	send := func() {
		if to != nil {
			_ = from.c.Send(*to, []byte(payload))
		} else {
			_ = from.c.Broadcast([]byte(payload))
		}
	}
	kind := relay.KindUnicast
	if to == nil {
		kind = relay.KindBroadcast
	}
	for _, r := range rcv {
		r.await(fmt.Sprintf("%v %q from %s", kind, payload, from.key.ShortString()), func(msg relay.Message) bool {
			return msg.Kind == kind && msg.From == from.key && string(msg.Payload) == payload
		}, send)
	}
}

func TestBackplaneAcrossInstances(t *testing.T) {
	rds := startRedis(t)
	a := newRelay(t, backplaneConfig(rds))
	// b is an instance from before batch frames, as in a rolling upgrade.
	bcfg := backplaneConfig(rds)
	bcfg.NoBatches = true
	b := newRelay(t, bcfg)
	rv := testkit.Admission(7)

	a1 := join(t, a.url, testkit.Key(t), rv)
	b1 := join(t, b.url, testkit.Key(t), rv)
	a2 := join(t, a.url, testkit.Key(t), rv)
	// Presence crosses instances both ways, whoever came first.
	a1.awaitPresent(b1.key)
	a1.awaitPresent(a2.key)
	b1.awaitPresent(a1.key)
	b1.awaitPresent(a2.key)
	a2.awaitPresent(b1.key)

	exchange(t, a1, &b1.key, "a1 to b1", b1)
	exchange(t, b1, &a2.key, "b1 to a2", a2)
	exchange(t, b1, nil, "b1 to all", a1, a2)
	exchange(t, a2, nil, "a2 to all", a1, b1)
	// A batch to a member on another instance crosses as its packets:
	// the backplane carries Recv frames only, which b, knowing nothing of
	// batch frames, passes on to b1 (a RecvBatch would end b1's
	// connection: it did not ask for one). They arrive in order. await
	// resends the batch until its first packet arrives; the rest must
	// follow it.
	packets := [][]byte{[]byte("p1"), []byte("p2"), []byte("p3")}
	b1.await("a batch's first packet", func(msg relay.Message) bool {
		return msg.Kind == relay.KindUnicast && msg.From == a1.key && bytes.Equal(msg.Payload, packets[0])
	}, func() { _ = a1.c.SendBatch(b1.key, packets) })
	for _, p := range packets[1:] {
		select {
		case msg := <-b1.in:
			if msg.From != a1.key || !bytes.Equal(msg.Payload, p) {
				t.Fatalf("b1 got %q from %s in a1's batch, want %q", msg.Payload, msg.From.ShortString(), p)
			}
		case <-time.After(patience):
			t.Fatalf("b1: gave up waiting for %q of a1's batch", p)
		}
	}

	for _, c := range []struct {
		r      *testRelay
		series string
	}{
		{a, `plurenet_relay_backplane_published_total{kind="unicast"}`},
		{b, `plurenet_relay_backplane_received_total{kind="unicast"}`},
		{b, `plurenet_relay_backplane_published_total{kind="unicast"}`},
		{a, `plurenet_relay_backplane_received_total{kind="unicast"}`},
		{a, `plurenet_relay_backplane_published_total{kind="broadcast"}`},
		{b, `plurenet_relay_backplane_received_total{kind="broadcast"}`},
		{a, `plurenet_relay_backplane_up`},
	} {
		testkit.Eventually(t, c.series+" counted", func() bool { return metric(t, c.r, c.series) >= 1 })
	}

	// A member that leaves is gone everywhere at once, without waiting for
	// an expiry.
	a2.close()
	b1.awaitGone(a2.key)
	a1.awaitGone(a2.key)
}

// Members on one instance talk without Redis: nothing is published for
// them, even while the instance is on a backplane with others.
func TestBackplaneLocalDeliveryStaysLocal(t *testing.T) {
	rds := startRedis(t)
	a := newRelay(t, backplaneConfig(rds))
	b := newRelay(t, backplaneConfig(rds))
	rv := testkit.Admission(8)
	x := join(t, a.url, testkit.Key(t), rv)
	y := join(t, a.url, testkit.Key(t), rv)
	x.awaitPresent(y.key)
	y.awaitPresent(x.key)
	// A member of another rendezvous on b: the rendezvous of x and y must
	// still have no remote members.
	other := join(t, b.url, testkit.Key(t), testkit.Admission(9))
	_ = other

	const rounds = 20
	for i := range rounds {
		exchange(t, x, &y.key, fmt.Sprint("x to y ", i), y)
		exchange(t, y, nil, fmt.Sprint("y to all ", i), x)
	}
	for _, series := range []string{
		`plurenet_relay_backplane_published_total{kind="unicast"}`,
		`plurenet_relay_backplane_published_total{kind="broadcast"}`,
	} {
		if got := metric(t, a, series); got != 0 {
			t.Errorf("a: %s = %v after local traffic only, want 0", series, got)
		}
	}
	if got := metric(t, a, `plurenet_relay_frames_forwarded_total{kind="unicast"}`); got < rounds {
		t.Errorf("a forwarded %v unicast frames locally, want at least %d", got, rounds)
	}
	if got := metric(t, b, `plurenet_relay_backplane_received_total{kind="broadcast"}`); got != 0 {
		t.Errorf("b received %v broadcasts of a rendezvous it has no member in", got)
	}

	// Once a member of the rendezvous is on b, broadcasts go through Redis.
	z := join(t, b.url, testkit.Key(t), rv)
	x.awaitPresent(z.key)
	exchange(t, y, nil, "now to b too", z)
	testkit.Eventually(t, "a counts a published broadcast", func() bool {
		return metric(t, a, `plurenet_relay_backplane_published_total{kind="broadcast"}`) >= 1
	})
}

// An instance that dies (Close without Drain) leaves its members in Redis;
// they expire, the survivor reports them gone, and members that reconnect
// to the survivor carry on.
func TestBackplaneInstanceDies(t *testing.T) {
	rds := startRedis(t)
	a := newRelay(t, backplaneConfig(rds))
	b := newRelay(t, backplaneConfig(rds))
	rv := testkit.Admission(10)

	moverKey := testkit.Key(t)
	mover := join(t, a.url, moverKey, rv)      // reconnects to b after a dies
	lost := join(t, a.url, testkit.Key(t), rv) // dies with a
	stay := join(t, b.url, testkit.Key(t), rv)
	stay.awaitPresent(mover.key)
	stay.awaitPresent(lost.key)
	exchange(t, stay, &mover.key, "before", mover)

	a.srv.Close()
	a.hs.Close()
	mover.close()
	lost.close()
	if got := metric(t, b, `plurenet_relay_backplane_received_total{kind="leave"}`); got != 0 {
		t.Fatalf("b heard %v leaves from a crashed instance", got)
	}

	moved := join(t, b.url, moverKey, rv)
	exchange(t, moved, &stay.key, "after, to stay", stay)
	exchange(t, stay, &moved.key, "after, to moved", moved)
	// lost expires from b's view: both of b's members hear it is gone.
	// awaitGone fails on any other PeerGone, so mover (now on b) is not
	// reported gone although its entry from a was overwritten, not
	// removed.
	stay.awaitGone(lost.key)
	moved.awaitGone(lost.key)
	if peers := stay.c.Peers(); len(peers) != 1 || peers[0] != moved.key {
		t.Fatalf("stay sees %d peers, want only the mover", len(peers))
	}
}

// While Redis is down each instance serves its own members; frames for
// other instances are dropped and counted; when Redis is back the instances
// find each other again.
func TestBackplaneRedisOutage(t *testing.T) {
	rds := startRedis(t)
	a := newRelay(t, backplaneConfig(rds))
	b := newRelay(t, backplaneConfig(rds))
	rv := testkit.Admission(11)
	a1 := join(t, a.url, testkit.Key(t), rv)
	a2 := join(t, a.url, testkit.Key(t), rv)
	b1 := join(t, b.url, testkit.Key(t), rv)
	a1.awaitPresent(b1.key)
	exchange(t, a1, &b1.key, "before", b1)

	rds.stop()
	testkit.Eventually(t, "a notices Redis is down", func() bool {
		_ = a1.c.Send(b1.key, []byte("into the void"))
		return metric(t, a, `plurenet_relay_backplane_drops_total{reason="redis_error"}`)+
			metric(t, a, `plurenet_relay_backplane_drops_total{reason="queue_full"}`) > 0
	})
	exchange(t, a1, &a2.key, "local still works", a2)

	rds.start() // empty: the instances must register their members again
	exchange(t, a1, &b1.key, "after", b1)
	exchange(t, b1, nil, "after, to all", a1, a2)
	testkit.Eventually(t, "backplane up again", func() bool {
		return metric(t, a, `plurenet_relay_backplane_up`) == 1 && metric(t, b, `plurenet_relay_backplane_up`) == 1
	})
}

func TestBackplaneConfig(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  relayserver.Config
		want string
	}{
		{"bad URL", relayserver.Config{Backplane: "http://x"}, "backplane URL"},
		{"refresh too slow", relayserver.Config{Backplane: "redis://127.0.0.1:1", BackplaneTTL: time.Second, BackplaneRefresh: time.Second}, "BackplaneRefresh"},
		{"negative TTL", relayserver.Config{BackplaneTTL: -time.Second}, "BackplaneTTL"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, err := relayserver.New(c.cfg)
			if err == nil {
				srv.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %s", err, c.want)
			}
		})
	}
}
