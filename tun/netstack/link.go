package netstack

import (
	"log/slog"
	"os"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// outboundQueueLen bounds the packets gVisor may queue for the WireGuard
// device to pick up. 2048 packets of at most an MTU each is ~2.6 MiB at the
// default MTU: enough to absorb a burst from a large TCP send window while the
// device encrypts, small enough that a stalled device cannot make the stack
// hold unbounded memory. When it is full, packets are dropped like on a
// congested link and TCP recovers.
const outboundQueueLen = 2048

// linkEndpoint is the stack's only NIC. Outbound packets from gVisor land in a
// bounded FIFO that Stack.Read drains in batches; inbound packets from
// Stack.Write are handed straight to the network layer in the caller's
// goroutine, so there is no extra hop (and no goroutine) on either path.
type linkEndpoint struct {
	logger *slog.Logger

	mu         sync.Mutex
	mtu        uint32
	dispatcher stack.NetworkDispatcher
	closed     bool
	// queue is a ring buffer of outbound packets: head is the next to read,
	// n the number queued. Each queued packet holds its own reference.
	queue [outboundQueueLen]*stack.PacketBuffer
	head  int
	n     int
	// ready has capacity 1 and holds a token while the queue may be
	// non-empty or the endpoint is closed, so a blocked reader wakes up.
	ready chan struct{}
	// done is closed by close so that blocked readers return.
	done chan struct{}
}

var _ stack.LinkEndpoint = (*linkEndpoint)(nil)

func newLinkEndpoint(mtu uint32, logger *slog.Logger) *linkEndpoint {
	return &linkEndpoint{
		logger: logger,
		mtu:    mtu,
		ready:  make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

// WritePackets queues gVisor's outbound packets for Read. It is called by the
// stack with packets whose references stay the caller's, so each is cloned.
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	written := 0
	for _, pkt := range pkts.AsSlice() {
		if e.n == len(e.queue) {
			break
		}
		e.queue[(e.head+e.n)%len(e.queue)] = pkt.Clone()
		e.n++
		written++
	}
	e.mu.Unlock()
	if written > 0 {
		select {
		case e.ready <- struct{}{}:
		default:
		}
	}
	if written == 0 && pkts.Len() > 0 {
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return written, nil
}

// read blocks until at least one outbound packet is queued, then copies up to
// len(bufs) packets into bufs[i][offset:]. It returns os.ErrClosed once the
// endpoint is closed.
func (e *linkEndpoint) read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		n, more, err := e.readQueued(bufs, sizes, offset)
		if err != nil {
			return 0, err
		}
		if more {
			// Leave a token so a concurrent reader also wakes.
			select {
			case e.ready <- struct{}{}:
			default:
			}
		}
		if n > 0 {
			return n, nil
		}
		select {
		case <-e.ready:
		case <-e.done:
		}
	}
}

func (e *linkEndpoint) readQueued(bufs [][]byte, sizes []int, offset int) (n int, more bool, err error) {
	limit := min(len(bufs), len(sizes))
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, false, os.ErrClosed
	}
	var taken [maxBatch]*stack.PacketBuffer
	count := min(limit, e.n, maxBatch)
	for i := range count {
		taken[i] = e.queue[e.head]
		e.queue[e.head] = nil
		e.head = (e.head + 1) % len(e.queue)
	}
	e.n -= count
	more = e.n > 0
	e.mu.Unlock()

	for i := range count {
		pkt := taken[i]
		dst := bufs[n][offset:]
		size := pkt.Size()
		if size > len(dst) {
			// The device's buffers are sized for the largest WireGuard
			// message, so this means a caller bug; dropping keeps Read going.
			e.logger.Debug("netstack: outbound packet larger than read buffer, dropped", "size", size, "buf", len(dst))
			pkt.DecRef()
			continue
		}
		w := 0
		for _, s := range pkt.AsSlices() {
			w += copy(dst[w:], s)
		}
		pkt.DecRef()
		sizes[n] = w
		n++
	}
	return n, more, nil
}

// inject hands one inbound IP packet to the network layer. The packet is
// copied, so the caller may reuse pkt at once.
func (e *linkEndpoint) inject(pkt []byte) {
	var proto tcpip.NetworkProtocolNumber
	switch {
	case len(pkt) >= header.IPv4MinimumSize && pkt[0]>>4 == 4:
		proto = header.IPv4ProtocolNumber
	case len(pkt) >= header.IPv6MinimumSize && pkt[0]>>4 == 6:
		proto = header.IPv6ProtocolNumber
	default:
		e.logger.Debug("netstack: dropped malformed inbound packet", "len", len(pkt))
		return
	}
	e.mu.Lock()
	d := e.dispatcher
	closed := e.closed
	e.mu.Unlock()
	if d == nil || closed {
		return
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	d.DeliverNetworkPacket(proto, pb)
	pb.DecRef()
}

// close drops every queued packet and wakes blocked readers. Idempotent.
func (e *linkEndpoint) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	for e.n > 0 {
		e.queue[e.head].DecRef()
		e.queue[e.head] = nil
		e.head = (e.head + 1) % len(e.queue)
		e.n--
	}
	close(e.done)
}

func (e *linkEndpoint) MTU() uint32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mtu
}

func (e *linkEndpoint) SetMTU(mtu uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mtu = mtu
}

// MaxHeaderLength is zero: packets leave as bare IP, as a TUN carries them.
func (*linkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress is empty: a point-to-point tunnel has no link-layer addresses,
// so gVisor does no ARP or neighbour discovery.
func (*linkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

func (*linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities is none: checksums are computed and verified in software
// because the peer may be a kernel stack that trusts them.
func (*linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityNone
}

func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
}

func (e *linkEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// Wait returns at once: the endpoint owns no goroutines.
func (*linkEndpoint) Wait() {}

func (*linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

func (*linkEndpoint) AddHeader(*stack.PacketBuffer) {}

func (*linkEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close is called by gVisor when the NIC is removed.
func (e *linkEndpoint) Close() { e.close() }

func (*linkEndpoint) SetOnCloseAction(func()) {}
