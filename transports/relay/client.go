// Package relay is the client side of plurenet relay protocol v2: it keeps a
// node connected to one relay and gives it a datagram service to the other
// members of its rendezvous.
//
// A Client is a transports.Transport: with the hooks of its Config set it
// hands WireGuard messages straight from the connection's reader to the
// Bind, and sealed mesh messages and presence changes to the node (see
// transport.go). Without them it is a plain datagram service whose Recv
// yields data frames and presence changes (the relay conformance suite and
// tests use it so).
//
// Send and Broadcast never block and never buffer without bound: a frame that
// cannot go out now is dropped and reported, as UDP would, because what
// travels here is WireGuard traffic that retransmits at its own layer.
//
// The client owns its connection: it dials in the background, reconnects
// with capped, jittered exponential backoff after an unplanned loss, and
// replaces the connection make-before-break when the relay drains it or its
// lifetime runs out, so a planned reconnect loses no frame.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/transports"
)

// Timers of the connection manager.
const (
	// stableAfter is how long a connection must live before the backoff
	// starts over: a relay that accepts and then drops every connection at
	// once must not be redialed at the minimum delay forever.
	stableAfter = 10 * time.Second
	// presenceSettle is how long after Welcome the relay's opening
	// PeerPresent burst is taken to be complete when no other frame ends it
	// earlier; keys not announced again by then are reported gone.
	presenceSettle = time.Second
	// leaveGrace is how long a replaced connection may keep delivering what
	// the relay had queued for it after our Leave; a relay that never closes
	// it is cut off then.
	leaveGrace = 30 * time.Second
	// closeGrace bounds the polite part of Close: flush, Leave and wait for
	// the relay to hang up.
	closeGrace = time.Second
	// replaceRetryMax caps the delay between attempts to open a replacement
	// connection while the old one still works: the drain deadline is
	// usually a few seconds away.
	replaceRetryMax = time.Second
	// lifetimeFraction of Welcome.LifetimeSecs passes before we replace a
	// connection ourselves, so the new one is up well before the relay cuts
	// the old; lifetimeJitter spreads nodes that connected together.
	lifetimeFraction = 0.8
	lifetimeJitter   = 0.05
	// maxResponseHeader bounds the relay's HTTP upgrade answer.
	maxResponseHeader = 64 << 10
)

// Errors returned by Send, Broadcast and Recv.
var (
	// ErrNotConnected: no connection to the relay right now; the frame was
	// dropped.
	ErrNotConnected = errors.New("relay: not connected")
	// ErrQueueFull: the connection's send queue is full; the frame was
	// dropped.
	ErrQueueFull = fmt.Errorf("relay: send queue full (%w)", transports.ErrCongested)
	// ErrRateLimited: sending now would exceed the rate the relay accepts
	// from this connection by more than maxPaceDelay; the frame was dropped.
	ErrRateLimited = fmt.Errorf("relay: over the relay's rate limit (%w)", transports.ErrCongested)
	// ErrTooLarge: the payload exceeds what the relay forwards.
	ErrTooLarge = errors.New("relay: payload too large")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("relay: client closed")
	// ErrHooks: Recv was called on a client whose Config hooks receive
	// what it reads.
	ErrHooks = errors.New("relay: Recv: this client hands what it receives to its Config hooks")
)

// Kind says what a Message carries.
type Kind uint8

// Message kinds.
const (
	KindUnicast     Kind = iota + 1 // a frame sent to this node
	KindBroadcast                   // a frame broadcast on the rendezvous
	KindPeerPresent                 // From joined the rendezvous
	KindPeerGone                    // From left the rendezvous
)

