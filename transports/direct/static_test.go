package direct

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
)

// staticWait bounds waits for datagrams on loopback; not a performance
// target.
const staticWait = 10 * time.Second

type received struct {
	from nodekey.Public
	addr netip.AddrPort
	pkt  []byte
}

// newStatic makes an ICE-less transport on 127.0.0.1 whose delivered
// WireGuard packets and sealed messages land in the returned channels.
func newStatic(t *testing.T) (*Transport, chan received, chan received) {
	t.Helper()
	return newStaticOn(t, netip.MustParseAddr("127.0.0.1"))
}

// newStaticOn is newStatic with the socket bound to addr (zero: every
// address, dual-stack).
func newStaticOn(t *testing.T, addr netip.Addr) (*Transport, chan received, chan received) {
	t.Helper()
	wg := make(chan received, 16)
	sealed := make(chan received, 16)
	key := testkit.Key(t)
	tr, err := New(Config{
		PrivateKey: key,
		ListenAddr: addr,
		DisableICE: true,
		Deliver: func(from nodekey.Public, pkt []byte) {
			select {
			case wg <- received{from: from, pkt: bytes.Clone(pkt)}: // pkt is the reader's buffer
			default:
			}
		},
		OnMesh: func(from netip.AddrPort, msg []byte) {
			select {
			case sealed <- received{addr: from, pkt: msg}:
			default:
			}
		},
		Logger: testLogger(t).With("node", key.Public().ShortString()),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, wg, sealed
}

func wgPacket(tag byte) []byte {
	b := make([]byte, 64)
	b[0] = 4 // a data message
	b[8] = tag
	return b
}

func expect(t *testing.T, ch chan received, what string) received {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(staticWait):
		t.Fatalf("no %s within %v", what, staticWait)
	}
	return received{}
}

func expectNone(t *testing.T, ch chan received, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("unexpected %s: %d bytes from %s / %s", what, len(r.pkt), r.addr, r.from.ShortString())
	case <-time.After(300 * time.Millisecond):
	}
}

func TestDisableICENeedsNoSignal(t *testing.T) {
	_, err := New(Config{PrivateKey: testkit.Key(t), ListenAddr: netip.MustParseAddr("127.0.0.1")})
	if err == nil {
		t.Fatal("New without Signal and with ICE succeeded")
	}
	tr, _, _ := newStatic(t)
	peer := testkit.Key(t).Public()
	tr.AddPeer(peer)
	if tr.Reachable(peer) {
		t.Fatal("a peer with no static path and no ICE is reachable")
	}
	if pi, ok := tr.PathInfo(peer); !ok || pi.State != StateLost {
		t.Fatalf("PathInfo = %+v, %v; want lost", pi, ok)
	}
	tr.RemovePeer(peer) // must not wait for a state machine that never ran
}

