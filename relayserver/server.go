// Package relayserver is the plurenet relay: an HTTP handler that speaks relay
// protocol v2 (docs/protocol.md, Part 1) over WebSocket, admits to a
// rendezvous only clients that prove the mesh's admission key, matches them
// by rendezvous hash and forwards their opaque frames, plus /healthz; its
// Prometheus metrics are served apart (ServeMetrics), never to clients.
//
// A relay keeps only live connections, and learns nothing of a mesh but its
// members' keys and addresses, its rendezvous hash and admission public key
// (both fixed by the topic and secret), and frame sizes and timing: payloads
// are WireGuard packets or sealed messages. Routing sits
// behind a small router interface: the local rooms for a single instance, or
// a Redis backplane (Config.Backplane) when several instances share the
// rendezvous, without the connections telling the difference.
package relayserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
)

// Server is a relay instance. Create it with New, serve Handler (or call
// Serve), and stop it with Drain then Close.
type Server struct {
	cfg     Config
	log     *slog.Logger
	priv    nodekey.Private
	pub     nodekey.Public
	router  router
	sources *sourceLimits
	metrics *metrics
	welcome []byte // the encoded Welcome, the same for every connection

	ctx    context.Context // ends on Close; parent of every connection's
	cancel context.CancelFunc

	draining atomic.Bool
	// stopping is set when every connection is about to be cut (Close, or
	// Drain once its grace is over): a member's leave then tells the
	// others nothing, as a crash would not, since they are being cut too
	// and keep what they knew for when they reconnect.
	stopping atomic.Bool
	slots    atomic.Int64 // connections admitted, for MaxConns
	peakQ    atomic.Int64 // highest send queue seen, in bytes

	mu     sync.Mutex
	conns  map[*conn]struct{}
	nextID uint64
	wg     sync.WaitGroup // one per connection handler
	gone   chan struct{}  // signalled when a connection is untracked
	closed bool
	once   sync.Once
}

// New returns a relay configured by cfg; zero fields take the defaults.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	priv := cfg.PrivateKey
	if priv.IsZero() {
		if priv, err = nodekey.NewPrivate(); err != nil {
			return nil, fmt.Errorf("relayserver: generating relay key: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger,
		priv:   priv,
		pub:    priv.Public(),
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*conn]struct{}),
		gone:   make(chan struct{}, 1),
	}
	s.sources = newSourceLimits(cfg)
	w := cfg.welcome()
	s.welcome = w.Append(nil)
	s.metrics = newMetrics(s)
	rs := newRooms(cfg.MaxConnsPerKey, cfg.MaxMembersPerRendezvous, s.countPush)
	s.router = rs
	if cfg.Backplane != "" {
		bp, err := newBackplane(cfg, rs, s.metrics.reg, s.metrics.forwarded, s.metrics.drop)
		if err != nil {
			cancel()
			return nil, err
		}
		s.router = bp
	}
	return s, nil
}

// PublicKey returns the relay's key, the one its ServerHello carries.
func (s *Server) PublicKey() nodekey.Public { return s.pub }

// batches reports whether the relay offers batch frames.
func (s *Server) batches() bool { return !s.cfg.NoBatches }

// Stats is a snapshot of the relay's state.
type Stats struct {
	Connections    int   // open WebSocket connections, handshaking or not
	Rendezvous     int   // rendezvous with at least one member
	QueuedFrames   int   // entries in all send queues, being written included (a presence snapshot is one)
	QueuedBytes    int   // bytes of those frames
	PeakQueueBytes int64 // the most bytes any one send queue has held
}

// Stats returns the current counts.
func (s *Server) Stats() Stats {
	// The instance-wide lock is held only to copy the connection list:
	// joins and leaves must not wait for a pass over every queue.
	conns := s.snapshot()
	st := Stats{Connections: len(conns)}
	for _, c := range conns {
		f, b := c.q.len()
		st.QueuedFrames += f
		st.QueuedBytes += b
	}
	st.Rendezvous = s.router.rendezvousCount()
	st.PeakQueueBytes = s.peakQ.Load()
	return st
}

func (s *Server) notePeak(n int) {
	for {
		p := s.peakQ.Load()
		if int64(n) <= p || s.peakQ.CompareAndSwap(p, int64(n)) {
			return
		}
	}
}

