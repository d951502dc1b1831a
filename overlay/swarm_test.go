package overlay

import (
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/mesh"
)

type swarmOpts struct {
	secret string
	peers  []string
	// lan turns LAN discovery on, on the loopback interface only, in group.
	lan   bool
	group netip.AddrPort
	// dht turns the DHT on with these bootstrap nodes.
	dht []string
}

// startSwarmNode starts a node in swarm mode on 127.0.0.1: no relay.
func startSwarmNode(t *testing.T, name string, o swarmOpts) *Node {
	t.Helper()
	if o.secret == "" {
		o.secret = "test secret"
	}
	cfg := Config{
		Transport:  TransportSwarm,
		ListenAddr: netip.MustParseAddr("127.0.0.1"),
		StateDir:   shortTempDir(t),
		Topic:      "overlay-swarm-test",
		Secret:     o.secret,
		Name:       name,
		Peers:      o.peers,
		NoLAN:      !o.lan,
		Logger:     testLogger(t).With("node", name),
	}
	cfg.DHT, cfg.DHTBootstrap = o.dht != nil, o.dht
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
	if st.Transport != TransportSwarm || st.UDP == "" || len(st.Relays) != 0 {
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

// talkDirect has alpha (a) and beta (b) find each other and exchange a
// line over TCP both ways on port, and checks that each lists the other on
// the direct path at a static address.
func talkDirect(t *testing.T, a, b *Node, port int) {
	t.Helper()
	serveEcho(t, a, port)
	serveEcho(t, b, port)
	ipA := waitMember(t, b, "alpha")
	ipB := waitMember(t, a, "beta")
	exchange(t, b, ipA, port, "alpha")
	exchange(t, a, ipB, port, "beta")
	checkDirectStatus(t, a, "beta")
	checkDirectStatus(t, b, "alpha")
}

// TestSwarmStaticPeers: beta knows alpha's address (with or without its
// key), alpha knows nothing; they find each other with no relay and TCP
// flows both ways over their overlay IPs.
func TestSwarmStaticPeers(t *testing.T) {
	for _, withKey := range []bool{true, false} {
		name := "host:port"
		if withKey {
			name = "key@host:port"
		}
		t.Run(name, func(t *testing.T) {
			a := startSwarmNode(t, "alpha", swarmOpts{})
			peer := a.direct.LocalAddr().String()
			if withKey {
				peer = a.PublicKey().String() + "@" + peer
			}
			b := startSwarmNode(t, "beta", swarmOpts{peers: []string{peer}})
			talkDirect(t, a, b, 7100)
		})
	}
}

// TestSwarmLeave: a node that closes says goodbye over UDP; the other
// drops it at once rather than after the member timeout.
func TestSwarmLeave(t *testing.T) {
	a := startSwarmNode(t, "alpha", swarmOpts{})
	b := startSwarmNode(t, "beta", swarmOpts{peers: []string{a.direct.LocalAddr().String()}})
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
	// The member list drops beta before syncPeers removes its direct
	// path (peers.go), so the path is waited for too.
	for {
		addr, _, ok := a.direct.StaticAddr(b.PublicKey())
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alpha keeps a direct path to a member that left: %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSwarmLANDiscovery: three nodes on one "LAN" (multicast on the
// loopback interface), one with another secret. The two of one mesh find
// each other with no configuration and talk; the third is never listed and
// lists no one, although their announcements reach each other.
func TestSwarmLANDiscovery(t *testing.T) {
	group := testLANGroup()
	x := startSwarmNode(t, "mallory", swarmOpts{lan: true, group: group, secret: "another mesh's secret"})
	a := startSwarmNode(t, "alpha", swarmOpts{lan: true, group: group})
	b := startSwarmNode(t, "beta", swarmOpts{lan: true, group: group})
	talkDirect(t, a, b, 7200)

	// mallory announces now; alpha and beta handle it (their counters
	// move once it is handled), and mallory has had alpha's and beta's
	// start-up announcements since it started first.
	before := []uint64{a.swarm.lan.Stats().Received, b.swarm.lan.Stats().Received}
	x.announce()
	deadline := time.Now().Add(testTimeout)
	for i, n := range []*Node{a, b} {
		for n.swarm.lan.Stats().Received <= before[i] {
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
	for x.swarm.lan.Stats().Received < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("mallory handled %d LAN messages, want at least 3", x.swarm.lan.Stats().Received)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ms := x.Status().Members; len(ms) != 0 {
		t.Fatalf("mallory lists members of a mesh it does not hold the secret of: %+v", ms)
	}
}

// TestSwarmReplay (issue 9 item 6): an outsider on the LAN sends a copy
// of alpha's genuine announcement to beta from its own address, winning the
// race against alpha's own copy, so beta accepts it as new. Beta does not
// move alpha's path there: it probes the outsider's address, which cannot
// answer as alpha, and alpha's real path keeps carrying traffic. Before,
// the copy's source became alpha's path at once.
func TestSwarmReplay(t *testing.T) {
	a := startSwarmNode(t, "alpha", swarmOpts{})
	b := startSwarmNode(t, "beta", swarmOpts{peers: []string{a.direct.LocalAddr().String()}})
	talkDirect(t, a, b, 7300)
	alphaPath := a.direct.LocalAddr()
	if addr, _, _ := b.direct.StaticAddr(a.pub); addr != alphaPath {
		t.Fatalf("beta's path to alpha is %s, want %s", addr, alphaPath)
	}

	x, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	// What alpha multicasts next; the outsider's copy arrives first.
	captured, ok := a.seal(a.selfAnnounce())
	if !ok {
		t.Fatal("sealing")
	}
	lastSeen := func() time.Time {
		for _, m := range b.members.List() {
			if m.Key == a.pub {
				return m.LastSeen
			}
		}
		return time.Time{}
	}
	before := lastSeen()
	if _, err := x.WriteToUDPAddrPort(captured, b.direct.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testTimeout)
	for !lastSeen().After(before) {
		if time.Now().After(deadline) {
			t.Fatal("beta never accepted the copy")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if addr, _, _ := b.direct.StaticAddr(a.pub); addr != alphaPath {
		t.Fatalf("the copy moved beta's path to alpha to %s", addr)
	}
	// Beta checks the outsider's address: a probe arrives there.
	buf := make([]byte, 4096)
	_ = x.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := x.Read(buf)
	if err != nil {
		t.Fatalf("no path check reached the outsider's address: %v", err)
	}
	if m, err := mesh.Open(b.keys.current(), buf[:n]); err != nil || m.Kind != mesh.KindSignal || m.From != b.pub {
		t.Fatalf("the outsider got %d bytes (%v), not beta's path check", n, err)
	}
	if addr, usable, _ := b.direct.StaticAddr(a.pub); addr != alphaPath || !usable {
		t.Fatalf("after the replay beta's path to alpha is %s (usable %v), want %s", addr, usable, alphaPath)
	}
	exchange(t, b, waitMember(t, b, "alpha"), 7300, "alpha")
	checkDirectStatus(t, b, "alpha")
}

// TestSwarmConfig checks what swarm mode refuses.
func TestSwarmConfig(t *testing.T) {
	base := func() Config {
		return Config{StateDir: "/nonexistent", Topic: "t", Transport: TransportSwarm}
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
		{"peers without swarm", func(c *Config) {
			c.Transport, c.Relays, c.Peers = TransportAuto, []string{"ws://127.0.0.1:1"}, []string{"127.0.0.1:5"}
		}, "static peers"},
		{"no relay in auto", func(c *Config) { c.Transport = TransportAuto }, "no relay"},
		{"dht in auto", func(c *Config) {
			c.Transport, c.Relays, c.DHT, c.DHTBootstrap = TransportAuto, []string{"ws://127.0.0.1:1"}, true, []string{"127.0.0.1:6881"}
		}, ""},
		{"dht in relay mode refused", func(c *Config) {
			c.Transport, c.Relays, c.DHT = TransportRelay, []string{"ws://127.0.0.1:1"}, true
		}, "sends no UDP"},
		{"dht bootstrap without dht", func(c *Config) {
			c.Transport, c.Relays, c.DHTBootstrap = TransportAuto, []string{"ws://127.0.0.1:1"}, []string{"127.0.0.1:6881"}
		}, "DHT is off"},
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

// TestParseTransport: "direct", swarm mode's old name, still means swarm
// mode, and says it was renamed so that the caller logs it.
func TestParseTransport(t *testing.T) {
	tests := []struct {
		in, want string
		renamed  bool
		wantErr  bool
	}{
		{"", TransportAuto, false, false},
		{"auto", TransportAuto, false, false},
		{"relay", TransportRelay, false, false},
		{"swarm", TransportSwarm, false, false},
		{"direct", TransportSwarm, true, false},
		{"Swarm", "", false, true},
		{"carrier-pigeon", "", false, true},
	}
	for _, tt := range tests {
		mode, renamed, err := ParseTransport(tt.in)
		if mode != tt.want || renamed != tt.renamed || (err != nil) != tt.wantErr {
			t.Errorf("ParseTransport(%q) = %q, %v, %v; want %q, %v, error %v", tt.in, mode, renamed, err, tt.want, tt.renamed, tt.wantErr)
		}
	}
	var logged strings.Builder
	cfg := Config{StateDir: "/nonexistent", Topic: "t", Transport: "direct", Logger: slog.New(slog.NewTextHandler(&logged, nil))}
	cfg, err := cfg.withDefaults()
	if err != nil || cfg.Transport != TransportSwarm || strings.Count(logged.String(), SwarmRenamedNotice) != 1 {
		t.Fatalf("Config with the old name: transport %q, err %v, log %q", cfg.Transport, err, logged.String())
	}
}
