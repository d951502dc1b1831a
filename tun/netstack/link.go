package netstack

import (
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// outboundQueueLen bounds the packets gVisor may queue for the WireGuard
// device to pick up, and outboundQueueBytes their bytes: with segmentation
// offload one packet may carry up to 64 KiB, so the count alone would let
// the queue hold 128 MiB. 4 MiB is ~3,300 packets of the default MTU:
// enough to absorb a burst from a large TCP send window while the device
// encrypts, small enough that a stalled device cannot make the stack hold
// much memory. When either is full, packets are dropped like on a
// congested link and TCP recovers.
const (
	outboundQueueLen   = 2048
	outboundQueueBytes = 4 << 20
)

// linkEndpoint is the stack's only NIC. Outbound packets from gVisor land in a
// bounded FIFO that Stack.Read drains in batches, cutting TCP packets built
// for segmentation offload into MTU-sized ones (gso.go); inbound packets from
// Stack.Write are checked and coalesced (gro.go) and handed to the network
// layer in the caller's goroutine, so there is no extra hop (and no
// goroutine) on either path.
type linkEndpoint struct {
	logger *slog.Logger

	mu         sync.Mutex
	mtu        uint32
	dispatcher stack.NetworkDispatcher
	closed     bool
	// queue is a ring buffer of outbound packets: head is the next to read,
	// n the number queued, bytes their size. Each queued packet holds its
	// own reference.
	queue [outboundQueueLen]*stack.PacketBuffer
	head  int
	n     int
	bytes int
	// ready has capacity 1 and holds a token while the queue may be
	// non-empty or the endpoint is closed, so a blocked reader wakes up.
	ready chan struct{}
	// done is closed by close so that blocked readers return.
	done chan struct{}

	// readMu serializes readers and guards what a Read took from the queue
	// but could not fit in the caller's buffers: the packets in taken[next:]
	// and the packet split is cutting (at most about one batch of MTU-sized
	// packets and one 64 KiB packet). The next Read carries on with them.
	readMu sync.Mutex
	taken  [maxBatch]*stack.PacketBuffer
	next   int
	ntaken int
	split  splitter

	// guard zeroes inbound windows too small for a segment (window.go).
	guard *windowGuard

	// segmented counts packets cut into more than one segment, oversize
	// packets read that exceed the MTU (which would be a bug): tests read
	// them to see that the offload is in use and correct.
	segmented, oversize atomic.Uint64
}

var (
	_ stack.LinkEndpoint = (*linkEndpoint)(nil)
	_ stack.GSOEndpoint  = (*linkEndpoint)(nil)
)

func newLinkEndpoint(mtu uint32, logger *slog.Logger) *linkEndpoint {
	return &linkEndpoint{
		logger: logger,
		mtu:    mtu,
		guard:  newWindowGuard(),
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
		size := pkt.Size()
		if e.n == len(e.queue) || e.bytes+size > outboundQueueBytes {
			break
		}
		e.queue[(e.head+e.n)%len(e.queue)] = pkt.Clone()
		e.n++
		e.bytes += size
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
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, nil
	}
	for {
		e.readMu.Lock()
		n, more, err := e.readLocked(bufs, sizes, offset)
		e.readMu.Unlock()
		if err != nil {
			return 0, err
		}
		if more {
			// Leave a token so that the next Read (or a concurrent
			// reader) does not wait.
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

// readLocked fills bufs from what the last Read left over, then from the
// queue. more says whether packets remain for the next Read.
func (e *linkEndpoint) readLocked(bufs [][]byte, sizes []int, offset int) (n int, more bool, err error) {
	limit := min(len(bufs), len(sizes), maxBatch)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, false, os.ErrClosed
	}
	mtu := int(e.mtu)
	if e.next == e.ntaken && !e.split.more() {
		// Take a batch from the queue under one lock: as many packets as
		// the caller's buffers can take once cut to the MTU, so that what
		// waits for the next Read stays small.
		e.next, e.ntaken = 0, 0
		for want := limit * mtu; e.n > 0 && e.ntaken < maxBatch && want > 0; e.n-- {
			pkt := e.queue[e.head]
			e.queue[e.head] = nil
			e.head = (e.head + 1) % len(e.queue)
			e.bytes -= pkt.Size()
			want -= pkt.Size()
			e.taken[e.ntaken] = pkt
			e.ntaken++
		}
	}
	queued := e.n > 0
	e.mu.Unlock()

	for n < limit {
		if e.split.more() {
			size := e.split.next(bufs[n][offset:])
			if size == 0 {
				// The device's buffers are sized for the largest
				// WireGuard message, so this means a caller bug;
				// dropping keeps Read going.
				e.logger.Debug("netstack: outbound segment larger than read buffer, dropped", "buf", len(bufs[n][offset:]))
				e.split.finish()
				continue
			}
			if size > mtu {
				e.oversize.Add(1)
			}
			if e.split.seg == 2 {
				e.segmented.Add(1)
			}
			sizes[n] = size
			n++
			if !e.split.more() {
				e.split.finish()
			}
			continue
		}
		if e.next == e.ntaken {
			break
		}
		pkt := e.taken[e.next]
		e.taken[e.next] = nil
		e.next++
		if pkt.GSOOptions.Type != stack.GSONone {
			if err := e.split.start(pkt); err != nil {
				e.logger.Debug("netstack: outbound packet not segmented, dropped", "err", err)
				pkt.DecRef()
			}
			continue
		}
		if size := copyPacket(bufs[n][offset:], pkt); size > 0 {
			if size > mtu {
				e.oversize.Add(1)
			}
			sizes[n] = size
			n++
		} else {
			e.logger.Debug("netstack: outbound packet larger than read buffer, dropped", "size", pkt.Size(), "buf", len(bufs[n][offset:]))
		}
		pkt.DecRef()
	}
	return n, queued || e.next < e.ntaken || e.split.more(), nil
}

// copyPacket copies pkt into dst and returns its size, or 0 if it does not
// fit.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) int {
	size := pkt.Size()
	if size > len(dst) {
		return 0
	}
	c := newCursor(pkt)
	return c.read(dst[:size])
}

// inject hands inbound IP packets to the network layer, TCP segments of one
// flow coalesced (see gro.go). The packets are copied, so the caller may
// reuse them at once; a TCP window too small for a segment is zeroed in the
// caller's buffer first (window.go).
func (e *linkEndpoint) inject(pkts [][]byte, offset int) {
	e.mu.Lock()
	d := e.dispatcher
	closed := e.closed
	mtu := int(e.mtu)
	e.mu.Unlock()
	if d == nil || closed {
		return
	}
	deliverCoalesced(d, pkts, offset, e.guard, windowFloor(mtu), e.logger)
}

// close drops every queued packet and wakes blocked readers. Idempotent.
func (e *linkEndpoint) close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.dropQueued()
	close(e.done)
	e.mu.Unlock()

	// A reader that was between batches sees closed and takes nothing
	// more; release what the last Read left over.
	e.readMu.Lock()
	defer e.readMu.Unlock()
	for ; e.next < e.ntaken; e.next++ {
		e.taken[e.next].DecRef()
		e.taken[e.next] = nil
	}
	e.split.finish()
}

// dropQueued releases every queued packet. e.mu must be held.
func (e *linkEndpoint) dropQueued() {
	for e.n > 0 {
		e.queue[e.head].DecRef()
		e.queue[e.head] = nil
		e.head = (e.head + 1) % len(e.queue)
		e.n--
	}
	e.bytes = 0
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

// Capabilities says that inbound checksums are verified before packets
// reach gVisor: deliverCoalesced checks them (a coalesced TCP segment's
// checksum is no longer the sender's). Outbound checksums are computed in
// software, by gVisor or by the splitter, because the peer may be a kernel
// stack that trusts them.
func (*linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// GSOMaxSize is the largest TCP packet gVisor may hand over to be cut into
// segments.
func (*linkEndpoint) GSOMaxSize() uint32 { return gsoMaxSize }

// SupportedGSO is host GSO: gVisor builds large TCP packets and the
// endpoint segments them (gso.go).
func (*linkEndpoint) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

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