func (k Kind) String() string {
	switch k {
	case KindUnicast:
		return "unicast"
	case KindBroadcast:
		return "broadcast"
	case KindPeerPresent:
		return "peer-present"
	case KindPeerGone:
		return "peer-gone"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Message is one thing received from the relay.
type Message struct {
	Kind    Kind
	From    nodekey.Public
	Payload []byte // owned by the caller; nil for presence changes
}

// Status is a snapshot of the client's state, for status output.
type Status struct {
	URL         string
	Connected   bool
	Since       time.Time // when the client last connected or lost the connection
	LastError   string    // most recent dial or connection error, if any
	NextAttempt time.Time // when the next dial is due; zero while connected
	Reconnects  int       // connections made after the first
	Peers       int       // keys present in the rendezvous

	SentFrames, SentBytes uint64 // written to the relay
	RecvFrames, RecvBytes uint64 // data frames received
	SendDrops             uint64 // frames Send or Broadcast could not deliver to the socket
	RecvDrops             uint64 // data frames dropped because the receive queue was full
	RecvIgnored           uint64 // data frames no hook takes (not WireGuard to us, not sealed), with hooks
	RateLimited           uint64 // rate-limit notices from the relay
}

type stats struct {
	sentFrames, sentBytes atomic.Uint64
	recvFrames, recvBytes atomic.Uint64
	sendDrops, recvDrops  atomic.Uint64
	recvIgnored           atomic.Uint64
	rateLimited           atomic.Uint64
}

// Client is a connection to one relay, kept up in the background.
type Client struct {
	cfg        Config
	pub        nodekey.Public
	log        *slog.Logger
	httpClient *http.Client
	transport  *http.Transport

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // run and retiring connections

	active     atomic.Pointer[conn]                    // the connection Send uses; nil when down
	admission  atomic.Pointer[relayproto.AdmissionKey] // set by SetAdmission; nil: cfg.Admission
	nextConnID atomic.Uint64
	data       chan Message
	presence   *presence
	stats      stats

	mu          sync.Mutex
	connected   bool
	since       time.Time
	lastErr     string
	nextAttempt time.Time
	conns       int           // connections made so far
	change      chan struct{} // closed and replaced when connected changes

	closeOnce sync.Once
}

// New validates cfg and starts connecting in the background. It does not
// wait for the relay: use WaitConnected for that, and Status to see why it
// is not connected yet.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL) // normalizeURL parsed it already
	tr := newHTTPTransport(u, cfg.Proxy, cfg.TLSConfig, cfg.DialTimeout)
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:        cfg,
		pub:        cfg.PrivateKey.Public(),
		log:        cfg.Logger,
		httpClient: &http.Client{Transport: tr},
		transport:  tr,
		ctx:        ctx,
		cancel:     cancel,
		data:       make(chan Message, cfg.RecvQueue),
		since:      time.Now(),
		change:     make(chan struct{}),
	}
	c.presence = newPresence(c.pub)
	c.wg.Add(1)
	go c.run()
	if c.hooks() {
		c.wg.Add(1)
		go c.dispatch()
	}
	return c, nil
}

// PublicKey is the key this client proves to the relay.
func (c *Client) PublicKey() nodekey.Public { return c.pub }

// URL is the relay's URL, normalized.
func (c *Client) URL() string { return c.cfg.URL }

// Send queues payload for the peer dst. It never blocks: when there is no
// connection or its queue is full the frame is dropped and ErrNotConnected
// or ErrQueueFull returned (ErrClosed after Close). A nil error means the frame is queued on a live
// connection, not that it arrived.
func (c *Client) Send(dst nodekey.Public, payload []byte) error {
	if len(payload) > relayproto.MaxPayload {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), relayproto.MaxPayload)
	}
	b := getFrame()
	*b = relayproto.AppendSend(*b, dst, payload)
	return c.enqueue(b, len(payload), relayproto.Charge(len(*b), 1))
}

