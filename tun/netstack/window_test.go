package netstack

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// tcpPacket builds an IPv4 TCP packet from 100.64.0.2:80 to 100.64.0.1:5000
// with the given flags, window field and options (checksums left zero: the
// guard does not read them).
func tcpPacket(flags header.TCPFlags, window uint16, opts []byte) []byte {
	opts = append(opts, make([]byte, (4-len(opts)%4)%4)...)
	pkt := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+len(opts))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:4], uint16(len(pkt)))
	pkt[9] = uint8(header.TCPProtocolNumber)
	copy(pkt[12:16], []byte{100, 64, 0, 2})
	copy(pkt[16:20], []byte{100, 64, 0, 1})
	tcp := header.TCP(pkt[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 80, DstPort: 5000, DataOffset: uint8(header.TCPMinimumSize + len(opts)), Flags: flags, WindowSize: window})
	copy(tcp[header.TCPMinimumSize:], opts)
	return pkt
}

func TestWindowGuard(t *testing.T) {
	const floor = 1240
	window := func(pkt []byte) uint16 { return header.TCP(pkt[header.IPv4MinimumSize:]).WindowSize() }
	g := newWindowGuard()

	// Before the flow's SYN-ACK the guard knows no scale: left alone.
	p := tcpPacket(header.TCPFlagAck, 2, nil)
	g.inspect(p, floor)
	if window(p) != 2 {
		t.Fatalf("unknown flow: window %d, want 2 (untouched)", window(p))
	}

	// SYN-ACK with NOP, MSS and WS 8: 2 units are 512 bytes, zeroed; 5
	// units are 1280 bytes, kept.
	g.inspect(tcpPacket(header.TCPFlagSyn|header.TCPFlagAck, 65535, []byte{1, 2, 4, 5, 0xb4, 3, 3, 8}), floor)
	for _, tc := range []struct{ in, want uint16 }{{2, 0}, {4, 0}, {5, 5}, {0, 0}, {1000, 1000}} {
		p := tcpPacket(header.TCPFlagAck, tc.in, nil)
		g.inspect(p, floor)
		if window(p) != tc.want {
			t.Errorf("scale 8: window %d became %d, want %d", tc.in, window(p), tc.want)
		}
	}

	// A RST forgets the flow.
	g.inspect(tcpPacket(header.TCPFlagRst, 0, nil), floor)
	p = tcpPacket(header.TCPFlagAck, 2, nil)
	g.inspect(p, floor)
	if window(p) != 2 {
		t.Fatalf("after RST: window %d, want 2 (untouched)", window(p))
	}

	// A SYN without window scaling: windows are bytes, 1000 < floor.
	g.inspect(tcpPacket(header.TCPFlagSyn, 65535, []byte{2, 4, 5, 0xb4}), floor)
	p = tcpPacket(header.TCPFlagAck, 1000, nil)
	g.inspect(p, floor)
	if window(p) != 1000 {
		t.Fatalf("no WS option: window %d, want 1000 (unguarded)", window(p))
	}
}

func TestWindowGuardBounded(t *testing.T) {
	g := newWindowGuard()
	syn := tcpPacket(header.TCPFlagSyn, 65535, []byte{3, 3, 8})
	for i := range maxGuardedFlows + 100 {
		binary.BigEndian.PutUint16(syn[header.IPv4MinimumSize:], uint16(i))
		binary.BigEndian.PutUint16(syn[header.IPv4MinimumSize+2:], uint16(i>>16))
		g.inspect(syn, 1240)
	}
	if n := len(g.scales); n != maxGuardedFlows {
		t.Fatalf("%d flows remembered, want the bound %d", n, maxGuardedFlows)
	}
}

func TestWindowScaleOption(t *testing.T) {
	for _, tc := range []struct {
		opts  []byte
		scale uint8
		ok    bool
	}{
		{[]byte{3, 3, 7}, 7, true},
		{[]byte{1, 1, 3, 3, 20}, 14, true},  // capped (RFC 7323 2.3)
		{[]byte{2, 4, 5, 0xb4}, 0, false},   // MSS only
		{[]byte{0, 3, 3, 7}, 0, false},      // after EOL
		{[]byte{8, 0, 3, 3, 7}, 0, false},   // length 0: malformed
		{[]byte{8, 40, 3, 3, 7}, 0, false},  // length past the header
		{[]byte{3, 2, 3, 3, 7, 0}, 7, true}, // a WS of length 2 is skipped
	} {
		p := tcpPacket(header.TCPFlagSyn, 0, tc.opts)
		scale, ok := windowScale(p[header.IPv4MinimumSize:])
		if scale != tc.scale || ok != tc.ok {
			t.Errorf("options %v: scale %d, %v; want %d, %v", tc.opts, scale, ok, tc.scale, tc.ok)
		}
	}
}

// FuzzWindowGuard feeds arbitrary packets to the guard, as a member's
// decrypted traffic reaches it: nothing may panic, a packet's length never
// changes, and only a TCP window field is ever rewritten, to zero.
func FuzzWindowGuard(f *testing.F) {
	f.Add(tcpPacket(header.TCPFlagSyn|header.TCPFlagAck, 65535, []byte{1, 3, 3, 8}))
	f.Add(tcpPacket(header.TCPFlagAck, 2, nil))
	f.Add([]byte{0x60, 0, 0, 0, 0, 20, 6, 64})
	g := newWindowGuard()
	g.inspect(tcpPacket(header.TCPFlagSyn, 65535, []byte{3, 3, 14}), 1240)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		before := append([]byte(nil), pkt...)
		g.inspect(pkt, 1240)
		for i := range pkt {
			if pkt[i] != before[i] && pkt[i] != 0 {
				t.Fatalf("byte %d changed from %d to %d", i, before[i], pkt[i])
			}
		}
	})
}
