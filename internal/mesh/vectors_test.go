package mesh

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

// Test vectors of docs/protocol.md Part 2, section "Test vectors". They were
// also reproduced by an independent Python implementation of the spec
// (hashlib BLAKE2b, HMAC-SHA256 HKDF, HChaCha20 + RFC 8439 ChaCha20-Poly1305).
const (
	vecTopicName  = "plurenet-test-vector"
	vecSecret     = "correct horse battery staple"
	vecNodePriv   = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a" // RFC 7748 section 6.1 Alice
	vecNodePub    = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
	vecTopicID    = "cfc6c2d35bbecedabc36850ddc4421c591bda18143d8b902446f3f3999009188"
	vecRendezvous = "6e39d214869a4e285f7cb74e65fd7e50ae130617e06460d14919a040b50f1fee"
	vecSealKey    = "b0b2af096da5a7b483777647e8d46c631f21d32dd11bd28a9244b709a8a4ee94"
	vecPSK        = "4de25835f64e18e8cfd757a7e95e4046a3cec04289d25cf545fa377a89adc585"
	vecOpenRV     = "a8f730b02a4c74e1a18f6105e5983cd46e6947fdaeda4fea03d2cf10f1b07402" // rendezvous with an empty secret
	vecULA        = "fd65:c86b:39d6::/48"
	vecV6         = "fd65:c86b:39d6:63b1:62f2:9df4:a152:d540"
	vecV4Attempt0 = "100.106.42.4"
	vecV4Attempt1 = "100.107.123.171"
	vecNonce      = "000102030405060708090a0b0c0d0e0f1011121314151617"
	vecTimeNanos  = 1767323045000000006 // 2026-01-02T03:04:05.000000006Z
	vecName       = "alice-laptop"
	vecCand0      = "udp4 192.0.2.10:41641 host"
	vecCand1      = "udp6 [2001:db8::10]:41641 host"
	vecAnnounce   = "f1000102030405060708090a0b0c0d0e0f10111213141516172e47b1f0f35f4c8d4c20385811b66031148f2704478ee616207c082ac8f223be56c8fdde9478576857ea059be28394ff5799fe7ab19a2973ceb75d4fcd2cf722a6d1592fa6bf8125b5a914afbaeefa8332def6b6b4744b7fa2d9d019b9f12e333311140791126e54e14f094bb29768f722c0ae9ad24d49b88798fd623a7e31d40547dcf262ef88b93ff9b41f5c8b3a785b4e26725a9b3425ebbd6ab09a3224777846505fc818504ccbaac9982b9b8287ac3ff3a18bb31af7c68919884091ee3788f2ca9999d0de9d50f5b9189582d34a8ae664a5850e"
	vecLeave      = "f1000102030405060708090a0b0c0d0e0f10111213141516172d47b1f0f35f4c8d4c20385811b66031148f2704478ee616207c082ac8f223be56c8fdde943cf1a657cbac901ac7644a9a51f78f35cd4e3fa967eb50ba750bf8d1f527e2bccd5223fd25ee116aa0cdc64124423e01e7972136c2df9a3f5f116ba1b989a551db7e1be2ee55668e26e8693099ab3ed2ea191d9e" // timestamp vecTimeNanos + 1 s
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in vector: %v", err)
	}
	return b
}

func vecKey(t testing.TB) nodekey.Private {
	t.Helper()
	k, err := nodekey.ParsePrivate(vecNodePriv)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// vecAnnounceMessage is the message sealed in vecAnnounce.
func vecAnnounceMessage(t testing.TB) Message {
	pub := vecKey(t).Public()
	return Message{
		Kind: KindAnnounce,
		From: pub,
		Time: time.Unix(0, vecTimeNanos),
		Announce: Announce{
			V4:         netip.MustParseAddr(vecV4Attempt0),
			V6:         netip.MustParseAddr(vecV6),
			Name:       vecName,
			Candidates: []string{vecCand0, vecCand1},
		},
	}
}

func TestVectorDerivations(t *testing.T) {
	pub := vecKey(t).Public()
	if got := pub.Hex(); got != vecNodePub {
		t.Fatalf("node public key = %s, want %s", got, vecNodePub)
	}
	id := TopicID(vecTopicName)
	keys := DeriveKeys(id, []byte(vecSecret))
	ula := ULAPrefix(id)
	open := DeriveKeys(id, nil)
	for _, c := range []struct {
		name, got, want string
	}{
		{"TopicID", hex.EncodeToString(id[:]), vecTopicID},
		{"Rendezvous", hex.EncodeToString(keys.Rendezvous[:]), vecRendezvous},
		{"Seal", hex.EncodeToString(keys.Seal[:]), vecSealKey},
		{"PSK", hex.EncodeToString(keys.PSK[:]), vecPSK},
		{"open Rendezvous", hex.EncodeToString(open.Rendezvous[:]), vecOpenRV},
		{"ULAPrefix", ula.String(), vecULA},
		{"V6", V6(ula, pub).String(), vecV6},
		{"CandidateV4 0", CandidateV4(DefaultV4Prefix, pub, 0).String(), vecV4Attempt0},
		{"CandidateV4 1", CandidateV4(DefaultV4Prefix, pub, 1).String(), vecV4Attempt1},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
		}
	}
}

func TestVectorSealed(t *testing.T) {
	keys := DeriveKeys(TopicID(vecTopicName), []byte(vecSecret))
	var nonce [NonceSize]byte
	copy(nonce[:], unhex(t, vecNonce))
	msg := vecAnnounceMessage(t)
	leave := Message{Kind: KindLeave, From: msg.From, Time: msg.Time.Add(time.Second)}
	for _, c := range []struct {
		name string
		msg  Message
		want string
	}{
		{"announce", msg, vecAnnounce},
		{"leave", leave, vecLeave},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := seal(keys, vecKey(t), nonce, [64]byte{}, c.msg, c.msg.Time)
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, c.want); !bytes.Equal(got, want) {
				t.Fatalf("sealed\n got %x\nwant %x", got, want)
			}
			back, err := Open(keys, got)
			if err != nil {
				t.Fatal(err)
			}
			assertMessage(t, back, c.msg)
		})
	}
}
