//go:build linux

package main

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/plures/plurenet/internal/netlab"
)

// TestLabIPv6Direct: two members whose only address on the lab internet is
// IPv6, each behind a stateful IPv6 firewall (unsolicited inbound UDP
// dropped, as home routers do), with a relay (and its STUN responder)
// reachable over IPv6 only through its URL. They go direct with each other
// over IPv6: status names the other member's IPv6 address as the path's
// remote, and a 64 MiB transfer over the overlay arrives intact on that
// path.
func TestLabIPv6Direct(t *testing.T) {
	if testing.Short() {
		t.Skip("network lab: skipped in -short mode")
	}
	lab := netlab.New(t)
	m := &labMesh{t: t, lab: lab, bin: plurenetBinary(t)}
	m.relayHost = lab.Host("relay", lab.Internet())
	m.relayHost.AddIPv6()
	m.relayURL = "ws://" + netip.AddrPortFrom(m.relayHost.Addr6(), labRelayPort).String()
	m.relay = m.relayHost.Start(context.Background(), m.bin, "relay", "--listen", fmt.Sprintf("[::]:%d", labRelayPort))
	waitOutput(t, m.relay, "plurenet relay listening on")

	ha, hb := lab.Host("a", lab.Internet()), lab.Host("b", lab.Internet())
	for _, h := range []*netlab.Host{ha, hb} {
		h.AddIPv6()
		h.DropIPv4()
		ctx, cancel := context.WithTimeout(context.Background(), labCommandWait)
		out, err := h.Run(ctx, "ip6tables", "-w", "-A", "INPUT", "-p", "udp", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("ip6tables in %s: %v: %s", h.Name(), err, out)
		}
	}
	a, b := m.startNode(ha, "a"), m.startNode(hb, "b")
	waitMesh(t, a, b)

	va := waitMember(t, a, "b", directWait, "a direct path to b", isDirect)
	vb := waitMember(t, b, "a", directWait, "a direct path to a", isDirect)
	for _, c := range []struct {
		remote string
		at     string
		want   netip.Addr
	}{{va.Direct.Remote, "a", hb.Addr6()}, {vb.Direct.Remote, "b", ha.Addr6()}} {
		remote, err := netip.ParseAddrPort(c.remote)
		if err != nil || remote.Addr() != c.want {
			t.Fatalf("%s's direct path goes to %q, want the other member's IPv6 address %s", c.at, c.remote, c.want)
		}
	}
	t.Logf("a reaches b at %s, b reaches a at %s (rtt %.3f ms)", va.Direct.Remote, vb.Direct.Remote, va.Direct.RTTMs)

	_, rate := transferOverlay(t, a, b, 9000, transferSize/2, nil)
	v := waitMember(t, a, "b", directWait, "the transfer on the direct path", pathIs(pathDirect))
	if remote, err := netip.ParseAddrPort(v.Direct.Remote); err != nil || remote.Addr() != hb.Addr6() {
		t.Fatalf("after the transfer a reaches b at %q, want %s", v.Direct.Remote, hb.Addr6())
	}
	t.Logf("%d MiB a<-b over the overlay on the IPv6 direct path at %.0f MB/s, SHA-256 intact", transferSize>>20, rate/1e6)
}
