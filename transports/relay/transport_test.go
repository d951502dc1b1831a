package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	wgconn "golang.zx2c4.com/wireguard/conn"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
	"github.com/plures/plurenet/transports"
)

// hooked is what a client with hooks handed up.
type hooked struct {
	wg     chan received
	sealed chan received
	peers  chan peerEvent
}

type received struct {
	from nodekey.Public
	b    []byte
}

type peerEvent struct {
	key     nodekey.Public
	present bool
}

// newHookedClient starts a client whose hooks report into channels.
func newHookedClient(t *testing.T, cfg Config) (*Client, *hooked) {
	t.Helper()
	h := &hooked{wg: make(chan received, 16), sealed: make(chan received, 16), peers: make(chan peerEvent, 16)}
	cfg.Deliver = func(from nodekey.Public, pkt []byte) {
		h.wg <- received{from, bytes.Clone(pkt)} // pkt is the reader's buffer
	}
	cfg.OnSealed = func(from nodekey.Public, msg []byte) { h.sealed <- received{from, msg} }
	cfg.OnPeer = func(k nodekey.Public, present bool) { h.peers <- peerEvent{k, present} }
	return newClient(t, cfg), h
}

func next[T any](t *testing.T, ch chan T, what string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// wgLike is a WireGuard data message as transports.Classify sees one.
func wgLike(n int, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, n)
	b[0], b[1], b[2], b[3] = 4, 0, 0, 0
	return b
}

func sealedLike(n int, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, n)
	b[0] = mesh.SealedHeader
	return b
}

// TestTransportHooks: a client with hooks hands WireGuard unicasts to
// Deliver, sealed messages (unicast and broadcast) to OnSealed with the
// relay-authenticated sender, presence changes to OnPeer, and drops the
// rest; Reachable follows presence, and Recv refuses.
func TestTransportHooks(t *testing.T) {
	r := startRelay(t, relayserver.Config{}, nil)
	rv := newAdmission(t)
	a := newClient(t, Config{URL: r.url, Admission: rv})
	waitConnected(t, a)
	b, h := newHookedClient(t, Config{URL: r.url, Admission: rv, Name: "relay:test"})
	if got := next(t, h.peers, "a present"); got != (peerEvent{a.PublicKey(), true}) {
		t.Fatalf("OnPeer got %+v, want a present", got)
	}
	if !b.Reachable(a.PublicKey()) || b.Reachable(b.PublicKey()) {
		t.Fatalf("Reachable(a) = %v, Reachable(self) = %v; want true, false", b.Reachable(a.PublicKey()), b.Reachable(b.PublicKey()))
	}
	if b.Name() != "relay:test" {
		t.Fatalf("Name() = %q", b.Name())
	}
	if _, err := b.Recv(context.Background()); !errors.Is(err, ErrHooks) {
		t.Fatalf("Recv on a hooked client: err = %v, want ErrHooks", err)
	}
	waitPresent(t, a, b.PublicKey())

	send := func(payload []byte) {
		t.Helper()
		if err := a.Send(b.PublicKey(), payload); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	// Ignored: too short for WireGuard, an unknown first byte, a sealed
	// header on a message too large, WireGuard broadcast. Each is sent
	// before a message that is handed up, so arrival order shows that
	// the ignored one was dropped, not delayed.
	send([]byte{4, 0, 0, 0, 1, 2})
	send(bytes.Repeat([]byte{0x77}, 100))
	send(sealedLike(mesh.MaxSealed+1, 3))
	if err := a.Broadcast(wgLike(64, 4)); err != nil {
		t.Fatal(err)
	}
	wg := wgLike(1400, 5)
	send(wg)
	if got := next(t, h.wg, "WireGuard unicast"); got.from != a.PublicKey() || !bytes.Equal(got.b, wg) {
		t.Fatalf("Deliver got %d bytes from %s", len(got.b), got.from.ShortString())
	}
	uni := sealedLike(mesh.MinSealed, 6)
	send(uni)
	if got := next(t, h.sealed, "sealed unicast"); got.from != a.PublicKey() || !bytes.Equal(got.b, uni) {
		t.Fatalf("OnSealed got %x from %s", got.b, got.from.ShortString())
	}
	bc := sealedLike(200, 7)
	if err := a.Broadcast(bc); err != nil {
		t.Fatal(err)
	}
	if got := next(t, h.sealed, "sealed broadcast"); got.from != a.PublicKey() || !bytes.Equal(got.b, bc) {
		t.Fatalf("OnSealed got %x from %s", got.b, got.from.ShortString())
	}
	if st := b.Status(); st.RecvIgnored != 4 || len(h.wg) != 0 || len(h.sealed) != 0 {
		t.Fatalf("ignored %d frames (want 4); extra deliveries %d, %d", st.RecvIgnored, len(h.wg), len(h.sealed))
	}

	a.Close()
	if got := next(t, h.peers, "a gone"); got != (peerEvent{a.PublicKey(), false}) {
		t.Fatalf("OnPeer got %+v, want a gone", got)
	}
	if b.Reachable(a.PublicKey()) {
		t.Fatal("Reachable(a) after a left")
	}
}

// TestTransportIntoBind: WireGuard messages a client hands to the Bind come
// out of the Bind's receive function intact, in order and attributed to
// the sender: whether the client copies them (Deliver) or hands over the
// buffers it read them into (Inbox); at every frame size around the inbound
// buffer's (a frame that fits it, one that fills it exactly, ones that go
// on into the connection's large buffer, an MTU of 9000); and whether the
// sender sends them one by one or as a batch (SendBatch), which goes in
// batch frames through a relay that offers them and one by one through one
// that does not.
func TestTransportIntoBind(t *testing.T) {
	const hdr = 1 + nodekey.Size // a Recv frame's header
	sizes := []int{148, 1452, transports.InboundBufferSize - hdr, transports.InboundBufferSize - hdr + 1, 9032}
	for i := range 40 {
		sizes = append(sizes, 100+i)
	}
	tests := []struct {
		name      string
		inbox     bool
		batch     bool
		noBatches bool // the relay offers no batch frames
	}{
		{name: "Deliver"},
		{name: "Inbox", inbox: true},
		{name: "SendBatch/Inbox", inbox: true, batch: true},
		{name: "SendBatch/Deliver", batch: true},
		{name: "SendBatch/relay without batches", inbox: true, batch: true, noBatches: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, relayserver.Config{NoBatches: tt.noBatches}, nil)
			rv := newAdmission(t)
			bind := transports.NewBind(transports.BindConfig{Logger: quietLogger()})
			fns, _, err := bind.Open(0)
			if err != nil {
				t.Fatal(err)
			}
			defer bind.Close()
			cfg := Config{URL: r.url, Admission: rv}
			if tt.inbox {
				cfg.Inbox = bind
			} else {
				cfg.Deliver = bind.Deliver
			}
			a := newClient(t, Config{URL: r.url, Admission: rv})
			b := newClient(t, cfg)
			waitConnected(t, a)
			waitConnected(t, b)
			testkit.Eventually(t, "b present at a", func() bool { return a.Reachable(b.PublicKey()) })
			var pkts [][]byte
			for i, n := range sizes {
				pkts = append(pkts, wgLike(n, byte(i)))
			}
			before := a.Status().SentFrames
			if tt.batch {
				if err := a.SendBatch(b.PublicKey(), pkts); err != nil {
					t.Fatalf("SendBatch: %v", err)
				}
			} else {
				for i, p := range pkts {
					if err := a.Send(b.PublicKey(), p); err != nil {
						t.Fatalf("Send %d (%d bytes): %v", i, len(p), err)
					}
				}
			}
			bufs := make([][]byte, 8)
			for i := range bufs {
				bufs[i] = make([]byte, 1<<16)
			}
			lens := make([]int, len(bufs))
			eps := make([]wgconn.Endpoint, len(bufs))
			for got := 0; got < len(sizes); {
				n, err := fns[0](bufs, lens, eps)
				if err != nil {
					t.Fatal(err)
				}
				for j := range n {
					if want := pkts[got]; !bytes.Equal(bufs[j][:lens[j]], want) {
						t.Fatalf("packet %d: got %d bytes %x..., want %d bytes", got, lens[j], bufs[j][:8], len(want))
					}
					if ep, ok := eps[j].(transports.Endpoint); !ok || ep.Key != a.PublicKey() {
						t.Fatalf("packet %d: endpoint %v, want a's key", got, eps[j])
					}
					got++
				}
			}
			// The batch took two frames (about 20 KiB in frames of at
			// most 16 KiB); without batches, one each. The writer
			// counts a frame after writing it, so the count may lag
			// what arrived.
			want := uint64(len(pkts))
			if tt.batch && !tt.noBatches {
				want = 2
			}
			testkit.Eventually(t, fmt.Sprintf("%d packets sent in %d frames", len(pkts), want), func() bool {
				return a.Status().SentFrames-before == want
			})
		})
	}
}

