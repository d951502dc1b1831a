package filter

import (
	"encoding/binary"
	"net/netip"
)

// IANA protocol numbers the filter reads.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// IPv6 extension headers walked to find the upper-layer protocol (RFC 8200
// 4.1), and how many are walked at most: a chain longer than this is
// refused rather than walked (an honest packet carries one or two).
const (
	ext6HopByHop = 0
	ext6Routing  = 43
	ext6Fragment = 44
	ext6AH       = 51
	ext6DstOpts  = 60
	maxExt6      = 8
)

// ICMP types the filter tells apart.
const (
	icmp4EchoReply    = 0
	icmp4Unreachable  = 3
	icmp4Echo         = 8
	icmp4TimeExceeded = 11
	icmp4ParamProb    = 12
	icmp6Unreachable  = 1
	icmp6TooBig       = 2
	icmp6TimeExceeded = 3
	icmp6ParamProb    = 4
	icmp6Echo         = 128
	icmp6EchoReply    = 129
)

// packet is what the filter needs of an IP packet. Ports are the
// transport's; for ICMP echo, sport and dport both hold the echo
// identifier (so an echo and its reply have the flow key of a UDP pair).
type packet struct {
	src, dst netip.Addr
	proto    uint8
	// later is a fragment after the first: it has no transport header.
	// It can neither name a port nor change the first fragment's, and is
	// useless to the stack without a first fragment that passed.
	later        bool
	sport, dport uint16
	syn, ack     bool // TCP flags
	icmpType     uint8
	// quoted is the packet an ICMP error quotes (its header and the
	// first 8 bytes of its payload), nil otherwise.
	quoted []byte
}

// isEcho, isEchoReply and isError classify an ICMP packet.
func (p *packet) isEcho() bool {
	return p.proto == protoICMP && p.icmpType == icmp4Echo || p.proto == protoICMPv6 && p.icmpType == icmp6Echo
}

func (p *packet) isEchoReply() bool {
	return p.proto == protoICMP && p.icmpType == icmp4EchoReply || p.proto == protoICMPv6 && p.icmpType == icmp6EchoReply
}

func (p *packet) isError() bool {
	if p.proto == protoICMP {
		return p.icmpType == icmp4Unreachable || p.icmpType == icmp4TimeExceeded || p.icmpType == icmp4ParamProb
	}
	return p.proto == protoICMPv6 && p.icmpType >= icmp6Unreachable && p.icmpType <= icmp6ParamProb
}

// parse reads an IP packet. ok is false for anything that is not a whole
// IPv4 or IPv6 header followed, in a first fragment, by a whole TCP (20),
// UDP (8) or ICMP (8) header: the filter drops those, since a transport
// header split across fragments is how a filter is walked around (RFC
// 1858). quoted relaxes the length checks for the packet an ICMP error
// quotes, which is cut short on purpose: it needs only the ports.
func parse(b []byte, quoted bool) (p packet, ok bool) {
	if len(b) == 0 {
		return p, false
	}
	var payload []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return p, false
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || len(b) < ihl {
			return p, false
		}
		if !quoted {
			if total < ihl || total > len(b) {
				return p, false
			}
			b = b[:total]
		}
		p.src, p.dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		p.proto = b[9]
		if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			p.later = true
			return p, true
		}
		payload = b[ihl:]
	case 6:
		if len(b) < 40 {
			return p, false
		}
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		p.src, p.dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		payload = b[40:]
		if !quoted {
			if plen > len(payload) {
				return p, false
			}
			payload = payload[:plen]
		}
		next := b[6]
		walked := 0
	walk:
		for ; ; walked++ {
			if walked > maxExt6 {
				return p, false
			}
			var n int
			switch next {
			case ext6HopByHop, ext6Routing, ext6DstOpts:
				if len(payload) < 8 {
					return p, false
				}
				n = (int(payload[1]) + 1) * 8
			case ext6AH:
				if len(payload) < 8 {
					return p, false
				}
				n = (int(payload[1]) + 2) * 4
			case ext6Fragment:
				if len(payload) < 8 {
					return p, false
				}
				if binary.BigEndian.Uint16(payload[2:4])>>3 != 0 {
					p.proto, p.later = payload[0], true
					return p, true
				}
				n = 8
			default:
				break walk
			}
			if len(payload) < n {
				return p, false
			}
			next, payload = payload[0], payload[n:]
		}
		p.proto = next
	default:
		return p, false
	}
	switch p.proto {
	case protoTCP:
		if len(payload) < 20 && !(quoted && len(payload) >= 8) {
			return p, false
		}
		p.sport, p.dport = binary.BigEndian.Uint16(payload[0:2]), binary.BigEndian.Uint16(payload[2:4])
		if len(payload) >= 14 {
			p.syn, p.ack = payload[13]&0x02 != 0, payload[13]&0x10 != 0
		}
	case protoUDP:
		if len(payload) < 8 {
			return p, false
		}
		p.sport, p.dport = binary.BigEndian.Uint16(payload[0:2]), binary.BigEndian.Uint16(payload[2:4])
	case protoICMP, protoICMPv6:
		// ICMPv6 is only ICMPv6 over IPv6, ICMP only over IPv4: anything
		// else is no ICMP the stack would act on as such.
		if len(payload) < 8 || (p.proto == protoICMPv6) != p.src.Is6() {
			return p, false
		}
		p.icmpType = payload[0]
		switch {
		case p.isEcho() || p.isEchoReply():
			id := binary.BigEndian.Uint16(payload[4:6])
			p.sport, p.dport = id, id
		case p.isError() && !quoted:
			p.quoted = payload[8:]
		}
	}
	return p, true
}
