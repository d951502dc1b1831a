package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/wscork"
	"github.com/plures/plurenet/transports"
)

// Per-connection limits and timers.
const (
	// sendQueueLen is the writer's backlog in frames. WireGuard hands the
	// bind batches of up to 128 packets; 512 absorbs a few batches while the
	// socket drains and still drops (like a full NIC ring) rather than delay
	// packets by more than a few milliseconds at relay speeds.
	sendQueueLen = 512
	// sendQueueBytes caps the same backlog in bytes: 512 single-packet
	// frames, or 64 batch frames (relayproto.BatchSize), a few milliseconds
	// at relay speeds either way.
	sendQueueBytes = 1 << 20
	// keepaliveInterval is how often we ping the relay. It keeps NAT and
	// proxy idle timers (commonly 60 s and up) from cutting a quiet
	// connection and shows a dead one that TCP would take minutes to notice.
	keepaliveInterval = 20 * time.Second
	// keepaliveTimeout is how long a ping may take before the connection is
	// declared dead: far above any real round trip, short enough that
	// traffic moves to a new connection well before WireGuard gives up.
	keepaliveTimeout = 15 * time.Second
	// maxDrainWait caps a relay's Drain deadline: we only use it for
	// logging, but a hostile value must not leave anything waiting for 49
	// days.
	maxDrainWait = 10 * time.Minute
)

// Buffer pool for outgoing frames, so the send path does not allocate per
// packet.
const (
	// pooledFrameCap fits a WireGuard packet on a 1500-byte path (at most
	// MTU+32 bytes) plus the 33-byte Send header.
	pooledFrameCap = 2048
	// maxPooledFrame keeps a burst of large frames from pinning memory in
	// the pool; bigger buffers go to the garbage collector.
	maxPooledFrame = 16 << 10
)

var (
	framePool = sync.Pool{New: func() any {
		b := make([]byte, 0, pooledFrameCap)
		return &b
	}}
	// batchPool holds the buffers SendBatch frames are built in.
	batchPool = sync.Pool{New: func() any {
		b := make([]byte, 0, relayproto.BatchSize)
		return &b
	}}
)

func getFrame() *[]byte { return framePool.Get().(*[]byte) }

func getBatchFrame() *[]byte { return batchPool.Get().(*[]byte) }

func putFrame(b *[]byte) {
	*b = (*b)[:0]
	switch {
	case cap(*b) == relayproto.BatchSize:
		batchPool.Put(b)
	case cap(*b) <= maxPooledFrame:
		framePool.Put(b)
	}
}

// planReason says why a connection should be replaced make-before-break.
type planReason struct {
	why      string
	deadline time.Time // when the relay will close the connection; zero if unknown
}

// conn is one WebSocket connection to the relay and the three goroutines
// that serve it: reader, writer and keepalive. They stop when the
// connection dies; conn.wg waits for them.
type conn struct {
	c           *Client
	id          uint64 // presence epoch
	ws          *websocket.Conn
	cork        *wscork.Conn // the socket under ws; nil if it could not be wrapped
	welcome     relayproto.Welcome
	batches     bool                    // the relay takes batch frames, and was asked to send them
	adm         relayproto.AdmissionKey // what the handshake presented
	maxPayload  int
	established time.Time
	pacer       *rate.Limiter // nil when the relay announced no rate limit

	// sendMu guards sendClosed and makes "check closed, then enqueue" atomic
	// against closing, so no frame enters out after the writer drained it
	// for the last time.
	sendMu     sync.RWMutex
	sendClosed bool
	out        chan *[]byte
	outBytes   atomic.Int64 // bytes in out and being written

	leave     chan struct{} // closed: flush out, send Leave, stop writing
	leaveOnce sync.Once
	dead      chan struct{} // closed when the reader stops
	err       error         // why the reader stopped; valid after dead
	planned   chan planReason

	wg sync.WaitGroup
}

// Pacing. The relay drops what a connection sends over its rate limit, and
// drops collapse the window of a TCP flow inside the tunnel. So the client
// sends at a little under the announced rate (pacingFraction), with a burst
// well below any sensible relay burst, and makes the sender wait instead:
// backpressure, as a full UDP socket buffer gives. A wait longer than
// maxPaceDelay drops the frame rather than stall WireGuard's send path.
//
// A sender a little ahead of the rate does not sleep per frame: sleeps
// shorter than minPaceSleep are owed and taken together once they add up
// (the limiter keeps the account), because a timer wake-up per frame cost
// more CPU than the frame's forwarding and split the writer's batches.
// The relay's burst (8 MiB by default) absorbs the millisecond this lets
// the sender run ahead.
const (
	pacingFraction = 0.9
	pacingBurst    = 256 << 10
	maxPaceDelay   = 100 * time.Millisecond
	minPaceSleep   = time.Millisecond
)

