package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/time/rate"

	"github.com/plures/plurenet/dns/names"
)

// DefaultTTL is the TTL of every answer. Membership changes are what DNS
// must follow: a member leaves (at once with a goodbye, within 45 s when it
// vanishes) or the IPv4 collision rule moves an address. Answers come from
// memory over loopback or one overlay hop, so caching saves next to
// nothing, while a long TTL keeps a departed member resolving. 5 s bounds
// that staleness; it is not 0 because some stub caches treat 0 as "do not
// cache" and a program resolving in a loop would then ask every time.
const DefaultTTL = 5 * time.Second

// maxTTL bounds Config.TTL: beyond a minute a departed member lingers in
// caches longer than the membership itself takes to notice.
const maxTTL = time.Minute

// maxUDPQuery is the buffer a UDP query is read into. A query is one
// question (at most 255 bytes of name) and an OPT record; 1232 bytes
// leave room for any EDNS0 options a stub sends, and a larger datagram is
// cut and then fails to parse.
const maxUDPQuery = 1232

// TCP limits. DefaultMaxTCPConns caps connections in service (64 bytes
// of state and at most one 64 KiB query each); past it a new connection is
// closed at once. The timeouts follow RFC 7766 section 6.2.3's advice of a
// few seconds idle, and bound what a silent client holds.
const (
	DefaultMaxTCPConns = 64
	tcpReadTimeout     = 2 * time.Second
	tcpIdleTimeout     = 8 * time.Second
	writeTimeout       = 2 * time.Second
	maxTCPQueries      = 128
)

// Config configures a Server. Suffix is required; every other zero value
// gives the default.
type Config struct {
	// Suffix is the mesh's suffix, canonical (names.ParseSuffix or
	// names.DefaultSuffix).
	Suffix string
	// V4Prefix and ULA are the overlay prefixes whose reverse names
	// (in-addr.arpa, ip6.arpa) the server answers PTR for; a zero prefix
	// gets REFUSED like any other name.
	V4Prefix, ULA netip.Prefix
	// Allow lists the sources that get answers. Nil admits loopback only;
	// the node passes its overlay prefixes and loopback. Queries from
	// elsewhere are dropped without an answer.
	Allow []netip.Prefix
	// TTL of answers and of negative caching; 0 means DefaultTTL. At most
	// a minute.
	TTL time.Duration
	// Rate and Burst limit each source (queries and TCP connections);
	// 0 means DefaultRate and DefaultBurst.
	Rate  rate.Limit
	Burst int
	// MaxSources bounds the sources limited one by one; 0 means
	// DefaultMaxSources.
	MaxSources int
	// MaxTCPConns caps TCP connections in service at once, over all
	// listeners; 0 means DefaultMaxTCPConns.
	MaxTCPConns int
	// Logger receives drops at debug level; nil means slog.Default.
	Logger *slog.Logger
}

// Stats counts what the server did with the queries it read.
type Stats struct {
	Answered      uint64 // NOERROR, with records or without (NODATA)
	NXDomain      uint64 // no member of that name or address
	Refused       uint64 // outside the suffix and the reverse zones
	Other         uint64 // another error code the server chose (BADVERS, FORMERR); messages the library rejects itself are not counted
	DroppedSource uint64 // from a source outside Allow: no answer
	DroppedRate   uint64 // over the source's rate: no answer
	DroppedBusy   uint64 // TCP connections closed because all slots were taken
}

// Server is a running name server. Create it with New, give it sockets
// with ServePacketConn and ServeListener, keep its table current with
// Update, and Close it.
type Server struct {
	cfg   Config
	log   *slog.Logger
	ans   answerer
	adm   *admission
	slots chan struct{} // one token per TCP connection in service

	snap   atomic.Pointer[snapshot]
	serial atomic.Uint32

	answered, nxdomain, refused, other      atomic.Uint64
	droppedSource, droppedRate, droppedBusy atomic.Uint64

	mu      sync.Mutex
	stopped bool
	servers []*running
	wg      sync.WaitGroup

	closing   chan struct{}
	closeOnce sync.Once
}

// running is one dns.Server serving one socket.
type running struct {
	srv     *dns.Server
	started chan struct{} // closed once it serves
	done    chan struct{} // closed when ActivateAndServe returned
}

