// Command tsnetpair is the tsnet anchor of "make bench": two tsnet nodes in
// one process, joined by Tailscale's in-process test control server and a
// DERP and STUN server of its own on 127.0.0.1, send -bytes over one TCP
// connection once the nodes talk directly. It prints one JSON object (the
// same fields as plurenet-bench's embedded worker) so the two can be set
// side by side:
//
//	{"bytes":…,"seconds":…,"cpu_seconds":…,"first_byte_ms":…,"peak_rss":…,"path":"direct"}
//
// tsnet reaches out on its own (log upload, and the bootstrap DNS behind
// it), so tsnetpair refuses to run unless its network namespace is closed:
// run it through isolated.sh (plurenet-bench does), which needs root.
// Everything listens on 127.0.0.1 only. It is a measurement harness, not
// plurenet code: it imports Tailscale's packages (BSD-3-Clause, see
// bench/README.md) and copies none of them.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"tailscale.com/derp/derpserver"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/net/netns"
	"tailscale.com/net/stunserver"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
)

// Bounds of one run: they only keep a broken run from hanging.
const (
	runWait  = 3 * time.Minute
	port     = 7000
	chunk    = 64 << 10
	maxBytes = 16 << 30
	// directWait bounds how long the nodes may take to leave DERP for a
	// direct path on loopback.
	directWait = 30 * time.Second
)

// result is what one run measured; plurenet-bench reads it.
type result struct {
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	FirstByteMS float64 `json:"first_byte_ms"`
	PeakRSS     int64   `json:"peak_rss"`
	Path        string  `json:"path"`
}

func main() {
	n := flag.Int64("bytes", 256<<20, "bytes to send over TCP once the path is direct")
	verbose := flag.Bool("v", false, "log what tsnet, DERP and control say to stderr")
	flag.Parse()
	if *n < 1 || *n > maxBytes {
		fmt.Fprintf(os.Stderr, "tsnetpair: -bytes must be 1..%d\n", int64(maxBytes))
		os.Exit(2)
	}
	logf := logger.Discard
	if *verbose {
		logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	if err := isolated(); err != nil {
		fmt.Fprintf(os.Stderr, "tsnetpair: %v\n", err)
		os.Exit(2)
	}
	// Also ask tsnet not to upload logs, where it listens.
	os.Setenv("TS_NO_LOGS_NO_SUPPORT", "true")
	res, err := run(*n, logf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tsnetpair: %v\n", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintf(os.Stderr, "tsnetpair: %v\n", err)
		os.Exit(1)
	}
}

func run(n int64, logf logger.Logf) (result, error) {
	var res result
	ctx, cancel := context.WithTimeout(context.Background(), runWait)
	defer cancel()
	// The nodes run unprivileged in one process: no SO_MARK sockets.
	netns.SetEnabled(false)

	derpMap, stop, err := startDERPAndSTUN(ctx, logf)
	if err != nil {
		return res, err
	}
	defer stop()
	control := &testcontrol.Server{
		DERPMap:        derpMap,
		DNSConfig:      &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain: "bench.ts.net",
		Logf:           logf,
	}
	control.HTTPTestServer = httptest.NewUnstartedServer(control)
	control.HTTPTestServer.Start()
	defer control.HTTPTestServer.Close()

	dir, err := os.MkdirTemp("", "tsnetpair-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	start := time.Now()
	rx, rxIP, err := startNode(ctx, dir, control.HTTPTestServer.URL, "rx", logf)
	if err != nil {
		return res, err
	}
	defer rx.Close()
	tx, _, err := startNode(ctx, dir, control.HTTPTestServer.URL, "tx", logf)
	if err != nil {
		return res, err
	}
	defer tx.Close()
	ln, err := rx.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return res, fmt.Errorf("rx listen: %w", err)
	}
	defer ln.Close()
	type counted struct {
		n       int64
		elapsed time.Duration
		err     error
	}
	got := make(chan counted, 1)
	go func() {
		// The first connection answers one byte per byte received (the
		// first-byte probe and the traffic that makes the path direct);
		// the second is counted.
		c, err := ln.Accept()
		if err != nil {
			got <- counted{err: err}
			return
		}
		_, err = io.Copy(c, c)
		c.Close()
		if err != nil {
			got <- counted{err: err}
			return
		}
		c, err = ln.Accept()
		if err != nil {
			got <- counted{err: err}
			return
		}
		defer c.Close()
		t0 := time.Now()
		n, err := io.Copy(io.Discard, c)
		got <- counted{n: n, elapsed: time.Since(t0), err: err}
	}()

	addr := netip.AddrPortFrom(rxIP, port).String()
	c, err := tx.Dial(ctx, "tcp", addr)
	if err != nil {
		return res, fmt.Errorf("tx dialing rx at %s: %w", addr, err)
	}
	echo := func() error {
		var b [1]byte
		if _, err := c.Write(b[:]); err != nil {
			return err
		}
		_, err := io.ReadFull(c, b[:])
		return err
	}
	if err := echo(); err != nil {
		return res, fmt.Errorf("first byte: %w", err)
	}
	res.FirstByteMS = float64(time.Since(start)) / float64(time.Millisecond)
	if res.Path, err = waitDirect(ctx, tx, rxIP, echo); err != nil {
		return res, err
	}
	c.Close()

	c, err = tx.Dial(ctx, "tcp", addr)
	if err != nil {
		return res, fmt.Errorf("tx dialing rx at %s: %w", addr, err)
	}
	// The peak RSS of the transfer, not of the start (as plurenet-bench's
	// embedded worker measures it): "5" in clear_refs resets VmHWM.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return res, fmt.Errorf("resetting the peak RSS: %w", err)
	}
	cpu0 := cpuTime()
	buf := make([]byte, chunk)
	for left := n; left > 0; {
		w := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:w]); err != nil {
			c.Close()
			return res, fmt.Errorf("sending: %w", err)
		}
		left -= w
	}
	c.Close()
	r := <-got
	res.CPUSeconds = (cpuTime() - cpu0).Seconds()
	if r.err != nil && !errors.Is(r.err, io.EOF) {
		return res, fmt.Errorf("receiving: %w", r.err)
	}
	if r.n != n {
		return res, fmt.Errorf("receiver got %d bytes, want %d", r.n, n)
	}
	res.Bytes, res.Seconds = r.n, r.elapsed.Seconds()
	res.PeakRSS, err = peakRSS()
	return res, err
}