// SendBatch queues pkts for the peer dst, as Send would one by one, in as
// few SendBatch frames (relayproto.BatchSize each at most) as they fit when
// the relay takes them: the relay and both clients then handle a dozen
// packets per WebSocket message instead of one. The relay charges each
// packet as a Send of its own. A packet a batch cannot carry goes in a
// Send. It goes on past a frame that is dropped, as the Bind does past a
// packet, and reports the error that matters most (batchErr).
func (c *Client) SendBatch(dst nodekey.Public, pkts [][]byte) error {
	cn := c.active.Load()
	if cn == nil || !cn.batches || len(pkts) < 2 {
		return c.sendEach(dst, pkts)
	}
	// A relay may forward less than a batch frame holds.
	limit := min(relayproto.BatchSize, 1+relayproto.KeySize+cn.maxPayload)
	var err error
	var b *[]byte
	payload := 0
	flush := func() {
		if b != nil {
			err = batchErr(err, c.enqueue(b, payload, relayproto.BatchCharge((*b)[1+relayproto.KeySize:])))
			b, payload = nil, 0
		}
	}
	for _, p := range pkts {
		size := relayproto.BatchPacketSize(len(p))
		if len(p) == 0 || len(p) > relayproto.MaxBatchPacket || 1+relayproto.KeySize+size > limit {
			flush() // in order
			err = batchErr(err, c.Send(dst, p))
			continue
		}
		if b != nil && len(*b)+size > limit {
			flush()
		}
		if b == nil {
			b = getBatchFrame()
			*b = relayproto.AppendSendBatch(*b, dst)
		}
		*b = relayproto.AppendBatchPacket(*b, p)
		payload += size
	}
	flush()
	return err
}

// batchErr is what a send of several frames reports, given the error so
// far and the next frame's: the first that is not congestion (the path
// failed, and the Bind tries the next), else the first congestion (the
// path is up, and dropped some).
func batchErr(err, next error) error {
	switch {
	case next == nil:
		return err
	case err == nil:
		return next
	case errors.Is(err, transports.ErrCongested) && !errors.Is(next, transports.ErrCongested):
		return next
	}
	return err
}

// sendEach sends pkts one by one, as SendBatch does when the relay takes
// no batch frames.
func (c *Client) sendEach(dst nodekey.Public, pkts [][]byte) error {
	var err error
	for _, p := range pkts {
		err = batchErr(err, c.Send(dst, p))
	}
	return err
}

// Broadcast queues payload for every other member of the rendezvous, with
// the same semantics as Send.
func (c *Client) Broadcast(payload []byte) error {
	if len(payload) > relayproto.MaxPayload {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), relayproto.MaxPayload)
	}
	b := getFrame()
	*b = relayproto.AppendBroadcast(*b, payload)
	// Paced as one Send: a Broadcast is charged once per receiver at the
	// relay, but announcements are rare and small next to the burst.
	return c.enqueue(b, len(payload), relayproto.Charge(len(*b), 1))
}

// enqueue queues frame b, whose payload is payloadLen bytes, on the active
// connection, paced to the relay's rate at charge bytes (what the relay
// will charge for it). A batch frame goes only to a connection whose relay
// takes them.
func (c *Client) enqueue(b *[]byte, payloadLen, charge int) error {
	for {
		cn := c.active.Load()
		if cn == nil {
			putFrame(b)
			if c.ctx.Err() != nil {
				return ErrClosed
			}
			c.stats.sendDrops.Add(1)
			return ErrNotConnected
		}
		if payloadLen > cn.maxPayload {
			putFrame(b)
			return fmt.Errorf("%w: %d bytes, relay forwards at most %d", ErrTooLarge, payloadLen, cn.maxPayload)
		}
		if (*b)[0] == byte(relayproto.TypeSendBatch) && !cn.batches {
			// Replaced by a connection to a relay that takes no batch
			// frames, between SendBatch's look and here: rare enough to
			// drop, as a reconnect does.
			putFrame(b)
			c.stats.sendDrops.Add(1)
			return ErrNotConnected
		}
		if err := cn.pace(charge); err != nil {
			putFrame(b)
			c.stats.sendDrops.Add(1)
			return err
		}
		err := cn.enqueue(b)
		if err == ErrNotConnected && c.active.Load() != cn {
			// The connection was replaced between Load and enqueue: the
			// frame belongs on the new one.
			continue
		}
		if err != nil {
			putFrame(b)
			c.stats.sendDrops.Add(1)
		}
		return err
	}
}

