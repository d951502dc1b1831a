//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/overlay"
)

// Settings shared by every lab mesh.
const (
	labTopic = "plurenet-lab"
	// labKey is long enough for "plurenet up"'s minimum secret length.
	labKey = "lab secret, never used outside network namespaces"
	// labRelayPort is where the lab relay listens: 443, the one port a
	// corporate firewall lets out.
	labRelayPort = 443
	// labTUN is the kernel interface every lab node creates in its own
	// namespace.
	labTUN = "plurenet0"
)

// Deadlines of the lab. They only keep a broken run from hanging; a working
// one finishes each step in well under a second to a few seconds.
const (
	// labStartWait bounds a process's start (relay listening, node
	// answering status queries).
	labStartWait = 20 * time.Second
	// labMeshWait bounds how long members take to learn of each other.
	labMeshWait = 30 * time.Second
	// labCommandWait bounds one ping, curl or iperf3 run, including the
	// first WireGuard handshake.
	labCommandWait = 40 * time.Second
	// labPoll is how often the lab re-checks a condition it waits for.
	labPoll = 200 * time.Millisecond
)

// labMesh is a lab with a plurenet relay on its internet and the plurenet
// binary to start nodes with.
type labMesh struct {
	t         *testing.T
	lab       *netlab.Lab
	bin       string
	relayHost *netlab.Host
	relay     *netlab.Proc
	relayURL  string
}

// newLabMesh builds a lab with a relay host on the internet and starts the
// relay. It skips the test where the lab cannot run.
func newLabMesh(t *testing.T) *labMesh {
	t.Helper()
	if testing.Short() {
		t.Skip("network lab: skipped in -short mode")
	}
	lab := netlab.New(t)
	m := &labMesh{t: t, lab: lab, bin: plurenetBinary(t)}
	m.relayHost = lab.Host("relay", lab.Internet())
	m.relayURL = "ws://" + netip.AddrPortFrom(m.relayHost.Addr(), labRelayPort).String()
	m.startRelay()
	return m
}

// startRelay starts (or restarts) the relay as a plain ws:// server on
// port 443 of the relay host, and waits until it listens.
func (m *labMesh) startRelay() {
	m.t.Helper()
	m.relay = m.relayHost.Start(context.Background(), m.bin, "relay",
		"--listen", fmt.Sprintf("0.0.0.0:%d", labRelayPort))
	waitOutput(m.t, m.relay, "plurenet relay listening on")
}

// labNode is one "plurenet up --tun" process in a lab host.
type labNode struct {
	t    *testing.T
	m    *labMesh
	name string
	host *netlab.Host
	dir  string
	proc *netlab.Proc
	args []string // plurenet's arguments, for restart
	ip4  netip.Addr
	ip6  netip.Addr
}

// startNode starts a kernel-TUN node called name on h. Call waitMesh before
// using its addresses.
func (m *labMesh) startNode(h *netlab.Host, name string, extra ...string) *labNode {
	m.t.Helper()
	n := &labNode{t: m.t, m: m, name: name, host: h, dir: privateDir(m.t)}
	args := append([]string{"up", "--tun", labTUN,
		"--topic", labTopic, "--key", labKey, "--relay", m.relayURL,
		"--state-dir", n.dir, "--name", name}, extra...)
	n.args = args
	n.proc = h.Start(context.Background(), m.bin, args...)
	return n
}

// restart starts a node stopped by stopNode again, with the same arguments
// and state directory: the same key, so the same name and addresses. Call
// waitMesh before using it.
func (n *labNode) restart() {
	n.t.Helper()
	n.proc = n.host.Start(context.Background(), n.m.bin, n.args...)
}

// status asks the node for its status with "plurenet status --json", run in
// the node's namespace like a user would.
func (n *labNode) status() (overlay.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), labCommandWait)
	defer cancel()
	var st overlay.Status
	out, err := n.host.Run(ctx, n.m.bin, "status", "--state-dir", n.dir, "--json").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return st, fmt.Errorf("plurenet status of %s: %w: %s", n.name, err, ee.Stderr)
		}
		return st, fmt.Errorf("plurenet status of %s: %w", n.name, err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("plurenet status --json of %s: %w: %q", n.name, err, out)
	}
	return st, nil
}

// mustStatus is status for the test goroutine.
func (n *labNode) mustStatus() overlay.Status {
	n.t.Helper()
	st, err := n.status()
	if err != nil {
		n.t.Fatal(err)
	}
	return st
}

// waitMesh waits until every node answers status queries and lists every
// other node as a member with the addresses that node reports for itself,
// and fills in each node's overlay addresses.
func waitMesh(t *testing.T, nodes ...*labNode) {
	t.Helper()
	waitMeshWithin(t, labMeshWait, nodes...)
}

// waitMeshWithin is waitMesh with meshWait for the members to meet.
func waitMeshWithin(t *testing.T, meshWait time.Duration, nodes ...*labNode) {
	t.Helper()
	deadline := time.Now().Add(labStartWait)
	for _, n := range nodes {
		for {
			st, err := n.status()
			if err == nil {
				n.ip4, err = netip.ParseAddr(st.IPv4)
			}
			if err == nil {
				n.ip6, err = netip.ParseAddr(st.IPv6)
			}
			if err == nil {
				if st.Adapter != "tun:"+labTUN {
					t.Fatalf("%s: adapter %q, want tun:%s", n.name, st.Adapter, labTUN)
				}
				break
			}
			select {
			case <-n.proc.Done():
				t.Fatalf("%s exited before it was up: %v\n%s", n.name, n.proc.Wait(), n.proc.Output())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never answered a status query: %v\n%s", n.name, err, n.proc.Output())
			}
			time.Sleep(labPoll)
		}
	}
	deadline = time.Now().Add(meshWait)
	for _, n := range nodes {
		for {
			st := n.mustStatus()
			missing := missingMembers(st, n, nodes)
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not list %s as members after %v: status %+v", n.name, missing, meshWait, st)
			}
			time.Sleep(labPoll)
		}
	}
}

