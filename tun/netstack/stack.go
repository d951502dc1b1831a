// Package netstack is plurenet's userspace adapter: a gVisor TCP/IP stack that
// is at once the WireGuard device's TUN (it implements
// golang.zx2c4.com/wireguard/tun.Device) and a source of net.Conn,
// net.Listener and net.PacketConn on the overlay, with no root and no kernel
// interface.
//
// It is our own rather than wireguard-go's tun/netstack because the node's
// addresses can change at runtime (the mesh's IPv4 collision rule may move a
// node) and because owning the link endpoint lets the device read outbound
// packets in batches without a goroutine hop per packet.
package netstack

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const (
	// DefaultMTU is the overlay MTU when Config.MTU is zero: 1280 is the
	// IPv6 minimum, which every path (including relays that add framing)
	// can carry after WireGuard's overhead.
	DefaultMTU = 1280

	// minMTU and maxMTU bound Config.MTU: IPv6 cannot run below 1280, and an
	// IP packet cannot exceed 65535 bytes.
	minMTU = 1280
	maxMTU = 65535

	// maxBatch is the most packets one Read returns: the batch the Bind
	// asks wireguard-go's device for (transports.Bind.BatchSize says why
	// it is half the device's ideal), so that the device's batch, the
	// larger of the two, is not raised by the adapter.
	maxBatch = 64

	// nicID is the stack's single NIC.
	nicID tcpip.NICID = 1

	// tcpBufMin, tcpBufDefault and tcpBufMax are TCP's send and receive
	// buffer auto-tuning range. 8 MiB covers the bandwidth-delay product of
	// ~1 Gbit/s at 60 ms, so a long-haul tunnel is not window-bound, while
	// the default stays at gVisor's 1 MiB for the many idle connections.
	tcpBufMin     = 4 << 10
	tcpBufDefault = 1 << 20
	tcpBufMax     = 8 << 20
)

// Config configures a Stack. The zero value is usable: a stack with no
// addresses (add them with SetAddrs), MTU 1280, logging to slog.Default.
type Config struct {
	// Addrs are this node's overlay addresses, IPv4 and/or IPv6.
	Addrs []netip.Addr
	// MTU of the overlay; 0 means DefaultMTU.
	MTU int
	// Logger receives debug-level per-packet detail; nil means slog.Default().
	Logger *slog.Logger
}

// Stack is a userspace TCP/IP stack for one overlay node. Create it with New.
type Stack struct {
	logger *slog.Logger
	mtu    int
	link   *linkEndpoint
	stack  *stack.Stack
	events chan tun.Event

	// mu guards addrs and closed. Endpoint creation holds it for reading so
	// that Close (which takes it for writing) never races a new endpoint
	// past the stack's teardown.
	mu     sync.RWMutex
	addrs  []netip.Addr
	closed bool
	// done is closed when Close starts, to stop pending dials.
	done      chan struct{}
	closeOnce sync.Once
}

var _ tun.Device = (*Stack)(nil)

// New builds a stack with the configured addresses and default routes for
// IPv4 and IPv6 through its NIC, so every overlay destination goes out to the
// WireGuard device.
func New(cfg Config) (*Stack, error) {
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < minMTU || mtu > maxMTU {
		return nil, fmt.Errorf("netstack: MTU %d out of range [%d, %d]", mtu, minMTU, maxMTU)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	s := &Stack{
		logger: logger,
		mtu:    mtu,
		link:   newLinkEndpoint(uint32(mtu), logger),
		events: make(chan tun.Event, 1),
		done:   make(chan struct{}),
	}
	s.stack = stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		// ICMP is registered so echo requests to the node are answered
		// (ping from a peer) and so ICMP errors reach the endpoints.
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		// HandleLocal lets the node reach its own overlay addresses.
		HandleLocal: true,
	})
	if err := s.configureTCP(); err != nil {
		s.stack.Destroy()
		return nil, err
	}
	if err := s.stack.CreateNIC(nicID, s.link); err != nil {
		s.stack.Destroy()
		return nil, fmt.Errorf("netstack: create NIC: %s", err)
	}
	s.stack.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	if err := s.SetAddrs(cfg.Addrs); err != nil {
		s.stack.Destroy()
		return nil, err
	}
	s.events <- tun.EventUp
	return s, nil
}

