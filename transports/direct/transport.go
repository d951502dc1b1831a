package direct

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
	"github.com/pion/transport/v5/stdnet"
	"golang.org/x/net/ipv4"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports"
)

// Name is the transport's name in status output and Bind path names.
const Name = "direct"

// socketBuffer is the receive and send buffer asked of the kernel: enough
// for a few milliseconds of gigabit traffic while the device is busy (the
// same order wireguard-go asks for). The kernel may grant less.
const socketBuffer = 7 << 20

// ErrNoDirectPath is returned by Send when the peer has no live direct path.
var ErrNoDirectPath = errors.New("no direct path to peer")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("direct transport closed")

// Transport is the direct UDP path to the mesh's members.
type Transport struct {
	cfg  Config
	log  *slog.Logger
	self nodekey.Public

	udp   *net.UDPConn
	pc    *ipv4.PacketConn // batch I/O; x/net's ipv4 calls serve any UDP socket (see socket.go)
	local netip.AddrPort
	fam   families // the address families the socket reaches (socket.go)
	stun  *divertConn
	mux   *ice.UniversalUDPMuxDefault
	inet  *stdnet.Net // interfaces as seen from the namespace New ran in
	// ownAddrs are this host's addresses and marker its same-host
	// evidence (nil without ICE): see candidates.go.
	ownAddrs atomic.Pointer[map[netip.Addr]bool] // replaced by Restart (restart.go)
	marker   *hostMarker
	urls     []*stun.URI
	epoch    time.Time              // monotonic base for packet timestamps
	mapped   atomic.Pointer[string] // the port-mapped candidate (mapped.go); nil without one

	// peers and byAddr are copy-on-write maps read on the hot path without
	// a lock; mu serialises writers.
	mu      sync.Mutex
	peers   atomic.Pointer[map[nodekey.Public]*peer]
	byAddr  atomic.Pointer[map[netip.AddrPort]*peer]
	lastSes uint64 // newest session id handed out; guarded by mu
	closed  bool   // guarded by mu

	rd   reader
	mesh *meshIn                    // nil without Config.OnMesh
	dht  atomic.Pointer[divertConn] // nil until DHTConn

	// noUpdates makes the transport speak as members before candidate
	// updates did (flagUpdates): tests set it to check that both kinds of
	// member still meet.
	noUpdates bool

	batchPool sync.Pool   // *sendBatch for SendBatch
	gso       atomic.Bool // UDP segmentation offload on send (see offload_linux.go)
	gro       bool        // the socket coalesces received datagrams (UDP_GRO)

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	stats counters
}

type counters struct {
	wgIn, stunIn, meshIn, dhtIn         atomic.Uint64
	dropMeshRate, dropMeshQueue         atomic.Uint64
	dropUnknownSrc, dropOther           atomic.Uint64
	dropNoDeliver, dropBlackholed       atomic.Uint64
	dropBatchFull                       atomic.Uint64
	dropCandidate                       atomic.Uint64
	candidateUpdates                    atomic.Uint64
	signalsBad                          atomic.Uint64
	probesSent, pathsProven             atomic.Uint64
	dropProbeRate, dropBadReply         atomic.Uint64
	liveProbes, fastLosses, falseLosses atomic.Uint64
	// blackhole makes the readers discard every datagram: a test hook for
	// a path that dies without the socket noticing.
	blackhole atomic.Bool
}

var (
	_ transports.Transport     = (*Transport)(nil)
	_ transports.BatchSender   = (*Transport)(nil)
	_ transports.BatchReceiver = (*Transport)(nil)
)

