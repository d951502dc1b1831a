package direct

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
)

// fakeSeal stands in for the overlay's sealing in this package's tests: a
// sealed-looking datagram carrying the sender key and the signal. The
// overlay's own tests run path checks with real seals and signatures
// (overlay/swarm_test.go); here only the transport's rules are under test.
func fakeSeal(from nodekey.Public, body []byte) []byte {
	b := make([]byte, mesh.MinSealed, mesh.MinSealed+len(body))
	b[0] = mesh.SealedHeader
	copy(b[1:], from[:])
	binary.BigEndian.PutUint16(b[33:], uint16(len(body)))
	return append(b, body...)
}

func fakeOpen(b []byte) (nodekey.Public, []byte, bool) {
	var k nodekey.Public
	if len(b) < mesh.MinSealed || b[0] != mesh.SealedHeader {
		return k, nil, false
	}
	copy(k[:], b[1:33])
	n := int(binary.BigEndian.Uint16(b[33:]))
	if len(b) != mesh.MinSealed+n {
		return k, nil, false
	}
	return k, b[mesh.MinSealed:], true
}

// checkNode is an ICE-less transport that answers and completes path
// checks as the overlay does, and records the raw path signals it got.
type checkNode struct {
	*Transport
	got chan []byte
}

func newCheckNode(t *testing.T, key nodekey.Private) *checkNode {
	t.Helper()
	n := &checkNode{got: make(chan []byte, 16)}
	ready := make(chan struct{}) // n.Transport is set
	tr, err := New(Config{
		PrivateKey: key,
		ListenAddr: netip.MustParseAddr("127.0.0.1"),
		DisableICE: true,
		SealSignal: func(msg []byte) ([]byte, error) { return fakeSeal(key.Public(), msg), nil },
		OnMesh: func(from netip.AddrPort, msg []byte) {
			k, body, ok := fakeOpen(msg)
			if !ok {
				return
			}
			<-ready
			select {
			case n.got <- msg:
			default:
			}
			_ = n.HandlePathSignal(k, from, body)
		},
		Logger: testLogger(t).With("node", key.Public().ShortString()),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	n.Transport = tr
	close(ready)
	return n
}

// waitStatic waits until tr's static path to peer is want.
func waitStatic(t *testing.T, tr *Transport, peer nodekey.Public, want netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(staticWait)
	for {
		addr, usable, ok := tr.StaticAddr(peer)
		if ok && usable && addr == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("static path = %s (usable %v, set %v), want %s; %+v", addr, usable, ok, want, tr.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPathCheck (issue 9 item 6): an authenticated message makes the
// transport check its source before a path moves there. A member that
// answers from the address gets its path; a copy replayed from another
// address, and a captured reply replayed from there, move nothing.
func TestPathCheck(t *testing.T) {
	aKey := testkit.Key(t)
	a := newCheckNode(t, aKey)
	b := newCheckNode(t, testkit.Key(t))

	// b hears from a (say, its announcement): no path until a answers.
	b.Heard(a.self, a.LocalAddr(), true)
	waitStatic(t, b.Transport, a.self, a.LocalAddr())
	reply := <-b.got // a's reply to b's probe, as an observer could capture it
	if st := b.Stats(); st.ProbesSent != 1 || st.PathsProven != 1 {
		t.Fatalf("one check: %+v", st)
	}

	// An outsider sends a copy of a's message from its own address X: it
	// may even be accepted as fresh (it won the race). b probes X; the
	// outsider cannot answer as a, and a never sees the probe.
	x, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	xAddr := x.LocalAddr().(*net.UDPAddr).AddrPort()
	for _, fresh := range []bool{true, false} {
		b.Heard(a.self, xAddr, fresh)
	}
	buf := make([]byte, 2048)
	_ = x.SetReadDeadline(time.Now().Add(staticWait))
	n, err := x.Read(buf)
	if err != nil {
		t.Fatalf("no probe reached the new address: %v", err)
	}
	if k, body, ok := fakeOpen(buf[:n]); !ok || k != b.self {
		t.Fatalf("the new address got %d bytes, not b's probe", n)
	} else if s, err := parseSignal(body); err != nil || s.Type != sigProbe {
		t.Fatalf("the new address got %+v, %v; want a probe", s, err)
	}
	// The best the outsider can do: a's captured reply, from X.
	if _, err := x.WriteToUDPAddrPort(reply, b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(staticWait)
	for b.Stats().DropsBadReply == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the replayed reply was never refused: %+v", b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if addr, usable, _ := b.StaticAddr(a.self); addr != a.LocalAddr() || !usable {
		t.Fatalf("after the replays b's path to a is %s (usable %v), want %s", addr, usable, a.LocalAddr())
	}
	if got := b.Stats().PathsProven; got != 1 {
		t.Fatalf("%d paths proven, want 1", got)
	}
	// And the real path still carries WireGuard packets.
	if err := b.Send(a.self, wgPacket(1)); err != nil {
		t.Fatal(err)
	}

	// Racing copies can make all of a's own messages look like replays:
	// once the path's confirmation is old, a replayed one from the path
	// itself is checked, and a's answer confirms the path again.
	p := b.peer(a.self)
	p.static.Load().confirmed.Store(b.now() - int64(recheckAfter) - 1)
	b.Heard(a.self, a.LocalAddr(), false)
	deadline = time.Now().Add(staticWait)
	for b.Stats().PathsProven != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the path was not checked again: %+v", b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := b.now() - p.static.Load().confirmed.Load(); got >= int64(recheckAfter) {
		t.Fatalf("the check did not confirm the path: confirmed %v ago", time.Duration(got))
	}

	// a really moves (it restarted on another port): it answers there,
	// and the path follows.
	a2 := newCheckNode(t, aKey)
	b.Heard(a.self, a2.LocalAddr(), true)
	waitStatic(t, b.Transport, a.self, a2.LocalAddr())
}

// TestHandlePathSignalRejects: ICE signals over UDP and malformed ones are
// refused, and a reply nobody asked for moves nothing.
func TestHandlePathSignalRejects(t *testing.T) {
	b := newCheckNode(t, testkit.Key(t))
	peer := testkit.Key(t).Public()
	src := netip.MustParseAddrPort("127.0.0.1:9")
	offer, _ := appendSignal(nil, &signal{Type: sigOffer, Session: 1, Ufrag: "u", Pwd: "p"})
	unasked, _ := appendSignal(nil, &signal{Type: sigReply, Session: 7})
	for name, msg := range map[string][]byte{"garbage": {1, 2, 3}, "ICE offer": offer, "unasked reply": unasked} {
		if err := b.HandlePathSignal(peer, src, msg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, _, ok := b.StaticAddr(peer); ok {
		t.Fatal("a path was set")
	}
}

// TestSpoofedTrafficKeepsNoPathAlive (issue 9 item 6): a static path whose
// member went silent expires, although WireGuard- and STUN-shaped
// datagrams keep arriving from its address: anyone can send those. Before,
// any such datagram kept the path usable for LossTimeout more.
func TestSpoofedTrafficKeepsNoPathAlive(t *testing.T) {
	b, _, _ := newStatic(t)
	spoofer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer spoofer.Close()
	peer := testkit.Key(t).Public()
	dead := spoofer.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := b.SetStatic(peer, dead); err != nil {
		t.Fatal(err)
	}
	// The last confirmation is older than StaticHold: the member is gone
	// (waiting 45 s in a test is not needed to show the rule).
	b.peer(peer).static.Load().confirmed.Store(b.now() - int64(StaticHold) - 1)
	if b.Reachable(peer) {
		t.Fatal("a path past its hold is reachable before any traffic")
	}
	msg := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	for i := range 5 {
		if _, err := spoofer.WriteToUDPAddrPort(wgPacket(byte(i)), b.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if _, err := spoofer.WriteToUDPAddrPort(msg.Raw, b.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(staticWait)
	for st := b.Stats(); st.WireGuardIn+st.DropsNoDeliver < 5 || st.STUNIn < 5; st = b.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("the datagrams never arrived: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b.Reachable(peer) {
		t.Fatal("WireGuard- and STUN-shaped datagrams from its address kept a dead path alive")
	}
	if _, usable, _ := b.StaticAddr(peer); usable {
		t.Fatal("StaticAddr says the dead path is usable")
	}
	if err := b.Send(peer, wgPacket(9)); !errors.Is(err, ErrNoDirectPath) {
		t.Fatalf("Send on the dead path: %v, want ErrNoDirectPath", err)
	}
}
