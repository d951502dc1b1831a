// One client connection: handshake, frame handling, send queue, drain and
// close. The Relay (relay.js) owns the rooms; a Conn only asks it to join,
// leave and route.

import crypto from 'node:crypto';
import * as p from './proto.js';

// A close reason travels in a WebSocket close frame, which holds 123 bytes.
const MAX_CLOSE_REASON = 123;
// rateNoticeInterval spaces the non-fatal ErrRateLimited frames: one a
// second tells the client it is over its rate without adding to the flood.
const RATE_NOTICE_INTERVAL_MS = 1000;
// SNAPSHOT_WINDOW is how many snapshot frames a connection hands to its
// socket at a time; the next ones go as those are written, so a joiner that
// does not read holds at most this many of them in the relay.
const SNAPSHOT_WINDOW = 64;

// Push results.
export const PUSHED = 0;
export const FULL = 1;
export const SHUT = 2;

function cutReason(msg) {
  let b = Buffer.from(msg, 'utf8');
  if (b.length <= MAX_CLOSE_REASON) return msg;
  let end = MAX_CLOSE_REASON;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--;
  return b.subarray(0, end).toString('utf8');
}

export class Conn {
  constructor(relay, ws, src) {
    this.relay = relay;
    this.cfg = relay.cfg;
    this.ws = ws;
    this.src = src;
    this.id = ++relay.nextID;
    this.established = false;
    this.closing = false; // no more routing or frames from the client
    this.drained = false; // at most one Drain per connection
    this.key = null;
    this.keyHex = '';
    this.rv = null;
    this.rvHex = '';
    this.room = null; // set by the relay while routable
    this.pendingFrames = 0; // frames handed to ws and not yet written to the socket
    // While a presence snapshot streams (pushJoin), snap is {keys, i, skip}
    // and frames pushed meanwhile wait in backlog, so that none overtakes
    // the snapshot; both count against the queue caps.
    this.snap = null;
    this.backlog = null;
    this.backlogBytes = 0;
    this.wroteAt = 0; // when the last frame reached the socket, or the queue last became non-empty
    this.stallCheck = false; // a write-stall check is scheduled
    this.lastHeard = Date.now();
    this.lastRateNotice = 0;
    this.tokens = this.cfg.rateBurstBytes;
    this.tokensAt = Date.now();
    this.timers = new Set();
    this.challenge = crypto.randomBytes(p.CHALLENGE_SIZE);

    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('pong', () => { this.lastHeard = Date.now(); });
    ws.on('error', (err) => this.relay.log('debug', 'relay: websocket error', { conn: this.id, err: String(err && err.message) }));
    ws.on('close', () => this.onClose());

    if (ws.protocol === p.SUBPROTOCOL_V1) {
      // An old client: it reads this Error in place of ServerHello and
      // shows its message (v1 clients report an Error frame received
      // during the handshake).
      this.fail(p.E.BadVersion, p.V1_CLIENT_MESSAGE, 'bad_version');
      return;
    }
    // No Drain before Welcome: a handshake that does not finish in time is
    // ended, and an attacker cannot hold half-open connections for long.
    this.after(this.cfg.handshakeTimeoutMs, () => {
      if (!this.established) this.fail(p.E.HandshakeSlow, `handshake not finished within ${this.cfg.handshakeTimeoutMs} ms`, 'timeout');
    });
    this.push(p.serverHello(relay.keys.publicRaw, this.challenge), true);
  }

  after(ms, fn) {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
    return t;
  }

  // push hands frame to the socket unless the queue is at its caps (then
  // the newest frame, this one, is dropped). force skips the caps: the few
  // control frames the relay itself sends (ServerHello, Welcome, the rate
  // notice, Drain), never frames other clients cause.
  push(frame, force) {
    if (this.closing && !force) return SHUT;
    if (this.ws.readyState !== 1) return SHUT;
    const snapBytes = this.snap ? (this.snap.keys.length - this.snap.i) * (1 + p.KEY_SIZE) : 0;
    const frames = this.pendingFrames + (this.backlog ? this.backlog.length + 1 : 0);
    if (!force && (frames >= this.cfg.sendQueueFrames ||
        this.ws.bufferedAmount + this.backlogBytes + snapBytes + frame.length > this.cfg.sendQueueBytes)) {
      return FULL;
    }
    if (this.backlog) {
      this.backlog.push(frame);
      this.backlogBytes += frame.length;
    } else {
      this.send(frame);
    }
    return PUSHED;
  }

  send(frame) {
    if (this.pendingFrames++ === 0) this.wroteAt = Date.now();
    this.ws.send(frame, { binary: true }, () => {
      this.pendingFrames--;
      this.wroteAt = Date.now();
      if (this.snap) this.pump();
    });
    this.watchWrites();
  }

