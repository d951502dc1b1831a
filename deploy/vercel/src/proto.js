// Relay protocol v2 wire codec and handshake checks (docs/protocol.md,
// Part 1), the Node.js twin of internal/relayproto. Every WebSocket binary
// message is one frame: a type byte and a body whose layout the type fixes.
// Multi-byte integers are big-endian.

import crypto from 'node:crypto';

export const SUBPROTOCOL = 'plurenet-relay.v2';
// The v1 subprotocol is accepted only to tell an old client, in one Error
// frame, to upgrade (conn.js).
export const SUBPROTOCOL_V1 = 'plurenet-relay.v1';
// The path's "v1" names the endpoint, not the protocol version.
export const PATH = '/v1/relay';
export const VERSION = 2;
export const V1_CLIENT_MESSAGE = `this relay speaks ${SUBPROTOCOL}; upgrade plurenet`;

export const KEY_SIZE = 32;
export const ADMISSION_KEY_SIZE = 32;
export const RENDEZVOUS_SIZE = 32;
export const CHALLENGE_SIZE = 32;
export const MAC_SIZE = 32;
export const SIGNATURE_SIZE = 64;
// 64 KiB holds any WireGuard packet or sealed mesh message with room to
// spare, without letting one message pin much relay memory.
export const MAX_PAYLOAD = 64 * 1024;
export const MAX_FRAME = 1 + KEY_SIZE + MAX_PAYLOAD;
export const MAX_ERROR_MESSAGE = 200;
// FRAME_OVERHEAD is what the rate limit charges per frame on top of its
// length (relayproto.FrameOverhead): the wire headers and per-write work one
// frame costs. charge is what a frame of frameLen bytes (as delivered)
// costs when it reaches receivers members, at least one copy.
export const FRAME_OVERHEAD = 64;
export function charge(frameLen, receivers) {
  return Math.max(receivers, 1) * (frameLen + FRAME_OVERHEAD);
}

const CLIENT_HELLO_SIZE = 1 + 1 + KEY_SIZE + ADMISSION_KEY_SIZE + RENDEZVOUS_SIZE + MAC_SIZE + SIGNATURE_SIZE;

export const T = Object.freeze({
  ServerHello: 0x01,
  ClientHello: 0x02,
  Welcome: 0x03,
  Send: 0x10,
  Recv: 0x11,
  Broadcast: 0x12,
  BroadcastRecv: 0x13,
  PeerPresent: 0x20,
  PeerGone: 0x21,
  Error: 0x30,
  Drain: 0x31,
  Leave: 0x32,
});

// Error codes (docs/protocol.md §1.7). All but RateLimited are fatal.
export const E = Object.freeze({
  BadFrame: 1,
  FrameTooLarge: 2,
  AuthFailed: 3,
  BadVersion: 4,
  TooManyConns: 5,
  RateLimited: 6,
  HandshakeSlow: 7,
  ServerShutdown: 8,
  Idle: 9,
  RendezvousFull: 10,
});

// closeStatus is the WebSocket close status sent after a fatal code.
export function closeStatus(code) {
  switch (code) {
    case E.FrameTooLarge: return 1009;
    case E.BadFrame:
    case E.BadVersion: return 1002;
    case E.TooManyConns:
    case E.RendezvousFull: return 1013;
    case E.ServerShutdown: return 1001;
    default: return 1008;
  }
}

export function serverHello(serverKey, challenge) {
  return Buffer.concat([Buffer.from([T.ServerHello, VERSION, 0]), serverKey, challenge]);
}

// parseClientHello returns {version, key, admission, rv, mac, sig} or
// throws with a message saying what is wrong (the relay answers
// ErrBadFrame). It checks the layout only; verifyClientHello checks the rest.
export function parseClientHello(b) {
  if (b.length === 0 || b[0] !== T.ClientHello) {
    throw new Error(`expected ClientHello, got frame type 0x${b.length ? b[0].toString(16).padStart(2, '0') : '??'}`);
  }
  if (b.length !== CLIENT_HELLO_SIZE) {
    throw new Error(`ClientHello of ${b.length} bytes, want ${CLIENT_HELLO_SIZE}`);
  }
  let o = 2;
  const take = (n) => Buffer.from(b.subarray(o, (o += n)));
  return {
    version: b[1],
    key: take(KEY_SIZE),
    admission: take(ADMISSION_KEY_SIZE),
    rv: take(RENDEZVOUS_SIZE),
    mac: take(MAC_SIZE),
    sig: take(SIGNATURE_SIZE),
  };
}

