// The relay: HTTP endpoints, admission (limits checked before the WebSocket
// upgrade), rendezvous rooms, routing and presence, drain. The same
// behaviour as the Go relay (relayserver/), for hosts that run Node.js.

import { WebSocketServer } from 'ws';
import * as p from './proto.js';
import { Conn, PUSHED } from './conn.js';
import { sourceOf, SourceLimits } from './sources.js';

// Defaults, the same as relayserver.Config's zero value; each bounds what
// one client can cost the relay (docs/protocol.md §1.8).
export const DEFAULTS = Object.freeze({
  maxConnsPerKey: 4, // make-before-break twice over
  maxConns: 50000,
  sendQueueFrames: 512, // about half a second of a busy tunnel; then drop like a router
  sendQueueBytes: 4 << 20, // 64 full-size frames
  rateBytesPerSec: 64 << 20, // 0 or less: unlimited
  rateBurstBytes: 8 << 20,
  handshakeTimeoutMs: 10000,
  pingIntervalMs: 20000, // below the 30-60 s idle cut of load balancers and proxies
  idleTimeoutMs: 60000, // three pings unanswered
  writeTimeoutMs: 10000, // a frame (or a close) not written in this time cuts the connection
  maxConnLifetimeMs: 0, // 0: unlimited
  drainGraceMs: 5000,
  maxConnsPerIP: 500, // 0 or less: unlimited
  handshakeRatePerIP: 20, // 0 or less: unlimited
  handshakeBurstPerIP: 100,
  // maxConnsPer56/48, handshakeRatePer56/48, handshakeBurstPer56/48: unset
  // means 2x (/56) and 4x (/48) the per-address value (sources.js).
  maxMembersPerRendezvous: 1024, // the mesh layer's member limit; keeps a rendezvous's cost linear
  trustProxyHeaders: false,
});

// MAX_REMOTE_MEMBERS is the backplane's cap on the remote view of one
// rendezvous (backplane.js); the member cap cannot exceed it.
const MAX_MEMBERS_LIMIT = 16 << 10;
// A PeerPresent frame, what a snapshot costs per key.
const KEY_FRAME_SIZE = 1 + p.KEY_SIZE;

// wsMaxPayload is what ws buffers of one message before refusing it. Twice
// MAX_FRAME lets the relay answer a message up to that size with the
// protocol's ErrFrameTooLarge frame; a longer one is refused by ws while it
// reads the header, with close 1009 but no Error frame. It also bounds the
// memory one connection can make the relay hold for a message.
const WS_MAX_PAYLOAD = 2 * p.MAX_FRAME;
// shutdownSlackMs is added to the drain grace for the closes to finish.
const SHUTDOWN_SLACK_MS = 5000;

const HANDSHAKE_RESULTS = ['ok', 'bad_frame', 'bad_version', 'auth_failed', 'too_many_conns', 'rendezvous_full', 'timeout',
  'shutdown', 'disconnected', 'refused_full', 'refused_draining', 'refused_ip_conns', 'refused_ip_rate'];
const DROP_REASONS = ['no_such_peer', 'queue_full', 'rate_limited', 'closed'];

