//go:build linux

package main

// Network-lab tests of the auto transport's direct path: ICE hole punching
// between members behind NAT routers, a corporate member that stays on the
// relay, falling back to the relay and back when UDP is cut, and moving to
// the fallback relay when the primary dies. Same lab and binary as
// lab_test.go; they need root and skip without it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/overlay"
)

// Waits of the direct-path lab tests. Like the other lab deadlines they only
// keep a broken run from hanging; the tests log how long things took and
// assert nothing about it.
const (
	// directWait bounds two members behind home NATs getting a direct
	// path (the target is 5 s; one ICE attempt is bounded at 10 s
	// and the first retry comes 1-2 s after a failure).
	directWait = 30 * time.Second
	// redirectWait bounds the return to a direct path after UDP comes
	// back: an attempt that started while UDP was blocked runs out its
	// 10 s first, and ICE retries with exponential backoff.
	redirectWait = 60 * time.Second
	// fallbackWait bounds the move to a relay once the direct path is
	// cut: the loss timeout is 3 s.
	fallbackWait = 20 * time.Second
	// failedAttemptWait bounds how long a member that cannot go direct
	// takes to give up one ICE attempt (10 s per attempt, plus gathering).
	failedAttemptWait = 30 * time.Second
	// midTransfer is how much of a transfer the receiver reads before the
	// test breaks a path: the rest (socket buffers hold a few MiB at
	// most) must cross the new path.
	midTransfer = 16 << 20
)

// Paths as status names them (members[].path).
const (
	pathDirect   = "direct"
	pathPrimary  = "relay:primary"
	pathFallback = "relay:fallback"
)

// directState is the state of the direct path in status
// (members[].direct.state).
const directState = "direct"

// member returns n's current view of the member called name, or false if n
// does not list it.
func member(st overlay.Status, name string) (overlay.MemberStatus, bool) {
	for _, m := range st.Members {
		if m.Name == name {
			return m, true
		}
	}
	return overlay.MemberStatus{}, false
}

// isDirect reports whether ICE has a direct path to m.
func isDirect(m overlay.MemberStatus) bool {
	return m.Direct != nil && m.Direct.State == directState
}

// describe is a member's path state for failure messages.
func describe(m overlay.MemberStatus) string {
	if m.Direct == nil {
		return fmt.Sprintf("path %q, no direct state", m.Path)
	}
	return fmt.Sprintf("path %q, direct %+v", m.Path, *m.Direct)
}

