// plurenet relay (protocol v2) as a Node.js HTTP server:
//
//   node src/server.js [--host H] [--port N] [--redis URL] [--max-conn-lifetime 4m] ...
//
// It serves the relay WebSocket at /v1/relay and GET /healthz, GET /metrics
// only on --metrics-listen (never where clients connect), drains on
// SIGTERM/SIGINT, and exports the http.Server as its default export (the
// shape Vercel's Node.js runtime picks up; see README.md).

import http from 'node:http';
import { Relay, DEFAULTS } from './relay.js';
import { Backplane, BP_DEFAULTS } from './backplane.js';
import { PATH } from './proto.js';

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 };

// On Vercel a function (and every WebSocket it holds) ends at its maximum
// duration, 300 s by default. Draining at 240 s leaves the client time to
// reconnect make-before-break (it replaces the connection at about 80% of
// the announced lifetime) well before the platform cuts it.
const VERCEL_DEFAULT_LIFETIME_MS = 240000;

function parseDuration(s, name) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(String(s).trim());
  if (!m) throw new Error(`${name}: "${s}" is not a duration like 500ms, 30s, 4m or 1h`);
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2]]);
}

function parseInt10(s, name, min) {
  if (!/^-?\d+$/.test(String(s))) throw new Error(`${name}: "${s}" is not an integer`);
  const n = Number(s);
  if (n < min) throw new Error(`${name} must be at least ${min}`);
  return n;
}

const USAGE = `usage: node src/server.js [flags]
  --host H                  address to listen on (env HOST; default all interfaces)
  --port N                  TCP port, 0 for any free one (env PORT; default 8080)
  --redis URL               Redis backplane shared with other instances, Node or Go
                            (alias --backplane; env PLURENET_RELAY_BACKPLANE)
  --max-conn-lifetime D     drain each connection at this age, e.g. 4m (env
                            PLURENET_RELAY_MAX_CONN_LIFETIME; default 0 = never, 4m on Vercel)
  --drain-grace D           time a drained client gets to reconnect (default 5s)
  --max-conns-per-key N     connections one key may hold in one rendezvous (default 4)
  --max-conns N             connections this instance accepts (default 50000)
  --max-conns-per-ip N      per client address, 0 = unlimited (default 500)
  --max-conns-per-56 N      per IPv6 /56, 0 = unlimited (default twice --max-conns-per-ip)
  --max-conns-per-48 N      per IPv6 /48, 0 = unlimited (default four times --max-conns-per-ip)
  --max-members N           member keys per rendezvous (default 1024)
  --rate N                  bytes/s accepted per connection, 0 = unlimited (default 64 MiB/s)
  --rate-burst N            burst of --rate in bytes, at least one frame (default 8 MiB)
  --metrics-listen H:P      serve GET /metrics (Prometheus) on this address only (env
                            PLURENET_RELAY_METRICS_LISTEN; default none)
  --write-timeout D         cut a connection whose oldest queued frame waits this long to be
                            written: a client that stopped reading (default 10s)
  --trust-proxy-headers     client address from the last X-Forwarded-For entry (default on Vercel)
  --single-instance         on Vercel, run without a backplane although instances share nothing
                            (env PLURENET_RELAY_SINGLE_INSTANCE=1)
  --log-level L             debug, info, warn or error (default info)`;

