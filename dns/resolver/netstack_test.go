package resolver

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/plures/plurenet/internal/cable"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/tun/netstack"
)

// TestUserspaceAdapter serves on the userspace stack's own sockets, as the
// node does in userspace mode: a member (another stack, joined by a cable
// in place of WireGuard) gets answers over UDP and TCP from its overlay
// address; a packet from an address outside the overlay gets none.
func TestUserspaceAdapter(t *testing.T) {
	nodeV4 := netip.MustParseAddr("100.64.0.1")
	peerV4 := netip.MustParseAddr("100.64.0.2")
	peerV6 := netip.MustParseAddr("fd12:3456:789a::2")
	outsider := netip.MustParseAddr("10.9.0.2")
	node, err := netstack.New(netstack.Config{Addrs: []netip.Addr{nodeV4, netip.MustParseAddr("fd12:3456:789a::1")}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := netstack.New(netstack.Config{Addrs: []netip.Addr{peerV4, peerV6, outsider}, Logger: quiet()})
	if err != nil {
		node.Close()
		t.Fatal(err)
	}
	cable.Connect(t, node, peer)

	pc, err := node.ListenPacket("udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	l, err := node.Listen("tcp", ":53")
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	s := start(t, Config{Allow: append([]netip.Prefix{testV4Prefix, testULA}, loopback...)}, pc, l)

	ask := func(network, server string) *dns.Msg {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := peer.DialContext(ctx, network, server)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		m := new(dns.Msg)
		m.SetQuestion("nas.home.plurenet.", dns.TypeAAAA)
		dc := &dns.Conn{Conn: c}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := dc.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
		r, err := dc.ReadMsg()
		if err != nil {
			t.Fatalf("%s %s: %v", network, server, err)
		}
		return r
	}
	for _, tc := range []struct{ network, server string }{
		{"udp", "100.64.0.1:53"},
		{"tcp", "100.64.0.1:53"},
		{"udp", "[fd12:3456:789a::1]:53"},
		{"tcp", "[fd12:3456:789a::1]:53"},
	} {
		r := ask(tc.network, tc.server)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "fd12:3456:789a::2" {
			t.Fatalf("%s %s: answer %v, want nas's IPv6", tc.network, tc.server, r.Answer)
		}
	}

	// The same query from an address outside the overlay.
	out, err := peer.ListenPacket("udp", netip.AddrPortFrom(outsider, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	m := new(dns.Msg)
	m.SetQuestion("nas.home.plurenet.", dns.TypeA)
	b, _ := m.Pack()
	before := s.Stats().DroppedSource
	if _, err := out.WriteTo(b, &net.UDPAddr{IP: nodeV4.AsSlice(), Port: 53}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the outsider's query is dropped", func() bool { return s.Stats().DroppedSource > before })
	out.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := out.ReadFrom(make([]byte, 512)); err == nil {
		t.Fatalf("the outsider got %d bytes back", n)
	}
}
