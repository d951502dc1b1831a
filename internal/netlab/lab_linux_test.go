package netlab

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNATReachesInternet(t *testing.T) {
	tests := []struct {
		name   string
		random bool
	}{
		{"port preserving", false},
		{"random ports", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lab := New(t)
			r := lab.NATRouter("r1", RouterConfig{Random: tt.random})
			a := lab.Host("a", r)
			srv := lab.Host("srv", lab.Internet())
			s := listenTCP(t, srv, 8080)

			if !r.LANPrefix().Contains(a.Addr()) || !lab.Internet().Prefix().Contains(r.Addr()) {
				t.Fatalf("addressing: a=%s in %s, r1 wan=%s", a.Addr(), r.LANPrefix(), r.Addr())
			}
			const conns = 3
			preserved := 0
			for range conns {
				local, err := dialTCP(a, netip.AddrPortFrom(srv.Addr(), 8080), openWait)
				if err != nil {
					t.Fatalf("a -> srv: %v", err)
				}
				peer := s.lastPeer()
				if peer.Addr() != r.Addr() {
					t.Fatalf("srv saw the connection from %s, want the router's WAN address %s (NAT)", peer.Addr(), r.Addr())
				}
				if peer.Port() == local.Port() {
					preserved++
				}
			}
			if !tt.random && preserved != conns {
				t.Errorf("port-preserving NAT kept the source port on %d of %d connections", preserved, conns)
			}
			if tt.random && preserved == conns {
				t.Errorf("random-port NAT kept the source port on all %d connections", conns)
			}
		})
	}
}

func TestUnsolicitedInboundDropped(t *testing.T) {
	lab := New(t)
	r := lab.NATRouter("r1", RouterConfig{})
	a := lab.Host("a", r)
	b := lab.Host("b", r)
	srv := lab.Host("srv", lab.Internet())
	listenTCP(t, a, 9000)
	listenTCP(t, r.Host, 9001)

	// Positive controls: the listeners work from inside the LAN.
	if _, err := dialTCP(b, netip.AddrPortFrom(a.Addr(), 9000), openWait); err != nil {
		t.Fatalf("b -> a on the LAN: %v", err)
	}
	if _, err := dialTCP(b, netip.AddrPortFrom(r.LANAddr(), 9001), openWait); err != nil {
		t.Fatalf("b -> router on the LAN: %v", err)
	}

	// srv knows the way to the LAN, as an attacker on the same segment would.
	if out, err := srv.Run(context.Background(), "ip", "route", "add", r.LANPrefix().String(), "via", r.Addr().String()).CombinedOutput(); err != nil {
		t.Fatalf("route on srv: %v: %s", err, out)
	}
	tests := []struct {
		name string
		dst  netip.AddrPort
	}{
		{"to the router's WAN address", netip.AddrPortFrom(r.Addr(), 9001)},
		{"to a LAN host through the router", netip.AddrPortFrom(a.Addr(), 9000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := dialTCP(srv, tt.dst, blockedWait); err == nil {
				t.Fatalf("unsolicited connection from the internet to %s succeeded", tt.dst)
			}
		})
	}
}

func TestFirewallProfiles(t *testing.T) {
	tests := []struct {
		name     string
		behindFW bool // the firewall sits on the router in front of the client
	}{
		{"on the host", false},
		{"on the router", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lab := New(t)
			srv := lab.Host("srv", lab.Internet())
			client := lab.Host("c", lab.Internet())
			fw := client
			if tt.behindFW {
				r := lab.NATRouter("corp", RouterConfig{})
				client = lab.Host("c2", r)
				fw = r.Host
			}
			for _, port := range []uint16{443, 80, 53} {
				listenTCP(t, srv, port)
			}
			udpEcho(t, srv, 3478)
			udpEcho(t, srv, 53)

			probes := []struct {
				name      string
				corporate bool // allowed under Corporate
				probe     func(wait time.Duration) error
			}{
				{"tcp 443", true, tcpProbe(client, srv, 443)},
				{"tcp 53", true, tcpProbe(client, srv, 53)},
				{"udp 53", true, udpProbe(client, srv, 53)},
				{"tcp 80", false, tcpProbe(client, srv, 80)},
				{"udp 3478", false, udpProbe(client, srv, 3478)},
			}
			check := func(profile Profile) {
				t.Helper()
				for _, p := range probes {
					allowed := profile == Home || p.corporate
					wait := openWait
					if !allowed {
						wait = blockedWait
					}
					err := p.probe(wait)
					if allowed && err != nil {
						t.Errorf("%v: %s should pass: %v", profile, p.name, err)
					}
					if !allowed && err == nil {
						t.Errorf("%v: %s passed, want it dropped", profile, p.name)
					}
				}
			}
			check(Home)
			fw.Firewall(Corporate)
			check(Corporate)
			// Inbound: the corporate host accepts nothing unsolicited.
			if !tt.behindFW {
				listenTCP(t, client, 443)
				if _, err := dialTCP(srv, netip.AddrPortFrom(client.Addr(), 443), blockedWait); err == nil {
					t.Errorf("corporate: unsolicited inbound TCP 443 passed")
				}
			}
			fw.Firewall(Home)
			check(Home)
		})
	}
}

