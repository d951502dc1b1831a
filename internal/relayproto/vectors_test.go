package relayproto

import (
	"encoding/hex"
	"testing"

	"github.com/plures/plurenet/internal/nodekey"
)

// Test vectors of docs/protocol.md, section 1.11. The client key is RFC 7748
// section 6.1's Alice and the relay key its Bob, so the X25519 shared secret
// is the RFC's too; the admission seed is RFC 8032 section 7.1's TEST 1
// secret key, so the admission public key is that test's public key. The
// MAC and rendezvous were reproduced with Python's hmac and hashlib, the
// signature with node:crypto (OpenSSL); deploy/vercel's tests check the
// same vectors in the Node relay.
const (
	vecClientPriv    = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
	vecServerPriv    = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
	vecChallenge     = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	vecAdmissionSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	vecAdmissionPub  = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	vecRendezvous    = "f626af6d2d07a79a292a7eb54f49e96c70f2c67936dcd5748416b4e4e8451566"
	vecMAC           = "7ce3fb97b2eb4b09527548fd27456c8838e872580439249a98a8b3ea92c1574f"
	vecSignature     = "b939d8c0b75249c5d4f2e873773f2dbe3098f50f58d3ae7fb648b7280af8f3569873641fca460561f551673005f777a0bc9954e9c2bd90f3168ded146c66840a"
	vecClientHello   = "02028520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6ad75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511af626af6d2d07a79a292a7eb54f49e96c70f2c67936dcd5748416b4e4e84515667ce3fb97b2eb4b09527548fd27456c8838e872580439249a98a8b3ea92c1574fb939d8c0b75249c5d4f2e873773f2dbe3098f50f58d3ae7fb648b7280af8f3569873641fca460561f551673005f777a0bc9954e9c2bd90f3168ded146c66840a"
)

type vectorKeys struct {
	client, server nodekey.Private
	challenge      [ChallengeSize]byte
	admission      AdmissionKey
}

func loadVectorKeys(t testing.TB) vectorKeys {
	t.Helper()
	var v vectorKeys
	var err error
	if v.client, err = nodekey.ParsePrivate(vecClientPriv); err != nil {
		t.Fatal(err)
	}
	if v.server, err = nodekey.ParsePrivate(vecServerPriv); err != nil {
		t.Fatal(err)
	}
	copy(v.challenge[:], unhex(t, vecChallenge))
	var seed [32]byte
	copy(seed[:], unhex(t, vecAdmissionSeed))
	v.admission = NewAdmissionKey(seed)
	return v
}

func (v vectorKeys) serverHello() ServerHello {
	return ServerHello{Version: Version, ServerKey: v.server.Public(), Challenge: v.challenge}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in vector: %v", err)
	}
	return b
}

func TestHandshakeVectors(t *testing.T) {
	v := loadVectorKeys(t)
	pub, rv := v.admission.Public(), v.admission.Rendezvous()
	ch, err := NewClientHello(v.serverHello(), v.client, v.admission)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"admission public key", hex.EncodeToString(pub[:]), vecAdmissionPub},
		{"rendezvous", hex.EncodeToString(rv[:]), vecRendezvous},
		{"MAC", hex.EncodeToString(ch.MAC[:]), vecMAC},
		{"signature", hex.EncodeToString(ch.Signature[:]), vecSignature},
		{"ClientHello", hex.EncodeToString(ch.Append(nil)), vecClientHello},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s\nwant %s", c.name, c.got, c.want)
		}
	}
	// The relay computes the same MAC from its side of the exchange and
	// accepts the hello.
	back, err := ParseClientHello(unhex(t, vecClientHello))
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Verify(v.server, v.serverHello()); err != nil {
		t.Fatalf("relay refuses the vector hello: %v", err)
	}
}

func TestFrameVectors(t *testing.T) {
	v := loadVectorKeys(t)
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"ServerHello", (&ServerHello{Version: Version, ServerKey: v.server.Public(), Challenge: v.challenge}).Append(nil), "010200de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"},
		{"Welcome", (&Welcome{MaxPayload: MaxPayload, RateBytes: 1 << 20, LifetimeSecs: 300}).Append(nil), "0300010000001000000000012c"},
		{"Send", AppendSend(nil, v.server.Public(), []byte("hi")), "10de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f6869"},
		{"Recv", AppendRecv(nil, v.client.Public(), []byte("hi")), "118520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a6869"},
		{"Broadcast", AppendBroadcast(nil, []byte("hi")), "126869"},
		{"BroadcastRecv", AppendBroadcastRecv(nil, v.client.Public(), []byte("hi")), "138520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a6869"},
		{"PeerPresent", AppendPeerPresent(nil, v.client.Public()), "208520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"},
		{"PeerGone", AppendPeerGone(nil, v.client.Public()), "218520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"},
		{"Error", AppendError(nil, ErrAuthFailed, "bad mac"), "300003626164206d6163"},
		{"Drain", AppendDrain(nil, 5000), "3100001388"},
		{"Leave", AppendLeave(nil), "32"},
		{"ServerHello with FlagBatches", (&ServerHello{Version: Version, Flags: FlagBatches, ServerKey: v.server.Public(), Challenge: v.challenge}).Append(nil), "010201de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"},
		{"SendBatch", AppendBatchPacket(AppendBatchPacket(AppendSendBatch(nil, v.server.Public()), []byte("hi")), []byte("!")), "14de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f00026869000121"},
		{"RecvBatch", Forwarded(AppendBatchPacket(AppendBatchPacket(AppendSendBatch(nil, v.server.Public()), []byte("hi")), []byte("!")), v.client.Public()), "158520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a00026869000121"},
		{"AcceptBatches", AppendAcceptBatches(nil), "33"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hex.EncodeToString(tt.got); got != tt.want {
				t.Fatalf("encoding = %s\nwant       %s", got, tt.want)
			}
		})
	}
}