// Handler serves the relay endpoint at relayproto.Path and GET /healthz (503
// while draining, so a load balancer stops sending clients). It does not
// serve /metrics: they tell anyone who can reach the relay how many clients
// it has and how they behave, so they go on a listener of their own
// (MetricsHandler, ServeMetrics) that the operator chooses.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(relayproto.Path, s.serveRelay)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "draining")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// serveRelay admits a WebSocket client and starts its connection.
func (s *Server) serveRelay(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "plurenet relay: this endpoint speaks WebSocket subprotocol "+relayproto.Subprotocol, http.StatusUpgradeRequired)
		return
	}
	if !offersSubprotocol(r) {
		http.Error(w, "plurenet relay: the client must offer WebSocket subprotocol "+relayproto.Subprotocol+" (another protocol version?)", http.StatusBadRequest)
		return
	}
	if s.draining.Load() {
		s.metrics.handshake(hsRefusedDrain)
		http.Error(w, "plurenet relay: draining, connect to another instance", http.StatusServiceUnavailable)
		return
	}
	src, ok := s.sources.source(r)
	if !ok {
		s.log.Debug("relay: no usable client address", "remote", r.RemoteAddr)
		http.Error(w, "plurenet relay: cannot tell the client address", http.StatusBadRequest)
		return
	}
	if !s.sources.allowHandshake(src, time.Now()) {
		s.metrics.handshake(hsRefusedIPRate)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "plurenet relay: too many connection attempts from your address, slow down", http.StatusTooManyRequests)
		return
	}
	if why := s.sources.acquire(src); why != "" {
		s.metrics.handshake(hsRefusedIPConns)
		http.Error(w, "plurenet relay: "+why, http.StatusTooManyRequests)
		return
	}
	if s.slots.Add(1) > int64(s.cfg.MaxConns) {
		s.slots.Add(-1)
		s.sources.release(src)
		s.metrics.handshake(hsRefusedFull)
		http.Error(w, "plurenet relay: at its connection limit, try another instance", http.StatusServiceUnavailable)
		return
	}
	c, err := s.accept(w, r)
	if err != nil {
		s.slots.Add(-1)
		s.sources.release(src)
		s.log.Debug("relay: websocket accept failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	// The connection runs in a goroutine of its own (tracked: Close waits
	// for it) and the handler returns: net/http lets go of a hijacked
	// connection once its handler returns, so the request, the server's
	// per-connection state and the handler goroutine's stack, grown by
	// the request's parsing, are not held for the connection's lifetime
	// (a third of an idle member's memory before).
	go c.run(func() {
		s.untrack(c)
		s.slots.Add(-1)
		s.sources.release(src)
	})
}

// offersSubprotocol reports whether the client offers v2, or v1: an old
// client is let in to be told, in an Error frame, to upgrade (conn.go).
func offersSubprotocol(r *http.Request) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if p := strings.TrimSpace(p); p == relayproto.Subprotocol || p == relayproto.SubprotocolV1 {
				return true
			}
		}
	}
	return false
}

// track registers c so that Drain and Close reach it; it fails once Close
// has begun.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.nextID++
	c.id = s.nextID
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
	select {
	case s.gone <- struct{}{}:
	default:
	}
}

func (s *Server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) snapshot() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

// Drain asks every client to reconnect elsewhere: new connections are refused
// (HTTP 503, and /healthz turns 503), each open connection gets a Drain frame,
// and Drain waits until they have all left or DrainGrace or ctx has passed.
// What remains is then closed with ErrServerShutdown; Close waits for those
// closes to finish. Drain returns ctx's error if ctx ended first.
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	grace := s.cfg.DrainGrace
	for _, c := range s.snapshot() {
		c.drain(grace)
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	var err error
wait:
	for s.connCount() > 0 {
		select {
		case <-s.gone:
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			err = fmt.Errorf("relayserver: drain: %w", ctx.Err())
			break wait
		}
	}
	s.stopping.Store(true)
	for _, c := range s.snapshot() {
		c.fail(relayproto.ErrServerShutdown, "relay shutting down")
	}
	// Let the other instances hear of the leaves now rather than when
	// this instance's presence entries expire.
	flushCtx, cancel := context.WithTimeout(ctx, shutdownSlack)
	s.router.flush(flushCtx)
	cancel()
	return err
}

// Close closes every connection at once and waits for their goroutines. It
// is safe to call more than once; later calls wait too. With a backplane,
// Close is what a crash looks like to the other instances: the backplane
// stops first, so this instance's members are reported gone elsewhere only
// when their presence expires (Config.BackplaneTTL). Drain first to tell
// them at once.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.draining.Store(true)
		s.stopping.Store(true)
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.router.close()
		s.cancel()
	})
	s.wg.Wait()
	return nil
}

// countPush records a frame that a queue refused.
func (s *Server) countPush(r pushResult) {
	switch r {
	case queueFull:
		s.metrics.drop(dropQueueFull, 1)
	case queueShut:
		s.metrics.drop(dropClosed, 1)
	}
}

// errServerClosed is returned by accept once Close has begun.
var errServerClosed = errors.New("relay server closed")
