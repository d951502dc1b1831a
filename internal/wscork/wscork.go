// Package wscork batches the messages a WebSocket writer sends in a row into
// fewer socket writes.
//
// The WebSocket library flushes its buffer at the end of every message, so a
// relay connection that carries one WireGuard packet per message costs one
// write system call (and, on TLS, one record) per packet: the profile of the
// relay's forwarding path is mostly those calls. A Conn sits under the
// WebSocket (beneath or above TLS) and, while its owner holds it corked,
// collects those flushes in one buffer that goes out when the owner uncorks
// (its queue drained) or the buffer fills, as TCP_CORK does in the kernel but
// without a system call per message. Message boundaries are the WebSocket's
// business and are unaffected; the protocol does not change.
//
// Over TLS the Conn sits above it, so that a batch is sealed as a few full
// records rather than one per message; crypto/tls then writes each record
// by itself, so a second Conn below TLS (NewListener on the server, Below on
// the client) is corked for the batch too and the records leave in one
// write, as on ws:// (a write's cost is mostly per call).
//
// Writes that happen while the Conn is not corked (pings, pongs and close
// frames from other goroutines) go straight through.
//
// The reading side mirrors it: while the peer's batches arrive faster than
// the WebSocket's reader takes them, a Conn reads a batch at once (Read);
// over TLS the Conn below it does, and the one above reads through.
package wscork

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// MaxBatch is the most one corked batch holds before it is written: 64 KiB
// is a few dozen full-size WireGuard packets, enough to take the per-write
// cost off the profile, and what one TLS record and a loopback TCP segment
// carry at most.
const MaxBatch = 64 << 10

// recordSlack is room beyond MaxBatch for what TLS adds to a batch it
// seals: a 64 KiB batch is four or five records of at most 29 bytes of
// header, nonce and tag each (TLS 1.2 GCM; 22 in TLS 1.3). A Conn below
// TLS holds the sealed batch whole, so that it leaves in one write.
const recordSlack = 256

// batchPool holds batch buffers. A connection takes one when it corks and
// gives it back when it uncorks, so an idle connection holds none.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, MaxBatch+recordSlack); return &b }}

// Conn is a net.Conn whose writes may be corked. Its zero value is not
// usable; call New.
type Conn struct {
	net.Conn
	// timeout, when positive, bounds each socket write made while corked,
	// so that a peer that stopped reading cannot hold the owner forever.
	timeout time.Duration

	// below, when nc is a TLS connection over another Conn (NewListener,
	// Dial's TLS dial), is that Conn: each batch written is corked there
	// too, so that its TLS records (at most 16 KiB each, one write apiece
	// in crypto/tls) leave in one socket write.
	below *Conn
	limit int // the most a batch holds before it is written
	// direct: reads go straight to nc, which buffers itself (crypto/tls
	// holds a decrypted record and hands it out without a system call), so
	// a read-ahead would only copy it once more.
	direct bool

	mu     sync.Mutex // guards the fields below and orders socket writes
	corked bool
	batch  *[]byte // taken from batchPool while corked
	err    error   // the first failed socket write; sticky

	// Read-ahead, used by the one reading goroutine only (the WebSocket
	// library serializes reads). ahead[pos:end] is what was read from the
	// socket and not yet handed out.
	ahead    *[]byte // taken from batchPool while the peer is sending fast
	pos, end int
	busy     bool // the last socket read filled the buffer it was given
}

// New wraps nc. timeout bounds each socket write made while corked (zero:
// no bound beyond the caller's own).
func New(nc net.Conn, timeout time.Duration) *Conn {
	c := &Conn{Conn: nc, timeout: timeout, limit: MaxBatch}
	if tc, ok := nc.(*tls.Conn); ok {
		c.below, _ = tc.NetConn().(*Conn)
		c.direct = true
	}
	return c
}

// newBelow wraps nc for TLS to run over: it takes whole sealed batches.
func newBelow(nc net.Conn) *Conn {
	return &Conn{Conn: nc, limit: MaxBatch + recordSlack}
}

// NewListener returns a listener whose connections are Conns, for a TLS
// listener to wrap: a Conn made later (New, NewResponseWriter) around the
// TLS connection then corks this one too.
func NewListener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newBelow(nc), nil
}

// Below wraps nc, which TLS is about to run over, like NewListener's
// connections.
func Below(nc net.Conn) net.Conn { return newBelow(nc) }

// Cork starts a batch: writes are collected until Uncork. On a nil Conn
// (a socket that could not be wrapped) Cork and Uncork do nothing.
func (c *Conn) Cork() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork writes what the batch holds and ends it. It returns the error of
// the socket write, which leaves the connection unusable.
func (c *Conn) Uncork() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	c.corked = false
	if c.batch != nil {
		*c.batch = (*c.batch)[:0]
		batchPool.Put(c.batch)
		c.batch = nil
	}
	return err
}

// Write collects p while corked and writes it through otherwise.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.corked {
		return c.Conn.Write(p)
	}
	if c.batch == nil {
		c.batch = batchPool.Get().(*[]byte)
	}
	if len(*c.batch)+len(p) > c.limit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > c.limit {
			return c.writeLocked(p)
		}
	}
	*c.batch = append(*c.batch, p...)
	return len(p), nil
}

