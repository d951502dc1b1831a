package netstack

import (
	"errors"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Outbound segmentation. The link endpoint tells gVisor it offloads TCP
// segmentation (host GSO), so gVisor's TCP sender builds, routes and queues
// one packet of up to gsoMaxSize bytes where it would otherwise build ~50
// of MSS size, and leaves the TCP checksum to the "hardware". The endpoint
// then cuts such a packet into MSS-sized IP packets straight into the WireGuard
// device's buffers, as a NIC would: the per-segment work of gVisor's sender
// (segment bookkeeping, route lookup, IP and TCP header building, queueing)
// is done once per 64 KiB instead of once per 1240 bytes.

// gsoMaxSize is the largest packet gVisor may hand over for segmentation:
// the largest IP packet.
const gsoMaxSize = 1<<16 - 1

// maxGSOHeaders bounds the IP and TCP headers of a packet to segment: 60
// bytes of IPv4 header or 40 of IPv6 with room for gVisor's own extension
// header, and 60 of TCP.
const maxGSOHeaders = 160

var errBadGSO = errors.New("packet for segmentation has unexpected headers")

// cursor reads a PacketBuffer's bytes in order without flattening it.
type cursor struct {
	v   *buffer.View
	off int
}

func newCursor(pkt *stack.PacketBuffer) cursor {
	vl, off := pkt.AsViewList()
	v := vl.Front()
	for v != nil && off >= v.Size() {
		off -= v.Size()
		v = v.Next()
	}
	return cursor{v: v, off: off}
}

// read copies the next len(dst) bytes into dst and says how many there were.
func (c *cursor) read(dst []byte) int {
	n := 0
	for n < len(dst) && c.v != nil {
		k := copy(dst[n:], c.v.AsSlice()[c.off:])
		n += k
		c.off += k
		if c.off == c.v.Size() {
			c.v, c.off = c.v.Next(), 0
		}
	}
	return n
}

// splitter cuts one outbound TCP packet marked for host GSO into segments of
// at most MSS payload bytes, each a complete IP packet with its own length,
// IPv4 identification, sequence number, flags and checksums. A packet whose
// payload fits one segment still goes through it: gVisor left its TCP
// checksum to us.
type splitter struct {
	pkt     *stack.PacketBuffer // nil when idle
	cur     cursor              // at the next payload byte
	hdr     [maxGSOHeaders]byte // the IP and TCP headers as gVisor built them
	l3, l4  int                 // IP and TCP header lengths
	v6      bool
	mss     int
	payload int // payload bytes in pkt
	done    int // payload bytes already emitted
	seg     int // segments already emitted
}

// start takes over pkt (and its reference) for splitting.
func (s *splitter) start(pkt *stack.PacketBuffer) error {
	l3 := len(pkt.NetworkHeader().Slice())
	l4 := len(pkt.TransportHeader().Slice())
	mss := int(pkt.GSOOptions.MSS)
	if l3+l4 > maxGSOHeaders || l4 < header.TCPMinimumSize || mss <= 0 || pkt.TransportProtocolNumber != header.TCPProtocolNumber {
		return errBadGSO
	}
	var v6 bool
	switch pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		if l3 < header.IPv4MinimumSize {
			return errBadGSO
		}
	case header.IPv6ProtocolNumber:
		if l3 < header.IPv6MinimumSize {
			return errBadGSO
		}
		v6 = true
	default:
		return errBadGSO
	}
	cur := newCursor(pkt)
	if cur.read(s.hdr[:l3+l4]) != l3+l4 {
		return errBadGSO
	}
	s.pkt, s.cur, s.l3, s.l4, s.v6, s.mss = pkt, cur, l3, l4, v6, mss
	s.payload, s.done, s.seg = pkt.Size()-l3-l4, 0, 0
	return nil
}

// next writes the next segment into dst and returns its size, or 0 when dst
// is too small for it (the caller drops the packet).
func (s *splitter) next(dst []byte) int {
	n := min(s.mss, s.payload-s.done)
	size := s.l3 + s.l4 + n
	if size > len(dst) {
		return 0
	}
	copy(dst, s.hdr[:s.l3+s.l4])
	s.cur.read(dst[s.l3+s.l4 : size])

	ip := dst[:s.l3]
	var src, dstAddr tcpip.Address
	if s.v6 {
		h := header.IPv6(ip)
		h.SetPayloadLength(uint16(size - header.IPv6MinimumSize))
		src, dstAddr = h.SourceAddress(), h.DestinationAddress()
	} else {
		h := header.IPv4(ip)
		h.SetTotalLength(uint16(size))
		h.SetID(h.ID() + uint16(s.seg))
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		src, dstAddr = h.SourceAddress(), h.DestinationAddress()
	}

	tcp := header.TCP(dst[s.l3 : s.l3+s.l4])
	tcp.SetSequenceNumber(tcp.SequenceNumber() + uint32(s.done))
	flags := tcp.Flags()
	if s.done+n < s.payload {
		// FIN and PSH belong to the last segment only.
		flags &^= header.TCPFlagFin | header.TCPFlagPsh
	}
	if s.seg > 0 {
		// CWR belongs to the first segment only (RFC 3168 6.1.2).
		flags &^= header.TCPFlagCwr
	}
	tcp.SetFlags(uint8(flags))
	tcp.SetChecksum(0)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dstAddr, uint16(s.l4+n))
	tcp.SetChecksum(^checksum.Checksum(dst[s.l3:size], xsum))

	s.done += n
	s.seg++
	return size
}

// more says whether segments remain; a packet without payload (an ACK) is
// one segment.
func (s *splitter) more() bool { return s.pkt != nil && (s.seg == 0 || s.done < s.payload) }

// finish releases the packet.
func (s *splitter) finish() {
	if s.pkt != nil {
		s.pkt.DecRef()
		s.pkt = nil
	}
}
