package direct

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
)

// needIPv6Loopback skips t on a host where ::1 cannot be bound.
func needIPv6Loopback(t *testing.T) {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("this host has no IPv6 loopback (%v): IPv6 not covered here", err)
	}
	c.Close()
}

// TestListenFamilies: no listen address gives a dual-stack socket; an IPv4
// address an IPv4-only one, an IPv6 address an IPv6-only one; link-local
// and multicast listen addresses are refused.
func TestListenFamilies(t *testing.T) {
	needIPv6Loopback(t)
	tests := []struct {
		addr string
		want families
	}{
		{"", families{v4: true, v6: true}},
		{"127.0.0.1", families{v4: true}},
		{"0.0.0.0", families{v4: true}},
		{"::1", families{v6: true}},
		{"::ffff:127.0.0.1", families{v4: true}},
	}
	for _, tt := range tests {
		var a netip.Addr
		if tt.addr != "" {
			a = netip.MustParseAddr(tt.addr)
		}
		c, fam, err := listen(a, 0)
		if err != nil {
			t.Errorf("listen(%q): %v", tt.addr, err)
			continue
		}
		c.Close()
		if fam != tt.want {
			t.Errorf("listen(%q) reaches %+v, want %+v", tt.addr, fam, tt.want)
		}
	}
	for _, bad := range []string{"fe80::1", "ff02::1", "224.0.0.1"} {
		if err := checkListenAddr(netip.MustParseAddr(bad)); err == nil {
			t.Errorf("listen address %s accepted", bad)
		}
	}
}

