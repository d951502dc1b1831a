package lan

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/ipv4"

	"github.com/plures/plurenet/internal/mesh"
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
func newLoopback(t *testing.T, group netip.AddrPort) (*Discovery, chan got) {
	t.Helper()
	ch := make(chan got, 64)
	d, err := New(Config{
		Group:      group,
		Interfaces: []string{"lo"},
		OnMessage: func(from netip.AddrPort, msg []byte) {
			select {
			case ch <- got{from, msg}:
			default:
			}
		},
		Logger: slog.New(slog.DiscardHandler),
	})
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
	if err := a.Send(msg); err != nil {
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
	if err := d.Send([]byte("hello")); err == nil {
		t.Fatal("Send of a non-sealed message succeeded")
	}
	if err := d.Send(sealedLike(mesh.MaxSealed+1, 1)); err == nil {
		t.Fatal("Send of an oversized message succeeded")
	}
	// Around Send: raw datagrams to the group from another socket.
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	pc := ipv4.NewPacketConn(c)
	if err := errors.Join(pc.SetMulticastInterface(lo), pc.SetMulticastLoopback(true)); err != nil {
		t.Fatal(err)
	}
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
	if st := d.Stats(); st.DropsBad != uint64(len(bad)) || st.Received != 1 {
		t.Fatalf("stats %+v, want %d bad and 1 received", st, len(bad))
	}
}

func TestConfigErrors(t *testing.T) {
	on := func(netip.AddrPort, []byte) {}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no OnMessage", Config{}},
		{"unicast group", Config{OnMessage: on, Group: netip.MustParseAddrPort("10.0.0.1:5000")}},
		{"IPv6 group", Config{OnMessage: on, Group: netip.MustParseAddrPort("[ff02::1]:5000")}},
		{"no port", Config{OnMessage: on, Group: netip.MustParseAddrPort("239.255.77.77:0")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d, err := New(tt.cfg); err == nil {
				d.Close()
				t.Fatal("New succeeded")
			}
		})
	}
	// An interface that does not exist fails Send with a clear error.
	d, err := New(Config{OnMessage: on, Group: testGroup(), Interfaces: []string{"nosuchif0"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Send(sealedLike(200, 1)); err == nil {
		t.Fatal("Send on a missing interface succeeded")
	}
}
