package transports

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/plures/plurenet/internal/nodekey"
)

// Transport is one way to reach peers. The Bind calls only these methods, so
// any path (a relay client, a direct UDP socket) can join it.
type Transport interface {
	// Name identifies the path in status output, e.g. "relay:wss://a.example".
	Name() string
	// Reachable reports whether the transport can deliver to peer now.
	Reachable(peer nodekey.Public) bool
	// Send sends one packet to peer without blocking. It returns an error
	// when the packet could not be handed to the network; the caller may
	// try another transport.
	Send(peer nodekey.Public, pkt []byte) error
}

// BatchSender is implemented by a transport that sends several packets to
// one peer in one system call (sendmmsg). The Bind hands it a device batch
// whole instead of calling Send per packet.
type BatchSender interface {
	SendBatch(peer nodekey.Public, pkts [][]byte) error
}

// BatchReceiver is implemented by a transport that reads its own socket
// and can fill the device's buffers directly (recvmmsg into them: no copy,
// no queue), instead of handing packets to Deliver.
//
// Bind.Open calls OpenReceive on every transport that implements it and
// gives the returned function to the device beside the Bind's own; the
// function must fill in Endpoint values and may report a packet it did not
// keep as size 0 (the device skips it). Bind.Close calls stop, after which
// the function must return net.ErrClosed promptly, including a call
// blocked at that moment. A transport set while the Bind is open gets its
// function only at the next Open (the device's BindUpdate).
type BatchReceiver interface {
	OpenReceive() (fn conn.ReceiveFunc, stop func())
}

// inboundQueue bounds packets delivered by transports and not yet read by
// the WireGuard device. 4096 packets of ~1.4 KB is ~6 MB: several
// milliseconds at gigabit rates, enough to absorb bursts, while a stalled
// device cannot grow memory (excess is dropped like a full UDP socket
// buffer, and WireGuard's inner TCP retransmits).
const inboundQueue = 4096

// ErrNoPath is returned by Send when no transport can reach the peer.
var ErrNoPath = errors.New("no path to peer")

// ErrCongested marks a transport's send error that means "the path is up
// but dropped this packet" (a full queue, a rate limit). The Bind counts the
// drop and reports success, as a UDP socket does when its queue overflows:
// moving the packet to another transport would reorder the flow, and an
// error would make wireguard-go log every dropped packet.
var ErrCongested = errors.New("path congested, packet dropped")

// BindConfig configures a Bind. The zero value is usable.
type BindConfig struct {
	Logger *slog.Logger
}

// Bind is a conn.Bind whose endpoints are peer keys and whose packets travel
// over a list of transports in preference order.
type Bind struct {
	log *slog.Logger

	mu         sync.Mutex
	transports []Transport
	paths      map[nodekey.Public]*pathState
	open       bool
	closed     chan struct{} // closed by Close; replaced by Open
	// inbox is the open Bind's queue of delivered packets, nil while
	// closed. Deliver reads it without the mutex: it runs per packet.
	inbox atomic.Pointer[chan inbound]
	stops []func() // of the BatchReceivers' functions, while open

	dropsFull  atomic.Uint64
	dropsNoRcv atomic.Uint64
	dropsNoPth atomic.Uint64

	dropsCongested atomic.Uint64

	hs     handshakes    // the last handshake message sent to each peer (handshake.go)
	inits  initiations   // initiations passed to the device lately (dupinit.go)
	copies atomic.Uint64 // packets also sent over a second path (tentative.go)

	// The packets the device holds each way (inflight.go): in, received
	// and not yet written to the adapter; out, read from the adapter and
	// not yet sent.
	in, out inflight
}

type inbound struct {
	from nodekey.Public
	buf  *[]byte // from InboundBuffer (or larger); the packet is (*buf)[off:]
	off  int
}

// Buffers of the inbox. A transport that reads on a goroutine of its own
// reads each message into one (InboundBuffer) and hands it over with the
// packet in it (DeliverBuffer); Deliver copies into one. Either way the
// receive path allocates nothing.
const (
	// InboundBufferSize fits a WireGuard message on a 1500-byte path (MTU plus
	// 32 bytes of WireGuard overhead) and a transport's framing around it
	// (the relay's Recv header is 33 bytes), with room to spare. Larger
	// packets (an MTU up to 9000 is allowed) get a buffer of their own,
	// which the garbage collector takes back.
	InboundBufferSize = 2048
)

var inboundPool = sync.Pool{New: func() any {
	b := make([]byte, 0, InboundBufferSize)
	return &b
}}