func tcpProbe(from, to *Host, port uint16) func(time.Duration) error {
	return func(wait time.Duration) error {
		_, err := dialTCP(from, netip.AddrPortFrom(to.Addr(), port), wait)
		return err
	}
}

func udpProbe(from, to *Host, port uint16) func(time.Duration) error {
	return func(wait time.Duration) error {
		return probeUDP(from, netip.AddrPortFrom(to.Addr(), port), wait)
	}
}

func TestBlockUDP(t *testing.T) {
	tests := []struct {
		name     string
		onRouter bool
	}{
		{"host", false},
		{"router", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lab := New(t)
			r := lab.NATRouter("r1", RouterConfig{})
			a := lab.Host("a", r)
			srv := lab.Host("srv", lab.Internet())
			udpEcho(t, srv, 4000)
			listenTCP(t, srv, 4001)
			target := a
			if tt.onRouter {
				target = r.Host
			}
			dst := netip.AddrPortFrom(srv.Addr(), 4000)

			if err := probeUDP(a, dst, openWait); err != nil {
				t.Fatalf("before BlockUDP: %v", err)
			}
			target.BlockUDP()
			if err := probeUDP(a, dst, blockedWait); err == nil {
				t.Fatalf("UDP passed after BlockUDP")
			}
			if _, err := dialTCP(a, netip.AddrPortFrom(srv.Addr(), 4001), openWait); err != nil {
				t.Fatalf("TCP should still pass while UDP is blocked: %v", err)
			}
			target.UnblockUDP()
			if err := probeUDP(a, dst, openWait); err != nil {
				t.Fatalf("after UnblockUDP: %v", err)
			}
		})
	}
}

// TestFlushConntrack: after a UDP exchange through a NAT router, the router
// tracks the flow; FlushConntrack counts and removes it (a second flush
// finds nothing), and the next exchange makes a new entry and works.
func TestFlushConntrack(t *testing.T) {
	lab := New(t)
	r := lab.NATRouter("r1", RouterConfig{})
	a := lab.Host("a", r)
	srv := lab.Host("srv", lab.Internet())
	udpEcho(t, srv, 4000)
	if err := probeUDP(a, netip.AddrPortFrom(srv.Addr(), 4000), openWait); err != nil {
		t.Fatalf("before the flush: %v", err)
	}
	// probeUDP sends again every 200 ms until an echo comes back, so an
	// echo of an earlier probe (the first one waits for neighbour
	// discovery) can still be on its way, and after the first flush it
	// would make a new entry. Let it land first.
	time.Sleep(500 * time.Millisecond)
	if n := r.FlushConntrack(); n < 1 {
		t.Fatalf("FlushConntrack on the router after a UDP exchange through it: %d entries, want at least 1", n)
	}
	if n := r.FlushConntrack(); n != 0 {
		t.Fatalf("second FlushConntrack: %d entries, want 0", n)
	}
	// The host sends again: a new entry, and the echo comes back.
	if err := probeUDP(a, netip.AddrPortFrom(srv.Addr(), 4000), openWait); err != nil {
		t.Fatalf("after the flush: %v", err)
	}
}

