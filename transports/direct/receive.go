package direct

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/plures/plurenet/internal/mesh"
)

// idlePoll is how long the idle reader blocks before checking whether a
// Bind opened and wants the socket: the longest Bind.Open waits before the
// device's ReceiveFunc is the only reader. It costs four wakeups a second
// only while no device reads (the device is down).
const idlePoll = 250 * time.Millisecond

// idleBatch is how many datagrams the idle reader takes per recvmmsg; it
// sees ICE traffic and, rarely, WireGuard packets for Config.Deliver.
const idleBatch = 16

// maxDatagram is the idle reader's buffer size: one byte more than the
// largest sealed mesh message (mesh.MaxSealed), which is beyond any
// WireGuard message the overlay MTU produces, so that a larger datagram,
// truncated by the kernel, is still too large to pass for one.
const maxDatagram = mesh.MaxSealed + 1

// reader hands the socket to one reader at a time: the device's
// ReceiveFunc while a Bind has it open, otherwise the idle reader, so ICE
// keeps working while the device is down. Hand-over is not exact (for a
// moment both may read), which is harmless: each datagram is read once
// and handled by whoever reads it.
type reader struct {
	t *Transport

	mu      sync.Mutex
	cond    *sync.Cond
	gen     *recvGen // the open generation, nil if none
	closing bool
}

// recvGen is one Bind open period.
type recvGen struct {
	closed atomic.Bool
	msgs   []ipv4.Message
}

func (r *reader) init(t *Transport) {
	r.t = t
	r.cond = sync.NewCond(&r.mu)
}

func (r *reader) shutdown() {
	r.mu.Lock()
	r.closing = true
	r.cond.Broadcast()
	r.mu.Unlock()
}

// idleLoop reads the socket while no generation is open.
func (r *reader) idleLoop() {
	t := r.t
	ms := *newMsgs(idleBatch)
	bufs := make([][]byte, idleBatch)
	for i := range bufs {
		bufs[i] = make([]byte, maxDatagram)
	}
	sizes := make([]int, idleBatch)
	for {
		r.mu.Lock()
		for r.gen != nil && !r.closing {
			r.cond.Wait()
		}
		closing := r.closing
		r.mu.Unlock()
		if closing {
			return
		}
		// A deadline (never a cleared one) so that an opening generation
		// takes the socket over within idlePoll; see recvGen.receive.
		if err := t.udp.SetReadDeadline(time.Now().Add(idlePoll)); err != nil {
			return // closed
		}
		for i := range ms {
			ms[i].Buffers[0] = bufs[i]
		}
		n, err := t.pc4.ReadBatch(ms, 0)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Debug("direct: read", "err", err)
			time.Sleep(idlePoll) // a persistent error must not spin
			continue
		}
		now := t.now()
		for i := range n {
			sizes[i] = ms[i].N
			from := addrOf(ms[i].Addr)
			p := t.dispatch(bufs[i][:ms[i].N], from, now)
			if p == nil {
				continue
			}
			if t.cfg.Deliver == nil {
				t.stats.dropNoDeliver.Add(1)
				continue
			}
			pkt := make([]byte, ms[i].N)
			copy(pkt, bufs[i])
			t.cfg.Deliver(p.key, pkt)
		}
	}
}

func addrOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// dispatch handles one datagram: STUN is copied to ICE, sealed mesh
// messages to OnMesh, WireGuard from a validated path returns its peer (the
// caller hands the packet to the device), everything else is dropped and
// counted. Any packet from a
// validated path proves the path alive.
func (t *Transport) dispatch(b []byte, from netip.AddrPort, now int64) *peer {
	if t.stats.blackhole.Load() {
		t.stats.dropBlackholed.Add(1)
		return nil
	}
	switch classify(b) {
	case classWireGuard:
		p := (*t.byAddr.Load())[from]
		if p == nil {
			t.stats.dropUnknownSrc.Add(1)
			return nil
		}
		p.touch(from, now)
		t.stats.wgIn.Add(1)
		return p
	case classSTUN:
		if p := (*t.byAddr.Load())[from]; p != nil {
			p.touch(from, now)
		}
		t.stats.stunIn.Add(1)
		t.stun.deliver(b, from)
		return nil
	case classMesh:
		t.deliverMesh(b, from)
		return nil
	default:
		t.stats.dropOther.Add(1)
		return nil
	}
}

// OpenReceive implements transports.BatchReceiver: the returned function
// reads batches from the socket (recvmmsg) straight into the device's
// buffers, diverts STUN packets to ICE, and marks every packet that is not
// WireGuard from a validated path as size 0, which the device skips.
// stop makes it return net.ErrClosed promptly.
func (t *Transport) OpenReceive() (conn.ReceiveFunc, func()) {
	g := &recvGen{msgs: *newMsgs(transportsBatch)}
	r := &t.rd
	r.mu.Lock()
	r.gen = g
	r.mu.Unlock()
	// Wake the idle reader now rather than at its next poll.
	_ = t.udp.SetReadDeadline(time.Now())
	stop := func() {
		if g.closed.Swap(true) {
			return
		}
		// Kick a blocked receive; see receive for why this is race-free.
		_ = t.udp.SetReadDeadline(time.Now())
		r.mu.Lock()
		if r.gen == g {
			r.gen = nil
			r.cond.Broadcast()
		}
		r.mu.Unlock()
	}
	fn := func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		return t.receive(g, packets, sizes, eps)
	}
	return fn, stop
}

// receive is one call of a generation's ReceiveFunc.
//
// Deadlines are the only way to interrupt a blocked read without closing
// the socket. Only this function ever clears the deadline, and it clears
// before it checks g.closed, while stop sets g.closed before it sets a
// past deadline: so either the check sees closed, or the deadline stop
// sets comes after the clear and interrupts the read. Deadlines left by the
// idle reader merely cause one spurious timeout.
func (t *Transport) receive(g *recvGen, packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	ms := g.msgs[:min(len(packets), len(g.msgs))]
	for i := range ms {
		ms[i].Buffers[0] = packets[i]
	}
	for {
		if g.closed.Load() {
			return 0, net.ErrClosed
		}
		n, err := t.pc4.ReadBatch(ms, 0)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if g.closed.Load() {
					return 0, net.ErrClosed
				}
				if err := t.udp.SetReadDeadline(time.Time{}); err != nil {
					return 0, net.ErrClosed
				}
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return 0, net.ErrClosed
			}
			return 0, err
		}
		now := t.now()
		for i := range n {
			p := t.dispatch(packets[i][:ms[i].N], addrOf(ms[i].Addr), now)
			if p == nil {
				sizes[i] = 0
				continue
			}
			sizes[i] = ms[i].N
			eps[i] = p.ep
		}
		return n, nil
	}
}
