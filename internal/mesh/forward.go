package mesh

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Forwarded announcements (KindForward, docs/protocol.md 2.10). In swarm
// mode a member that meets a newcomer tells it of the other members, and
// them of it, so that one DHT hit meets the whole mesh. A forward carries
// the other member's own sealed announcement, byte for byte, and the
// address the forwarder hears it from (its NAT mapping, which its
// candidates cannot name). The inner announcement keeps its sender's
// signature and timestamp: a forwarder can pass on only what the member
// really sealed, recently (the receiver checks the inner timestamp against
// MaxClockSkew), never forge or change it.

// forwardFixedLen is IPv4 (4), port (2), inner length (2).
const forwardFixedLen = 4 + 2 + 2

// MaxForwardedLen is the largest inner sealed message a forward carries:
// what fits in one sealed message around it.
const MaxForwardedLen = MaxSealed - MinSealed - forwardFixedLen

// Forward is the body of KindForward.
type Forward struct {
	// Addr is where the forwarder hears the member: the source address of
	// the member's announcements on its direct socket. IPv4.
	Addr netip.AddrPort
	// Sealed is the member's sealed announcement as it sealed it; open it
	// with Open and check its kind and time before acting on it.
	Sealed []byte
}

// appendForward writes: IPv4 (4) | port (2) | inner length (2) | inner
// sealed message. Nothing follows in v2; receivers skip anything that does.
func appendForward(b []byte, f *Forward) ([]byte, error) {
	if !f.Addr.Addr().Unmap().Is4() || f.Addr.Port() == 0 {
		return nil, fmt.Errorf("mesh: forward: address %v: want IPv4 and a port", f.Addr)
	}
	if n := len(f.Sealed); n < MinSealed || n > MaxForwardedLen || f.Sealed[0] != SealedHeader {
		return nil, fmt.Errorf("mesh: forward: %d bytes inside, want a sealed message of %d to %d bytes", n, MinSealed, MaxForwardedLen)
	}
	ip := f.Addr.Addr().Unmap().As4()
	b = append(b, ip[:]...)
	b = binary.BigEndian.AppendUint16(b, f.Addr.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.Sealed)))
	return append(b, f.Sealed...), nil
}

func parseForward(b []byte) (Forward, error) {
	if len(b) < forwardFixedLen {
		return Forward{}, fmt.Errorf("%w: forward: %d bytes, need at least %d", ErrMalformed, len(b), forwardFixedLen)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[0:4])), binary.BigEndian.Uint16(b[4:6]))
	n := int(binary.BigEndian.Uint16(b[6:8]))
	b = b[forwardFixedLen:]
	switch {
	case addr.Port() == 0:
		return Forward{}, fmt.Errorf("%w: forward: port 0", ErrMalformed)
	case n < MinSealed || n > len(b) || b[0] != SealedHeader:
		return Forward{}, fmt.Errorf("%w: forward: inner message of %d bytes (%d present), want a sealed message", ErrMalformed, n, len(b))
	}
	return Forward{Addr: addr, Sealed: append([]byte(nil), b[:n]...)}, nil
}
