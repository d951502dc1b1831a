package netstack

import (
	"bytes"
	"crypto/rand"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// gsoPacket builds a TCP packet as gVisor's sender builds it for host GSO:
// headers for the whole payload, the TCP checksum field holding only the
// pseudo-header sum, and the MSS in the GSO options.
func gsoPacket(t *testing.T, v6 bool, payload []byte, mss int, flags header.TCPFlags) *stack.PacketBuffer {
	t.Helper()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: header.IPv6MinimumSize + header.TCPMinimumSize,
		Payload:            buffer.MakeWithData(payload),
	})
	tcp := header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize))
	tcp.Encode(&header.TCPFields{SrcPort: 1000, DstPort: 2000, SeqNum: 0xfffff000, AckNum: 7,
		DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 1000})
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	src, dst := tcpip.AddrFrom4([4]byte{100, 64, 0, 1}), tcpip.AddrFrom4([4]byte{100, 64, 0, 2})
	gso := stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: uint16(mss), L3HdrLen: header.IPv4MinimumSize}
	if v6 {
		src, dst = tcpip.AddrFrom16([16]byte{0xfd, 15: 1}), tcpip.AddrFrom16([16]byte{0xfd, 15: 2})
		gso.Type, gso.L3HdrLen = stack.GSOTCPv6, header.IPv6MinimumSize
		ip := header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize))
		ip.Encode(&header.IPv6Fields{PayloadLength: uint16(header.TCPMinimumSize + len(payload)),
			TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(header.IPv4MinimumSize + header.TCPMinimumSize + len(payload)),
			ID: 0xfffe, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
		ip.SetChecksum(^ip.CalculateChecksum())
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	}
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(header.TCPMinimumSize+len(payload))))
	pkt.GSOOptions = gso
	return pkt
}

// TestSegmentation hands the link endpoint TCP packets built for
// segmentation offload and checks what Read returns, split over Reads of a
// few buffers: every segment a valid IP packet of at most MSS payload with
// the right sequence number, IPv4 identification, flags and checksums, the
// payloads in order adding up to the original.
func TestSegmentation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v6      bool
		size    int
		mss     int
		flags   header.TCPFlags
		segment int // segments expected
	}{
		{"ipv4 split", false, 5000, 1240, header.TCPFlagAck | header.TCPFlagPsh | header.TCPFlagFin | header.TCPFlagCwr, 5},
		{"ipv6 split", true, 5000, 1220, header.TCPFlagAck | header.TCPFlagPsh, 5},
		{"exact multiple", false, 4 * 1000, 1000, header.TCPFlagAck, 4},
		{"fits one segment", false, 300, 1240, header.TCPFlagAck | header.TCPFlagPsh, 1},
		{"bare ack", true, 0, 1220, header.TCPFlagAck, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLinkEndpoint(DefaultMTU, quietLogger())
			defer e.close()
			payload := make([]byte, tc.size)
			rand.Read(payload)
			pkt := gsoPacket(t, tc.v6, payload, tc.mss, tc.flags)
			var list stack.PacketBufferList
			list.PushBack(pkt)
			if n, err := e.WritePackets(list); n != 1 || err != nil {
				t.Fatalf("WritePackets = %d, %v", n, err)
			}
			pkt.DecRef()

			// Two buffers per Read: a split packet carries over.
			const offset = 16
			var segs [][]byte
			for len(segs) < tc.segment {
				bufs := [][]byte{make([]byte, 2000), make([]byte, 2000)}
				sizes := make([]int, 2)
				n, err := e.read(bufs, sizes, offset)
				if err != nil {
					t.Fatal(err)
				}
				for i := range n {
					segs = append(segs, bufs[i][offset:offset+sizes[i]])
				}
			}
			if len(segs) != tc.segment {
				t.Fatalf("%d segments, want %d", len(segs), tc.segment)
			}
			var got []byte
			for i, s := range segs {
				tcp, l4 := checkSegment(t, s, tc.v6, i)
				data := l4[tcp.DataOffset():]
				if len(data) > tc.mss {
					t.Errorf("segment %d carries %d bytes, MSS %d", i, len(data), tc.mss)
				}
				if want := uint32(0xfffff000) + uint32(len(got)); tcp.SequenceNumber() != want {
					t.Errorf("segment %d seq %#x, want %#x", i, tcp.SequenceNumber(), want)
				}
				last := i == len(segs)-1
				wantFlags := tc.flags
				if !last {
					wantFlags &^= header.TCPFlagFin | header.TCPFlagPsh
				}
				if i > 0 {
					wantFlags &^= header.TCPFlagCwr
				}
				if tcp.Flags() != wantFlags {
					t.Errorf("segment %d flags %v, want %v", i, tcp.Flags(), wantFlags)
				}
				got = append(got, data...)
			}
			if !bytes.Equal(got, payload) {
				t.Error("the segments' payloads do not add up to the original")
			}
		})
	}
}

// checkSegment checks one segment's IP header and TCP checksum and returns
// its TCP header and TCP bytes.
func checkSegment(t *testing.T, s []byte, v6 bool, i int) (header.TCP, []byte) {
	t.Helper()
	var src, dst tcpip.Address
	var l4 []byte
	if v6 {
		ip := header.IPv6(s)
		if !ip.IsValid(len(s)) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(s) {
			t.Fatalf("segment %d: bad IPv6 header", i)
		}
		src, dst, l4 = ip.SourceAddress(), ip.DestinationAddress(), ip.Payload()
	} else {
		ip := header.IPv4(s)
		if !ip.IsValid(len(s)) || int(ip.TotalLength()) != len(s) || !ip.IsChecksumValid() {
			t.Fatalf("segment %d: bad IPv4 header", i)
		}
		if want := uint16(0xfffe + i); ip.ID() != want {
			t.Errorf("segment %d IPv4 ID %#x, want %#x", i, ip.ID(), want)
		}
		src, dst, l4 = ip.SourceAddress(), ip.DestinationAddress(), ip.Payload()
	}
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(l4)))
	if checksum.Checksum(l4, xsum) != 0xffff {
		t.Errorf("segment %d: bad TCP checksum", i)
	}
	return header.TCP(l4), l4
}

// TestTCPUsesSegmentation checks that gVisor does hand the endpoint large
// packets (the point of the offload), and that what Read returns never
// exceeds the MTU.
func TestTCPUsesSegmentation(t *testing.T) {
	a, b := newPair(t)
	ln, err := b.Listen("tcp", ":5201")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	c, err := a.DialContext(testContext(t), "tcp", "100.64.0.2:5201")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 1<<20)
	rand.Read(msg)
	roundTrip(t, c, msg)
	if a.link.segmented.Load() == 0 {
		t.Error("no packet larger than one segment reached the link endpoint: segmentation offload is not in use")
	}
	if a.link.oversize.Load() != 0 {
		t.Errorf("%d packets over the MTU left the endpoint", a.link.oversize.Load())
	}
}

// TestLocalTCPWithOffload dials the stack's own address: gVisor loops such
// packets back without the link endpoint, large and with the checksum left
// to the offload, and must still deliver them intact.
func TestLocalTCPWithOffload(t *testing.T) {
	s := newStack(t, addrA4, addrA6)
	ln, err := s.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	for _, dst := range []string{"100.64.0.1:7", "[fd00::1]:7"} {
		c, err := s.DialContext(testContext(t), "tcp", dst)
		if err != nil {
			t.Fatalf("dial %s: %v", dst, err)
		}
		msg := make([]byte, 1<<20)
		rand.Read(msg)
		roundTrip(t, c, msg)
		c.Close()
	}
}