// New opens the UDP socket and starts reading it. Peers are added with
// AddPeer. Call New inside the network namespace the socket belongs to:
// the interfaces for host candidates are read once, here.
func New(cfg Config) (*Transport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Transport{cfg: cfg, log: cfg.Logger.With("transport", Name), self: cfg.PrivateKey.Public(), epoch: time.Now()}
	for _, s := range cfg.STUNServers {
		u, err := stun.ParseURI("stun:" + s)
		if err != nil {
			return nil, fmt.Errorf("direct: STUN server %q: %w", s, err)
		}
		t.urls = append(t.urls, u)
	}
	if t.udp, t.fam, err = listen(cfg.ListenAddr, cfg.ListenPort); err != nil {
		return nil, err
	}
	_ = t.udp.SetReadBuffer(socketBuffer) // best effort: the kernel caps it
	_ = t.udp.SetWriteBuffer(socketBuffer)
	t.local = t.udp.LocalAddr().(*net.UDPAddr).AddrPort()
	t.pc = ipv4.NewPacketConn(t.udp)
	gso, gro := enableOffload(t.udp)
	warnGSOBroken(t.log)
	t.gso.Store(gso)
	t.gro = gro
	if t.inet, err = stdnet.NewNet(); err != nil {
		t.udp.Close()
		return nil, fmt.Errorf("direct: listing interfaces: %w", err)
	}
	own := ownAddrs(t.inet)
	t.ownAddrs.Store(&own)
	if !cfg.DisableICE {
		if t.marker, err = newHostMarker(t.self); err != nil {
			t.udp.Close()
			return nil, err
		}
	}
	t.stun = newSTUNConn(t.udp)
	t.mux = ice.NewUniversalUDPMuxDefault(ice.UniversalUDPMuxParams{
		Logger:  pionLogger{log: t.log}.NewLogger("mux"),
		UDPConn: t.stun,
		Net:     t.inet,
		// pion's default (25 s) would hand a session started after a
		// move the pre-move public address (restart.go).
		XORMappedAddrCacheTTL: stunCacheTTL,
	})
	empty := map[nodekey.Public]*peer{}
	t.peers.Store(&empty)
	noAddrs := map[netip.AddrPort]*peer{}
	t.byAddr.Store(&noAddrs)
	t.batchPool.New = func() any { return newSendBatch() }
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.rd.init(t)
	t.startMesh()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.rd.idleLoop()
	}()
	t.log.Info("direct path listening", "addr", t.local.String(), "ipv4", t.fam.v4, "ipv6", t.fam.v6, "stun", cfg.STUNServers, "ice", !cfg.DisableICE, "gso", gso, "gro", gro)
	return t, nil
}

// Close stops every peer's ICE agent and every goroutine, closes the
// socket and waits. It is idempotent.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		ps := *t.peers.Load()
		empty := map[nodekey.Public]*peer{}
		t.peers.Store(&empty)
		t.mu.Unlock()
		t.cancel()
		for _, p := range ps {
			p.stop()
		}
		t.mux.Close()
		t.rd.shutdown()
		t.udp.Close()
		t.wg.Wait()
		if t.marker != nil {
			t.marker.close()
		}
	})
	return nil
}

// LocalAddr is the socket's local address.
func (t *Transport) LocalAddr() netip.AddrPort { return t.local }

// Name returns "direct".
func (t *Transport) Name() string { return Name }

// AddPeer starts looking for a direct path to peer (a member joined). It
// is a no-op for a peer already added or for this node's own key. With
// DisableICE it only registers the peer: it is reached on the static path
// SetStatic gives it.
func (t *Transport) AddPeer(key nodekey.Public) {
	if key == t.self {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.addPeerLocked(key)
	}
}

