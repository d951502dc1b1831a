package direct

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// stunQueue bounds STUN packets read from the socket and not yet taken by
// ICE. ICE traffic is a few packets per second per peer; 256 absorbs a
// burst of checks from a large mesh, and a flood of STUN from an attacker
// can only fill the queue (excess is dropped and counted), not memory.
const stunQueue = 256

// maxSTUNPacket is the largest STUN datagram passed to ICE. Binding
// requests and responses from ICE agents are ~100 bytes; anything near the
// MTU is not ours.
const maxSTUNPacket = 1500

type stunPacket struct {
	b    []byte
	from netip.AddrPort
}

// stunConn is the net.PacketConn ICE's UDP mux sees: it reads only the STUN
// packets the Transport's readers divert to it, and writes straight to the
// shared socket. Closing it does not close the socket (the Transport owns
// that).
type stunConn struct {
	udp   *net.UDPConn
	queue chan stunPacket
	pool  sync.Pool

	closeOnce sync.Once
	closed    chan struct{}
	drops     atomic.Uint64
}

func newSTUNConn(udp *net.UDPConn) *stunConn {
	return &stunConn{
		udp:    udp,
		queue:  make(chan stunPacket, stunQueue),
		closed: make(chan struct{}),
		pool:   sync.Pool{New: func() any { b := make([]byte, maxSTUNPacket); return &b }},
	}
}

// deliver copies a STUN packet for ICE; it never blocks.
func (c *stunConn) deliver(b []byte, from netip.AddrPort) {
	if len(b) > maxSTUNPacket {
		c.drops.Add(1)
		return
	}
	bp := c.pool.Get().(*[]byte)
	buf := (*bp)[:len(b)]
	copy(buf, b)
	select {
	case c.queue <- stunPacket{b: buf, from: from}:
	default:
		c.pool.Put(bp)
		c.drops.Add(1)
	}
}

// ReadFrom returns the next diverted STUN packet. After Close it returns
// io.EOF, which ICE's mux takes as a clean end.
func (c *stunConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pk := <-c.queue:
		n := copy(p, pk.b)
		buf := pk.b[:cap(pk.b)]
		c.pool.Put(&buf)
		return n, net.UDPAddrFromAddrPort(pk.from), nil
	case <-c.closed:
		return 0, nil, io.EOF
	}
}

// WriteTo sends an ICE packet on the shared socket.
func (c *stunConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.udp.WriteTo(p, addr)
}

func (c *stunConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *stunConn) LocalAddr() net.Addr { return c.udp.LocalAddr() }

// Deadlines are not supported on the diverted stream; ICE's mux sets a
// write deadline only to abort writes at shutdown, and our writes do not
// block for long (UDP).
func (c *stunConn) SetDeadline(time.Time) error      { return nil }
func (c *stunConn) SetReadDeadline(time.Time) error  { return nil }
func (c *stunConn) SetWriteDeadline(time.Time) error { return nil }
