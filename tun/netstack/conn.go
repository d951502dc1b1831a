package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// listenBacklog bounds connections that finished the handshake but are not
// yet accepted; past it gVisor answers new SYNs with cookies or drops them,
// so a flood cannot grow memory without limit.
const listenBacklog = 1024

// ErrNotIPLiteral is returned when an address names a host instead of an IP:
// the stack has no resolver; callers map member names to overlay IPs first.
var ErrNotIPLiteral = errors.New("host must be an IP literal (resolve names before dialing)")

// family is the IP version a network name allows.
type family int

const (
	familyAny family = iota
	family4
	family6
)

func parseNetwork(network, want string) (family, error) {
	switch network {
	case want:
		return familyAny, nil
	case want + "4":
		return family4, nil
	case want + "6":
		return family6, nil
	}
	return 0, fmt.Errorf("unsupported network %q (want %s, %s4 or %s6)", network, want, want, want)
}

// ParseAddr splits "ip:port" as the overlay takes addresses: an IP literal
// (IPv4-mapped IPv6 unmapped, no zone) and a numeric port. With allowAny,
// an empty host (":port") gives an invalid Addr and an unspecified one
// ("[::]:port") the unspecified Addr, both meaning every local address;
// without it both are errors. The kernel adapter parses listen addresses
// with it too, so both adapters take the same forms.
func ParseAddr(address string, allowAny bool) (netip.Addr, uint16, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("invalid port %q", portStr)
	}
	if host == "" {
		if !allowAny {
			return netip.Addr{}, 0, errors.New("missing host")
		}
		return netip.Addr{}, uint16(port), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("%q: %w", host, ErrNotIPLiteral)
	}
	if ip.Zone() != "" {
		return netip.Addr{}, 0, fmt.Errorf("%q: zones are not supported on the overlay", host)
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() && !allowAny {
		return netip.Addr{}, 0, fmt.Errorf("cannot dial unspecified address %s", ip)
	}
	return ip, uint16(port), nil
}

func checkFamily(f family, ip netip.Addr) error {
	if !ip.IsValid() {
		return nil
	}
	if (f == family4 && !ip.Is4()) || (f == family6 && !ip.Is6()) {
		return fmt.Errorf("address %s does not match the network's IP version", ip)
	}
	return nil
}

func protoOf(ip netip.Addr) tcpip.NetworkProtocolNumber {
	if ip.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddr(ip netip.Addr, port uint16) tcpip.FullAddress {
	fa := tcpip.FullAddress{Port: port}
	if ip.IsValid() && !ip.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(ip.AsSlice())
	}
	return fa
}

// bindProto picks the endpoint's protocol and v6-only flag for a local
// address: any address on "tcp"/"udp" is dual-stack (an IPv6 endpoint that
// also takes IPv4), "tcp6" with any address is IPv6 only.
func bindProto(f family, ip netip.Addr) (tcpip.NetworkProtocolNumber, bool) {
	switch {
	case ip.IsValid() && ip.Is4():
		return ipv4.ProtocolNumber, false
	case ip.IsValid() && !ip.IsUnspecified():
		return ipv6.ProtocolNumber, false
	case f == family4:
		return ipv4.ProtocolNumber, false
	case f == family6:
		return ipv6.ProtocolNumber, true
	}
	return ipv6.ProtocolNumber, false
}

// errnoOf turns gVisor's errors into the errno a kernel socket would give,
// so callers (SOCKS5 replies, logs) can use errors.Is as with real sockets.
func errnoOf(err tcpip.Error) error {
	switch err.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrPortInUse:
		return syscall.EADDRINUSE
	case *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL
	}
	return errors.New(err.String())
}

// DialContext connects to address ("ip:port", IP literal only) over the
// overlay. network is tcp, tcp4, tcp6, udp, udp4 or udp6. A TCP dial stops
// when ctx ends or the stack closes.
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("netstack: %s: %w", address, err)}
	}
	isTCP := true
	f, err := parseNetwork(network, "tcp")
	if err != nil {
		if f, err = parseNetwork(network, "udp"); err != nil {
			return nil, opErr(fmt.Errorf("unsupported network %q (want tcp, tcp4, tcp6, udp, udp4 or udp6)", network))
		}
		isTCP = false
	}
	ip, port, err := ParseAddr(address, false)
	if err == nil && port == 0 {
		err = errors.New("port 0 cannot be dialed")
	}
	if err == nil {
		err = checkFamily(f, ip)
	}
	if err != nil {
		return nil, opErr(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr(err)
	}
	if isTCP {
		c, err := s.dialTCP(ctx, ip, port)
		if err != nil {
			return nil, opErr(err)
		}
		return c, nil
	}
	c, err := s.udpEndpoint(protoOf(ip), false, nil, &tcpip.FullAddress{Addr: tcpip.AddrFromSlice(ip.AsSlice()), Port: port})
	if err != nil {
		return nil, opErr(err)
	}
	return c, nil
}

