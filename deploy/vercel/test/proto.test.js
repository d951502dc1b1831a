// The Node relay's handshake checks against the test vectors of
// docs/protocol.md §1.11, which internal/relayproto checks byte for byte in
// Go. Run with `node --test test/` (deploy's Go tests run it too).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import * as p from '../src/proto.js';

const hex = (s) => Buffer.from(s, 'hex');
const V = {
  serverPriv: '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb',
  serverPub: 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f',
  clientPub: '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
  challenge: '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f',
  admissionSeed: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
  admissionPub: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
  rendezvous: 'f626af6d2d07a79a292a7eb54f49e96c70f2c67936dcd5748416b4e4e8451566',
  mac: '7ce3fb97b2eb4b09527548fd27456c8838e872580439249a98a8b3ea92c1574f',
  signature: 'b939d8c0b75249c5d4f2e873773f2dbe3098f50f58d3ae7fb648b7280af8f3569873641fca460561f551673005f777a0bc9954e9c2bd90f3168ded146c66840a',
  serverHello: '010200de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f',
};
V.clientHello = '0202' + V.clientPub + V.admissionPub + V.rendezvous + V.mac + V.signature;

const relayKeys = () => p.keyPairFromRaw(hex(V.serverPriv));
const vectorHello = () => p.parseClientHello(hex(V.clientHello));

// signer returns an Ed25519 signing function for a 32-byte seed (RFC 8410
// PKCS#8 wrapping), to build hellos the way a client does.
function signer(seed) {
  const key = crypto.createPrivateKey({
    key: Buffer.concat([hex('302e020100300506032b657004220420'), seed]), format: 'der', type: 'pkcs8',
  });
  return {
    pub: Buffer.from(crypto.createPublicKey(key).export({ format: 'jwk' }).x, 'base64url'),
    sign: (msg) => crypto.sign(null, msg, key),
  };
}

const SIGNED_LABEL = Buffer.from('plurenet relay v2 admission', 'ascii');
const signedBytes = (serverKey, challenge, ch) => Buffer.concat([SIGNED_LABEL, serverKey, challenge, ch.key, ch.admission, ch.rv]);

test('frames and derived values match the vectors', () => {
  const keys = relayKeys();
  assert.equal(keys.publicRaw.toString('hex'), V.serverPub);
  assert.equal(p.serverHello(keys.publicRaw, hex(V.challenge)).toString('hex'), V.serverHello);
  assert.equal(signer(hex(V.admissionSeed)).pub.toString('hex'), V.admissionPub);
  assert.equal(p.rendezvousOf(hex(V.admissionPub)).toString('hex'), V.rendezvous);
  const ch = vectorHello();
  assert.equal(ch.version, 2);
  assert.equal(ch.key.toString('hex'), V.clientPub);
  assert.equal(ch.admission.toString('hex'), V.admissionPub);
  assert.equal(ch.rv.toString('hex'), V.rendezvous);
  const shared = p.sharedSecret(keys.privateKey, ch.key);
  assert.equal(p.handshakeMAC(shared, keys.publicRaw, hex(V.challenge), ch).toString('hex'), V.mac);
  // Ed25519 is deterministic: node:crypto signs the vector transcript to
  // the vector signature.
  assert.equal(signer(hex(V.admissionSeed)).sign(signedBytes(keys.publicRaw, hex(V.challenge), ch)).toString('hex'), V.signature);
});

test('the vector hello is admitted', () => {
  assert.equal(p.verifyClientHello(relayKeys(), hex(V.challenge), vectorHello()), null);
});

test('hellos without the admission key, or with proofs for another connection, are refused', () => {
  const keys = relayKeys();
  const challenge = hex(V.challenge);
  const other = signer(Buffer.alloc(32, 7)); // an admission key of the attacker's own
  const cases = {
    'version 1': (ch) => { ch.version = 1; },
    'the rendezvous with an admission key of its own': (ch) => {
      // Both proofs honest for what it sends: only the check that the
      // rendezvous is the admission key's hash stops it.
      ch.admission = other.pub;
      ch.mac = p.handshakeMAC(p.sharedSecret(keys.privateKey, ch.key), keys.publicRaw, challenge, ch);
      ch.sig = other.sign(signedBytes(keys.publicRaw, challenge, ch));
    },
    'the admission key signed by another key': (ch) => { ch.sig = other.sign(signedBytes(keys.publicRaw, challenge, ch)); },
    'a signature made for another challenge': (ch) => {
      const old = Buffer.from(challenge);
      old[0] ^= 1;
      ch.sig = signer(hex(V.admissionSeed)).sign(signedBytes(keys.publicRaw, old, ch));
    },
    'a signature made for another relay': (ch) => {
      ch.sig = signer(hex(V.admissionSeed)).sign(signedBytes(p.newKeyPair().publicRaw, challenge, ch));
    },
    'no signature': (ch) => { ch.sig = Buffer.alloc(64); },
    'an admission key that is not a point': (ch) => {
      ch.admission = Buffer.alloc(32, 0xff);
      ch.rv = p.rendezvousOf(ch.admission);
    },
    'the MAC of another node key': (ch) => { ch.mac[0] ^= 1; },
    'a low-order node key': (ch) => { ch.key = Buffer.alloc(32); },
  };
  for (const [name, spoil] of Object.entries(cases)) {
    const ch = vectorHello();
    spoil(ch);
    const refusal = p.verifyClientHello(keys, challenge, ch);
    assert.ok(refusal, `${name}: admitted`);
    assert.equal(refusal.code, name === 'version 1' ? p.E.BadVersion : p.E.AuthFailed, name);
    assert.ok(refusal.message.length > 0, name);
  }
});

test('ClientHello layout is checked', () => {
  const b = hex(V.clientHello);
  assert.throws(() => p.parseClientHello(b.subarray(0, b.length - 1)), /bytes/);
  assert.throws(() => p.parseClientHello(Buffer.concat([b, Buffer.from([0])])), /bytes/);
  assert.throws(() => p.parseClientHello(Buffer.from([0x01])), /expected ClientHello/);
});
