// Per-address limits, checked before the WebSocket upgrade so that a
// refused attempt costs no key work (docs/operations.md, "Abuse limits").
//
// An IPv4 client is one address. An IPv6 client can pick any address of the
// prefixes it holds, so it counts against its /64 (a host or LAN), its /56
// (a home's usual delegation) and its /48 (a site), each with its own
// limits, as the Go relay does (relayserver/sourcelimits.go).

import net from 'node:net';

// MAX_TRACKED_SOURCES bounds each attempt-rate table: a flood from many
// addresses cannot grow it without limit; beyond it the oldest entry goes.
const MAX_TRACKED_SOURCES = 65536;

// The prefix lengths an IPv6 client counts by, in the order checked.
const V6_LEVELS = [64, 56, 48];

// sourceOf returns the prefixes a limit counts for the request's client:
// the TCP peer, or with trustProxyHeaders the last X-Forwarded-For entry
// (the one the proxy in front of us appended; earlier entries are the
// client's to choose). One entry for IPv4, three for IPv6; [] when there is
// no usable address.
export function sourceOf(req, trustProxyHeaders) {
  let addr = req.socket.remoteAddress || '';
  if (trustProxyHeaders) {
    const xff = String(req.headers['x-forwarded-for'] || '').split(',').map((s) => s.trim()).filter(Boolean);
    if (xff.length > 0) addr = xff[xff.length - 1];
  }
  if (addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7))) addr = addr.slice(7);
  if (net.isIPv4(addr)) return [addr];
  addr = addr.split('%')[0];
  if (net.isIPv6(addr)) {
    const groups = expand6(addr);
    return V6_LEVELS.map((bits) => prefix6(groups, bits));
  }
  return [];
}

// expand6 returns the eight 16-bit groups of an IPv6 address (an embedded
// IPv4 tail is two groups).
function expand6(a) {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, null];
  const parse = (part) => {
    if (!part) return [];
    const out = [];
    for (const g of part.split(':')) {
      if (net.isIPv4(g)) {
        const o = g.split('.').map(Number);
        out.push((o[0] << 8) | o[1], (o[2] << 8) | o[3]);
      } else {
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const h = parse(head);
  const t = parse(tail);
  return tail === null ? h : [...h, ...Array(8 - h.length - t.length).fill(0), ...t];
}

// prefix6 names the /bits prefix of groups, e.g. "2001:db8:0:100::/56".
function prefix6(groups, bits) {
  const g = groups.slice(0, Math.ceil(bits / 16));
  const rest = bits % 16;
  if (rest !== 0) g[g.length - 1] &= (0xffff << (16 - rest)) & 0xffff;
  return g.map((x) => x.toString(16)).join(':') + `::/${bits}`;
}

// A level is one prefix length's limits: connections open and an attempt
// token bucket per prefix.
class Level {
  constructor(name, maxConns, rate, burst) {
    this.name = name;
    this.maxConns = maxConns; // 0 or less: unlimited
    this.rate = rate; // per second; 0 or less: unlimited
    this.burst = burst;
    this.conns = new Map(); // prefix -> open connections
    this.buckets = new Map(); // prefix -> {tokens, at}, least recently used first
  }

  // tokens returns the bucket of prefix refilled to now (not stored).
  bucket(prefix, now) {
    const b = this.buckets.get(prefix) || { tokens: this.burst, at: now };
    return { tokens: Math.min(this.burst, b.tokens + (now - b.at) * this.rate / 1000), at: now };
  }

  store(prefix, b) {
    this.buckets.delete(prefix); // re-inserted: the map stays in least-recent order
    if (this.buckets.size >= MAX_TRACKED_SOURCES) this.buckets.delete(this.buckets.keys().next().value);
    this.buckets.set(prefix, b);
  }
}

export class SourceLimits {
  constructor(cfg) {
    // Unset /56 and /48 limits are twice and four times the per-address
    // ones (the Go relay's DefaultNet56Factor and DefaultNet48Factor).
    const scaled = (v, base, f) => (v === undefined ? base * f : v);
    this.levels = [
      new Level('address', cfg.maxConnsPerIP, cfg.handshakeRatePerIP, cfg.handshakeBurstPerIP),
      new Level('IPv6 /56', scaled(cfg.maxConnsPer56, cfg.maxConnsPerIP, 2), scaled(cfg.handshakeRatePer56, cfg.handshakeRatePerIP, 2), scaled(cfg.handshakeBurstPer56, cfg.handshakeBurstPerIP, 2)),
      new Level('IPv6 /48', scaled(cfg.maxConnsPer48, cfg.maxConnsPerIP, 4), scaled(cfg.handshakeRatePer48, cfg.handshakeRatePerIP, 4), scaled(cfg.handshakeBurstPer48, cfg.handshakeBurstPerIP, 4)),
    ];
  }

  // allowHandshake charges one attempt to each of src's buckets, or to
  // none: an attempt refused by its /48 costs its /64 nothing.
  allowHandshake(src, now) {
    const next = [];
    for (let i = 0; i < src.length; i++) {
      const lv = this.levels[i];
      if (lv.rate <= 0) continue;
      const b = lv.bucket(src[i], now);
      if (b.tokens < 1) return false;
      b.tokens -= 1;
      next.push([lv, src[i], b]);
    }
    for (const [lv, prefix, b] of next) lv.store(prefix, b);
    return true;
  }

  // acquire counts a connection from src. It returns '' when admitted, or
  // why not: which prefix is at its limit.
  acquire(src) {
    for (let i = 0; i < src.length; i++) {
      const lv = this.levels[i];
      if (lv.maxConns > 0 && (lv.conns.get(src[i]) || 0) >= lv.maxConns) {
        return `your ${lv.name} already holds ${lv.maxConns} connections`;
      }
    }
    for (let i = 0; i < src.length; i++) this.levels[i].conns.set(src[i], (this.levels[i].conns.get(src[i]) || 0) + 1);
    return '';
  }

  release(src) {
    for (let i = 0; i < src.length; i++) {
      const conns = this.levels[i].conns;
      const n = (conns.get(src[i]) || 0) - 1;
      if (n <= 0) conns.delete(src[i]);
      else conns.set(src[i], n);
    }
  }
}