func (s *Stack) dialTCP(ctx context.Context, ip netip.Addr, port uint16) (net.Conn, error) {
	var wq waiter.Queue
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, net.ErrClosed
	}
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, protoOf(ip), &wq)
	if terr != nil {
		s.mu.RUnlock()
		return nil, fmt.Errorf("new TCP endpoint: %w", errnoOf(terr))
	}
	terr = ep.Connect(fullAddr(ip, port))
	s.mu.RUnlock()

	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		select {
		case <-notify:
			terr = ep.LastError()
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-s.done:
			ep.Close()
			return nil, net.ErrClosed
		}
	}
	if terr != nil {
		ep.Close()
		return nil, errnoOf(terr)
	}
	return gonet.NewTCPConn(&wq, ep), nil
}

// listenError wraps errors of Listen and ListenPacket as the net package
// does.
func listenError(network, address string) func(error) error {
	return func(err error) error {
		return &net.OpError{Op: "listen", Net: network, Err: fmt.Errorf("netstack: %s: %w", address, err)}
	}
}

// parseListen checks a listen network ("tcp"/"udp" family given by want)
// and address, and says which protocol to bind and whether IPv6-only.
func parseListen(network, address, want string) (ip netip.Addr, port uint16, proto tcpip.NetworkProtocolNumber, v6only bool, err error) {
	f, err := parseNetwork(network, want)
	if err != nil {
		return ip, 0, 0, false, err
	}
	ip, port, err = ParseAddr(address, true)
	if err == nil {
		err = checkFamily(f, ip)
	}
	if err != nil {
		return ip, 0, 0, false, err
	}
	proto, v6only = bindProto(f, ip)
	return ip, port, proto, v6only, nil
}

// Listen accepts TCP connections on address: "ip:port" for one of the node's
// addresses, or ":port" for any of them (both IP versions on "tcp"). Port 0
// picks a free port; read it from the listener's Addr.
func (s *Stack) Listen(network, address string) (net.Listener, error) {
	opErr := listenError(network, address)
	ip, port, proto, v6only, err := parseListen(network, address, "tcp")
	if err != nil {
		return nil, opErr(err)
	}

	var wq waiter.Queue
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, opErr(net.ErrClosed)
	}
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, opErr(fmt.Errorf("new TCP endpoint: %w", errnoOf(terr)))
	}
	if v6only {
		ep.SocketOptions().SetV6Only(true)
	}
	if terr := ep.Bind(fullAddr(ip, port)); terr != nil {
		ep.Close()
		return nil, opErr(fmt.Errorf("bind: %w", errnoOf(terr)))
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, opErr(fmt.Errorf("listen: %w", errnoOf(terr)))
	}
	return &listener{TCPListener: gonet.NewTCPListener(s.stack, &wq, ep), s: s}, nil
}

// listener reports net.ErrClosed from Accept once it or its stack is
// closed, as a kernel listener does, so accept loops can tell shutdown from
// failure.
type listener struct {
	*gonet.TCPListener
	s      *Stack
	closed atomic.Bool
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.TCPListener.Accept()
	if err != nil {
		if l.closed.Load() || l.s.isClosed() {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
		}
		return nil, err
	}
	return c, nil
}

func (l *listener) Close() error {
	l.closed.Store(true)
	return l.TCPListener.Close()
}

func (s *Stack) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// ListenPacket opens a UDP socket on address ("ip:port" or ":port"; both IP
// versions on "udp" with no address).
func (s *Stack) ListenPacket(network, address string) (net.PacketConn, error) {
	opErr := listenError(network, address)
	ip, port, proto, v6only, err := parseListen(network, address, "udp")
	if err != nil {
		return nil, opErr(err)
	}
	local := fullAddr(ip, port)
	c, err := s.udpEndpoint(proto, v6only, &local, nil)
	if err != nil {
		return nil, opErr(err)
	}
	return c, nil
}

func (s *Stack) udpEndpoint(proto tcpip.NetworkProtocolNumber, v6only bool, local, remote *tcpip.FullAddress) (*udpConn, error) {
	var wq waiter.Queue
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, net.ErrClosed
	}
	ep, terr := s.stack.NewEndpoint(udp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("new UDP endpoint: %w", errnoOf(terr))
	}
	if v6only {
		ep.SocketOptions().SetV6Only(true)
	}
	if local != nil {
		if terr := ep.Bind(*local); terr != nil {
			ep.Close()
			return nil, fmt.Errorf("bind: %w", errnoOf(terr))
		}
	}
	if remote != nil {
		if terr := ep.Connect(*remote); terr != nil {
			ep.Close()
			return nil, fmt.Errorf("connect: %w", errnoOf(terr))
		}
	}
	return &udpConn{UDPConn: gonet.NewUDPConn(&wq, ep)}, nil
}

// udpConn accepts any net.Addr in WriteTo whose string is "ip:port" (gonet
// would panic on anything but *net.UDPAddr) and gives gVisor addresses of the
// right length for their IP version.
type udpConn struct {
	*gonet.UDPConn
}

func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var ap netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return 0, &net.OpError{Op: "write", Net: "udp", Err: errors.New("netstack: missing destination address")}
	default:
		var err error
		if ap, err = netip.ParseAddrPort(addr.String()); err != nil {
			return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: fmt.Errorf("netstack: destination %q: %w", addr.String(), err)}
		}
	}
	ip := ap.Addr().Unmap()
	return c.UDPConn.WriteTo(b, &net.UDPAddr{IP: ip.AsSlice(), Port: int(ap.Port())})
}