export class Relay {
  constructor(cfg = {}, { keys, logger } = {}) {
    this.cfg = { ...DEFAULTS, ...cfg };
    if (this.cfg.rateBurstBytes < p.MAX_FRAME) this.cfg.rateBurstBytes = p.MAX_FRAME; // never below one frame
    if (this.cfg.sendQueueBytes < p.MAX_FRAME) throw new Error(`sendQueueBytes ${this.cfg.sendQueueBytes} is below one frame`);
    if (this.cfg.pingIntervalMs >= this.cfg.idleTimeoutMs) throw new Error('pingIntervalMs must be below idleTimeoutMs');
    const mm = this.cfg.maxMembersPerRendezvous;
    if (!(mm >= 1 && mm <= MAX_MEMBERS_LIMIT)) throw new Error(`maxMembersPerRendezvous ${mm} is not between 1 and ${MAX_MEMBERS_LIMIT}`);
    if (mm * KEY_FRAME_SIZE > this.cfg.sendQueueBytes / 2) {
      throw new Error(`a snapshot of maxMembersPerRendezvous ${mm} keys exceeds half of sendQueueBytes ${this.cfg.sendQueueBytes}`);
    }
    this.keys = keys || p.newKeyPair();
    this.log = logger || (() => {});
    this.nextID = 0;
    this.conns = new Set();
    this.rooms = new Map(); // rendezvous hex -> Room
    this.draining = false;
    this.backplane = null; // set by attachBackplane
    this.seq = 0; // numbers remote presence events (see setRemote)
    this.sources = new SourceLimits(this.cfg);
    this.metrics = { handshakes: {}, drops: {}, frames: { unicast: 0, broadcast: 0 }, bytes: { unicast: 0, broadcast: 0 }, charged: 0 };
    for (const r of HANDSHAKE_RESULTS) this.metrics.handshakes[r] = 0;
    for (const r of DROP_REASONS) this.metrics.drops[r] = 0;

    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      // Payloads are encrypted: compression costs CPU and gains nothing.
      perMessageDeflate: false,
      maxPayload: WS_MAX_PAYLOAD,
      // v1 only when v2 is not offered, to tell an old client to upgrade.
      handleProtocols: (protocols) => {
        if (protocols.has(p.SUBPROTOCOL)) return p.SUBPROTOCOL;
        return protocols.has(p.SUBPROTOCOL_V1) ? p.SUBPROTOCOL_V1 : false;
      },
    });
    const lifetimeSecs = this.cfg.maxConnLifetimeMs > 0 ? Math.max(1, Math.floor(this.cfg.maxConnLifetimeMs / 1000)) : 0;
    this.welcome = p.welcome(p.MAX_PAYLOAD, this.cfg.rateBytesPerSec > 0 ? Math.min(this.cfg.rateBytesPerSec, 0xffffffff) : 0, lifetimeSecs);
    // One timer pings every connection and cuts the silent ones.
    this.pinger = setInterval(() => this.pingAll(), this.cfg.pingIntervalMs);
    this.pinger.unref();
    this.gone = null; // resolves when the last connection closes, while draining
  }

  count(what, label) { this.metrics[what][label] = (this.metrics[what][label] || 0) + 1; }
  drop(reason, n) { if (n > 0) this.metrics.drops[reason] += n; }
  forwarded(kind, frames, payloadBytes) {
    this.metrics.frames[kind] += frames;
    this.metrics.bytes[kind] += frames * payloadBytes;
  }

  // attach installs the relay's handlers on an http.Server. It serves no
  // /metrics: those are for the operator, on a listener of their own
  // (attachMetrics), never where clients connect.
  attach(server) {
    server.on('request', (req, res) => this.onRequest(req, res));
    server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
    server.headersTimeout = 10000; // slowloris clients that never finish a request
    server.requestTimeout = 30000;
    server.keepAliveTimeout = 120000;
    server.maxHeadersCount = 100;
  }

  onRequest(req, res) {
    const path = (req.url || '').split('?')[0];
    const text = (status, body, headers = {}) => {
      res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...headers });
      res.end(body + '\n');
    };
    if (path === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
      text(this.draining ? 503 : 200, this.draining ? 'draining' : 'ok');
    } else if (path === p.PATH) {
      text(426, `plurenet relay: this endpoint speaks WebSocket subprotocol ${p.SUBPROTOCOL}`, { Upgrade: 'websocket' });
    } else {
      text(404, 'not found');
    }
  }

  // attachMetrics serves GET /metrics on server, the operator's listener.
  attachMetrics(server) {
    server.headersTimeout = 10000;
    server.requestTimeout = 30000;
    server.on('request', (req, res) => {
      if ((req.url || '').split('?')[0] === '/metrics' && req.method === 'GET') {
        res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(this.metricsText());
        return;
      }
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('not found\n');
    });
  }

  onUpgrade(req, socket, head) {
    const refuse = (status, reason, msg, extra = '') => {
      const body = msg + '\n';
      socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\n${extra}` +
        `Connection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    };
    socket.on('error', () => {}); // a reset during refusal is no concern of ours
    const path = (req.url || '').split('?')[0];
    if (path !== p.PATH) return refuse(404, 'Not Found', 'not found');
    if (String(req.headers.upgrade || '').toLowerCase() !== 'websocket') {
      return refuse(426, 'Upgrade Required', `plurenet relay: this endpoint speaks WebSocket subprotocol ${p.SUBPROTOCOL}`, 'Upgrade: websocket\r\n');
    }
    const offered = String(req.headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim());
    if (!offered.includes(p.SUBPROTOCOL) && !offered.includes(p.SUBPROTOCOL_V1)) {
      return refuse(400, 'Bad Request', `plurenet relay: the client must offer WebSocket subprotocol ${p.SUBPROTOCOL} (another protocol version?)`);
    }
    if (this.draining) {
      this.count('handshakes', 'refused_draining');
      return refuse(503, 'Service Unavailable', 'plurenet relay: draining, connect to another instance');
    }
    const src = sourceOf(req, this.cfg.trustProxyHeaders);
    if (src.length === 0) return refuse(400, 'Bad Request', 'plurenet relay: cannot tell the client address');
    if (!this.sources.allowHandshake(src, Date.now())) {
      this.count('handshakes', 'refused_ip_rate');
      return refuse(429, 'Too Many Requests', 'plurenet relay: too many connection attempts from your address, slow down', 'Retry-After: 1\r\n');
    }
    if (this.conns.size >= this.cfg.maxConns) {
      this.count('handshakes', 'refused_full');
      return refuse(503, 'Service Unavailable', 'plurenet relay: at its connection limit, try another instance');
    }
    const why = this.sources.acquire(src);
    if (why) {
      this.count('handshakes', 'refused_ip_conns');
      return refuse(429, 'Too Many Requests', `plurenet relay: ${why}`);
    }
    let admitted = false;
    // ws answers a malformed upgrade itself (400) without calling back:
    // release the address slot when that socket closes without a Conn.
    socket.once('close', () => {
      if (!admitted) this.sources.release(src);
    });
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      admitted = true;
      this.conns.add(new Conn(this, ws, src));
    });
  }

  untrack(c) {
    if (!this.conns.delete(c)) return;
    this.sources.release(c.src);
    if (this.conns.size === 0 && this.gone) this.gone();
  }

  pingAll() {
    const now = Date.now();
    for (const c of this.conns) {
      if (c.closing) continue;
      if (now - c.lastHeard > this.cfg.idleTimeoutMs) {
        c.fail(p.E.Idle, `nothing heard for ${this.cfg.idleTimeoutMs} ms`);
      } else if (c.ws.readyState === 1) {
        c.ws.ping();
      }
    }
  }

  // Rooms. A room maps each local key to its routable connections, oldest
  // first (the last one gets the key's frames), and, with a backplane, each
  // key on another instance to that instance. A key is present when it is
  // in either; presence frames announce changes of that union. size counts
  // the present keys (the member cap, the broadcast charge); keys caches
  // them for joiners' snapshots, which share one list until it changes.

  room(rvHex, create) {
    let r = this.rooms.get(rvHex);
    if (!r && create) {
      r = { members: new Map(), remote: new Map(), changed: new Map(), size: 0, keys: null };
      this.rooms.set(rvHex, r);
    }
    return r;
  }

  keysOf(r) {
    if (!r.keys) {
      r.keys = [...r.members.keys()];
      for (const k of r.remote.keys()) if (!r.members.has(k)) r.keys.push(k);
    }
    return r.keys;
  }

  // fanout is how many keys other than c's a broadcast by c reaches, here
  // and on other instances: what the rate limit charges it for.
  fanout(c) {
    return c.room ? Math.max(c.room.size - 1, 0) : 0;
  }

  present(r, keyHex) {
    const m = r.members.get(keyHex);
    return (m && m.length > 0) || r.remote.has(keyHex);
  }

  announce(r, frame, skipHex) {
    for (const [k, conns] of r.members) {
      if (k !== skipHex) this.counted(conns[conns.length - 1].push(frame, false));
    }
  }

  counted(res) {
    if (res === PUSHED) return true;
    this.drop(res === 1 ? 'queue_full' : 'closed', 1);
    return false;
  }

  // join makes c routable in its rendezvous and queues Welcome and the
  // presence snapshot on it. It returns null, or why c was refused:
  // {code, msg, result}.
  join(c) {
    const created = !this.rooms.has(c.rvHex);
    const r = this.room(c.rvHex, true);
    const conns = r.members.get(c.keyHex) || [];
    const was = this.present(r, c.keyHex);
    let refusal = null;
    if (conns.length >= this.cfg.maxConnsPerKey) {
      refusal = { code: p.E.TooManyConns, msg: `key already holds ${this.cfg.maxConnsPerKey} connections in this rendezvous`, result: 'too_many_conns' };
    } else if (!was && r.size >= this.cfg.maxMembersPerRendezvous) {
      refusal = this.fullRefusal();
    }
    if (refusal) {
      if (created) this.rooms.delete(c.rvHex);
      return refusal;
    }
    // The snapshot is one entry that the connection streams as its socket
    // drains (conn.js), sharing the room's key list: within the caps, and
    // no per-key copy.
    c.pushJoin(this.welcome, this.keysOf(r), c.keyHex);
    if (conns.length === 0) {
      if (!was) {
        this.announce(r, p.keyed(p.T.PeerPresent, c.key), c.keyHex);
        r.size++;
      }
      if (this.backplane) this.backplane.localJoin(c.rv, c.key);
    }
    r.members.set(c.keyHex, [...conns, c]);
    r.keys = null;
    c.room = r;
    if (created && this.backplane) this.backplane.roomsChanged();
    return null;
  }

  fullRefusal() {
    return { code: p.E.RendezvousFull, msg: `rendezvous already holds ${this.cfg.maxMembersPerRendezvous} member keys`, result: 'rendezvous_full' };
  }

  // evict ends every local connection of a key with RendezvousFull: Redis
  // found the rendezvous full across instances after this instance
  // admitted the key on its own view. It returns how many it ended.
  evict(rvHex, keyHex) {
    const r = this.rooms.get(rvHex);
    const conns = [...((r && r.members.get(keyHex)) || [])];
    const { code, msg } = this.fullRefusal();
    for (const c of conns) c.fail(code, msg);
    return conns.length;
  }

  // leave stops routing to c; its key is announced gone if c was its last
  // routable connection. Calling it again does nothing.
  leave(c) {
    const r = c.room;
    if (!r) return;
    c.room = null;
    const conns = (r.members.get(c.keyHex) || []).filter((x) => x !== c);
    r.keys = null;
    if (conns.length > 0) {
      r.members.set(c.keyHex, conns);
      return;
    }
    r.members.delete(c.keyHex);
    if (this.backplane) this.backplane.localLeave(c.rv, c.key);
    if (r.members.size === 0) {
      // The remote view is kept only for rooms with local members.
      this.rooms.delete(c.rvHex);
      if (this.backplane) this.backplane.roomsChanged();
      return;
    }
    if (!this.present(r, c.keyHex)) {
      r.size--;
      this.announce(r, p.keyed(p.T.PeerGone, c.key), c.keyHex);
    }
  }

  unicast(c, dst, frame, payloadLen) {
    const r = c.room;
    if (!r) return;
    const dstHex = dst.toString('hex');
    const conns = r.members.get(dstHex);
    if (conns && conns.length > 0) {
      if (this.counted(conns[conns.length - 1].push(frame, false))) this.forwarded('unicast', 1, payloadLen);
      return;
    }
    const inst = r.remote.get(dstHex);
    if (inst !== undefined && this.backplane) {
      this.backplane.publishUnicast(inst, c.rv, dst, frame);
      return;
    }
    this.drop('no_such_peer', 1);
  }

  broadcast(c, frame, payloadLen) {
    const r = c.room;
    if (!r) return;
    let n = 0;
    for (const [k, conns] of r.members) {
      if (k !== c.keyHex && this.counted(conns[conns.length - 1].push(frame, false))) n++;
    }
    this.forwarded('broadcast', n, payloadLen);
    if (r.remote.size > 0 && this.backplane) this.backplane.publishBroadcast(c.rv, frame);
  }

  // Called by the backplane for what other instances send.

  deliverLocal(rvHex, dstHex, frame) {
    const r = this.rooms.get(rvHex);
    const conns = r && r.members.get(dstHex);
    if (!conns || conns.length === 0) return false;
    if (this.counted(conns[conns.length - 1].push(frame, false))) this.forwarded('unicast', 1, frame.length - 1 - p.KEY_SIZE);
    return true;
  }

  broadcastFromRemote(rvHex, srcHex, frame) {
    const r = this.rooms.get(rvHex);
    if (!r) return;
    let n = 0;
    for (const [k, conns] of r.members) {
      if (k !== srcHex && this.counted(conns[conns.length - 1].push(frame, false))) n++;
    }
    this.forwarded('broadcast', n, frame.length - 1 - p.KEY_SIZE);
  }

  remoteJoin(rvHex, keyHex, inst, maxRemote) {
    const r = this.rooms.get(rvHex);
    if (!r) return;
    if (!r.remote.has(keyHex) && r.remote.size >= maxRemote) return;
    this.noteChange(r, keyHex);
    const was = this.present(r, keyHex);
    r.remote.set(keyHex, inst);
    if (!was) {
      r.size++;
      r.keys = null;
      this.announce(r, p.keyed(p.T.PeerPresent, Buffer.from(keyHex, 'hex')), keyHex);
    }
  }

  // remoteLeave: an event from an instance that no longer owns the key
  // (another took it since) is stale and ignored.
  remoteLeave(rvHex, keyHex, inst) {
    const r = this.rooms.get(rvHex);
    if (!r || r.remote.get(keyHex) !== inst) return;
    this.noteChange(r, keyHex);
    r.remote.delete(keyHex);
    if (!this.present(r, keyHex)) {
      r.size--;
      r.keys = null;
      this.announce(r, p.keyed(p.T.PeerGone, Buffer.from(keyHex, 'hex')), keyHex);
    }
  }

  noteChange(r, keyHex) {
    r.changed.set(keyHex, ++this.seq);
  }

  // setRemote replaces a room's remote view with a snapshot read after
  // remote event number seq. Keys with a later event keep what the event
  // said: the snapshot is older.
  setRemote(rvHex, view, seq) {
    const r = this.rooms.get(rvHex);
    if (!r) return;
    const old = r.remote;
    const next = new Map();
    for (const [k, inst] of view) if ((r.changed.get(k) || 0) <= seq) next.set(k, inst);
    for (const [k, inst] of old) if ((r.changed.get(k) || 0) > seq) next.set(k, inst);
    for (const [k, s] of r.changed) if (s <= seq) r.changed.delete(k);
    r.remote = next;
    r.size = r.members.size;
    for (const k of next.keys()) if (!r.members.has(k)) r.size++;
    r.keys = null;
    for (const k of old.keys()) {
      if (!next.has(k) && !r.members.has(k)) this.announce(r, p.keyed(p.T.PeerGone, Buffer.from(k, 'hex')), k);
    }
    for (const k of next.keys()) {
      if (!old.has(k) && !r.members.has(k)) this.announce(r, p.keyed(p.T.PeerPresent, Buffer.from(k, 'hex')), k);
    }
  }

  // localKeys: for every rendezvous with members here, their keys (hex).
  localKeys() {
    const out = new Map();
    for (const [rv, r] of this.rooms) out.set(rv, [...r.members.keys()]);
    return out;
  }

  // drain asks every client to reconnect elsewhere: new upgrades and
  // /healthz answer 503, each connection gets a Drain, and after the grace
  // (or once all have left) what remains is closed with ErrServerShutdown.
  async drain() {
    this.draining = true;
    const grace = this.cfg.drainGraceMs;
    for (const c of this.conns) c.drain(grace);
    await this.waitGone(grace);
    for (const c of this.conns) c.fail(p.E.ServerShutdown, 'relay shutting down');
    if (this.backplane) await this.backplane.flush(SHUTDOWN_SLACK_MS);
    await this.waitGone(SHUTDOWN_SLACK_MS);
    for (const c of this.conns) c.ws.terminate();
  }

  waitGone(ms) {
    if (this.conns.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() { clearTimeout(t); self.gone = null; resolve(); }
      this.gone = done;
    });
  }

  close() {
    clearInterval(this.pinger);
    for (const c of this.conns) c.ws.terminate();
  }

  metricsText() {
    const m = this.metrics;
    const lines = [
      '# TYPE plurenet_relay_connections gauge', `plurenet_relay_connections ${this.conns.size}`,
      '# TYPE plurenet_relay_rendezvous gauge', `plurenet_relay_rendezvous ${this.rooms.size}`,
      '# TYPE plurenet_relay_frames_forwarded_total counter',
      ...Object.entries(m.frames).map(([k, v]) => `plurenet_relay_frames_forwarded_total{kind="${k}"} ${v}`),
      '# TYPE plurenet_relay_bytes_forwarded_total counter',
      ...Object.entries(m.bytes).map(([k, v]) => `plurenet_relay_bytes_forwarded_total{kind="${k}"} ${v}`),
      '# TYPE plurenet_relay_drops_total counter',
      ...Object.entries(m.drops).map(([k, v]) => `plurenet_relay_drops_total{reason="${k}"} ${v}`),
      '# TYPE plurenet_relay_handshakes_total counter',
      ...Object.entries(m.handshakes).map(([k, v]) => `plurenet_relay_handshakes_total{result="${k}"} ${v}`),
      '# TYPE plurenet_relay_rate_charged_bytes_total counter', `plurenet_relay_rate_charged_bytes_total ${m.charged}`,
    ];
    if (this.backplane) lines.push(...this.backplane.metricsLines());
    return lines.join('\n') + '\n';
  }
}
