//go:build linux

package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
)

// startInvited starts a kernel-TUN node on h that enrols with token.
func (m *labMesh) startInvited(h *netlab.Host, name, token string) *labNode {
	m.t.Helper()
	n := &labNode{t: m.t, m: m, name: name, host: h, dir: privateDir(m.t)}
	n.proc = h.Start(context.Background(), m.bin, "up", "--tun", labTUN, "--invite", token, "--state-dir", n.dir)
	return n
}

// curlRefused checks that a TCP connection from h to dst does not open.
func curlRefused(t *testing.T, h *netlab.Host, dst netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), labCommandWait)
	defer cancel()
	out, err := h.Run(ctx, "curl", "-sS", "--fail", "-g", "--connect-timeout", "3", "http://"+dst.String()+"/").CombinedOutput()
	if err == nil {
		t.Fatalf("%s: curl %s connected, which the policy denies: %s", h.Name(), dst, out)
	}
}

// TestLabOwnedPolicy: the policy of the issue with kernel TUN nodes behind
// the lab's NATs and real TCP. The owner invites three members; all reach
// each other; once the policy (tag:dev may reach tag:server on tcp/22) is
// handed to one member, every member holds it: tcp/22 connects, tcp/8000
// does not, the untagged member reaches nothing, and each refusal is
// counted by the server.
func TestLabOwnedPolicy(t *testing.T) {
	m := newLabMesh(t)
	own := filepath.Join(privateDir(t), "owner")
	runOK(t, "owner", "init", "--owner-dir", own, "--topic", "lab-owned", "--relay", m.relayURL)
	invite := func(name, tags string) string {
		return runOK(t, "invite", "--owner-dir", own, "--name", name, "--tags", tags)
	}
	r1 := m.lab.NATRouter("r1", netlab.RouterConfig{})
	r2 := m.lab.NATRouter("r2", netlab.RouterConfig{})
	hl, hs, hg := m.lab.Host("laptop", r1), m.lab.Host("server", r2), m.lab.Host("guest", r1)
	laptop := m.startInvited(hl, "laptop", invite("laptop", "dev"))
	server := m.startInvited(hs, "server", invite("server", "server"))
	guest := m.startInvited(hg, "guest", invite("guest", "guest"))
	waitMesh(t, laptop, server, guest)
	for _, port := range []uint16{22, 8000} {
		serveHTTP(t, hs, netip.AddrPortFrom(server.ip4, port), helloHandler("server"))
	}
	// Before any policy, everyone reaches everything.
	curlHello(t, hl, netip.AddrPortFrom(server.ip4, 8000), "server")
	curlHello(t, hg, netip.AddrPortFrom(server.ip4, 22), "server")

	file := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(file, []byte(`{"allow":[{"from":"tag:dev","to":"tag:server","ports":["tcp/22"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	runOK(t, "policy", "set", "--owner-dir", own, "--state-dir", laptop.dir, file)
	for _, n := range []*labNode{laptop, server, guest} {
		deadline := time.Now().Add(labMeshWait)
		for n.mustStatus().Owned.PolicyVersion != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s does not hold the policy", n.name)
			}
			time.Sleep(labPoll)
		}
	}
	curlHello(t, hl, netip.AddrPortFrom(server.ip4, 22), "server")
	curlRefused(t, hl, netip.AddrPortFrom(server.ip4, 8000))
	curlRefused(t, hg, netip.AddrPortFrom(server.ip4, 22))
	st := server.mustStatus()
	denied := map[string]uint64{}
	for _, ms := range st.Members {
		denied[ms.Name] = ms.Denied
	}
	if denied["laptop"] == 0 || denied["guest"] == 0 || st.Owned.Denied == 0 {
		t.Fatalf("server's denials: %v, total %d; want laptop and guest above 0", denied, st.Owned.Denied)
	}
}
