package direct

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

// labWait bounds waits in the lab tests; nothing asserts speed.
const labWait = 20 * time.Second

// labSTUN runs relayserver.ServeSTUN on h:3478 and returns "ip:port".
func labSTUN(t *testing.T, h *netlab.Host) string {
	t.Helper()
	return labSTUNOn(t, h, h.Addr())
}

// labSTUNOn runs relayserver.ServeSTUN on addr:3478 in h and returns
// "ip:port" ("[ip]:port" for IPv6).
func labSTUNOn(t *testing.T, h *netlab.Host, addr netip.Addr) string {
	t.Helper()
	var pc net.PacketConn
	if err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(addr, 3478).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = relayserver.ServeSTUN(ctx, pc, testLogger(t))
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		pc.Close()
	})
	return pc.LocalAddr().String()
}

// labTransport creates a transport inside h (its socket and interface list
// belong to h's namespace).
func labTransport(t *testing.T, h *netlab.Host, n *signalNet, key nodekey.Private, stunAddr string, deliver func(nodekey.Public, []byte)) *Transport {
	t.Helper()
	var tr *Transport
	if err := h.Do(func() error {
		var err error
		tr, err = New(Config{
			PrivateKey:  key,
			STUNServers: []string{stunAddr},
			Signal:      n.sender(key.Public()),
			Deliver:     deliver,
			Logger:      testLogger(t).With("host", h.Name()),
		})
		return err
	}); err != nil {
		t.Fatalf("transport in %s: %v", h.Name(), err)
	}
	t.Cleanup(func() { tr.Close() })
	n.add(tr)
	return tr
}

// TestLabHolePunch: two hosts behind two home NAT routers find a direct
// path through a STUN responder on the internet; the path's remote is the
// other router's WAN address, and WireGuard-shaped packets cross it. A
// host whose firewall drops UDP never gets a direct path.
func TestLabHolePunch(t *testing.T) {
	lab := netlab.New(t)
	r1 := lab.NATRouter("r1", netlab.RouterConfig{})
	r2 := lab.NATRouter("r2", netlab.RouterConfig{})
	r3 := lab.NATRouter("r3", netlab.RouterConfig{})
	ha, hb, hc := lab.Host("a", r1), lab.Host("b", r2), lab.Host("c", r3)
	hc.Firewall(netlab.Corporate)
	stunAddr := labSTUN(t, lab.Host("stun", lab.Internet()))

	n := newSignalNet()
	ka, kb, kc := testkit.Key(t), testkit.Key(t), testkit.Key(t)
	got := make(chan nodekey.Public, 4)
	a := labTransport(t, ha, n, ka, stunAddr, nil)
	b := labTransport(t, hb, n, kb, stunAddr, func(from nodekey.Public, _ []byte) { got <- from })
	c := labTransport(t, hc, n, kc, stunAddr, nil)

	start := time.Now()
	a.AddPeer(kb.Public())
	b.AddPeer(ka.Public())
	a.AddPeer(kc.Public())
	c.AddPeer(ka.Public())
	pa := waitState(t, a, kb.Public(), StateDirect, labWait)
	took := time.Since(start)
	pb := waitState(t, b, ka.Public(), StateDirect, labWait)
	t.Logf("a<->b direct through two NATs in %v (target 5s); a sees b at %v, b sees a at %v, rtt %v",
		took.Round(time.Millisecond), pa.Remote, pb.Remote, pa.RTT)
	if pa.Remote.Addr() != r2.Addr() || pb.Remote.Addr() != r1.Addr() {
		t.Fatalf("remotes %v and %v, want the routers' WAN addresses %v and %v (server-reflexive)", pa.Remote, pb.Remote, r2.Addr(), r1.Addr())
	}

	pkt := make([]byte, 96)
	pkt[0] = 4
	if err := a.SendBatch(kb.Public(), [][]byte{pkt}); err != nil {
		t.Fatal(err)
	}
	select {
	case from := <-got:
		if from != ka.Public() {
			t.Fatalf("packet attributed to %s", from.ShortString())
		}
	case <-time.After(labWait):
		t.Fatal("packet on the direct path did not arrive")
	}

	// c's firewall drops UDP: its attempts must fail, never go direct.
	deadline := time.Now().Add(connectTimeout + 2*time.Second)
	sawLost := false
	for time.Now().Before(deadline) {
		for _, pi := range []PathInfo{info(a, kc.Public()), info(c, ka.Public())} {
			if pi.State == StateDirect {
				t.Fatalf("firewalled host got a direct path: %+v", pi)
			}
		}
		if info(c, ka.Public()).State == StateLost {
			sawLost = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !sawLost {
		t.Fatalf("firewalled host's attempt never failed: %+v", info(c, ka.Public()))
	}
	if a.Reachable(kc.Public()) || c.Reachable(ka.Public()) {
		t.Fatal("firewalled peer reachable")
	}
}

func info(tr *Transport, k nodekey.Public) PathInfo {
	pi, _ := tr.PathInfo(k)
	return pi
}