// missingMembers names the nodes (other than self) that st does not list
// with their own addresses.
func missingMembers(st overlay.Status, self *labNode, nodes []*labNode) []string {
	var missing []string
	for _, o := range nodes {
		if o == self {
			continue
		}
		found := false
		for _, mem := range st.Members {
			if mem.Name == o.name && mem.IPv4 == o.ip4.String() && mem.IPv6 == o.ip6.String() {
				found = true
			}
		}
		if !found {
			missing = append(missing, o.name)
		}
	}
	return missing
}

// labRun runs a command in h's namespace and fails t with its output if it
// fails. It returns stdout.
func labRun(t *testing.T, h *netlab.Host, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), labCommandWait)
	defer cancel()
	var stdout, stderr strings.Builder
	cmd := h.Run(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %s %s: %v\nstdout:\n%s\nstderr:\n%s", h.Name(), name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// ping pings dst from h until three replies came back. The deadline covers
// the WireGuard handshake the first packet triggers.
func ping(t *testing.T, h *netlab.Host, dst netip.Addr) {
	t.Helper()
	args := []string{"-c", "3", "-i", "0.2", "-w", "20", dst.String()}
	if dst.Is6() {
		args = append([]string{"-6"}, args...)
	}
	// With both -c and -w, ping exits non-zero unless all 3 replies
	// came back before the deadline; losses while WireGuard shakes hands
	// are retried, not counted.
	out := labRun(t, h, "ping", args...)
	if !strings.Contains(out, "3 received") {
		t.Fatalf("%s: ping %s: want 3 replies:\n%s", h.Name(), dst, out)
	}
}

// serveHTTP serves handler on addr inside h's namespace until the test ends.
func serveHTTP(t *testing.T, h *netlab.Host, addr netip.AddrPort, handler http.Handler) {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatalf("%s: listening on %s: %v", h.Name(), addr, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: labCommandWait}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// helloHandler answers every request with "hello from NAME".
func helloHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", name)
	})
}

// curlHello fetches http://dst:port/ from h and checks it came from name.
func curlHello(t *testing.T, h *netlab.Host, dst netip.AddrPort, name string) {
	t.Helper()
	out := labRun(t, h, "curl", "-sS", "--fail", "-g", "--max-time", "30", "http://"+dst.String()+"/")
	if want := "hello from " + name + "\n"; out != want {
		t.Fatalf("%s: curl %s: got %q, want %q", h.Name(), dst, out, want)
	}
}

// waitOutput waits until p has printed want, failing t if p exits first.
func waitOutput(t *testing.T, p *netlab.Proc, want string) {
	t.Helper()
	deadline := time.Now().Add(labStartWait)
	for !strings.Contains(p.Output(), want) {
		select {
		case <-p.Done():
			t.Fatalf("%s exited before printing %q: %v\n%s", p, want, p.Wait(), p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q within %v:\n%s", p, want, labStartWait, p.Output())
		}
		time.Sleep(labPoll / 4)
	}
}

// stopNode sends SIGTERM to a node, waits for it to exit and checks that it
// exited cleanly and took its TUN interface with it.
func stopNode(t *testing.T, n *labNode) {
	t.Helper()
	if err := syscall.Kill(n.proc.Pid(), syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to %s: %v", n.name, err)
	}
	select {
	case <-n.proc.Done():
	case <-time.After(labStartWait):
		t.Fatalf("%s did not exit within %v of SIGTERM:\n%s", n.name, labStartWait, n.proc.Output())
	}
	if err := n.proc.Wait(); err != nil {
		t.Fatalf("%s exited with %v after SIGTERM, want 0:\n%s", n.name, err, n.proc.Output())
	}
	if out := n.proc.Output(); !strings.Contains(out, "leaving the mesh") {
		t.Errorf("%s did not say it left the mesh:\n%s", n.name, out)
	}
	nl, err := netlink.NewHandleAt(n.host.NetNS())
	if err != nil {
		t.Fatalf("netlink in %s: %v", n.host, err)
	}
	defer nl.Close()
	link, err := nl.LinkByName(labTUN)
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("%s: after SIGTERM, looking up %s gave link %v, err %v; want it gone", n.name, labTUN, link, err)
	}
}

// takeIPv4 starts a node called name on a new host behind its own router,
// pinning a's IPv4: the collision rule gives it that address and moves a.
// It waits until a reports another IPv4, updates a.ip4 and returns the new
// node and a's old address.
func (m *labMesh) takeIPv4(a *labNode, name string) (*labNode, netip.Addr) {
	m.t.Helper()
	old := a.ip4
	n := m.startNode(m.lab.Host(name, m.lab.NATRouter("r"+name, netlab.RouterConfig{})), name, "--ip", old.String())
	deadline := time.Now().Add(labMeshWait)
	for a.ip4 == old {
		if time.Now().After(deadline) {
			m.t.Fatalf("%s still has %s after %s pinned it", a.name, old, name)
		}
		time.Sleep(labPoll)
		if st, err := a.status(); err == nil {
			a.ip4 = netip.MustParseAddr(st.IPv4)
		}
	}
	return n, old
}
