package direct

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/plures/plurenet/transports"
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

type divertPacket struct {
	b    []byte
	from netip.AddrPort
}

// divertConn is a net.PacketConn over the Transport's one socket for a
// protocol that is not WireGuard: ICE's UDP mux (STUN) and the Mainline DHT
// node. It reads only the datagrams the Transport's readers divert to it
// (bounded queue, bounded size, optionally a rate), and writes straight to
// the shared socket, so the peer sees the socket's address (and a NAT the
// mapping WireGuard uses). Closing it does not close the socket (the
// Transport owns that).
type divertConn struct {
	udp   *net.UDPConn
	kind  transports.Payload // what it reads and may write
	max   int                // largest datagram, either way
	queue chan divertPacket
	pool  sync.Pool
	in    *rate.Limiter // nil: no rate bound on received datagrams
	out   *rate.Limiter // nil: no rate bound on sent datagrams

	closeOnce sync.Once
	closed    chan struct{}
	drops     atomic.Uint64 // received and dropped: too large, over rate, queue full
	outDrops  atomic.Uint64 // sends refused over rate
}

func newDivertConn(udp *net.UDPConn, kind transports.Payload, queue, maxPacket int, in, out *rate.Limiter) *divertConn {
	return &divertConn{
		udp:    udp,
		kind:   kind,
		max:    maxPacket,
		queue:  make(chan divertPacket, queue),
		in:     in,
		out:    out,
		closed: make(chan struct{}),
		pool:   sync.Pool{New: func() any { b := make([]byte, maxPacket); return &b }},
	}
}

func newSTUNConn(udp *net.UDPConn) *divertConn {
	return newDivertConn(udp, transports.PayloadSTUN, stunQueue, maxSTUNPacket, nil, nil)
}

// deliver copies a datagram for the reader; it never blocks.
func (c *divertConn) deliver(b []byte, from netip.AddrPort) {
	if len(b) > c.max || (c.in != nil && !c.in.Allow()) {
		c.drops.Add(1)
		return
	}
	bp := c.pool.Get().(*[]byte)
	buf := (*bp)[:len(b)]
	copy(buf, b)
	select {
	case c.queue <- divertPacket{b: buf, from: from}:
	default:
		c.pool.Put(bp)
		c.drops.Add(1)
	}
}

// ReadFrom returns the next diverted datagram. After Close it returns
// io.EOF, which ICE's mux takes as a clean end. It ends only with Close,
// not with the Transport: the DHT node takes any other read error for a
// crash.
func (c *divertConn) ReadFrom(p []byte) (int, net.Addr, error) {
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

// errDivertRate is a send refused over the rate bound.
var errDivertRate = errors.New("direct: over the send rate")

// WriteTo sends a datagram on the shared socket. A conn with a send rate
// sends only its own kind of datagram (the DHT node cannot be made to
// send something WireGuard or ICE would take), to an address a peer's
// socket can have.
func (c *divertConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	if c.out != nil {
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			return 0, fmt.Errorf("direct: %v sending to %v: not a UDP address", c.kind, addr)
		}
		to := ua.AddrPort()
		to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
		switch {
		case len(p) > c.max || transports.Classify(p) != c.kind:
			return 0, fmt.Errorf("direct: %v sending %d bytes to %s: not a %v datagram", c.kind, len(p), to, c.kind)
		case !ValidRemote(to):
			return 0, fmt.Errorf("direct: %v sending to %s: want a unicast address and a port", c.kind, to)
		case !c.out.Allow():
			c.outDrops.Add(1)
			return 0, errDivertRate
		}
		return c.udp.WriteToUDPAddrPort(p, to)
	}
	return c.udp.WriteTo(p, addr)
}

// Close ends reads and writes; it is idempotent.
func (c *divertConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *divertConn) LocalAddr() net.Addr { return c.udp.LocalAddr() }

// Deadlines are not supported on the diverted stream; ICE's mux sets a
// write deadline only to abort writes at shutdown, the DHT node none, and
// our writes do not block for long (UDP).
func (c *divertConn) SetDeadline(time.Time) error      { return nil }
func (c *divertConn) SetReadDeadline(time.Time) error  { return nil }
func (c *divertConn) SetWriteDeadline(time.Time) error { return nil }
