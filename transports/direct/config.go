package direct

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

// Timing of the path state machine.
const (
	// KeepaliveInterval is how often ICE sends a consent check (a STUN
	// binding request, RFC 7675) on a direct path, whatever WireGuard sends.
	// Three of them fit in LossTimeout, so one lost probe never fails a
	// path.
	KeepaliveInterval = time.Second

	// LossTimeout is how long a direct path may go without any packet from
	// the peer (WireGuard or STUN) before it is declared lost and the Bind
	// falls back to a relay. The peer probes every KeepaliveInterval, so
	// silence this long means the path is gone, not idle. A path this
	// side is sending on is cut sooner when probes go unanswered
	// (probe.go); this timeout then ends its ICE session.
	LossTimeout = 3 * time.Second

	// connectTimeout bounds one ICE attempt, gathering included: host
	// candidates pair in milliseconds and a hole punch in well under a
	// second; an attempt that has not succeeded in 10 s will not, and is
	// retried later with backoff.
	connectTimeout = 10 * time.Second

	// retryMin and retryMax bound the delay before the next ICE attempt
	// after a failure or a loss: a path that flaps or a peer behind a NAT
	// that cannot be punched costs a few STUN packets a minute at most.
	retryMin = 2 * time.Second
	retryMax = 60 * time.Second

	// offerRetransmitMin/Max pace offers (and requests) sent before an answer
	// arrives: signals travel over a relay and may be lost.
	offerRetransmitMin = 500 * time.Millisecond
	offerRetransmitMax = 2 * time.Second

	// minSessionInterval is the least time between two sessions the
	// controlling member starts at the request of its peer, so a peer
	// flooding requests cannot make it churn ICE agents.
	minSessionInterval = time.Second

	// stunGatherTimeout bounds the wait for a STUN server's answer when
	// gathering server-reflexive candidates; the offer waits for gathering,
	// so an unreachable STUN server delays an attempt by this much.
	stunGatherTimeout = 3 * time.Second

	// earlyCandidates is how long an offer or answer waits for gathering
	// to end before it goes with the candidates at hand, to a peer that
	// takes candidate updates (flagUpdates); the rest follow as they
	// arrive. A STUN server that answers answers within a round trip, so
	// most sessions still send one offer with everything.
	earlyCandidates = 200 * time.Millisecond

	// maxRemoteCandidates bounds the candidates a session takes from its
	// peer over all its offers or answers: twice what one signal carries.
	maxRemoteCandidates = 2 * maxCandidates

	// StaticHold is how long a static path (SetStatic) stays usable
	// without a packet from the peer, counted from the last SetStatic for
	// its address. The overlay confirms a path every time a sealed
	// announcement arrives from it (every 15 s) and drops a member silent
	// for 45 s (mesh.MemberTimeout), so a live member's path never lapses,
	// and WireGuard may start a handshake before the peer has sent anything.
	StaticHold = 45 * time.Second

	// tickInterval is how often a peer's state machine looks at its timers.
	// Reachable checks liveness itself, so this only bounds how late a
	// state change is noticed for status and retries.
	tickInterval = 250 * time.Millisecond
)

// Config configures a Transport. Signal is required unless DisableICE is
// set; the zero value of everything else is usable.
type Config struct {
	// PrivateKey is this node's key. Its public half decides ICE roles (the
	// lower key controls) and is never sent by this package.
	PrivateKey nodekey.Private

	// ListenPort is the UDP port of the socket; 0 picks a random one.
	ListenPort int
	// ListenAddr is the address to bind; the zero value binds every
	// address of both families (a dual-stack socket: socket.go). An IPv4
	// address, 0.0.0.0 included, keeps the direct path to IPv4; an IPv6
	// one (not link-local) to IPv6. Tests bind 127.0.0.1.
	ListenAddr netip.Addr

	// ExcludePrefixes are addresses that must never carry the direct path:
	// the mesh's own overlay prefixes. With a kernel TUN the node's overlay
	// address is a local interface address, and a "direct" path to a
	// peer's overlay address would send WireGuard into its own tunnel.
	// Such candidates are neither offered nor accepted.
	ExcludePrefixes []netip.Prefix

	// STUNServers are "host:port" STUN servers used to learn this node's
	// public (server-reflexive) address. Without one only host candidates
	// are gathered, which connects members of one LAN but punches no NAT.
	// Each family asks the servers it can reach: an IPv4 literal gives an
	// IPv4 answer only, an IPv6 literal ("[2001:db8::1]:3478") an IPv6 one,
	// a host name both where it has A and AAAA records.
	STUNServers []string

	// Signal sends a signal message to peer. It must not block for long
	// (it is called from the peer's state machine); a message it cannot
	// send may be dropped: signals are retransmitted.
	Signal func(peer nodekey.Public, msg []byte) error

	// Deliver, if set, receives WireGuard packets read while no Bind has
	// this transport's ReceiveFunc open (the device is down, or the
	// transport was added after the Bind opened). Usually Bind.Deliver. pkt
	// is the reader's buffer, valid only during the call: the callee copies
	// what it keeps. Without it such packets are dropped and counted.
	Deliver func(from nodekey.Public, pkt []byte)

	// OnPathChange, if set, is called when the direct path to peer
	// changes: ICE validates it or moves it to another pair, or it stops
	// carrying packets (lost, or cut by unanswered probes) and packets
	// take the relay. That is the moment a WireGuard handshake message
	// lost on the old path is worth sending again
	// (transports.Bind.ResendHandshake). It is called from the peer's
	// state machine and must not block, nor call RemovePeer.
	OnPathChange func(peer nodekey.Public)

	// DisableICE turns ICE off: peers are reached only on static paths
	// (SetStatic), and no Signal func is needed. The overlay's swarm mode,
	// which has no relay to carry ICE signaling, uses this.
	DisableICE bool

	// OnMesh, if set, receives the sealed mesh messages (first byte
	// mesh.SealedHeader, at most mesh.MaxSealed bytes) that arrive on the
	// socket, with their source address; without it they are dropped. It
	// is called from one goroutine, in arrival order, with a copy the
	// callee owns; it may block briefly (messages arriving meanwhile queue,
	// up to meshQueue). The sender is not authenticated here: the callee
	// opens the message with the mesh key.
	OnMesh func(from netip.AddrPort, msg []byte)

	// SealSignal seals a path-check signal message as the mesh does
	// (mesh.KindSignal, signed by this node) so that the transport can
	// send it with SendMesh (pathcheck.go). Without it no path checks are
	// made: static paths come only from SetStatic. Swarm mode sets it
	// (with DisableICE), and so does auto mode with the DHT, where a
	// static path found without a relay lives beside ICE's (ICE's path,
	// when live, is preferred: livePath).
	SealSignal func(msg []byte) ([]byte, error)

	Logger *slog.Logger
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Signal == nil && !cfg.DisableICE {
		return cfg, errors.New("direct: no Signal func: ICE needs a signaling channel to the peers")
	}
	if cfg.PrivateKey.IsZero() {
		return cfg, errors.New("direct: no private key")
	}
	if cfg.ListenPort < 0 || cfg.ListenPort > 65535 {
		return cfg, fmt.Errorf("direct: listen port %d out of range", cfg.ListenPort)
	}
	if err := checkListenAddr(cfg.ListenAddr); err != nil {
		return cfg, err
	}
	for _, s := range cfg.STUNServers {
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			return cfg, fmt.Errorf("direct: STUN server %q: want host:port", s)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return cfg, fmt.Errorf("direct: STUN server %q: bad port", s)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}
