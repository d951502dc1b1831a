package overlay

import (
	"context"
	"net/netip"

	"github.com/plures/plurenet/netmon"
	"github.com/plures/plurenet/portmap"
)

// watchNetwork follows the host's network (package netmon) for the life of
// the node, so a member that moves (home Wi-Fi to a phone hotspot, a new
// DHCP lease, a wake from sleep) heals without a restart: see onNetChange.
// The monitor is owned by a goroutine of n.wg and closed when ctx ends.
func (n *Node) watchNetwork(ctx context.Context) {
	m, err := netmon.Start(ctx, netmon.Config{
		OnChange: n.onNetChange,
		Exclude:  n.meshPrefixes(), // a kernel TUN's own addresses are no move
		Logger:   n.log,
	})
	if err != nil {
		n.log.Warn("not watching the network; a move needs a restart", "err", err)
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		<-ctx.Done()
		m.Close()
	}()
}

// onNetChange re-establishes everything tied to the old network, in the
// order the new paths depend on: the relay connections (which carry ICE
// signaling) are replaced make-before-break, the direct path restarts ICE
// with every member (fresh host and STUN candidates), and the node
// announces itself at once so that members (swarm mode's static paths
// included) learn its new addresses now rather than at the next periodic
// announcement. WireGuard sessions stay: their packets ride the relay
// until the direct path is back, so connections on the overlay survive.
func (n *Node) onNetChange(e netmon.Event) {
	n.log.Info("network changed", "reason", e.Reason, "before", e.Before.String(), "after", e.After.String(), "slept", e.Slept)
	why := "network change (" + string(e.Reason) + ")"
	for _, c := range n.relays {
		c.Rebind(why)
	}
	mapping := n.hasPortMapping()
	if n.direct != nil {
		if mapping {
			// The mapping was made on the gateway of the network left
			// behind: the new sessions must not offer it.
			n.direct.SetMapped(netip.AddrPort{}, netip.AddrPort{})
		}
		if err := n.direct.Restart(string(e.Reason)); err != nil {
			n.log.Warn("direct path after the network change", "err", err)
		}
	}
	n.announce()
	if mapping {
		n.remapPort()
	}
}

func (n *Node) hasPortMapping() bool { return n.portMapper() != nil }

// portMapper is the current port mapper, nil if none.
func (n *Node) portMapper() *portmap.Mapper {
	n.pmMu.Lock()
	defer n.pmMu.Unlock()
	return n.portmap
}

// remapPort replaces the port mapper, so the new network's gateway is found
// and asked. It runs last in onNetChange: removing the old mapping waits
// up to portmap's close timeout for a gateway that is likely out of reach,
// so that happens outside the lock status reads under.
func (n *Node) remapPort() {
	n.pmMu.Lock()
	old := n.portmap
	n.portmap = nil
	n.pmMu.Unlock()
	if old == nil {
		return
	}
	old.Close()
	n.pmMu.Lock()
	defer n.pmMu.Unlock()
	if !n.pmClosed {
		n.startPortMapping()
	}
}

// closePortMapping stops the port mapper for good (Node.Close).
func (n *Node) closePortMapping() {
	n.pmMu.Lock()
	pm := n.portmap
	n.portmap, n.pmClosed = nil, true
	n.pmMu.Unlock()
	if pm != nil {
		pm.Close()
	}
}