// Read reads what the peer sent. While the peer sends faster than one
// read takes in (the last read filled its buffer, as batched writes do),
// it reads up to MaxBatch at once into a pooled buffer and hands it out
// from there, so that a 64 KiB batch costs one system call instead of one
// per 4 KiB the WebSocket's reader asks for. Once a read comes back short
// (the socket is drained) the buffer goes back to the pool, so a quiet
// connection does not hold one.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.direct {
		return c.Conn.Read(p)
	}
	if c.ahead != nil {
		if c.pos < c.end {
			n := copy(p, (*c.ahead)[c.pos:c.end])
			c.pos += n
			return n, nil
		}
		*c.ahead = (*c.ahead)[:0]
		batchPool.Put(c.ahead)
		c.ahead = nil
	}
	if !c.busy || len(p) >= MaxBatch {
		n, err := c.Conn.Read(p)
		c.busy = n == len(p)
		return n, err
	}
	c.ahead = batchPool.Get().(*[]byte)
	buf := (*c.ahead)[:MaxBatch]
	n, err := c.Conn.Read(buf)
	c.busy = n == len(buf)
	c.pos, c.end = 0, n
	m := copy(p, buf[:n])
	c.pos = m
	if m > 0 {
		// Deliver the data first; an error that came with it is seen
		// again by the next read of the socket.
		return m, nil
	}
	return 0, err
}

// flushLocked writes the batch, if any.
func (c *Conn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if c.batch == nil || len(*c.batch) == 0 {
		return nil
	}
	_, err := c.writeLocked(*c.batch)
	*c.batch = (*c.batch)[:0]
	return err
}

// writeLocked writes p to the socket within the timeout and records a
// failure.
func (c *Conn) writeLocked(p []byte) (int, error) {
	if c.timeout > 0 {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
			c.err = err
			return 0, err
		}
		defer c.Conn.SetWriteDeadline(time.Time{})
	}
	if c.below != nil {
		c.below.Cork()
	}
	n, err := c.Conn.Write(p)
	if c.below != nil {
		if uerr := c.below.Uncork(); err == nil && uerr != nil {
			err = uerr
		}
	}
	if err != nil {
		c.err = err
	}
	return n, err
}

// slotKey is the context key of a Slot.
type slotKey struct{}

// Slot receives the Conn a dial made, for a caller that dials through a
// library (net/http under the WebSocket) and needs the Conn afterwards.
type Slot struct {
	mu   sync.Mutex
	conn *Conn
}

// WithSlot returns ctx carrying s, for Dialer to fill.
func WithSlot(ctx context.Context, s *Slot) context.Context {
	return context.WithValue(ctx, slotKey{}, s)
}

// Conn returns what the dial put in the slot, nil if nothing.
func (s *Slot) Conn() *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// Dial wraps a dial function: when ctx carries a Slot, the connection is
// wrapped in a Conn (without a timeout) and stored in it; otherwise dial's
// result is returned as is.
func Dial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		s, _ := ctx.Value(slotKey{}).(*Slot)
		if s == nil {
			return nc, nil
		}
		c := New(nc, 0)
		s.mu.Lock()
		s.conn = c
		s.mu.Unlock()
		return c, nil
	}
}

// ResponseWriter wraps an http.ResponseWriter so that a WebSocket accepted
// on it writes through a Conn: the WebSocket library hijacks the connection
// through it. Conn returns that Conn after the upgrade.
type ResponseWriter struct {
	http.ResponseWriter
	timeout time.Duration
	conn    *Conn
}

// NewResponseWriter wraps w; timeout is passed to New.
func NewResponseWriter(w http.ResponseWriter, timeout time.Duration) *ResponseWriter {
	return &ResponseWriter{ResponseWriter: w, timeout: timeout}
}

// Hijack hijacks the underlying connection and hands out a Conn around it,
// with the buffered writer pointed at the Conn.
func (w *ResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Whatever the server buffered must reach the socket before the
	// writer is pointed elsewhere.
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("flushing the hijacked connection: %w", err)
	}
	c := New(nc, w.timeout)
	// net/http's 4 KiB reader and writer would stay with the connection
	// for its life: a third of what an idle relay member cost. The
	// writer only stages each message on its way into the corked batch
	// (or, uncorked, a control frame on its way to the socket), so a small
	// one costs a second append per message, not a system call. The
	// reader takes frame headers and small messages; while the peer sends
	// fast, Read serves it from the read-ahead. A reader that already
	// holds bytes the client sent behind its request is kept.
	brw.Writer = bufio.NewWriterSize(c, hijackWriteBuf)
	if brw.Reader.Buffered() == 0 {
		brw.Reader = bufio.NewReaderSize(c, hijackReadBuf)
	}
	w.conn = c
	return c, brw, nil
}

// Buffers of a hijacked connection (ResponseWriter.Hijack). hijackWriteBuf
// holds a WebSocket control frame (at most 2+125 bytes from a server) in
// one piece; hijackReadBuf takes a frame header and a small message (a
// presence frame, a ping) in one read.
const (
	hijackWriteBuf = 256
	hijackReadBuf  = 512
)

// Conn returns the Conn made by Hijack, nil before.
func (w *ResponseWriter) Conn() *Conn { return w.conn }
