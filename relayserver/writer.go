package relayserver

import (
	"context"
	"fmt"
	"time"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
)

// The writer. An idle connection has no writer goroutine: kick starts one
// when there is something to write or the connection is to end, and it
// exits once the queue is empty (a goroutine's stack and a parked select per
// idle member were a third of the relay's memory per member). At most one
// runs at a time, so frames leave in order. The connection's timers
// (handshake, ping and idle, lifetime, drain) are time.AfterFunc callbacks
// that queue a frame or end the connection, which kicks the writer.

// kick makes sure a writer runs to write what is queued or to carry out
// finish's decision. It never blocks.
func (c *conn) kick() {
	c.wmu.Lock()
	switch {
	case c.writing:
		c.again = true // the running writer looks again before it exits
		c.wmu.Unlock()
		return
	case c.wdone:
		c.wmu.Unlock()
		return
	}
	c.writing = true
	c.writers.Add(1)
	c.wmu.Unlock()
	go c.writeRun()
}

// writeRun is one run of the writer: it writes until the queue is empty, or
// ends the connection the way finish decided. It always closes the WebSocket
// before it ends the connection, which ends the reader's read.
func (c *conn) writeRun() {
	defer c.writers.Done()
	for {
		select {
		case <-c.stop:
			c.closeAsRequested(c.wbatch)
			c.endWriter()
			return
		default:
		}
		var ok bool
		if c.wbatch, ok = c.writeQueued(c.wbatch); !ok {
			c.ws.CloseNow()
			c.endWriter()
			return
		}
		c.wmu.Lock()
		if !c.again {
			c.writing = false
			c.wmu.Unlock()
			return
		}
		c.again = false
		c.wmu.Unlock()
	}
}

// release lets go of the storage of the writer's batch and of the queue
// while nothing waits, so that a member that has gone quiet does not keep
// its last burst's. keepalive calls it, every PingInterval: releasing it
// each time the writer goes idle made a busy connection reallocate it for
// every burst.
func (c *conn) release() {
	c.wmu.Lock()
	if !c.writing {
		c.wbatch = nil
	}
	c.wmu.Unlock()
	c.q.release()
}

// endWriter records that no writer runs again: the connection is over.
func (c *conn) endWriter() {
	c.wmu.Lock()
	if !c.wdone {
		c.wdone = true
		close(c.writerDone)
	}
	c.wbatch = nil
	c.wmu.Unlock()
}

// startTimers arms the connection's timers; stopTimers disarms them for
// good and waits for a ping in flight.
func (c *conn) startTimers() {
	cfg := &c.srv.cfg
	c.tmu.Lock()
	defer c.tmu.Unlock()
	c.hsTimer = time.AfterFunc(cfg.HandshakeTimeout, c.failHandshake)
	c.pingTimer = time.AfterFunc(cfg.PingInterval, c.keepalive)
	if cfg.MaxConnLifetime > 0 {
		// Through drain, which refuses a connection still in its
		// handshake: a Drain must not precede Welcome.
		c.lifeTimer = time.AfterFunc(cfg.MaxConnLifetime, func() { c.drain(cfg.DrainGrace) })
	}
}

func (c *conn) stopTimers() {
	c.tmu.Lock()
	c.timersOff = true
	for _, t := range []*time.Timer{c.hsTimer, c.pingTimer, c.lifeTimer, c.drainTimer} {
		if t != nil {
			t.Stop()
		}
	}
	c.tmu.Unlock()
	c.pings.Wait()
}

// startDrain queues a Drain frame and fails the connection when grace has
// passed. One Drain per connection; the first deadline stands.
func (c *conn) startDrain(grace time.Duration) {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if c.timersOff || c.drainTimer != nil {
		return
	}
	c.q.push(relayproto.AppendDrain(nil, uint32(grace.Milliseconds())), true)
	c.drainTimer = time.AfterFunc(grace, func() { c.fail(relayproto.ErrServerShutdown, "drain deadline passed") })
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

// keepalive, every PingInterval, closes a connection that has been silent
// for IdleTimeout and otherwise pings it. The ping runs in a goroutine of
// its own because Ping waits for the pong; the reader sees the pong and
// records it as heard.
func (c *conn) keepalive() {
	idle := time.Since(time.Unix(0, c.lastHeard.Load()))
	if idle > c.srv.cfg.IdleTimeout {
		c.fail(relayproto.ErrIdle, fmt.Sprintf("nothing heard for %v", idle.Round(time.Millisecond)))
		return
	}
	c.release()
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if c.timersOff {
		return
	}
	c.pingTimer.Reset(c.srv.cfg.PingInterval)
	if !c.pinging.CompareAndSwap(false, true) {
		return // the last ping is still out
	}
	c.pings.Add(1) // under tmu: before stopTimers' Wait, or not at all
	go func() {
		defer c.pings.Done()
		defer c.pinging.Store(false)
		ctx, cancel := context.WithTimeout(c.ctx, c.srv.cfg.IdleTimeout)
		defer cancel()
		_ = c.ws.Ping(ctx) // the answer, if any, updates lastHeard
	}()
}