// pace waits until the relay's rate limit has room for an n-byte frame.
func (cn *conn) pace(n int) error {
	if cn.pacer == nil {
		return nil
	}
	r := cn.pacer.ReserveN(time.Now(), n)
	if !r.OK() {
		return ErrTooLarge
	}
	d := r.Delay()
	if d > maxPaceDelay {
		r.Cancel()
		return ErrRateLimited
	}
	if d >= minPaceSleep {
		time.Sleep(d)
	}
	return nil
}

// errRelayClosed is the reader's error when the relay closed the WebSocket
// normally, e.g. after our Leave or its drain deadline.
var errRelayClosed = errors.New("relay closed the connection")

// dial connects and runs the handshake. It returns a connection whose
// goroutines are running.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	var slot wscork.Slot
	ws, err := DialWebSocket(wscork.WithSlot(ctx, &slot), c.cfg.URL, c.httpClient)
	if err != nil {
		return nil, fmt.Errorf("relay %s: %w", c.cfg.URL, err)
	}
	adm := c.admissionKey()
	j, err := Handshake(ctx, ws, c.cfg.PrivateKey, adm)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("relay %s: %w", c.cfg.URL, err)
	}
	if j.Batches {
		// Before anything else we send, so that the relay batches what it
		// forwards to us from the start.
		if err := ws.Write(ctx, websocket.MessageBinary, relayproto.AppendAcceptBatches(nil)); err != nil {
			ws.CloseNow()
			return nil, fmt.Errorf("relay %s: asking for batch frames: %w", c.cfg.URL, err)
		}
	}
	cn := &conn{
		c:           c,
		id:          c.nextConnID.Add(1),
		ws:          ws,
		cork:        slot.Conn(),
		welcome:     j.Welcome,
		batches:     j.Batches,
		adm:         adm,
		maxPayload:  int(j.MaxPayload),
		established: time.Now(),
		out:         make(chan *[]byte, sendQueueLen),
		leave:       make(chan struct{}),
		dead:        make(chan struct{}),
		planned:     make(chan planReason, 1),
	}
	// A relay may not raise the limit above what the wire format carries,
	// and 0 would make every send fail: both mean the protocol maximum.
	if cn.maxPayload <= 0 || cn.maxPayload > relayproto.MaxPayload {
		cn.maxPayload = relayproto.MaxPayload
	}
	if j.RateBytes > 0 {
		cn.pacer = rate.NewLimiter(rate.Limit(float64(j.RateBytes)*pacingFraction), pacingBurst)
	}
	// From here on only this connection's presence frames count; the
	// previous connection's view is reconciled against its opening burst.
	c.presence.begin(cn.id)
	cn.wg.Add(3)
	go cn.readLoop()
	go cn.writeLoop()
	go cn.keepalive()
	return cn, nil
}

// RelayError is an Error frame from the relay.
type RelayError struct {
	Code    relayproto.ErrorCode
	Message string
}

func (e *RelayError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("relay error %d (%v)", uint16(e.Code), e.Code)
	}
	return fmt.Sprintf("relay error %d (%v): %s", uint16(e.Code), e.Code, e.Message)
}

// enqueue hands a frame to the writer. It never blocks.
func (cn *conn) enqueue(b *[]byte) error {
	cn.sendMu.RLock()
	defer cn.sendMu.RUnlock()
	if cn.sendClosed {
		return ErrNotConnected
	}
	n := int64(len(*b))
	if cn.outBytes.Add(n) > sendQueueBytes {
		cn.outBytes.Add(-n)
		return ErrQueueFull
	}
	select {
	case cn.out <- b:
		return nil
	default:
		cn.outBytes.Add(-n)
		return ErrQueueFull
	}
}

// closeSend stops enqueue from accepting frames. After it returns, out
// receives nothing new.
func (cn *conn) closeSend() {
	cn.sendMu.Lock()
	cn.sendClosed = true
	cn.sendMu.Unlock()
}

// beginLeave makes the writer flush what is queued and send Leave; the relay
// then flushes what it holds for us and closes. The reader keeps delivering
// until then.
func (cn *conn) beginLeave() {
	cn.leaveOnce.Do(func() {
		cn.closeSend()
		close(cn.leave)
	})
}

