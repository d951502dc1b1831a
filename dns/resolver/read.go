package resolver

import (
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// errDropped tells the library's read loop that a message was dropped by
// admission. It is a temporary net.Error, which the loop skips over (the
// library still checks for shutdown between reads); over TCP any read
// error ends the connection, which is what a dropped query deserves.
var errDropped net.Error = dropped{}

type dropped struct{}

func (dropped) Error() string   { return "dns: query dropped by source or rate limit" }
func (dropped) Timeout() bool   { return false }
func (dropped) Temporary() bool { return true }

// decorate wraps the library's reader so that admission runs on every
// message before a byte of it is parsed.
func (s *Server) decorate(r dns.Reader) dns.Reader {
	// The library's own reader implements PacketConnReader, which a
	// generic net.PacketConn (the userspace stack's) needs.
	return reader{inner: r.(dns.PacketConnReader), s: s}
}

type reader struct {
	inner dns.PacketConnReader
	s     *Server
}

func (r reader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	if !r.s.admit(conn.RemoteAddr(), "tcp") {
		return nil, errDropped
	}
	// The library's reader bounds the message by its 16-bit length and
	// guards the read deadline against a concurrent shutdown.
	return r.inner.ReadTCP(conn, timeout)
}

func (r reader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	m, sess, err := r.inner.ReadUDP(conn, timeout)
	if err != nil {
		return nil, nil, err
	}
	if !r.s.admit(sess.RemoteAddr(), "udp") {
		return nil, nil, errDropped
	}
	return m, sess, nil
}

func (r reader) ReadPacketConn(conn net.PacketConn, timeout time.Duration) ([]byte, net.Addr, error) {
	m, from, err := r.inner.ReadPacketConn(conn, timeout)
	if err != nil {
		return nil, nil, err
	}
	if !r.s.admit(from, "udp") {
		return nil, nil, errDropped
	}
	return m, from, nil
}

// admit runs admission for one message or connection from src and counts
// the drops.
func (s *Server) admit(src net.Addr, network string) bool {
	switch s.adm.check(addrOf(src), time.Now()) {
	case deniedSource:
		s.droppedSource.Add(1)
		s.log.Debug("dropped: source not allowed", "net", network, "from", src)
		return false
	case deniedRate:
		s.droppedRate.Add(1)
		s.log.Debug("dropped: over rate", "net", network, "from", src)
		return false
	}
	return true
}

// listener closes, as soon as it accepts them, connections from sources
// admission refuses and connections beyond MaxTCPConns, so the library
// never spends a goroutine or a read timeout on them.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !l.s.admit(c.RemoteAddr(), "tcp") {
			c.Close()
			continue
		}
		select {
		case l.s.slots <- struct{}{}:
			return &conn{Conn: c, slots: l.s.slots}, nil
		default:
			l.s.droppedBusy.Add(1)
			l.s.log.Debug("dropped: all TCP slots taken", "from", c.RemoteAddr())
			c.Close()
		}
	}
}

// conn gives its slot back when the library closes it.
type conn struct {
	net.Conn
	slots chan struct{}
	once  sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() { <-c.slots })
	return c.Conn.Close()
}
