// Unit tests of the Node relay's connection queue, with a fake socket whose
// writes complete only when the test says: the interleavings a real socket
// on loopback never shows. Run by `node --test test/` (deploy's
// TestNodeUnit runs it with the Go tests).

import test from 'node:test';
import assert from 'node:assert/strict';
import { Relay } from '../src/relay.js';
import { Conn } from '../src/conn.js';
import * as p from '../src/proto.js';

// fakeWS records frames handed to it; complete(n) finishes the oldest n
// writes, as the kernel taking them would.
function fakeWS() {
  return {
    readyState: 1,
    bufferedAmount: 0,
    sent: [],
    pending: [],
    on() {},
    send(frame, _opts, cb) {
      this.sent.push(frame);
      this.pending.push(cb);
    },
    complete(n) {
      for (let i = 0; i < n && this.pending.length > 0; i++) this.pending.shift()();
    },
    completeAll() {
      while (this.pending.length > 0) this.pending.shift()();
    },
    close() {},
    terminate() {},
    ping() {},
  };
}

function keyHex(i) {
  return i.toString(16).padStart(64, '0');
}

function newConn(cfg) {
  const relay = new Relay(cfg);
  const ws = fakeWS();
  const c = new Conn(relay, ws, ['127.0.0.1']);
  for (const t of c.timers) clearTimeout(t); // the handshake timer
  c.timers.clear();
  return { relay, ws, c };
}

test('a snapshot streams within the window and nothing overtakes it', () => {
  const { relay, ws, c } = newConn({});
  const keys = Array.from({ length: 200 }, (_, i) => keyHex(i + 1));
  c.pushJoin(relay.welcome, keys, keyHex(7)); // the joiner's own key is skipped
  assert.ok(ws.sent.length <= 2 + 64, `${ws.sent.length} frames handed to the socket at once`);
  const gone = p.keyed(p.T.PeerGone, Buffer.from(keyHex(1), 'hex'));
  assert.equal(c.push(gone, false), 0);
  while (ws.pending.length > 0) ws.complete(1);
  const types = ws.sent.map((f) => f[0]);
  assert.equal(types[0], p.T.ServerHello);
  assert.equal(types[1], p.T.Welcome);
  const presents = types.slice(2, -1);
  assert.equal(presents.length, 199);
  assert.ok(presents.every((t) => t === p.T.PeerPresent));
  assert.equal(types[types.length - 1], p.T.PeerGone, 'the PeerGone came before the snapshot ended');
  assert.ok(!ws.sent.some((f) => f[0] === p.T.PeerPresent && f.subarray(1).toString('hex') === keyHex(7)));
  relay.close();
});

test('a snapshot counts against the queue caps', () => {
  const { relay, ws, c } = newConn({ sendQueueFrames: 8 });
  const keys = Array.from({ length: 100 }, (_, i) => keyHex(i + 1));
  c.pushJoin(relay.welcome, keys, '');
  assert.ok(c.pendingFrames <= 8, `${c.pendingFrames} frames in flight, cap 8`);
  const data = p.keyed(p.T.Recv, Buffer.alloc(32), Buffer.from('x'));
  let accepted = 0;
  for (let i = 0; i < 20; i++) if (c.push(data, false) === 0) accepted++;
  assert.equal(accepted, 0, 'frames were queued past a full queue');
  ws.completeAll();
  while (ws.pending.length > 0) ws.completeAll();
  assert.equal(c.snap, null);
  assert.equal(c.push(data, false), 0, 'a drained queue refused a frame');
  relay.close();
});

test('a charge above the burst needs a full bucket and leaves a debt', () => {
  const { relay, c } = newConn({ rateBytesPerSec: 1, rateBurstBytes: p.MAX_FRAME });
  assert.equal(c.allow(3 * p.MAX_FRAME), true);
  assert.equal(c.allow(1), false);
  assert.equal(relay.metrics.charged, 3 * p.MAX_FRAME);
  relay.close();
});