// waitMember polls n's status until its view of the member called peer
// satisfies ok, and returns that view. It fails t (saying what it waited
// for) after wait, or when n exits.
func waitMember(t *testing.T, n *labNode, peer string, wait time.Duration, what string, ok func(overlay.MemberStatus) bool) overlay.MemberStatus {
	t.Helper()
	deadline := time.Now().Add(wait)
	last := "not listed"
	for {
		st, err := n.status()
		if err != nil {
			last = err.Error()
		} else if m, found := member(st, peer); found {
			if ok(m) {
				return m
			}
			last = describe(m)
		}
		select {
		case <-n.proc.Done():
			t.Fatalf("%s exited while waiting for %s: %v\n%s", n.name, what, n.proc.Wait(), n.proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not reached within %v; %s's view of %s: %s\n%s", n.name, what, wait, n.name, peer, last, n.proc.Output())
		}
		time.Sleep(labPoll / 2)
	}
}

// pathIs returns a waitMember condition: the member's path is name.
func pathIs(name string) func(overlay.MemberStatus) bool {
	return func(m overlay.MemberStatus) bool { return m.Path == name }
}

// startPinger pings dst from h five times a second until the returned
// stop is called (or the lab ends). The tests use it to keep traffic
// flowing: status reports the path a member's last packet took.
func startPinger(h *netlab.Host, dst netip.Addr) (stop func()) {
	p := h.Start(context.Background(), "ping", "-i", "0.2", dst.String())
	return p.Kill
}

// labTransfer is a TCP stream of pseudo-random bytes from one node's
// overlay address to another's, read by the test so that it can break a
// path in the middle and then check that every byte arrived intact.
type labTransfer struct {
	t     *testing.T
	size  int64
	conn  net.Conn // the receiver's end, in the receiver's namespace
	sum   hash.Hash
	got   int64
	sentc chan transferSent // buffered 1: the sender's result
}

// transferSent is what the sender reports when it is done.
type transferSent struct {
	sum [sha256.Size]byte
	err error
}

// startTransfer makes from serve size bytes on its overlay IPv4 at port and
// to connect to it. Call receive and finish to read the stream.
func startTransfer(t *testing.T, from, to *labNode, port uint16, size int64) *labTransfer {
	t.Helper()
	addr := netip.AddrPortFrom(from.ip4, port)
	var ln net.Listener
	if err := from.host.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatalf("%s: listening on %s: %v", from.name, addr, err)
	}
	x := &labTransfer{t: t, size: size, sum: sha256.New(), sentc: make(chan transferSent, 1)}
	var (
		mu       sync.Mutex
		accepted net.Conn
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			x.sentc <- transferSent{err: err}
			return
		}
		mu.Lock()
		accepted = c
		mu.Unlock()
		defer c.Close()
		c.SetDeadline(time.Now().Add(transferWait))
		h := sha256.New()
		src := io.LimitReader(rand.NewChaCha8([32]byte{byte(port), byte(port >> 8)}), size)
		_, err = io.Copy(io.MultiWriter(c, h), src)
		s := transferSent{err: err}
		copy(s.sum[:], h.Sum(nil))
		x.sentc <- s
	}()
	t.Cleanup(func() {
		// Unblock a sender a failed test left behind, then wait for it.
		ln.Close()
		mu.Lock()
		if accepted != nil {
			accepted.Close()
		}
		mu.Unlock()
		<-done
	})

	if err := to.host.Do(func() (err error) {
		d := net.Dialer{Timeout: labCommandWait}
		x.conn, err = d.Dial("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatalf("%s dialing %s at %s over the overlay: %v", to.name, from.name, addr, err)
	}
	t.Cleanup(func() { x.conn.Close() })
	x.conn.SetDeadline(time.Now().Add(transferWait))
	return x
}

// receive reads the next n bytes of the stream, failing t if it cannot.
func (x *labTransfer) receive(n int64) {
	x.t.Helper()
	start := x.got
	got, err := io.CopyN(x.sum, x.conn, n)
	x.got += got
	if err != nil {
		x.t.Fatalf("transfer: reading %d bytes from offset %d: got %d: %v", n, start, got, err)
	}
}

// rest reads the remainder of the stream in the background; the channel
// gets the result once the sender has closed the connection.
func (x *labTransfer) rest() <-chan error {
	errc := make(chan error, 1)
	go func() {
		n, err := io.Copy(x.sum, x.conn)
		x.got += n
		if err == nil && x.got != x.size {
			err = fmt.Errorf("stream ended after %d bytes, want %d", x.got, x.size)
		}
		errc <- err
	}()
	return errc
}

// check compares what arrived with what the sender sent. Call it after
// rest's channel delivered nil.
func (x *labTransfer) check() {
	x.t.Helper()
	s := <-x.sentc
	if s.err != nil {
		x.t.Fatalf("transfer: sender: %v", s.err)
	}
	if got := x.sum.Sum(nil); !bytes.Equal(got, s.sum[:]) {
		x.t.Fatalf("transfer: SHA-256 of the %d received bytes %x, sent %x", x.got, got, s.sum)
	}
}

// finishTransfer waits for the rest of x (read by rest) and checks it.
func finishTransfer(t *testing.T, x *labTransfer, errc <-chan error) {
	t.Helper()
	if err := <-errc; err != nil {
		t.Fatalf("transfer: after %d of %d bytes: %v", x.got, x.size, err)
	}
	x.check()
}

// homePair starts kernel-TUN nodes a and b behind two home NAT routers r1
// and r2 (port-preserving MASQUERADE) and waits until they list each other.
// It returns the nodes, their routers and when the nodes were started.
func homePair(t *testing.T, m *labMesh, extra ...string) (a, b *labNode, r1, r2 *netlab.Router, started time.Time) {
	t.Helper()
	r1 = m.lab.NATRouter("r1", netlab.RouterConfig{})
	r2 = m.lab.NATRouter("r2", netlab.RouterConfig{})
	ha, hb := m.lab.Host("a", r1), m.lab.Host("b", r2)
	started = time.Now()
	a = m.startNode(ha, "a", extra...)
	b = m.startNode(hb, "b", extra...)
	return a, b, r1, r2, started
}

// TestLabDirectBehindNATs: two members behind two different home NAT
// routers, with only a relay (and its STUN responder) on the internet,
// punch a direct UDP path. Status calls the path "direct" once traffic
// flows, and the remote address of the path is the other router's WAN
// address: the NAT mapping STUN revealed, not the member's LAN address.
func TestLabDirectBehindNATs(t *testing.T) {
	m := newLabMesh(t)
	a, b, r1, r2, started := homePair(t, m)
	waitMesh(t, a, b)
	listed := time.Since(started)

	va := waitMember(t, a, "b", directWait, "a direct path to b", isDirect)
	tookA := time.Since(started)
	vb := waitMember(t, b, "a", directWait, "a direct path to a", isDirect)
	tookB := time.Since(started)
	t.Logf("nodes started -> members listed %v; -> ICE direct at a %v, at b %v (issue's target: 5 s); rtt a->b %.3f ms",
		listed.Round(time.Millisecond), tookA.Round(time.Millisecond), tookB.Round(time.Millisecond), va.Direct.RTTMs)

	for _, c := range []struct {
		view   overlay.MemberStatus
		of, at string
		router *netlab.Router
	}{{va, "b", "a", r2}, {vb, "a", "b", r1}} {
		remote, err := netip.ParseAddrPort(c.view.Direct.Remote)
		if err != nil {
			t.Fatalf("%s's direct remote for %s %q: %v", c.at, c.of, c.view.Direct.Remote, err)
		}
		if remote.Addr() != c.router.Addr() {
			t.Errorf("%s reaches %s directly at %s, want %s's router's WAN address %s", c.at, c.of, remote, c.of, c.router.Addr())
		}
	}

	// Traffic in both directions takes the direct path.
	ping(t, a.host, b.ip4)
	ping(t, b.host, a.ip4)
	serveHTTP(t, b.host, netip.AddrPortFrom(b.ip4, labHTTPPort), helloHandler("b"))
	curlHello(t, a.host, netip.AddrPortFrom(b.ip4, labHTTPPort), "b")
	for _, c := range []struct {
		n    *labNode
		peer string
	}{{a, "b"}, {b, "a"}} {
		v, _ := member(c.n.mustStatus(), c.peer)
		if v.Path != pathDirect {
			t.Errorf("%s's path to %s after ping and curl: %s; want %q", c.n.name, c.peer, describe(v), pathDirect)
		}
	}
	t.Logf("a reaches b at %s, b reaches a at %s (routers r2 %s, r1 %s)", va.Direct.Remote, vb.Direct.Remote, r2.Addr(), r1.Addr())
}

// TestLabCorporateStaysOnRelay: a member behind a corporate firewall (only
// TCP 443 and DNS out; the relay listens on 443) reaches two home members
// through the relay, and its path to them never becomes direct — not even
// across a whole failed ICE attempt — while the two home members go
// direct with each other.
func TestLabCorporateStaysOnRelay(t *testing.T) {
	m := newLabMesh(t)
	office := m.lab.NATRouter("r3", netlab.RouterConfig{})
	office.Firewall(netlab.Corporate)
	a, b, _, _, _ := homePair(t, m)
	corp := m.startNode(m.lab.Host("corp", office), "corp")
	waitMesh(t, a, b, corp)
	for _, n := range []*labNode{a, b, corp} {
		serveHTTP(t, n.host, netip.AddrPortFrom(n.ip4, labHTTPPort), helloHandler(n.name))
	}

	waitMember(t, a, "b", directWait, "a direct path to b", isDirect)
	waitMember(t, b, "a", directWait, "a direct path to a", isDirect)
	ping(t, a.host, b.ip4)
	ping(t, b.host, a.ip4)

	homes := []*labNode{a, b}
	for _, h := range homes {
		ping(t, corp.host, h.ip4)
		ping(t, corp.host, h.ip6)
		curlHello(t, corp.host, netip.AddrPortFrom(h.ip4, labHTTPPort), h.name)
		curlHello(t, h.host, netip.AddrPortFrom(corp.ip4, labHTTPPort), "corp")
	}

	// Watch both ends of each corp<->home pair until each has seen an ICE
	// attempt fail (state "lost"): the path must be a relay on every look.
	onRelay := func(at, of string, v overlay.MemberStatus) {
		t.Helper()
		if v.Path != pathPrimary || isDirect(v) {
			t.Fatalf("%s's view of %s: %s; want %q and never direct", at, of, describe(v), pathPrimary)
		}
	}
	failed := map[string]bool{}
	watching := time.Now()
	deadline := watching.Add(failedAttemptWait)
	for len(failed) < 2*len(homes) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, only these ends saw a failed ICE attempt: %v", failedAttemptWait, failed)
		}
		cs := corp.mustStatus()
		for _, h := range homes {
			v, ok := member(cs, h.name)
			if !ok {
				t.Fatalf("corp no longer lists %s", h.name)
			}
			onRelay("corp", h.name, v)
			if v.Direct != nil && v.Direct.State == "lost" {
				failed["corp->"+h.name] = true
			}
			hv, ok := member(h.mustStatus(), "corp")
			if !ok {
				t.Fatalf("%s no longer lists corp", h.name)
			}
			onRelay(h.name, "corp", hv)
			if hv.Direct != nil && hv.Direct.State == "lost" {
				failed[h.name+"->corp"] = true
			}
		}
		time.Sleep(labPoll)
	}
	t.Logf("corp<->a and corp<->b: relay:primary on every look for %v, until each end saw an ICE attempt fail; a<->b direct",
		time.Since(watching).Round(time.Millisecond))

	// Still reachable, still on the relay, and the home pair still direct.
	for _, h := range homes {
		ping(t, corp.host, h.ip4)
		v, _ := member(corp.mustStatus(), h.name)
		onRelay("corp", h.name, v)
	}
	ping(t, a.host, b.ip4)
	if v, _ := member(a.mustStatus(), "b"); v.Path != pathDirect {
		t.Errorf("a's path to b: %s; want %q", describe(v), pathDirect)
	}
}