func TestRunStartDo(t *testing.T) {
	lab := New(t)
	h := lab.Host("h", lab.Internet())
	ctx := context.Background()

	out, err := h.Run(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0").Output()
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !strings.Contains(string(out), h.Addr().String()+"/15") {
		t.Errorf("eth0 in %s shows %q, want %s/15", h.Namespace(), out, h.Addr())
	}

	p := h.Start(ctx, "sh", "-c", "echo started; exec sleep 600")
	for deadline := time.Now().Add(openWait); !strings.Contains(p.Output(), "started") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	p.Kill()
	p.Kill() // idempotent
	if err := p.Wait(); err == nil {
		t.Errorf("killed process exited cleanly")
	}
	if !strings.Contains(p.Output(), "started") {
		t.Errorf("output %q lacks what the process printed", p.Output())
	}

	var inside bool
	if err := h.Do(func() error {
		out, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
		inside = strings.Contains(string(out), h.Addr().String())
		return err
	}); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if !inside {
		t.Errorf("a process started inside Do does not see the namespace's address")
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	var prefix string
	var pid int
	t.Run("lab", func(t *testing.T) {
		lab := New(t)
		prefix = lab.Prefix()
		r := lab.NATRouter("r1", RouterConfig{})
		h := lab.Host("a", r)
		lab.Host("b", lab.Internet())
		pid = h.Start(context.Background(), "sleep", "600").Pid()
		// A process the test started with Run and never waited for.
		if err := r.Run(context.Background(), "sleep", "600").Start(); err != nil {
			t.Fatal(err)
		}
		if names, _ := Names(prefix); len(names) != 4 {
			t.Fatalf("lab namespaces %v, want inet, r1, a, b", names)
		}
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), prefix) {
		t.Errorf("after cleanup `ip netns list` still shows %s*:\n%s", prefix, out)
	}
	if processExists(pid) {
		t.Errorf("background process %d survived cleanup", pid)
	}
}

func TestSweepStale(t *testing.T) {
	if reason := missingRequirement(); reason != "" {
		t.Skip(reason)
	}
	// A PID that certainly belonged to a process that is gone.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := nsFamily + strconv.Itoa(dead.Process.Pid) + "-1-x"
	live := nsFamily + "1-1-y" // PID 1 always exists
	for _, name := range []string{stale, live} {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
	}
	t.Cleanup(func() {
		for _, name := range []string{stale, live} {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	})
	// A process a crashed run left inside its namespace.
	orphan := exec.Command("ip", "netns", "exec", stale, "sleep", "600")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- orphan.Wait() }()

	msgs := sweepStale()
	t.Logf("sweep: %q", msgs)
	names, err := Names(nsFamily)
	if err != nil {
		t.Fatal(err)
	}
	has := func(n string) bool {
		for _, x := range names {
			if x == n {
				return true
			}
		}
		return false
	}
	if has(stale) {
		t.Errorf("stale namespace %s survived the sweep", stale)
	}
	if !has(live) {
		t.Errorf("namespace %s of a live PID was swept", live)
	}
	select {
	case <-done:
	case <-time.After(openWait):
		_ = orphan.Process.Kill()
		<-done
		t.Errorf("process left in the stale namespace survived the sweep")
	}
}

// TestIPv6OnInternet: AddIPv6 gives nodes on the internet usable IPv6
// addresses at once (no DAD wait), and DropIPv4 leaves a host with IPv6
// only.
func TestIPv6OnInternet(t *testing.T) {
	lab := New(t)
	a, b := lab.Host("a", lab.Internet()), lab.Host("b", lab.Internet())
	a6, b6 := a.AddIPv6(), b.AddIPv6()
	if !lab.Internet().Prefix6().Contains(a6) || a6 == b6 || a.Addr6() != a6 {
		t.Fatalf("addresses %s and %s, want two distinct ones in %s", a6, b6, lab.Internet().Prefix6())
	}
	udpEcho(t, b, 7000)
	if err := probeUDP(a, netip.AddrPortFrom(b6, 7000), 5*time.Second); err != nil {
		t.Fatalf("a to b over IPv6: %v", err)
	}
	b.DropIPv4()
	if err := probeUDP(a, netip.AddrPortFrom(b.Addr(), 7000), time.Second); !errors.Is(err, errNoReply) {
		t.Fatalf("a to b's dropped IPv4 address: %v, want no reply", err)
	}
	if err := probeUDP(a, netip.AddrPortFrom(b6, 7000), 5*time.Second); err != nil {
		t.Fatalf("a to IPv6-only b: %v", err)
	}
}