// configureTCP turns on what a fast, lossy-path TCP needs: SACK (off by
// default in gVisor) so one loss does not stall a window, CUBIC for high
// bandwidth-delay paths, and buffers that auto-tune up to tcpBufMax.
func (s *Stack) configureTCP() error {
	sack := tcpip.TCPSACKEnabled(true)
	cc := tcpip.CongestionControlOption("cubic")
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax}
	opts := []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"SACK", &sack},
		{"congestion control", &cc},
		{"receive buffer moderation", &moderate},
		{"receive buffer range", &rcv},
		{"send buffer range", &snd},
	}
	for _, o := range opts {
		if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); err != nil {
			return fmt.Errorf("netstack: set TCP %s: %s", o.name, err)
		}
	}
	// The stack-wide socket buffer limits cap what SO_RCVBUF/SO_SNDBUF and
	// auto-tuning may reach; raise them to the same range.
	if err := s.stack.SetOption(tcpip.ReceiveBufferSizeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax}); err != nil {
		return fmt.Errorf("netstack: set receive buffer limits: %s", err)
	}
	if err := s.stack.SetOption(tcpip.SendBufferSizeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax}); err != nil {
		return fmt.Errorf("netstack: set send buffer limits: %s", err)
	}
	return nil
}

// SetAddrs replaces the node's overlay addresses: addresses not in addrs are
// removed (connections bound to them stop receiving), new ones are added.
// Invalid, unspecified or duplicate addresses are rejected before anything
// changes.
func (s *Stack) SetAddrs(addrs []netip.Addr) error {
	want := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
			return fmt.Errorf("netstack: set addresses: invalid address %q", a)
		}
		if slices.Contains(want, a) {
			return fmt.Errorf("netstack: set addresses: duplicate address %s", a)
		}
		want = append(want, a)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("netstack: set addresses: %w", os.ErrClosed)
	}
	for _, old := range slices.Clone(s.addrs) {
		if slices.Contains(want, old) {
			continue
		}
		if err := s.stack.RemoveAddress(nicID, tcpip.AddrFromSlice(old.AsSlice())); err != nil {
			return fmt.Errorf("netstack: remove address %s: %s", old, err)
		}
		s.addrs = slices.DeleteFunc(s.addrs, func(a netip.Addr) bool { return a == old })
		s.logger.Debug("netstack: address removed", "addr", old)
	}
	for _, a := range want {
		if slices.Contains(s.addrs, a) {
			continue
		}
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		if err := s.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("netstack: add address %s: %s", a, err)
		}
		s.addrs = append(s.addrs, a)
		s.logger.Debug("netstack: address added", "addr", a)
	}
	return nil
}

// Addrs returns the node's current overlay addresses.
func (s *Stack) Addrs() []netip.Addr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.addrs)
}

// Read blocks until the stack has outbound packets and copies up to
// len(bufs) of them (at most BatchSize) into bufs[i][offset:]. It returns
// os.ErrClosed after Close.
func (s *Stack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < 0 {
		return 0, fmt.Errorf("netstack: read: negative offset %d", offset)
	}
	return s.link.read(bufs, sizes, offset)
}

// Write injects inbound IP packets bufs[i][offset:] into the stack. Packets
// that are not IPv4 or IPv6 are dropped (logged at debug level); gVisor drops
// the ones that fail its header and checksum validation.
func (s *Stack) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-s.done:
		return 0, os.ErrClosed
	default:
	}
	if offset < 0 {
		return 0, fmt.Errorf("netstack: write: negative offset %d", offset)
	}
	s.link.inject(bufs, offset)
	return len(bufs), nil
}

// File returns nil: there is no kernel file behind a userspace stack.
func (s *Stack) File() *os.File { return nil }

// MTU returns the overlay MTU.
func (s *Stack) MTU() (int, error) { return s.mtu, nil }

// Name returns a fixed name; the stack is not a kernel interface.
func (s *Stack) Name() (string, error) { return "plurenet-netstack", nil }

// Events delivers tun.EventUp once, then is closed by Close.
func (s *Stack) Events() <-chan tun.Event { return s.events }

// BatchSize is the most packets a Read returns.
func (s *Stack) BatchSize() int { return maxBatch }

// Close tears the stack down: pending Reads return os.ErrClosed, every
// connection and listener made from the stack fails, and gVisor's goroutines
// are stopped and waited for. It is idempotent.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.done)
		s.mu.Unlock()

		s.link.close()
		// Close aborts every registered endpoint, then Wait stops the TCP
		// processors and removes the NIC.
		s.stack.Close()
		s.stack.Wait()
		close(s.events)
	})
	return nil
}
