package relayserver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/wscork"
)

// rateNoticeInterval spaces the non-fatal ErrRateLimited frames: one a second
// tells the client it is over its rate without adding to the flood.
const rateNoticeInterval = time.Second

// framePool holds read buffers of MaxFrame+1 bytes: one byte more than a
// frame may have, so that reading it full proves the message too large. A
// buffer is taken only once a message has begun, so idle connections hold
// none.
var framePool = sync.Pool{New: func() any { b := make([]byte, relayproto.MaxFrame+1); return &b }}

var (
	errFrameTooLarge = fmt.Errorf("message larger than %d bytes", relayproto.MaxFrame)
	errTextMessage   = errors.New("text message; relay frames are binary")
)

// errV1Client is what an old client is told, in the one Error frame it gets.
const errV1Client = "this relay speaks " + relayproto.Subprotocol + "; upgrade plurenet"

// closeKind is how a connection ends.
type closeKind int

const (
	closeNone  closeKind = iota
	closeLeave           // the client sent Leave: flush the queue, then close normally
	closeFatal           // send an Error frame, then close
	closeGone            // the socket failed or the peer closed: close at once
)

// conn is one client connection. Its goroutine (started by serveRelay) is
// its reader (run); a writer goroutine runs while there is something to
// write (kick), and run waits for it before returning. Everything another goroutine may do to a conn is queue
// a frame, ask it to drain, or ask it to close.
type conn struct {
	srv *Server
	ws  *websocket.Conn
	// cork is the socket under ws; the writer corks it around each batch
	// of queued frames so that they leave in one write (internal/wscork).
	cork   *wscork.Conn
	remote string
	id     uint64
	q      *sendQueue

	// Set by the reader before join; read by the router under its locks.
	key relayproto.Key
	rv  relayproto.Rendezvous
	// room is set by the router under its map lock and read lock-free when
	// forwarding; nil when not (or no longer) routable.
	room atomic.Pointer[room]

	budget         *byteBudget  // reader only; nil when unlimited
	lastRateNotice time.Time    // reader only
	lastHeard      atomic.Int64 // unix nanoseconds of the last frame or pong
	// batches: the client sent AcceptBatches, so RecvBatch frames go to it
	// whole (pushData). Set by its reader, read by other connections'.
	batches atomic.Bool
	// scratch is where the writer builds the frames of a presence
	// snapshot, one at a time (snapshot.go).
	scratch [snapshotFrameSize]byte

	ctx    context.Context // ends on Server.Close
	cancel context.CancelFunc

	mu          sync.Mutex // guards the fields below
	established bool
	kind        closeKind
	code        relayproto.ErrorCode
	msg         string

	stop       chan struct{} // closed when kind is set
	writerDone chan struct{} // closed when the writer has ended the connection

	// The writer (writer.go): at most one goroutine at a time, none while
	// the connection is idle.
	wmu     sync.Mutex
	writing bool // a writer runs
	again   bool // work came while it ran: it looks again before exiting
	wdone   bool // the writer has ended the connection: none runs again
	writers sync.WaitGroup
	wbatch  []queued // the running writer's, kept between runs

	// The timers (writer.go), callbacks of their own.
	tmu                                       sync.Mutex
	timersOff                                 bool
	hsTimer, pingTimer, lifeTimer, drainTimer *time.Timer
	pinging                                   atomic.Bool
	pings                                     sync.WaitGroup // the ping in flight, if any
}

