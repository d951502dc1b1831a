package netstack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"

	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"
)

// BenchmarkTCPThroughput sends one TCP stream from A to B over the in-memory
// cable; MB/s is the stack's own ceiling (both stacks and the cable share
// the CPU), with no encryption or network in the way. The wireguard-go
// sub-benchmark runs the same stream over wireguard-go's own tun/netstack on
// the same gVisor, as the baseline to compare with in the same run.
func BenchmarkTCPThroughput(b *testing.B) {
	b.Run("plurenet", func(b *testing.B) {
		a, bs := newPair(b)
		ln, err := bs.Listen("tcp", ":5201")
		if err != nil {
			b.Fatal(err)
		}
		benchStream(b, ln, func() (net.Conn, error) {
			return a.DialContext(context.Background(), "tcp", "100.64.0.2:5201")
		})
	})
	b.Run("wireguard-go", func(b *testing.B) {
		tunA, netA, err := wgnetstack.CreateNetTUN([]netip.Addr{addrA4}, nil, DefaultMTU)
		if err != nil {
			b.Fatal(err)
		}
		tunB, netB, err := wgnetstack.CreateNetTUN([]netip.Addr{addrB4}, nil, DefaultMTU)
		if err != nil {
			b.Fatal(err)
		}
		connect(b, tunA, tunB)
		ln, err := netB.ListenTCPAddrPort(netip.AddrPortFrom(netip.Addr{}, 5201))
		if err != nil {
			b.Fatal(err)
		}
		benchStream(b, ln, func() (net.Conn, error) {
			return netA.DialContextTCPAddrPort(context.Background(), netip.AddrPortFrom(addrB4, 5201))
		})
	})
}

func benchStream(b *testing.B, ln net.Listener, dial func() (net.Conn, error)) {
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		done <- n
	}()
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	const chunk = 128 << 10
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if n := <-done; n < int64(chunk)*int64(b.N) {
		b.Fatalf("receiver got %d bytes, want %d", n, int64(chunk)*int64(b.N))
	}
}
