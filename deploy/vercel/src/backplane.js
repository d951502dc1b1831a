// Redis backplane: several relay instances (Node or Go) serving one
// rendezvous. It is the Go relay's design (docs/operations.md, "Scaling the
// relay"; relayserver/backplane*.go) byte for byte: the same channel and key
// names, the same message layout and the same Lua scripts (the very files,
// ../backplanelua/*.lua), so Node and Go instances can share one Redis.
//
//   - Local first: frames between members on this instance never touch Redis.
//   - Presence: one hash per rendezvous, key -> owning instance id ‖ expiry
//     (Redis clock, ms); join/leave scripts publish the change atomically;
//     every REFRESH each instance re-syncs its rendezvous, healing lost
//     events and dropping members of dead instances (their entries expire).
//   - Bounded and lossy: a publish that does not fit the queue, or fails, is
//     dropped and counted, like a lost packet.

import crypto from 'node:crypto';
import fs from 'node:fs';
import Redis from 'ioredis';
import * as p from './proto.js';

const PREFIX = 'plurenet:relay:v1:';
const rvChannel = (rvHex) => `${PREFIX}rv:${rvHex}`;
const membersKey = (rvHex) => `${PREFIX}members:${rvHex}`;
const instChannel = (instHex) => `${PREFIX}inst:${instHex}`;

const BP_VERSION = 1;
const BP_JOIN = 1;
const BP_LEAVE = 2;
const BP_UNICAST = 3;
const BP_BROADCAST = 4;
const INSTANCE_SIZE = 16;
const HEADER_SIZE = 1 + 1 + INSTANCE_SIZE + p.RENDEZVOUS_SIZE;
// The largest valid message: a unicast header, key and full-size Recv frame.
const MAX_MESSAGE = HEADER_SIZE + p.KEY_SIZE + p.MAX_FRAME;

export const BP_DEFAULTS = Object.freeze({
  ttlMs: 10000, // a presence entry outlives its last refresh this long
  refreshMs: 3000, // three refreshes per TTL: one late refresh never expires a live member
  queueFrames: 8192, // about 50 ms of a busy instance's cross-instance traffic
  queueBytes: 32 << 20,
});

// MAX_REMOTE_MEMBERS caps the remote view of one rendezvous (16 times the
// mesh layer's member limit), so a hostile Redis writer cannot make us hold
// unbounded state. CTRL_QUEUE bounds presence operations waiting for Redis;
// one lost is repaired by the next sync. CTRL_BATCH and SYNC_BATCH are how
// many go in one pipeline. REDIS_OP_TIMEOUT_MS bounds one command.
const MAX_REMOTE_MEMBERS = 16 << 10;
const CTRL_QUEUE = 16 << 10;
const CTRL_BATCH = 256;
const SYNC_BATCH = 256;
const REDIS_OP_TIMEOUT_MS = 5000;
const RETRY_MAX_MS = 5000;

// The Lua scripts are shared with the Go relay: it embeds the same files
// (deploy/vercel/backplanelua), so Go and Node instances on one Redis run the
// same scripts. They are read once, when this module loads. Each path is a
// literal beside import.meta.url so that Vercel's file tracing sees the files
// and bundles them with the function. A script that needs the time is the
// prelude followed by its own file, as in backplanelua.go. JOIN refuses
// (returns 0) a key new to a rendezvous at the member cap; SYNC returns
// [[field, instance...], [refused field...]].
const PRELUDE = fs.readFileSync(new URL('../backplanelua/prelude.lua', import.meta.url), 'utf8');
const JOIN_LUA = PRELUDE + fs.readFileSync(new URL('../backplanelua/join.lua', import.meta.url), 'utf8');
const LEAVE_LUA = fs.readFileSync(new URL('../backplanelua/leave.lua', import.meta.url), 'utf8');
const SYNC_LUA = PRELUDE + fs.readFileSync(new URL('../backplanelua/sync.lua', import.meta.url), 'utf8');

// SCRIPTS are the scripts as sent to Redis; deploy's Go tests compare them
// with the Go relay's.
export const SCRIPTS = Object.freeze({ join: JOIN_LUA, leave: LEAVE_LUA, sync: SYNC_LUA });