export function welcome(maxPayload, rateBytes, lifetimeSecs) {
  const b = Buffer.alloc(13);
  b[0] = T.Welcome;
  b.writeUInt32BE(maxPayload >>> 0, 1);
  b.writeUInt32BE(rateBytes >>> 0, 5);
  b.writeUInt32BE(lifetimeSecs >>> 0, 9);
  return b;
}

export function keyed(type, key, payload) {
  const b = Buffer.allocUnsafe(1 + KEY_SIZE + (payload ? payload.length : 0));
  b[0] = type;
  key.copy(b, 1);
  if (payload) payload.copy(b, 1 + KEY_SIZE);
  return b;
}

export function drain(deadlineMillis) {
  const b = Buffer.alloc(5);
  b[0] = T.Drain;
  b.writeUInt32BE(deadlineMillis >>> 0, 1);
  return b;
}

// errorFrame cuts msg to MAX_ERROR_MESSAGE bytes at a character boundary.
export function errorFrame(code, msg) {
  let m = Buffer.from(String(msg), 'utf8');
  if (m.length > MAX_ERROR_MESSAGE) {
    let end = MAX_ERROR_MESSAGE;
    while (end > 0 && (m[end] & 0xc0) === 0x80) end--; // do not split a character
    m = m.subarray(0, end);
  }
  const b = Buffer.alloc(3 + m.length);
  b[0] = T.Error;
  b.writeUInt16BE(code, 1);
  m.copy(b, 3);
  return b;
}

// parseClientFrame decodes a frame a client may send after the handshake:
// Send, Broadcast or Leave. It returns {type, key?, payload?} or throws
// {code, message} with the error code to answer.
export function parseClientFrame(b) {
  if (b.length === 0) throw { code: E.BadFrame, message: 'empty frame' };
  if (b.length > MAX_FRAME) throw { code: E.FrameTooLarge, message: `frame larger than ${MAX_FRAME} bytes` };
  switch (b[0]) {
    case T.Send:
      if (b.length < 1 + KEY_SIZE) throw { code: E.BadFrame, message: 'Send frame shorter than its key' };
      return { type: T.Send, key: b.subarray(1, 1 + KEY_SIZE), payload: b.subarray(1 + KEY_SIZE) };
    case T.Broadcast:
      if (b.length - 1 > MAX_PAYLOAD) {
        // Its BroadcastRecv would exceed MAX_FRAME.
        throw { code: E.FrameTooLarge, message: `payload larger than ${MAX_PAYLOAD} bytes` };
      }
      return { type: T.Broadcast, payload: b.subarray(1) };
    case T.Leave:
      if (b.length !== 1) throw { code: E.BadFrame, message: 'Leave frame longer than its type allows' };
      return { type: T.Leave };
    case T.ServerHello: case T.ClientHello: case T.Welcome: case T.Recv: case T.BroadcastRecv:
    case T.PeerPresent: case T.PeerGone: case T.Error: case T.Drain:
      throw { code: E.BadFrame, message: `frame type 0x${b[0].toString(16).padStart(2, '0')} goes from relay to client` };
    default:
      throw { code: E.BadFrame, message: `unexpected frame type 0x${b[0].toString(16).padStart(2, '0')}` };
  }
}

// Keys. node:crypto takes raw X25519 keys only as JWK (or DER), so raw
// 32-byte keys are wrapped in {kty:'OKP', crv:'X25519'}.

const b64u = (buf) => Buffer.from(buf).toString('base64url');

// publicFromPrivateRaw derives the public key X25519(raw, 9) through a
// PKCS#8 wrapping of the raw private key (RFC 8410).
function publicFromPrivateRaw(raw) {
  const priv = crypto.createPrivateKey({
    key: Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), raw]),
    format: 'der', type: 'pkcs8',
  });
  return Buffer.from(crypto.createPublicKey(priv).export({ format: 'jwk' }).x, 'base64url');
}

