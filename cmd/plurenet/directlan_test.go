//go:build linux

package main

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
)

// TestLabSwarmNoRelay runs a mesh in swarm mode (no relay at all), with
// the real binary in network namespaces:
//
//   - a and b sit on one home LAN (behind router r1) and find each other
//     by LAN discovery (multicast), with no configuration;
//   - c has a public address; a knows it as a static peer (--peer
//     HOST:PORT, no key) and reaches it from behind r1's NAT, and c
//     answers over the mapping a's announcements opened;
//   - b and c meet through a's introduction (forwarded announcements);
//   - x, on the same LAN with another secret, is never listed.
//
// It pings and curls over the overlay addresses and checks that status
// calls the path direct.
func TestLabSwarmNoRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("network lab: skipped in -short mode")
	}
	lab := netlab.New(t)
	m := &labMesh{t: t, lab: lab, bin: plurenetBinary(t)}
	r1 := lab.NATRouter("r1", netlab.RouterConfig{})
	ha, hb, hx := lab.Host("a", r1), lab.Host("b", r1), lab.Host("x", r1)
	hc := lab.Host("c", lab.Internet())

	start := func(h *netlab.Host, name, key string, extra ...string) *labNode {
		n := &labNode{t: t, m: m, name: name, host: h, dir: privateDir(t)}
		args := append([]string{"up", "--tun", labTUN, "--transport", "swarm", "--dht", "off",
			"--topic", labTopic, "--key", key, "--state-dir", n.dir, "--name", name}, extra...)
		n.proc = h.Start(context.Background(), m.bin, args...)
		return n
	}
	c := start(hc, "c", labKey)
	cAddr := netip.AddrPortFrom(hc.Addr(), 51898) // the default port of the direct path in swarm mode
	a := start(ha, "a", labKey, "--peer", cAddr.String())
	b := start(hb, "b", labKey)
	x := start(hx, "x", "another lab secret, of another mesh")

	t0 := time.Now()
	waitMesh(t, a, b)
	t.Logf("a,b met after %v", time.Since(t0))
	waitMesh(t, a, c)
	t.Logf("a,c met after %v", time.Since(t0))
	for _, n := range []*labNode{a, b, c} {
		serveHTTP(t, n.host, netip.AddrPortFrom(n.ip4, labHTTPPort), helloHandler(n.name))
	}
	// b and c share nothing, but a introduces them (forwarded
	// announcements), so they meet too.
	waitMesh(t, b, c)
	t.Logf("b,c met after %v", time.Since(t0))
	for _, pair := range [][2]*labNode{{a, b}, {b, a}, {a, c}, {c, a}, {b, c}, {c, b}} {
		from, to := pair[0], pair[1]
		t.Run(from.name+"->"+to.name, func(t *testing.T) {
			ping(t, from.host, to.ip4)
			ping(t, from.host, to.ip6)
			curlHello(t, from.host, netip.AddrPortFrom(to.ip4, labHTTPPort), to.name)
		})
	}
	for _, n := range []*labNode{a, b, c} {
		for _, mem := range n.mustStatus().Members {
			if mem.Name == "x" {
				t.Errorf("%s lists x, a member of another mesh", n.name)
			}
			if mem.Path != "direct" || mem.Direct == nil || mem.Direct.Remote == "" {
				t.Errorf("%s's view of %s: path %q, direct %+v", n.name, mem.Name, mem.Path, mem.Direct)
			}
		}
	}
	if ms := x.mustStatus().Members; len(ms) != 0 {
		t.Errorf("x lists members of a mesh it does not hold the secret of: %+v", ms)
	}
	// c sees a at r1's public address: the NAT mapping, not a's LAN one.
	for _, mem := range c.mustStatus().Members {
		if mem.Name == "a" {
			if got, want := mem.Direct.Remote, r1.Addr().String(); netip.MustParseAddrPort(got).Addr().String() != want {
				t.Errorf("c reaches a at %s, want r1's public address %s", got, want)
			}
		}
	}
	stopNode(t, a)
}
