package relayproto

import (
	"encoding/hex"
	"testing"

	"github.com/plures/plurenet/internal/nodekey"
)

// Test vectors of docs/protocol.md, section "Test vectors". The client key is
// RFC 7748 section 6.1's Alice and the relay key its Bob, so the X25519
// shared secret is the RFC's too.
const (
	vecClientPriv = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
	vecServerPriv = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
	vecChallenge  = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	vecRendezvous = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	vecMAC        = "f4ceb4ac8e263a670374897f71d86a67c08a89a81c1fdd1bb298301b0e15ba6f"
)

type vectorKeys struct {
	client, server nodekey.Private
	challenge      [ChallengeSize]byte
	rendezvous     Rendezvous
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
	copy(v.rendezvous[:], unhex(t, vecRendezvous))
	return v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in vector: %v", err)
	}
	return b
}

func TestHandshakeMACVector(t *testing.T) {
	v := loadVectorKeys(t)
	shared, err := v.client.SharedSecret(v.server.Public())
	if err != nil {
		t.Fatal(err)
	}
	mac := HandshakeMAC(shared, v.server.Public(), v.challenge, v.client.Public(), v.rendezvous)
	if got := hex.EncodeToString(mac[:]); got != vecMAC {
		t.Fatalf("MAC = %s, want %s", got, vecMAC)
	}
	// The relay computes the same MAC from its side of the exchange.
	shared2, err := v.server.SharedSecret(v.client.Public())
	if err != nil {
		t.Fatal(err)
	}
	if HandshakeMAC(shared2, v.server.Public(), v.challenge, v.client.Public(), v.rendezvous) != mac {
		t.Fatal("relay-side MAC differs")
	}
}

func TestFrameVectors(t *testing.T) {
	v := loadVectorKeys(t)
	var mac [MACSize]byte
	copy(mac[:], unhex(t, vecMAC))
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"ServerHello", (&ServerHello{Version: Version, ServerKey: v.server.Public(), Challenge: v.challenge}).Append(nil), "010100de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"},
		{"ClientHello", (&ClientHello{Version: Version, ClientKey: v.client.Public(), Rendezvous: v.rendezvous, MAC: mac}).Append(nil), "02018520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3ff4ceb4ac8e263a670374897f71d86a67c08a89a81c1fdd1bb298301b0e15ba6f"},
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hex.EncodeToString(tt.got); got != tt.want {
				t.Fatalf("encoding = %s\nwant       %s", got, tt.want)
			}
		})
	}
}