// TestValidRemote: the addresses a static path or a discovered member may
// have.
func TestValidRemote(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"198.51.100.7:41641", true},
		{"127.0.0.1:5", true},
		{"[2001:db8::10]:41641", true},
		{"[fd12:3456:789a::1]:41641", true},  // ULA
		{"[64:ff9b::c633:6407]:41641", true}, // NAT64
		{"[::1]:5", true},
		{"[::ffff:198.51.100.7]:41641", true}, // unmapped: IPv4
		{"198.51.100.7:0", false},
		{"0.0.0.0:5", false},
		{"224.0.0.1:5", false},
		{"255.255.255.255:5", false},
		{"[::]:5", false},
		{"[ff02::1]:5", false},
		{"[fe80::1]:5", false},
		{"[fe80::1%eth0]:5", false},
		{"[fec0::1]:5", false},     // site-local
		{"[100::1]:5", false},      // discard
		{"[::c633:6407]:5", false}, // IPv4-compatible
	}
	for _, tt := range tests {
		if got := ValidRemote(netip.MustParseAddrPort(tt.addr)); got != tt.want {
			t.Errorf("ValidRemote(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

// TestRemoteCandidatePolicyIPv6: the candidate policy (candidates.go) for
// IPv6 on a dual-stack socket, and an IPv4-only socket refusing IPv6.
func TestRemoteCandidatePolicyIPv6(t *testing.T) {
	needIPv6Loopback(t)
	n := newSignalNet()
	tr := newLoopback(t, n, testkit.Key(t), func(c *Config) {
		c.ListenAddr = netip.Addr{}
		c.ExcludePrefixes = mustPrefixes(t, "fd7a:115c:a1e0::/48")
	})
	s, err := tr.newSession(1, true, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	type cand struct {
		name          string
		cand          string
		remote, local bool // used for a member elsewhere, on this host
	}
	cands := []cand{
		{"global", hostCandidate(t, "2001:db8::10", 41641), true, true},
		{"global server-reflexive", srflxCandidate(t, "2001:db8::11", 41641), true, true},
		{"ULA", hostCandidate(t, "fd12:3456:789a::1", 41641), true, true},
		{"NAT64", hostCandidate(t, "64:ff9b::c633:6407", 41641), true, true},
		{"loopback", hostCandidate(t, "::1", 53), false, true},
		{"link-local", hostCandidate(t, "fe80::1", 41641), false, false},
		{"link-local server-reflexive", srflxCandidate(t, "fe80::2", 41641), false, false},
		{"unspecified", hostCandidate(t, "::", 9), false, false},
		{"multicast", hostCandidate(t, "ff02::1", 9), false, false},
		{"IPv4-mapped", hostCandidate(t, "::ffff:127.0.0.1", 53), false, false},
		{"IPv4-compatible", hostCandidate(t, "::7f00:1", 53), false, false},
		{"site-local", hostCandidate(t, "fec0::1", 9), false, false},
		{"discard", hostCandidate(t, "100::1", 9), false, false},
		{"the mesh's own ULA prefix", hostCandidate(t, "fd7a:115c:a1e0::5", 41641), false, false},
		{"IPv4 still", hostCandidate(t, "198.51.100.7", 41641), true, true},
	}
	for a := range *tr.ownAddrs.Load() {
		if a.Is6() && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			cands = append(cands, cand{"this host's address " + a.String(), hostCandidate(t, a.String(), 22), false, true})
			break
		}
	}
	elsewhere := testkit.Key(t).Public()
	local := newLoopback(t, n, testkit.Key(t), nil)
	for _, c := range cands {
		if got := s.addRemote([]string{c.cand}, elsewhere); (got == 1) != c.remote {
			t.Errorf("%s from a member elsewhere: added %d, want used=%v", c.name, got, c.remote)
		}
		if got := s.addRemote([]string{c.cand}, local.self); (got == 1) != c.local {
			t.Errorf("%s from a member on this host: added %d, want used=%v", c.name, got, c.local)
		}
	}

	// An IPv4-only socket cannot send to IPv6: such candidates are refused.
	v4 := newLoopback(t, n, testkit.Key(t), nil)
	s4, err := v4.newSession(1, true, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer s4.close()
	if got := s4.addRemote([]string{hostCandidate(t, "2001:db8::10", 41641)}, elsewhere); got != 0 {
		t.Errorf("an IPv4-only socket accepted an IPv6 candidate")
	}
	if v4.fam.v6 {
		t.Errorf("a socket on 127.0.0.1 claims IPv6")
	}
}

// TestRanked: a peer's candidates are ranked by type first (RFC 8445),
// then IPv6 above IPv4 (RFC 8421), whatever priority the peer signalled.
func TestRanked(t *testing.T) {
	rank := func(m string) uint32 {
		t.Helper()
		c, err := ice.UnmarshalCandidate(m)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ranked(c, candidateAddr(m))
		if err != nil {
			t.Fatal(err)
		}
		if r.Type() != c.Type() || r.Address() != c.Address() || r.Port() != c.Port() {
			t.Fatalf("ranked changed the candidate: %s -> %s", m, r.Marshal())
		}
		return r.Priority()
	}
	order := []string{
		hostCandidate(t, "2001:db8::10", 1),
		hostCandidate(t, "192.0.2.10", 1),
		srflxCandidate(t, "2001:db8::11", 1),
		srflxCandidate(t, "198.51.100.7", 1),
	}
	for i := 1; i < len(order); i++ {
		if hi, lo := rank(order[i-1]), rank(order[i]); hi <= lo {
			t.Errorf("%s ranks %d, not above %s's %d", order[i-1], hi, order[i], lo)
		}
	}
	// A signalled priority is not taken: a low IPv6 host still ranks first.
	low := strings.Replace(order[0], " 2130706431 ", " 1 ", 1)
	if low == order[0] {
		t.Fatalf("test candidate %q does not carry the default priority", order[0])
	}
	if rank(low) != rank(order[0]) {
		t.Errorf("the peer's signalled priority changed the rank")
	}
}

// TestOfferedCandidates: host candidates alternate IPv6 and IPv4 (so the
// cap keeps both), loopback last; server-reflexive candidates are offered
// once per address, with no related address.
func TestOfferedCandidates(t *testing.T) {
	n := newSignalNet()
	tr := newLoopback(t, n, testkit.Key(t), nil)
	s, err := tr.newSession(1, true, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	for deadline := time.Now().Add(staticWait); !s.view().gathered; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("gathering never ended")
		}
	}
	s.mu.Lock()
	s.srflx = nil
	s.hosts = []string{
		hostCandidate(t, "127.0.0.1", 1),
		hostCandidate(t, "2001:db8::1", 1),
		hostCandidate(t, "2001:db8::2", 1),
		hostCandidate(t, "2001:db8::3", 1),
		hostCandidate(t, "192.0.2.1", 1),
		hostCandidate(t, "192.0.2.2", 1),
	}
	s.mu.Unlock()
	var got []string
	for _, m := range s.candidates() {
		got = append(got, candidateAddr(m).String())
	}
	want := []string{"2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2", "2001:db8::3", "127.0.0.1"}
	if !slices.Equal(got, want) {
		t.Errorf("offered %v, want %v", got, want)
	}

	for _, addr := range []string{"198.51.100.7", "2001:db8::11"} {
		c, err := ice.NewCandidateServerReflexive(&ice.CandidateServerReflexiveConfig{
			Network: "udp", Address: addr, Port: 41641, Component: 1, RelAddr: "fe80::b0fc:6eff:fe48:ce60", RelPort: 41641,
		})
		if err != nil {
			t.Fatal(err)
		}
		m, ok := withoutRelated(c, netip.MustParseAddr(addr))
		if !ok || strings.Contains(m, "fe80") {
			t.Errorf("offered %q (%v): the related address is not withheld", m, ok)
		}
		c2, err := ice.UnmarshalCandidate(m)
		if err != nil || c2.Address() != addr || c2.Port() != 41641 || c2.Type() != ice.CandidateTypeServerReflexive {
			t.Fatalf("offered %q does not parse back to a server-reflexive %s:41641: %v", m, addr, err)
		}
		if r := c2.RelatedAddress(); r != nil && r.Address != "" && (r.Port != 0 || !netip.MustParseAddr(r.Address).IsUnspecified()) {
			t.Errorf("offered %q names a related address", m)
		}
	}
}

// TestIPv6LoopbackICE: two members on one host reach each other over ICE
// on ::1 (IPv6-only sockets), and WireGuard-shaped packets cross.
func TestIPv6LoopbackICE(t *testing.T) {
	needIPv6Loopback(t)
	n := newSignalNet()
	got := make(chan []byte, 4)
	v6 := func(c *Config) { c.ListenAddr = netip.IPv6Loopback() }
	a := newLoopback(t, n, testkit.Key(t), v6)
	b := newLoopback(t, n, testkit.Key(t), func(c *Config) {
		v6(c)
		c.Deliver = func(_ nodekey.Public, pkt []byte) {
			select {
			case got <- slices.Clone(pkt):
			default:
			}
		}
	})
	a.AddPeer(b.self)
	b.AddPeer(a.self)
	pa := waitState(t, a, b.self, StateDirect, 20*time.Second)
	if pa.Remote != b.LocalAddr() {
		t.Fatalf("a reaches b at %s, want %s", pa.Remote, b.LocalAddr())
	}
	if err := a.SendBatch(b.self, [][]byte{wgPacket(1), wgPacket(2)}); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []byte{1, 2} {
		select {
		case p := <-got:
			if p[8] != tag {
				t.Fatalf("packet %d, want %d", p[8], tag)
			}
		case <-time.After(staticWait):
			t.Fatal("packet over IPv6 did not arrive")
		}
	}
}

// TestStaticDualStack: static paths between two dual-stack sockets, over
// IPv6 and over IPv4 (the kernel's IPv4-mapped form unmapped on receipt),
// with batches (segmentation offload where the kernel has it).
func TestStaticDualStack(t *testing.T) {
	needIPv6Loopback(t)
	a, _, _ := newStaticOn(t, netip.Addr{})
	b, bIn, _ := newStaticOn(t, netip.Addr{})
	for _, lo := range []netip.Addr{netip.IPv6Loopback(), netip.MustParseAddr("127.0.0.1")} {
		if err := a.SetStatic(b.self, netip.AddrPortFrom(lo, b.LocalAddr().Port())); err != nil {
			t.Fatal(err)
		}
		if err := b.SetStatic(a.self, netip.AddrPortFrom(lo, a.LocalAddr().Port())); err != nil {
			t.Fatal(err)
		}
		if err := a.SendBatch(b.self, [][]byte{wgPacket(1), wgPacket(2), wgPacket(3)}); err != nil {
			t.Fatal(err)
		}
		for _, tag := range []byte{1, 2, 3} {
			r := expect(t, bIn, "WireGuard packet over "+lo.String())
			if r.from != a.self || r.pkt[8] != tag {
				t.Fatalf("over %s: packet %d from %s, want %d from a", lo, r.pkt[8], r.from.ShortString(), tag)
			}
		}
	}
}

// TestCandidateVectors checks the candidate vectors of docs/protocol.md
// 2.9 byte for byte: the lines offered (a server-reflexive one without its
// related address) and the rank a receiver gives each.
func TestCandidateVectors(t *testing.T) {
	offered := []struct {
		gathered, offered string
		rank              uint32
	}{
		{"2972068683 1 udp 2130706431 2001:db8::10 41641 typ host", "2972068683 1 udp 2130706431 2001:db8::10 41641 typ host", 2130706431},
		{"3418105078 1 udp 2130706431 192.0.2.10 41641 typ host", "3418105078 1 udp 2130706431 192.0.2.10 41641 typ host", 2130640895},
		{"2289077132 1 udp 1694498815 2001:db8::10 41641 typ srflx raddr fe80::1 rport 41641", "2289077132 1 udp 1694498815 2001:db8::10 41641 typ srflx", 1694498815},
		{"3215111262 1 udp 1694498815 198.51.100.7 41641 typ srflx raddr 192.168.1.5 rport 41641", "3215111262 1 udp 1694498815 198.51.100.7 41641 typ srflx", 1694433279},
	}
	for _, v := range offered {
		c, err := ice.UnmarshalCandidate(v.gathered)
		if err != nil {
			t.Fatalf("%q: %v", v.gathered, err)
		}
		a := candidateAddr(v.gathered)
		got := c.Marshal()
		if c.Type() == ice.CandidateTypeServerReflexive {
			got, _ = withoutRelated(c, a)
		}
		if got != v.offered {
			t.Errorf("gathered %q is offered as %q, want %q", v.gathered, got, v.offered)
		}
		r, err := ranked(c, a)
		if err != nil || r.Priority() != v.rank {
			t.Errorf("%q ranks %d (%v), want %d", v.offered, r.Priority(), err, v.rank)
		}
	}
}
