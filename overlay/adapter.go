package overlay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

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
	// dropped counts packets from the mesh refused because they were not
	// addressed to this node (the kernel TUN's filter; the userspace stack
	// has no route anywhere else, so it never needs to).
	dropped() uint64
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
func (u *userspaceAdapter) dropped() uint64 { return 0 }
func (u *userspaceAdapter) close() error    { return u.s.Close() }
func (u *userspaceAdapter) String() string  { return "userspace" }

// kernelAdapter is a kernel TUN device. Dial and Listen use the host's own
// sockets: the kernel routes the mesh prefixes to the device. Listen binds
// the overlay addresses only (see overlayListener), never the host's other
// interfaces.
type kernelAdapter struct {
	d          *kernel.Device
	v4Bits     int
	ula        netip.Prefix
	dialer     net.Dialer
	listenConf net.ListenConfig

	mu        sync.Mutex
	v4, v6    netip.Addr // the overlay addresses the device holds
	listeners map[*overlayListener]bool
}

func newKernel(v4, v6 netip.Addr, ula netip.Prefix, cfg Config) (*kernelAdapter, error) {
	k := &kernelAdapter{v4Bits: cfg.V4Prefix.Bits(), ula: ula, v4: v4, v6: v6, listeners: make(map[*overlayListener]bool)}
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

// setAddrs moves the device to new addresses, then every listener on
// ":port" follows them.
func (k *kernelAdapter) setAddrs(v4, v6 netip.Addr) error {
	if err := k.d.SetAddrs(k.prefixes(v4, v6)); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.v4, k.v6 = v4, v6
	for l := range k.listeners {
		l.rebind([]netip.Addr{v4, v6})
	}
	return nil
}

func (k *kernelAdapter) dial(ctx context.Context, network, address string) (net.Conn, error) {
	return k.dialer.DialContext(ctx, network, address)
}

// listen binds one of the overlay addresses, or all of them (host empty or
// unspecified), following them when they move. Any other address is
// refused: on a host socket it would be a port on the host's own networks,
// not on the mesh.
func (k *kernelAdapter) listen(network, address string) (net.Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("listen %s %s: want tcp, tcp4 or tcp6", network, address)
	}
	ip, port, err := netstack.ParseAddr(address, true)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", address, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if ip.IsValid() && !ip.IsUnspecified() {
		if err := k.checkOverlayLocked(ip, address); err != nil {
			return nil, err
		}
		return k.listenConf.Listen(context.Background(), network, address)
	}
	l, err := newOverlayListener(network, int(port), []netip.Addr{k.v4, k.v6}, func(l *overlayListener) {
		k.mu.Lock()
		delete(k.listeners, l)
		k.mu.Unlock()
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", address, err)
	}
	k.listeners[l] = true
	return l, nil
}

// listenPacket binds one overlay address. Unlike listen it does not take
// ":port": one UDP socket cannot cover several addresses without also
// covering the host's other networks.
func (k *kernelAdapter) listenPacket(network, address string) (net.PacketConn, error) {
	ip, _, err := netstack.ParseAddr(address, true)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", address, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if !ip.IsValid() || ip.IsUnspecified() {
		return nil, fmt.Errorf("listen %s %s: with a kernel TUN, give the overlay address to bind (%s or %s): a socket on every address would also listen on the host's other networks", network, address, k.v4, k.v6)
	}
	if err := k.checkOverlayLocked(ip, address); err != nil {
		return nil, err
	}
	return k.listenConf.ListenPacket(context.Background(), network, address)
}

func (k *kernelAdapter) checkOverlayLocked(ip netip.Addr, address string) error {
	if ip != k.v4 && ip != k.v6 {
		return fmt.Errorf("listen %s: %s is not an overlay address of this node (%s, %s)", address, ip, k.v4, k.v6)
	}
	return nil
}

func (k *kernelAdapter) dropped() uint64 { return k.d.Dropped() }
func (k *kernelAdapter) close() error    { return k.d.Close() }
func (k *kernelAdapter) String() string  { return "tun:" + k.d.Name() }