func (cn *conn) requestPlanned(r planReason) {
	select {
	case cn.planned <- r:
	default:
	}
}

// writeLoop is the only writer of data frames on the connection.
func (cn *conn) writeLoop() {
	defer cn.wg.Done()
	defer func() {
		// Whatever is still queued will never be written.
		cn.closeSend()
		for {
			select {
			case b := <-cn.out:
				putFrame(b)
				cn.c.stats.sendDrops.Add(1)
			default:
				return
			}
		}
	}()
	for {
		select {
		case b := <-cn.out:
			if !cn.writeBatch(b) {
				return
			}
		case <-cn.leave:
			// closeSend ran before leave closed, so out is complete.
			for drained := false; !drained; {
				select {
				case b := <-cn.out:
					if !cn.write(b) {
						return
					}
				default:
					drained = true
				}
			}
			// A background context: writes end by CloseNow, never by a
			// per-write timer that would cost an allocation per packet.
			if err := cn.ws.Write(context.Background(), websocket.MessageBinary, relayproto.AppendLeave(nil)); err != nil {
				cn.c.log.Debug("relay: writing Leave", "relay", cn.c.cfg.URL, "err", err)
				cn.ws.CloseNow()
			}
			return
		case <-cn.dead:
			return
		}
	}
}

// writeBatch writes b and what was queued behind it (at most a queue's
// worth, so that a ping waiting in the batch is not held back by a sender
// that never pauses), corked so that the frames leave in as few socket
// writes as they need. It reports false when the connection failed.
func (cn *conn) writeBatch(b *[]byte) bool {
	cn.cork.Cork()
	ok := cn.write(b)
	for n := 1; ok && n < sendQueueLen; n++ {
		select {
		case b = <-cn.out:
			ok = cn.write(b)
			continue
		default:
		}
		break
	}
	if err := cn.cork.Uncork(); err != nil && ok {
		cn.c.log.Debug("relay: write failed", "relay", cn.c.cfg.URL, "err", err)
		cn.ws.CloseNow()
		return false
	}
	return ok
}

// write sends one frame and recycles its buffer. It reports false when the
// connection failed.
func (cn *conn) write(b *[]byte) bool {
	n := len(*b)
	err := cn.ws.Write(context.Background(), websocket.MessageBinary, *b)
	cn.outBytes.Add(-int64(n))
	putFrame(b)
	if err != nil {
		cn.c.stats.sendDrops.Add(1)
		cn.c.log.Debug("relay: write failed", "relay", cn.c.cfg.URL, "err", err)
		cn.ws.CloseNow()
		return false
	}
	cn.c.stats.sentFrames.Add(1)
	cn.c.stats.sentBytes.Add(uint64(n))
	return true
}

// readLoop reads frames until the connection ends.
//
// Nearly every frame fits a buffer from transports.InboundBuffer: the
// reader reads into one, and a WireGuard message in it goes to the Bind
// with the buffer (Config.Inbox), so the packet is not copied again on its
// way to the device. Longer frames go on into one large buffer per
// connection, whose payloads are copied where they are kept. Other frames
// are parsed in place.
func (cn *conn) readLoop() {
	defer cn.wg.Done()
	// One spare byte detects a frame over the limit even if the WebSocket
	// library let it through.
	large := make([]byte, relayproto.MaxFrame+1)
	small := transports.InboundBuffer()
	settled := false
	var err error
	for {
		var frame []byte
		var inSmall bool
		frame, inSmall, err = readMessage(cn.ws, (*small)[:cap(*small)], large)
		if err != nil {
			break
		}
		var owned *[]byte
		if inSmall {
			*small, owned = frame, small
		}
		var kept bool
		if kept, err = cn.handle(frame, owned, &settled); err != nil {
			break
		}
		if kept {
			small = transports.InboundBuffer()
		}
	}
	transports.ReleaseInbound(small)
	if websocket.CloseStatus(err) == websocket.StatusNormalClosure || websocket.CloseStatus(err) == websocket.StatusGoingAway {
		err = errRelayClosed
	}
	cn.err = err
	cn.ws.CloseNow()
	close(cn.dead)
}