// InboundBuffer returns an empty buffer of InboundBufferSize bytes'
// capacity for a transport to read a message into and pass, with the
// packet in it, to DeliverBuffer. A buffer it does not deliver goes back
// with ReleaseInbound.
func InboundBuffer() *[]byte {
	b := inboundPool.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

// ReleaseInbound returns a buffer InboundBuffer gave and nothing holds any
// more. Buffers of another size are left to the garbage collector.
func ReleaseInbound(b *[]byte) {
	if cap(*b) != InboundBufferSize {
		return
	}
	inboundPool.Put(b)
}

// InboundCopy returns pkt copied into a buffer for DeliverBuffer.
func InboundCopy(pkt []byte) *[]byte {
	if len(pkt) > InboundBufferSize {
		b := append([]byte(nil), pkt...)
		return &b
	}
	b := InboundBuffer()
	*b = append(*b, pkt...)
	return b
}

type pathState struct {
	name    string
	changed time.Time
	changes int
	// packets counts WireGuard packets handed to a transport for this
	// peer. It is kept here, under the lock notePath takes per batch
	// anyway, so node metrics cost the send path no counter of their own.
	packets uint64
}

var _ conn.Bind = (*Bind)(nil)

// NewBind returns a closed Bind with no transports.
func NewBind(cfg BindConfig) *Bind {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	closed := make(chan struct{})
	close(closed)
	b := &Bind{
		log:    log,
		paths:  make(map[nodekey.Public]*pathState),
		closed: closed,
	}
	b.inits.redeliver = b.Deliver
	return b
}

// SetTransports replaces the transports, most preferred first.
func (b *Bind) SetTransports(ts ...Transport) {
	b.mu.Lock()
	b.transports = append([]Transport(nil), ts...)
	b.mu.Unlock()
}

// Open starts accepting delivered packets. The port is meaningless for
// key-addressed endpoints and reported back unchanged.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	b.open = true
	b.closed = make(chan struct{})
	recv := make(chan inbound, inboundQueue)
	b.inbox.Store(&recv)
	b.in.n.Store(0)
	fns := []conn.ReceiveFunc{b.in.gate(b.inits.filter(b.makeReceive(recv, b.closed)), b.closed)}
	b.stops = nil
	for _, t := range b.transports {
		r, ok := t.(BatchReceiver)
		if !ok {
			continue
		}
		fn, stop := r.OpenReceive()
		fns = append(fns, b.in.gate(b.inits.filter(fn), b.closed))
		b.stops = append(b.stops, stop)
	}
	return fns, port, nil
}

// Close stops the receive functions; they return net.ErrClosed.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		b.open = false
		b.inbox.Store(nil)
		close(b.closed)
		for _, stop := range b.stops {
			stop()
		}
		b.stops = nil
	}
	return nil
}

func (b *Bind) makeReceive(recv chan inbound, closed chan struct{}) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		var in inbound
		select {
		case in = <-recv:
		case <-closed:
			return 0, net.ErrClosed
		}
		n := 0
		for {
			sizes[n] = copy(packets[n], (*in.buf)[in.off:])
			ReleaseInbound(in.buf)
			eps[n] = Endpoint{Key: in.from}
			n++
			if n == len(packets) {
				return n, nil
			}
			select {
			case in = <-recv:
			default:
				return n, nil
			}
		}
	}
}

// Deliver hands a packet received from peer to the WireGuard device. It
// copies pkt (into a pooled buffer), so the caller keeps its buffer and may
// reuse it at once. It never blocks: when the device is not reading fast
// enough the packet is dropped and counted.
func (b *Bind) Deliver(from nodekey.Public, pkt []byte) {
	b.DeliverBuffer(from, InboundCopy(pkt), 0)
}

// DeliverBuffer is Deliver without the copy: the packet is (*buf)[off:],
// and buf, from InboundBuffer, belongs to the Bind from the call on. A
// transport that reads on its own goroutine (the relay's connection
// reader) reads each message into such a buffer and passes it on, so the
// packet is copied once between its socket and the device's buffer and
// changes goroutine once, here.
func (b *Bind) DeliverBuffer(from nodekey.Public, buf *[]byte, off int) {
	recv := b.inbox.Load()
	if recv == nil {
		ReleaseInbound(buf)
		b.dropsNoRcv.Add(1)
		return
	}
	select {
	case *recv <- inbound{from: from, buf: buf, off: off}:
	default:
		ReleaseInbound(buf)
		b.dropsFull.Add(1)
	}
}

// SetMark is a no-op: transports own their sockets.
func (b *Bind) SetMark(uint32) error { return nil }

// BatchSize is the most packets the device passes to Send or a ReceiveFunc.
//
// It is half of wireguard-go's conn.IdealBatchSize because the device
// keeps, for every receive function and for its adapter reads, one 64 KiB
// buffer per batch slot, idle or not: at 128 slots that was 24 MiB of a
// userspace node's 46 MiB live heap, so close to the node's memory limit
// (cmd/plurenet's nodeMemoryLimit) that the busier node collected garbage
// ~36 times a second, and every collection emptied the device's buffer
// pools, whose refills then allocated and zeroed ~140 MB/s of fresh 64 KiB
// buffers. At 64 slots it collects ~2 times a second, and the userspace
// path (lab row d) went from 2.49 to 2.77 Gbit/s (medians of four
// interleaved pairs). The device uses the larger of this and its adapter's
// batch, so a kernel TUN with offloads keeps wireguard-go's 128.
func (b *Bind) BatchSize() int { return bindBatchSize }