// newConn returns the connection state for a client at remote, before any
// socket is attached.
func (s *Server) newConn(remote string) *conn {
	c := &conn{
		srv:        s,
		remote:     remote,
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	c.q = newSendQueue(s.cfg.SendQueueFrames, s.cfg.SendQueueBytes, s.notePeak)
	if s.cfg.RateBytesPerSec > 0 {
		c.budget = newByteBudget(s.cfg.RateBytesPerSec, s.cfg.RateBurstBytes, time.Now())
	}
	c.heard(time.Now())
	return c
}

// accept upgrades the request and registers the connection.
func (s *Server) accept(w http.ResponseWriter, r *http.Request) (*conn, error) {
	c := s.newConn(r.RemoteAddr)
	cw := wscork.NewResponseWriter(w, s.cfg.WriteTimeout)
	ws, err := websocket.Accept(cw, r, &websocket.AcceptOptions{
		// v1 is selected only when v2 is not offered, to tell an old
		// client to upgrade (handshake).
		Subprotocols: []string{relayproto.Subprotocol, relayproto.SubprotocolV1},
		// Payloads are encrypted, so compression would cost CPU and gain
		// nothing (and compressing attacker-chosen data next to secrets is
		// how CRIME-style attacks start).
		CompressionMode: websocket.CompressionDisabled,
		OnPongReceived:  func(context.Context, []byte) { c.heard(time.Now()) },
	})
	if err != nil {
		return nil, fmt.Errorf("relay: accept %s: %w", r.RemoteAddr, err)
	}
	// One byte over the frame limit, so that readFrame sees an oversized
	// message itself and can answer with an Error frame.
	ws.SetReadLimit(relayproto.MaxFrame + 1)
	c.ws, c.cork = ws, cw.Conn()
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	// The writer writes frames without a context of their own (a timer
	// and a context per frame showed in the profile): the cork bounds each
	// socket write by WriteTimeout, and this ends a write blocked when the
	// server closes. run's cancel at the end of the connection fires it too,
	// when the socket is already closed.
	context.AfterFunc(c.ctx, func() { ws.CloseNow() })
	if !s.track(c) {
		c.cancel()
		ws.Close(websocket.StatusGoingAway, "relay shutting down")
		return nil, errServerClosed
	}
	return c, nil
}

func (c *conn) heard(now time.Time) { c.lastHeard.Store(now.UnixNano()) }

// run is the reader: it does the handshake, then reads frames until the
// connection ends, then waits for the writer and the timers, and calls done.
//
// The frames are read in a goroutine of its own, started once the
// handshake is done: the handshake's cryptography grows a stack to twice
// what reading needs, and a goroutine keeps its stack while it blocks in a
// read, for as long as the member stays.
func (c *conn) run(done func()) {
	c.q.setOnWork(c.kick)
	select {
	case <-c.stop: // finished before it ran (Close, Drain)
		c.kick()
	default:
	}
	c.startTimers()
	if c.handshake() {
		go c.serve(true, done)
		return
	}
	c.serve(false, done)
}

// serve reads frames if the handshake succeeded, then ends the connection.
func (c *conn) serve(established bool, done func()) {
	defer done()
	defer c.cancel()
	if established {
		c.readLoop()
	}
	c.finish(closeGone, 0, "")
	// finish kicked the writer, which ends the connection (or had
	// already failed); no writer starts after that.
	<-c.writerDone
	c.writers.Wait()
	c.stopTimers()
	c.mu.Lock()
	kind, code, msg := c.kind, c.code, c.msg
	c.mu.Unlock()
	log := c.srv.log.With("remote", c.remote, "conn", c.id)
	if !c.key.IsZero() {
		log = log.With("peer", c.key.ShortString())
	}
	switch kind {
	case closeFatal:
		log.Debug("relay: connection closed", "code", code, "reason", msg)
	default:
		log.Debug("relay: connection closed", "leave", kind == closeLeave)
	}
}

// frame is a message read from a client. A message is read into a forward
// buffer of the smallest size (getForward) and moves on to the next size
// when it fills one: most fit forwardBufSize, batch frames
// relayproto.BatchSize, and the rest a framePool buffer. A Send or
// SendBatch in a forward buffer is forwarded in that buffer. Buffers are
// taken once a message has begun, so idle connections hold none.
type frame struct {
	b     []byte
	fwd   []byte  // the getForward buffer b is in, or nil
	large *[]byte // the framePool buffer b is in, or nil
}

// release returns the frame's buffer to its pool, unless the frame was
// forwarded in it (take).
func (f *frame) release() {
	if f.fwd != nil {
		putForward(f.fwd)
	}
	if f.large != nil {
		framePool.Put(f.large)
	}
	*f = frame{}
}

// take hands the forward buffer to the caller (nil if the frame is in a
// framePool buffer); release then leaves it alone.
func (f *frame) take() []byte {
	b := f.fwd
	f.fwd = nil
	return b
}

// readFrame reads one WebSocket message into pooled buffers. The caller
// releases the frame when done with it.
func (c *conn) readFrame() (frame, error) {
	// No context per read (one showed in the allocation profile): the
	// socket is closed when c.ctx ends (accept).
	typ, r, err := c.ws.Reader(context.Background())
	if err != nil {
		return frame{}, err
	}
	f := frame{fwd: getForward(forwardBufSize)[:forwardBufSize]}
	n, err := io.ReadFull(r, f.fwd)
	if err == nil {
		// Full: the message may go on, into a batch-sized buffer.
		next := getForward(relayproto.BatchSize)[:relayproto.BatchSize]
		n, err = readOn(r, f.fwd, next, n)
		putForward(f.fwd)
		f.fwd = next
	}
	if err == nil {
		// Full again: on into the largest.
		f.large = framePool.Get().(*[]byte)
		n, err = readOn(r, f.fwd, *f.large, n)
		putForward(f.fwd)
		f.fwd = nil
		if err == nil {
			f.release()
			return frame{}, errFrameTooLarge
		}
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
	default:
		f.release()
		return frame{}, err
	}
	if typ != websocket.MessageBinary {
		f.release()
		return frame{}, errTextMessage
	}
	if f.large != nil {
		f.b = (*f.large)[:n]
	} else {
		f.b = f.fwd[:n]
	}
	return f, nil
}

// readOn goes on reading a message whose first n bytes filled full: it
// copies them to the larger to and reads the rest after them.
func readOn(r io.Reader, full, to []byte, n int) (int, error) {
	copy(to, full[:n])
	m, err := io.ReadFull(r, to[n:])
	return n + m, err
}

// readFailed turns a readFrame error into the connection's end.
func (c *conn) readFailed(err error) {
	switch {
	case errors.Is(err, errFrameTooLarge):
		c.fail(relayproto.ErrFrameTooLarge, fmt.Sprintf("frame larger than %d bytes", relayproto.MaxFrame))
	case errors.Is(err, errTextMessage):
		c.fail(relayproto.ErrBadFrame, err.Error())
	default:
		c.finish(closeGone, 0, "")
	}
}

// handshake sends ServerHello, checks the ClientHello and joins the
// rendezvous. It reports whether the connection is established.
func (c *conn) handshake() bool {
	s := c.srv
	if c.ws.Subprotocol() == relayproto.SubprotocolV1 {
		// An old client: it reads this Error in place of ServerHello and
		// shows its message (v1 clients report an Error frame received
		// during the handshake).
		s.metrics.handshake(hsBadVersion) // before the client can see the close
		c.fail(relayproto.ErrBadVersion, errV1Client)
		return false
	}
	hello := relayproto.ServerHello{Version: relayproto.Version, ServerKey: s.pub}
	if s.batches() {
		hello.Flags |= relayproto.FlagBatches
	}
	// A fresh challenge per connection makes a recorded ClientHello worthless.
	if _, err := rand.Read(hello.Challenge[:]); err != nil {
		c.fail(relayproto.ErrServerShutdown, "relay cannot read randomness")
		return false
	}
	c.q.push(hello.Append(nil), true)

	f, err := c.readFrame()
	if err != nil {
		c.readFailed(err)
		c.mu.Lock()
		timedOut := c.kind == closeFatal && c.code == relayproto.ErrHandshakeSlow
		c.mu.Unlock()
		switch {
		case timedOut:
			s.metrics.handshake(hsTimeout)
		case errors.Is(err, errFrameTooLarge), errors.Is(err, errTextMessage):
			s.metrics.handshake(hsBadFrame)
		default:
			s.metrics.handshake(hsDisconnect)
		}
		return false
	}
	c.heard(time.Now())
	ch, err := relayproto.ParseClientHello(f.b)
	f.release()
	// Each refusal is counted before the client can see its close, so a
	// client that saw one finds it in the metrics.
	if code, msg, result := c.verify(ch, err, hello); code != 0 {
		s.metrics.handshake(result)
		c.fail(code, msg)
		s.log.Debug("relay: handshake refused", "remote", c.remote, "conn", c.id, "code", code, "reason", msg)
		return false
	}
	c.key, c.rv = ch.ClientKey, ch.Rendezvous

	c.mu.Lock()
	if c.kind != closeNone { // the handshake timer fired first
		c.mu.Unlock()
		s.metrics.handshake(hsTimeout)
		return false
	}
	c.established = true
	c.mu.Unlock()
	if s.draining.Load() {
		s.metrics.handshake(hsShutdown)
		c.fail(relayproto.ErrServerShutdown, "relay draining, connect to another instance")
		return false
	}
	if err := s.router.join(c, s.welcome); err != nil {
		code, msg, result := s.joinRefused(err)
		s.metrics.handshake(result)
		c.fail(code, msg)
		return false
	}
	s.metrics.handshake(hsOK)
	s.log.Debug("relay: connection established", "remote", c.remote, "conn", c.id, "peer", c.key.ShortString())
	return true
}

// verify checks a ClientHello against the challenge this connection sent. It
// returns a zero code when the client proved that it holds the key it claims
// and the admission key of the rendezvous it asks for.
func (c *conn) verify(ch relayproto.ClientHello, parseErr error, hello relayproto.ServerHello) (relayproto.ErrorCode, string, string) {
	if parseErr != nil {
		return relayproto.ErrBadFrame, "expected ClientHello: " + parseErr.Error(), hsBadFrame
	}
	var he *relayproto.HelloError
	switch err := ch.Verify(c.srv.priv, hello); {
	case err == nil:
		return 0, "", ""
	case !errors.As(err, &he):
		return relayproto.ErrAuthFailed, err.Error(), hsAuthFailed
	case he.Code == relayproto.ErrBadVersion:
		return he.Code, he.Message, hsBadVersion
	default:
		return he.Code, he.Message, hsAuthFailed
	}
}

// readLoop handles frames until the connection ends.
func (c *conn) readLoop() {
	for {
		f, err := c.readFrame()
		if err != nil {
			c.readFailed(err)
			return
		}
		now := time.Now()
		c.heard(now)
		more := c.handleFrame(&f, now)
		f.release()
		if !more {
			return
		}
	}
}

// handleFrame acts on one frame from an established client and reports
// whether to read more. A Send or SendBatch goes out as a Recv or
// RecvBatch in the forward buffer it was read into (each pair differs only
// in the header); what else it forwards, it copies.
func (c *conn) handleFrame(in *frame, now time.Time) bool {
	s := c.srv
	b := in.b
	f, err := relayproto.Parse(b)
	if err != nil {
		c.fail(relayproto.ErrBadFrame, err.Error())
		return false
	}
	switch f.Type {
	case relayproto.TypeSend, relayproto.TypeBroadcast:
		if len(f.Payload) > relayproto.MaxPayload {
			// Possible for Broadcast, whose frame has no key: its
			// BroadcastRecv would exceed MaxFrame.
			c.fail(relayproto.ErrFrameTooLarge, fmt.Sprintf("payload larger than %d bytes", relayproto.MaxPayload))
			return false
		}
		// Charged for what the relay will queue: the frame as delivered
		// (a Recv is as long as its Send; a BroadcastRecv adds the
		// sender's key), once per receiver, plus per-frame overhead. A
		// Broadcast to n members costs n times a Send, as it costs the
		// relay n times the work and queue space.
		receivers := 1
		if f.Type == relayproto.TypeBroadcast {
			receivers = s.router.fanout(c)
		}
		if !c.allow(relayproto.Charge(1+relayproto.KeySize+len(f.Payload), receivers), now) {
			return true
		}
	case relayproto.TypeSendBatch:
		if !s.batches() {
			c.fail(relayproto.ErrBadFrame, "this relay does not take batch frames (it did not offer them)")
			return false
		}
		// Each packet as a Send of its own: batching saves the relay
		// work but changes nothing in what a member may send.
		if !c.allow(relayproto.BatchCharge(f.Payload), now) {
			return true
		}
	case relayproto.TypeAcceptBatches:
		if !s.batches() {
			c.fail(relayproto.ErrBadFrame, "this relay does not send batch frames (it did not offer them)")
			return false
		}
		c.batches.Store(true)
		return true
	case relayproto.TypeLeave:
		c.finish(closeLeave, 0, "")
		return false
	default:
		c.fail(relayproto.ErrBadFrame, fmt.Sprintf("%v frames go from relay to client", f.Type))
		return false
	}
	if f.Type == relayproto.TypeBroadcast {
		out := relayproto.AppendBroadcastRecv(make([]byte, 0, relayproto.KeySize+len(b)), c.key, f.Payload)
		n, full := s.router.broadcast(c, out)
		s.metrics.forwarded(kindBroadcast, n, len(f.Payload))
		s.metrics.drop(dropQueueFull, full)
		return true
	}
	// The receiver's queue owns out once it is delivered; otherwise
	// nothing holds it (the backplane copies what it relays).
	out := in.take()
	if out != nil {
		out = relayproto.Forwarded(b, c.key)
	} else {
		out = relayproto.Forwarded(append(getForward(len(b)), b...), c.key)
	}
	packets, bytes := 1, len(f.Payload)
	if f.Type == relayproto.TypeSendBatch {
		packets, bytes = f.Count, len(f.Payload)-relayproto.BatchPacketSize(0)*f.Count
	}
	switch s.router.unicast(c, f.Key, out) {
	case delivered:
		s.metrics.forwardedTotal(kindUnicast, packets, bytes)
	case noSuchPeer:
		putForward(out)
		s.metrics.drop(dropNoSuchPeer, packets)
	case dstQueueFull:
		putForward(out)
		s.metrics.drop(dropQueueFull, packets)
	case dstClosed:
		putForward(out)
		s.metrics.drop(dropClosed, packets)
	case relayed:
		putForward(out)
		// to another instance; the backplane counts it
	}
	return true
}

// pushData queues a Recv or RecvBatch frame, made by getForward, on c: a
// batch whole if c sent AcceptBatches, else split into Recv frames, all
// queued or, if they do not all fit, none. Unless it returns pushed, the
// caller still owns frame.
func (c *conn) pushData(frame []byte) pushResult {
	if frame[0] != byte(relayproto.TypeRecvBatch) || c.batches.Load() {
		return c.q.pushForward(frame)
	}
	frames := splitBatch(frame)
	res := c.q.pushForwards(frames)
	if res == pushed {
		putForward(frame)
	} else {
		for _, b := range frames {
			putForward(b)
		}
	}
	return res
}

// splitBatch returns the Recv frames, in getForward buffers, that carry the
// packets of a RecvBatch frame (one that Parse accepted) one by one.
func splitBatch(frame []byte) [][]byte {
	var src relayproto.Key
	copy(src[:], frame[1:])
	packets := frame[1+relayproto.KeySize:]
	var frames [][]byte
	for len(packets) > 0 {
		var p []byte
		p, packets = relayproto.NextPacket(packets)
		frames = append(frames, relayproto.AppendRecv(getForward(1+relayproto.KeySize+len(p)), src, p))
	}
	return frames
}

// allow charges n bytes to the rate limit. Over the limit the frame is
// dropped, and now and then the client is told.
func (c *conn) allow(n int, now time.Time) bool {
	if c.budget == nil {
		return true
	}
	if c.budget.take(now, n) {
		c.srv.metrics.charge(n)
		return true
	}
	c.srv.metrics.drop(dropRateLimited, 1)
	if now.Sub(c.lastRateNotice) >= rateNoticeInterval {
		c.lastRateNotice = now
		msg := fmt.Sprintf("over %d bytes/s (a frame costs its size plus %d bytes, once per receiver): frames dropped", c.srv.cfg.RateBytesPerSec, relayproto.FrameOverhead)
		c.q.push(relayproto.AppendError(nil, relayproto.ErrRateLimited, msg), true)
	}
	return false
}

// finish decides how the connection ends; the first decision wins. It stops
// routing to the connection at once and wakes the writer, which carries it
// out.
func (c *conn) finish(kind closeKind, code relayproto.ErrorCode, msg string) {
	c.mu.Lock()
	if c.kind != closeNone {
		c.mu.Unlock()
		return
	}
	c.kind, c.code, c.msg = kind, code, msg
	c.mu.Unlock()
	c.srv.router.leave(c)
	c.q.shutdown()
	close(c.stop)
	// A writer started by shutdown may have looked at stop before it
	// closed; the one this starts sees it (once the connection runs).
	c.q.wake()
}

// ending reports whether finish has decided how the connection ends.
func (c *conn) ending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kind != closeNone
}