  // pushJoin queues the Welcome, then one PeerPresent per key of keys (the
  // room's shared list) but skip, streamed SNAPSHOT_WINDOW at a time as the
  // socket takes them: a snapshot obeys the caps like any frame instead of
  // being queued whole past them.
  pushJoin(welcome, keys, skip) {
    this.push(welcome, true);
    if (keys.length === 0) return;
    this.snap = { keys, i: 0, skip };
    this.backlog = [];
    this.backlogBytes = 0;
    this.pump();
  }

  pump() {
    if (this.ws.readyState !== 1) return;
    const sn = this.snap;
    const window = Math.min(SNAPSHOT_WINDOW, this.cfg.sendQueueFrames);
    while (sn && this.pendingFrames < window && sn.i < sn.keys.length) {
      const k = sn.keys[sn.i++];
      if (k !== sn.skip) this.send(p.keyed(p.T.PeerPresent, Buffer.from(k, 'hex')));
    }
    if (sn && sn.i >= sn.keys.length) this.endSnapshot();
  }

  // endSnapshot hands what waited behind the snapshot to the socket.
  endSnapshot() {
    const backlog = this.backlog || [];
    this.snap = null;
    this.backlog = null;
    this.backlogBytes = 0;
    for (const f of backlog) this.send(f);
  }

  // watchWrites gives the oldest unwritten frame writeTimeoutMs to reach the
  // socket, as the Go relay bounds each frame write by WriteTimeout: a client
  // that stops reading (while it goes on sending, so it never looks idle)
  // must not hold its queue, up to sendQueueBytes, for good. One timer per
  // connection, re-armed only when it fires, keeps the send path cheap.
  watchWrites() {
    if (this.stallCheck || this.pendingFrames === 0) return;
    this.stallCheck = true;
    const wait = Math.max(0, this.wroteAt + this.cfg.writeTimeoutMs - Date.now());
    this.after(wait, () => {
      this.stallCheck = false;
      if (this.closing || this.pendingFrames === 0) return; // close paths have their own deadline
      const stalled = Date.now() - this.wroteAt;
      if (stalled < this.cfg.writeTimeoutMs) {
        this.watchWrites();
        return;
      }
      // The Go writer's write fails here and it closes the socket at once:
      // nothing more can be written, not even an Error frame.
      this.relay.log('debug', 'relay: write stalled, closing', { conn: this.id, stalled_ms: stalled, queued_frames: this.pendingFrames });
      this.relay.drop('closed', this.pendingFrames);
      this.discardWaiting();
      this.closing = true;
      this.relay.leave(this);
      this.ws.terminate();
    });
  }

  onMessage(data, isBinary) {
    if (this.closing) return; // anything after Leave or an error is discarded
    this.lastHeard = Date.now();
    if (!isBinary) {
      this.fail(p.E.BadFrame, 'text message; relay frames are binary', 'bad_frame');
      return;
    }
    const b = data; // binaryType 'nodebuffer': one Buffer per message
    if (b.length > p.MAX_FRAME) {
      this.fail(p.E.FrameTooLarge, `frame larger than ${p.MAX_FRAME} bytes`, 'bad_frame');
      return;
    }
    if (!this.established) {
      this.handshake(b);
      return;
    }
    let f;
    try {
      f = p.parseClientFrame(b);
    } catch (e) {
      this.fail(e.code || p.E.BadFrame, e.message || String(e));
      return;
    }
    switch (f.type) {
      case p.T.Leave:
        this.leave();
        return;
      // Charged for what the relay queues: the frame as delivered, once per
      // receiver, plus per-frame overhead (p.charge). A Broadcast to n
      // members costs n times a Send, as it costs the relay.
      case p.T.Send:
        if (!this.allow(p.charge(b.length, 1))) return;
        this.relay.unicast(this, f.key, p.keyed(p.T.Recv, this.key, f.payload), f.payload.length);
        return;
      case p.T.Broadcast:
        if (!this.allow(p.charge(p.KEY_SIZE + b.length, this.relay.fanout(this)))) return;
        this.relay.broadcast(this, p.keyed(p.T.BroadcastRecv, this.key, f.payload), f.payload.length);
        return;
    }
  }

