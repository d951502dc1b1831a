//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/overlay"
)

// Settings of the NAT rows.
const (
	// directWait bounds two members behind NATs getting a direct path:
	// one ICE attempt is bounded at 10 s, and a failed one is retried 1-2 s
	// later.
	directWait = 30 * time.Second
	// fallbackWait bounds the move to the relay after UDP is cut: the
	// direct path's loss timeout is 3 s.
	fallbackWait = 30 * time.Second
	// fallbackPingInterval is ping's -i while the direct path is cut: the
	// resolution of row (h).
	fallbackPingInterval = "0.1"
	// warmReplies is how many replies the continuous ping must have had
	// before UDP is cut, so that the path it measures is up and in use.
	warmReplies = 5
)

// Status names (members[].path, members[].direct.state).
const (
	pathDirect  = "direct"
	stateDirect = "direct"
)

// natRows measures rows (f), (g) and (h) with one pair of kernel-TUN nodes
// (transport auto, the default) on b.a and b.b, each behind its own home NAT
// router (port-preserving MASQUERADE); routerB is b.b's router. The relay
// and its STUN responder run on b.relay, on the internet.
//
//	(f) throughput and RTT once the path is direct: hole punched
//	    through two NATs, unlike row (c) whose hosts are on one bridge;
//	(g) time from starting both nodes until both report a direct path;
//	(h) time from blocking UDP at routerB until a continuous ping gets
//	    replies again (through the relay), and until status says relay.
func (b *bench) natRows(routerB *netlab.Router) []*row {
	f := &row{section: sectionLab, label: "(f) plurenet kernel TUN, auto, both behind NAT"}
	g := &row{section: sectionLab, label: "(g) relay -> direct: 2 NATed nodes started until status direct"}
	h := &row{section: sectionLab, label: "(h) direct -> relay: UDP blocked until ping replies (via relay)"}
	rows := []*row{f, g, h}
	failAll := func(err error) []*row {
		for _, r := range rows {
			if r.err == nil {
				r.err = err
			}
		}
		return rows
	}
	var ps procs
	defer func() {
		ps.finish(f)
		if f.err == nil && (g.err != nil || h.err != nil) {
			for _, np := range ps {
				fmt.Fprintf(os.Stderr, "plurenet-bench: NAT rows failed; last output of %s:\n%s\n", np.name, lastLines(condense(np.p.Output()), failLogLines))
			}
		}
	}()

	rp, url, err := b.startRelay()
	ps = append(ps, rp)
	if err != nil {
		return failAll(err)
	}
	started := time.Now()
	var nodes []*node
	for _, host := range []*netlab.Host{b.a, b.b} {
		n, err := b.startNode(host, url, "--tun", tunName)
		if err != nil {
			return failAll(err)
		}
		ps = append(ps, &n.namedProc)
		nodes = append(nodes, n)
	}
	na, nb := nodes[0], nodes[1]
	peer, err := b.waitPeer(na, nb.name)
	if err == nil {
		_, err = b.waitPeer(nb, na.name)
	}
	if err != nil {
		return failAll(err)
	}
	listed := time.Since(started)
	dst, err := netip.ParseAddr(peer.IPv4)
	if err != nil {
		return failAll(fmt.Errorf("%s's overlay IPv4 %q: %w", nb.name, peer.IPv4, err))
	}

	// (g): both ends report the direct path (ICE connected, packets
	// flowing). Polled through "plurenet status", so the figure includes
	// up to one poll and one status round trip.
	var took [2]time.Duration
	pairs := [2][2]*node{{na, nb}, {nb, na}}
	deadline := time.Now().Add(directWait)
	for g.err == nil && (took[0] == 0 || took[1] == 0) {
		for i, c := range pairs {
			if took[i] != 0 {
				continue
			}
			m, err := b.memberView(c[0], c[1].name)
			if err != nil {
				g.err = err
				break
			}
			if m.Direct != nil && m.Direct.State == stateDirect {
				took[i] = time.Since(started)
			}
		}
		if g.err == nil && time.Now().After(deadline) {
			g.err = fmt.Errorf("no direct path within %v: %s after %v, %s after %v (0: not direct)",
				directWait, na.name, took[0], nb.name, took[1])
		}
		time.Sleep(poll)
	}
	if g.err == nil {
		g.note = fmt.Sprintf("%s (%s %s, %s %s; members listed after %s; issue target 5 s)",
			seconds(max(took[0], took[1])), na.name, seconds(took[0]), nb.name, seconds(took[1]), seconds(listed))
	}

	// (f): whatever path auto chose; the label says which.
	b.measure(f, ps, dst, iperfPort, dst)
	if f.err != nil {
		if h.err == nil {
			h.err = errors.New("not measured: row (f) failed")
		}
		return rows
	}
	m, err := b.waitPeer(na, nb.name)
	if err != nil {
		f.err = err
		return rows
	}
	f.label += " (" + m.Path + ")"
	f.note = "path " + m.Path
	if m.Direct != nil && m.Direct.Remote != "" {
		f.note += " to " + m.Direct.Remote + " (" + nb.name + "'s router)"
	}
	if m.Path != pathDirect {
		h.err = fmt.Errorf("not measured: the path is %q, not direct", m.Path)
		return rows
	}

	h.note, h.err = b.fallback(na, nb, routerB, dst)
	return rows
}

