package overlay

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

type directOpts struct {
	secret string
	peers  []string
	// lan turns LAN discovery on, on the loopback interface only, in group.
	lan   bool
	group netip.AddrPort
}

// startDirectNode starts a node in direct mode on 127.0.0.1: no relay.
func startDirectNode(t *testing.T, name string, o directOpts) *Node {
	t.Helper()
	if o.secret == "" {
		o.secret = testSecret
	}
	cfg := Config{
		Transport:  TransportDirect,
		ListenAddr: netip.MustParseAddr("127.0.0.1"),
		StateDir:   shortTempDir(t),
		Topic:      "overlay-direct-test",
		Secret:     o.secret,
		Name:       name,
		Peers:      o.peers,
		NoLAN:      !o.lan,
		Logger:     testLogger(t).With("node", name),
	}
	if o.lan {
		cfg.LANGroup, cfg.LANInterfaces = o.group, []string{"lo"}
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("starting node %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// testLANGroup is a multicast group on a random port, so concurrent test
// runs on one machine do not discover each other.
func testLANGroup() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("239.255.77.78"), uint16(40000+rand.IntN(20000)))
}

// checkDirectStatus checks that n lists peer as reached over the direct
// path at a static address.
func checkDirectStatus(t *testing.T, n *Node, peer string) {
	t.Helper()
	st := n.Status()
	if st.Transport != TransportDirect || st.UDP == "" || len(st.Relays) != 0 {
		t.Fatalf("%s: status transport %q, udp %q, relays %v", st.Name, st.Transport, st.UDP, st.Relays)
	}
	for _, m := range st.Members {
		if m.Name != peer {
			continue
		}
		if m.Path != "direct" || m.Direct == nil || m.Direct.State != "direct" || m.Direct.Remote == "" || m.LastHandshake.IsZero() {
			t.Fatalf("%s's view of %s: path %q, direct %+v, handshake %v", st.Name, peer, m.Path, m.Direct, m.LastHandshake)
		}
		return
	}
	t.Fatalf("%s does not list %s: %+v", st.Name, peer, st.Members)
}

// TestDirectStaticPeers: beta knows alpha's address (with or without its
// key), alpha knows nothing; they find each other with no relay and TCP
// flows both ways over their overlay IPs.
func TestDirectStaticPeers(t *testing.T) {
	for _, withKey := range []bool{true, false} {
		name := "host:port"
		if withKey {
			name = "key@host:port"
		}
		t.Run(name, func(t *testing.T) {
			a := startDirectNode(t, "alpha", directOpts{})
			peer := a.direct.LocalAddr().String()
			if withKey {
				peer = a.PublicKey().String() + "@" + peer
			}
			b := startDirectNode(t, "beta", directOpts{peers: []string{peer}})
			serveEcho(t, a, 7100)
			serveEcho(t, b, 7100)
			ipA := waitMember(t, b, "alpha")
			ipB := waitMember(t, a, "beta")
			exchange(t, b, ipA, 7100, "alpha")
			exchange(t, a, ipB, 7100, "beta")
			checkDirectStatus(t, a, "beta")
			checkDirectStatus(t, b, "alpha")
		})
	}
}

// TestDirectLeave: a node that closes says goodbye over UDP; the other
// drops it at once rather than after the member timeout.
func TestDirectLeave(t *testing.T) {
	a := startDirectNode(t, "alpha", directOpts{})
	b := startDirectNode(t, "beta", directOpts{peers: []string{a.direct.LocalAddr().String()}})
	waitMember(t, a, "beta")
	waitMember(t, b, "alpha")
	b.Close()
	deadline := time.Now().Add(testTimeout)
	for len(a.Status().Members) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("alpha still lists %+v after beta left", a.Status().Members)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, ok := a.direct.StaticAddr(b.PublicKey()); ok {
		t.Fatal("alpha keeps a direct path to a member that left")
	}
}

// TestDirectLANDiscovery: three nodes on one "LAN" (multicast on the
// loopback interface), one with another secret. The two of one mesh find
// each other with no configuration and talk; the third is never listed and
// lists no one, although their announcements reach each other.
func TestDirectLANDiscovery(t *testing.T) {
	group := testLANGroup()
	x := startDirectNode(t, "mallory", directOpts{lan: true, group: group, secret: "another mesh's secret"})
	a := startDirectNode(t, "alpha", directOpts{lan: true, group: group})
	b := startDirectNode(t, "beta", directOpts{lan: true, group: group})
	serveEcho(t, a, 7200)
	serveEcho(t, b, 7200)
	ipA := waitMember(t, b, "alpha")
	ipB := waitMember(t, a, "beta")
	exchange(t, b, ipA, 7200, "alpha")
	exchange(t, a, ipB, 7200, "beta")
	checkDirectStatus(t, a, "beta")
	checkDirectStatus(t, b, "alpha")

	// mallory announces now; alpha and beta handle it (their counters
	// move once it is handled), and mallory has had alpha's and beta's
	// start-up announcements since it started first.
	before := []uint64{a.dm.lan.Stats().Received, b.dm.lan.Stats().Received}
	x.announce()
	deadline := time.Now().Add(testTimeout)
	for i, n := range []*Node{a, b} {
		for n.dm.lan.Stats().Received <= before[i] {
			if time.Now().After(deadline) {
				t.Fatalf("%s never received mallory's announcement", n.cfg.Name)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for _, m := range n.Status().Members {
			if m.Name == "mallory" {
				t.Fatalf("%s lists the member of another mesh: %+v", n.cfg.Name, m)
			}
		}
	}
	// Its own, alpha's and beta's at least.
	for x.dm.lan.Stats().Received < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("mallory handled %d LAN messages, want at least 3", x.dm.lan.Stats().Received)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ms := x.Status().Members; len(ms) != 0 {
		t.Fatalf("mallory lists members of a mesh it does not hold the secret of: %+v", ms)
	}
}

// TestDirectConfig checks what direct mode refuses.
func TestDirectConfig(t *testing.T) {
	base := func() Config {
		return Config{StateDir: "/nonexistent", Topic: "t", Transport: TransportDirect}
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want string // in the error; "" for success
	}{
		{"no relay is fine", func(*Config) {}, ""},
		{"relay refused", func(c *Config) { c.Relays = []string{"ws://127.0.0.1:1"} }, "uses no relay"},
		{"stun refused", func(c *Config) { c.STUNServers = []string{"127.0.0.1:3478"} }, "no STUN"},
		{"bad peer", func(c *Config) { c.Peers = []string{"nonsense"} }, "HOST:PORT"},
		{"unicast LAN group", func(c *Config) { c.LANGroup = netip.MustParseAddrPort("10.0.0.1:5") }, "multicast"},
		{"peers without direct", func(c *Config) {
			c.Transport, c.Relays, c.Peers = TransportAuto, []string{"ws://127.0.0.1:1"}, []string{"127.0.0.1:5"}
		}, "static peers"},
		{"no relay in auto", func(c *Config) { c.Transport = TransportAuto }, "no relay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(&c)
			_, err := c.withDefaults()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParsePeer(t *testing.T) {
	priv, err := nodekey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	key := priv.Public()
	tests := []struct {
		in      string
		want    StaticPeer
		wantErr bool
	}{
		{in: "192.0.2.1:51898", want: StaticPeer{Host: "192.0.2.1", Port: 51898}},
		{in: key.String() + "@192.0.2.1:51898", want: StaticPeer{Key: key, Host: "192.0.2.1", Port: 51898}},
		{in: key.String() + "@nas.local:1", want: StaticPeer{Key: key, Host: "nas.local", Port: 1}},
		{in: "[::ffff:192.0.2.1]:5", want: StaticPeer{Host: "192.0.2.1", Port: 5}},
		{in: "192.0.2.1", wantErr: true},
		{in: "192.0.2.1:0", wantErr: true},
		{in: "192.0.2.1:65536", wantErr: true},
		{in: ":51898", wantErr: true},
		{in: "[2001:db8::1]:51898", wantErr: true},
		{in: "224.0.0.1:5", wantErr: true},
		{in: "0.0.0.0:5", wantErr: true},
		{in: "notakey@192.0.2.1:5", wantErr: true},
		{in: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=@192.0.2.1:5", wantErr: true},
		{in: "a b:5", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePeer(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParsePeer = %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParsePeer = %+v, %v; want %+v", got, err, tt.want)
			}
			// String gives back a form ParsePeer reads the same.
			if again, err := ParsePeer(got.String()); err != nil || again != got {
				t.Fatalf("round trip of %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func FuzzParsePeer(f *testing.F) {
	f.Add("192.0.2.1:51898")
	f.Add("hT1kZ2Tl9QpRCHNzIcUeCKkT3YgT3lG7RXjZzx6hwQI=@host.example:1")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePeer(s)
		if err != nil {
			return
		}
		if p.Port == 0 || p.Host == "" {
			t.Fatalf("ParsePeer(%q) = %+v without an error", s, p)
		}
		again, err := ParsePeer(p.String())
		if err != nil || again != p {
			t.Fatalf("ParsePeer(%q).String() = %q does not parse back: %+v, %v", s, p.String(), again, err)
		}
	})
}

func TestLANAddr(t *testing.T) {
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
			got, ok := lanAddr(tt.src, tt.cands)
			if ok != tt.wantOK || got != tt.want {
				t.Fatalf("lanAddr = %s, %v; want %s, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// FuzzParseCandidate feeds arbitrary announced candidates (network input,
// authenticated but from any member) to the direct-mode candidate parser.
func FuzzParseCandidate(f *testing.F) {
	f.Add("udp4 192.0.2.10:41641 host")
	f.Add("udp6 [2001:db8::10]:41641 host")
	f.Add("udp4 0.0.0.0:1")
	f.Fuzz(func(t *testing.T, s string) {
		ap, ok := parseCandidate(s)
		if ok && (!ap.Addr().Is4() || ap.Port() == 0) {
			t.Fatalf("parseCandidate(%q) = %s", s, ap)
		}
		src := netip.MustParseAddrPort("192.0.2.99:1")
		if got, ok := lanAddr(src, []string{s}); ok && (!validPeerAddr(got) || got.Addr() != src.Addr() && got != ap) {
			t.Fatalf("lanAddr from %q = %s", s, got)
		}
	})
}
