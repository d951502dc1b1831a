package overlay

import (
	"context"

	"github.com/plures/plurenet/netmon"
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
	if n.direct != nil {
		if err := n.direct.Restart(string(e.Reason)); err != nil {
			n.log.Warn("direct path after the network change", "err", err)
		}
	}
	n.announce()
}
