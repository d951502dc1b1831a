package kernel

import (
	"encoding/binary"
	"net/netip"
)

// Test packets and addresses for every OS's tests (the filter's unit
// tests run everywhere; the Linux lab tests use them too).

// tunOffset is the headroom wireguard-go's device leaves before each packet
// (its transport header); the TUN needs at least 10 bytes for the virtio
// header when offloads are on.
const tunOffset = 16

var (
	nodeV4 = netip.MustParsePrefix("100.64.1.2/10")
	nodeV6 = netip.MustParsePrefix("fd7a:115c:a1e0::1:2/48")
	peerV4 = netip.MustParseAddr("100.64.9.9")
	peerV6 = netip.MustParseAddr("fd7a:115c:a1e0::9:9")
)

// udpPacket builds an IPv4 or IPv6 UDP packet with correct checksums,
// preceded by headroom bytes of zeroes.
func udpPacket(headroom int, src, dst netip.AddrPort, payload []byte) []byte {
	udpLen := 8 + len(payload)
	var ip []byte
	if src.Addr().Is4() {
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
		ip[8] = 64 // TTL
		ip[9] = 17 // UDP
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^sum16(0, ip))
	} else {
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
		ip[6] = 17 // next header: UDP
		ip[7] = 64 // hop limit
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
	}
	udp := make([]byte, udpLen)
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	copy(udp[8:], payload)

	// Pseudo-header (RFC 768 / RFC 8200 §8.1): addresses, protocol, length.
	pseudo := uint32(sum16(0, src.Addr().AsSlice())) + uint32(sum16(0, dst.Addr().AsSlice()))
	pseudo += 17 + uint32(udpLen)
	c := ^sum16(pseudo, udp)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)

	pkt := make([]byte, headroom, headroom+len(ip)+udpLen)
	pkt = append(pkt, ip...)
	return append(pkt, udp...)
}

// sum16 adds b as big-endian 16-bit words to the one's-complement sum acc
// and folds it.
func sum16(acc uint32, b []byte) uint16 {
	for len(b) >= 2 {
		acc += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

// parsedUDP is the part of a UDP packet the tests check.
type parsedUDP struct {
	src, dst netip.AddrPort
	payload  []byte
}

// parseUDP decodes an IPv4 or IPv6 (no extension headers) UDP packet.
func parseUDP(pkt []byte) (parsedUDP, bool) {
	if len(pkt) < 1 {
		return parsedUDP{}, false
	}
	var src, dst netip.Addr
	var udp []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 || pkt[9] != 17 {
			return parsedUDP{}, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || len(pkt) < ihl+8 {
			return parsedUDP{}, false
		}
		src = netip.AddrFrom4([4]byte(pkt[12:16]))
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		udp = pkt[ihl:]
	case 6:
		if len(pkt) < 48 || pkt[6] != 17 {
			return parsedUDP{}, false
		}
		src = netip.AddrFrom16([16]byte(pkt[8:24]))
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		udp = pkt[40:]
	default:
		return parsedUDP{}, false
	}
	n := int(binary.BigEndian.Uint16(udp[4:]))
	if n < 8 || n > len(udp) {
		return parsedUDP{}, false
	}
	return parsedUDP{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:])),
		payload: udp[8:n],
	}, true
}
