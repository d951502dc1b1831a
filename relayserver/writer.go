package relayserver

import (
	"context"
	"fmt"
	"time"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
)

// writeLoop is the connection's writer goroutine: it writes queued frames and
// owns the connection's timers (handshake, ping and idle, lifetime, drain).
// It always closes the WebSocket before it returns, which ends the reader's
// read.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	defer c.pings.Wait()
	cfg := &c.srv.cfg

	hs := time.NewTimer(cfg.HandshakeTimeout)
	defer hs.Stop()
	ping := time.NewTicker(cfg.PingInterval)
	defer ping.Stop()
	var lifeC, drainC <-chan time.Time
	if cfg.MaxConnLifetime > 0 {
		t := time.NewTimer(cfg.MaxConnLifetime)
		defer t.Stop()
		lifeC = t.C
	}
	var drainT *time.Timer
	defer func() {
		if drainT != nil {
			drainT.Stop()
		}
	}()
	startDrain := func(grace time.Duration) {
		if drainT != nil {
			return // one Drain per connection; the first deadline stands
		}
		c.q.push(relayproto.AppendDrain(nil, uint32(grace.Milliseconds())), true)
		drainT = time.NewTimer(grace)
		drainC = drainT.C
	}

	var batch []queued
	for {
		select {
		case <-c.q.notify:
			var ok bool
			if batch, ok = c.writeQueued(batch); !ok {
				c.ws.CloseNow()
				return
			}
		case <-c.stop:
			c.closeAsRequested(batch)
			return
		case <-c.ctx.Done():
			c.ws.CloseNow()
			return
		case <-hs.C:
			c.failHandshake()
		case <-ping.C:
			c.keepalive()
		case <-lifeC:
			// Through drain, which refuses a connection still in its
			// handshake: a Drain must not precede Welcome.
			c.drain(cfg.DrainGrace)
		case grace := <-c.drainReq:
			startDrain(grace)
		case <-drainC:
			c.fail(relayproto.ErrServerShutdown, "drain deadline passed")
		}
	}
}

// writeQueued writes what is queued, corked so that the frames leave in as
// few socket writes as the batch needs. It returns false if a write failed,
// in which case the connection is unusable.
func (c *conn) writeQueued(batch []queued) ([]queued, bool) {
	batch = c.q.take(batch)
	c.cork.Cork()
	for i, e := range batch {
		var err error
		if e.snap != nil {
			err = e.snap.each(c.scratch[:], c.writeCorked)
		} else {
			err = c.writeCorked(e.frame)
			if e.recycle {
				putForward(e.frame) // written (copied into the batch) or failed
			}
		}
		c.q.written(e.size())
		batch[i] = queued{}
		if err != nil {
			for _, rest := range batch[i+1:] {
				c.q.written(rest.size())
			}
			c.srv.metrics.drop(dropClosed, len(batch)-i)
			clear(batch)
			c.cork.Uncork()
			return batch, false
		}
	}
	if err := c.cork.Uncork(); err != nil {
		// The frames were counted written; the client will not get them.
		c.srv.log.Debug("relay: write failed", "remote", c.remote, "conn", c.id, "err", err)
		return batch, false
	}
	return batch, true
}

// writeCorked adds one frame to the corked batch. It needs no deadline of
// its own: every socket write the cork makes is bounded by WriteTimeout, and
// closing the server closes the socket (accept).
func (c *conn) writeCorked(b []byte) error {
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, b); err != nil {
		return fmt.Errorf("relay: write to %s: %w", c.remote, err)
	}
	return nil
}

// write sends one frame outside a batch, bounded by WriteTimeout so that a
// peer that stopped reading cannot hold the writer forever; on timeout the
// socket is closed.
func (c *conn) write(b []byte) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.srv.cfg.WriteTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		return fmt.Errorf("relay: write to %s: %w", c.remote, err)
	}
	return nil
}

// closeAsRequested ends the connection the way finish decided.
func (c *conn) closeAsRequested(batch []queued) {
	c.mu.Lock()
	kind, code, msg := c.kind, c.code, c.msg
	c.mu.Unlock()
	switch kind {
	case closeLeave:
		// The router no longer routes here and the queue is shut, so this
		// ends: everything queued before Leave reaches the client.
		for {
			var ok bool
			if batch, ok = c.writeQueued(batch); !ok {
				c.ws.CloseNow()
				return
			}
			if f, _ := c.q.len(); f == 0 {
				break
			}
		}
		c.ws.Close(websocket.StatusNormalClosure, "leave")
	case closeFatal:
		c.srv.metrics.drop(dropClosed, c.q.discard())
		if c.write(relayproto.AppendError(nil, code, msg)) != nil {
			c.ws.CloseNow()
			return
		}
		c.ws.Close(closeStatus(code), closeReason(msg))
	default:
		c.srv.metrics.drop(dropClosed, c.q.discard())
		c.ws.CloseNow()
	}
}

// keepalive closes a connection that has been silent for IdleTimeout and
// otherwise pings it. The ping runs beside the writer because Ping waits for
// the pong; the reader sees the pong and records it as heard.
func (c *conn) keepalive() {
	idle := time.Since(time.Unix(0, c.lastHeard.Load()))
	if idle > c.srv.cfg.IdleTimeout {
		c.fail(relayproto.ErrIdle, fmt.Sprintf("nothing heard for %v", idle.Round(time.Millisecond)))
		return
	}
	if !c.pinging.CompareAndSwap(false, true) {
		return // the last ping is still out
	}
	c.pings.Add(1)
	go func() {
		defer c.pings.Done()
		defer c.pinging.Store(false)
		ctx, cancel := context.WithTimeout(c.ctx, c.srv.cfg.IdleTimeout)
		defer cancel()
		_ = c.ws.Ping(ctx) // the answer, if any, updates lastHeard
	}()
}
