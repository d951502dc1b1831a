package netstack

import (
	"encoding/binary"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Small-window guard: a workaround for a stall in gVisor's TCP sender
// (docs/operations.md, "Known issues").
//
// After a retransmission timeout gVisor's sender retransmits the first
// unacknowledged segment only if it fits in the peer's window or at least
// one MSS does; otherwise it leaves the segment for "the retransmit timer
// handler", which is the very handler that called it, and arms no timer
// because it just counted nothing in flight. The window can be smaller
// than that segment because a gVisor receiver rounds the window it
// advertises down to its scale unit (256 bytes with 8 MiB buffers), which
// pulls the window's right edge back over data already sent. The next
// window update from the receiver would wake the sender; when that update
// is lost, neither side ever sends again.
//
// The guard makes the sender never see such a window: an inbound segment
// that advertises a window smaller than windowFloor bytes has it set to
// zero, as Linux receivers themselves advertise no window smaller than one
// MSS. A zero window makes gVisor's sender arm its persist timer and probe
// until the window opens, so a lost update costs a backed-off probe, not
// the flow. Windows are scaled, so the guard learns each flow's scale from
// the peer's SYN or SYN-ACK; a flow it has no scale for is left alone.

// maxGuardedFlows bounds the flows whose window scale is remembered (about
// 40 bytes each), so a peer's SYNs cannot grow memory without limit.
const maxGuardedFlows = 1 << 14

// flowKey names a TCP flow as seen inbound: source and destination address
// (IPv4 in the first 4 bytes) and ports.
type flowKey struct {
	src, dst [16]byte
	ports    uint32
}

type windowGuard struct {
	mu     sync.Mutex
	scales map[flowKey]uint8
}

func newWindowGuard() *windowGuard {
	return &windowGuard{scales: make(map[flowKey]uint8)}
}

// windowFloor is the smallest window the guard passes on for an MTU: the
// largest MSS a sender can use on it, so a window that passes fits a full
// segment.
func windowFloor(mtu int) int {
	return mtu - header.IPv4MinimumSize - header.TCPMinimumSize
}

// inspect looks at one checked inbound IP packet (as checkInbound returns
// it) and, for a TCP segment of a guarded flow advertising a window below
// floor bytes, sets that window to zero in place. The segment's checksum is
// not updated: the endpoint has verified it already and tells gVisor so.
func (g *windowGuard) inspect(pkt []byte, floor int) {
	var key flowKey
	var tcp []byte
	switch {
	case len(pkt) >= header.IPv4MinimumSize && pkt[0]>>4 == 4:
		h := header.IPv4(pkt)
		if h.Protocol() != uint8(header.TCPProtocolNumber) || h.More() || h.FragmentOffset() != 0 {
			return
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < header.IPv4MinimumSize || ihl > len(pkt) {
			return
		}
		copy(key.src[:], pkt[12:16])
		copy(key.dst[:], pkt[16:20])
		tcp = pkt[ihl:]
	case len(pkt) >= header.IPv6MinimumSize && pkt[0]>>4 == 6:
		if header.IPv6(pkt).NextHeader() != uint8(header.TCPProtocolNumber) {
			return
		}
		copy(key.src[:], pkt[8:24])
		copy(key.dst[:], pkt[24:40])
		tcp = pkt[header.IPv6MinimumSize:]
	default:
		return
	}
	if len(tcp) < header.TCPMinimumSize {
		return
	}
	key.ports = binary.BigEndian.Uint32(tcp[0:4])
	flags := header.TCP(tcp).Flags()
	switch {
	case flags&header.TCPFlagRst != 0:
		g.forget(key)
	case flags&header.TCPFlagSyn != 0:
		if scale, ok := windowScale(tcp); ok {
			g.learn(key, scale)
		} else {
			g.forget(key)
		}
	case flags&header.TCPFlagAck != 0:
		w := int(binary.BigEndian.Uint16(tcp[14:16]))
		if w == 0 || w >= floor {
			// Zero already, or at least floor bytes whatever the
			// scale: no need to look the flow up (most segments).
			return
		}
		g.mu.Lock()
		scale, ok := g.scales[key]
		g.mu.Unlock()
		if ok && w<<scale < floor {
			binary.BigEndian.PutUint16(tcp[14:16], 0)
		}
	}
}

// learn remembers a flow's scale. A full table makes room by dropping a
// flow at random (Go's map order): most entries of a full table belong to
// flows closed long ago (a flow is forgotten early only on a RST), and a
// live flow that loses its entry just goes unguarded.
func (g *windowGuard) learn(key flowKey, scale uint8) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.scales[key]; !ok && len(g.scales) >= maxGuardedFlows {
		for k := range g.scales {
			delete(g.scales, k)
			break
		}
	}
	g.scales[key] = scale
}

func (g *windowGuard) forget(key flowKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.scales, key)
}

// windowScale returns the window scale option of a SYN's TCP header
// (RFC 7323 2.2), capped at 14 as RFC 7323 2.3 says.
func windowScale(tcp []byte) (uint8, bool) {
	off := int(tcp[12]>>4) * 4
	if off < header.TCPMinimumSize || off > len(tcp) {
		return 0, false
	}
	opts := tcp[header.TCPMinimumSize:off]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case header.TCPOptionEOL:
			return 0, false
		case header.TCPOptionNOP:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return 0, false
		}
		n := int(opts[i+1])
		if n < 2 || i+n > len(opts) {
			return 0, false
		}
		if opts[i] == header.TCPOptionWS && n == 3 {
			return min(opts[i+2], header.MaxWndScale), true
		}
		i += n
	}
	return 0, false
}
