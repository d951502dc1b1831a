package kernel

import (
	"log/slog"
	"math/bits"
	"net/netip"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
)

// Destination filter. Everything wireguard-go writes to the device comes
// from a member, and wireguard-go checks only the source (each member may
// send from its own overlay addresses, its AllowedIPs). Left at that, a
// member running modified code could address packets to anything: the
// host's LAN address, docker0, 127.0.0.1-bound services reachable through
// the host's other addresses, and, on a host with ip_forward=1, whole
// networks behind it. The kernel would deliver or route them like any
// other input. So the device admits a packet from the mesh only when its
// destination is one of the device's own addresses, and counts the rest.
//
// The check runs on every packet of every batch: two loads and a
// comparison or two, no allocation (BenchmarkDestFilter).

// ownAddrs are the addresses packets may be delivered to, as raw bytes so
// the check compares arrays.
type ownAddrs struct {
	v4 [][4]byte
	v6 [][16]byte
}

func newOwnAddrs(prefixes []netip.Prefix) *ownAddrs {
	o := &ownAddrs{}
	for _, p := range prefixes {
		a := p.Addr()
		if a.Is4() {
			o.v4 = append(o.v4, a.As4())
		} else {
			o.v6 = append(o.v6, a.As16())
		}
	}
	return o
}

// admit reports whether pkt (an IP packet) is addressed to one of o.
// Anything that is not a whole IPv4 or IPv6 header is refused.
func (o *ownAddrs) admit(pkt []byte) bool {
	if len(pkt) == 0 {
		return false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return false
		}
		dst := [4]byte(pkt[16:20])
		for _, a := range o.v4 {
			if a == dst {
				return true
			}
		}
	case 6:
		if len(pkt) < 40 {
			return false
		}
		dst := [16]byte(pkt[24:40])
		for _, a := range o.v6 {
			if a == dst {
				return true
			}
		}
	}
	return false
}

// destFilter holds the current own addresses (replaced when the node's
// address moves) and the count of what it dropped.
type destFilter struct {
	own     atomic.Pointer[ownAddrs]
	dropped atomic.Uint64
}

func (f *destFilter) set(prefixes []netip.Prefix) { f.own.Store(newOwnAddrs(prefixes)) }

// filter moves the admitted packets of bufs (each starting at offset) to
// the front, keeping their order, and returns how many there are. The
// dropped ones end up behind them: the caller's buffers are reordered, not
// lost (wireguard-go returns its buffers by their elements, not by this
// slice).
func (f *destFilter) filter(bufs [][]byte, offset int) (kept int) {
	own := f.own.Load()
	for i, b := range bufs {
		if len(b) > offset && own.admit(b[offset:]) {
			bufs[kept], bufs[i] = bufs[i], bufs[kept]
			kept++
		}
	}
	return kept
}

func newDestFilter(prefixes []netip.Prefix) *destFilter {
	f := &destFilter{}
	f.set(prefixes)
	return f
}

// filteredTUN is the OS's TUN device with the destination filter on its
// Write, the way every OS's Device hands it to wireguard-go.
type filteredTUN struct {
	tun.Device
	filter *destFilter
	log    *slog.Logger
	name   string // the interface, for the log
}

// Write delivers packets from the mesh to the kernel: only those addressed
// to the device's own addresses. The others are counted and dropped; bufs
// is reordered so that the delivered ones come first.
func (t *filteredTUN) Write(bufs [][]byte, offset int) (int, error) {
	kept := t.filter.filter(bufs, offset)
	if dropped := len(bufs) - kept; dropped > 0 {
		t.noteDropped(dropped, bufs[kept][offset:])
	}
	if kept == 0 {
		return 0, nil
	}
	return t.Device.Write(bufs[:kept], offset)
}

// noteDropped counts packets the filter dropped and logs when the count
// reaches a power of two: the first one at once, then ever more rarely, so
// a member that floods cannot flood the log.
func (t *filteredTUN) noteDropped(n int, sample []byte) {
	total := t.filter.dropped.Add(uint64(n))
	if bits.Len64(total-uint64(n)) == bits.Len64(total) {
		return
	}
	src, dst := packetAddrs(sample)
	t.log.Warn("dropped packets from the mesh not addressed to this node (a member sends to the host's other addresses or through it)",
		"iface", t.name, "dropped", total, "src", src, "dst", dst)
}

// packetAddrs returns an IP packet's source and destination for a log line.
func packetAddrs(pkt []byte) (src, dst netip.Addr) {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
	}
	return netip.Addr{}, netip.Addr{}
}
