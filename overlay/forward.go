package overlay

import (
	"net/netip"
	"sync"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports/direct"
)

// Forwarded announcements (docs/protocol.md 2.10). When a member first
// announces itself to this node's direct socket, this node introduces it to
// the members it has direct paths to, and them to it: to each side it
// sends a KindForward carrying the other's own sealed announcement and the
// address its announcements come from. Each side then sends its own
// announcement to that address, so both open their NATs toward each other
// (the same simultaneous open as for a DHT hit), and the path is learned
// only from the authenticated exchange that follows. So one DHT hit (or
// one static peer, or one LAN) is enough to meet the whole mesh.
//
// Who can make us do what: only a member (the forward is sealed and
// signed) can introduce, and only a member's genuine, recent announcement
// (the inner one opens with the mesh key, carries its sender's signature
// and a time within MaxClockSkew): nothing forwarded enters the membership
// table or becomes a path. What a member could make us do is send one
// announcement per introduced key per AnnounceInterval to an address it
// names: bounded, and the same it could do by announcing from there.

// Limits of forwarding.
const (
	// maxFanout bounds the members introduced to a newcomer, and the
	// members a newcomer is introduced to, per join: each costs two
	// datagrams. Members met this way introduce further members in turn
	// when they meet, so a larger mesh still meets in a few rounds.
	maxFanout = 16
	// introduceHold is how often at most this node acts on introductions
	// of one member: one announcement to its address per hold.
	introduceHold = mesh.AnnounceInterval
	// maxIntroduced bounds the introductions remembered (for the hold and
	// for status).
	maxIntroduced = 256
)

// How a member was first met, in status (members[].via).
const (
	viaDHT     = "dht"
	viaForward = "forward"
)

// heard is a member's last announcement on the direct socket.
type heard struct {
	sealed []byte
	addr   netip.AddrPort
	at     time.Time
}

// intro is an introduction this node acted on.
type intro struct {
	addr netip.AddrPort
	name string
	by   nodekey.Public
	at   time.Time
}

// forwarder is the forwarding state of a swarm-mode node.
type forwarder struct {
	mu         sync.Mutex
	last       map[nodekey.Public]heard
	introduced map[nodekey.Public]intro
	via        map[nodekey.Public]string
}

func newForwarder() *forwarder {
	return &forwarder{last: map[nodekey.Public]heard{}, introduced: map[nodekey.Public]intro{}, via: map[nodekey.Public]string{}}
}

// heardFrom records a member's announcement that came to the direct
// socket from addr, and how the member was met if it is new. It reports
// whether the member is new here or speaks from a new address: the moment
// to introduce it (introduce).
func (f *forwarder) heardFrom(key nodekey.Public, sealed []byte, addr netip.AddrPort, via string, members *mesh.Members) (moved bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	prev, ok := f.last[key]
	if !ok && len(f.last) >= maxMet {
		f.pruneLocked(members)
		if len(f.last) >= maxMet {
			return false
		}
	}
	f.last[key] = heard{sealed: append([]byte(nil), sealed...), addr: addr, at: time.Now()}
	if _, ok := f.via[key]; !ok {
		if _, introduced := f.introduced[key]; introduced {
			via = viaForward
		}
		f.via[key] = via
	}
	return !ok || prev.addr != addr
}

// pruneLocked forgets what it holds of keys no longer members.
func (f *forwarder) pruneLocked(members *mesh.Members) {
	live := map[nodekey.Public]bool{}
	for _, m := range members.List() {
		live[m.Key] = true
	}
	for k := range f.last {
		if !live[k] {
			delete(f.last, k)
		}
	}
	for k := range f.via {
		if !live[k] {
			delete(f.via, k)
		}
	}
}

// howMet is how a member was first met ("" if unknown).
func (f *forwarder) howMet(key nodekey.Public) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.via[key]
}