function header(type, origin, rv) {
  return Buffer.concat([Buffer.from([BP_VERSION, type]), origin, rv]);
}

// parseMessage decodes and checks a backplane message. Anything that can
// PUBLISH on the Redis can send us bytes: every size and frame is checked
// as network input. It throws on a bad message.
export function parseMessage(b) {
  if (b.length < HEADER_SIZE) throw new Error(`${b.length} bytes, shorter than a header`);
  if (b.length > MAX_MESSAGE) throw new Error(`${b.length} bytes, over ${MAX_MESSAGE}`);
  if (b[0] !== BP_VERSION) throw new Error(`version ${b[0]}`);
  const m = {
    type: b[1],
    origin: b.subarray(2, 2 + INSTANCE_SIZE).toString('hex'),
    rv: b.subarray(2 + INSTANCE_SIZE, HEADER_SIZE).toString('hex'),
    key: '',
    frame: null,
  };
  const body = b.subarray(HEADER_SIZE);
  switch (m.type) {
    case BP_JOIN:
    case BP_LEAVE:
      if (body.length !== p.KEY_SIZE) throw new Error(`presence body of ${body.length} bytes`);
      m.key = body.toString('hex');
      break;
    case BP_UNICAST:
      if (body.length < p.KEY_SIZE) throw new Error('unicast without destination');
      m.key = body.subarray(0, p.KEY_SIZE).toString('hex');
      m.frame = checkFrame(body.subarray(p.KEY_SIZE), p.T.Recv);
      break;
    case BP_BROADCAST:
      m.frame = checkFrame(body, p.T.BroadcastRecv);
      m.key = m.frame.subarray(1, 1 + p.KEY_SIZE).toString('hex');
      break;
    default:
      throw new Error(`type ${m.type}`);
  }
  return m;
}

function checkFrame(f, type) {
  if (f.length < 1 + p.KEY_SIZE || f.length > p.MAX_FRAME || f[0] !== type) {
    throw new Error(`carried frame is not a well-formed 0x${type.toString(16)} frame`);
  }
  return Buffer.from(f); // own copy: it is queued on sockets after this returns
}

