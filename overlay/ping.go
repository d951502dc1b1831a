package overlay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"
)

// pingPort is the overlay TCP port a ping connects to. The discard port is
// almost never served, so the peer answers the SYN with a RST; if it is
// served, the SYN-ACK answers instead. Either way the answer takes exactly
// one round trip over the real data path: adapter, WireGuard, transport.
const pingPort = 9

// PingResult is one probe of a member.
type PingResult struct {
	Peer string        `json:"peer"` // the name or IP asked for
	IP   string        `json:"ip"`
	Path string        `json:"path"` // transport that carried the probe
	RTT  time.Duration `json:"rtt"`
}

// Ping measures one round trip to a member over the data path, the way a
// TCP ping does: it times a connection attempt to a port the member
// almost certainly refuses. The first ping after a quiet period also pays
// for the WireGuard handshake.
func (n *Node) Ping(ctx context.Context, peer string) (PingResult, error) {
	ip, err := n.Resolve(peer)
	if err != nil {
		return PingResult{}, err
	}
	if !n.isMember(ip) {
		return PingResult{}, fmt.Errorf("%s is not a member of this mesh (see \"plurenet status\")", ip)
	}
	res := PingResult{Peer: peer, IP: ip.String()}
	start := time.Now()
	c, err := n.adapter.dial(ctx, "tcp", netip.AddrPortFrom(ip, pingPort).String())
	res.RTT = time.Since(start)
	switch {
	case err == nil:
		c.Close()
	case errors.Is(err, syscall.ECONNREFUSED):
	default:
		return res, fmt.Errorf("no answer from %s: %w", ip, err)
	}
	for _, m := range n.members.List() {
		if m.V4 == ip || m.V6 == ip {
			res.Path = n.bind.PathTo(m.Key).Name
		}
	}
	return res, nil
}

func (n *Node) isMember(ip netip.Addr) bool {
	for _, m := range n.members.List() {
		if m.V4 == ip || m.V6 == ip {
			return true
		}
	}
	return false
}
