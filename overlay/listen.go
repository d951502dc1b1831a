package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
)

// overlayListener is a TCP listener on this node's overlay addresses and
// nothing else, for the kernel TUN adapter. There a host socket on ":port"
// would listen on every interface of the host, so a service exposed to
// members (--expose, which forwards to the host's loopback) would be open
// to the LAN too. Instead it holds one socket per overlay address, and
// follows the addresses when they move (the IPv4 collision rule can move
// this node's IPv4 at run time; see rebind).
type overlayListener struct {
	network string // "tcp", "tcp4" or "tcp6": which families to bind
	lc      net.ListenConfig
	release func(*overlayListener) // unregisters from the adapter

	conns chan net.Conn // accepted connections, handed to Accept
	errs  chan error    // accept and rebind errors, handed to Accept
	done  chan struct{} // closed by Close

	mu      sync.Mutex
	port    int                           // fixed once the first socket is bound (":0" picks one)
	socks   map[netip.Addr]*overlaySocket // current sockets by address
	closed  bool
	wg      sync.WaitGroup // the accept goroutines
	closing sync.Once
}

// overlaySocket is one bound socket of an overlayListener.
type overlaySocket struct {
	ln      net.Listener
	retired bool // closed by rebind, not failed; guarded by overlayListener.mu
}

// newOverlayListener binds port on those of addrs that network covers.
func newOverlayListener(network string, port int, addrs []netip.Addr, release func(*overlayListener)) (*overlayListener, error) {
	l := &overlayListener{
		network: network,
		conns:   make(chan net.Conn),
		errs:    make(chan error, 1),
		done:    make(chan struct{}),
		port:    port,
		socks:   make(map[netip.Addr]*overlaySocket),
	}
	l.mu.Lock()
	err := l.bindLocked(addrs)
	l.mu.Unlock()
	if err != nil {
		l.Close()
		return nil, err
	}
	l.release = release // not before: the caller may hold what release takes
	return l, nil
}

// covers reports whether the listener binds addresses of a's family.
func (l *overlayListener) covers(a netip.Addr) bool {
	switch l.network {
	case "tcp4":
		return a.Is4()
	case "tcp6":
		return a.Is6()
	}
	return a.IsValid()
}

// bindLocked makes the sockets match addrs: new addresses are bound first,
// then sockets on addresses that are gone are closed. l.mu must be held.
func (l *overlayListener) bindLocked(addrs []netip.Addr) error {
	var want []netip.Addr
	for _, a := range addrs {
		if l.covers(a) {
			want = append(want, a)
		}
	}
	if len(want) == 0 {
		return fmt.Errorf("listen %s: this node has no overlay address of that family", l.network)
	}
	for _, a := range want {
		if l.socks[a] != nil {
			continue
		}
		ln, err := l.lc.Listen(context.Background(), l.network, netip.AddrPortFrom(a, uint16(l.port)).String())
		if err != nil {
			return fmt.Errorf("listen on overlay address %s: %w", a, err)
		}
		if l.port == 0 {
			// Every address gets the same port, chosen by the first.
			l.port = int(ln.Addr().(*net.TCPAddr).AddrPort().Port())
		}
		s := &overlaySocket{ln: ln}
		l.socks[a] = s
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.acceptLoop(s)
		}()
	}
	for a, s := range l.socks {
		if !slices.Contains(want, a) {
			s.retired = true
			s.ln.Close()
			delete(l.socks, a)
		}
	}
	return nil
}

// rebind follows the node's overlay addresses after they changed. A
// failure (another program took the port on the new address) is handed to
// Accept: serving on the old address alone would look healthy and not be.
func (l *overlayListener) rebind(addrs []netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if err := l.bindLocked(addrs); err != nil {
		select {
		case l.errs <- err:
		default: // one error pending is enough to stop the caller
		}
	}
}

// acceptLoop accepts on one socket until it is retired or closed.
func (l *overlayListener) acceptLoop(s *overlaySocket) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			l.mu.Lock()
			quiet := s.retired || l.closed
			l.mu.Unlock()
			if quiet {
				return
			}
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				continue // Accept's caller backs off, as for any listener
			}
			return
		}
		select {
		case l.conns <- c:
		case <-l.done:
			c.Close()
			return
		}
	}
}

// Accept returns the next connection to any of the overlay addresses.
func (l *overlayListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes every socket and waits for the accept goroutines. It is
// idempotent.
func (l *overlayListener) Close() error {
	l.closing.Do(func() {
		l.mu.Lock()
		l.closed = true
		close(l.done)
		for _, s := range l.socks {
			s.ln.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
		if l.release != nil {
			l.release(l)
		}
	})
	return nil
}

// Addr is the address of the IPv4 socket (else the IPv6 one) at the time of
// the call.
func (l *overlayListener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best net.Addr
	for a, s := range l.socks {
		if best == nil || a.Is4() {
			best = s.ln.Addr()
		}
	}
	if best == nil {
		return &net.TCPAddr{Port: l.port}
	}
	return best
}