// TestLabUDPBlockedMidTransfer: two members with a direct path lose UDP
// (their router's firewall starts dropping it) in the middle of a 64 MiB
// TCP transfer over their overlay addresses. The transfer completes with
// its SHA-256 intact, the path moves to the primary relay, and once UDP is
// allowed again the path returns to direct.
func TestLabUDPBlockedMidTransfer(t *testing.T) {
	m := newLabMesh(t)
	a, b, _, r2, _ := homePair(t, m)
	waitMesh(t, a, b)
	waitMember(t, a, "b", directWait, "a direct path to b", isDirect)
	waitMember(t, b, "a", directWait, "a direct path to a", isDirect)

	// b sends, a receives.
	x := startTransfer(t, b, a, 9000, transferSize)
	x.receive(midTransfer)
	if v, _ := member(a.mustStatus(), "b"); v.Path != pathDirect {
		t.Fatalf("a's path to b during the transfer, before UDP is blocked: %s; want %q", describe(v), pathDirect)
	}
	t.Logf("%d MiB received over the direct path; blocking UDP at b's router", midTransfer>>20)
	r2.BlockUDP()
	blocked := time.Now()
	errc := x.rest()
	// The transfer itself keeps both ends sending, so status follows it.
	waitMember(t, a, "b", fallbackWait, "a's path to b on the primary relay", pathIs(pathPrimary))
	t.Logf("UDP blocked -> a's path to b is %s after %v", pathPrimary, time.Since(blocked).Round(time.Millisecond))
	finishTransfer(t, x, errc)
	t.Logf("transfer of %d MiB complete and intact, %v after UDP was blocked", transferSize>>20, time.Since(blocked).Round(time.Millisecond))
	for _, c := range []struct {
		n    *labNode
		peer string
	}{{a, "b"}, {b, "a"}} {
		if v, _ := member(c.n.mustStatus(), c.peer); v.Path != pathPrimary || isDirect(v) {
			t.Errorf("%s's view of %s with UDP blocked: %s; want %q", c.n.name, c.peer, describe(v), pathPrimary)
		}
	}

	r2.UnblockUDP()
	unblocked := time.Now()
	// Keep packets flowing both ways so that each side's path reflects
	// what carries its traffic.
	stop := startPinger(a.host, b.ip4)
	defer stop()
	waitMember(t, a, "b", redirectWait, "a's path to b direct again", pathIs(pathDirect))
	tookA := time.Since(unblocked)
	waitMember(t, b, "a", redirectWait, "b's path to a direct again", pathIs(pathDirect))
	t.Logf("UDP unblocked -> path direct again at a after %v, at b after %v",
		tookA.Round(time.Millisecond), time.Since(unblocked).Round(time.Millisecond))
	ping(t, a.host, b.ip4)
}

