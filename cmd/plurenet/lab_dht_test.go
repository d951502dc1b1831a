//go:build linux

package main

// Network-lab tests of swarm mode on the Mainline DHT: a private DHT of
// "plurenet dht-node"s on the lab internet, members behind home NATs that
// find each other through it with no relay and no --peer between them, and
// a relay-mode member that sends no UDP at all. Same lab and binary as
// lab_test.go; they need root and skip without it.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/overlay"
)

const (
	// labDHTNodes is the size of the lab's private DHT.
	labDHTNodes = 8
	// labDHTPort is where each lab DHT node listens.
	labDHTPort = 6881
	// labDHTMeetWait bounds two members finding each other on the DHT:
	// a lookup is well under a second on the lab, the backoff between
	// lookups starts at 1 s, and both sides must have looked up once
	// after the other announced.
	labDHTMeetWait = 60 * time.Second
)

// labDHT is a lab with a private DHT and no relay.
type labDHT struct {
	*labMesh
	boot string // HOST:PORT,... of the DHT nodes
}

func newLabDHT(t *testing.T) *labDHT {
	t.Helper()
	if testing.Short() {
		t.Skip("network lab: skipped in -short mode")
	}
	lab := netlab.New(t)
	d := &labDHT{labMesh: &labMesh{t: t, lab: lab, bin: plurenetBinary(t)}}
	var addrs []string
	for i := range labDHTNodes {
		h := lab.Host(fmt.Sprintf("dht%d", i), lab.Internet())
		boot := "none" // the first node knows nobody; the others join through it
		if i > 0 {
			boot = addrs[0]
		}
		p := h.Start(context.Background(), d.bin, "dht-node", "--listen", fmt.Sprintf("0.0.0.0:%d", labDHTPort), "--bootstrap", boot)
		waitOutput(t, p, "plurenet dht-node listening on")
		addrs = append(addrs, netip.AddrPortFrom(h.Addr(), labDHTPort).String())
	}
	d.boot = strings.Join(addrs, ",")
	return d
}

// startMember starts a swarm-mode member on h with the lab DHT, no LAN
// discovery (each home is its own LAN anyway) and no static peer unless
// extra says so, in state directory dir ("" for a new one).
func (d *labDHT) startMember(h *netlab.Host, name, key, dir string, extra ...string) *labNode {
	d.t.Helper()
	if dir == "" {
		dir = privateDir(d.t)
	}
	n := &labNode{t: d.t, m: d.labMesh, name: name, host: h, dir: dir}
	args := []string{"up", "--tun", labTUN, "--transport", "swarm", "--lan-discovery", "off",
		"--topic", labTopic, "--key", key, "--state-dir", dir, "--name", name}
	if !slices.Contains(extra, "--dht") { // "--dht off" takes no bootstrap nodes
		args = append(args, "--dht-bootstrap", d.boot)
	}
	args = append(args, extra...)
	n.proc = h.Start(context.Background(), d.bin, args...)
	return n
}

// waitMeet waits until the nodes list each other (waitMesh, with the
// DHT's longer wait) and returns how long that took from since.
func waitMeet(t *testing.T, since time.Time, nodes ...*labNode) time.Duration {
	t.Helper()
	waitMeshWithin(t, labDHTMeetWait, nodes...)
	return time.Since(since)
}

// memberView is n's view of the member called name.
func memberView(t *testing.T, n *labNode, name string) overlay.MemberStatus {
	t.Helper()
	m, ok := member(n.mustStatus(), name)
	if !ok {
		t.Fatalf("%s does not list %s", n.name, name)
	}
	return m
}