// introduce tells a newcomer of the members this node hears directly, and
// them of the newcomer.
func (n *Node) introduce(newcomer nodekey.Public) {
	f := n.swarm.fwd
	live := map[nodekey.Public]bool{}
	for _, m := range n.members.List() {
		live[m.Key] = true
	}
	now := time.Now()
	f.mu.Lock()
	nc, ok := f.last[newcomer]
	var others []heard
	for k, h := range f.last {
		if len(others) == maxFanout {
			break
		}
		if k != newcomer && live[k] && now.Sub(h.at) < mesh.MemberTimeout {
			others = append(others, h)
		}
	}
	f.mu.Unlock()
	if !ok {
		return
	}
	for _, o := range others {
		n.sendForward(nc.addr, o)
		n.sendForward(o.addr, nc)
	}
	if len(others) > 0 {
		n.log.Debug("introduced a newcomer", "peer", newcomer.ShortString(), "to", len(others))
	}
}

func (n *Node) sendForward(to netip.AddrPort, about heard) {
	b, ok := n.seal(mesh.Message{Kind: mesh.KindForward, From: n.pub, Forward: mesh.Forward{Addr: about.addr, Sealed: about.sealed}})
	if ok {
		n.sendMeshTo(to, b)
	}
}

// handleForward acts on an introduction by member by: if the introduced
// member's announcement is genuine and recent and this node has no usable
// path to it, it announces itself to the member's address.
func (n *Node) handleForward(c carrier, by nodekey.Public, fw mesh.Forward) {
	if n.swarm == nil || c.relay != nil {
		return // relays reach every member already
	}
	now := time.Now()
	inner, err := n.keys.open(fw.Sealed, now)
	switch {
	case err != nil:
		n.log.Info("rejected a forwarded announcement", "from", by.ShortString(), "err", err)
		return
	case inner.Kind != mesh.KindAnnounce || inner.From == n.pub || inner.From == by:
		return
	case inner.Time.Sub(now) > mesh.MaxClockSkew || now.Sub(inner.Time) > mesh.MaxClockSkew:
		n.log.Debug("stale forwarded announcement", "from", by.ShortString(), "peer", inner.From.ShortString())
		return
	case !direct.ValidRemote(fw.Addr):
		return
	}
	if n.direct.Reachable(inner.From) || n.relayReaches(inner.From) {
		return
	}
	f := n.swarm.fwd
	f.mu.Lock()
	if prev, ok := f.introduced[inner.From]; ok && now.Sub(prev.at) < introduceHold {
		f.mu.Unlock()
		return
	}
	if len(f.introduced) >= maxIntroduced {
		for k, in := range f.introduced {
			if now.Sub(in.at) > unansweredAfter*4 {
				delete(f.introduced, k)
			}
		}
		if len(f.introduced) >= maxIntroduced {
			f.mu.Unlock()
			return
		}
	}
	f.introduced[inner.From] = intro{addr: fw.Addr, name: inner.Announce.Name, by: by, at: now}
	f.mu.Unlock()
	n.log.Debug("introduced to a member", "peer", inner.From.ShortString(), "name", inner.Announce.Name, "by", by.ShortString(), "addr", fw.Addr.String())
	if b, ok := n.seal(n.selfAnnounce()); ok {
		n.sendMeshTo(fw.Addr, b)
	}
}

// unreached lists introductions that never led to a member.
func (f *forwarder) unreached(now time.Time, members *mesh.Members) []Unreached {
	live := map[nodekey.Public]bool{}
	for _, m := range members.List() {
		live[m.Key] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Unreached
	for k, in := range f.introduced {
		if !live[k] && now.Sub(in.at) > unansweredAfter {
			out = append(out, Unreached{Addr: in.addr.String(), Via: viaForward, Member: in.name + " " + k.ShortString(), Since: in.at, Reason: reasonIntroSilent})
		}
	}
	return out
}

// heardDirect records a member's announcement that came unicast to the
// direct socket (swarm mode), for forwarding and for status. It reports
// whether the member should be introduced: its first unicast announcement
// here, or one from a new address. That is not the same as the member
// joining: a member met on the LAN group joins by multicast, and its
// first unicast announcement (the address others can reach it at) comes
// after.
func (n *Node) heardDirect(c carrier, from nodekey.Public, sealed []byte) bool {
	if n.swarm == nil || c.multicast || c.relay != nil {
		return false
	}
	via := c.name
	if n.dhtAnswered(c.src, from) {
		via = viaDHT
	}
	return n.swarm.fwd.heardFrom(from, sealed, c.src, via, n.members)
}
