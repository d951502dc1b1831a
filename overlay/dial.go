package overlay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/plures/plurenet/internal/mesh"
)

// Resolve maps a member name, this node's own name, a DNS name under the
// mesh suffix (NAME.SUFFIX, as the resolver answers it), or an IP literal
// to an overlay address (the IPv4 one for names).
func (n *Node) Resolve(host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil
	}
	if n.dns != nil {
		if ip, ok, err := n.dns.lookup(host); ok {
			return ip, err
		}
	}
	if host == n.cfg.Name {
		v4, _ := n.Addrs()
		return v4, nil
	}
	var found []netip.Addr
	for _, m := range n.members.List() {
		if m.Name == host {
			found = append(found, m.V4)
		}
	}
	switch len(found) {
	case 0:
		return netip.Addr{}, fmt.Errorf("%w named %q (members: see \"plurenet status\")", ErrNoSuchMember, host)
	case 1:
		return found[0], nil
	}
	return netip.Addr{}, fmt.Errorf("%d members are named %q: use an overlay IP", len(found), host)
}

// MeshPrefixes returns the mesh's overlay prefixes: its IPv4 prefix and its
// IPv6 ULA /48. Every member's overlay address lies in them, and nothing
// else does: a proxy into the mesh reaches these and only these.
func (n *Node) MeshPrefixes() []netip.Prefix {
	return []netip.Prefix{n.cfg.V4Prefix, mesh.ULAPrefix(n.cfg.TopicID)}
}

// Dial connects to address ("host:port", host a member name or overlay IP)
// over the mesh. network is "tcp" or "udp" (or their 4/6 forms).
func (n *Node) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial %s: bad port %q", address, port)
	}
	ip, err := n.Resolve(host)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	return n.adapter.dial(ctx, network, netip.AddrPortFrom(ip, uint16(p)).String())
}

// Listen listens on the overlay. address is ":port" (every overlay address
// of this node) or "ip:port" (one of them). With a kernel TUN adapter the
// sockets are host sockets bound to the overlay addresses only, never the
// host's other interfaces, and a ":port" listener follows this node's IPv4
// when the collision rule moves it; any other address is refused.
func (n *Node) Listen(network, address string) (net.Listener, error) {
	return n.adapter.listen(network, address)
}

// ListenPacket listens for UDP on the overlay. With a kernel TUN adapter
// address must name one of this node's overlay addresses.
func (n *Node) ListenPacket(network, address string) (net.PacketConn, error) {
	return n.adapter.listenPacket(network, address)
}
