package direct

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

// Static paths. Without a relay there is nobody to carry ICE signaling, and
// on a LAN or towards a forwarded port nothing needs punching: the overlay
// knows a member's address (configured, or the source of the member's
// sealed announcement) and says so with SetStatic. A static path is used
// whenever ICE has no live path of its own.
//
// Liveness differs from ICE's on purpose. An ICE path is probed every
// KeepaliveInterval and dropped after LossTimeout of silence, because a
// relay is there to fall back to. A static path is the only path, and
// WireGuard must be able to send its first handshake before the peer has
// sent anything: so it is usable within StaticHold of the last
// confirmation, by SetStatic (a configured address) or by authenticated
// traffic from its address (Heard, path checks: pathcheck.go), which every
// announcement renews. Packets that merely arrive from the address do not
// count: anyone can send WireGuard- or STUN-shaped datagrams from any
// address.

// SetStatic makes addr the static path to peer, adding the peer (as AddPeer
// would) if it is new. Calling it again with the same address confirms the
// path (see StaticHold); with another address it moves the peer there:
// WireGuard packets from the old address are no longer attributed to the
// peer. addr must be a unicast address with a port (ValidRemote) of a
// family the socket reaches (socket.go). It is for
// addresses the caller trusts (configured ones); what the network says
// goes through Heard, which moves a path only on proof.
func (t *Transport) SetStatic(key nodekey.Public, addr netip.AddrPort) error {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !ValidRemote(addr) {
		return fmt.Errorf("direct: static path to %s: %s is not a unicast address with a port", key.ShortString(), addr)
	}
	if !t.fam.has(addr.Addr()) {
		return fmt.Errorf("direct: static path to %s: %s: this node's direct socket (%s) does not reach that address family", key.ShortString(), addr, t.local)
	}
	if key == t.self {
		return fmt.Errorf("direct: static path to %s: that is this node's own key", key.ShortString())
	}
	if t.excluded(addr.Addr()) {
		return fmt.Errorf("direct: static path to %s: %s is inside the mesh's own prefixes", key.ShortString(), addr)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	t.setStaticLocked(t.addPeerLocked(key), addr, t.now())
	return nil
}

// setStaticLocked makes addr p's static path, confirmed at now. t.mu must
// be held.
func (t *Transport) setStaticLocked(p *peer, addr netip.AddrPort, now int64) {
	cur := p.static.Load()
	if cur != nil && cur.addr == addr {
		cur.confirmed.Store(now)
		return
	}
	sp := &directPath{addr: addr, udpAddr: net.UDPAddrFromAddrPort(addr), static: true, since: time.Now()}
	sp.confirmed.Store(now)
	p.static.Store(sp)
	var old netip.AddrPort
	if cur != nil {
		old = cur.addr
		p.log.Info("direct: peer moved", "from", old.String(), "to", addr.String())
	} else {
		p.log.Debug("direct: static path", "remote", addr.String())
	}
	t.setAddrLocked(addr, p, old)
}

// StaticAddr returns the peer's static address and whether the path is
// usable now (see StaticHold). ok is false when the peer has none.
func (t *Transport) StaticAddr(peer nodekey.Public) (addr netip.AddrPort, usable, ok bool) {
	p := t.peer(peer)
	if p == nil {
		return netip.AddrPort{}, false, false
	}
	sp := p.static.Load()
	if sp == nil {
		return netip.AddrPort{}, false, false
	}
	return sp.addr, sp.usable(t.now()), true
}

// usable reports whether a static path may carry packets at now: only
// authenticated traffic confirms one (SetStatic, or see pathcheck.go);
// WireGuard and STUN datagrams from its address do not.
func (dp *directPath) usable(now int64) bool {
	return now-dp.confirmed.Load() <= int64(StaticHold)
}

// staticInfo describes a peer's static path for PathInfo.
func (p *peer) staticInfo(now int64) (PathInfo, bool) {
	sp := p.static.Load()
	if sp == nil {
		return PathInfo{}, false
	}
	if !sp.usable(now) {
		return PathInfo{State: StateLost, Static: true, Since: sp.since}, true
	}
	return PathInfo{State: StateDirect, Remote: sp.addr, Static: true, Since: sp.since}, true
}

// ClearStatic forgets peer's static path and its pending path checks, if
// it has any; ICE's path, if any, stays. WireGuard packets from the old
// address are no longer attributed to the peer unless ICE's path uses it.
// The overlay's auto mode calls it when a relay reaches a member again, so
// a path found without a relay never outlives the need for it.
func (t *Transport) ClearStatic(key nodekey.Public) {
	p := t.peer(key)
	if p == nil {
		return
	}
	p.checkMu.Lock()
	p.checks = nil
	p.checkMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.peer(key) != p {
		return // removed meanwhile
	}
	if sp := p.static.Swap(nil); sp != nil {
		t.setAddrLocked(netip.AddrPort{}, p, sp.addr)
		p.log.Debug("direct: static path dropped", "remote", sp.addr.String())
	}
}
