package direct

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
)

// orderKeys returns two keys, the controlling one first.
func orderKeys(t *testing.T) (ctrl, ctld nodekey.Private) {
	a, b := testkit.Key(t), testkit.Key(t)
	if (&Transport{self: a.Public()}).controlling(b.Public()) {
		return a, b
	}
	return b, a
}

// TestSignalLoss: the first offers and answers are lost; retransmission
// still makes the path direct.
func TestSignalLoss(t *testing.T) {
	n := newSignalNet()
	var mu sync.Mutex
	dropped := map[signalType]int{}
	n.drop = func(_, _ nodekey.Public, msg []byte) bool {
		s, err := parseSignal(msg)
		if err != nil {
			t.Errorf("sent an unparsable signal: %v", err)
			return true
		}
		mu.Lock()
		defer mu.Unlock()
		if dropped[s.Type] < 2 {
			dropped[s.Type]++
			return true
		}
		return false
	}
	ka, kb := orderKeys(t)
	a, b := newLoopback(t, n, ka, nil), newLoopback(t, n, kb, nil)
	a.AddPeer(kb.Public())
	b.AddPeer(ka.Public())
	waitState(t, a, kb.Public(), StateDirect, 30*time.Second)
	waitState(t, b, ka.Public(), StateDirect, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if dropped[sigOffer] < 2 || dropped[sigAnswer] < 1 {
		t.Fatalf("test did not drop what it meant to: %v", dropped)
	}
}

// TestPeerRestarts: either side restarting (same key, new socket) gets a
// new direct path: the controlled one asks for a session, the controlling
// one's new session ids supersede its old ones.
func TestPeerRestarts(t *testing.T) {
	for _, restartCtrl := range []bool{false, true} {
		name := "controlled restarts"
		if restartCtrl {
			name = "controlling restarts"
		}
		t.Run(name, func(t *testing.T) {
			n := newSignalNet()
			kc, kd := orderKeys(t)
			c, d := newLoopback(t, n, kc, nil), newLoopback(t, n, kd, nil)
			c.AddPeer(kd.Public())
			d.AddPeer(kc.Public())
			waitState(t, c, kd.Public(), StateDirect, 20*time.Second)
			waitState(t, d, kc.Public(), StateDirect, 20*time.Second)

			stay, gone, goneKey, stayKey := c, d, kd, kc
			if restartCtrl {
				stay, gone, goneKey, stayKey = d, c, kc, kd
			}
			gone.Close()
			again := newLoopback(t, n, goneKey, nil)
			again.AddPeer(stayKey.Public())
			pi := waitState(t, again, stayKey.Public(), StateDirect, 40*time.Second)
			if pi.Remote != stay.LocalAddr() {
				t.Fatalf("restarted side's remote %v, want %v", pi.Remote, stay.LocalAddr())
			}
			deadline := time.Now().Add(40 * time.Second)
			for {
				pi, _ := stay.PathInfo(goneKey.Public())
				if pi.State == StateDirect && pi.Remote == again.LocalAddr() {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("staying side's path %+v, want direct to %v", pi, again.LocalAddr())
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestRemovePeer: a removed peer is unreachable and unknown.
func TestRemovePeer(t *testing.T) {
	n := newSignalNet()
	ka, kb := testkit.Key(t), testkit.Key(t)
	a, b := newLoopback(t, n, ka, nil), newLoopback(t, n, kb, nil)
	a.AddPeer(kb.Public())
	b.AddPeer(ka.Public())
	waitState(t, a, kb.Public(), StateDirect, 20*time.Second)
	a.RemovePeer(kb.Public())
	if a.Reachable(kb.Public()) {
		t.Fatal("removed peer still reachable")
	}
	if _, ok := a.PathInfo(kb.Public()); ok {
		t.Fatal("removed peer still has path info")
	}
	if err := a.Send(kb.Public(), make([]byte, 64)); !errors.Is(err, ErrNoDirectPath) {
		t.Fatalf("Send to removed peer: %v", err)
	}
	if err := a.HandleSignal(kb.Public(), []byte{1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("signal from a removed peer accepted")
	}
	a.AddPeer(a.self) // own key: ignored
	if _, ok := a.PathInfo(a.self); ok {
		t.Fatal("own key added as a peer")
	}
}

// TestReceiveAttribution: without a Bind open, the idle reader hands
// WireGuard packets from a validated path to Deliver with the peer's key,
// and drops (and counts) WireGuard from unknown sources and non-WireGuard,
// non-STUN datagrams.
func TestReceiveAttribution(t *testing.T) {
	n := newSignalNet()
	ka, kb := testkit.Key(t), testkit.Key(t)
	got := make(chan nodekey.Public, 10)
	a := newLoopback(t, n, ka, nil)
	b := newLoopback(t, n, kb, func(c *Config) {
		c.Deliver = func(from nodekey.Public, pkt []byte) { got <- from }
	})
	a.AddPeer(kb.Public())
	b.AddPeer(ka.Public())
	waitState(t, a, kb.Public(), StateDirect, 20*time.Second)
	waitState(t, b, ka.Public(), StateDirect, 20*time.Second)

	pkt := make([]byte, 64)
	pkt[0] = 4
	if err := a.SendBatch(kb.Public(), [][]byte{pkt, pkt}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case k := <-got:
			if k != ka.Public() {
				t.Fatalf("attributed to %s, want %s", k.ShortString(), ka.Public().ShortString())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("WireGuard packet not delivered")
		}
	}

	stranger, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(b.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	if _, err := stranger.Write(pkt); err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.Write([]byte("hello, not a protocol we speak")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := b.Stats()
		if st.DropsUnknownSrc >= 1 && st.DropsOther >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stranger's datagrams not counted: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case k := <-got:
		t.Fatalf("stranger's packet delivered as %s", k.ShortString())
	default:
	}
}

// TestCloseIdempotent: Close twice, and calls after Close fail cleanly.
func TestCloseIdempotent(t *testing.T) {
	n := newSignalNet()
	ka, kb := testkit.Key(t), testkit.Key(t)
	a := newLoopback(t, n, ka, nil)
	a.AddPeer(kb.Public())
	a.Close()
	a.Close()
	a.AddPeer(kb.Public())
	if a.Reachable(kb.Public()) {
		t.Fatal("reachable after Close")
	}
	fn, stop := a.OpenReceive()
	defer stop()
	if _, err := fn(make([][]byte, 1), make([]int, 1), nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("receive after Close: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	sig := func(nodekey.Public, []byte) error { return nil }
	k := testkit.Key(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no signal", Config{PrivateKey: k}},
		{"no key", Config{Signal: sig}},
		{"bad port", Config{PrivateKey: k, Signal: sig, ListenPort: 70000}},
		{"bad stun", Config{PrivateKey: k, Signal: sig, STUNServers: []string{"nohostport"}}},
		{"stun port 0", Config{PrivateKey: k, Signal: sig, STUNServers: []string{"h:0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tr, err := New(tt.cfg); err == nil {
				tr.Close()
				t.Fatal("accepted")
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	for attempts, want := range []struct{ lo, hi time.Duration }{
		{retryMin / 2, retryMin}, {retryMin, 2 * retryMin}, {2 * retryMin, 4 * retryMin},
	} {
		for range 50 {
			if d := retryDelay(attempts); d < want.lo || d > want.hi {
				t.Fatalf("retryDelay(%d) = %v, want %v..%v", attempts, d, want.lo, want.hi)
			}
		}
	}
	for _, a := range []int{10, 20, 1000} {
		if d := retryDelay(a); d < retryMax/2 || d > retryMax {
			t.Fatalf("retryDelay(%d) = %v, want %v..%v", a, d, retryMax/2, retryMax)
		}
	}
}
