package overlay

import (
	"net/netip"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/owner"
	"github.com/plures/plurenet/tun/filter"
)

// accessRules is one snapshot of what the access filter (tun/filter)
// asks: the owner's policy, this node as the destination, and the members
// by overlay address. A packet's source address names its member because
// WireGuard admits from each peer only its AllowedIPs, the member's
// overlay addresses (peers.go). A new snapshot replaces the filter's on
// every membership or policy change; the filter reads it without a lock.
type accessRules struct {
	policy  *owner.Policy
	self    owner.Member
	members map[netip.Addr]accessMember
}

type accessMember struct {
	m      owner.Member
	denied *atomic.Uint64
}

// Allows implements filter.Policy.
func (r *accessRules) Allows(src netip.Addr, proto uint8, port uint16) bool {
	am, ok := r.members[src]
	return ok && r.policy.Allows(am.m, r.self, proto, port)
}

// Denied implements filter.Policy.
func (r *accessRules) Denied(src netip.Addr) {
	if am, ok := r.members[src]; ok {
		am.denied.Add(1)
	}
}

// wrapFilter puts the access filter between WireGuard and the adapter, in
// an owned mesh only: an open mesh has no policy.
func (n *Node) wrapFilter(dev tun.Device) tun.Device {
	if n.own == nil {
		return dev
	}
	n.filter = filter.New(dev, n.log.With("component", "access"))
	n.updateAccess()
	return n.filter
}

// updateAccess gives the filter the current policy and members. It takes
// n.own.mu, so it runs with no other lock of the node held.
func (n *Node) updateAccess() {
	s := n.own
	if s == nil || n.filter == nil {
		return
	}
	list := n.members.List()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enforced = s.docs[owner.KindPolicy].ver
	if s.policy == nil {
		n.filter.SetPolicy(nil)
		return
	}
	r := &accessRules{
		policy:  s.policy,
		self:    owner.Member{Name: s.self.Grant.Name, Tags: s.self.Grant.Tags},
		members: make(map[netip.Addr]accessMember, 2*len(list)),
	}
	in := make(map[nodekey.Public]bool, len(list))
	for _, m := range list {
		c, ok := s.certs[m.Key]
		if !ok {
			continue // not certified: no peer either, but never allowed
		}
		in[m.Key] = true
		d := s.denied[m.Key]
		if d == nil {
			d = new(atomic.Uint64)
			s.denied[m.Key] = d
		}
		am := accessMember{m: owner.Member{Name: c.Grant.Name, Tags: c.Grant.Tags}, denied: d}
		for _, a := range []netip.Addr{m.V4, m.V6} {
			if a.IsValid() {
				r.members[a] = am
			}
		}
	}
	// Counts of members that left go with them: the map stays as large
	// as the membership.
	for k := range s.denied {
		if !in[k] {
			delete(s.denied, k)
		}
	}
	n.filter.SetPolicy(r)
}
