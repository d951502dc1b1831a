package relayserver

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
)

// Defaults for the zero Config. Each bounds what one client can cost the
// relay; docs/protocol.md lists them beside the protocol.
const (
	// DefaultMaxConnsPerKey allows make-before-break (old and new connection)
	// twice over, while a client stuck in a reconnect loop cannot pile up
	// routable connections.
	DefaultMaxConnsPerKey = 4
	// DefaultMaxConns keeps one instance within what a few GiB of memory
	// hold: each connection costs two goroutines and at most one send queue.
	DefaultMaxConns = 50000
	// DefaultSendQueueFrames is 512 frames: about half a second of a busy
	// WireGuard tunnel at 1 Gbit/s of small packets. Beyond that a reader is
	// not keeping up and dropping, as a router would, is kinder than latency.
	DefaultSendQueueFrames = 512
	// DefaultSendQueueBytes caps the same queue in bytes (64 full-size frames),
	// so that large frames cannot make 512 frames cost 32 MiB.
	DefaultSendQueueBytes = 4 << 20
	// DefaultRateBytesPerSec and DefaultRateBurstBytes bound what one
	// connection may push through the relay. 256 MiB/s (2.1 Gbit/s) is
	// more than most members' link to a relay, so a private relay does not
	// hold its member below its own link (a 2-core instance forwards
	// 250-500 MB/s for one pair with batched writes); it still stops one
	// client of a big shared instance from taking every core, and the
	// per-connection queue caps bound what a fast sender costs its
	// receivers. A shared relay that wants each
	// member to have a fair share sets a lower --rate (docs/operations.md).
	// Clients pace themselves to the rate the Welcome announces, so a bulk
	// transfer meets backpressure rather than drops (drops would collapse
	// its TCP window).
	DefaultRateBytesPerSec = 256 << 20
	DefaultRateBurstBytes  = 8 << 20
	// DefaultHandshakeTimeout is generous for a TLS+WebSocket client on a slow
	// link, short enough that half-open sockets do not accumulate.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultPingInterval is below the 30-60 s idle cut-off of common load
	// balancers and corporate proxies, so quiet tunnels stay open.
	DefaultPingInterval = 20 * time.Second
	// DefaultIdleTimeout is three ping intervals: a peer that answered none
	// of them is gone.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultWriteTimeout bounds one socket write (a batch of queued
	// frames, at most 64 KiB), so a dead TCP peer whose
	// window never opens cannot hold its writer goroutine forever.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultDrainGrace is how long a drained client has to connect elsewhere
	// and send Leave; reconnecting takes a TLS handshake or two.
	DefaultDrainGrace = 5 * time.Second

	// DefaultMaxConnsPerIP lets a large office behind one NAT address (a few
	// hundred nodes, each with a make-before-break spare) in, while one
	// host needs a hundred addresses to fill an instance's 50 000 slots.
	DefaultMaxConnsPerIP = 500
	// DefaultHandshakeRatePerIP and DefaultHandshakeBurstPerIP bound
	// connection attempts from one address (token bucket, per second and
	// burst). Each attempt costs the relay an X25519 operation; a whole
	// office reconnecting after a relay restart (clients back off with
	// jitter from 250 ms) fits the burst, a flood from one host does not.
	DefaultHandshakeRatePerIP  = 20
	DefaultHandshakeBurstPerIP = 100
	// DefaultNet56Factor and DefaultNet48Factor scale the per-address
	// limits to an IPv6 /56 (what an ISP usually delegates to a home:
	// 256 /64s) and a /48 (a site: 65 536 /64s). Counting only by /64 let
	// one home open 256 times the per-address limit, one site 65 536
	// times; a /56 may hold twice, a /48 four times what one address may,
	// which still admits a few busy LANs behind one delegation.
	DefaultNet56Factor = 2
	DefaultNet48Factor = 4

	// DefaultMaxMembersPerRendezvous is the mesh layer's member limit:
	// a rendezvous never needs more keys, and each key costs every other
	// member a presence frame per change and every joiner a snapshot
	// entry, so the cap is what keeps a rendezvous's cost linear.
	DefaultMaxMembersPerRendezvous = 1024

	// DefaultBackplaneTTL is how long a member's presence entry in Redis
	// outlives its last refresh: the members of an instance that died are
	// reported gone this long (plus at most one refresh) after it died.
	DefaultBackplaneTTL = 10 * time.Second
	// DefaultBackplaneRefresh gives three refreshes per TTL, so one slow or
	// lost refresh never makes a live member look gone.
	DefaultBackplaneRefresh = 3 * time.Second
	// DefaultBackplaneQueueFrames and DefaultBackplaneQueueBytes bound the
	// frames waiting to be published to Redis: about 50 ms of a busy
	// instance's cross-instance traffic. Beyond it Redis is not keeping up
	// and frames are dropped, as a full send queue drops them.
	DefaultBackplaneQueueFrames = 8192
	DefaultBackplaneQueueBytes  = 32 << 20
)