// bindBatchSize: see BatchSize.
const bindBatchSize = conn.IdealBatchSize / 2

// ParseEndpoint parses a peer key.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	return ParseEndpoint(s)
}

// Send sends bufs to the peer named by ep over the most preferred transport
// that reaches it, falling back down the list when a send fails.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	b.out.doneData(bufs) // sent or dropped, the device is done with them
	if isHandshake(bufs) {
		// Kept even if no path takes it now: a path that appears
		// later resends it (ResendHandshake).
		b.hs.remember(e.Key, bufs[0], time.Now())
	}
	return b.send(bufs, e)
}

func (b *Bind) send(bufs [][]byte, e Endpoint) error {
	b.mu.Lock()
	ts := b.transports
	b.mu.Unlock()
	var lastErr error
	for i, t := range ts {
		if !t.Reachable(e.Key) {
			continue
		}
		if lastErr = b.sendOn(t, e.Key, bufs); lastErr == nil {
			b.notePath(e.Key, t.Name(), len(bufs))
			if tt, ok := t.(TentativeSender); ok && tt.Tentative(e.Key) {
				b.sendCopy(ts[i+1:], e.Key, bufs)
			}
			return nil
		}
	}
	b.dropsNoPth.Add(uint64(len(bufs)))
	if lastErr != nil {
		return fmt.Errorf("peer %s: %w", e.Key.ShortString(), lastErr)
	}
	return fmt.Errorf("peer %s: %w", e.Key.ShortString(), ErrNoPath)
}

// sendOn sends bufs to peer over t. A congested path dropped packets but
// is up: that counts as sent.
func (b *Bind) sendOn(t Transport, peer nodekey.Public, bufs [][]byte) error {
	var err error
	if bs, ok := t.(BatchSender); ok {
		err = bs.SendBatch(peer, bufs)
	} else {
		for _, p := range bufs {
			err = t.Send(peer, p)
			if errors.Is(err, ErrCongested) {
				b.dropsCongested.Add(1)
				err = nil
				continue
			}
			if err != nil {
				break
			}
		}
	}
	if errors.Is(err, ErrCongested) {
		// A batch sender dropped some of the batch: the path is up.
		b.dropsCongested.Add(1)
		err = nil
	}
	return err
}

func (b *Bind) notePath(k nodekey.Public, name string, packets int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.paths[k]
	if p == nil {
		p = &pathState{}
		b.paths[k] = p
	}
	p.packets += uint64(packets)
	if p.name != name {
		if p.name != "" {
			b.log.Info("path changed", "peer", k.ShortString(), "from", p.name, "to", name)
		}
		p.name, p.changed = name, time.Now()
		p.changes++
	}
}

// Path describes the path last used to send to a peer.
type Path struct {
	Name    string    // transport name; "" if nothing was sent yet
	Since   time.Time // when the path last changed
	Changes int       // how many times it changed
	// Packets counts WireGuard packets handed to a transport for the
	// peer (a congested path may still have dropped some: BindStats).
	Packets uint64
}

// PathTo returns the path last used for peer.
func (b *Bind) PathTo(peer nodekey.Public) Path {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.paths[peer]; p != nil {
		return Path{Name: p.name, Since: p.changed, Changes: p.changes, Packets: p.packets}
	}
	return Path{}
}

// ForgetPeer drops the path state of a peer that left the mesh.
func (b *Bind) ForgetPeer(peer nodekey.Public) {
	b.mu.Lock()
	delete(b.paths, peer)
	b.mu.Unlock()
	b.hs.forget(peer)
}

// BindStats counts packets the Bind dropped, by reason.
type BindStats struct {
	DropsQueueFull  uint64 // the device did not read fast enough
	DropsClosed     uint64 // delivered while the Bind was closed
	DropsNoPath     uint64 // no transport could send
	DropsCongested  uint64 // the chosen transport dropped packets (full queue, rate limit)
	TentativeCopies uint64 // packets also sent over the next path while the preferred one was tentative
	// InflightResets counts waits for the device that ended because
	// nothing completed for a while (inflight.go): packets the device
	// dropped, such as replayed copies.
	InflightResets uint64
}

// Stats returns the drop counters.
func (b *Bind) Stats() BindStats {
	return BindStats{
		DropsQueueFull:  b.dropsFull.Load(),
		DropsClosed:     b.dropsNoRcv.Load(),
		DropsNoPath:     b.dropsNoPth.Load(),
		DropsCongested:  b.dropsCongested.Load(),
		TentativeCopies: b.copies.Load(),
		InflightResets:  b.in.resets.Load() + b.out.resets.Load(),
	}
}
