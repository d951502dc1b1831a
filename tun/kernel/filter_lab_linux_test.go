package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/internal/nodekey"
)

// strayWait is how long the test listens for packets that must not arrive,
// after the control packet sent behind them did. Without the filter they
// arrive within milliseconds, and before the control packet: a slower
// machine can only make the test pass for the wrong reason, never fail.
const strayWait = 2 * time.Second

// TestMeshCannotReachHostNetworks is the network lab for the destination
// filter. The node's TUN device lives in a NAT router's namespace, a host
// with ip_forward=1, an address on the "internet" (its LAN, for this test)
// and a LAN behind it with another host: the third network. A raw
// WireGuard peer, configured as the overlay configures a member (AllowedIPs
// its own overlay addresses), plays a member running modified code: it
// sends UDP to the router's two addresses, to the host behind it, to a
// host on its other side, and from a spoofed source. Only the packet to the
// node's overlay address may arrive, and the device counts the rest.
func TestMeshCannotReachHostNetworks(t *testing.T) {
	lab := netlab.New(t)
	r := lab.NATRouter("r", netlab.RouterConfig{})
	behind := lab.Host("behind", r)
	outside := lab.Host("outside", lab.Internet())

	d, err := create(r.Host, Config{Addrs: []netip.Prefix{nodeV4, nodeV6}, Logger: (&logBuffer{}).logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	peer := rawPeer(t, d)

	type target struct {
		name string
		host *netlab.Host
		dst  netip.AddrPort
	}
	control := target{"the node's overlay address", r.Host, netip.AddrPortFrom(nodeV4.Addr(), 7001)}
	forbidden := []target{
		{"the router's address on its LAN side", r.Host, netip.AddrPortFrom(r.LANAddr(), 7002)},
		{"the router's public address", r.Host, netip.AddrPortFrom(r.Addr(), 7003)},
		{"a host behind the router (forwarded)", behind, netip.AddrPortFrom(behind.Addr(), 7004)},
		{"a host on the router's other side (forwarded)", outside, netip.AddrPortFrom(outside.Addr(), 7005)},
	}
	socks := map[netip.AddrPort]net.PacketConn{}
	for _, tg := range append([]target{control}, forbidden...) {
		var c net.PacketConn
		if err := tg.host.Do(func() (err error) {
			c, err = net.ListenPacket("udp4", tg.dst.String())
			return err
		}); err != nil {
			t.Fatalf("listening on %s: %v", tg.dst, err)
		}
		t.Cleanup(func() { c.Close() })
		socks[tg.dst] = c
	}

	// In order through one peer's queue: the forbidden packets, one from a
	// spoofed source to the control socket, then the control packet.
	src := netip.AddrPortFrom(peerV4, 5555)
	for _, tg := range forbidden {
		peer.Outbound <- udpPacket(0, src, tg.dst, []byte("must not arrive"))
	}
	spoofed := netip.AddrPortFrom(behind.Addr(), 5555)
	peer.Outbound <- udpPacket(0, spoofed, control.dst, []byte("spoofed source"))
	peer.Outbound <- udpPacket(0, src, control.dst, []byte("control"))

	buf := make([]byte, 2048)
	c := socks[control.dst]
	c.SetReadDeadline(time.Now().Add(waitLong))
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the control packet to %s never arrived (is the WireGuard path up?): %v", control.dst, err)
	}
	if got := string(buf[:n]); got != "control" || from.(*net.UDPAddr).AddrPort().Addr().Unmap() != src.Addr() {
		t.Fatalf("the node's overlay address got %q from %s first, want the control packet from %s", got, from, src)
	}

	var wg sync.WaitGroup
	arrived := make(chan string, len(forbidden))
	deadline := time.Now().Add(strayWait)
	for _, tg := range forbidden {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := socks[tg.dst]
			c.SetReadDeadline(deadline)
			buf := make([]byte, 2048)
			if n, from, err := c.ReadFrom(buf); err == nil {
				arrived <- fmt.Sprintf("%s (%s) got %q from %s", tg.name, tg.dst, buf[:n], from)
			}
		}()
	}
	wg.Wait()
	close(arrived)
	for msg := range arrived {
		t.Errorf("a member reached the host's networks: %s", msg)
	}
	// The spoofed packet is wireguard-go's to drop (AllowedIPs), the rest
	// the filter's.
	if got := d.Dropped(); got != uint64(len(forbidden)) {
		t.Errorf("Dropped() = %d, want %d", got, len(forbidden))
	}
}

// rawPeer starts a wireguard-go device on d and a second one, the raw
// peer, joined to it in memory. d's device holds the peer as the overlay
// holds a member (AllowedIPs its overlay addresses only); the peer routes
// everything to d. Packets the test puts on the returned TUN's Outbound go
// to d encrypted, as a member running modified code would send them.
func rawPeer(t *testing.T, d *Device) *tuntest.ChannelTUN {
	t.Helper()
	key := func() (nodekey.Private, string) {
		k, err := nodekey.NewPrivate()
		if err != nil {
			t.Fatal(err)
		}
		return k, k.Public().Hex()
	}
	nodeKey, nodePub := key()
	peerKey, peerPub := key()
	binds := bindtest.NewChannelBinds()
	logger := device.NewLogger(device.LogLevelSilent, "")

	node := device.NewDevice(d.TUN(), binds[0], logger)
	ct := tuntest.NewChannelTUN()
	peer := device.NewDevice(ct.TUN(), binds[1], logger)
	stopDrain := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		// Whatever the node's kernel sends the peer (router
		// solicitations...) is not the test's business.
		defer close(drained)
		for {
			select {
			case <-ct.Inbound:
			case <-stopDrain:
				return
			}
		}
	}()
	t.Cleanup(func() {
		peer.Close()
		node.Close()
		close(stopDrain)
		<-drained
	})
	conf := func(dev *device.Device, priv nodekey.Private, peerPub string, endpoint int, allowed ...string) {
		s := fmt.Sprintf("private_key=%s\nlisten_port=0\nreplace_peers=true\npublic_key=%s\nendpoint=127.0.0.1:%d\n", priv.Hex(), peerPub, endpoint)
		for _, a := range allowed {
			s += "allowed_ip=" + a + "\n"
		}
		if err := dev.IpcSet(s); err != nil {
			t.Fatal(err)
		}
		if err := dev.Up(); err != nil {
			t.Fatal(err)
		}
	}
	conf(node, nodeKey, peerPub, 1, netip.PrefixFrom(peerV4, 32).String(), netip.PrefixFrom(peerV6, 128).String())
	conf(peer, peerKey, nodePub, 2, "0.0.0.0/0", "::/0")
	return ct
}
