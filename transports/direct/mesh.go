package direct

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/plures/plurenet/internal/srclimit"
	"github.com/plures/plurenet/transports"
)

// Sealed mesh messages on the socket. With no relay (the overlay's swarm
// mode) announcements, goodbyes and path checks travel as plain UDP
// datagrams between the members' direct sockets. The socket is reachable by
// anyone who can send to it, so what reaches Config.OnMesh is bounded in
// size (transports.Classify admits at most mesh.MaxSealed bytes), in count
// (the queues) and in rate per source (internal/srclimit), before any
// cryptography is spent on it.
//
// Members' addresses (those of a peer's path) are favoured: each has its
// own rate budget and the queue of its own, so a flood from other sources
// (an outsider on the LAN can send from as many spoofed addresses as it
// likes) takes only the budget and queue unknown sources share, and never
// delays a member's announcements. Newcomers, whose address is not known
// yet, share that budget: under such a flood they may wait.
const (
	// meshQueue bounds sealed messages read and not yet taken by OnMesh,
	// per class (members, unknown sources). Members send one
	// announcement per 15 s each; 64 absorbs a whole LAN's worth arriving
	// at once while a flood only fills the queue.
	meshQueue = 64

	// Per member address: announcements every 15 s, answers to joiners,
	// path checks and a goodbye; 4 per second with a burst of 16 is far
	// above that, and 1024 spoofed member addresses still cost few AEAD
	// opens a second.
	meshKnownRate  = 4
	meshKnownBurst = 16

	// Per unknown source IP, and for all of them together: a newcomer
	// sends one announcement and answers a path check or two; 200 a
	// second is the most garbage (each costing an AEAD open) can make
	// the node decrypt, a sliver of one core.
	meshSourceRate   = 2
	meshSourceBurst  = 8
	meshUnknownRate  = 200
	meshUnknownBurst = 100

	// meshSources bounds each table of per-source buckets; a full table
	// of busy sources makes further new ones share one bucket.
	meshSources = 4096
)

type meshPacket struct {
	from netip.AddrPort
	b    []byte
}

// meshIn is the receive side: dispatch queues, one goroutine calls OnMesh,
// members' messages first.
type meshIn struct {
	known, unknown chan meshPacket
	limit          *srclimit.Limiter
}

func (t *Transport) startMesh() {
	if t.cfg.OnMesh == nil {
		return
	}
	t.mesh = &meshIn{
		known:   make(chan meshPacket, meshQueue),
		unknown: make(chan meshPacket, meshQueue),
		limit: srclimit.New(srclimit.Config{
			KnownRate: meshKnownRate, KnownBurst: meshKnownBurst,
			Rate: meshSourceRate, Burst: meshSourceBurst,
			TotalRate: meshUnknownRate, TotalBurst: meshUnknownBurst,
			MaxSources: meshSources,
		}),
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.meshLoop(t.ctx)
	}()
}

func (t *Transport) meshLoop(ctx context.Context) {
	m := t.mesh
	for {
		var pk meshPacket
		select {
		case pk = <-m.known:
		default:
			select {
			case <-ctx.Done():
				return
			case pk = <-m.known:
			case pk = <-m.unknown:
			}
		}
		t.cfg.OnMesh(pk.from, pk.b)
	}
}

// deliverMesh copies a sealed message for OnMesh; it never blocks.
func (t *Transport) deliverMesh(b []byte, from netip.AddrPort) {
	m := t.mesh
	if m == nil {
		t.stats.dropOther.Add(1)
		return
	}
	known := (*t.byAddr.Load())[from] != nil
	if !m.limit.Allow(from, known, time.Now()) {
		t.stats.dropMeshRate.Add(1)
		return
	}
	q := m.unknown
	if known {
		q = m.known
	}
	pk := meshPacket{from: from, b: append([]byte(nil), b...)}
	// Counted before it is queued: the consumer may hand it to OnMesh
	// before this goroutine runs again, and the count must never lag what
	// OnMesh has seen.
	t.stats.meshIn.Add(1)
	select {
	case q <- pk:
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
		return fmt.Errorf("direct: sending to %s: want a unicast address and a port", to)
	}
	if _, err := t.udp.WriteToUDPAddrPort(msg, to); err != nil {
		return fmt.Errorf("direct: sending to %s: %w", to, err)
	}
	return nil
}

// ValidRemote reports whether a is an address a peer's socket can have:
// unicast IPv4 or IPv6 (not link-local: see candidates.go), with a port.
// Discovery sources check what they find with it, so that only such
// addresses reach SetStatic.
func ValidRemote(a netip.AddrPort) bool {
	return a.Port() != 0 && unicast(a.Addr().Unmap())
}
