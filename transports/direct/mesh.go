package direct

import (
	"context"
	"fmt"
	"net/netip"

	"golang.org/x/time/rate"

	"github.com/plures/plurenet/transports"
)

// Sealed mesh messages on the socket. With no relay (the overlay's direct
// mode) announcements and goodbyes travel as plain UDP datagrams between
// the members' direct sockets. The socket is reachable by anyone who can
// send to it, so what reaches Config.OnMesh is bounded in size (transports.Classify
// admits at most mesh.MaxSealed bytes), in count (meshQueue) and in rate
// (meshRate), before any cryptography is spent on it.
const (
	// meshQueue bounds sealed messages read and not yet taken by OnMesh.
	// Members send one announcement per 15 s each; 64 absorbs a whole
	// LAN's worth arriving at once while a flood only fills the queue.
	meshQueue = 64

	// meshRate and meshBurst bound the sealed messages handed to OnMesh
	// per second: a 1024-member mesh announces about 70 per second, so 200
	// is ample for real members, while garbage sent to the port (each
	// costing an AEAD open) cannot take more than a sliver of one core.
	meshRate  = 200
	meshBurst = 100
)

type meshPacket struct {
	from netip.AddrPort
	b    []byte
}

// meshIn is the receive side: dispatch queues, one goroutine calls OnMesh.
type meshIn struct {
	queue chan meshPacket
	limit *rate.Limiter
}

func (t *Transport) startMesh() {
	if t.cfg.OnMesh == nil {
		return
	}
	t.mesh = &meshIn{
		queue: make(chan meshPacket, meshQueue),
		limit: rate.NewLimiter(meshRate, meshBurst),
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.meshLoop(t.ctx)
	}()
}

func (t *Transport) meshLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case pk := <-t.mesh.queue:
			t.cfg.OnMesh(pk.from, pk.b)
		}
	}
}

// deliverMesh copies a sealed message for OnMesh; it never blocks.
func (t *Transport) deliverMesh(b []byte, from netip.AddrPort) {
	m := t.mesh
	if m == nil {
		t.stats.dropOther.Add(1)
		return
	}
	if !m.limit.Allow() {
		t.stats.dropMeshRate.Add(1)
		return
	}
	pk := meshPacket{from: from, b: append([]byte(nil), b...)}
	// Counted before it is queued: the consumer may hand it to OnMesh
	// before this goroutine runs again, and the count must never lag what
	// OnMesh has seen.
	t.stats.meshIn.Add(1)
	select {
	case m.queue <- pk:
	default:
		t.stats.meshIn.Add(^uint64(0)) // not queued after all
		t.stats.dropMeshQueue.Add(1)
	}
}

// SendMesh sends one sealed mesh message (as mesh.Seal makes it) to addr
// from the transport's socket, so the receiver learns this node's direct
// address from its source. It does not check that addr belongs to a peer:
// the overlay sends announcements to configured addresses whose key it
// does not know yet.
func (t *Transport) SendMesh(to netip.AddrPort, msg []byte) error {
	switch {
	case transports.Classify(msg) != transports.PayloadSealed:
		return fmt.Errorf("direct: sending to %s: not a sealed mesh message (%d bytes)", to, len(msg))
	case !ValidRemote(to):
		return fmt.Errorf("direct: sending to %s: want an IPv4 unicast address and a port", to)
	}
	if _, err := t.udp.WriteToUDPAddrPort(msg, to); err != nil {
		return fmt.Errorf("direct: sending to %s: %w", to, err)
	}
	return nil
}

// ValidRemote reports whether a is an address a peer's socket can have:
// IPv4 (the socket is udp4), unicast, with a port. Discovery sources check
// what they find with it, so that only such addresses reach SetStatic.
func ValidRemote(a netip.AddrPort) bool {
	ip := a.Addr().Unmap()
	return ip.Is4() && a.Port() != 0 && !ip.IsUnspecified() && !ip.IsMulticast() && ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}