// New checks cfg and returns a server that answers from an empty table
// until the first Update. The server stops serving when ctx is done;
// Close then (or at any time) releases it.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	empty, err := names.NewTable(cfg.Suffix, nil)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg,
		log: cfg.Logger.With("component", "dns"),
		ans: answerer{
			suffix: cfg.Suffix,
			v4:     cfg.V4Prefix,
			v6:     cfg.ULA,
			zones:  append(names.ReverseZones(cfg.V4Prefix), names.ReverseZones(cfg.ULA)...),
			ttl:    uint32(cfg.TTL / time.Second),
		},
		adm:     newAdmission(cfg.Allow, cfg.Rate, cfg.Burst, cfg.MaxSources),
		slots:   make(chan struct{}, cfg.MaxTCPConns),
		closing: make(chan struct{}),
	}
	s.snap.Store(&snapshot{table: empty, serial: s.serial.Add(1)})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
			s.stop()
		case <-s.closing:
		}
	}()
	return s, nil
}

func (c Config) withDefaults() (Config, error) {
	s, err := names.ParseSuffix(c.Suffix)
	if err != nil {
		return c, err
	}
	if s != c.Suffix {
		return c, fmt.Errorf("dns suffix %q: not canonical (want %q)", c.Suffix, s)
	}
	if c.V4Prefix.IsValid() && (!c.V4Prefix.Addr().Is4() || c.V4Prefix.Masked() != c.V4Prefix) {
		return c, fmt.Errorf("dns: V4Prefix %s is not an IPv4 prefix without host bits", c.V4Prefix)
	}
	if c.ULA.IsValid() && (!c.ULA.Addr().Is6() || c.ULA.Addr().Is4In6() || c.ULA.Masked() != c.ULA) {
		return c, fmt.Errorf("dns: ULA %s is not an IPv6 prefix without host bits", c.ULA)
	}
	if c.Allow == nil {
		c.Allow = loopback
	}
	for _, p := range c.Allow {
		if !p.IsValid() {
			return c, errors.New("dns: Allow holds an invalid prefix")
		}
	}
	switch {
	case c.TTL == 0:
		c.TTL = DefaultTTL
	case c.TTL < time.Second || c.TTL > maxTTL:
		return c, fmt.Errorf("dns: TTL %s out of range [1s, %s]", c.TTL, maxTTL)
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.Burst == 0 {
		c.Burst = DefaultBurst
	}
	if c.MaxSources == 0 {
		c.MaxSources = DefaultMaxSources
	}
	if c.MaxTCPConns == 0 {
		c.MaxTCPConns = DefaultMaxTCPConns
	}
	if c.Rate < 0 || c.Burst < 1 || c.MaxSources < 1 || c.MaxTCPConns < 1 {
		return c, errors.New("dns: Rate, Burst, MaxSources and MaxTCPConns must be positive")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Update makes t the table the server answers from. t's suffix must be the
// server's. Each update bumps the zones' SOA serial.
func (s *Server) Update(t *names.Table) error {
	if t == nil {
		return errors.New("dns: Update with a nil table")
	}
	if t.Suffix() != s.cfg.Suffix {
		return fmt.Errorf("dns: table for suffix %q given to the server of %q", t.Suffix(), s.cfg.Suffix)
	}
	s.snap.Store(&snapshot{table: t, serial: s.serial.Add(1)})
	return nil
}

// Suffix returns the suffix the server answers for.
func (s *Server) Suffix() string { return s.cfg.Suffix }

// ServePacketConn answers DNS over UDP on pc until the server stops. The
// server closes pc when it stops, or at once when ServePacketConn fails.
// Closing pc earlier stops serving it alone: that is how the owner retires
// a socket whose address went away (the IPv4 collision rule moved it).
func (s *Server) ServePacketConn(pc net.PacketConn) error {
	return s.start(&dns.Server{PacketConn: pc}, "udp", pc.LocalAddr(), pc.Close)
}

// ServeListener answers DNS over TCP on l until the server stops. The
// server closes l when it stops, or at once when ServeListener fails;
// closing l earlier stops serving it alone.
func (s *Server) ServeListener(l net.Listener) error {
	return s.start(&dns.Server{Listener: &listener{Listener: l, s: s}}, "tcp", l.Addr(), l.Close)
}

func (s *Server) start(srv *dns.Server, network string, addr net.Addr, closeSock func() error) error {
	r := &running{srv: srv, started: make(chan struct{}), done: make(chan struct{})}
	srv.Handler = s
	srv.UDPSize = maxUDPQuery
	srv.MsgAcceptFunc = acceptQuery
	srv.DecorateReader = s.decorate
	srv.ReadTimeout = tcpReadTimeout
	srv.WriteTimeout = writeTimeout
	srv.IdleTimeout = func() time.Duration { return tcpIdleTimeout }
	srv.MaxTCPQueries = maxTCPQueries
	srv.NotifyStartedFunc = func() { close(r.started) }

	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		closeSock()
		return fmt.Errorf("dns %s %s: %w", network, addr, net.ErrClosed)
	}
	s.servers = append(s.servers, r)
	s.wg.Add(1)
	s.mu.Unlock()

	errc := make(chan error, 1)
	go func() {
		defer s.wg.Done()
		defer close(r.done)
		err := srv.ActivateAndServe()
		if err != nil {
			// The library closes the socket when serving ends, not
			// when it fails to start.
			closeSock()
		}
		s.mu.Lock()
		s.servers = slices.DeleteFunc(s.servers, func(x *running) bool { return x == r })
		stopped := s.stopped
		s.mu.Unlock()
		select {
		case <-r.started:
			// The owner closing its socket is how one socket is retired
			// (its address went away); anything else is worth a warning.
			if err != nil && !stopped {
				lvl := slog.LevelWarn
				if errors.Is(err, net.ErrClosed) {
					lvl = slog.LevelDebug
				}
				s.log.Log(context.Background(), lvl, "stopped serving", "net", network, "addr", addr, "err", err)
			}
		default:
		}
		errc <- err
	}()
	select {
	case <-r.started:
		s.log.Debug("serving", "net", network, "addr", addr)
		return nil
	case err := <-errc:
		return fmt.Errorf("dns %s %s: %w", network, addr, err)
	}
}

// ServeDNS answers one query; the library calls it for every message that
// passed the source, rate and accept checks.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := s.ans.answer(req, *s.snap.Load())
	resp.Truncate(answerLimit(req, w.RemoteAddr()))
	switch resp.Rcode {
	case dns.RcodeSuccess:
		s.answered.Add(1)
	case dns.RcodeNameError:
		s.nxdomain.Add(1)
	case dns.RcodeRefused:
		s.refused.Add(1)
	default:
		s.other.Add(1)
	}
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("answer not sent", "to", w.RemoteAddr(), "err", err)
	}
}

