package relayserver

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/plures/plurenet/internal/relayproto"
)

// The backplane lets several relay instances serve one rendezvous: members
// connected to different instances reach each other through Redis. See
// docs/operations.md, "Scaling the relay", for the design; in short:
//
//   - Local first. A frame whose destination is connected to this instance
//     is queued here and never touches Redis. Only frames for keys on other
//     instances are published, to that instance's channel (unicast) or to
//     the rendezvous channel (broadcast, and only when another instance has
//     members there).
//   - Presence lives in Redis, one hash per rendezvous mapping each key to
//     the instance that routes it, with an expiry refreshed every
//     BackplaneRefresh. Joins and leaves are published on the rendezvous
//     channel for speed; every instance also re-reads the hashes of its
//     rendezvous every BackplaneRefresh, which heals lost events and drops
//     the members of an instance that died (their entries stop being
//     refreshed and expire after BackplaneTTL).
//   - Bounded and lossy like the rest of the relay: publishing goes through
//     a bounded queue, and when Redis is slow or down cross-instance frames
//     are dropped and counted while local delivery goes on.

// Channel and key names in Redis. The version keeps a later backplane
// format from misreading this one on a shared Redis.
const bpPrefix = "plurenet:relay:v1:"

func rvChannel(rv relayproto.Rendezvous) string { return bpPrefix + "rv:" + hex.EncodeToString(rv[:]) }
func rvMembersKey(rv relayproto.Rendezvous) string {
	return bpPrefix + "members:" + hex.EncodeToString(rv[:])
}
func instChannel(id instanceID) string { return bpPrefix + "inst:" + id.String() }

