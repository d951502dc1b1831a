package netstack

import (
	"crypto/rand"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// inboundTCP4 builds a valid IPv4 TCP packet with n payload bytes.
func inboundTCP4(n int) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+n)
	rand.Read(b[header.IPv4MinimumSize+header.TCPMinimumSize:])
	ip := header.IPv4(b)
	src, dst := tcpip.AddrFrom4([4]byte{100, 64, 0, 2}), tcpip.AddrFrom4([4]byte{100, 64, 0, 1})
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 1, DstPort: 2, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 100})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
	tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
	return b
}

// inboundUDP6 builds a valid IPv6 UDP packet with n payload bytes.
func inboundUDP6(n int) []byte {
	b := make([]byte, header.IPv6MinimumSize+header.UDPMinimumSize+n)
	ip := header.IPv6(b)
	src, dst := tcpip.AddrFrom16([16]byte{0xfd, 15: 2}), tcpip.AddrFrom16([16]byte{0xfd, 15: 1})
	ip.Encode(&header.IPv6Fields{PayloadLength: uint16(header.UDPMinimumSize + n), TransportProtocol: header.UDPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
	udp := header.UDP(b[header.IPv6MinimumSize:])
	udp.Encode(&header.UDPFields{SrcPort: 1, DstPort: 2, Length: uint16(len(udp))})
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(len(udp)))
	udp.SetChecksum(^checksum.Checksum(udp, xsum))
	return b
}

func TestCheckInbound(t *testing.T) {
	mod := func(b []byte, f func([]byte)) []byte { f(b); return b }
	for _, tc := range []struct {
		name string
		pkt  []byte
		ok   bool
		size int // length after trimming, when ok
	}{
		{"valid TCP over IPv4", inboundTCP4(100), true, 140},
		{"trailing bytes trimmed", append(inboundTCP4(100), 1, 2, 3), true, 140},
		{"bad TCP checksum", mod(inboundTCP4(100), func(b []byte) { b[50] ^= 1 }), false, 0},
		{"bad IPv4 header checksum", mod(inboundTCP4(100), func(b []byte) { b[8]-- }), false, 0},
		{"IPv4 total length past the end", mod(inboundTCP4(100), func(b []byte) { b[3] += 10 }), false, 0},
		{"IPv4 header length too small", mod(inboundTCP4(100), func(b []byte) { b[0] = 0x44 }), false, 0},
		{"valid UDP over IPv6", inboundUDP6(10), true, 58},
		{"bad UDP checksum", mod(inboundUDP6(10), func(b []byte) { b[50] ^= 1 }), false, 0},
		{"UDP without checksum over IPv6", mod(inboundUDP6(10), func(b []byte) { b[46], b[47] = 0, 0 }), false, 0},
		{"UDP length past the packet", mod(inboundUDP6(10), func(b []byte) { b[45] += 4 }), false, 0},
		{"IPv6 payload length past the end", mod(inboundUDP6(10), func(b []byte) { b[5] += 1 }), false, 0},
		{"not IP", []byte{0x10, 0, 0, 0}, false, 0},
		{"empty", nil, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, ok := checkInbound(tc.pkt)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if ok && len(got) != tc.size {
				t.Errorf("trimmed to %d bytes, want %d", len(got), tc.size)
			}
		})
	}
}

// FuzzCheckInbound feeds arbitrary bytes to the inbound check: it must not
// panic, and what it passes must be a prefix of its input.
func FuzzCheckInbound(f *testing.F) {
	f.Add(inboundTCP4(10))
	f.Add(inboundUDP6(10))
	f.Add([]byte{0x45, 0, 0, 20})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, _, ok := checkInbound(b)
		if ok && (len(got) > len(b) || (len(got) > 0 && &got[0] != &b[0])) {
			t.Fatalf("passed %d bytes that are not a prefix of the %d given", len(got), len(b))
		}
	})
}

// TestInboundCoalesced checks that consecutive segments written in one
// batch reach gVisor's TCP merged: B's stack sees fewer segments than A
// sent packets.
func TestInboundCoalesced(t *testing.T) {
	a, b := newPair(t)
	const size = 4 << 20
	sendThrough(t, a, b, size, drain, nil)
	sent := a.stack.Stats().IP.PacketsSent.Value()
	seen := b.stack.Stats().TCP.ValidSegmentsReceived.Value()
	// At least 4 MiB / 1240 bytes were sent as separate packets.
	if min := uint64(size / 1240); a.link.segmented.Load() == 0 || seen >= min {
		t.Errorf("B's TCP saw %d segments for %d bytes (A sent %d IP packets): no coalescing", seen, size, sent)
	}
}
