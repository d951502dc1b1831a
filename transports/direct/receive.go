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

	"github.com/plures/plurenet/transports"
)

// idlePoll is how long the idle reader blocks before checking whether a
// Bind opened and wants the socket: the longest Bind.Open waits before the
// device's ReceiveFunc is the only reader. It costs four wakeups a second
// only while no device reads (the device is down).
const idlePoll = 250 * time.Millisecond

// idleBatch is how many messages the idle reader takes per recvmmsg; it
// sees ICE traffic and, rarely, WireGuard packets for Config.Deliver. With
// GRO a message may be a coalesced run of datagrams, so few are needed.
const idleBatch = 4

// recvBufSize is the idle reader's buffer size: the largest UDP payload,
// so that no datagram and no coalesced run is truncated.
const recvBufSize = 1<<16 - 1

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
	ms := newRecvMsgs(idleBatch)
	bufs := make([][]byte, idleBatch)
	for i := range bufs {
		bufs[i] = make([]byte, recvBufSize)
	}
	for {
		r.mu.Lock()
		for r.gen != nil && !r.closing {
			r.cond.Wait()
		}
		if r.closing {
			r.mu.Unlock()
			return
		}
		// A deadline (never a cleared one) so that an opening generation
		// takes the socket over within idlePoll; see recvGen.receive. It
		// is set under r.mu, so the past deadline OpenReceive sets after
		// storing the generation comes later and ends this read at once
		// (unless the new generation's receive clears it first: then this
		// read ends with the next datagram, handled here, as before).
		err := t.udp.SetReadDeadline(time.Now().Add(idlePoll))
		r.mu.Unlock()
		if err != nil {
			return // closed
		}
		for i := range ms {
			ms[i].Buffers[0] = bufs[i]
		}
		n, err := t.pc.ReadBatch(ms, 0)
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
			seg, ok := t.segmentSize(&ms[i])
			if !ok {
				continue
			}
			from := addrOf(ms[i].Addr)
			msg := bufs[i][:ms[i].N]
			for off := 0; off < len(msg); off += seg {
				d := msg[off:min(off+seg, len(msg))]
				p := t.dispatch(d, from, now)
				if p == nil {
					continue
				}
				if t.cfg.Deliver == nil {
					t.stats.dropNoDeliver.Add(1)
					continue
				}
				t.cfg.Deliver(p.key, d)
			}
		}
	}
}

// newRecvMsgs returns n messages with one buffer slot each and a control
// buffer for GRO's segment size.
func newRecvMsgs(n int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = make([][]byte, 1)
		if oobSize > 0 {
			ms[i].OOB = make([]byte, oobSize)
		}
	}
	return ms
}

// segmentSize returns the size of the datagrams a received message holds
// (the last one may be shorter): GRO's segment size for a coalesced run,
// else the whole message. ok is false for a message to drop: empty, or
// truncated (then its datagrams cannot be told apart).
func (t *Transport) segmentSize(m *ipv4.Message) (seg int, ok bool) {
	if m.N == 0 || m.Flags&recvTruncated != 0 {
		t.stats.dropOther.Add(1)
		return 0, false
	}
	if t.gro {
		if s := groSegmentSize(m.OOB[:m.NN]); s > 0 {
			return s, true
		}
	}
	return m.N, true
}

func addrOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// dispatch handles one datagram: STUN is copied to ICE, sealed mesh
// messages to OnMesh, KRPC to the DHT node (DHTConn), WireGuard from a validated path returns its peer (the
// caller hands the packet to the device), everything else is dropped and
// counted. Any packet from a
// validated path proves the path alive.
func (t *Transport) dispatch(b []byte, from netip.AddrPort, now int64) *peer {
	if t.stats.blackhole.Load() {
		t.stats.dropBlackholed.Add(1)
		return nil
	}
	switch transports.Classify(b) {
	case transports.PayloadWireGuard:
		p := (*t.byAddr.Load())[from]
		if p == nil {
			t.stats.dropUnknownSrc.Add(1)
			return nil
		}
		p.touchWireGuard(from, now)
		t.stats.wgIn.Add(1)
		return p
	case transports.PayloadSTUN:
		if p := (*t.byAddr.Load())[from]; p != nil {
			if dp := p.path.Load(); dp != nil && dp.addr == from && dp.probeAnswer(b, now) {
				return nil // the answer to a probe of ours (probe.go)
			}
			p.touch(from, now)
		}
		t.stats.stunIn.Add(1)
		t.stun.deliver(b, from)
		return nil
	case transports.PayloadSealed:
		t.deliverMesh(b, from)
		return nil
	case transports.PayloadDHT:
		t.deliverDHT(b, from)
		return nil
	default:
		t.stats.dropOther.Add(1)
		return nil
	}
}

// OpenReceive implements transports.BatchReceiver: the returned function
// reads batches from the socket (recvmmsg) into the device's buffers,
// splits coalesced runs (GRO), diverts STUN packets to ICE and sealed mesh
// messages to OnMesh, and returns only the WireGuard packets from
// validated paths. stop makes it return net.ErrClosed promptly.
func (t *Transport) OpenReceive() (conn.ReceiveFunc, func()) {
	g := &recvGen{msgs: newRecvMsgs(transportsBatch)}
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
//
// With GRO one message may hold up to gsoMaxSegments datagrams, so only as
// many messages are read as the batch can hold once split: into its last
// slots, from where each WireGuard datagram is copied forward to the next
// free slot at the front (wireguard-go's own socket does the same). The
// slot of a message not yet split is never written: a run too long for
// the rest of the batch (possible only when the device passes fewer than
// gsoMaxSegments buffers) loses its excess, counted.
func (t *Transport) receive(g *recvGen, packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	k := len(packets)
	if t.gro {
		k = max(1, len(packets)/gsoMaxSegments)
	}
	k = min(k, len(g.msgs))
	readAt := len(packets) - k
	ms := g.msgs[:k]
	for i := range ms {
		ms[i].Buffers[0] = packets[readAt+i]
	}
	for {
		if g.closed.Load() {
			return 0, net.ErrClosed
		}
		n, err := t.pc.ReadBatch(ms, 0)
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
		out := 0
		for i := range n {
			seg, ok := t.segmentSize(&ms[i])
			if !ok {
				continue
			}
			from := addrOf(ms[i].Addr)
			msg := packets[readAt+i][:ms[i].N]
			for off := 0; off < len(msg); off += seg {
				d := msg[off:min(off+seg, len(msg))]
				p := t.dispatch(d, from, now)
				if p == nil {
					continue
				}
				// Slots after readAt+i hold messages not split yet; slot
				// readAt+i itself is this message's, and d never
				// overlaps what is copied there (off >= len(d), or d is
				// already in place).
				if out > readAt+i || len(packets[out]) < len(d) {
					t.stats.dropBatchFull.Add(1)
					continue
				}
				sizes[out] = copy(packets[out], d)
				eps[out] = p.ep
				out++
			}
		}
		return out, nil
	}
}
