package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
)

// Defaults for the zero values of Config.
const (
	// DefaultRecvQueue is how many data messages wait for Recv before newer
	// ones are dropped. 1024 WireGuard packets is about 1.5 MB: enough to ride out a
	// slow consumer for a few milliseconds at gigabit rates, small enough
	// that a stalled consumer does not pin memory.
	DefaultRecvQueue = 1024
	// DefaultMinBackoff is the first reconnect delay ceiling: short, because a
	// relay that restarts is usually back within a second.
	DefaultMinBackoff = 250 * time.Millisecond
	// DefaultMaxBackoff caps the reconnect delay so a node finds a relay that
	// came back within half a minute without hammering one that is down.
	DefaultMaxBackoff = 30 * time.Second
	// DefaultDialTimeout bounds one connection attempt: TCP, proxy CONNECT,
	// TLS, the WebSocket upgrade and the relay handshake together. A relay
	// that cannot answer within 10 s is treated as down.
	DefaultDialTimeout = 10 * time.Second
)

// maxRecvQueue bounds Config.RecvQueue: each queued message holds up to
// relayproto.MaxPayload bytes, and 64 Ki of them already allows 4 GiB.
const maxRecvQueue = 1 << 16

// Config configures a Client. The zero value is not usable on its own: URL,
// PrivateKey and Admission are required; every other field has a default.
type Config struct {
	// URL is the relay, ws:// or wss://, as ParseURL accepts it. An empty
	// path or "/" means relayproto.Path.
	URL string
	// PrivateKey is this node's key; the relay learns its public half and
	// checks that we hold the private one.
	PrivateKey nodekey.Private
	// Admission is the mesh's admission key (mesh.Keys.Admission). The
	// relay admits us to the mesh's rendezvous, its hash, only with a
	// signature by it.
	Admission relayproto.AdmissionKey
	// TLSConfig is used for wss:// relays, e.g. to trust a private CA. Nil
	// means the system roots.
	TLSConfig *tls.Config
	// Proxy picks an HTTP proxy for the relay URL; the client tunnels through
	// it with CONNECT for ws:// and wss:// alike. Nil means
	// http.ProxyFromEnvironment (HTTPS_PROXY for wss://, HTTP_PROXY for
	// ws://, NO_PROXY honoured; it never proxies localhost).
	Proxy func(*http.Request) (*url.URL, error)
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger

	// Name is the client's name as a transports.Transport, in the Bind's
	// path names and status (the node uses "relay:primary" and
	// "relay:fallback"); empty means "relay".
	Name string

	// Deliver, OnSealed and OnPeer make the client a transport (see
	// transport.go): it classifies each payload it receives
	// (transports.Classify) and hands it to the hook for its kind instead
	// of queueing it for Recv, which then returns ErrHooks. What a nil
	// hook would get is dropped. With all three nil the client is a plain
	// datagram service read with Recv.
	//
	// Deliver receives each WireGuard message a peer sent to this node,
	// usually Bind.Deliver. It is called from the connection's reader
	// goroutine, so it must not block, and pkt is the reader's buffer:
	// valid only during the call, the callee copies what it keeps.
	// WireGuard messages broadcast on the rendezvous are dropped: WireGuard
	// is unicast.
	Deliver func(from nodekey.Public, pkt []byte)
	// Inbox, when set, takes the WireGuard messages Deliver would get,
	// without a copy: the reader reads each frame into a buffer from
	// transports.InboundBuffer and hands that buffer over with the packet
	// in it. The node sets its Bind here.
	Inbox Inbox
	// OnSealed receives each sealed mesh message, unicast or broadcast,
	// with the sender key the relay authenticated in its handshake, and a
	// copy the callee owns. It is called from the connection's reader, in
	// order with Deliver (see transport.go for why), so it holds up that
	// connection's reading while it runs: it may take as long as
	// configuring a WireGuard peer, not longer.
	OnSealed func(from nodekey.Public, msg []byte)
	// OnPeer is told each change of the keys present in the rendezvous, in
	// order, from one goroutine; changes are never dropped (a key that
	// comes and goes before OnPeer is called produces none). Reachable
	// answers from the same set without waiting for OnPeer.
	OnPeer func(peer nodekey.Public, present bool)

	// RecvQueue is the number of data messages buffered for Recv; 0 means
	// DefaultRecvQueue.
	RecvQueue int
	// MinBackoff and MaxBackoff bound the delay between reconnect attempts
	// after an unplanned loss; 0 means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds one connection attempt; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
}

// withDefaults validates cfg and returns a copy with defaults filled in and
// the URL normalized.
func (cfg Config) withDefaults() (Config, error) {
	u, err := ParseURL(cfg.URL)
	if err != nil {
		return cfg, fmt.Errorf("relay: config: %w", err)
	}
	cfg.URL = u.String()
	if cfg.PrivateKey.IsZero() {
		return cfg, errors.New("relay: config: PrivateKey is zero")
	}
	if cfg.Admission.IsZero() {
		return cfg, errors.New("relay: config: Admission is zero")
	}
	if cfg.RecvQueue < 0 || cfg.RecvQueue > maxRecvQueue {
		return cfg, fmt.Errorf("relay: config: RecvQueue %d outside 0..%d", cfg.RecvQueue, maxRecvQueue)
	}
	if cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 || cfg.DialTimeout < 0 {
		return cfg, errors.New("relay: config: negative duration")
	}
	if cfg.RecvQueue == 0 {
		cfg.RecvQueue = DefaultRecvQueue
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Proxy == nil {
		cfg.Proxy = http.ProxyFromEnvironment
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = "relay"
	}
	return cfg, nil
}