// Bounds of the backplane.
const (
	// maxRemoteMembers caps the remote view of one rendezvous. The mesh
	// layer's member limit is 1024; 16 times that leaves room for make-
	// before-break while a hostile Redis writer cannot make us hold
	// unbounded state.
	maxRemoteMembers = 16 << 10
	// ctrlQueue bounds presence operations (join, leave) waiting for
	// Redis. 16 Ki absorbs a reconnect storm of a few thousand clients;
	// beyond it operations are dropped and a full sync repairs the state.
	ctrlQueue = 16 << 10
	// ctrlBatch and pubBatch are how many operations go in one Redis
	// pipeline: one round trip for many, without holding large batches.
	ctrlBatch = 256
	pubBatch  = 128
	// syncBatch is how many rendezvous one sync pipeline covers.
	syncBatch = 256
	// recvPoll is how long the subscriber waits for a message before it
	// pings Redis, so that a silently dead connection is noticed.
	recvPoll = 5 * time.Second
	// redisOpTimeout bounds one Redis pipeline, so that a hung Redis
	// cannot stall the controller for longer than this.
	redisOpTimeout = 5 * time.Second
	// retryMin and retryMax bound the subscriber's delay between attempts
	// while Redis is unreachable.
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

var quietRedisLogger sync.Once

type discardRedisLogger struct{}

func (discardRedisLogger) Printf(context.Context, string, ...any) {}

// pubItem is one message waiting to be published.
type pubItem struct {
	channel string
	msg     []byte
	kind    string // kindUnicast or kindBroadcast, for metrics
}

// ctrlOp is a presence operation for the controller, or a flush request.
type ctrlOp struct {
	join  bool
	rv    relayproto.Rendezvous
	key   relayproto.Key
	flush chan struct{} // closed when everything before it is done
}

// backplane is the router for an instance that shares rendezvous with
// others through Redis. It wraps rooms: local routing is unchanged, remote
// members appear in each room's remote view.
type backplane struct {
	*rooms
	id  instanceID
	cfg Config
	log *slog.Logger
	m   *bpMetrics

	rdb *redis.Client
	ps  *redis.PubSub

	data      chan pubItem
	dataBytes atomic.Int64
	ctrl      chan ctrlOp
	wake      chan struct{} // rooms changed or a full sync is wanted
	needSync  atomic.Bool
	up        atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// errBackplaneURL is the whole report on a backplane URL that does not
// parse. The usual cause is a managed Redis access key (base64, so '/' about
// half the time) pasted into the URL unencoded.
var errBackplaneURL = errors.New("relayserver: backplane URL is not a valid redis:// or rediss:// URL " +
	"(not shown: it holds the password); a password holding '/', '+', '=', ':' or '@' must be percent-encoded, " +
	"e.g. rediss://:PASSWORD@HOST:PORT/0 with PASSWORD from encodeURIComponent (Bicep: uriComponent())")

// newBackplane connects the local rooms rs to the Redis at cfg.Backplane.
// It does not wait for Redis: an instance whose Redis is down serves its own
// clients and joins the others when Redis answers.
func newBackplane(cfg Config, rs *rooms, reg prometheus.Registerer, forwarded func(kind string, frames, payloadBytes int), relayDrop func(reason string, n int)) (*backplane, error) {
	opts, err := redis.ParseURL(cfg.Backplane)
	if err != nil {
		// ParseURL's error quotes the URL, password and all, and would put
		// the Redis key in the logs: say what to do without it.
		return nil, errBackplaneURL
	}
	id, err := newInstanceID()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &backplane{
		rooms:  rs,
		id:     id,
		cfg:    cfg,
		log:    cfg.Logger.With("instance", id.String()),
		rdb:    redis.NewClient(opts),
		data:   make(chan pubItem, cfg.BackplaneQueueFrames),
		ctrl:   make(chan ctrlOp, ctrlQueue),
		wake:   make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
	}
	b.m = newBPMetrics(reg, &b.up)
	b.m.forwarded, b.m.relayDrop = forwarded, relayDrop
	quietRedisLogger.Do(func() {
		// go-redis logs every failed dial through a process-wide logger;
		// while Redis is down that is one line per attempt. The backplane
		// logs the outage once itself (setUp).
		redis.SetLogger(discardRedisLogger{})
	})
	b.ps = b.rdb.Subscribe(ctx) // no channels yet: connects on first use
	rs.hook = b
	b.wg.Add(3)
	go b.receive()
	go b.publish()
	go b.control()
	return b, nil
}

// close stops the backplane at once, as a crash would: presence entries of
// this instance are not removed and expire in Redis after BackplaneTTL.
// Drain, which flushes first, is the graceful way out.
func (b *backplane) close() {
	b.once.Do(func() {
		b.cancel()
		b.ps.Close()
		b.wg.Wait()
		b.rdb.Close()
	})
}

// flush waits until every presence operation queued so far has reached
// Redis (or failed), or ctx ends.
func (b *backplane) flush(ctx context.Context) {
	done := make(chan struct{})
	select {
	case b.ctrl <- ctrlOp{flush: done}:
	case <-ctx.Done():
		return
	case <-b.ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	case <-b.ctx.Done():
	}
}

// Router methods that differ from rooms.

func (b *backplane) unicast(c *conn, dst relayproto.Key, frame []byte) deliverResult {
	res, inst := b.rooms.route(c, dst, frame)
	if res != relayed {
		return res
	}
	if frame[0] == byte(relayproto.TypeRecvBatch) {
		// The backplane carries Recv frames only, so that instances from
		// before batch frames, in a rolling upgrade, never see one.
		for _, f := range splitBatch(frame) {
			b.publishUnicast(c.rv, dst, inst, f)
			putForward(f)
		}
		return relayed
	}
	b.publishUnicast(c.rv, dst, inst, frame)
	return relayed
}

// publishUnicast queues a Recv frame for dst on instance inst (copied).
func (b *backplane) publishUnicast(rv relayproto.Rendezvous, dst relayproto.Key, inst instanceID, frame []byte) {
	msg := appendBPUnicast(make([]byte, 0, bpKeyMsgSize+len(frame)), b.id, rv, dst, frame)
	b.enqueue(pubItem{channel: instChannel(inst), msg: msg, kind: kindUnicast})
}

func (b *backplane) broadcast(c *conn, frame []byte) (n, full int) {
	n, full, remote := b.rooms.broadcastLocal(c, frame)
	if remote {
		msg := appendBPBroadcast(make([]byte, 0, bpHeaderSize+len(frame)), b.id, c.rv, frame)
		b.enqueue(pubItem{channel: rvChannel(c.rv), msg: msg, kind: kindBroadcast})
	}
	return n, full
}

// enqueue offers it to the publisher; when the queue is at its frame or
// byte cap (Redis slower than the traffic), it is dropped and counted.
func (b *backplane) enqueue(it pubItem) {
	n := int64(len(it.msg))
	if b.dataBytes.Add(n) > int64(b.cfg.BackplaneQueueBytes) {
		b.dataBytes.Add(-n)
		b.m.drops[bpDropQueueFull].Inc()
		return
	}
	select {
	case b.data <- it:
	default:
		b.dataBytes.Add(-n)
		b.m.drops[bpDropQueueFull].Inc()
	}
}

// presenceHook, called by rooms under its locks: never block.

func (b *backplane) localJoin(rv relayproto.Rendezvous, key relayproto.Key) {
	b.queueCtrl(ctrlOp{join: true, rv: rv, key: key})
}

func (b *backplane) localLeave(rv relayproto.Rendezvous, key relayproto.Key) {
	b.queueCtrl(ctrlOp{rv: rv, key: key})
}

func (b *backplane) roomsChanged() { b.poke() }

func (b *backplane) queueCtrl(op ctrlOp) {
	select {
	case b.ctrl <- op:
	default:
		// A lost join is restored by the next sync, which refreshes
		// every local key; a lost leave leaves an entry that expires.
		b.m.drops[bpDropCtrlFull].Inc()
		b.needSync.Store(true)
		b.poke()
	}
}

func (b *backplane) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// handle acts on one message from Redis.
func (b *backplane) handle(raw []byte) {
	m, err := parseBPMessage(raw)
	if err != nil {
		b.m.drops[bpDropBadMessage].Inc()
		b.log.Debug("relay: backplane: dropped a message", "err", err)
		return
	}
	if m.origin == b.id {
		return // our own join, leave or broadcast, echoed by the rendezvous channel
	}
	switch m.typ {
	case bpJoin:
		b.m.received[bpRecvJoin].Inc()
		b.rooms.remoteJoin(m.rv, m.key, m.origin)
	case bpLeave:
		b.m.received[bpRecvLeave].Inc()
		b.rooms.remoteLeave(m.rv, m.key, m.origin)
	case bpUnicast:
		b.m.received[kindUnicast].Inc()
		switch b.rooms.deliverLocal(m.rv, m.key, m.frame) {
		case delivered:
			b.m.forwarded(kindUnicast, 1, len(m.frame)-1-relayproto.KeySize)
		case noSuchPeer:
			b.m.drops[bpDropNoSuchPeer].Inc()
		case dstQueueFull:
			b.m.relayDrop(dropQueueFull, 1)
		case dstClosed:
			b.m.relayDrop(dropClosed, 1)
		}
	case bpBroadcast:
		b.m.received[kindBroadcast].Inc()
		n, full := b.rooms.broadcastFromRemote(m.rv, m.key, m.frame)
		b.m.forwarded(kindBroadcast, n, len(m.frame)-1-relayproto.KeySize)
		b.m.relayDrop(dropQueueFull, full)
	}
}

// setUp records whether Redis answers, logging the changes only.
func (b *backplane) setUp(up bool, err error) {
	if b.up.Swap(up) == up {
		return
	}
	if up {
		b.log.Info("relay: backplane connected", "redis", b.rdb.Options().Addr)
		return
	}
	if b.ctx.Err() == nil {
		b.log.Warn("relay: backplane lost Redis; cross-instance frames are dropped until it returns", "redis", b.rdb.Options().Addr, "err", err)
	}
}

// Backplane metric label values: fixed sets.
const (
	bpDropQueueFull  = "queue_full"          // the publish queue was at its cap
	bpDropRedisError = "redis_error"         // Redis refused or failed a publish
	bpDropNoSuchPeer = "no_such_peer"        // a frame arrived for a key no longer here
	bpDropBadMessage = "bad_message"         // a message on our channels did not parse
	bpDropCtrlFull   = "presence_queue_full" // a join or leave was not queued (a sync repairs it)

	bpRecvJoin  = "join"
	bpRecvLeave = "leave"

	bpOpJoin  = "join"
	bpOpLeave = "leave"
	bpOpSync  = "sync"
)

// bpMetrics are the backplane's Prometheus metrics.
type bpMetrics struct {
	published map[string]prometheus.Counter // by kind
	received  map[string]prometheus.Counter // by kind
	drops     map[string]prometheus.Counter // by reason
	ops       map[string]prometheus.Counter // presence operations sent to Redis
	opErrors  prometheus.Counter
	evicted   prometheus.Counter
	// forwarded and relayDrop count frames delivered here from another
	// instance in the relay's own metrics.
	forwarded func(kind string, frames, payloadBytes int)
	relayDrop func(reason string, n int)
}

func newBPMetrics(reg prometheus.Registerer, up *atomic.Bool) *bpMetrics {
	published := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "plurenet_relay_backplane_published_total",
		Help: "Frames published to Redis for members on other instances, by kind.",
	}, []string{"kind"})
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "plurenet_relay_backplane_received_total",
		Help: "Messages received from other instances through Redis, by kind.",
	}, []string{"kind"})
	drops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "plurenet_relay_backplane_drops_total",
		Help: "Cross-instance frames and operations dropped, by reason.",
	}, []string{"reason"})
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "plurenet_relay_backplane_presence_ops_total",
		Help: "Presence operations sent to Redis (join, leave, and one sync per rendezvous per refresh).",
	}, []string{"op"})
	opErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "plurenet_relay_backplane_presence_errors_total",
		Help: "Presence operations that failed in Redis.",
	})
	evicted := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "plurenet_relay_backplane_evicted_total",
		Help: "Connections admitted here and then evicted because Redis found their rendezvous at its member cap across instances.",
	})
	m := &bpMetrics{
		published: map[string]prometheus.Counter{},
		received:  map[string]prometheus.Counter{},
		drops:     map[string]prometheus.Counter{},
		ops:       map[string]prometheus.Counter{},
		opErrors:  opErrors,
		evicted:   evicted,
	}
	for _, k := range []string{kindUnicast, kindBroadcast} {
		m.published[k] = published.WithLabelValues(k)
	}
	for _, k := range []string{kindUnicast, kindBroadcast, bpRecvJoin, bpRecvLeave} {
		m.received[k] = received.WithLabelValues(k)
	}
	for _, r := range []string{bpDropQueueFull, bpDropRedisError, bpDropNoSuchPeer, bpDropBadMessage, bpDropCtrlFull} {
		m.drops[r] = drops.WithLabelValues(r)
	}
	for _, o := range []string{bpOpJoin, bpOpLeave, bpOpSync} {
		m.ops[o] = ops.WithLabelValues(o)
	}
	reg.MustRegister(published, received, drops, ops, opErrors, evicted,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "plurenet_relay_backplane_up",
			Help: "1 while the last exchange with Redis succeeded, else 0.",
		}, func() float64 {
			if up.Load() {
				return 1
			}
			return 0
		}))
	return m
}