// Unlimited switches off a limit that has one (RateBytesPerSec,
// MaxConnsPerIP, HandshakeRatePerIP and their /56 and /48 counterparts). Zero cannot say it: in Config, zero
// means "the default", so that the zero Config is a safe relay. The
// "plurenet relay" command spells it "unlimited" (or 0, as it always has)
// and passes this value.
const Unlimited = -1

// Config configures a Server. The zero value is a working relay with the
// defaults above and a fresh relay key.
type Config struct {
	// PrivateKey is the relay's X25519 key, used only for the handshake MAC.
	// Zero means generate one in New; clients do not pin it.
	PrivateKey nodekey.Private
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger

	// MaxConnsPerKey limits routable connections of one key in one
	// rendezvous; the next one gets ErrTooManyConns.
	MaxConnsPerKey int
	// MaxMembersPerRendezvous limits the keys present in one rendezvous,
	// counted across instances with a backplane; a new key beyond it gets
	// ErrRendezvousFull. At most 16384 (the backplane's remote view cap),
	// and its snapshot (33 bytes a key) must fit half a send queue.
	MaxMembersPerRendezvous int
	// MaxConns limits WebSocket connections on this instance; beyond it the
	// upgrade is refused with HTTP 503.
	MaxConns int
	// SendQueueFrames and SendQueueBytes bound each connection's outbound
	// queue; a frame that does not fit is dropped (the newest one).
	SendQueueFrames int
	SendQueueBytes  int
	// RateBytesPerSec is the sustained rate of frame bytes accepted from one
	// connection, RateBurstBytes its burst (raised to at least MaxFrame).
	// Unlimited disables the limit.
	RateBytesPerSec int
	RateBurstBytes  int

	HandshakeTimeout time.Duration // accept to Welcome
	PingInterval     time.Duration // WebSocket ping period; must be below IdleTimeout
	IdleTimeout      time.Duration // no frame or pong for this long closes with ErrIdle
	WriteTimeout     time.Duration // one socket write to the client (a batch of frames)
	// MaxConnLifetime, when positive, drains each connection at that age, as
	// hosted platforms that cut long connections would, but announced.
	MaxConnLifetime time.Duration
	// DrainGrace is how long a drained connection is served before it is
	// closed with ErrServerShutdown.
	DrainGrace time.Duration

	// MaxConnsPerIP limits WebSocket connections from one source address
	// (an IPv6 /64 counts as one address: a host usually holds a whole
	// /64); beyond it the upgrade is refused with HTTP 429. Unlimited
	// disables the limit.
	MaxConnsPerIP int
	// HandshakeRatePerIP and HandshakeBurstPerIP limit connection attempts
	// from one source address (per second, and burst); beyond them the
	// upgrade is refused with HTTP 429 before any key work is done.
	// Unlimited HandshakeRatePerIP disables the limit.
	HandshakeRatePerIP  float64
	HandshakeBurstPerIP int
	// The same limits for all the addresses of an IPv6 /56 and of a /48,
	// checked besides the /64's. Zero means the per-address value times
	// DefaultNet56Factor or DefaultNet48Factor (so they follow it, and are
	// off when it is off); Unlimited disables.
	MaxConnsPer56, MaxConnsPer48             int
	HandshakeRatePer56, HandshakeRatePer48   float64
	HandshakeBurstPer56, HandshakeBurstPer48 int
	// TrustProxyHeaders takes the client address from the last entry of
	// X-Forwarded-For, the one the proxy in front of the relay appended.
	// Set it only when such a proxy (one layer: Azure Container Apps
	// ingress, a load balancer) always sets the header: otherwise clients
	// choose their own address and the per-address limits mean nothing.
	TrustProxyHeaders bool

	// Backplane is a Redis URL (redis://[user:password@]host:port/db, or
	// rediss:// for TLS) shared by several relay instances, so that
	// members of one rendezvous connected to different instances reach each
	// other. Empty means a single instance that needs nothing else.
	Backplane string
	// BackplaneTTL and BackplaneRefresh govern presence in Redis: each
	// instance refreshes its members' entries every BackplaneRefresh, and
	// an entry not refreshed for BackplaneTTL (its instance died) expires.
	// BackplaneRefresh must be at most half of BackplaneTTL.
	BackplaneTTL     time.Duration
	BackplaneRefresh time.Duration
	// BackplaneQueueFrames and BackplaneQueueBytes bound the frames waiting
	// to be published to Redis; beyond them frames are dropped and counted.
	BackplaneQueueFrames int
	BackplaneQueueBytes  int

	// NoBatches makes the relay one from before batch frames: it does not
	// offer them (relayproto.FlagBatches) and refuses them. It is for
	// testing clients against such relays; there is no other reason to
	// set it.
	NoBatches bool
}