export class Backplane {
  constructor(relay, url, cfg = {}) {
    this.relay = relay;
    this.cfg = { ...BP_DEFAULTS, ...cfg };
    if (this.cfg.refreshMs * 2 > this.cfg.ttlMs) throw new Error('backplane refresh must be at most half the TTL');
    this.id = crypto.randomBytes(INSTANCE_SIZE);
    this.idHex = this.id.toString('hex');
    this.log = relay.log;
    const opts = {
      // Commands fail at once while Redis is unreachable instead of piling up
      // in an unbounded offline queue; the next sync repairs presence.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: REDIS_OP_TIMEOUT_MS,
      retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), RETRY_MAX_MS),
      enableAutoPipelining: true,
    };
    this.cmd = new Redis(url, opts);
    // The subscriber keeps its (small, bounded by our rooms) offline queue so
    // subscriptions made while Redis is down take effect when it returns;
    // ioredis resubscribes by itself after a reconnect. No ready check on
    // it: a SUBSCRIBE that reaches the socket while ioredis's INFO ready
    // check is pending puts the connection in subscriber mode, the check
    // fails and every subscription is lost (seen with ioredis 5.11).
    this.sub = new Redis(url, { ...opts, enableOfflineQueue: true, enableAutoPipelining: false, commandTimeout: undefined, enableReadyCheck: false });
    for (const [name, lua] of [['plurenetJoin', JOIN_LUA], ['plurenetLeave', LEAVE_LUA], ['plurenetSync', SYNC_LUA]]) {
      this.cmd.defineCommand(name, { numberOfKeys: 1, lua });
    }
    this.up = false;
    this.cmd.on('error', (err) => this.setUp(false, err));
    this.sub.on('error', () => {});
    // After an outage, pub/sub messages sent meanwhile are lost: sync all.
    this.cmd.on('ready', () => { this.setUp(true); this.needSync = true; this.poke(); });
    this.sub.on('ready', () => { this.needSync = true; this.poke(); });
    this.sub.on('messageBuffer', (_channel, message) => this.handle(message));

    this.ops = [];
    this.needSync = false;
    this.roomsDirty = false;
    this.tickDue = false;
    this.subscribed = new Set();
    this.pubFrames = 0;
    this.pubBytes = 0;
    this.closed = false;
    this.m = {
      published: { unicast: 0, broadcast: 0 },
      received: { unicast: 0, broadcast: 0, join: 0, leave: 0 },
      drops: { queue_full: 0, redis_error: 0, no_such_peer: 0, bad_message: 0, presence_queue_full: 0 },
      ops: { join: 0, leave: 0, sync: 0 },
      opErrors: 0,
      evicted: 0,
    };
    this.wakeResolve = null;
    this.tick = setInterval(() => { this.tickDue = true; this.poke(); }, this.cfg.refreshMs);
    this.sub.subscribe(instChannel(this.idHex)).catch(() => {});
    this.loopDone = this.loop();
  }

  setUp(up, err) {
    if (this.up === up) return;
    this.up = up;
    if (up) this.log('info', 'relay: backplane connected', { instance: this.idHex });
    else if (!this.closed) this.log('warn', 'relay: backplane lost Redis; cross-instance frames are dropped until it returns', { err: String(err && err.message) });
  }

  poke() {
    if (this.wakeResolve) {
      const r = this.wakeResolve;
      this.wakeResolve = null;
      r();
    }
  }

  // Hooks the relay calls; they never block.

  localJoin(rv, key) { this.queueOp({ join: true, rv, key }); }
  localLeave(rv, key) { this.queueOp({ join: false, rv, key }); }
  roomsChanged() { this.roomsDirty = true; this.poke(); }

  queueOp(op) {
    if (this.ops.length >= CTRL_QUEUE) {
      this.m.drops.presence_queue_full++;
      this.needSync = true;
    } else {
      this.ops.push(op);
    }
    this.poke();
  }

  // flush resolves once every presence operation queued so far has reached
  // Redis (or failed), or after ms.
  flush(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.ops.push({ flush: () => { clearTimeout(t); resolve(); } });
      this.poke();
    });
  }

  publishUnicast(instHex, rv, dst, frame) {
    const msg = Buffer.concat([header(BP_UNICAST, this.id, rv), dst, frame]);
    this.publish(instChannel(instHex), msg, 'unicast');
  }

  publishBroadcast(rv, frame) {
    const msg = Buffer.concat([header(BP_BROADCAST, this.id, rv), frame]);
    this.publish(rvChannel(rv.toString('hex')), msg, 'broadcast');
  }

  publish(channel, msg, kind) {
    if (this.pubFrames >= this.cfg.queueFrames || this.pubBytes + msg.length > this.cfg.queueBytes) {
      this.m.drops.queue_full++;
      return;
    }
    this.pubFrames++;
    this.pubBytes += msg.length;
    this.cmd.publish(channel, msg).then(
      () => { this.m.published[kind]++; },
      () => { this.m.drops.redis_error++; },
    ).finally(() => { this.pubFrames--; this.pubBytes -= msg.length; });
  }

  handle(raw) {
    let m;
    try {
      m = parseMessage(raw);
    } catch (err) {
      this.m.drops.bad_message++;
      this.log('debug', 'relay: backplane: dropped a message', { err: err.message });
      return;
    }
    if (m.origin === this.idHex) return; // our own event, echoed by the rendezvous channel
    switch (m.type) {
      case BP_JOIN:
        this.m.received.join++;
        this.relay.remoteJoin(m.rv, m.key, m.origin, MAX_REMOTE_MEMBERS);
        break;
      case BP_LEAVE:
        this.m.received.leave++;
        this.relay.remoteLeave(m.rv, m.key, m.origin);
        break;
      case BP_UNICAST:
        this.m.received.unicast++;
        if (!this.relay.deliverLocal(m.rv, m.key, m.frame)) this.m.drops.no_such_peer++;
        break;
      case BP_BROADCAST:
        this.m.received.broadcast++;
        this.relay.broadcastFromRemote(m.rv, m.key, m.frame);
        break;
    }
  }

  // loop owns presence in Redis and the rendezvous subscriptions, one step
  // at a time: queued joins and leaves, then subscriptions matching the
  // rooms with members here, then a sync of the new rooms (or of all every
  // refresh and after an outage).
  async loop() {
    while (!this.closed) {
      if (this.ops.length === 0 && !this.tickDue && !this.needSync && !this.roomsDirty) {
        await new Promise((resolve) => { this.wakeResolve = resolve; });
        if (this.closed) return;
      }
      try {
        const ops = this.ops.splice(0, CTRL_BATCH);
        if (ops.length > 0) await this.runOps(ops);
        const full = this.tickDue || this.needSync;
        this.tickDue = false;
        this.needSync = false;
        this.roomsDirty = false;
        const fresh = await this.resubscribe();
        if (full) await this.sync(null);
        else if (fresh.length > 0) await this.sync(fresh);
      } catch (err) {
        this.log('debug', 'relay: backplane step failed', { err: String(err && err.message) });
      }
    }
  }

  async runOps(ops) {
    const pl = this.cmd.pipeline();
    const sent = []; // the operation behind each pipeline reply
    const ttl = this.cfg.ttlMs;
    const cap = this.relay.cfg.maxMembersPerRendezvous;
    for (const op of ops) {
      if (op.flush) continue;
      sent.push(op);
      const rvHex = op.rv.toString('hex');
      if (op.join) {
        pl.plurenetJoin(membersKey(rvHex), op.key, this.id, ttl, rvChannel(rvHex), Buffer.concat([header(BP_JOIN, this.id, op.rv), op.key]), cap);
        this.m.ops.join++;
      } else {
        pl.plurenetLeave(membersKey(rvHex), op.key, this.id, rvChannel(rvHex), Buffer.concat([header(BP_LEAVE, this.id, op.rv), op.key]));
        this.m.ops.leave++;
      }
    }
    if (sent.length > 0) {
      const res = await this.exec(pl);
      res.forEach(([err, reply], i) => {
        if (!err && i < sent.length && sent[i].join && Number(reply) === 0) this.refused(sent[i].rv.toString('hex'), sent[i].key.toString('hex'));
      });
    }
    for (const op of ops) if (op.flush) op.flush();
  }

  // refused evicts a key's local connections: Redis found its rendezvous
  // at the member cap across instances.
  refused(rvHex, keyHex) {
    const n = this.relay.evict(rvHex, keyHex);
    if (n > 0) {
      this.m.evicted += n;
      this.log('debug', 'relay: backplane: rendezvous full across instances, member evicted', { peer: keyHex.slice(0, 8), conns: n });
    }
  }

  async exec(pl) {
    try {
      const res = await pl.exec();
      for (const [err] of res || []) if (err) this.m.opErrors++;
      return res || [];
    } catch (err) {
      this.m.opErrors++;
      this.setUp(false, err);
      return [];
    }
  }

  // resubscribe makes the rendezvous subscriptions match the rooms with
  // members here and returns those newly subscribed. It subscribes before
  // their sync, so that no join in between is missed.
  async resubscribe() {
    const local = this.relay.rooms;
    const add = [];
    const fresh = [];
    for (const rvHex of local.keys()) {
      if (!this.subscribed.has(rvHex)) {
        this.subscribed.add(rvHex);
        fresh.push(rvHex);
        add.push(rvChannel(rvHex));
      }
    }
    const drop = [];
    for (const rvHex of this.subscribed) {
      if (!local.has(rvHex)) {
        this.subscribed.delete(rvHex);
        drop.push(rvChannel(rvHex));
      }
    }
    // Errors need no handling: ioredis keeps the channels and subscribes
    // again when it reconnects, and a full sync follows.
    if (add.length > 0) await withTimeout(this.sub.subscribe(...add)).catch(() => {});
    if (drop.length > 0) await withTimeout(this.sub.unsubscribe(...drop)).catch(() => {});
    return fresh;
  }

  // sync refreshes this instance's entries and reloads the remote views of
  // the given rendezvous, or of all with members here when only is null.
  async sync(only) {
    const local = this.relay.localKeys();
    const rvs = only || [...local.keys()];
    for (let i = 0; i < rvs.length; i += SYNC_BATCH) {
      const chunk = rvs.slice(i, i + SYNC_BATCH);
      const seq = this.relay.seq;
      const pl = this.cmd.pipeline();
      for (const rvHex of chunk) {
        const rv = Buffer.from(rvHex, 'hex');
        const keys = (local.get(rvHex) || []).map((k) => Buffer.from(k, 'hex'));
        pl.plurenetSyncBuffer(membersKey(rvHex), this.id, this.cfg.ttlMs, rvChannel(rvHex), header(BP_JOIN, this.id, rv), this.relay.cfg.maxMembersPerRendezvous, ...keys);
        this.m.ops.sync++;
      }
      const res = await this.exec(pl);
      res.forEach(([err, reply], j) => {
        if (err || j >= chunk.length) return;
        const parsed = parseSyncReply(reply);
        if (!parsed) {
          this.m.drops.bad_message++;
          return;
        }
        this.relay.setRemote(chunk[j], parsed.view, seq);
        for (const k of parsed.refused) this.refused(chunk[j], k);
      });
      if (this.closed) return;
    }
  }

  metricsLines() {
    const m = this.m;
    return [
      '# TYPE plurenet_relay_backplane_published_total counter',
      ...Object.entries(m.published).map(([k, v]) => `plurenet_relay_backplane_published_total{kind="${k}"} ${v}`),
      '# TYPE plurenet_relay_backplane_received_total counter',
      ...Object.entries(m.received).map(([k, v]) => `plurenet_relay_backplane_received_total{kind="${k}"} ${v}`),
      '# TYPE plurenet_relay_backplane_drops_total counter',
      ...Object.entries(m.drops).map(([k, v]) => `plurenet_relay_backplane_drops_total{reason="${k}"} ${v}`),
      '# TYPE plurenet_relay_backplane_presence_ops_total counter',
      ...Object.entries(m.ops).map(([k, v]) => `plurenet_relay_backplane_presence_ops_total{op="${k}"} ${v}`),
      '# TYPE plurenet_relay_backplane_presence_errors_total counter',
      `plurenet_relay_backplane_presence_errors_total ${m.opErrors}`,
      '# TYPE plurenet_relay_backplane_evicted_total counter',
      `plurenet_relay_backplane_evicted_total ${m.evicted}`,
      '# TYPE plurenet_relay_backplane_up gauge',
      `plurenet_relay_backplane_up ${this.up ? 1 : 0}`,
    ];
  }

  // close stops at once, as a crash would: this instance's entries expire
  // in Redis after the TTL. Drain (which flushes first) is the graceful way.
  async close() {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.tick);
    this.poke();
    await this.loopDone;
    this.sub.disconnect();
    this.cmd.disconnect();
  }
}

