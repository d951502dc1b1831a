// Package static is the discovery source of configured peers: the
// --peer KEY@HOST:PORT and --peer HOST:PORT of swarm mode. It reports each
// peer's address to the node, looking host names up again every interval
// (a home server on a dynamic DNS name moves), and keeps the last good
// address when a lookup fails.
//
// Static peers have no medium of their own: the node sends its
// announcements to the addresses this source found, from its direct
// socket, so that a peer learns the node's address from their source. A
// peer that answers tells the node its key (if it was not configured) and
// its address as the network sees it.
package static

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plures/plurenet/discovery"
	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports/direct"
)

// Limits.
const (
	// MaxPeers bounds the configured peers: each costs one datagram per
	// announce interval and, for a name, one DNS lookup.
	MaxPeers = 64

	// resolveTimeout bounds the lookup of one peer's host name, so that a
	// dead DNS server delays a round of lookups by at most this much per
	// name (and only names: IP literals need none).
	resolveTimeout = 2 * time.Second
)

// Peer is one configured peer.
type Peer struct {
	Key  nodekey.Public // zero: learned from the peer's first announcement
	Host string         // IP literal (IPv6 without brackets) or host name
	Port uint16
}

func (p Peer) String() string {
	hp := net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port)))
	if p.Key.IsZero() {
		return hp
	}
	return p.Key.String() + "@" + hp
}

// ParsePeer parses "KEY@HOST:PORT" or "HOST:PORT", KEY as "plurenet key
// public" prints it, HOST an IPv4 address, an IPv6 address in brackets
// ("[2001:db8::7]:51898") or a host name. Link-local IPv6 addresses are
// refused: they need a zone, which the direct path does not carry (see
// transports/direct, candidates.go).
func ParsePeer(s string) (Peer, error) {
	var p Peer
	hp := s
	if k, rest, ok := strings.Cut(s, "@"); ok {
		key, err := nodekey.ParsePublic(k)
		if err != nil {
			return p, fmt.Errorf("peer %q: %w (want KEY@HOST:PORT, KEY as \"plurenet key public\" prints it)", s, err)
		}
		if key.IsZero() {
			return p, fmt.Errorf("peer %q: the all-zero key is no node's key", s)
		}
		p.Key, hp = key, rest
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil || host == "" {
		return Peer{}, fmt.Errorf("peer %q: want HOST:PORT or KEY@HOST:PORT", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return Peer{}, fmt.Errorf("peer %q: port %q: want 1 to 65535", s, port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.Is6() && (ip.IsLinkLocalUnicast() || ip.Zone() != "") {
			return Peer{}, fmt.Errorf("peer %q: a link-local IPv6 address needs a zone, which the direct path does not support: give the peer's global or ULA address", s)
		}
		if !direct.ValidRemote(netip.AddrPortFrom(ip, uint16(n))) {
			return Peer{}, fmt.Errorf("peer %q: not a unicast address", s)
		}
		host = ip.String()
	} else if len(host) > 253 || strings.ContainsAny(host, " /\\@%:") {
		return Peer{}, fmt.Errorf("peer %q: %q is neither an IP address nor a host name", s, host)
	}
	p.Host, p.Port = host, uint16(n)
	return p, nil
}

// Config configures a Source. The zero value is usable (and finds nothing).
type Config struct {
	Peers []Peer
	// Interval is how often host names are looked up again; zero means
	// mesh.AnnounceInterval, the pace at which the node announces itself.
	Interval time.Duration
	// Resolver looks host names up; nil means net.DefaultResolver.
	Resolver *net.Resolver
	Logger   *slog.Logger
}

// Source reports the configured peers.
type Source struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc // ends the lookups; nil until started
	wg      sync.WaitGroup
}

// New checks cfg.
func New(cfg Config) (*Source, error) {
	if len(cfg.Peers) > MaxPeers {
		return nil, fmt.Errorf("%d static peers: at most %d", len(cfg.Peers), MaxPeers)
	}
	for _, p := range cfg.Peers {
		if p.Port == 0 || p.Host == "" {
			return nil, fmt.Errorf("static peer %q: want a host and a port", p)
		}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = mesh.AnnounceInterval
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Source{cfg: cfg, log: cfg.Logger}, nil
}

// Start reports each peer given by IP address to sink.Found before it
// returns, and looks host names up in the background (at once, then every
// Interval) until ctx ends or Close, reporting an address when it is new.
// A failed lookup keeps the last address.
func (s *Source) Start(ctx context.Context, sink discovery.Sink) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := discovery.BeginStart(sink, &s.started, "static peers"); err != nil {
		return err
	}
	var names []Peer
	for _, p := range s.cfg.Peers {
		if ip, err := netip.ParseAddr(p.Host); err == nil {
			sink.Found(discovery.Peer{Label: p.String(), Key: p.Key, Addr: netip.AddrPortFrom(ip, p.Port)})
		} else {
			names = append(names, p)
		}
	}
	ctx, s.cancel = context.WithCancel(ctx)
	if len(names) == 0 {
		return nil
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.resolveLoop(ctx, names, sink.Found)
	}()
	return nil
}

// Announce sends nothing: static peers are reached at the addresses Start
// reported, which the node announces to from its direct socket.
func (s *Source) Announce([]byte) error { return nil }

// Close ends the lookups and waits for them. It is idempotent.
func (s *Source) Close() error {
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
	return nil
}

func (s *Source) resolveLoop(ctx context.Context, names []Peer, found func(discovery.Peer)) {
	last := make([]netip.AddrPort, len(names))
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		for i, p := range names {
			addr, ok := s.resolve(ctx, p)
			if ok && addr != last[i] {
				last[i] = addr
				found(discovery.Peer{Label: p.String(), Key: p.Key, Addr: addr})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resolve looks p's host name up: its first IPv4 address, else (a name
// with only AAAA records) its first IPv6 one. IPv4 first keeps what a name
// with both resolves to as it was before the direct path spoke IPv6, and
// works from an IPv4-only socket.
func (s *Source) resolve(ctx context.Context, p Peer) (netip.AddrPort, bool) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := s.cfg.Resolver.LookupNetIP(ctx, "ip", p.Host)
	slices.SortStableFunc(ips, func(a, b netip.Addr) int { return cmp.Compare(a.Unmap().BitLen(), b.Unmap().BitLen()) })
	if err != nil || len(ips) == 0 {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			s.log.Warn("static peer: cannot resolve its host name; keeping its last address", "peer", p.String(), "err", err)
		}
		return netip.AddrPort{}, false
	}
	addr := netip.AddrPortFrom(ips[0].Unmap(), p.Port)
	if !direct.ValidRemote(addr) {
		s.log.Warn("static peer: its name resolves to an unusable address", "peer", p.String(), "addr", addr.String())
		return netip.AddrPort{}, false
	}
	return addr, true
}
