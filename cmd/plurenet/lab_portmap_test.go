//go:build linux

package main

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/overlay"
)

// labSTUNPort is where the lab relay's STUN responder listens (plurenet
// relay's default --stun-listen).
const labSTUNPort = 3478

// TestLabPortMappedDirect: member a sits behind a symmetric NAT (a new
// random external port for every destination, so STUN's answer is useless
// to peers) and member b behind a home NAT that filters by address and
// port. No hole punch gets through: the pair stays on the relay across a
// whole failed ICE attempt. Then the symmetric router runs a real
// port-mapping daemon (Debian's miniupnpd) and a joins again: it maps its
// UDP port, offers the mapped address as a candidate, and the pair goes
// direct over that address. When a leaves, its mapping is gone from the
// router.
func TestLabPortMappedDirect(t *testing.T) {
	m := newLabMesh(t)
	if why := netlab.PortMapperMissing(); why != "" {
		t.Skip(why)
	}
	sym := m.lab.NATRouter("r1", netlab.RouterConfig{Random: true})
	home := m.lab.NATRouter("r2", netlab.RouterConfig{})
	ha, hb := m.lab.Host("a", sym), m.lab.Host("b", home)
	b := m.startNode(hb, "b")

	t.Run("without a port-mapping daemon", func(t *testing.T) {
		a := m.startNode(ha, "a")
		waitMesh(t, a, b)
		onRelay := func(at, of string, v overlay.MemberStatus) {
			t.Helper()
			if isDirect(v) || v.Path == pathDirect {
				t.Fatalf("%s's view of %s: %s; want never direct without a port mapping", at, of, describe(v))
			}
		}
		failed := map[string]bool{}
		watching := time.Now()
		for len(failed) < 2 {
			if time.Since(watching) > failedAttemptWait {
				t.Fatalf("after %v, only these ends saw a failed ICE attempt: %v", failedAttemptWait, failed)
			}
			for _, c := range []struct {
				n    *labNode
				peer string
			}{{a, "b"}, {b, "a"}} {
				st := c.n.mustStatus()
				if st.PortMapping != nil {
					t.Fatalf("%s has a port mapping with no daemon on its router: %+v", c.n.name, *st.PortMapping)
				}
				v, ok := member(st, c.peer)
				if !ok {
					t.Fatalf("%s no longer lists %s", c.n.name, c.peer)
				}
				onRelay(c.n.name, c.peer, v)
				if v.Direct != nil && v.Direct.State == "lost" {
					failed[c.n.name] = true
				}
			}
			time.Sleep(labPoll)
		}
		ping(t, a.host, b.ip4) // over the relay
		t.Logf("a<->b stayed off the direct path for %v, until each end saw an ICE attempt fail", time.Since(watching).Round(time.Millisecond))
		stopNode(t, a)
	})

	t.Run("with miniupnpd on a's router", func(t *testing.T) {
		sym.StartPortMapper(netip.AddrPortFrom(m.relayHost.Addr(), labSTUNPort))
		started := time.Now()
		a := m.startNode(ha, "a")
		waitMesh(t, a, b)
		mapped, proto := waitMapped(t, a)
		t.Logf("a's UDP port is mapped by %s to %s", proto, mapped)
		if mapped.Addr() != sym.Addr() {
			t.Fatalf("a's mapped address %s is not its router's WAN address %s", mapped, sym.Addr())
		}
		checkForwarded(t, sym, mapped.Port(), true)

		va := waitMember(t, a, "b", redirectWait, "a direct path to b", isDirect)
		vb := waitMember(t, b, "a", redirectWait, "a direct path to a", isDirect)
		t.Logf("a started -> direct at both ends in %v; a reaches b at %s, b reaches a at %s (a's mapping %s)",
			time.Since(started).Round(time.Millisecond), va.Direct.Remote, vb.Direct.Remote, mapped)
		if vb.Direct.Remote != mapped.String() {
			t.Errorf("b reaches a at %s, want a's mapped address %s", vb.Direct.Remote, mapped)
		}
		ping(t, a.host, b.ip4)
		ping(t, b.host, a.ip4)
		for _, c := range []struct {
			n    *labNode
			peer string
		}{{a, "b"}, {b, "a"}} {
			if v, _ := member(c.n.mustStatus(), c.peer); v.Path != pathDirect {
				t.Errorf("%s's path to %s after ping: %s; want %q", c.n.name, c.peer, describe(v), pathDirect)
			}
		}

		stopNode(t, a)
		checkForwarded(t, sym, mapped.Port(), false)
	})

	// The other two protocols against the same daemon: each maps the
	// port and removes the mapping when the node leaves.
	for _, p := range []string{"nat-pmp", "pcp"} {
		t.Run("with "+p+" only", func(t *testing.T) {
			a := m.startNode(ha, "a", "--port-mapping", p)
			waitMesh(t, a)
			mapped, proto := waitMapped(t, a)
			if proto != p || mapped.Addr() != sym.Addr() {
				t.Fatalf("a's mapping: %s by %s; want one on %s by %s", mapped, proto, sym.Addr(), p)
			}
			checkForwarded(t, sym, mapped.Port(), true)
			stopNode(t, a)
			checkForwarded(t, sym, mapped.Port(), false)
		})
	}
}

// waitMapped waits until n's status shows a port mapping and returns it.
func waitMapped(t *testing.T, n *labNode) (netip.AddrPort, string) {
	t.Helper()
	deadline := time.Now().Add(labStartWait)
	for {
		if st := n.mustStatus(); st.PortMapping != nil {
			ext, err := netip.ParseAddrPort(st.PortMapping.External)
			if err != nil {
				t.Fatalf("%s's port mapping %+v: %v", n.name, *st.PortMapping, err)
			}
			return ext, st.PortMapping.Protocol
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no port mapping %v after starting:\n%s", n.name, labStartWait, n.proc.Output())
		}
		time.Sleep(labPoll)
	}
}

// checkForwarded checks whether the router's miniupnpd forwards port.
func checkForwarded(t *testing.T, r *netlab.Router, port uint16, want bool) {
	t.Helper()
	ports, err := r.MappedPorts()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(ports, port) != want {
		t.Fatalf("the router forwards ports %v; want port %d there: %v", ports, port, want)
	}
}
