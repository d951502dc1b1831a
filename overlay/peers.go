package overlay

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports"
)

// peerConfig is what the WireGuard device holds for one member.
type peerConfig struct {
	v4, v6 netip.Addr
	psk    [32]byte // changes when the mesh secret is rotated
}

// syncPeers makes the WireGuard device's peers match the membership, and
// moves this node's own IPv4 if the collision rule says so.
func (n *Node) syncPeers() {
	defer n.updateAccess() // once n.mu is released: access.go
	list := n.members.List()
	selfV4 := n.members.SelfV4()

	n.mu.Lock()
	defer n.mu.Unlock()
	if selfV4 != n.selfV4 {
		n.log.Warn("IPv4 address collision: this node moves to another address", "from", n.selfV4, "to", selfV4)
		if err := n.adapter.setAddrs(selfV4, n.v6); err != nil {
			n.log.Error("moving overlay address", "err", err)
		} else {
			n.selfV4 = selfV4
			if n.dns != nil {
				n.dns.moveV4(n.adapter, selfV4, n.v6)
			}
		}
	}
	if n.dns != nil {
		// Under n.mu, so that tables reach the resolver in order.
		n.dns.update(n.dnsTable(list, n.selfV4))
	}
	want := make(map[nodekey.Public]peerConfig, len(list))
	psk := n.keys.current().PSK
	for _, m := range list {
		want[m.Key] = peerConfig{v4: m.V4, v6: m.V6, psk: psk}
	}
	var b strings.Builder
	for k := range n.configured {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", k.Hex())
			n.bind.ForgetPeer(k)
			if n.direct != nil {
				n.direct.RemovePeer(k)
			}
		}
	}
	for k, pc := range want {
		old, known := n.configured[k]
		if !known && n.direct != nil {
			n.direct.AddPeer(k)
		}
		if known && old == pc {
			continue
		}
		fmt.Fprintf(&b, "public_key=%s\npreshared_key=%x\nendpoint=%s\nreplace_allowed_ips=true\n",
			k.Hex(), pc.psk[:], transports.Endpoint{Key: k}.DstToString())
		for _, a := range []netip.Addr{pc.v4, pc.v6} {
			if a.IsValid() {
				fmt.Fprintf(&b, "allowed_ip=%s\n", netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	if b.Len() > 0 {
		if err := n.dev.IpcSet(b.String()); err != nil {
			n.log.Error("configuring wireguard peers", "err", err)
			return
		}
	}
	n.configured = want
	n.notifyChangedLocked()
}