export function parseArgs(argv, env) {
  const o = {
    host: env.HOST || '',
    port: env.PORT ? parseInt10(env.PORT, 'PORT', 0) : 8080,
    redis: env.PLURENET_RELAY_BACKPLANE || '',
    metricsListen: env.PLURENET_RELAY_METRICS_LISTEN || '',
    logLevel: env.PLURENET_RELAY_LOG_LEVEL || 'info',
    singleInstance: envFlag(env.PLURENET_RELAY_SINGLE_INSTANCE, 'PLURENET_RELAY_SINGLE_INSTANCE'),
    cfg: {},
  };
  if (env.PLURENET_RELAY_MAX_CONN_LIFETIME) o.cfg.maxConnLifetimeMs = parseDuration(env.PLURENET_RELAY_MAX_CONN_LIFETIME, 'PLURENET_RELAY_MAX_CONN_LIFETIME');
  else if (env.VERCEL) o.cfg.maxConnLifetimeMs = VERCEL_DEFAULT_LIFETIME_MS;
  if (env.VERCEL) o.cfg.trustProxyHeaders = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const val = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case '--host': o.host = val(); break;
      case '--port': o.port = parseInt10(val(), '--port', 0); break;
      case '--redis': case '--backplane': o.redis = val(); break;
      case '--max-conn-lifetime': o.cfg.maxConnLifetimeMs = parseDuration(val(), flag); break;
      case '--drain-grace': o.cfg.drainGraceMs = parseDuration(val(), flag); break;
      case '--max-conns-per-key': o.cfg.maxConnsPerKey = parseInt10(val(), flag, 1); break;
      case '--max-conns': o.cfg.maxConns = parseInt10(val(), flag, 1); break;
      case '--max-conns-per-ip': o.cfg.maxConnsPerIP = parseInt10(val(), flag, 0); break;
      case '--max-conns-per-56': o.cfg.maxConnsPer56 = parseInt10(val(), flag, 0); break;
      case '--max-conns-per-48': o.cfg.maxConnsPer48 = parseInt10(val(), flag, 0); break;
      case '--max-members': o.cfg.maxMembersPerRendezvous = parseInt10(val(), flag, 1); break;
      case '--rate': o.cfg.rateBytesPerSec = parseInt10(val(), flag, 0); break;
      case '--rate-burst': o.cfg.rateBurstBytes = parseInt10(val(), flag, 1); break;
      case '--metrics-listen': o.metricsListen = val(); break;
      case '--write-timeout': o.cfg.writeTimeoutMs = parseDuration(val(), flag); break;
      case '--trust-proxy-headers': o.cfg.trustProxyHeaders = true; break;
      case '--single-instance': o.singleInstance = true; break;
      case '--log-level': o.logLevel = val(); break;
      case '-h': case '--help': throw Object.assign(new Error(USAGE), { usage: true });
      default: throw new Error(`unknown flag ${a}\n${USAGE}`);
    }
  }
  if (o.port > 65535) throw new Error('--port must be below 65536');
  if (!(o.logLevel in LEVELS)) throw new Error(`--log-level: "${o.logLevel}" is not debug, info, warn or error`);
  if (o.cfg.maxConnLifetimeMs > 0 && o.cfg.maxConnLifetimeMs < 1000) throw new Error('--max-conn-lifetime under a second: clients could not plan for it');
  if (o.cfg.drainGraceMs !== undefined && (o.cfg.drainGraceMs <= 0 || o.cfg.drainGraceMs > 0xffffffff)) throw new Error('--drain-grace must be positive and fit the Drain frame');
  if (o.cfg.writeTimeoutMs !== undefined && o.cfg.writeTimeoutMs <= 0) throw new Error('--write-timeout must be positive');
  if (o.redis) checkRedisURL(o.redis);
  if (env.VERCEL && !o.redis && !o.singleInstance) {
    // Vercel runs as many function instances as it likes and they share
    // nothing: without a backplane, members of one mesh that land on
    // different instances never see each other, and nothing says why.
    throw new Error('on Vercel, function instances share nothing: set PLURENET_RELAY_BACKPLANE to a Redis URL ' +
      '(rediss://:PASSWORD@HOST:PORT/0, the password percent-encoded) so that they reach each other, ' +
      'or set PLURENET_RELAY_SINGLE_INSTANCE=1 to run without one anyway');
  }
  if (o.metricsListen) {
    const m = /^(.*):(\d+)$/.exec(o.metricsListen);
    if (!m || Number(m[2]) > 65535) throw new Error(`--metrics-listen: "${o.metricsListen}" is not HOST:PORT`);
    o.metrics = { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
  }
  return o;
}

// envFlag reads a boolean environment variable the way the Go relay's
// settings do: empty is false, anything but a clear true or false is an error.
function envFlag(v, name) {
  if (v === undefined || v === '') return false;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new Error(`${name}: "${v}" is not true or false`);
}