// fail ends the connection with a fatal Error frame.
func (c *conn) fail(code relayproto.ErrorCode, msg string) { c.finish(closeFatal, code, msg) }

// drain asks the client to move to another relay within grace.
func (c *conn) drain(grace time.Duration) {
	c.mu.Lock()
	est := c.established
	c.mu.Unlock()
	if !est {
		// No Drain before Welcome: the protocol has no place for it.
		c.fail(relayproto.ErrServerShutdown, "relay draining, connect to another instance")
		return
	}
	c.startDrain(grace)
}

// failHandshake ends a connection whose handshake is not done in time.
func (c *conn) failHandshake() {
	c.mu.Lock()
	late := !c.established
	c.mu.Unlock()
	if late {
		c.fail(relayproto.ErrHandshakeSlow, fmt.Sprintf("handshake not finished within %v", c.srv.cfg.HandshakeTimeout))
	}
}

// closeStatus maps an error code to the WebSocket close status sent with it.
func closeStatus(code relayproto.ErrorCode) websocket.StatusCode {
	switch code {
	case relayproto.ErrFrameTooLarge:
		return websocket.StatusMessageTooBig
	case relayproto.ErrBadFrame, relayproto.ErrBadVersion:
		return websocket.StatusProtocolError
	case relayproto.ErrTooManyConns, relayproto.ErrRendezvousFull:
		return websocket.StatusTryAgainLater
	case relayproto.ErrServerShutdown:
		return websocket.StatusGoingAway
	}
	return websocket.StatusPolicyViolation
}

// closeReason cuts msg to what a WebSocket close frame carries (123 bytes).
func closeReason(msg string) string {
	const maxReason = 123
	if len(msg) <= maxReason {
		return msg
	}
	b := []byte(msg[:maxReason])
	for len(b) > 0 && b[len(b)-1]&0xc0 == 0x80 { // do not split a rune
		b = b[:len(b)-1]
	}
	if len(b) > 0 && b[len(b)-1] >= 0xc0 {
		b = b[:len(b)-1]
	}
	return string(b)
}
