//go:build linux

package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/plures/plurenet/internal/netlab"
)

// Ports of TestLabTUNKeepsHostPrivate.
const (
	safetyExposePort = 18080 // --expose on the node
	safetyLocalPort  = 3000  // the node's loopback-only service
	safetySOCKSPort  = 1080  // the node's SOCKS5 proxy, on loopback
	safetyLANPort    = 8081  // a service of the node's LAN neighbour
)

// TestLabTUNKeepsHostPrivate runs a kernel-TUN node "a" that exposes a
// loopback-only service to members (--expose) and serves SOCKS5 on
// loopback, with a neighbour on its LAN and a member "b" elsewhere:
//
//   - b reaches the exposed service on a's overlay IPv4 and IPv6; the LAN
//     neighbour gets nothing on a's LAN address (it used to: the listener
//     was on every interface);
//   - through a's SOCKS5 proxy, a member is reached by name, but not a's own
//     loopback service nor the LAN neighbour (it used to dial anything);
//   - when a third member pins a's IPv4 and a moves to another one, the
//     exposed service follows to the new address.
func TestLabTUNKeepsHostPrivate(t *testing.T) {
	m := newLabMesh(t)
	r1 := m.lab.NATRouter("r1", netlab.RouterConfig{})
	ha := m.lab.Host("a", r1)
	neighbour := m.lab.Host("lan", r1)
	hb := m.lab.Host("b", m.lab.NATRouter("r2", netlab.RouterConfig{}))

	loopbackSvc := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), safetyLocalPort)
	serveHTTP(t, ha, loopbackSvc, helloHandler("a's loopback"))
	lanSvc := netip.AddrPortFrom(neighbour.Addr(), safetyLANPort)
	serveHTTP(t, neighbour, lanSvc, helloHandler("the LAN"))
	// The neighbour's service is reachable from a's host directly: what
	// the proxy refuses below is refused by the proxy, not the network.
	curlHello(t, ha, lanSvc, "the LAN")

	a := m.startNode(ha, "a",
		"--expose", fmt.Sprintf("%d=%s", safetyExposePort, loopbackSvc),
		"--socks5", fmt.Sprintf("127.0.0.1:%d", safetySOCKSPort))
	b := m.startNode(hb, "b")
	waitMesh(t, a, b)
	waitOutput(t, a.proc, "members reach")
	waitOutput(t, a.proc, "SOCKS5 proxy into the mesh")
	serveHTTP(t, hb, netip.AddrPortFrom(b.ip4, labHTTPPort), helloHandler("b"))

	t.Run("expose binds the overlay only", func(t *testing.T) {
		curlHello(t, hb, netip.AddrPortFrom(a.ip4, safetyExposePort), "a's loopback")
		curlHello(t, hb, netip.AddrPortFrom(a.ip6, safetyExposePort), "a's loopback")
		curlFails(t, neighbour, "http://"+netip.AddrPortFrom(ha.Addr(), safetyExposePort).String()+"/")
	})

	t.Run("SOCKS5 reaches only the mesh", func(t *testing.T) {
		proxy := []string{"--socks5-hostname", fmt.Sprintf("127.0.0.1:%d", safetySOCKSPort)}
		out := labRun(t, ha, "curl", append(proxy, "-sS", "--fail", "--max-time", "30", fmt.Sprintf("http://b:%d/", labHTTPPort))...)
		if out != "hello from b\n" {
			t.Fatalf("curl through SOCKS5 to member b: %q", out)
		}
		curlFails(t, ha, append(proxy, "http://"+loopbackSvc.String()+"/")...)
		curlFails(t, ha, append(proxy, "http://localhost:"+fmt.Sprint(safetyLocalPort)+"/")...)
		curlFails(t, ha, append(proxy, "http://"+lanSvc.String()+"/")...)
	})

	t.Run("expose follows a moved address", func(t *testing.T) {
		c, old := m.takeIPv4(a, "c")
		t.Logf("a moved from %s to %s", old, a.ip4)
		waitMesh(t, a, b, c)
		curlHello(t, hb, netip.AddrPortFrom(a.ip4, safetyExposePort), "a's loopback")
		curlHello(t, hb, netip.AddrPortFrom(a.ip6, safetyExposePort), "a's loopback")
		curlFails(t, neighbour, "http://"+netip.AddrPortFrom(ha.Addr(), safetyExposePort).String()+"/")
	})
}

// curlFails runs curl with args from h and fails t if it got an answer.
func curlFails(t *testing.T, h *netlab.Host, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), labCommandWait)
	defer cancel()
	out, err := h.Run(ctx, "curl", append([]string{"-sS", "--fail", "-g", "--max-time", "10"}, args...)...).CombinedOutput()
	if err == nil {
		t.Fatalf("%s: curl %s succeeded, want it refused: %q", h.Name(), strings.Join(args, " "), out)
	}
	t.Logf("%s: curl %s: refused as it should be: %s", h.Name(), strings.Join(args, " "), strings.TrimSpace(string(out)))
}
