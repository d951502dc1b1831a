//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/plures/plurenet/internal/netlab"
)

// Settings of row (k).
const (
	// firstContactJoins is how many joins row (k) measures: the stall it
	// looks for (a lost first WireGuard handshake waiting out the 5 s
	// retry) was seen in about one join in nine.
	firstContactJoins = 50
	// firstContactPingInterval is ping's -i from the moment a member is
	// listed: the resolution of row (k).
	firstContactPingInterval = "0.05"
)

// firstContact measures row (k): a pair of kernel-TUN nodes behind NATs
// is started afresh firstContactJoins times (new keys, so every join is a
// first contact); as soon as a's status lists b, a pings b, and the row
// reports the time from the later of the two "member joined" log lines
// to the first ping reply, median and worst. The ping starts after a
// status round trip, so a figure includes that; a lost handshake shows
// as 5 s.
func (b *bench) firstContact() *row {
	r := &row{section: sectionLab, label: fmt.Sprintf("(k) first contact: members joined until first ping reply (%d joins)", firstContactJoins)}
	rp, url, err := b.startRelay()
	defer procs{rp}.stop()
	if err != nil {
		r.err = err
		return r
	}
	took := make([]time.Duration, 0, firstContactJoins)
	for i := range firstContactJoins {
		d, err := b.join(url)
		if err != nil {
			r.err = fmt.Errorf("join %d: %w", i+1, err)
			return r
		}
		took = append(took, d)
	}
	slices.Sort(took)
	r.note = fmt.Sprintf("median %s, worst %s (kernel TUN, both behind NAT, ping -i %s; issue target: worst under 1 s)",
		seconds(took[len(took)/2]), seconds(took[len(took)-1]), firstContactPingInterval)
	return r
}

// join starts both nodes, pings from a to b once a lists b, and returns
// the time from the join to the first reply.
func (b *bench) join(relayURL string) (time.Duration, error) {
	var ps procs
	defer func() { ps.stop() }()
	var nodes []*node
	for _, h := range []*netlab.Host{b.a, b.b} {
		n, err := b.startNode(h, relayURL, "--tun", tunName)
		if err != nil {
			return 0, err
		}
		ps = append(ps, &n.namedProc)
		nodes = append(nodes, n)
	}
	na, nb := nodes[0], nodes[1]
	peer, err := b.waitPeer(na, nb.name)
	if err != nil {
		return 0, err
	}
	dst, err := netip.ParseAddr(peer.IPv4)
	if err != nil {
		return 0, fmt.Errorf("%s's overlay IPv4 %q: %w", nb.name, peer.IPv4, err)
	}
	pinger := na.host.Start(context.Background(), "ping", "-D", "-i", firstContactPingInterval, dst.String())
	ps = append(ps, &namedProc{name: "ping", p: pinger})
	deadline := time.Now().Add(startWait)
	for {
		if replies := parsePingReplies(pinger.Output()); len(replies) > 0 {
			var joined time.Time
			for _, n := range nodes {
				at, ok := parseJoinedAt(n.p.Output())
				if !ok {
					return 0, fmt.Errorf("%s logged no \"member joined\"", n.name)
				}
				if at.After(joined) {
					joined = at
				}
			}
			return replies[0].at.Sub(joined), nil
		}
		select {
		case <-pinger.Done():
			return 0, fmt.Errorf("ping %s exited: %v: %s", dst, pinger.Wait(), lastLines(pinger.Output(), 5))
		default:
		}
		if time.Now().After(deadline) {
			return 0, errors.New("no ping reply within " + startWait.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