// checkRedisURL refuses a backplane URL ioredis would misread. The URL holds
// the Redis password, so no message repeats it. A password with '/', '?',
// '#' or '@' unencoded (Azure and other managed Redis keys are base64 and
// hold '/' about half the time) ends the authority early: the parser then
// sees part of the password as host or port.
function checkRedisURL(s) {
  const hint = 'a password must be percent-encoded (encodeURIComponent; in Bicep uriComponent()), ' +
    'e.g. rediss://:PASSWORD@HOST:PORT/0 (the URL is not shown because it holds the password)';
  let u;
  try {
    u = new URL(s);
  } catch {
    throw new Error(`--redis / PLURENET_RELAY_BACKPLANE is not a valid URL: ${hint}`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error('--redis / PLURENET_RELAY_BACKPLANE must be a redis:// or rediss:// URL');
  if (!u.hostname) throw new Error(`--redis / PLURENET_RELAY_BACKPLANE has no host: ${hint}`);
  if (!/^(\/\d*)?$/.test(u.pathname)) throw new Error(`--redis / PLURENET_RELAY_BACKPLANE path must be a database number like /0: ${hint}`);
  try {
    decodeURIComponent(u.password);
    decodeURIComponent(u.username);
  } catch {
    throw new Error(`--redis / PLURENET_RELAY_BACKPLANE has a malformed %-escape in its user or password: ${hint}`);
  }
}

function makeLogger(level) {
  const min = LEVELS[level];
  return (lvl, msg, fields = {}) => {
    if (LEVELS[lvl] < min) return;
    process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: lvl.toUpperCase(), msg, ...fields }) + '\n');
  };
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2), process.env);
} catch (err) {
  process.stderr.write(err.message + '\n');
  process.exit(err.usage ? 0 : 2);
}
const log = makeLogger(opts.logLevel);
if (process.env.VERCEL && !opts.redis) {
  log('warn', 'relay: on Vercel without a backplane (--single-instance): members on different function instances never see each other', {});
}
const relay = new Relay(opts.cfg, { logger: log });
if (opts.redis) relay.backplane = new Backplane(relay, opts.redis, BP_DEFAULTS);

const server = http.createServer();
relay.attach(server);
server.on('error', (err) => {
  log('error', 'relay: listen failed', { err: err.message });
  process.exit(1);
});
let metricsServer = null;
if (opts.metrics) {
  metricsServer = http.createServer();
  relay.attachMetrics(metricsServer);
  metricsServer.on('error', (err) => {
    log('error', 'relay: metrics listen failed', { err: err.message });
    process.exit(1);
  });
  metricsServer.listen(opts.metrics.port, opts.metrics.host || undefined, () => {
    const a = metricsServer.address();
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    process.stdout.write(`plurenet relay (node) metrics on http://${host}:${a.port}/metrics\n`);
    listenRelay();
  });
} else {
  listenRelay();
}

// listenRelay opens the relay's own listener, after the metrics one: its
// "listening" line tells scripts the relay is ready, as the Go relay's does.
function listenRelay() {
  server.listen(opts.port, opts.host || undefined, () => {
    const a = server.address();
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    process.stdout.write(`plurenet relay (node) listening on http://${host}:${a.port}${PATH} (relay key ${relay.keys.publicRaw.toString('hex')})\n`);
    log('info', 'relay: serving', {
      addr: `${host}:${a.port}`, backplane: Boolean(opts.redis),
      max_conn_lifetime_ms: relay.cfg.maxConnLifetimeMs, drain_grace_ms: relay.cfg.drainGraceMs ?? DEFAULTS.drainGraceMs,
    });
  });
}

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  log('info', 'relay: draining', { signal, grace_ms: relay.cfg.drainGraceMs });
  await relay.drain();
  if (relay.backplane) await relay.backplane.close();
  relay.close();
  if (metricsServer) {
    metricsServer.close();
    metricsServer.closeAllConnections();
  }
  server.close(() => {
    log('info', 'relay: stopped');
    process.exit(0);
  });
  server.closeAllConnections(); // idle keep-alive health checks
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

export default server;