// TestStaticPath sends WireGuard packets over static paths: a knows b's
// address, b learns a's, and a moves.
func TestStaticPath(t *testing.T) {
	a, _, _ := newStatic(t)
	b, bIn, _ := newStatic(t)
	if err := a.SetStatic(b.self, b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	// Usable before anything arrived: WireGuard's first handshake goes out.
	if !a.Reachable(b.self) {
		t.Fatal("a static path is not reachable before any packet arrived")
	}
	pi, _ := a.PathInfo(b.self)
	if pi.State != StateDirect || !pi.Static || pi.Remote != b.LocalAddr() {
		t.Fatalf("PathInfo = %+v, want direct, static, remote %s", pi, b.LocalAddr())
	}
	if err := a.Send(b.self, wgPacket(1)); err != nil {
		t.Fatal(err)
	}
	// b does not know a's address: the packet is not attributed.
	expectNone(t, bIn, "packet from an unknown address")
	if got := b.Stats().DropsUnknownSrc; got != 1 {
		t.Fatalf("b dropped %d packets from unknown sources, want 1", got)
	}

	if err := b.SetStatic(a.self, a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := a.SendBatch(b.self, [][]byte{wgPacket(2), wgPacket(3)}); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []byte{2, 3} {
		r := expect(t, bIn, "WireGuard packet")
		if r.from != a.self || r.pkt[8] != tag {
			t.Fatalf("got packet %d from %s, want %d from a", r.pkt[8], r.from.ShortString(), tag)
		}
	}

	// a roams: b is told a's new address; packets from the old one are no
	// longer a's.
	other := netip.MustParseAddrPort("127.0.0.1:9")
	if err := b.SetStatic(a.self, other); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(b.self, wgPacket(4)); err != nil {
		t.Fatal(err)
	}
	expectNone(t, bIn, "packet from a's old address")
	if addr, usable, ok := b.StaticAddr(a.self); !ok || !usable || addr != other {
		t.Fatalf("StaticAddr = %s, %v, %v; want %s, usable", addr, usable, ok, other)
	}

	// Removing the peer forgets its path and its address.
	b.RemovePeer(a.self)
	if _, _, ok := b.StaticAddr(a.self); ok || b.Reachable(a.self) {
		t.Fatal("a removed peer still has a static path")
	}
	if p := (*b.byAddr.Load())[other]; p != nil {
		t.Fatal("a removed peer's address is still mapped")
	}
}

func TestSetStaticRejects(t *testing.T) {
	a, _, _ := newStatic(t)
	peer := testkit.Key(t).Public()
	for _, addr := range []string{"0.0.0.0:1", "127.0.0.1:0", "224.0.0.1:5", "255.255.255.255:5", "[::1]:5", "[fe80::1]:5", "[ff02::1]:5"} {
		if err := a.SetStatic(peer, netip.MustParseAddrPort(addr)); err == nil {
			t.Errorf("SetStatic(%s) succeeded", addr)
		}
	}
	if err := a.SetStatic(a.self, netip.MustParseAddrPort("127.0.0.1:5")); err == nil {
		t.Error("SetStatic to this node's own key succeeded")
	}
	a.Close()
	if err := a.SetStatic(peer, netip.MustParseAddrPort("127.0.0.1:5")); !errors.Is(err, ErrClosed) {
		t.Errorf("SetStatic after Close: %v, want ErrClosed", err)
	}
}

// TestStaticUsable checks the liveness rule on a path's clocks directly:
// waiting out StaticHold in a test would take 45 s. Packets received do not
// count (lastRecv): only authenticated confirmations do.
func TestStaticUsable(t *testing.T) {
	const s = int64(time.Second)
	tests := []struct {
		name                     string
		now, lastRecv, confirmed int64
		want                     bool
	}{
		{"just confirmed", 100 * s, -1000 * s, 100 * s, true},
		{"confirmed within hold", 100 * s, -1000 * s, 100*s - int64(StaticHold), true},
		{"hold over, nothing received", 100 * s, -1000 * s, 100*s - int64(StaticHold) - 1, false},
		{"hold over, packet within loss timeout", 100 * s, 100*s - int64(LossTimeout), 0, false},
		{"hold over, packet too old", 100 * s, 100*s - int64(LossTimeout) - 1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dp := &directPath{static: true}
			dp.lastRecv.Store(tt.lastRecv)
			dp.confirmed.Store(tt.confirmed)
			if got := dp.usable(tt.now); got != tt.want {
				t.Fatalf("usable = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestMeshDatagrams sends sealed-looking messages between two sockets: they
// reach OnMesh with the sender's address, and bad ones are refused.
func TestMeshDatagrams(t *testing.T) {
	a, _, _ := newStatic(t)
	b, _, bSealed := newStatic(t)
	msg := bytes.Repeat([]byte{0xAB}, 300)
	msg[0] = mesh.SealedHeader
	if err := a.SendMesh(b.LocalAddr(), msg); err != nil {
		t.Fatal(err)
	}
	r := expect(t, bSealed, "sealed message")
	if r.addr != a.LocalAddr() || !bytes.Equal(r.pkt, msg) {
		t.Fatalf("got %d bytes from %s, want %d from %s", len(r.pkt), r.addr, len(msg), a.LocalAddr())
	}
	if got := b.Stats().MeshIn; got != 1 {
		t.Fatalf("MeshIn = %d, want 1", got)
	}

	big := make([]byte, mesh.MaxSealed+1)
	big[0] = mesh.SealedHeader
	bad := []struct {
		name string
		to   netip.AddrPort
		msg  []byte
	}{
		{"not sealed", b.LocalAddr(), wgPacket(1)},
		{"too large", b.LocalAddr(), big},
		{"too small", b.LocalAddr(), msg[:mesh.MinSealed-1]},
		{"IPv6", netip.MustParseAddrPort("[::1]:5"), msg},
		{"no port", netip.MustParseAddrPort("127.0.0.1:0"), msg},
	}
	for _, tt := range bad {
		if err := a.SendMesh(tt.to, tt.msg); err == nil {
			t.Errorf("%s: SendMesh succeeded", tt.name)
		}
	}

	// An oversized datagram sent around SendMesh is not a mesh message.
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(b.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	expectNone(t, bSealed, "oversized datagram")
}

// TestMeshRateLimit floods a transport with sealed-looking datagrams from
// one source while OnMesh is stuck: the source's own bucket stops it long
// before the queue fills (mesh_linux_test.go floods from many sources).
func TestMeshRateLimit(t *testing.T) {
	a, _, _ := newStatic(t)
	release := make(chan struct{})
	called := make(chan struct{}, 1)
	b, err := New(Config{
		PrivateKey: testkit.Key(t),
		ListenAddr: netip.MustParseAddr("127.0.0.1"),
		DisableICE: true,
		OnMesh: func(netip.AddrPort, []byte) {
			select {
			case called <- struct{}{}:
			default:
			}
			<-release // hold the consumer so the queue fills
		},
		Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer close(release)
	msg := make([]byte, mesh.MinSealed)
	msg[0] = mesh.SealedHeader
	deadline := time.Now().Add(staticWait)
	// Send until the rate limit bites (the kernel may drop some datagrams
	// on the way, so no exact count is expected).
	for b.Stats().DropsMeshRate == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the rate limit never dropped anything: %+v", b.Stats())
		}
		if err := a.SendMesh(b.LocalAddr(), msg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	st := b.Stats()
	if st.MeshIn >= meshQueue || st.DropsMeshQueue != 0 {
		t.Errorf("one source queued %d messages (%d dropped by the queue); its own bucket should stop it first: %+v", st.MeshIn, st.DropsMeshQueue, st)
	}
	select {
	case <-called:
	default:
		t.Error("OnMesh was never called")
	}
}

// TestClearStatic: a cleared static path is gone (not reachable, packets
// from its address no longer attributed), and clearing again or for an
// unknown peer does nothing.
func TestClearStatic(t *testing.T) {
	a, _, _ := newStatic(t)
	b, bIn, _ := newStatic(t)
	if err := b.SetStatic(a.self, a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := a.SetStatic(b.self, b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(b.self, wgPacket(1)); err != nil {
		t.Fatal(err)
	}
	expect(t, bIn, "WireGuard packet on the static path")

	b.ClearStatic(a.self)
	b.ClearStatic(a.self)
	b.ClearStatic(testkit.Key(t).Public())
	if _, _, ok := b.StaticAddr(a.self); ok || b.Reachable(a.self) {
		t.Fatal("a cleared static path is still there")
	}
	if err := b.Send(a.self, wgPacket(2)); !errors.Is(err, ErrNoDirectPath) {
		t.Fatalf("Send on a cleared path: %v, want ErrNoDirectPath", err)
	}
	if err := a.Send(b.self, wgPacket(3)); err != nil {
		t.Fatal(err)
	}
	expectNone(t, bIn, "packet from a cleared path's address")
	if got := b.Stats().DropsUnknownSrc; got != 1 {
		t.Fatalf("b dropped %d packets from unknown sources, want 1", got)
	}
}
