package lan

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/ipv4"

	"github.com/plures/plurenet/discovery"
	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/transports/direct"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds how long a test waits for a datagram on loopback; not a
// performance target.
const wait = 10 * time.Second

type got struct {
	from netip.AddrPort
	msg  []byte
}

// testGroup is a group on a random port, so concurrent test runs on one
// machine do not hear each other.
func testGroup() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("239.255.77.78"), uint16(40000+rand.IntN(20000)))
}

// newLoopback joins group on the loopback interface only: tests send
// nothing onto a real network.
func newLoopback(t *testing.T, group netip.AddrPort) (*Source, chan got) {
	t.Helper()
	ch := make(chan got, 64)
	d, err := New(Config{
		Group:      group,
		Interfaces: []string{"lo"},
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Start(context.Background(), discovery.Sink{Sealed: func(from netip.AddrPort, msg []byte) {
		select {
		case ch <- got{from, msg}:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, ch
}

func sealedLike(n int, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, n)
	b[0] = mesh.SealedHeader
	return b
}

func TestSendReceive(t *testing.T) {
	group := testGroup()
	a, aIn := newLoopback(t, group)
	_, bIn := newLoopback(t, group)
	msg := sealedLike(300, 7)
	if err := a.Announce(msg); err != nil {
		t.Fatal(err)
	}
	// Both members of the group get it, the sender included (loopback):
	// the overlay drops its own by key.
	for name, ch := range map[string]chan got{"a": aIn, "b": bIn} {
		select {
		case g := <-ch:
			if !bytes.Equal(g.msg, msg) || g.from.Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Fatalf("%s got %d bytes from %s, want %d from 127.0.0.1", name, len(g.msg), g.from, len(msg))
			}
		case <-time.After(wait):
			t.Fatalf("%s got nothing within %v", name, wait)
		}
	}
}

func TestDropsWhatIsNotSealed(t *testing.T) {
	group := testGroup()
	d, in := newLoopback(t, group)
	if err := d.Announce([]byte("hello")); err == nil {
		t.Fatal("Announce of a non-sealed message succeeded")
	}
	if err := d.Announce(sealedLike(mesh.MaxSealed+1, 1)); err == nil {
		t.Fatal("Announce of an oversized message succeeded")
	}
	// Around Send: raw datagrams to the group from another socket.
	c, _ := groupSender(t, 1)
	dst := net.UDPAddrFromAddrPort(group)
	bad := [][]byte{
		[]byte("not a mesh message at all, but long enough to be one if it started right....................."),
		sealedLike(mesh.MinSealed-1, 2),
		sealedLike(mesh.MaxSealed+1, 3),
	}
	for _, b := range bad {
		if _, err := c.WriteTo(b, dst); err != nil {
			t.Skipf("cannot send to %s on loopback here: %v", group, err)
		}
	}
	good := sealedLike(mesh.MinSealed, 4)
	if _, err := c.WriteTo(good, dst); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-in:
		if !bytes.Equal(g.msg, good) {
			t.Fatalf("first message through is %d bytes starting %x, want the good one", len(g.msg), g.msg[:2])
		}
	case <-time.After(wait):
		t.Fatalf("the good message did not arrive within %v", wait)
	}
	// Received counts a message once the sink has returned, which may be
	// a moment after the test saw it.
	deadline := time.Now().Add(wait)
	for d.Stats().Received != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := d.Stats(); st.DropsBad != uint64(len(bad)) || st.Received != 1 {
		t.Fatalf("stats %+v, want %d bad and 1 received", st, len(bad))
	}
}

// groupSender opens a socket on 127.0.0.x that sends to groups on the
// loopback interface. On Linux all of 127.0.0.0/8 is routed to lo, so each
// x is another source address, as a spoofing outsider would use; elsewhere
// only x = 1 is sure to exist.
func groupSender(t *testing.T, x byte) (net.PacketConn, netip.AddrPort) {
	t.Helper()
	c, err := net.ListenPacket("udp4", netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, x}), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	pc := ipv4.NewPacketConn(c)
	if err := errors.Join(pc.SetMulticastInterface(lo), pc.SetMulticastLoopback(true)); err != nil {
		t.Fatal(err)
	}
	return c, c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"unicast group", Config{Group: netip.MustParseAddrPort("10.0.0.1:5000")}},
		{"IPv6 group", Config{Group: netip.MustParseAddrPort("[ff02::1]:5000")}},
		{"no port", Config{Group: netip.MustParseAddrPort("239.255.77.77:0")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
	on := discovery.Sink{Sealed: func(netip.AddrPort, []byte) {}}
	d, err := New(Config{Group: testGroup(), Interfaces: []string{"nosuchif0"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Announce(sealedLike(200, 1)); err == nil {
		t.Fatal("Announce before Start succeeded")
	}
	if err := d.Start(context.Background(), discovery.Sink{}); err == nil {
		t.Fatal("Start without a Sealed func succeeded")
	}
	if err := d.Start(context.Background(), on); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background(), on); err == nil {
		t.Fatal("second Start succeeded")
	}
	// An interface that does not exist fails Announce with a clear error.
	if err := d.Announce(sealedLike(200, 1)); err == nil {
		t.Fatal("Announce on a missing interface succeeded")
	}
}

// TestStopsWithContext: the end of Start's ctx closes the source; Close
// after it is harmless.
func TestStopsWithContext(t *testing.T) {
	d, err := New(Config{Group: testGroup(), Interfaces: []string{"lo"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := d.Start(ctx, discovery.Sink{Sealed: func(netip.AddrPort, []byte) {}}); err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(wait)
	for !errors.Is(d.Announce(sealedLike(200, 1)), ErrClosed) {
		if time.Now().After(deadline) {
			t.Fatal("source still announcing after its context ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.Close()
	d.Close()
}

func TestMemberAddr(t *testing.T) {
	src := netip.MustParseAddrPort("192.168.1.20:40000")
	tests := []struct {
		name   string
		src    netip.AddrPort
		cands  []string
		want   netip.AddrPort
		wantOK bool
	}{
		{"candidate on the source address", src, []string{"udp4 10.0.0.5:51898 host", "udp4 192.168.1.20:51898 host"}, netip.MustParseAddrPort("192.168.1.20:51898"), true},
		{"source with the candidates' port", src, []string{"udp4 10.0.0.5:51900 host"}, netip.MustParseAddrPort("192.168.1.20:51900"), true},
		{"unspecified candidate", src, []string{"udp4 0.0.0.0:51898 host"}, netip.MustParseAddrPort("192.168.1.20:51898"), true},
		{"ICE-style and garbage skipped", src, []string{"candidate:1 1 udp 2130706431 10.0.0.5 5000 typ host", "udp4 nonsense host", "udp4 192.168.1.20:7 host"}, netip.MustParseAddrPort("192.168.1.20:7"), true},
		{"no candidate", src, nil, netip.AddrPort{}, false},
		{"port zero", src, []string{"udp4 192.168.1.20:0 host"}, netip.AddrPort{}, false},
		{"IPv6 candidate", src, []string{"udp4 [2001:db8::1]:5 host"}, netip.AddrPort{}, false},
		{"bad source", netip.MustParseAddrPort("0.0.0.0:1"), []string{"udp4 10.0.0.5:5 host"}, netip.AddrPort{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := MemberAddr(tt.src, tt.cands)
			if ok != tt.wantOK || got != tt.want {
				t.Fatalf("MemberAddr = %s, %v; want %s, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// FuzzMemberAddr feeds arbitrary announced candidates (network input,
// authenticated but from any member) to the address choice.
func FuzzMemberAddr(f *testing.F) {
	f.Add("udp4 192.0.2.10:41641 host")
	f.Add("udp6 [2001:db8::10]:41641 host")
	f.Add("udp4 0.0.0.0:1")
	f.Fuzz(func(t *testing.T, s string) {
		// With one candidate the choice is the source's IP and that
		// candidate's port, or nothing.
		src := netip.MustParseAddrPort("192.0.2.99:1")
		ap, candOK := discovery.ParseCandidate(s)
		got, ok := MemberAddr(src, []string{s})
		if ok != candOK || ok && (!direct.ValidRemote(got) || got != netip.AddrPortFrom(src.Addr(), ap.Port())) {
			t.Fatalf("MemberAddr from %q = %s, %v (candidate %s, %v)", s, got, ok, ap, candOK)
		}
	})
}
