package kernel

import (
	"net/netip"
	"slices"
	"testing"
)

// Unit tests of the destination filter; filter_lab_linux_test.go shows it in
// the data path with a real WireGuard peer and a real kernel.

func TestDestFilterAdmit(t *testing.T) {
	var f destFilter
	f.set([]netip.Prefix{nodeV4, nodeV6})
	src4 := netip.AddrPortFrom(peerV4, 1)
	src6 := netip.AddrPortFrom(peerV6, 1)
	to := func(src netip.AddrPort, dst string) []byte {
		return udpPacket(0, src, netip.AddrPortFrom(netip.MustParseAddr(dst), 80), []byte("x"))
	}
	tests := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"own IPv4", to(src4, nodeV4.Addr().String()), true},
		{"own IPv6", to(src6, nodeV6.Addr().String()), true},
		{"host LAN address", to(src4, "192.168.1.10"), false},
		{"docker0", to(src4, "172.17.0.1"), false},
		{"host loopback", to(src4, "127.0.0.1"), false},
		{"another member", to(src4, "100.64.9.10"), false},
		{"mesh broadcast", to(src4, "100.127.255.255"), false},
		{"multicast", to(src4, "224.0.0.1"), false},
		{"IPv6 all-nodes", to(src6, "ff02::1"), false},
		{"IPv6 elsewhere", to(src6, "2001:db8::1"), false},
		{"IPv4-mapped own address in IPv6", to(src6, "::ffff:"+nodeV4.Addr().String()), false},
		{"empty", nil, false},
		{"IPv4 header cut short", to(src4, nodeV4.Addr().String())[:19], false},
		{"IPv6 header cut short", to(src6, nodeV6.Addr().String())[:39], false},
		{"version 5", append([]byte{0x50}, to(src4, nodeV4.Addr().String())[1:]...), false},
	}
	for _, tt := range tests {
		if got := f.own.Load().admit(tt.pkt); got != tt.want {
			t.Errorf("%s: admit = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestDestFilterBatch: the admitted packets of a batch come first, in their
// order; the dropped ones are still in the slice behind them; a moved
// address takes effect at once.
func TestDestFilterBatch(t *testing.T) {
	var f destFilter
	f.set([]netip.Prefix{nodeV4, nodeV6})
	own := netip.AddrPortFrom(nodeV4.Addr(), 80)
	lan := netip.MustParseAddrPort("10.1.0.2:80")
	src := netip.AddrPortFrom(peerV4, 1)
	mk := func(dst netip.AddrPort, tag string) []byte { return udpPacket(tunOffset, src, dst, []byte(tag)) }
	bufs := [][]byte{mk(lan, "d1"), mk(own, "k1"), mk(lan, "d2"), mk(own, "k2"), mk(own, "k3"), mk(lan, "d3")}
	orig := slices.Clone(bufs)
	kept := f.filter(bufs, tunOffset)
	if kept != 3 {
		t.Fatalf("kept %d, want 3", kept)
	}
	var tags []string
	for _, b := range bufs {
		u, ok := parseUDP(b[tunOffset:])
		if !ok {
			t.Fatal("a buffer was damaged")
		}
		tags = append(tags, string(u.payload))
	}
	if !slices.Equal(tags[:3], []string{"k1", "k2", "k3"}) {
		t.Fatalf("admitted %v, want k1 k2 k3 in order", tags[:3])
	}
	for _, b := range orig {
		if !slices.ContainsFunc(bufs, func(c []byte) bool { return &c[0] == &b[0] }) {
			t.Fatal("a buffer went missing from the batch")
		}
	}

	// The node's IPv4 moves: the old address is no longer ours.
	moved := netip.MustParsePrefix("100.64.7.7/10")
	f.set([]netip.Prefix{moved, nodeV6})
	batch := [][]byte{mk(own, "old"), mk(netip.AddrPortFrom(moved.Addr(), 80), "new")}
	if kept := f.filter(batch, tunOffset); kept != 1 {
		t.Fatalf("after the move kept %d, want only the packet to the new address", kept)
	}
	if u, _ := parseUDP(batch[0][tunOffset:]); string(u.payload) != "new" {
		t.Fatalf("after the move admitted %q", u.payload)
	}
}

// TestDestFilterNoAlloc: the hot path allocates nothing.
func TestDestFilterNoAlloc(t *testing.T) {
	var f destFilter
	f.set([]netip.Prefix{nodeV4, nodeV6})
	bufs := benchBatch(64)
	if n := testing.AllocsPerRun(100, func() { f.filter(bufs, tunOffset) }); n != 0 {
		t.Fatalf("filter allocates %v times per batch", n)
	}
}

// benchBatch is n full-size packets to the node, alternating IPv4 and
// IPv6, as wireguard-go hands them to the device.
func benchBatch(n int) [][]byte {
	payload := make([]byte, 1200)
	bufs := make([][]byte, n)
	for i := range bufs {
		if i%2 == 0 {
			bufs[i] = udpPacket(tunOffset, netip.AddrPortFrom(peerV4, 1), netip.AddrPortFrom(nodeV4.Addr(), 80), payload)
		} else {
			bufs[i] = udpPacket(tunOffset, netip.AddrPortFrom(peerV6, 1), netip.AddrPortFrom(nodeV6.Addr(), 80), payload)
		}
	}
	return bufs
}

// BenchmarkDestFilter measures the filter on a batch of 128 packets (the
// largest batch wireguard-go writes); ns/packet is the cost per packet.
func BenchmarkDestFilter(b *testing.B) {
	var f destFilter
	f.set([]netip.Prefix{nodeV4, nodeV6})
	bufs := benchBatch(128)
	b.ReportAllocs()
	b.SetBytes(int64(128 * len(bufs[0][tunOffset:])))
	for b.Loop() {
		if f.filter(bufs, tunOffset) != len(bufs) {
			b.Fatal("dropped a packet to the node")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(bufs)), "ns/packet")
}
