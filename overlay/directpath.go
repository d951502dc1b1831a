package overlay

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/portmap"
	"github.com/plures/plurenet/transports/direct"
)

// startDirect creates the direct UDP transport. Its ICE signaling travels as
// sealed mesh messages over the relays. With the DHT on, the socket also
// takes sealed mesh messages and path checks, as in swarm mode, and runs
// the DHT node (autodht.go).
func (n *Node) startDirect() error {
	cfg := direct.Config{
		PrivateKey:      n.priv,
		ListenPort:      n.cfg.ListenPort,
		ListenAddr:      n.cfg.ListenAddr,
		STUNServers:     n.cfg.STUNServers,
		ExcludePrefixes: n.meshPrefixes(),
		Signal:          n.sendSignal,
		Deliver:         n.bind.Deliver,
		OnPathChange:    n.pathChanged,
		Logger:          n.log,
	}
	if n.cfg.DHT {
		cfg.OnMesh, cfg.SealSignal = n.onDirectMesh, n.sealSignal
	}
	d, err := direct.New(cfg)
	if err != nil {
		return fmt.Errorf("direct path: %w", err)
	}
	n.direct = d
	n.startPortMapping()
	if n.cfg.DHT {
		return n.startAutoDHT()
	}
	return nil
}

// startPortMapping asks the gateway to forward the direct socket's port
// (package portmap) and hands the mapped address to the direct transport,
// which offers it to members as a candidate. Without a gateway that maps,
// it keeps looking now and then and changes nothing.
func (n *Node) startPortMapping() {
	local := n.direct.LocalAddr()
	if n.cfg.NoPortMapping || local.Addr().IsLoopback() {
		return
	}
	d := n.direct
	m, err := portmap.New(portmap.Config{
		Port:      local.Port(),
		Local:     local.Addr(),
		Protocols: n.cfg.PortMappingProtocols,
		OnChange: func(mp portmap.Mapping) {
			d.SetMapped(mp.External, mp.Internal)
		},
		Logger: n.log,
	})
	if err != nil {
		n.log.Warn("port mapping off", "err", err)
		return
	}
	n.portmap = m
}

// meshPrefixes are the overlay's own prefixes. The direct path must never
// run over them: with a kernel TUN they are local interface addresses.
func (n *Node) meshPrefixes() []netip.Prefix {
	return []netip.Prefix{n.cfg.V4Prefix, mesh.ULAPrefix(n.cfg.TopicID)}
}

// errNoRelayToPeer is returned when no relay connection reaches a peer.
var errNoRelayToPeer = errors.New("no relay reaches the peer")

// sendSignal seals an ICE signal for peer and sends it over the first
// relay that reaches it.
func (n *Node) sendSignal(peer nodekey.Public, msg []byte) error {
	b, ok := n.seal(mesh.Message{Kind: mesh.KindSignal, From: n.pub, Signal: msg})
	if !ok {
		return errors.New("sealing signal failed")
	}
	for _, c := range n.relays {
		if c.Reachable(peer) {
			return c.Send(peer, b)
		}
	}
	return errNoRelayToPeer
}