// Recv returns the next message: a data frame or a presence change. Presence
// changes are never dropped; data frames are dropped (and counted in
// Status.RecvDrops) while the queue is full. Recv returns ErrClosed once the
// client is closed, and ErrHooks at once if the Config has hooks.
func (c *Client) Recv(ctx context.Context) (Message, error) {
	if c.hooks() {
		return Message{}, ErrHooks
	}
	return c.next(ctx)
}

// next waits for the next presence change or queued data message.
func (c *Client) next(ctx context.Context) (Message, error) {
	for {
		if c.ctx.Err() != nil {
			return Message{}, ErrClosed
		}
		if m, ok := c.presence.next(); ok {
			return m, nil
		}
		select {
		case m := <-c.data:
			return m, nil
		case <-c.presence.notify:
		case <-ctx.Done():
			return Message{}, ctx.Err()
		case <-c.ctx.Done():
			return Message{}, ErrClosed
		}
	}
}

// queue queues a copy of a received payload for Recv.
func (c *Client) queue(kind Kind, from nodekey.Public, payload []byte) {
	m := Message{Kind: kind, From: from, Payload: append([]byte(nil), payload...)}
	select {
	case c.data <- m:
	default:
		c.stats.recvDrops.Add(1)
	}
}

// Peers returns the keys present in the rendezvous as last told by the
// relay, in no particular order.
func (c *Client) Peers() []nodekey.Public { return c.presence.peers() }

// WaitConnected blocks until the client has a connection to the relay, ctx
// ends, or the client is closed.
func (c *Client) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		ok, ch := c.connected, c.change
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("relay %s: waiting for connection: %w", c.cfg.URL, ctx.Err())
		case <-c.ctx.Done():
			return ErrClosed
		}
	}
}

// Connected reports whether the client has a connection to the relay now
// (Status().Connected, without building the rest of the snapshot).
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// Status returns a snapshot of the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	s := Status{
		URL:         c.cfg.URL,
		Connected:   c.connected,
		Since:       c.since,
		LastError:   c.lastErr,
		NextAttempt: c.nextAttempt,
		Reconnects:  max(c.conns-1, 0),
	}
	c.mu.Unlock()
	s.Peers = len(c.presence.peers())
	s.SentFrames = c.stats.sentFrames.Load()
	s.SentBytes = c.stats.sentBytes.Load()
	s.RecvFrames = c.stats.recvFrames.Load()
	s.RecvBytes = c.stats.recvBytes.Load()
	s.SendDrops = c.stats.sendDrops.Load()
	s.RecvDrops = c.stats.recvDrops.Load()
	s.RecvIgnored = c.stats.recvIgnored.Load()
	s.RateLimited = c.stats.rateLimited.Load()
	return s
}

// Close leaves the relay politely (flushing queued frames and sending Leave,
// for at most about a second), stops every goroutine and waits for them. It
// is idempotent and always returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		c.wg.Wait()
		c.transport.CloseIdleConnections()
	})
	return nil
}

func (c *Client) setLastError(err error) {
	c.mu.Lock()
	c.lastErr = err.Error()
	c.mu.Unlock()
}

func (c *Client) setConnected(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conns++
	c.since = cn.established
	c.nextAttempt = time.Time{}
	if !c.connected {
		c.connected = true
		close(c.change)
		c.change = make(chan struct{})
	}
}

func (c *Client) setDisconnected(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.lastErr = err.Error()
	}
	c.since = time.Now()
	if c.connected {
		c.connected = false
		close(c.change)
		c.change = make(chan struct{})
	}
}

func (c *Client) setNextAttempt(t time.Time) {
	c.mu.Lock()
	c.nextAttempt = t
	c.mu.Unlock()
}

// lifetimeTimer fires when cn should be replaced before the relay ends it.
func lifetimeTimer(cn *conn) *time.Timer {
	if cn.welcome.LifetimeSecs == 0 {
		return nil
	}
	life := time.Duration(cn.welcome.LifetimeSecs) * time.Second
	f := lifetimeFraction + lifetimeJitter*(2*rand.Float64()-1)
	return time.NewTimer(time.Duration(float64(life) * f))
}
