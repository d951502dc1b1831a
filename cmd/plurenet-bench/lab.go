//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/overlay"
)

// Bounds of the lab measurements. They only keep a broken run from hanging.
const (
	// startWait bounds a process's start and two nodes finding each
	// other.
	startWait = 30 * time.Second
	// commandWait pads a measurement command's own duration (iperf3 -t,
	// the pings) for connecting and the first handshake.
	commandWait = 40 * time.Second
	// stopWait is how long a process gets to exit after SIGTERM before it
	// is killed.
	stopWait = 10 * time.Second
	// poll is how often the lab re-checks a condition it waits for.
	poll = 100 * time.Millisecond
)

// The lab's fixed choices.
const (
	relayPort   = 443
	iperfPort   = 5201
	forwardPort = 15201 // on a, forwarded to b's exposed iperf3 port
	tunName     = "plurenet0"
	benchTopic  = "plurenet-bench"
	benchKey    = "bench secret, network namespaces only"
	// pingInterval is ping's -i: fast enough for 20 pings in 4 s, slow
	// enough to measure idle RTT rather than queueing.
	pingInterval = "0.2"
)

// labConfig is what the lab part of the bench needs.
type labConfig struct {
	plurenet    string        // the plurenet binary
	wireguardGo string        // the wireguard-go binary
	iperfTime   time.Duration // iperf3 -t, after one omitted second
	// iperfRuns is how many iperf3 runs a throughput row takes the median
	// of: on a shared 2-core machine one run of a row swings by ±20%, and
	// a ratio of two single runs by more.
	iperfRuns int
	pings     int
	// rows are the letters of the lab rows to measure (-lab-rows); empty
	// means all of them.
	rows string
}

// want says whether the lab measures the row with this letter.
func (c labConfig) want(letter byte) bool {
	return c.rows == "" || strings.IndexByte(c.rows, letter) >= 0
}

// labRowLetters are the letters -lab-rows accepts.
const labRowLetters = "abcdefghijk"

// bench is one lab: hosts a and b and a relay host, all on the lab's
// internet (one bridge), so every path of rows (a)-(e) crosses the same
// veths. Rows (f)-(h) use a second bench whose a and b sit behind NAT
// routers.
type bench struct {
	t        *labT
	cfg      labConfig
	a, b     *netlab.Host
	relay    *netlab.Host
	stateDir string
}