// fallback cuts UDP at routerB while a pings dst (b's overlay address) ten
// times a second, and says how long it took until a reply came back to a
// request sent after the cut, and until a's status named a relay path.
func (b *bench) fallback(na, nb *node, routerB *netlab.Router, dst netip.Addr) (string, error) {
	pinger := na.host.Start(context.Background(), "ping", "-D", "-i", fallbackPingInterval, dst.String())
	defer procs{{name: "ping", p: pinger}}.stop()
	deadline := time.Now().Add(startWait)
	for len(parsePingReplies(pinger.Output())) < warmReplies {
		select {
		case <-pinger.Done():
			return "", fmt.Errorf("ping %s exited: %v: %s", dst, pinger.Wait(), lastLines(pinger.Output(), 5))
		default:
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("ping %s: fewer than %d replies within %v over the direct path", dst, warmReplies, startWait)
		}
		time.Sleep(poll)
	}

	routerB.BlockUDP()
	defer routerB.UnblockUDP()
	cut := time.Now()

	var replied, onRelay time.Duration
	deadline = cut.Add(fallbackWait)
	for replied == 0 || onRelay == 0 {
		if time.Now().After(deadline) {
			return "", fmt.Errorf("within %v of blocking UDP at %s: replies again after %v, status relay after %v (0: not seen)",
				fallbackWait, routerB.Name(), replied, onRelay)
		}
		if replied == 0 {
			for _, r := range parsePingReplies(pinger.Output()) {
				if r.sent().After(cut) {
					replied = r.at.Sub(cut)
					break
				}
			}
		}
		if onRelay == 0 {
			m, err := b.memberView(na, nb.name)
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(m.Path, "relay") {
				onRelay = time.Since(cut)
				if m.Path != "relay:primary" {
					return "", fmt.Errorf("after the cut %s's path to %s is %q, want relay:primary", na.name, nb.name, m.Path)
				}
			}
		}
		time.Sleep(poll)
	}
	return fmt.Sprintf("%s (status relay:primary after %s; ping -i %s; a path carrying traffic is probed after 0.5 s of silence)",
		seconds(replied), seconds(onRelay), fallbackPingInterval), nil
}

// memberView returns from's view of the member called to.
func (b *bench) memberView(from *node, to string) (overlay.MemberStatus, error) {
	select {
	case <-from.p.Done():
		return overlay.MemberStatus{}, fmt.Errorf("%s exited: %v: %s", from.name, from.p.Wait(), lastLines(from.p.Output(), 5))
	default:
	}
	st, err := b.status(from)
	if err != nil {
		return overlay.MemberStatus{}, err
	}
	for _, m := range st.Members {
		if m.Name == to {
			return m, nil
		}
	}
	return overlay.MemberStatus{}, fmt.Errorf("%s does not list %s", from.name, to)
}

// seconds formats a duration for a note: "1.23 s".
func seconds(d time.Duration) string {
	return fmt.Sprintf("%.2f s", d.Seconds())
}