// newKeyPair returns a fresh relay key: {privateKey (KeyObject), publicRaw}.
export function newKeyPair() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('x25519');
  return { privateKey, publicRaw: Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url') };
}

// keyPairFromRaw builds the relay key from 32 raw private bytes.
export function keyPairFromRaw(raw) {
  const publicRaw = publicFromPrivateRaw(raw);
  const privateKey = crypto.createPrivateKey({
    key: { kty: 'OKP', crv: 'X25519', x: b64u(publicRaw), d: b64u(raw) }, format: 'jwk',
  });
  return { privateKey, publicRaw };
}

const ZERO32 = Buffer.alloc(32);

// sharedSecret is X25519(relay private, client public), or null when the
// client key is a low-order point (an all-zero result, which OpenSSL
// refuses and which would make the MAC forgeable).
export function sharedSecret(privateKey, clientRaw) {
  let s;
  try {
    const publicKey = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: b64u(clientRaw) }, format: 'jwk' });
    s = crypto.diffieHellman({ privateKey, publicKey });
  } catch {
    return null;
  }
  if (s.length !== 32 || crypto.timingSafeEqual(s, ZERO32)) return null;
  return s;
}

// Labels, as in internal/relayproto/admission.go: one per proof and hash.
const AUTH_LABEL = Buffer.from('plurenet relay v2 auth', 'ascii');
const ADMISSION_LABEL = Buffer.from('plurenet relay v2 admission', 'ascii');
const RENDEZVOUS_LABEL = Buffer.from('plurenet v2 rendezvous', 'ascii');

// rendezvousOf is relayproto.RendezvousOf: SHA-256(label ‖ admission key).
export function rendezvousOf(admission) {
  return crypto.createHash('sha256').update(RENDEZVOUS_LABEL).update(admission).digest();
}

// transcript is label ‖ S ‖ C ‖ K ‖ A ‖ R, what both proofs cover.
function transcript(label, serverKey, challenge, ch) {
  return Buffer.concat([label, serverKey, challenge, ch.key, ch.admission, ch.rv]);
}

// handshakeMAC is relayproto.Transcript.MAC: HMAC-SHA256 keyed with the
// X25519 shared secret over the auth label and the transcript.
export function handshakeMAC(shared, serverKey, challenge, ch) {
  return crypto.createHmac('sha256', shared).update(transcript(AUTH_LABEL, serverKey, challenge, ch)).digest();
}

// verifyAdmission is relayproto.Transcript.VerifySignature: the Ed25519
// signature of the admission key over the admission label and the
// transcript. A key that is not a valid point fails.
export function verifyAdmission(serverKey, challenge, ch) {
  let pub;
  try {
    pub = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64u(ch.admission) }, format: 'jwk' });
    return crypto.verify(null, transcript(ADMISSION_LABEL, serverKey, challenge, ch), pub, ch.sig);
  } catch {
    return false;
  }
}

// verifyClientHello is relayproto.ClientHello.Verify: null when the client
// proved both its key and the mesh's admission key, else {code, message,
// result} to refuse it with. Cheapest check first.
export function verifyClientHello(keys, challenge, ch) {
  const refuse = (message) => ({ code: E.AuthFailed, message, result: 'auth_failed' });
  if (ch.version !== VERSION) {
    return { code: E.BadVersion, message: `relay speaks protocol version ${VERSION} (${SUBPROTOCOL}), client sent ${ch.version}`, result: 'bad_version' };
  }
  if (!crypto.timingSafeEqual(rendezvousOf(ch.admission), ch.rv)) {
    return refuse("rendezvous is not the hash of the admission key: the client does not hold this mesh's admission key");
  }
  const shared = sharedSecret(keys.privateKey, ch.key);
  if (!shared) return refuse('client key is a low-order point');
  // Constant time, so the comparison leaks nothing about the right MAC.
  if (!crypto.timingSafeEqual(handshakeMAC(shared, keys.publicRaw, challenge, ch), ch.mac)) {
    return refuse('handshake MAC does not verify: the client does not hold the key it claims, or answered another challenge');
  }
  if (!verifyAdmission(keys.publicRaw, challenge, ch)) {
    return refuse("admission signature does not verify: the client does not hold this mesh's secret, or answered another challenge");
  }
  return null;
}