// labRows measures rows (a) to (k) in a fresh lab. The outcome says whether
// the lab could run at all.
func labRows(cfg labConfig) ([]*row, labOutcome) {
	var rows []*row
	out := runLab(os.Stderr, func(t *labT) {
		lab := netlab.New(t)
		b := &bench{t: t, cfg: cfg}
		b.a = lab.Host("a", lab.Internet())
		b.b = lab.Host("b", lab.Internet())
		b.relay = lab.Host("relay", lab.Internet())
		dir, err := os.MkdirTemp("", "plurenet-bench-lab-")
		if err != nil {
			t.Fatalf("state dirs: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		b.stateDir = dir
		for _, lr := range []struct {
			letter byte
			fn     func() *row
		}{
			{'a', b.veth},
			{'b', b.wireguardGo},
			{'c', func() *row { return b.plurenetTUN("auto") }},
			{'d', b.plurenetUserspace},
			{'e', func() *row { return b.plurenetTUN("relay") }},
		} {
			if cfg.want(lr.letter) {
				rows = append(rows, lr.fn())
			}
		}
		// Rows (f)-(h) and (k): another pair of hosts, each behind its
		// own home NAT router, and the same relay host.
		var nat *bench
		if cfg.want('f') || cfg.want('g') || cfg.want('h') || cfg.want('k') {
			ra := lab.NATRouter("ra", netlab.RouterConfig{})
			rb := lab.NATRouter("rb", netlab.RouterConfig{})
			nat = &bench{t: t, cfg: cfg, a: lab.Host("na", ra), b: lab.Host("nb", rb), relay: b.relay, stateDir: dir}
			if cfg.want('f') || cfg.want('g') || cfg.want('h') {
				rows = append(rows, nat.natRows(rb)...)
			}
		}
		// Rows (i)-(j): a third pair behind home NATs, meeting through a
		// private DHT and through the relay.
		if cfg.want('i') || cfg.want('j') {
			fb := &bench{t: t, cfg: cfg, a: lab.Host("fa", lab.NATRouter("rfa", netlab.RouterConfig{})),
				b: lab.Host("fb", lab.NATRouter("rfb", netlab.RouterConfig{})), relay: b.relay, stateDir: dir}
			rows = append(rows, fb.firstByteRows(lab)...)
		}
		if cfg.want('k') {
			rows = append(rows, nat.firstContact())
		}
	})
	return rows, out
}

// measure runs iperf3 from a to dst:port cfg.iperfRuns times, keeping the
// median, and, when pingDst is valid, pings it, filling r. The peak RSS of ps is reset first, so that the row reports
// the peak under load, not at start-up (a chosen mesh secret's Argon2id
// takes 64 MiB for a moment when a node starts).
func (b *bench) measure(r *row, ps procs, dst netip.Addr, port int, pingDst netip.Addr) {
	if err := ps.resetPeak(); err != nil {
		r.err = err
		return
	}
	runs := make([]float64, 0, b.cfg.iperfRuns)
	for range max(b.cfg.iperfRuns, 1) {
		bps, err := b.iperf(dst, port)
		if err != nil {
			r.err = err
			return
		}
		runs = append(runs, bps)
	}
	slices.Sort(runs)
	r.bps = runs[len(runs)/2]
	if pingDst.IsValid() {
		var err error
		if r.rtt, err = b.ping(pingDst); err != nil {
			r.err = err
		}
	}
}

// iperf runs one iperf3 test from a to dst:port against a fresh iperf3
// server on b, so that a test a broken path left hanging on the server
// cannot make the next rows' servers "busy".
func (b *bench) iperf(dst netip.Addr, port int) (float64, error) {
	srv := b.b.Start(context.Background(), "iperf3", "-s", "-1", "-p", fmt.Sprint(iperfPort), "--forceflush")
	defer procs{{name: "iperf3 server", p: srv}}.stop()
	if err := waitOutput(srv, "Server listening"); err != nil {
		return 0, fmt.Errorf("iperf3 server: %w", err)
	}
	secs := fmt.Sprint(int(b.cfg.iperfTime.Round(time.Second) / time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.iperfTime+commandWait)
	defer cancel()
	out, err := b.a.Run(ctx, "iperf3", "-c", dst.String(), "-p", fmt.Sprint(port),
		"-t", secs, "-O", "1", "-J", "--connect-timeout", "10000").Output()
	if bps, perr := netlab.ParseIperf3(out); perr == nil {
		return bps, nil
	} else if err == nil {
		err = perr
	}
	return 0, fmt.Errorf("iperf3 to %s:%d: %w", dst, port, err)
}

// ping warms the path up (the first packet may wait for a handshake), then
// pings dst cfg.pings times and returns the average RTT.
func (b *bench) ping(dst netip.Addr) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandWait+time.Duration(b.cfg.pings)*time.Second)
	defer cancel()
	if out, err := b.a.Run(ctx, "ping", "-c", "2", "-w", "20", dst.String()).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("ping %s (warm-up): %w: %s", dst, err, out)
	}
	out, err := b.a.Run(ctx, "ping", "-q", "-c", fmt.Sprint(b.cfg.pings), "-i", pingInterval, dst.String()).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w: %s", dst, err, out)
	}
	return parsePingAvg(string(out))
}

// veth is row (a): the namespaces' own path, a veth pair each way through
// the internet bridge.
func (b *bench) veth() *row {
	r := &row{section: sectionLab, label: "(a) veth + bridge, no tunnel"}
	b.measure(r, nil, b.b.Addr(), iperfPort, b.b.Addr())
	return r
}

// procs are background processes of one row, stopped when the row is done.
type procs []*namedProc

type namedProc struct {
	name string
	p    *netlab.Proc
}

// rss reads every process's peak RSS. A process that died makes the row
// fail: its numbers would be meaningless.
func (ps procs) rss() ([]procRSS, error) {
	var out []procRSS
	for _, np := range ps {
		select {
		case <-np.p.Done():
			return nil, fmt.Errorf("%s exited during the measurement: %v: %s", np.name, np.p.Wait(), lastLines(np.p.Output(), 5))
		default:
		}
		n, err := peakRSS(np.p.Pid())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", np.name, err)
		}
		out = append(out, procRSS{name: np.name, bytes: n})
	}
	return out, nil
}

