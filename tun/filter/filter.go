package filter

import (
	"log/slog"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// Policy decides which flows members may open on this node. The filter
// calls it on the packet path, so it must not block or allocate.
type Policy interface {
	// Allows reports whether the member sending from src may open a flow
	// of proto to port on this node. Port is 0 for ICMP and for
	// protocols without ports; an unknown src is no member and must get
	// false.
	Allows(src netip.Addr, proto uint8, port uint16) bool
	// Denied is told of every packet from src the filter dropped.
	Denied(src netip.Addr)
}

// Device is a tun.Device that filters what the mesh delivers by a Policy
// (doc.go). The zero value is not usable: make one with New.
type Device struct {
	tun.Device
	log    *slog.Logger
	epoch  time.Time
	policy atomic.Pointer[policyRef]
	denied atomic.Uint64

	mu    sync.Mutex // guards flows
	flows *flowTable
}

// policyRef boxes a Policy for the atomic pointer; nil allows everything.
type policyRef struct{ p Policy }

// New wraps inner. It passes everything until SetPolicy gives a policy,
// but records the flows this node opens from the start, so that a policy
// arriving later does not cut connections already open.
func New(inner tun.Device, log *slog.Logger) *Device {
	if log == nil {
		log = slog.Default()
	}
	return &Device{Device: inner, log: log, epoch: time.Now(), flows: newFlowTable()}
}

// SetPolicy replaces the policy; nil passes everything. It takes effect
// from the next batch.
func (d *Device) SetPolicy(p Policy) {
	if p == nil {
		d.policy.Store(nil)
		return
	}
	d.policy.Store(&policyRef{p: p})
}

// Denied is the number of packets from the mesh the policy dropped.
func (d *Device) Denied() uint64 { return d.denied.Load() }

// now is the monotonic time since New, never 0 (0 marks an empty slot).
func (d *Device) now() int64 { return int64(time.Since(d.epoch)) + 1 }

// Read passes on packets this node sends to the mesh, recording the flows
// it opens.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Device.Read(bufs, sizes, offset)
	if n > 0 {
		d.track(bufs[:n], sizes[:n], offset)
	}
	return n, err
}

func (d *Device) track(bufs [][]byte, sizes []int, offset int) {
	var pol Policy
	if r := d.policy.Load(); r != nil {
		pol = r.p
	}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, b := range bufs {
		if offset+sizes[i] > len(b) {
			continue
		}
		p, ok := parse(b[offset:offset+sizes[i]], false)
		if !ok || p.later {
			continue
		}
		k := flowKey{remote: p.dst.As16(), local: p.sport, rport: p.dport, proto: p.proto}
		switch {
		case p.proto == protoTCP && p.syn && !p.ack:
			// A connection this node opens.
			d.flows.add(k, now)
		case p.proto == protoTCP:
			// This node's side of a flow: refresh it if this node
			// opened it; a reply to a connection the member opened is
			// not recorded (its packets are checked by the policy).
			d.flows.touch(k, now)
		case p.proto == protoUDP:
			// UDP has no opening packet. A datagram whose answer the
			// policy would let in anyway is not recorded, so that a
			// member allowed to reach a UDP service cannot flush this
			// node's own flows out of the table by making it answer
			// from many ports.
			if !d.flows.touch(k, now) && (pol == nil || !pol.Allows(p.dst, protoUDP, p.sport)) {
				d.flows.add(k, now)
			}
		case p.isEcho():
			d.flows.add(k, now)
		}
	}
}

// Write delivers packets from the mesh to this node: only those the
// policy allows or that belong to a flow this node opened. The others are
// counted and dropped; bufs is reordered so that the delivered ones come
// first (wireguard-go returns its buffers by their elements, not by this
// slice).
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	r := d.policy.Load()
	if r == nil {
		return d.Device.Write(bufs, offset)
	}
	now := d.now()
	kept := 0
	d.mu.Lock()
	for i, b := range bufs {
		if len(b) > offset && d.admit(r.p, b[offset:], now) {
			bufs[kept], bufs[i] = bufs[i], bufs[kept]
			kept++
		}
	}
	d.mu.Unlock()
	if dropped := len(bufs) - kept; dropped > 0 {
		d.noteDenied(r.p, bufs[kept:], offset)
	}
	if kept == 0 {
		return 0, nil
	}
	return d.Device.Write(bufs[:kept], offset)
}

// admit decides one packet from the mesh. d.mu is held.
func (d *Device) admit(pol Policy, b []byte, now int64) bool {
	p, ok := parse(b, false)
	switch {
	case !ok:
		return false
	case p.later:
		return true
	case p.proto == protoTCP || p.proto == protoUDP || p.isEchoReply():
		if d.flows.touch(flowKey{remote: p.src.As16(), local: p.dport, rport: p.sport, proto: p.proto}, now) {
			return true
		}
		if p.isEchoReply() {
			return false // no echo of ours it answers
		}
		return pol.Allows(p.src, p.proto, p.dport)
	case p.isError() && d.quotesOurFlow(&p, now):
		return true
	}
	// Echo requests, ICMP errors about no flow of ours, and protocols
	// without ports follow the rules for "any port" (docs/protocol.md
	// 4.5).
	return pol.Allows(p.src, p.proto, 0)
}

// quotesOurFlow reports whether an ICMP error is about a flow this node
// opened to the member that sends the error: port unreachable, packet too
// big and time exceeded must reach the stack for connections to fail fast
// and path MTU to work. The quoted packet must be addressed to the error's
// sender, so that one member cannot send errors about another's flows.
func (d *Device) quotesOurFlow(p *packet, now int64) bool {
	q, ok := parse(p.quoted, true)
	if !ok || q.later || q.dst != p.src {
		return false
	}
	switch q.proto {
	case protoTCP, protoUDP, protoICMP, protoICMPv6:
	default:
		return false
	}
	return d.flows.touch(flowKey{remote: q.dst.As16(), local: q.sport, rport: q.dport, proto: q.proto}, now)
}

// noteDenied tells the policy whom it denied, and logs when the total
// reaches a power of two: the first at once, then ever more rarely, so a
// member that floods cannot flood the log.
func (d *Device) noteDenied(pol Policy, dropped [][]byte, offset int) {
	var sample packet
	for _, b := range dropped {
		if len(b) <= offset {
			continue
		}
		p, ok := parse(b[offset:], true)
		if ok {
			pol.Denied(p.src)
			sample = p
		}
	}
	n := uint64(len(dropped))
	total := d.denied.Add(n)
	if bits.Len64(total-n) == bits.Len64(total) {
		return
	}
	d.log.Info("access policy dropped packets from the mesh", "denied", total, "src", sample.src, "dst", sample.dst, "proto", sample.proto, "port", sample.dport)
}
