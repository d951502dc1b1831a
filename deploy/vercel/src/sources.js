// Per-address limits, checked before the WebSocket upgrade so that a
// refused attempt costs no key work (docs/operations.md, "Abuse limits").

import net from 'node:net';

// MAX_TRACKED_SOURCES bounds the attempt-rate table: a flood from many
// addresses cannot grow it without limit; beyond it the oldest entry goes.
const MAX_TRACKED_SOURCES = 65536;

// sourceOf is the client address a limit counts: the TCP peer, or with
// trustProxyHeaders the last X-Forwarded-For entry (the one the proxy in
// front of us appended; earlier entries are the client's to choose). An
// IPv6 address counts by its /64, since a host can pick any address in it.
export function sourceOf(req, trustProxyHeaders) {
  let addr = req.socket.remoteAddress || '';
  if (trustProxyHeaders) {
    const xff = String(req.headers['x-forwarded-for'] || '').split(',').map((s) => s.trim()).filter(Boolean);
    if (xff.length > 0) addr = xff[xff.length - 1];
  }
  if (addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7))) addr = addr.slice(7);
  if (net.isIPv4(addr)) return addr;
  if (net.isIPv6(addr)) return prefix64(addr);
  return '';
}

// prefix64 returns the first four groups of an IPv6 address, expanded.
function prefix64(addr) {
  const a = addr.split('%')[0];
  const [head, tail] = a.includes('::') ? a.split('::') : [a, null];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === null ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':') + '::/64';
}

export class SourceLimits {
  constructor(cfg) {
    this.maxConns = cfg.maxConnsPerIP;
    this.rate = cfg.handshakeRatePerIP;
    this.burst = cfg.handshakeBurstPerIP;
    this.conns = new Map(); // source -> open connections
    this.buckets = new Map(); // source -> {tokens, at}
  }

  // allowHandshake charges one attempt to src's token bucket.
  allowHandshake(src, now) {
    if (this.rate <= 0) return true;
    let b = this.buckets.get(src);
    if (!b) {
      if (this.buckets.size >= MAX_TRACKED_SOURCES) this.buckets.delete(this.buckets.keys().next().value);
      b = { tokens: this.burst, at: now };
    } else {
      this.buckets.delete(src); // re-inserted below: the map stays in least-recent order
    }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.rate / 1000);
    b.at = now;
    this.buckets.set(src, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  acquire(src) {
    const n = this.conns.get(src) || 0;
    if (this.maxConns > 0 && n >= this.maxConns) return false;
    this.conns.set(src, n + 1);
    return true;
  }

  release(src) {
    const n = (this.conns.get(src) || 0) - 1;
    if (n <= 0) this.conns.delete(src);
    else this.conns.set(src, n);
  }
}