// resetPeak resets every process's peak RSS to its RSS now.
func (ps procs) resetPeak() error {
	for _, np := range ps {
		if err := resetPeakRSS(np.p.Pid()); err != nil {
			return fmt.Errorf("%s: %w", np.name, err)
		}
	}
	return nil
}

// stop sends SIGTERM to every process, last started first, and kills the
// ones that do not exit in time.
func (ps procs) stop() {
	for i := len(ps) - 1; i >= 0; i-- {
		p := ps[i].p
		_ = syscall.Kill(p.Pid(), syscall.SIGTERM) // it may have exited
		select {
		case <-p.Done():
		case <-time.After(stopWait):
			p.Kill()
		}
	}
}

// finish fills r's RSS column from ps (unless r failed) and stops them.
func (ps procs) finish(r *row) {
	if r.err == nil {
		r.rss, r.err = ps.rss()
	}
	ps.stop()
	if r.err != nil {
		// The table has one line per row; the logs say why.
		for _, np := range ps {
			fmt.Fprintf(os.Stderr, "plurenet-bench: %s failed; last output of %s:\n%s\n", r.label, np.name, lastLines(condense(np.p.Output()), failLogLines))
		}
	}
}

// failLogLines is how much of each process's log a failed row prints.
const failLogLines = 30

// condense folds runs of log lines that differ only in their time= field
// into one line and a count, so that a per-packet warning repeated a
// thousand times does not push everything else out of failLogLines.
func condense(log string) string {
	var out []string
	prevKey, repeats := "", 0
	flush := func() {
		if repeats > 0 {
			out = append(out, fmt.Sprintf("    [the line above %d more times]", repeats))
		}
		repeats = 0
	}
	for line := range strings.Lines(log) {
		line = strings.TrimRight(line, "\n")
		key := line
		if strings.HasPrefix(key, "time=") {
			if _, rest, ok := strings.Cut(key, " "); ok {
				key = rest
			}
		}
		if key == prevKey {
			repeats++
			continue
		}
		flush()
		out = append(out, line)
		prevKey = key
	}
	flush()
	return strings.Join(out, "\n")
}

// waitOutput waits until p has printed want.
func waitOutput(p *netlab.Proc, want string) error {
	deadline := time.Now().Add(startWait)
	for !strings.Contains(p.Output(), want) {
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited before printing %q: %v: %s", p, want, p.Wait(), lastLines(p.Output(), 5))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q within %v: %s", p, want, startWait, lastLines(p.Output(), 5))
		}
		time.Sleep(poll)
	}
	return nil
}

// startRelay starts a plurenet relay without a rate limit: the bench
// measures what the relay can carry, not its per-connection policy.
func (b *bench) startRelay() (*namedProc, string, error) {
	p := b.relay.Start(context.Background(), b.cfg.plurenet, "relay",
		"--listen", fmt.Sprintf("0.0.0.0:%d", relayPort), "--rate", "0")
	np := &namedProc{name: "relay", p: p}
	if err := waitOutput(p, "plurenet relay listening on"); err != nil {
		return np, "", err
	}
	return np, "ws://" + netip.AddrPortFrom(b.relay.Addr(), relayPort).String(), nil
}

// node is a "plurenet up" process and its state directory.
type node struct {
	namedProc
	host *netlab.Host
	dir  string
}

func (b *bench) startNode(h *netlab.Host, relayURL string, extra ...string) (*node, error) {
	dir, err := os.MkdirTemp(b.stateDir, h.Name()+"-")
	if err != nil {
		return nil, err
	}
	args := []string{"up", "--topic", benchTopic, "--key", benchKey, "--state-dir", dir, "--name", h.Name()}
	if relayURL != "" { // "": swarm mode, no relay
		args = append(args, "--relay", relayURL)
	}
	args = append(args, extra...)
	p := h.Start(context.Background(), b.cfg.plurenet, args...)
	return &node{namedProc: namedProc{name: h.Name(), p: p}, host: h, dir: dir}, nil
}

// status runs "plurenet status --json" for n in its namespace.
func (b *bench) status(n *node) (overlay.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandWait)
	defer cancel()
	var st overlay.Status
	out, err := n.host.Run(ctx, b.cfg.plurenet, "status", "--state-dir", n.dir, "--json").Output()
	if err != nil {
		return st, fmt.Errorf("plurenet status of %s: %w", n.name, err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("plurenet status --json of %s: %w", n.name, err)
	}
	return st, nil
}