// parseSyncReply checks the sync script's answer: a list of pairs of a
// 32-byte key and a 16-byte instance id, at most MAX_REMOTE_MEMBERS of them,
// and a list of refused local keys. It returns {view: Map of key hex ->
// instance hex, refused: [key hex]}, or null when malformed.
function parseSyncReply(v) {
  if (!Array.isArray(v) || v.length !== 2) return null;
  const [pairs, refusedList] = v;
  if (!Array.isArray(pairs) || !Array.isArray(refusedList)) return null;
  if (pairs.length % 2 !== 0 || pairs.length / 2 > MAX_REMOTE_MEMBERS || refusedList.length > MAX_REMOTE_MEMBERS) return null;
  const view = new Map();
  for (let i = 0; i < pairs.length; i += 2) {
    const f = pairs[i];
    const inst = pairs[i + 1];
    if (!Buffer.isBuffer(f) || !Buffer.isBuffer(inst) || f.length !== p.KEY_SIZE || inst.length !== INSTANCE_SIZE) return null;
    view.set(f.toString('hex'), inst.toString('hex'));
  }
  const refused = [];
  for (const f of refusedList) {
    if (!Buffer.isBuffer(f) || f.length !== p.KEY_SIZE) return null;
    refused.push(f.toString('hex'));
  }
  return { view, refused };
}

function withTimeout(promise) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error('redis: timed out')), REDIS_OP_TIMEOUT_MS); }),
  ]).finally(() => clearTimeout(t));
}
