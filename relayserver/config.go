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
	// connection may push through the relay. 64 MiB/s lets one tunnel use
	// about half of what a 2-core instance forwards (measured ~135 MB/s)
	// while a single client cannot take all of it. Clients pace themselves
	// to the rate the Welcome announces, so a bulk transfer meets
	// backpressure rather than drops (drops would collapse its TCP window).
	DefaultRateBytesPerSec = 64 << 20
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
	// DefaultWriteTimeout bounds one frame write, so a dead TCP peer whose
	// window never opens cannot hold its writer goroutine forever.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultDrainGrace is how long a drained client has to connect elsewhere
	// and send Leave; reconnecting takes a TLS handshake or two.
	DefaultDrainGrace = 5 * time.Second
)

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
	// MaxConns limits WebSocket connections on this instance; beyond it the
	// upgrade is refused with HTTP 503.
	MaxConns int
	// SendQueueFrames and SendQueueBytes bound each connection's outbound
	// queue; a frame that does not fit is dropped (the newest one).
	SendQueueFrames int
	SendQueueBytes  int
	// RateBytesPerSec is the sustained rate of frame bytes accepted from one
	// connection, RateBurstBytes its burst (raised to at least MaxFrame).
	// A negative RateBytesPerSec disables the limit.
	RateBytesPerSec int
	RateBurstBytes  int

	HandshakeTimeout time.Duration // accept to Welcome
	PingInterval     time.Duration // WebSocket ping period; must be below IdleTimeout
	IdleTimeout      time.Duration // no frame or pong for this long closes with ErrIdle
	WriteTimeout     time.Duration // one frame write to the client
	// MaxConnLifetime, when positive, drains each connection at that age, as
	// hosted platforms that cut long connections would, but announced.
	MaxConnLifetime time.Duration
	// DrainGrace is how long a drained connection is served before it is
	// closed with ErrServerShutdown.
	DrainGrace time.Duration
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RateBurstBytes < relayproto.MaxFrame {
		// A burst below one frame would refuse every full-size frame.
		cfg.RateBurstBytes = relayproto.MaxFrame
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxConnsPerKey", cfg.MaxConnsPerKey},
		{"MaxConns", cfg.MaxConns},
		{"SendQueueFrames", cfg.SendQueueFrames},
		{"SendQueueBytes", cfg.SendQueueBytes},
	} {
		if f.v < 0 {
			return cfg, fmt.Errorf("relayserver: config: %s is negative (%d)", f.name, f.v)
		}
	}
	if cfg.SendQueueBytes < relayproto.MaxFrame {
		return cfg, fmt.Errorf("relayserver: config: SendQueueBytes %d is below one frame (%d)", cfg.SendQueueBytes, relayproto.MaxFrame)
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
	} {
		if f.v < 0 {
			return cfg, fmt.Errorf("relayserver: config: %s is negative (%v)", f.name, f.v)
		}
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