// answerLimit is the largest answer the client can take: over TCP the
// length prefix's limit; over UDP what its EDNS0 OPT offers, capped at
// maxUDPAnswer, or 512 bytes without one (an offer below 512 counts as
// 512, RFC 6891 section 6.2.5).
func answerLimit(req *dns.Msg, remote net.Addr) int {
	if remote != nil && remote.Network() == "tcp" {
		return maxTCPAnswer
	}
	if opt := req.IsEdns0(); opt != nil {
		return max(dns.MinMsgSize, min(int(opt.UDPSize()), maxUDPAnswer))
	}
	return dns.MinMsgSize
}

// acceptQuery lets only standard queries through: responses are ignored
// (answering them could loop two servers), other opcodes (NOTIFY, UPDATE)
// get NOTIMP, and anything but one question with at most one OPT record
// gets FORMERR.
func acceptQuery(h dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	switch {
	case h.Bits&qr != 0:
		return dns.MsgIgnore
	case int(h.Bits>>11)&0xF != dns.OpcodeQuery:
		return dns.MsgRejectNotImplemented
	case h.Qdcount != 1 || h.Ancount != 0 || h.Nscount != 0 || h.Arcount > 1:
		return dns.MsgReject
	}
	return dns.MsgAccept
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Answered:      s.answered.Load(),
		NXDomain:      s.nxdomain.Load(),
		Refused:       s.refused.Load(),
		Other:         s.other.Load(),
		DroppedSource: s.droppedSource.Load(),
		DroppedRate:   s.droppedRate.Load(),
		DroppedBusy:   s.droppedBusy.Load(),
	}
}

// stop shuts every socket down; it is idempotent.
func (s *Server) stop() {
	s.mu.Lock()
	s.stopped = true
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	for _, r := range servers {
		// Shutdown before the library has started fails and leaves it to
		// start afterwards, so wait for either.
		select {
		case <-r.started:
			if err := r.srv.Shutdown(); err != nil {
				s.log.Debug("shutting down", "err", err)
			}
		case <-r.done:
		}
	}
}

// Close stops serving, closes every socket the server was given, and
// waits for every goroutine. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.stop()
	s.wg.Wait()
	return nil
}
