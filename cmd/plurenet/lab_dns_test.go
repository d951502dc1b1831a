//go:build linux

package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/plures/plurenet/internal/netlab"
)

// Settings of TestLabNamesOverDNS.
const (
	// labSuffix is what the lab topic, plurenet-lab, gives.
	labSuffix = "plurenet-lab.plurenet"
	// labDNSListen is node a's --dns-listen socket.
	labDNSListen = "127.0.0.1:5353"
	// labDNSWait bounds one query of the test's own DNS client.
	labDNSWait = 3 * time.Second
)

// TestLabNamesOverDNS runs kernel-TUN members in namespaces, each
// namespace's glibc pointed at its own node (/etc/netns/NS/resolv.conf, as
// a host without systemd-resolved would be set up):
//
//   - getent, ping and curl reach every other member by NAME.SUFFIX, over
//     IPv4 and IPv6, and getent turns an overlay address back into a name;
//   - names outside the suffix (example.com) get REFUSED, on the overlay
//     and on --dns-listen;
//   - a LAN neighbour that routes the overlay prefix to a node reaches the
//     node's overlay address (ping) but gets no DNS answer, UDP or TCP;
//   - a member that stops (its goodbye) resolves to NXDOMAIN, and the block
//     it kept in its --hosts-file is gone, the file restored;
//   - when the collision rule moves a node's IPv4, its resolver answers on
//     the new address.
func TestLabNamesOverDNS(t *testing.T) {
	m := newLabMesh(t)
	r1 := m.lab.NATRouter("r1", netlab.RouterConfig{})
	ha := m.lab.Host("a", r1)
	neighbour := m.lab.Host("lan", r1)
	hb := m.lab.Host("b", m.lab.NATRouter("r2", netlab.RouterConfig{}))
	hc := m.lab.Host("c", m.lab.NATRouter("r3", netlab.RouterConfig{}))

	hosts := filepath.Join(privateDir(t), "hosts")
	const hostsBefore = "127.0.0.1\tlocalhost\n"
	if err := os.WriteFile(hosts, []byte(hostsBefore), 0o644); err != nil {
		t.Fatal(err)
	}
	a := m.startNode(ha, "a", "--dns-listen", labDNSListen)
	b := m.startNode(hb, "b")
	c := m.startNode(hc, "c", "--hosts-file", hosts)
	nodes := []*labNode{a, b, c}
	waitMesh(t, nodes...)

	for _, n := range nodes {
		st := n.mustStatus()
		if st.DNS == nil || st.DNS.Suffix != labSuffix || st.DNS.Address != netip.AddrPortFrom(n.ip4, 53).String() || st.DNS.Name != n.name+"."+labSuffix {
			t.Fatalf("%s: dns status %+v", n.name, st.DNS)
		}
		waitOutput(t, n.proc, "names: NAME."+labSuffix)
		pointResolver(t, n.host, n.ip4)
		serveHTTP(t, n.host, netip.AddrPortFrom(n.ip4, labHTTPPort), helloHandler(n.name))
		serveHTTP(t, n.host, netip.AddrPortFrom(n.ip6, labHTTPPort), helloHandler(n.name))
	}

	t.Run("every pair by name", func(t *testing.T) {
		for _, from := range nodes {
			for _, to := range nodes {
				if from == to {
					continue
				}
				name := to.name + "." + labSuffix
				if out := labRun(t, from.host, "getent", "ahostsv4", name); !strings.Contains(out, to.ip4.String()) {
					t.Fatalf("%s: getent ahostsv4 %s: %q, want %s", from.name, name, out, to.ip4)
				}
				if out := labRun(t, from.host, "getent", "ahostsv6", name); !strings.Contains(out, to.ip6.String()) {
					t.Fatalf("%s: getent ahostsv6 %s: %q, want %s", from.name, name, out, to.ip6)
				}
				for _, family := range []string{"-4", "-6"} {
					if out := labRun(t, from.host, "ping", family, "-c", "3", "-i", "0.2", "-w", "20", name); !strings.Contains(out, "3 received") {
						t.Fatalf("%s: ping %s %s: want 3 replies:\n%s", from.name, family, name, out)
					}
					url := fmt.Sprintf("http://%s:%d/", name, labHTTPPort)
					if out := labRun(t, from.host, "curl", family, "-sS", "--fail", "--max-time", "30", url); out != "hello from "+to.name+"\n" {
						t.Fatalf("%s: curl %s %s: %q", from.name, family, url, out)
					}
				}
			}
		}
		// Reverse: an overlay address back to its member's name.
		if out := labRun(t, a.host, "getent", "hosts", b.ip6.String()); !strings.Contains(out, "b."+labSuffix) {
			t.Fatalf("getent hosts %s: %q, want b.%s", b.ip6, out, labSuffix)
		}
	})

	t.Run("not an open resolver", func(t *testing.T) {
		for _, server := range []string{netip.AddrPortFrom(a.ip4, 53).String(), labDNSListen} {
			r, err := askIn(ha, "udp", server, "example.com", dns.TypeA)
			if err != nil || r.Rcode != dns.RcodeRefused {
				t.Fatalf("example.com from a to %s: %v, %v; want REFUSED", server, r, err)
			}
		}
		r, err := askIn(ha, "udp", labDNSListen, "b."+labSuffix, dns.TypeA)
		if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != b.ip4.String() {
			t.Fatalf("b over --dns-listen: %v, %v", r, err)
		}
		if out, err := runIn(a.host, "getent", "ahostsv4", "example.com"); err == nil {
			t.Fatalf("getent example.com from a resolved: %q", out)
		}

		// The neighbour sends to a's overlay address through a's LAN
		// address: Linux takes such packets (weak host model), which the
		// ping shows, so the silence below is the resolver's doing.
		labRun(t, neighbour, "ip", "route", "add", netip.PrefixFrom(a.ip4, 32).String(), "via", ha.Addr().String())
		ping(t, neighbour, a.ip4)
		for _, network := range []string{"udp", "tcp"} {
			if r, err := askIn(neighbour, network, netip.AddrPortFrom(a.ip4, 53).String(), "a."+labSuffix, dns.TypeA); err == nil {
				t.Fatalf("the LAN neighbour got an answer over %s: %v", network, r)
			} else {
				t.Logf("the LAN neighbour got no answer over %s, as it should: %v", network, err)
			}
		}
	})

	t.Run("a member that leaves stops resolving", func(t *testing.T) {
		if got, err := os.ReadFile(hosts); err != nil || !strings.Contains(string(got), a.ip6.String()+"\ta."+labSuffix+" ") {
			t.Fatalf("c's hosts file while it runs: %q, %v; want a block naming a", got, err)
		}
		stopNode(t, c)
		if got, err := os.ReadFile(hosts); err != nil || string(got) != hostsBefore {
			t.Fatalf("c's hosts file after it stopped: %q, %v; want %q back", got, err, hostsBefore)
		}
		deadline := time.Now().Add(labMeshWait)
		for {
			r, err := askIn(ha, "udp", netip.AddrPortFrom(a.ip4, 53).String(), "c."+labSuffix, dns.TypeA)
			if err == nil && r.Rcode == dns.RcodeNameError {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("c still resolves %v after it left: %v, %v", labMeshWait, r, err)
			}
			time.Sleep(labPoll)
		}
		// glibc agrees once the TTL of what it may have cached has passed.
		deadline = time.Now().Add(labMeshWait)
		for {
			out, err := runIn(b.host, "getent", "ahostsv4", "c."+labSuffix)
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("getent from b still resolves c after it left: %q", out)
			}
			time.Sleep(labPoll)
		}
	})

	t.Run("the resolver follows a moved address", func(t *testing.T) {
		d, old := m.takeIPv4(a, "d")
		waitMesh(t, a, b, d)
		if st := a.mustStatus(); st.DNS == nil || st.DNS.Address != netip.AddrPortFrom(a.ip4, 53).String() {
			t.Fatalf("a moved to %s; its dns status: %+v", a.ip4, st.DNS)
		}
		for _, network := range []string{"udp", "tcp"} {
			r, err := askIn(hb, network, netip.AddrPortFrom(a.ip4, 53).String(), "d."+labSuffix, dns.TypeA)
			if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != old.String() {
				t.Fatalf("b asks a at its new address %s over %s for d: %v, %v; want %s", a.ip4, network, r, err, old)
			}
		}
	})
}

// pointResolver makes programs run in h (through `ip netns exec`, which
// mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf) ask server.
func pointResolver(t *testing.T, h *netlab.Host, server netip.Addr) {
	t.Helper()
	dir := filepath.Join("/etc/netns", h.Namespace())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf := "nameserver " + server.String() + "\noptions timeout:1 attempts:2\n"
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// askIn sends one query from inside h's namespace with a Go DNS client, so
// that the test sees the rcode itself.
func askIn(h *netlab.Host, network, server, name string, qtype uint16) (*dns.Msg, error) {
	var r *dns.Msg
	err := h.Do(func() error {
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(name), qtype)
		c := &dns.Client{Net: network, Timeout: labDNSWait}
		var err error
		r, _, err = c.Exchange(q, server)
		return err
	})
	return r, err
}

// runIn runs a command in h and returns its output and error, for commands
// expected to fail.
func runIn(h *netlab.Host, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), labCommandWait)
	defer cancel()
	out, err := h.Run(ctx, name, args...).CombinedOutput()
	return string(out), err
}