// waitPeer waits until from lists a member named to and returns that
// member's status.
func (b *bench) waitPeer(from *node, to string) (overlay.MemberStatus, error) {
	deadline := time.Now().Add(startWait)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-from.p.Done():
			return overlay.MemberStatus{}, fmt.Errorf("%s exited: %v: %s", from.name, from.p.Wait(), lastLines(from.p.Output(), 5))
		default:
		}
		st, err := b.status(from)
		if err == nil {
			for _, m := range st.Members {
				if m.Name == to {
					return m, nil
				}
			}
			err = fmt.Errorf("%s does not list %s yet", from.name, to)
		}
		lastErr = err
		time.Sleep(poll)
	}
	return overlay.MemberStatus{}, fmt.Errorf("after %v: %w", startWait, lastErr)
}

// plurenetTUN is row (c) (transport auto: labelled with the path it took)
// or row (e) (transport relay): kernel TUN nodes on a and b.
func (b *bench) plurenetTUN(transport string) *row {
	r := &row{section: sectionLab, label: "(c) plurenet kernel TUN, auto, no NAT"}
	if transport == "relay" {
		r.label = "(e) plurenet kernel TUN, --transport relay"
	}
	var ps procs
	defer func() { ps.finish(r) }()
	rp, url, err := b.startRelay()
	ps = append(ps, rp)
	if err != nil {
		r.err = err
		return r
	}
	var nodes []*node
	for _, h := range []*netlab.Host{b.a, b.b} {
		n, err := b.startNode(h, url, "--tun", tunName, "--transport", transport)
		if err != nil {
			r.err = err
			return r
		}
		ps = append(ps, &n.namedProc)
		nodes = append(nodes, n)
	}
	peer, err := b.waitPeer(nodes[0], "b")
	if err == nil {
		_, err = b.waitPeer(nodes[1], "a")
	}
	if err != nil {
		r.err = err
		return r
	}
	dst, err := netip.ParseAddr(peer.IPv4)
	if err != nil {
		r.err = fmt.Errorf("b's overlay IPv4 %q: %w", peer.IPv4, err)
		return r
	}
	b.measure(r, ps, dst, iperfPort, dst)
	if r.err != nil {
		return r
	}
	// The path that carried the traffic, as the node reports it.
	if m, err := b.waitPeer(nodes[0], "b"); err == nil {
		r.note = "path " + m.Path
		if transport == "auto" {
			if strings.HasPrefix(m.Path, "direct") {
				r.label += " (direct)"
			} else {
				r.label += " (" + m.Path + ")"
			}
		}
	}
	return r
}

// plurenetUserspace is row (d): userspace nodes, iperf3 on a through
// --forward to b's --expose'd iperf3 port. There is no ICMP through a
// forward, so no RTT.
func (b *bench) plurenetUserspace() *row {
	r := &row{section: sectionLab, label: "(d) plurenet userspace, --forward/--expose", note: "no ICMP in userspace mode"}
	var ps procs
	defer func() { ps.finish(r) }()
	rp, url, err := b.startRelay()
	ps = append(ps, rp)
	if err != nil {
		r.err = err
		return r
	}
	nb, err := b.startNode(b.b, url, "--expose", fmt.Sprint(iperfPort))
	if err != nil {
		r.err = err
		return r
	}
	ps = append(ps, &nb.namedProc)
	na, err := b.startNode(b.a, url, "--forward", fmt.Sprintf("127.0.0.1:%d=b:%d", forwardPort, iperfPort))
	if err != nil {
		r.err = err
		return r
	}
	ps = append(ps, &na.namedProc)
	_, err = b.waitPeer(na, "b")
	if err == nil {
		_, err = b.waitPeer(nb, "a")
	}
	if err != nil {
		r.err = err
		return r
	}
	b.measure(r, ps, netip.MustParseAddr("127.0.0.1"), forwardPort, netip.Addr{})
	if r.err == nil {
		if m, err := b.waitPeer(na, "b"); err == nil {
			r.note = "path " + m.Path + "; " + r.note
		}
	}
	return r
}

// errNoWireguardGo says why row (b) is missing.
var errNoWireguardGo = errors.New("no wireguard-go binary (give -wireguard-go; scripts/bench.sh builds it from go.mod's module)")
