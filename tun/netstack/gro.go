package netstack

import (
	"encoding/binary"
	"log/slog"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// Inbound coalescing. The WireGuard device writes decrypted packets in
// batches; consecutive TCP segments of one flow in a batch are merged into
// one large segment (gVisor's GRO) before the stack sees them, so its TCP
// receiver does its per-segment work, and sends its ACKs, once per merge
// instead of once per 1240 bytes. A merged segment's checksum is no longer
// the sender's, so the endpoint verifies checksums itself before merging
// and tells gVisor so (CapabilityRXChecksumOffload).

// groPool holds GRO tables between batches: Write may run on several
// goroutines (wireguard-go writes from one per peer), and a table is a few
// KiB of preallocated entries, too much to build per batch.
var groPool = sync.Pool{New: func() any {
	g := new(gro.GRO)
	g.Init(true)
	return g
}}

// deliverCoalesced checks each packet of a batch (pkts[i][offset:]), drops
// the malformed and those with a bad checksum, passes TCP segments through
// guard (which may zero a small window in place, see window.go; nil skips
// it) with windows below floor bytes, and hands the rest to d through a GRO
// table that is flushed before it returns.
func deliverCoalesced(d stack.NetworkDispatcher, pkts [][]byte, offset int, guard *windowGuard, floor int, logger *slog.Logger) {
	g := groPool.Get().(*gro.GRO)
	g.Dispatcher = d
	for _, b := range pkts {
		if offset > len(b) {
			logger.Debug("netstack: dropped inbound buffer shorter than offset", "len", len(b), "offset", offset)
			continue
		}
		pkt, proto, ok := checkInbound(b[offset:])
		if !ok {
			logger.Debug("netstack: dropped malformed inbound packet", "len", len(b)-offset)
			continue
		}
		if guard != nil {
			guard.inspect(pkt, floor)
		}
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		pb.NetworkProtocolNumber = proto
		pb.RXChecksumValidated = true
		g.Enqueue(pb)
		pb.DecRef()
	}
	g.Flush()
	g.Dispatcher = nil
	groPool.Put(g)
}

// checkInbound validates what gVisor would have validated before trusting
// the link's checksum offload: the IP header (length fields, IPv4 header
// checksum) and the TCP or UDP checksum. It returns the packet trimmed to
// its IP length.
//
// What it cannot check cheaply, it passes on unchecked: the transport
// checksum of IPv4 fragments (known only after reassembly) and of IPv6
// packets with extension headers. Those come from the WireGuard device,
// already authenticated as a member's: corruption on the way is excluded
// by WireGuard's AEAD, and a member that sends a bad checksum can only spoil
// its own traffic, which it could send any way it likes anyway. ICMP
// checksums gVisor checks whatever the link says.
func checkInbound(b []byte) ([]byte, tcpip.NetworkProtocolNumber, bool) {
	switch {
	case len(b) >= header.IPv4MinimumSize && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < header.IPv4MinimumSize || total < ihl || total > len(b) {
			return nil, 0, false
		}
		b = b[:total]
		h := header.IPv4(b)
		if !h.IsChecksumValid() {
			return nil, 0, false
		}
		if h.More() || h.FragmentOffset() != 0 {
			return b, header.IPv4ProtocolNumber, true
		}
		ok := transportChecksumOK(tcpip.TransportProtocolNumber(h.Protocol()), h.SourceAddress(), h.DestinationAddress(), b[ihl:], false)
		return b, header.IPv4ProtocolNumber, ok
	case len(b) >= header.IPv6MinimumSize && b[0]>>4 == 6:
		total := header.IPv6MinimumSize + int(binary.BigEndian.Uint16(b[4:6]))
		if total > len(b) {
			return nil, 0, false
		}
		b = b[:total]
		h := header.IPv6(b)
		// The next header field, not the protocol behind extension headers:
		// l4 starts right after the fixed header, so only a packet without
		// extension headers is checked (the others pass, see above).
		ok := transportChecksumOK(tcpip.TransportProtocolNumber(h.NextHeader()), h.SourceAddress(), h.DestinationAddress(), b[header.IPv6MinimumSize:], true)
		return b, header.IPv6ProtocolNumber, ok
	}
	return nil, 0, false
}

// transportChecksumOK checks a TCP or UDP checksum; other protocols pass.
func transportChecksumOK(proto tcpip.TransportProtocolNumber, src, dst tcpip.Address, l4 []byte, v6 bool) bool {
	switch proto {
	case header.TCPProtocolNumber:
		if len(l4) < header.TCPMinimumSize {
			return false
		}
	case header.UDPProtocolNumber:
		if len(l4) < header.UDPMinimumSize {
			return false
		}
		n := int(header.UDP(l4).Length())
		if n < header.UDPMinimumSize || n > len(l4) {
			return false
		}
		l4 = l4[:n]
		if header.UDP(l4).Checksum() == 0 {
			// No checksum: allowed over IPv4 only (RFC 8200 8.1).
			return !v6
		}
	default:
		return true
	}
	xsum := header.PseudoHeaderChecksum(proto, src, dst, uint16(len(l4)))
	return checksum.Checksum(l4, xsum) == 0xffff
}
