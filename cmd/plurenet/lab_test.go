//go:build linux

package main

// Network-lab tests: the real plurenet binary in network namespaces behind
// NAT routers and firewalls, with kernel TUN devices, driven by real
// programs (ping, curl, iperf3). They need root and skip without it (see
// internal/netlab).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
)

// labHTTPPort is where the lab's HTTP servers listen on overlay addresses.
const labHTTPPort = 8080

// TestLabMeshBehindNATs puts three kernel-TUN nodes behind three home NAT
// routers with a relay on the internet, and checks that every ordered pair
// reaches the other's overlay IPv4 and IPv6 addresses with ping, curl and
// iperf3. Then one node gets SIGTERM: it must exit 0 and remove its TUN.
func TestLabMeshBehindNATs(t *testing.T) {
	m := newLabMesh(t)
	names := []string{"a", "b", "c"}
	var nodes []*labNode
	for i, name := range names {
		r := m.lab.NATRouter(fmt.Sprintf("r%d", i+1), netlab.RouterConfig{})
		h := m.lab.Host(name, r)
		// iperf3 listens on every address, so also on the TUN's once it
		// exists. --forceflush makes "Server listening" visible at once.
		srv := h.Start(context.Background(), "iperf3", "-s", "--forceflush")
		waitOutput(t, srv, "Server listening")
		nodes = append(nodes, m.startNode(h, name))
	}
	waitMesh(t, nodes...)
	for _, n := range nodes {
		serveHTTP(t, n.host, netip.AddrPortFrom(n.ip4, labHTTPPort), helloHandler(n.name))
		serveHTTP(t, n.host, netip.AddrPortFrom(n.ip6, labHTTPPort), helloHandler(n.name))
	}

	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			t.Run(from.name+"->"+to.name, func(t *testing.T) {
				ping(t, from.host, to.ip4)
				ping(t, from.host, to.ip6)
				curlHello(t, from.host, netip.AddrPortFrom(to.ip4, labHTTPPort), to.name)
				curlHello(t, from.host, netip.AddrPortFrom(to.ip6, labHTTPPort), to.name)
				got := iperf(t, from.host, to.ip4)
				t.Logf("iperf3 %s -> %s over the overlay: %.0f Mbit/s", from.name, to.name, got/1e6)
			})
		}
	}
	// Every member saw traffic from every other, over some path.
	for _, n := range nodes {
		for _, mem := range n.mustStatus().Members {
			if mem.Path == "" || mem.LastHandshake.IsZero() || mem.RxBytes == 0 || mem.TxBytes == 0 {
				t.Errorf("%s's view of %s after traffic: path %q, handshake %v, rx %d, tx %d",
					n.name, mem.Name, mem.Path, mem.LastHandshake, mem.RxBytes, mem.TxBytes)
			}
		}
	}

	t.Run("SIGTERM removes the TUN", func(t *testing.T) {
		stopNode(t, nodes[2])
		// The others are unaffected.
		ping(t, nodes[0].host, nodes[1].ip4)
	})
}

