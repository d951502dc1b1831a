package overlay

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/plures/plurenet/tun/kernel"
	"github.com/plures/plurenet/tun/netstack"
)

// adapter is where the node's IP packets enter and leave: the userspace
// stack (no privileges; programs reach the mesh through Dial, SOCKS5 and
// forwards) or a kernel TUN device (every program reaches the mesh).
type adapter interface {
	device() tun.Device
	setAddrs(v4, v6 netip.Addr) error
	dial(ctx context.Context, network, address string) (net.Conn, error)
	listen(network, address string) (net.Listener, error)
	listenPacket(network, address string) (net.PacketConn, error)
	// close releases the adapter (the kernel interface is deleted).
	close() error
	String() string
}

type userspaceAdapter struct{ s *netstack.Stack }

func newUserspace(v4, v6 netip.Addr, cfg Config) (*userspaceAdapter, error) {
	s, err := netstack.New(netstack.Config{Addrs: []netip.Addr{v4, v6}, MTU: cfg.MTU, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("userspace adapter: %w", err)
	}
	return &userspaceAdapter{s: s}, nil
}

func (u *userspaceAdapter) device() tun.Device { return u.s }
func (u *userspaceAdapter) setAddrs(v4, v6 netip.Addr) error {
	return u.s.SetAddrs([]netip.Addr{v4, v6})
}
func (u *userspaceAdapter) dial(ctx context.Context, network, address string) (net.Conn, error) {
	return u.s.DialContext(ctx, network, address)
}
func (u *userspaceAdapter) listen(network, address string) (net.Listener, error) {
	return u.s.Listen(network, address)
}
func (u *userspaceAdapter) listenPacket(network, address string) (net.PacketConn, error) {
	return u.s.ListenPacket(network, address)
}
func (u *userspaceAdapter) close() error   { return u.s.Close() }
func (u *userspaceAdapter) String() string { return "userspace" }

// kernelAdapter is a kernel TUN device. Dial and Listen use the host's own
// sockets: the kernel routes the mesh prefixes to the device.
type kernelAdapter struct {
	d          *kernel.Device
	v4Bits     int
	ula        netip.Prefix
	dialer     net.Dialer
	listenConf net.ListenConfig
}

func newKernel(v4, v6 netip.Addr, ula netip.Prefix, cfg Config) (*kernelAdapter, error) {
	k := &kernelAdapter{v4Bits: cfg.V4Prefix.Bits(), ula: ula}
	d, err := kernel.Create(kernel.Config{Name: cfg.TUN, Addrs: k.prefixes(v4, v6), MTU: cfg.MTU, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	k.d = d
	return k, nil
}

// prefixes gives each address the mesh prefix length, which is what routes
// the whole mesh to the device.
func (k *kernelAdapter) prefixes(v4, v6 netip.Addr) []netip.Prefix {
	return []netip.Prefix{netip.PrefixFrom(v4, k.v4Bits), netip.PrefixFrom(v6, k.ula.Bits())}
}

func (k *kernelAdapter) device() tun.Device { return k.d.TUN() }
func (k *kernelAdapter) setAddrs(v4, v6 netip.Addr) error {
	return k.d.SetAddrs(k.prefixes(v4, v6))
}
func (k *kernelAdapter) dial(ctx context.Context, network, address string) (net.Conn, error) {
	return k.dialer.DialContext(ctx, network, address)
}
func (k *kernelAdapter) listen(network, address string) (net.Listener, error) {
	return k.listenConf.Listen(context.Background(), network, address)
}
func (k *kernelAdapter) listenPacket(network, address string) (net.PacketConn, error) {
	return k.listenConf.ListenPacket(context.Background(), network, address)
}
func (k *kernelAdapter) close() error   { return k.d.Close() }
func (k *kernelAdapter) String() string { return "tun:" + k.d.Name() }
