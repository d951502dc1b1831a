package overlay

import (
	"context"
	"net/netip"

	"golang.zx2c4.com/wireguard/device"

	"github.com/plures/plurenet/internal/nodekey"
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
// After a wake from sleep the sessions' keys are renewed at once too
// (rehandshake).
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
	if e.Reason == netmon.ReasonResume {
		n.rehandshake()
	}
	n.announce()
	if mapping {
		n.remapPort()
	}
}

// rehandshake starts a fresh WireGuard handshake with every member now.
// It is what a wake from sleep needs: wireguard-go times its sessions on
// the monotonic clock, which stops while the host sleeps, so to this node
// its keys look as young as when it fell asleep, while a member that stayed
// up has aged them past RejectAfterTime and drops what they seal. Left
// alone, this node would send into that silence until WireGuard's
// "no reply after data" timer (15 s) or its rekey timer (120 s) fired.
// Expiring the current keys (as changing the private key does) makes
// everything sent from now on wait for the new session rather than go out
// under the stale one, and lifts wireguard-go's 5 s spacing of initiations;
// the initiation then goes out over whatever path reaches the member, and
// the Bind sends it again when a path appears or changes (firstcontact.go).
func (n *Node) rehandshake() {
	n.mu.Lock()
	keys := make([]nodekey.Public, 0, len(n.configured))
	for k := range n.configured {
		keys = append(keys, k)
	}
	n.mu.Unlock()
	started := 0
	for _, k := range keys {
		p := n.dev.LookupPeer(device.NoisePublicKey(k))
		if p == nil {
			continue // removed meanwhile
		}
		p.ExpireCurrentKeypairs()
		if err := p.SendHandshakeInitiation(false); err != nil {
			n.log.Debug("handshake after wake", "peer", k.ShortString(), "err", err)
			continue
		}
		started++
	}
	n.log.Info("woke from sleep: renewing WireGuard sessions", "members", len(keys), "sent", started)
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
