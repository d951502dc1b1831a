package filter

import (
	"encoding/binary"
	"net/netip"
)

// Test packets. The filter checks no checksums (wireguard-go's AEAD has
// authenticated the packet; the stack checks the rest), so these leave
// them zero.

// TCP flags.
const (
	flagSYN = 0x02
	flagACK = 0x10
)

type pkt struct {
	src, dst     string
	proto        uint8
	sport, dport uint16
	flags        byte   // TCP
	icmpType     uint8  // ICMP, ICMPv6
	id           uint16 // ICMP echo identifier
	quote        []byte // ICMP error: the quoted packet
	fragOffset   uint16 // in 8-byte units; nonzero: a later fragment
}

func (p pkt) bytes() []byte {
	src, dst := netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	var l4 []byte
	switch p.proto {
	case protoTCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		l4[12] = 5 << 4
		l4[13] = p.flags
	case protoUDP:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint16(l4[4:], 8)
	case protoICMP, protoICMPv6:
		l4 = make([]byte, 8)
		l4[0] = p.icmpType
		binary.BigEndian.PutUint16(l4[4:], p.id)
		l4 = append(l4, p.quote...)
	default:
		l4 = make([]byte, 8)
	}
	if p.fragOffset != 0 {
		l4 = l4[:8]
	}
	if src.Is4() {
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(h[6:], p.fragOffset)
		h[8] = 64
		h[9] = p.proto
		copy(h[12:], src.AsSlice())
		copy(h[16:], dst.AsSlice())
		return append(h, l4...)
	}
	h := make([]byte, 40)
	h[0] = 0x60
	next := p.proto
	if p.fragOffset != 0 {
		frag := make([]byte, 8)
		frag[0] = p.proto
		binary.BigEndian.PutUint16(frag[2:], p.fragOffset<<3)
		l4 = append(frag, l4...)
		next = ext6Fragment
	}
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6] = next
	h[7] = 64
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return append(h, l4...)
}

// reply swaps a packet's addresses and ports.
func (p pkt) reply(flags byte) pkt {
	p.src, p.dst, p.sport, p.dport, p.flags = p.dst, p.src, p.dport, p.sport, flags
	return p
}
