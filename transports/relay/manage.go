package relay

import (
	"time"
)

// run is the connection manager, the one goroutine the client owns
// directly. It dials, watches the live connection, replaces it
// make-before-break when asked to, and redials with backoff after a loss.
func (c *Client) run() {
	defer c.wg.Done()
	bo := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff}
	var cn *conn
	for {
		if cn == nil {
			var err error
			cn, err = c.dial(c.ctx)
			if err != nil {
				if c.ctx.Err() != nil {
					return
				}
				c.setDisconnected(err)
				if !c.sleep(bo.next()) {
					return
				}
				continue
			}
			c.promote(cn)
		}
		cn = c.serve(cn, &bo)
		if cn == nil && c.ctx.Err() != nil {
			return
		}
	}
}

// serve watches cn until it must be replaced or is gone. It returns the
// connection to watch next, or nil after an unplanned loss (having waited
// out the backoff) or at Close.
func (c *Client) serve(cn *conn, bo *backoff) *conn {
	settle := time.NewTimer(presenceSettle)
	defer settle.Stop()
	var lifeC <-chan time.Time
	if t := lifetimeTimer(cn); t != nil {
		defer t.Stop()
		lifeC = t.C
	}
	for {
		var plan planReason
		select {
		case <-c.ctx.Done():
			c.shutdown(cn)
			return nil
		case <-settle.C:
			c.presence.settle(cn.id)
			continue
		case <-cn.dead:
			c.lost(cn, bo)
			return nil
		case plan = <-cn.planned:
		case <-lifeC:
			plan = planReason{why: "connection lifetime"}
		}
		if next := c.replace(cn, plan); next != nil {
			return next
		}
		if c.ctx.Err() != nil {
			c.shutdown(cn)
			return nil
		}
		// No replacement before the old connection died.
		c.lost(cn, bo)
		return nil
	}
}

// promote makes cn the connection that Send uses.
func (c *Client) promote(cn *conn) {
	c.active.Store(cn)
	c.setConnected(cn)
	if cn.adm != c.admissionKey() {
		// SetAdmission ran while cn was dialling.
		cn.requestPlanned(planReason{why: "new admission key (mesh secret rotated)"})
	}
	c.log.Info("relay: connected", "relay", c.cfg.URL,
		"max_payload", cn.maxPayload, "lifetime_s", cn.welcome.LifetimeSecs, "rate_bytes", cn.welcome.RateBytes)
}

// replace opens a new connection while old still works, switches sends to
// it, and retires old: old flushes its queue, sends Leave, and keeps
// delivering until the relay closes it. It returns nil if old died before
// a new connection was up, or at Close.
func (c *Client) replace(old *conn, plan planReason) *conn {
	c.log.Info("relay: replacing connection", "relay", c.cfg.URL, "why", plan.why,
		"deadline", plan.deadline)
	bo := backoff{min: c.cfg.MinBackoff / 4, max: min(c.cfg.MaxBackoff, replaceRetryMax)}
	for {
		next, err := c.dial(c.ctx)
		if err == nil {
			c.promote(next)
			old.beginLeave()
			c.retire(old)
			return next
		}
		if c.ctx.Err() != nil {
			return nil
		}
		c.setLastError(err)
		c.log.Warn("relay: replacement connection failed", "relay", c.cfg.URL, "err", err)
		t := time.NewTimer(bo.next())
		select {
		case <-t.C:
		case <-old.dead:
			t.Stop()
			return nil
		case <-c.ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// retire waits in the background for a replaced connection to be closed by
// the relay, cutting it off after leaveGrace or at Close.
func (c *Client) retire(old *conn) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTimer(leaveGrace)
		defer t.Stop()
		select {
		case <-old.dead:
		case <-t.C:
			c.log.Warn("relay: replaced connection not closed by relay", "relay", c.cfg.URL, "after", leaveGrace)
		case <-c.ctx.Done():
		}
		old.ws.CloseNow()
		old.wg.Wait()
	}()
}

// lost handles an unplanned end of cn and waits out the backoff before the
// next dial.
func (c *Client) lost(cn *conn, bo *backoff) {
	c.active.CompareAndSwap(cn, nil)
	cn.ws.CloseNow()
	cn.wg.Wait()
	c.setDisconnected(cn.err)
	c.log.Warn("relay: connection lost", "relay", c.cfg.URL, "err", cn.err,
		"lived", time.Since(cn.established).Round(time.Millisecond))
	if time.Since(cn.established) >= stableAfter {
		bo.reset()
	}
	c.sleep(bo.next())
}

// shutdown leaves the relay at Close: flush, Leave, and a short wait for the
// relay to hang up.
func (c *Client) shutdown(cn *conn) {
	c.active.CompareAndSwap(cn, nil)
	cn.beginLeave()
	t := time.NewTimer(closeGrace)
	select {
	case <-cn.dead:
	case <-t.C:
	}
	t.Stop()
	cn.ws.CloseNow()
	cn.wg.Wait()
	c.setDisconnected(nil)
}

// sleep waits d, recording when the next attempt is due. It reports false
// if the client was closed meanwhile.
func (c *Client) sleep(d time.Duration) bool {
	c.setNextAttempt(time.Now().Add(d))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		c.setNextAttempt(time.Time{})
		return true
	case <-c.ctx.Done():
		return false
	}
}