// TestLabPrimaryRelayKilled: members behind NATs whose routers drop UDP
// (so they have no direct path) use two relays on two internet hosts. The
// primary relay is SIGKILLed in the middle of a 64 MiB transfer: both
// members move to the fallback relay and the transfer completes intact.
func TestLabPrimaryRelayKilled(t *testing.T) {
	m := newLabMesh(t)
	fbHost := m.lab.Host("relay2", m.lab.Internet())
	fb := fbHost.Start(context.Background(), m.bin, "relay",
		"--listen", fmt.Sprintf("0.0.0.0:%d", labRelayPort))
	waitOutput(t, fb, "plurenet relay listening on")
	fbURL := "ws://" + netip.AddrPortFrom(fbHost.Addr(), labRelayPort).String()

	r1 := m.lab.NATRouter("r1", netlab.RouterConfig{})
	r2 := m.lab.NATRouter("r2", netlab.RouterConfig{})
	r1.BlockUDP()
	r2.BlockUDP()
	a := m.startNode(m.lab.Host("a", r1), "a", "--relay-fallback", fbURL)
	b := m.startNode(m.lab.Host("b", r2), "b", "--relay-fallback", fbURL)
	waitMesh(t, a, b)
	ping(t, a.host, b.ip4)
	for _, c := range []struct {
		n    *labNode
		peer string
	}{{a, "b"}, {b, "a"}} {
		v, _ := member(c.n.mustStatus(), c.peer)
		if v.Path != pathPrimary || isDirect(v) {
			t.Fatalf("%s's path to %s with UDP blocked, both relays up: %s; want %q", c.n.name, c.peer, describe(v), pathPrimary)
		}
		// The members met over whichever relay carried first: each
		// relay connection is made on its own, so the fallback's is
		// waited for.
		for deadline := time.Now().Add(labStartWait); ; time.Sleep(labPoll) {
			st := c.n.mustStatus()
			if len(st.Relays) == 2 && st.Relays[0].Connected && st.Relays[1].Connected {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's relays after %v: %+v; want primary and fallback connected", c.n.name, labStartWait, st.Relays)
			}
		}
	}

	x := startTransfer(t, b, a, 9000, transferSize)
	x.receive(midTransfer)
	t.Logf("%d MiB received over the primary relay; killing it", midTransfer>>20)
	m.relay.Kill() // SIGKILL: no drain, no goodbye
	killed := time.Now()
	errc := x.rest()
	waitMember(t, a, "b", fallbackWait, "a's path to b on the fallback relay", pathIs(pathFallback))
	t.Logf("primary killed -> a's path to b is %s after %v", pathFallback, time.Since(killed).Round(time.Millisecond))
	finishTransfer(t, x, errc)
	t.Logf("transfer of %d MiB complete and intact, %v after the primary died", transferSize>>20, time.Since(killed).Round(time.Millisecond))

	for _, c := range []struct {
		n    *labNode
		peer string
	}{{a, "b"}, {b, "a"}} {
		st := c.n.mustStatus()
		v, _ := member(st, c.peer)
		if v.Path != pathFallback {
			t.Errorf("%s's path to %s after the primary died: %s; want %q", c.n.name, c.peer, describe(v), pathFallback)
		}
		var roles []string
		for _, r := range st.Relays {
			roles = append(roles, fmt.Sprintf("%s connected=%v", r.Role, r.Connected))
		}
		if len(st.Relays) != 2 || st.Relays[0].Connected || !st.Relays[1].Connected {
			t.Errorf("%s's relays after the primary died: %s; want the primary down and the fallback up", c.n.name, strings.Join(roles, ", "))
		}
	}
	ping(t, a.host, b.ip4)
}
