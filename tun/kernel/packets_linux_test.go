package kernel

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// reader reads packets from the device until it is closed, and hands them
// over on a channel.
func reader(t *testing.T, d *Device) <-chan []byte {
	t.Helper()
	out := make(chan []byte, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		batch := d.TUN().BatchSize()
		bufs := make([][]byte, batch)
		for i := range bufs {
			bufs[i] = make([]byte, tunOffset+65535)
		}
		sizes := make([]int, batch)
		for {
			n, err := d.TUN().Read(bufs, sizes, tunOffset)
			for i := range n {
				pkt := bytes.Clone(bufs[i][tunOffset : tunOffset+sizes[i]])
				select {
				case out <- pkt:
				default: // the test is not interested in a flood
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = d.Close() // unblocks Read
		<-done
	})
	return out
}

func TestPacketsFlowBothWays(t *testing.T) {
	tests := []struct {
		name       string
		node, peer netip.Addr
	}{
		{"IPv4", nodeV4.Addr(), peerV4},
		{"IPv6", nodeV6.Addr(), peerV6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := testNS(t)
			d := mustCreate(t, h, Config{Addrs: []netip.Prefix{nodeV4, nodeV6}})
			packets := reader(t, d)

			t.Run("kernel to TUN", func(t *testing.T) {
				dst := netip.AddrPortFrom(tt.peer, 9999)
				payload := []byte("to the mesh " + tt.name)
				var c net.PacketConn
				if err := h.Do(func() error {
					var err error
					c, err = net.ListenPacket("udp", net.JoinHostPort(tt.node.String(), "0"))
					return err
				}); err != nil {
					t.Fatalf("socket in the namespace: %v", err)
				}
				defer c.Close()
				if _, err := c.WriteTo(payload, net.UDPAddrFromAddrPort(dst)); err != nil {
					t.Fatalf("send to %s: %v", dst, err)
				}
				timeout := time.After(waitLong)
				for {
					select {
					case pkt := <-packets:
						u, ok := parseUDP(pkt)
						if !ok || u.dst != dst {
							continue // router solicitations, MLD...
						}
						if !bytes.Equal(u.payload, payload) || u.src.Addr() != tt.node {
							t.Fatalf("read %s -> %s %q, want from %s payload %q", u.src, u.dst, u.payload, tt.node, payload)
						}
						return
					case <-timeout:
						t.Fatalf("the datagram to %s never came out of the TUN", dst)
					}
				}
			})

			t.Run("TUN to kernel", func(t *testing.T) {
				var c net.PacketConn
				if err := h.Do(func() error {
					var err error
					c, err = net.ListenPacket("udp", net.JoinHostPort(tt.node.String(), "7777"))
					return err
				}); err != nil {
					t.Fatalf("socket in the namespace: %v", err)
				}
				defer c.Close()
				src := netip.AddrPortFrom(tt.peer, 5555)
				payload := []byte("from the mesh " + tt.name)
				pkt := udpPacket(tunOffset, src, netip.AddrPortFrom(tt.node, 7777), payload)
				if _, err := d.TUN().Write([][]byte{pkt}, tunOffset); err != nil {
					t.Fatalf("writing to the TUN: %v", err)
				}
				_ = c.SetReadDeadline(time.Now().Add(waitLong))
				buf := make([]byte, 2048)
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					t.Fatalf("the socket got nothing: %v", err)
				}
				if got := from.(*net.UDPAddr).AddrPort(); got.Addr().Unmap() != src.Addr() || got.Port() != src.Port() || !bytes.Equal(buf[:n], payload) {
					t.Errorf("received %q from %s, want %q from %s", buf[:n], got, payload, src)
				}
			})
		})
	}
}