// withDefaults returns cfg with zero fields set to the defaults, or an error
// naming the first field that makes no sense.
func (cfg Config) withDefaults() (Config, error) {
	def := func(p *int, d int) {
		if *p == 0 {
			*p = d
		}
	}
	defDur := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	def(&cfg.MaxConnsPerKey, DefaultMaxConnsPerKey)
	def(&cfg.MaxConns, DefaultMaxConns)
	def(&cfg.SendQueueFrames, DefaultSendQueueFrames)
	def(&cfg.SendQueueBytes, DefaultSendQueueBytes)
	def(&cfg.RateBytesPerSec, DefaultRateBytesPerSec)
	def(&cfg.RateBurstBytes, DefaultRateBurstBytes)
	defDur(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	defDur(&cfg.PingInterval, DefaultPingInterval)
	defDur(&cfg.IdleTimeout, DefaultIdleTimeout)
	defDur(&cfg.WriteTimeout, DefaultWriteTimeout)
	defDur(&cfg.DrainGrace, DefaultDrainGrace)
	def(&cfg.MaxMembersPerRendezvous, DefaultMaxMembersPerRendezvous)
	def(&cfg.MaxConnsPerIP, DefaultMaxConnsPerIP)
	if cfg.HandshakeRatePerIP == 0 {
		cfg.HandshakeRatePerIP = DefaultHandshakeRatePerIP
	}
	def(&cfg.HandshakeBurstPerIP, DefaultHandshakeBurstPerIP)
	// A prefix limit left at zero follows the per-address one, Unlimited
	// included (which a factor would turn into another negative number).
	scaled := func(v float64, factor int) float64 {
		if v == Unlimited {
			return Unlimited
		}
		return v * float64(factor)
	}
	def(&cfg.MaxConnsPer56, int(scaled(float64(cfg.MaxConnsPerIP), DefaultNet56Factor)))
	def(&cfg.MaxConnsPer48, int(scaled(float64(cfg.MaxConnsPerIP), DefaultNet48Factor)))
	if cfg.HandshakeRatePer56 == 0 {
		cfg.HandshakeRatePer56 = scaled(cfg.HandshakeRatePerIP, DefaultNet56Factor)
	}
	if cfg.HandshakeRatePer48 == 0 {
		cfg.HandshakeRatePer48 = scaled(cfg.HandshakeRatePerIP, DefaultNet48Factor)
	}
	def(&cfg.HandshakeBurstPer56, DefaultNet56Factor*cfg.HandshakeBurstPerIP)
	def(&cfg.HandshakeBurstPer48, DefaultNet48Factor*cfg.HandshakeBurstPerIP)
	defDur(&cfg.BackplaneTTL, DefaultBackplaneTTL)
	defDur(&cfg.BackplaneRefresh, DefaultBackplaneRefresh)
	def(&cfg.BackplaneQueueFrames, DefaultBackplaneQueueFrames)
	def(&cfg.BackplaneQueueBytes, DefaultBackplaneQueueBytes)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RateBurstBytes < relayproto.MaxFrame {
		// A burst below one frame would refuse every full-size frame.
		cfg.RateBurstBytes = relayproto.MaxFrame
	}
	// One spelling of "no limit": a negative value other than Unlimited is
	// more likely a bug (a subtraction gone wrong) than a wish.
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"RateBytesPerSec", float64(cfg.RateBytesPerSec)},
		{"MaxConnsPerIP", float64(cfg.MaxConnsPerIP)},
		{"HandshakeRatePerIP", cfg.HandshakeRatePerIP},
		{"MaxConnsPer56", float64(cfg.MaxConnsPer56)},
		{"MaxConnsPer48", float64(cfg.MaxConnsPer48)},
		{"HandshakeRatePer56", cfg.HandshakeRatePer56},
		{"HandshakeRatePer48", cfg.HandshakeRatePer48},
	} {
		if f.v < 0 && f.v != Unlimited {
			return cfg, fmt.Errorf("relayserver: config: %s is %v: use a positive value, 0 for the default, or Unlimited", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxConnsPerKey", cfg.MaxConnsPerKey},
		{"MaxConns", cfg.MaxConns},
		{"SendQueueFrames", cfg.SendQueueFrames},
		{"SendQueueBytes", cfg.SendQueueBytes},
		{"HandshakeBurstPerIP", cfg.HandshakeBurstPerIP},
		{"HandshakeBurstPer56", cfg.HandshakeBurstPer56},
		{"HandshakeBurstPer48", cfg.HandshakeBurstPer48},
		{"MaxMembersPerRendezvous", cfg.MaxMembersPerRendezvous},
		{"BackplaneQueueFrames", cfg.BackplaneQueueFrames},
		{"BackplaneQueueBytes", cfg.BackplaneQueueBytes},
	} {
		if f.v < 0 {
			return cfg, fmt.Errorf("relayserver: config: %s is negative (%d)", f.name, f.v)
		}
	}
	if cfg.SendQueueBytes < relayproto.MaxFrame {
		return cfg, fmt.Errorf("relayserver: config: SendQueueBytes %d is below one frame (%d)", cfg.SendQueueBytes, relayproto.MaxFrame)
	}
	if cfg.MaxMembersPerRendezvous > maxRemoteMembers {
		return cfg, fmt.Errorf("relayserver: config: MaxMembersPerRendezvous %d is over %d, what the backplane's view of a rendezvous holds", cfg.MaxMembersPerRendezvous, maxRemoteMembers)
	}
	if cfg.MaxMembersPerRendezvous*snapshotFrameSize > cfg.SendQueueBytes/2 {
		// The joiner's snapshot is queued past the caps; it must leave
		// room in the queue for what follows it.
		return cfg, fmt.Errorf("relayserver: config: a snapshot of MaxMembersPerRendezvous %d keys (%d bytes) exceeds half of SendQueueBytes %d; raise SendQueueBytes or lower the member cap", cfg.MaxMembersPerRendezvous, cfg.MaxMembersPerRendezvous*snapshotFrameSize, cfg.SendQueueBytes)
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{
		{"HandshakeTimeout", cfg.HandshakeTimeout},
		{"PingInterval", cfg.PingInterval},
		{"IdleTimeout", cfg.IdleTimeout},
		{"WriteTimeout", cfg.WriteTimeout},
		{"MaxConnLifetime", cfg.MaxConnLifetime},
		{"DrainGrace", cfg.DrainGrace},
		{"BackplaneTTL", cfg.BackplaneTTL},
		{"BackplaneRefresh", cfg.BackplaneRefresh},
	} {
		if f.v < 0 {
			return cfg, fmt.Errorf("relayserver: config: %s is negative (%v)", f.name, f.v)
		}
	}
	if cfg.BackplaneRefresh*2 > cfg.BackplaneTTL {
		return cfg, fmt.Errorf("relayserver: config: BackplaneRefresh %v is more than half of BackplaneTTL %v; one late refresh would expire live members", cfg.BackplaneRefresh, cfg.BackplaneTTL)
	}
	if cfg.BackplaneQueueBytes < bpMaxMessage {
		return cfg, fmt.Errorf("relayserver: config: BackplaneQueueBytes %d is below one message (%d)", cfg.BackplaneQueueBytes, bpMaxMessage)
	}
	if cfg.PingInterval >= cfg.IdleTimeout {
		return cfg, errors.New("relayserver: config: PingInterval must be shorter than IdleTimeout, or every quiet client would be cut")
	}
	if cfg.DrainGrace.Milliseconds() > int64(^uint32(0)) {
		return cfg, fmt.Errorf("relayserver: config: DrainGrace %v does not fit the Drain frame", cfg.DrainGrace)
	}
	return cfg, nil
}

// welcome is what the Welcome frame announces under cfg.
func (cfg Config) welcome() relayproto.Welcome {
	w := relayproto.Welcome{MaxPayload: relayproto.MaxPayload}
	if cfg.RateBytesPerSec > 0 {
		w.RateBytes = uint32(min(cfg.RateBytesPerSec, int(^uint32(0))))
	}
	if cfg.MaxConnLifetime > 0 {
		// Rounded down, and at least 1 because 0 means "unlimited": the
		// client must never plan on more time than it has.
		w.LifetimeSecs = uint32(max(1, min(int64(cfg.MaxConnLifetime/time.Second), int64(^uint32(0)))))
	}
	return w
}