// TestTransportOrder: a sealed message reaches OnSealed before the
// WireGuard message sent after it reaches Deliver, and OnSealed has
// returned by then: a member's announcement is applied before its
// handshake, right behind it, reaches the device. Repeated, so that a
// hand-over to another goroutine would show.
func TestTransportOrder(t *testing.T) {
	r := startRelay(t, relayserver.Config{}, nil)
	rv := newAdmission(t)
	a := newClient(t, Config{URL: r.url, Admission: rv})
	var mu sync.Mutex
	var order []byte
	done := make(chan struct{}, 1)
	b := newClient(t, Config{URL: r.url, Admission: rv,
		OnSealed: func(_ nodekey.Public, msg []byte) {
			time.Sleep(time.Millisecond) // the node configuring a peer
			mu.Lock()
			order = append(order, 's')
			mu.Unlock()
		},
		Deliver: func(nodekey.Public, []byte) {
			mu.Lock()
			order = append(order, 'w')
			mu.Unlock()
			done <- struct{}{}
		},
	})
	waitConnected(t, a)
	waitConnected(t, b)
	testkit.Eventually(t, "b present at a", func() bool { return a.Reachable(b.PublicKey()) })
	for i := range 20 {
		if err := a.Send(b.PublicKey(), sealedLike(mesh.MinSealed, byte(i))); err != nil {
			t.Fatal(err)
		}
		if err := a.Send(b.PublicKey(), wgLike(148, byte(i))); err != nil {
			t.Fatal(err)
		}
		next(t, done, "the WireGuard message")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := strings.Repeat("sw", 20); string(order) != want {
		t.Fatalf("hook order %q, want %q", order, want)
	}
}