// readMessage reads one WebSocket message into small or, if it is longer,
// into large, and returns it; inSmall says which. A message that does not
// fit large is an error.
func readMessage(ws *websocket.Conn, small, large []byte) (msg []byte, inSmall bool, err error) {
	typ, r, err := ws.Reader(context.Background())
	if err != nil {
		return nil, false, err
	}
	if typ != websocket.MessageBinary {
		return nil, false, errors.New("relay sent a text message")
	}
	n, err := readAll(r, small)
	if err == nil {
		return small[:n], true, nil
	}
	if err != errFull {
		return nil, false, err
	}
	copy(large, small)
	m, err := readAll(r, large[n:])
	switch {
	case err == errFull:
		return nil, false, fmt.Errorf("relay sent a frame over %d bytes", relayproto.MaxFrame)
	case err != nil:
		return nil, false, err
	}
	return large[:n+m], false, nil
}

// errFull is readAll's report that buf filled before the message ended.
var errFull = errors.New("buffer full")

// readAll reads from r until io.EOF, which it does not report, or until
// buf is full (errFull).
func readAll(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, errFull
}

// handle acts on one frame from the relay. An error ends the connection.
// owned is b's buffer if handle may give it away (see received), nil if
// not; kept reports that it did.
func (cn *conn) handle(b []byte, owned *[]byte, settled *bool) (kept bool, err error) {
	c := cn.c
	f, err := relayproto.Parse(b)
	if err != nil {
		return false, fmt.Errorf("relay %s: bad frame: %w", c.cfg.URL, err)
	}
	if !*settled && f.Type != relayproto.TypePeerPresent {
		// The relay sends the present peers right after Welcome; anything
		// else means that burst is over.
		c.presence.settle(cn.id)
		*settled = true
	}
	switch f.Type {
	case relayproto.TypeRecv:
		kept = c.received(KindUnicast, f.Key, f.Payload, owned)
	case relayproto.TypeBroadcastRecv:
		kept = c.received(KindBroadcast, f.Key, f.Payload, owned)
	case relayproto.TypeRecvBatch:
		if !cn.batches {
			return false, fmt.Errorf("relay %s: sent a RecvBatch frame, which we did not ask for", c.cfg.URL)
		}
		for rest := f.Payload; len(rest) > 0; {
			var pkt []byte
			pkt, rest = relayproto.NextPacket(rest)
			c.received(KindUnicast, f.Key, pkt, nil)
		}
	case relayproto.TypePeerPresent:
		if !c.presence.present(cn.id, f.Key) {
			c.log.Warn("relay: presence set full, ignoring peer", "relay", c.cfg.URL, "peer", f.Key.ShortString(), "max", maxPeers)
		}
	case relayproto.TypePeerGone:
		c.presence.gone(cn.id, f.Key)
	case relayproto.TypeDrain:
		d := min(time.Duration(f.Millis)*time.Millisecond, maxDrainWait)
		cn.requestPlanned(planReason{why: "relay drain", deadline: time.Now().Add(d)})
	case relayproto.TypeError:
		return false, cn.relayError(&RelayError{Code: f.Code, Message: f.Message})
	default:
		return false, fmt.Errorf("relay %s: sent a %v frame, which only clients send", c.cfg.URL, f.Type)
	}
	return kept, nil
}

// relayError acts on an Error frame. Rate limiting only costs frames; a
// relay going away is a planned reconnect; any other fatal code ends the
// connection at once (the relay closes it anyway).
func (cn *conn) relayError(e *RelayError) error {
	c := cn.c
	switch e.Code {
	case relayproto.ErrRateLimited:
		c.stats.rateLimited.Add(1)
		c.log.Debug("relay: rate limited", "relay", c.cfg.URL, "msg", e.Message)
		return nil
	case relayproto.ErrServerShutdown, relayproto.ErrIdle:
		c.log.Info("relay: asked to reconnect", "relay", c.cfg.URL, "err", e)
		c.setLastError(e)
		cn.requestPlanned(planReason{why: e.Code.String()})
		return nil
	}
	if !e.Code.Fatal() {
		c.log.Warn("relay: error", "relay", c.cfg.URL, "err", e)
		return nil
	}
	return fmt.Errorf("relay %s: %w", c.cfg.URL, e)
}

// keepalive pings the relay while the connection lives and kills the
// connection when a ping goes unanswered.
func (cn *conn) keepalive() {
	defer cn.wg.Done()
	t := time.NewTicker(keepaliveInterval)
	defer t.Stop()
	for {
		select {
		case <-cn.dead:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), keepaliveTimeout)
		err := cn.ws.Ping(ctx)
		cancel()
		if err != nil {
			select {
			case <-cn.dead:
				return
			default:
			}
			cn.c.log.Warn("relay: keepalive failed", "relay", cn.c.cfg.URL, "err", err)
			cn.ws.CloseNow()
			return
		}
	}
}