// TestLabDHT: two members behind two home NATs, no relay and no --peer
// between them, find each other on a private DHT of 8 dht-nodes, go
// direct and move 64 MiB intact; a member with the wrong secret never
// appears; a restarted member is found again; a member joining through
// the DHT learns a member that is not on the DHT at all (forwarded
// announcements).
func TestLabDHT(t *testing.T) {
	d := newLabDHT(t)
	lab := d.lab
	ha := lab.Host("a", lab.NATRouter("r1", netlab.RouterConfig{}))
	hb := lab.Host("b", lab.NATRouter("r2", netlab.RouterConfig{}))
	hx := lab.Host("x", lab.NATRouter("r3", netlab.RouterConfig{}))
	hc := lab.Host("c", lab.NATRouter("r4", netlab.RouterConfig{}))
	hd := lab.Host("d", lab.Internet())

	// d is a member with a public address that is not on the DHT; only a
	// knows it (--peer). Nobody else can learn of d but through a.
	dn := d.startMember(hd, "d", labKey, "", "--dht", "off")
	began := time.Now()
	a := d.startMember(ha, "a", labKey, "", "--peer", netip.AddrPortFrom(hd.Addr(), overlay.DefaultDirectPort).String())
	b := d.startMember(hb, "b", labKey, "")
	x := d.startMember(hx, "x", "the wrong secret, another mesh entirely", "")
	meet := waitMeet(t, began, a, b)
	t.Logf("a and b (two home NATs, no relay, no --peer between them) met through the DHT %v after both started", meet.Round(time.Millisecond))

	firstByte, rate := transferOverlay(t, a, b, 9000, 1, nil)
	t.Logf("64 MiB b -> a over the overlay: first byte after %v, %.1f MiB/s, SHA-256 intact", firstByte.Round(time.Millisecond), rate/(1<<20))
	for _, pair := range [][2]*labNode{{a, b}, {b, a}} {
		m := memberView(t, pair[0], pair[1].name)
		if m.Path != pathDirect || m.Direct == nil || m.Direct.Remote == "" {
			t.Fatalf("%s's view of %s after the transfer: path %q, direct %+v; want direct", pair[0].name, pair[1].name, m.Path, m.Direct)
		}
	}
	if st := a.mustStatus(); st.DHT == nil || st.DHT.RoutingTable == 0 || st.DHT.LastAnnounce.IsZero() {
		t.Fatalf("a's DHT status: %+v", st.DHT)
	}

	t.Run("restarted member is found again", func(t *testing.T) {
		stopNode(t, b)
		began := time.Now()
		b = d.startMember(hb, "b", labKey, b.dir)
		took := waitMeet(t, began, a, b)
		t.Logf("b restarted: a and b met again %v after b started", took.Round(time.Millisecond))
		ping(t, a.host, b.ip4)
	})

	t.Run("forwarded announcements", func(t *testing.T) {
		began := time.Now()
		c := d.startMember(hc, "c", labKey, "")
		took := waitMeet(t, began, c, a, b, dn)
		t.Logf("c joined through the DHT and met a, b and d (not on the DHT) %v after it started", took.Round(time.Millisecond))
		if m := memberView(t, c, "d"); m.Via != "forward" {
			t.Fatalf("c met d via %q, want forward", m.Via)
		}
		ping(t, c.host, dn.ip4)
		ping(t, dn.host, c.ip4)
	})

	// Whatever happened, x (another secret) appears nowhere and sees no one.
	for _, n := range []*labNode{a, b, dn} {
		if _, ok := member(n.mustStatus(), "x"); ok {
			t.Errorf("%s lists x, which has the wrong secret", n.name)
		}
	}
	if st := x.mustStatus(); len(st.Members) != 0 {
		t.Errorf("x (wrong secret) lists members %+v", st.Members)
	}
}

// TestLabRelayModeSendsNoUDP: with --transport relay a member sends no
// UDP at all (no direct socket, no DHT, no LAN discovery): a counting rule
// in its namespace's OUTPUT chain sees no UDP packet while it joins the
// mesh and carries traffic, and the namespace holds no UDP socket.
func TestLabRelayModeSendsNoUDP(t *testing.T) {
	m := newLabMesh(t)
	hc := m.lab.Host("corp", m.lab.NATRouter("r1", netlab.RouterConfig{}))
	hh := m.lab.Host("home", m.lab.NATRouter("r2", netlab.RouterConfig{}))
	// A rule with no target only counts. The overlay's own interface is
	// not the network: what goes out on it (e.g. the mesh name server's
	// answers to members) travels inside WireGuard, over the relay.
	labRun(t, hc, "iptables", "-w", "10", "-I", "OUTPUT", "!", "-o", labTUN, "-p", "udp")
	c := m.startNode(hc, "corp", "--transport", "relay")
	h := m.startNode(hh, "home")
	waitMesh(t, c, h)
	ping(t, c.host, h.ip4)
	ping(t, h.host, c.ip4)

	out := labRun(t, hc, "iptables", "-w", "10", "-L", "OUTPUT", "-v", "-x", "-n")
	var counted bool
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		// "pkts bytes [target] prot ...": a counting rule has no target;
		// iptables-nft prints UDP as its protocol number.
		if len(f) < 3 || (f[2] != "udp" && f[2] != "17") {
			continue
		}
		counted = true
		if f[0] != "0" {
			t.Fatalf("the relay-mode member's namespace sent %s UDP packets:\n%s", f[0], out)
		}
	}
	if !counted {
		t.Fatalf("no UDP counting rule in OUTPUT:\n%s", out)
	}
	udp, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", c.proc.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	// Sockets bound to the overlay address (the mesh name server) reach
	// members only; any other UDP socket could reach the network.
	overlayIP := c.ip4.As4()
	onOverlay := fmt.Sprintf("%02X%02X%02X%02X:", overlayIP[3], overlayIP[2], overlayIP[1], overlayIP[0]) // /proc/net/udp: little endian
	for _, line := range strings.Split(strings.TrimSpace(string(udp)), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && !strings.HasPrefix(f[1], onOverlay) {
			t.Fatalf("the relay-mode member's namespace has a UDP socket off the overlay:\n%s", udp)
		}
	}
}