// addPeerLocked returns the peer, adding and starting it if it is new.
// t.mu must be held and the transport open.
func (t *Transport) addPeerLocked(key nodekey.Public) *peer {
	old := *t.peers.Load()
	if p := old[key]; p != nil {
		return p
	}
	p := newPeer(t, key)
	next := make(map[nodekey.Public]*peer, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[key] = p
	t.peers.Store(&next)
	p.start()
	return p
}

// RemovePeer stops the peer's ICE agent and forgets its paths, static
// included (a member left). It waits for the peer's state machine to end.
func (t *Transport) RemovePeer(key nodekey.Public) {
	t.mu.Lock()
	old := *t.peers.Load()
	p := old[key]
	if p != nil {
		next := make(map[nodekey.Public]*peer, len(old))
		for k, v := range old {
			if k != key {
				next[k] = v
			}
		}
		t.peers.Store(&next)
		if sp := p.static.Swap(nil); sp != nil {
			t.setAddrLocked(netip.AddrPort{}, nil, sp.addr)
		}
	}
	t.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

func (t *Transport) peer(key nodekey.Public) *peer { return (*t.peers.Load())[key] }

// HandleSignal takes a signal message the caller received from peer from
// (authenticated by the caller: the overlay opens it with the mesh key and
// checks the sender). Messages from unknown peers and malformed messages are
// dropped with an error; the caller may log it at debug level.
func (t *Transport) HandleSignal(from nodekey.Public, msg []byte) error {
	s, err := parseSignal(msg)
	if err != nil {
		t.stats.signalsBad.Add(1)
		return fmt.Errorf("direct: signal from %s: %w", from.ShortString(), err)
	}
	p := t.peer(from)
	if p == nil {
		return fmt.Errorf("direct: signal from %s: not a peer", from.ShortString())
	}
	p.post(s)
	return nil
}

// controlling reports whether this node controls ICE with peer: the lower
// key does, so both sides agree without a round trip.
func (t *Transport) controlling(peer nodekey.Public) bool {
	return bytes.Compare(t.self[:], peer[:]) < 0
}

// nextSession returns a session id greater than every id handed out before
// and than atLeast (the newest the peer has seen): ids start from the clock
// so a restarted node's sessions supersede its previous life's.
func (t *Transport) nextSession(atLeast uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	id := uint64(time.Now().UnixNano())
	if id <= t.lastSes {
		id = t.lastSes + 1
	}
	if id <= atLeast {
		id = atLeast + 1
	}
	t.lastSes = id
	return id
}

// setAddr maps a validated remote address to p (or unmaps it, p == nil),
// so received WireGuard packets from it are attributed to p.
func (t *Transport) setAddr(addr netip.AddrPort, p *peer, old netip.AddrPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setAddrLocked(addr, p, old)
}

// setAddrLocked is setAddr with t.mu held. The old address stays mapped
// while another of the peer's paths (ICE's or the static one) still uses
// it; the caller has already swapped the path it replaces.
func (t *Transport) setAddrLocked(addr netip.AddrPort, p *peer, old netip.AddrPort) {
	cur := *t.byAddr.Load()
	next := make(map[netip.AddrPort]*peer, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	if q := next[old]; old.IsValid() && q != nil && (q == p || p == nil) && !q.usesAddr(old) {
		delete(next, old)
	}
	if p != nil && addr.IsValid() {
		next[addr] = p
	}
	t.byAddr.Store(&next)
}

// now is a monotonic timestamp for liveness (nanoseconds since New).
func (t *Transport) now() int64 { return int64(time.Since(t.epoch)) }

// Reachable reports whether peer has a validated direct path on which a
// packet arrived within LossTimeout, or a usable static path.
func (t *Transport) Reachable(peer nodekey.Public) bool {
	p := t.peer(peer)
	return p != nil && p.livePath(t.now()) != nil
}

// Send sends one WireGuard packet to peer on its direct path.
func (t *Transport) Send(peer nodekey.Public, pkt []byte) error {
	p := t.peer(peer)
	if p == nil {
		return fmt.Errorf("direct: peer %s: %w", peer.ShortString(), ErrNoDirectPath)
	}
	now := t.now()
	path := p.livePath(now)
	if path == nil {
		return fmt.Errorf("direct: peer %s: %w", peer.ShortString(), ErrNoDirectPath)
	}
	p.noteSend(path, now)
	if _, err := t.udp.WriteToUDPAddrPort(pkt, path.addr); err != nil {
		return fmt.Errorf("direct: sending to %s: %w", path.addr, err)
	}
	return nil
}

// PathState is where a peer's direct path stands.
type PathState int

const (
	// StateConnecting: ICE is gathering, signaling or checking.
	StateConnecting PathState = iota + 1
	// StateDirect: a pair is selected and packets arrive on it.
	StateDirect
	// StateLost: no direct path; the next ICE attempt waits for backoff.
	StateLost
	// StateUnanswered: a pair is still selected, but the peer stopped
	// answering the probes of a busy path, so the path carries nothing
	// (traffic is on the relay) while ICE waits out its loss timeout,
	// when it becomes StateLost or, if an answer arrives, StateDirect
	// again. Reported only; the state machine never holds it.
	StateUnanswered
)

func (s PathState) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateDirect:
		return "direct"
	case StateLost:
		return "lost"
	case StateUnanswered:
		return "unanswered"
	}
	return "unknown"
}

// PathInfo describes a peer's direct path for status output.
type PathInfo struct {
	State  PathState
	Remote netip.AddrPort // the peer's address on the selected pair or static path; zero unless direct
	Static bool           // the path is a static one (SetStatic), not ICE's
	RTT    time.Duration  // ICE's latest round-trip time on the selected pair
	Since  time.Time      // when State last changed
}

// PathInfo returns the peer's direct path state; ok is false for a peer
// that was not added.
func (t *Transport) PathInfo(peer nodekey.Public) (PathInfo, bool) {
	p := t.peer(peer)
	if p == nil {
		return PathInfo{}, false
	}
	pi := p.info()
	if pi.State == StateDirect {
		if dp := p.path.Load(); dp != nil && dp.cut.Load() {
			pi.State = StateUnanswered
		}
		return pi, true
	}
	if si, ok := p.staticInfo(t.now()); ok && (si.State == StateDirect || pi.State == 0) {
		return si, true
	}
	if pi.State == 0 { // no ICE and no static path
		pi.State = StateLost
	}
	return pi, true
}

// Stats counts what the transport received and dropped.
type Stats struct {
	WireGuardIn     uint64 // WireGuard packets attributed to a peer
	STUNIn          uint64 // STUN packets passed to ICE
	DropsUnknownSrc uint64 // WireGuard packets from an address with no validated path
	DropsOther      uint64 // datagrams that are neither WireGuard, STUN nor (with OnMesh) sealed mesh messages, or arrived truncated
	DropsSTUNQueue  uint64 // STUN packets dropped because ICE did not keep up
	DropsNoDeliver  uint64 // WireGuard packets read while no Bind was open and no Deliver set
	DropsBadSignal  uint64 // signal messages that did not parse
	MeshIn          uint64 // sealed mesh messages queued for OnMesh
	DropsMeshRate   uint64 // sealed mesh messages over their source's rate (mesh.go)
	DropsMeshQueue  uint64 // sealed mesh messages dropped because OnMesh did not keep up
	DropsBatchFull  uint64 // coalesced WireGuard datagrams that did not fit the device's batch
	DropsCandidate  uint64 // peers' ICE candidates refused (loopback, link-local, this host's own addresses...: candidates.go)
	// CandidateUpdates counts peers' ICE candidates that a repeated offer
	// or answer of a session added (flagUpdates): what the peer gathered
	// after its first one went out.
	CandidateUpdates uint64
	DropsBlackholed  uint64 // test hook
	ProbesSent       uint64 // path checks sent (swarm mode: pathcheck.go)
	PathsProven      uint64 // path checks answered from the probed address
	DropsProbeRate   uint64 // path checks not sent: over the per-peer probe rate
	DropsBadReply    uint64 // path check replies matching no pending check
	DHTIn            uint64 // KRPC datagrams read for the DHT node (DropsOther while there is none)
	DropsDHT         uint64 // KRPC datagrams dropped: too large, over rate, the DHT node did not keep up
	DropsDHTSend     uint64 // KRPC datagrams the DHT node sent over the send rate
	LivenessProbes   uint64 // ICE checks sent to a suspect path that carries traffic (probe.go)
	FastLosses       uint64 // paths that stopped carrying packets after unanswered liveness probes
	FalseLosses      uint64 // of those, paths the peer was heard on again before LossTimeout
}

// Stats returns the counters.
func (t *Transport) Stats() Stats {
	s := Stats{
		WireGuardIn:      t.stats.wgIn.Load(),
		STUNIn:           t.stats.stunIn.Load(),
		DropsUnknownSrc:  t.stats.dropUnknownSrc.Load(),
		DropsOther:       t.stats.dropOther.Load(),
		DropsSTUNQueue:   t.stun.drops.Load(),
		DropsNoDeliver:   t.stats.dropNoDeliver.Load(),
		DropsBadSignal:   t.stats.signalsBad.Load(),
		MeshIn:           t.stats.meshIn.Load(),
		DropsMeshRate:    t.stats.dropMeshRate.Load(),
		DropsMeshQueue:   t.stats.dropMeshQueue.Load(),
		DropsBatchFull:   t.stats.dropBatchFull.Load(),
		DropsCandidate:   t.stats.dropCandidate.Load(),
		CandidateUpdates: t.stats.candidateUpdates.Load(),
		DropsBlackholed:  t.stats.dropBlackholed.Load(),
		ProbesSent:       t.stats.probesSent.Load(),
		PathsProven:      t.stats.pathsProven.Load(),
		DropsProbeRate:   t.stats.dropProbeRate.Load(),
		DropsBadReply:    t.stats.dropBadReply.Load(),
		DHTIn:            t.stats.dhtIn.Load(),
		LivenessProbes:   t.stats.liveProbes.Load(),
		FastLosses:       t.stats.fastLosses.Load(),
		FalseLosses:      t.stats.falseLosses.Load(),
	}
	if c := t.dht.Load(); c != nil {
		s.DropsDHT, s.DropsDHTSend = c.drops.Load(), c.outDrops.Load()
	}
	return s
}
