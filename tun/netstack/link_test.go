package netstack

import (
	"context"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestReadBatches(t *testing.T) {
	// A lone stack: datagrams it sends stay queued until Read.
	s := newStack(t, addrA4)
	c, err := s.DialContext(context.Background(), "udp", "100.64.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 5
	for i := range sent {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 100)
	}
	sizes := make([]int, len(bufs))
	const offset = 16 // as wireguard-go leaves room for its header
	n, err := s.Read(bufs, sizes, offset)
	if err != nil {
		t.Fatal(err)
	}
	if n != sent {
		t.Fatalf("Read returned %d packets, want all %d queued", n, sent)
	}
	for i := range n {
		pkt := header.IPv4(bufs[i][offset : offset+sizes[i]])
		if !pkt.IsValid(sizes[i]) {
			t.Fatalf("packet %d is not a valid IPv4 packet", i)
		}
		if got := pkt.DestinationAddress(); got != tcpip.AddrFrom4([4]byte{100, 64, 0, 2}) {
			t.Errorf("packet %d to %v", i, got)
		}
		payload := header.UDP(pkt.Payload()).Payload()
		if len(payload) != 1 || payload[0] != byte(i) {
			t.Errorf("packet %d payload %v, want [%d] (order kept)", i, payload, i)
		}
	}
}

func TestWriteMalformedIsDropped(t *testing.T) {
	s := newStack(t, addrA4, addrA6)
	bad := [][]byte{
		{},
		{0x45},           // truncated IPv4
		{0x60, 0, 0},     // truncated IPv6
		make([]byte, 40), // version 0
		append([]byte{0x50}, make([]byte, 40)...), // version 5
		append([]byte{0x45}, make([]byte, 19)...), // zero total length, bad checksum
	}
	n, err := s.Write(bad, 0)
	if err != nil || n != len(bad) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(bad))
	}
	// A buffer shorter than the offset is skipped, not a panic.
	if _, err := s.Write([][]byte{{1, 2}}, 10); err != nil {
		t.Fatal(err)
	}
	// The stack still works: ping it.
	reply := ping(t, s, addrB4, addrA4)
	if reply == nil {
		t.Fatal("no echo reply after malformed input")
	}
}

func TestPing(t *testing.T) {
	for _, tt := range []struct{ from, to netip.Addr }{
		{addrB4, addrA4},
		{addrB6, addrA6},
	} {
		t.Run(tt.to.String(), func(t *testing.T) {
			s := newStack(t, addrA4, addrA6)
			if reply := ping(t, s, tt.from, tt.to); reply == nil {
				t.Fatal("no echo reply")
			}
		})
	}
}

// ping writes one ICMP echo request from -> to into s and returns the reply
// that s sends back, checking its addresses, identifier and payload.
func ping(t testing.TB, s *Stack, from, to netip.Addr) []byte {
	t.Helper()
	const id, seq = 0x1234, 7
	payload := []byte("plurenet ping")
	var pkt []byte
	if to.Is4() {
		icmp := header.ICMPv4(make([]byte, header.ICMPv4MinimumSize+len(payload)))
		icmp.SetType(header.ICMPv4Echo)
		icmp.SetIdent(id)
		icmp.SetSequence(seq)
		copy(icmp.Payload(), payload)
		icmp.SetChecksum(^checksum.Checksum(icmp, 0))
		ip := header.IPv4(make([]byte, header.IPv4MinimumSize))
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(header.IPv4MinimumSize + len(icmp)),
			TTL:         64,
			Protocol:    uint8(header.ICMPv4ProtocolNumber),
			SrcAddr:     tcpip.AddrFrom4(from.As4()),
			DstAddr:     tcpip.AddrFrom4(to.As4()),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		pkt = append([]byte(ip), icmp...)
	} else {
		icmp := header.ICMPv6(make([]byte, header.ICMPv6EchoMinimumSize+len(payload)))
		icmp.SetType(header.ICMPv6EchoRequest)
		icmp.SetIdent(id)
		icmp.SetSequence(seq)
		copy(icmp.Payload(), payload)
		src, dst := tcpip.AddrFrom16(from.As16()), tcpip.AddrFrom16(to.As16())
		icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: icmp, Src: src, Dst: dst,
		}))
		ip := header.IPv6(make([]byte, header.IPv6MinimumSize))
		ip.Encode(&header.IPv6Fields{
			PayloadLength:     uint16(len(icmp)),
			TransportProtocol: header.ICMPv6ProtocolNumber,
			HopLimit:          64,
			SrcAddr:           src,
			DstAddr:           dst,
		})
		pkt = append([]byte(ip), icmp...)
	}
	if _, err := s.Write([][]byte{pkt}, 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	sizes := []int{0}
	// Skip unrelated packets the stack may send meanwhile (a retransmitted
	// SYN-ACK in the fuzz test); the bound keeps a broken stack from
	// looping.
	for range 100 {
		n, err := s.Read([][]byte{buf}, sizes, 0)
		if err != nil || n != 1 {
			t.Fatalf("Read = %d, %v", n, err)
		}
		reply := buf[:sizes[0]]
		if body, ok := echoReply(reply, from, to, id, seq); ok {
			if string(body) != string(payload) {
				t.Fatalf("reply payload %q, want %q", body, payload)
			}
			return reply
		}
	}
	t.Fatal("no echo reply among 100 packets")
	return nil
}

// echoReply returns the payload of reply if it is the echo reply to->from
// with id and seq.
func echoReply(reply []byte, from, to netip.Addr, id, seq uint16) ([]byte, bool) {
	if to.Is4() {
		ip := header.IPv4(reply)
		if !ip.IsValid(len(reply)) || ip.SourceAddress() != tcpip.AddrFrom4(to.As4()) || ip.DestinationAddress() != tcpip.AddrFrom4(from.As4()) || ip.TransportProtocol() != header.ICMPv4ProtocolNumber {
			return nil, false
		}
		icmp := header.ICMPv4(ip.Payload())
		if len(icmp) < header.ICMPv4MinimumSize || icmp.Type() != header.ICMPv4EchoReply || icmp.Ident() != id || icmp.Sequence() != seq {
			return nil, false
		}
		return icmp.Payload(), true
	}
	ip := header.IPv6(reply)
	if !ip.IsValid(len(reply)) || ip.SourceAddress() != tcpip.AddrFrom16(to.As16()) || ip.DestinationAddress() != tcpip.AddrFrom16(from.As16()) || tcpip.TransportProtocolNumber(ip.NextHeader()) != header.ICMPv6ProtocolNumber {
		return nil, false
	}
	icmp := header.ICMPv6(ip.Payload())
	if len(icmp) < header.ICMPv6EchoMinimumSize || icmp.Type() != header.ICMPv6EchoReply || icmp.Ident() != id || icmp.Sequence() != seq {
		return nil, false
	}
	return icmp.Payload(), true
}