  handshake(b) {
    const r = this.relay;
    let ch;
    try {
      ch = p.parseClientHello(b);
    } catch (e) {
      this.fail(p.E.BadFrame, e.message, 'bad_frame');
      return;
    }
    const refusal = p.verifyClientHello(r.keys, this.challenge, ch);
    if (refusal) {
      this.fail(refusal.code, refusal.message, refusal.result);
      return;
    }
    this.established = true;
    this.key = ch.key;
    this.keyHex = ch.key.toString('hex');
    this.rv = ch.rv;
    this.rvHex = ch.rv.toString('hex');
    if (r.draining) {
      this.fail(p.E.ServerShutdown, 'relay draining, connect to another instance', 'shutdown');
      return;
    }
    const refused = r.join(this);
    if (refused) {
      this.fail(refused.code, refused.msg, refused.result);
      return;
    }
    r.count('handshakes', 'ok');
    r.log('debug', 'relay: connection established', { conn: this.id, peer: this.keyHex.slice(0, 8) });
    if (this.cfg.maxConnLifetimeMs > 0) {
      this.after(this.cfg.maxConnLifetimeMs, () => this.drain(this.cfg.drainGraceMs));
    }
  }

  // allow charges n bytes to the token bucket. A charge above the burst
  // (a Broadcast into a large rendezvous) needs a full bucket and leaves it
  // in debt, so the rate holds on average whatever the frame (the Go relay's
  // byteBudget). Over the limit the frame is dropped, and now and then the
  // client is told.
  allow(n) {
    if (this.cfg.rateBytesPerSec <= 0) return true;
    const now = Date.now();
    this.tokens = Math.min(this.cfg.rateBurstBytes, this.tokens + (now - this.tokensAt) * this.cfg.rateBytesPerSec / 1000);
    this.tokensAt = now;
    if (this.tokens >= Math.min(n, this.cfg.rateBurstBytes)) {
      this.tokens -= n;
      this.relay.metrics.charged += n;
      return true;
    }
    this.relay.drop('rate_limited', 1);
    if (now - this.lastRateNotice >= RATE_NOTICE_INTERVAL_MS) {
      this.lastRateNotice = now;
      this.push(p.errorFrame(p.E.RateLimited, `over ${this.cfg.rateBytesPerSec} bytes/s (a frame costs its size plus ${p.FRAME_OVERHEAD} bytes, once per receiver): frames dropped`), true);
    }
    return false;
  }

  // drain asks the client to reconnect within grace, then closes it.
  drain(graceMs) {
    if (this.closing) return;
    if (!this.established) {
      this.fail(p.E.ServerShutdown, 'relay draining, connect to another instance');
      return;
    }
    if (this.drained) return; // its first deadline stands
    this.drained = true;
    this.push(p.drain(graceMs), true);
    this.after(graceMs, () => this.fail(p.E.ServerShutdown, 'drain deadline passed'));
  }

  // leave: the client moved on. Stop routing to this connection at once;
  // ws writes what is queued before the close frame, so nothing queued is
  // lost.
  leave() {
    if (this.closing) return;
    this.closing = true;
    this.relay.leave(this);
    // Everything queued before Leave reaches the client: what still waits
    // in the snapshot and behind it goes to ws now, ahead of the close.
    if (this.snap) {
      const sn = this.snap;
      for (; sn.i < sn.keys.length; sn.i++) {
        if (sn.keys[sn.i] !== sn.skip) this.send(p.keyed(p.T.PeerPresent, Buffer.from(sn.keys[sn.i], 'hex')));
      }
      this.endSnapshot();
    }
    this.ws.close(1000, 'leave');
    this.after(this.cfg.writeTimeoutMs, () => this.ws.terminate());
  }

  // discardWaiting drops the rest of a streaming snapshot and the frames
  // behind it (counted as closed): the connection is ending and none of it
  // will be written.
  discardWaiting() {
    if (this.backlog) this.relay.drop('closed', this.backlog.length);
    this.snap = null;
    this.backlog = null;
    this.backlogBytes = 0;
  }

  // fail ends the connection with a fatal Error frame.
  fail(code, msg, handshakeResult) {
    if (this.closing) return;
    this.closing = true;
    // What waits is discarded, as after any fatal error.
    this.discardWaiting();
    if (!this.established || handshakeResult) this.relay.count('handshakes', handshakeResult || 'shutdown');
    this.relay.leave(this);
    this.relay.log('debug', 'relay: connection failed', { conn: this.id, code, reason: msg });
    if (this.ws.readyState === 1) {
      this.ws.send(p.errorFrame(code, msg), { binary: true });
      this.ws.close(p.closeStatus(code), cutReason(msg));
    }
    // A peer that never answers the close must not hold the socket.
    this.after(this.cfg.writeTimeoutMs, () => this.ws.terminate());
  }

  onClose() {
    if (!this.established && !this.closing) this.relay.count('handshakes', 'disconnected');
    this.closing = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.relay.leave(this);
    this.relay.untrack(this);
  }
}