// startDERPAndSTUN serves DERP over TLS (a self-signed test certificate,
// which the DERP map marks InsecureForTests) and STUN on 127.0.0.1, and
// returns the one-region DERP map that names them.
func startDERPAndSTUN(ctx context.Context, logf logger.Logf) (*tailcfg.DERPMap, func(), error) {
	d := derpserver.New(key.NewNode(), logf)
	srv := httptest.NewUnstartedServer(derpserver.Handler(d))
	// DERP upgrades an HTTP/1.1 connection; no HTTP/2.
	srv.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	srv.StartTLS()
	stun := stunserver.New(ctx)
	if err := stun.Listen("127.0.0.1:0"); err != nil {
		srv.Close()
		d.Close()
		return nil, nil, fmt.Errorf("STUN listen: %w", err)
	}
	stunDone := make(chan struct{})
	go func() {
		defer close(stunDone)
		_ = stun.Serve() // ends when ctx ends
	}()
	stop := func() {
		srv.Close()
		d.Close()
		<-stunDone
	}
	m := &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{
		1: {RegionID: 1, RegionCode: "bench", Nodes: []*tailcfg.DERPNode{{
			Name:             "b1",
			RegionID:         1,
			HostName:         "127.0.0.1",
			IPv4:             "127.0.0.1",
			IPv6:             "none",
			STUNPort:         stun.LocalAddr().(*net.UDPAddr).Port,
			DERPPort:         srv.Listener.Addr().(*net.TCPAddr).Port,
			InsecureForTests: true,
			STUNTestIP:       "127.0.0.1",
		}}},
	}}
	return m, stop, nil
}

func startNode(ctx context.Context, dir, controlURL, name string, logf logger.Logf) (*tsnet.Server, netip.Addr, error) {
	s := &tsnet.Server{
		Dir:        dir + "/" + name,
		ControlURL: controlURL,
		Hostname:   name,
		Store:      new(mem.Store),
		Ephemeral:  true,
		Logf:       logf,
	}
	st, err := s.Up(ctx)
	if err != nil {
		s.Close()
		return nil, netip.Addr{}, fmt.Errorf("%s up: %w", name, err)
	}
	return s, st.TailscaleIPs[0], nil
}

// waitDirect echoes a byte until tx reports a direct address for the peer
// at ip, and returns "direct".
func waitDirect(ctx context.Context, tx *tsnet.Server, ip netip.Addr, echo func() error) (string, error) {
	lc, err := tx.LocalClient()
	if err != nil {
		return "", err
	}
	deadline := time.Now().Add(directWait)
	for {
		if err := echo(); err != nil {
			return "", fmt.Errorf("echo while waiting for a direct path: %w", err)
		}
		st, err := lc.Status(ctx)
		if err != nil {
			return "", err
		}
		for _, p := range st.Peer {
			for _, a := range p.TailscaleIPs {
				if a == ip && p.CurAddr != "" {
					return "direct", nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no direct path after %v", directWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isolated fails unless every network interface is loopback or a veth
// whose peer is in this same namespace: then nothing this process sends can
// leave the namespace. tsnet pauses without a default route through a
// non-loopback interface, hence the closed veth pair rather than loopback
// alone (see bench/tsnet/isolated.sh).
func isolated() error {
	out, err := exec.Command("ip", "-j", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("listing interfaces (ip -j link show): %w", err)
	}
	var links []struct {
		Name     string `json:"ifname"`
		Type     string `json:"link_type"`
		Peer     string `json:"link"`
		PeerNSID *int   `json:"link_netnsid"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return fmt.Errorf("ip -j link show: %w", err)
	}
	names := map[string]bool{}
	for _, l := range links {
		names[l.Name] = true
	}
	for _, l := range links {
		if l.Type == "loopback" || (l.Peer != "" && l.PeerNSID == nil && names[l.Peer]) {
			continue
		}
		return fmt.Errorf("interface %s leads out of this network namespace: run tsnetpair through bench/tsnet/isolated.sh so tsnet cannot reach out", l.Name)
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS is this process's VmHWM.
func peakRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("VmHWM %q: %w", rest, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}