// transferOverlay has to send transferSize pseudo-random bytes over TCP
// to from (which dials to's overlay IPv4 and port), and checks that all arrive with
// their SHA-256 intact. midway, if not nil, runs once the receiver has
// read mid bytes. It returns the time from the dial to the first byte and
// the receive rate in bytes per second.
func transferOverlay(t *testing.T, from, to *labNode, port int, mid int64, midway func()) (firstByte time.Duration, rate float64) {
	t.Helper()
	var ln net.Listener
	if err := to.host.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(to.ip4, uint16(port)).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	type sent struct {
		sum [sha256.Size]byte
		err error
	}
	sentc := make(chan sent, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sentc <- sent{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(transferWait))
		h := sha256.New()
		src := io.LimitReader(rand.NewChaCha8([32]byte{1, 2, 3}), transferSize)
		_, err = io.Copy(io.MultiWriter(c, h), src)
		var s sent
		copy(s.sum[:], h.Sum(nil))
		s.err = err
		sentc <- s
	}()
	t.Cleanup(func() {
		ln.Close()
		<-sentc // the sender gives up at its deadline at the latest
	})

	var c net.Conn
	began := time.Now()
	if err := from.host.Do(func() (err error) {
		d := net.Dialer{Timeout: labCommandWait}
		c, err = d.Dial("tcp", netip.AddrPortFrom(to.ip4, uint16(port)).String())
		return err
	}); err != nil {
		t.Fatalf("%s dialing %s over the overlay: %v", from.name, to.name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(transferWait))

	h := sha256.New()
	if _, err := io.CopyN(h, c, 1); err != nil {
		t.Fatalf("first byte: %v", err)
	}
	firstByte = time.Since(began)
	if _, err := io.CopyN(h, c, mid-1); err != nil {
		t.Fatalf("first %d bytes: %v", mid, err)
	}
	if midway != nil {
		midway()
	}
	n, err := io.Copy(h, c)
	if err != nil || n != transferSize-mid {
		t.Fatalf("after %d bytes: got %d more, want %d: %v", mid, n, transferSize-mid, err)
	}
	rate = transferSize / time.Since(began).Seconds()
	// The sender is done once the receiver has everything.
	s := <-sentc
	sentc <- s // for the cleanup
	if s.err != nil {
		t.Fatalf("sender: %v", s.err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, s.sum[:]) {
		t.Fatalf("SHA-256 of the received stream %x, sent %x", got, s.sum)
	}
	return firstByte, rate
}

// iperf runs a 2-second iperf3 test from h to dst's iperf3 server and
// returns the received bits per second, failing t when nothing arrived.
func iperf(t *testing.T, h *netlab.Host, dst netip.Addr) float64 {
	t.Helper()
	out := labRun(t, h, "iperf3", "-c", dst.String(), "-t", "2", "-J", "--connect-timeout", "20000")
	bps, err := netlab.ParseIperf3([]byte(out))
	if err != nil {
		t.Fatalf("iperf3 to %s: %v\n%s", dst, err, out)
	}
	return bps
}

// TestLabCorporateFirewall puts one node in a corporate network whose
// firewall lets out only TCP 443 and DNS, and checks that it and a home member reach each
// other through the relay on 443 — after checking that the firewall does
// block other TCP ports.
func TestLabCorporateFirewall(t *testing.T) {
	m := newLabMesh(t)
	home := m.lab.Host("home", m.lab.NATRouter("r1", netlab.RouterConfig{}))
	// The firewall is the corporate network's, on its router's WAN, as in
	// an office: a profile on the host itself would also filter the
	// host's own TUN interface, which no network firewall sees.
	office := m.lab.NATRouter("r2", netlab.RouterConfig{})
	office.Firewall(netlab.Corporate)
	corp := m.lab.Host("corp", office)

	// The firewall is effective: a TCP port other than 443 on the relay
	// host is reachable from home, not from corp.
	const otherPort = 8443
	serveHTTP(t, m.relayHost, netip.AddrPortFrom(m.relayHost.Addr(), otherPort), helloHandler("relay"))
	curlHello(t, home, netip.AddrPortFrom(m.relayHost.Addr(), otherPort), "relay")
	ctx, cancel := context.WithTimeout(context.Background(), labCommandWait)
	defer cancel()
	out, err := corp.Run(ctx, "curl", "-sS", "--max-time", "2",
		fmt.Sprintf("http://%s/", netip.AddrPortFrom(m.relayHost.Addr(), otherPort))).CombinedOutput()
	if err == nil {
		t.Fatalf("corporate host reached TCP port %d outside the firewall's policy: %s", otherPort, out)
	}

	hn := m.startNode(home, "home")
	cn := m.startNode(corp, "corp")
	waitMesh(t, hn, cn)
	serveHTTP(t, home, netip.AddrPortFrom(hn.ip4, labHTTPPort), helloHandler("home"))
	serveHTTP(t, corp, netip.AddrPortFrom(cn.ip4, labHTTPPort), helloHandler("corp"))

	ping(t, corp, hn.ip4)
	ping(t, corp, hn.ip6)
	curlHello(t, corp, netip.AddrPortFrom(hn.ip4, labHTTPPort), "home")
	// Inbound too: the corporate node serves members through the relay.
	curlHello(t, home, netip.AddrPortFrom(cn.ip4, labHTTPPort), "corp")

	for _, mem := range cn.mustStatus().Members {
		if !strings.HasPrefix(mem.Path, "relay") {
			t.Errorf("corp reaches %s over %q; only a relay on 443 can get through its firewall", mem.Name, mem.Path)
		}
	}
}

// transferSize is the size of the relay-restart transfer: large enough that
// most of it must cross the restarted relay (socket buffers hold a few MiB
// at most), small enough to take seconds.
const (
	transferSize = 64 << 20
	// killAfter is how much the receiver reads before the relay dies.
	killAfter = 16 << 20
	// transferWait bounds the whole transfer, relay outage included: TCP
	// retransmission backoff after a few seconds of outage can add
	// several more.
	transferWait = 2 * time.Minute
)

// TestLabRelayRestartMidTransfer kills the relay (SIGKILL) in the middle of
// a 64 MiB TCP transfer between two overlay IPs behind NATs, restarts it,
// and checks that the transfer completes with its SHA-256 intact: the
// WireGuard session and the TCP connection on top survive the relay's
// death, and the nodes reconnect on their own.
func TestLabRelayRestartMidTransfer(t *testing.T) {
	m := newLabMesh(t)
	// Relay only: a direct path would leave the relay's death unnoticed.
	a := m.startNode(m.lab.Host("a", m.lab.NATRouter("r1", netlab.RouterConfig{})), "a", "--transport", "relay")
	b := m.startNode(m.lab.Host("b", m.lab.NATRouter("r2", netlab.RouterConfig{})), "b", "--transport", "relay")
	waitMesh(t, a, b)

	transferOverlay(t, a, b, 9000, killAfter, func() {
		t.Logf("%d MiB received; killing the relay", killAfter>>20)
		m.relay.Kill() // SIGKILL: no drain, no goodbye
		m.startRelay()
	})

	// Both nodes noticed the relay's death and reconnected.
	for _, n := range []*labNode{a, b} {
		st := n.mustStatus()
		if len(st.Relays) != 1 || !st.Relays[0].Connected || st.Relays[0].Reconnects < 1 {
			t.Errorf("%s's relays after the restart: %+v; want connected with at least one reconnect", n.name, st.Relays)
		}
	}
}

// TestLabTUNNeedsPrivilege runs "plurenet up --tun" without CAP_NET_ADMIN
// (as user nobody): it must fail with a non-zero exit and one clear error
// line that suggests the userspace adapter.
func TestLabTUNNeedsPrivilege(t *testing.T) {
	if testing.Short() {
		t.Skip("network lab: skipped in -short mode")
	}
	lab := netlab.New(t)
	bin := plurenetBinary(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) is missing: cannot drop privileges to test --tun without CAP_NET_ADMIN")
	}
	// An isolated namespace: if the TUN were created anyway, it would not
	// touch the machine.
	h := lab.Host("nopriv", nil)
	const nobody = 65534
	dir, err := os.MkdirTemp("", "plurenet-lab-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, nobody, nobody); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), labCommandWait)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := h.Run(ctx, setpriv, "--reuid", fmt.Sprint(nobody), "--regid", fmt.Sprint(nobody), "--clear-groups",
		bin, "up", "--tun", labTUN, "--topic", labTopic, "--key", labKey,
		"--relay", "ws://127.0.0.1:9", "--state-dir", state, "--name", "nopriv")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
		t.Fatalf("plurenet up --tun as nobody: %v, want a non-zero exit\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var errLines []string
	for line := range strings.Lines(stderr.String()) {
		if strings.HasPrefix(line, "plurenet up:") {
			errLines = append(errLines, strings.TrimSpace(line))
		}
	}
	if len(errLines) != 1 {
		t.Fatalf("want exactly one error line, got %d:\n%s", len(errLines), stderr.String())
	}
	for _, want := range []string{labTUN, "CAP_NET_ADMIN", "userspace"} {
		if !strings.Contains(errLines[0], want) {
			t.Errorf("error line %q does not mention %q", errLines[0], want)
		}
	}
	if strings.Contains(stderr.String(), "panic") || strings.Contains(stdout.String(), "is up") {
		t.Errorf("unexpected output:\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	t.Logf("as nobody: exit %d, %s", ee.ExitCode(), errLines[0])
}
