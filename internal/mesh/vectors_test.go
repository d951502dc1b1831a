package mesh

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/hkdf"

	"github.com/plures/plurenet/internal/nodekey"
)

// Test vectors of docs/protocol.md Part 2 (2.9) and Part 3 (3.6). The
// derivations were reproduced independently with Python (hashlib BLAKE2b
// and SHA-256, HMAC-SHA256 HKDF, argon2-cffi's Argon2id) and node:crypto
// (Ed25519 public keys); the v1 sealed-message algorithm, which v2 keeps
// with a new key, was reproduced with Python's HChaCha20 + RFC 8439
// ChaCha20-Poly1305.
const (
	vecTopicName = "plurenet-test-vector"
	vecSecret    = "correct horse battery staple"
	vecNodePriv  = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a" // RFC 7748 section 6.1 Alice
	vecNodePub   = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
	vecTopicID   = "cfc6c2d35bbecedabc36850ddc4421c591bda18143d8b902446f3f3999009188"
	// A human-chosen secret: stretched.
	vecStretched     = "735cb3c7615fafbf9a89e2944f4e4d724399f2b973004fa6fd8efb5a642742a1"
	vecPRK           = "f11c2de0ada51230d88d730d1ec2ec52269cf6d8c2bb29bf1ad1133c3d3058f2"
	vecAdmissionSeed = "4d56f634f54596a2e2167e3e1c8c8de3f76b61cffde396a72d527e04ddafaa43"
	vecAdmissionPub  = "ab98b1266745f94d275e93e8c551728c99dc13d80661cf0e949df4435e77357d"
	vecRendezvous    = "d9ad44914f1eed7567b363f6108f4694699cd1b9d12a7079135d06506da86f45"
	vecSealKey       = "141d6b026deaadb043f85d8bb07ea2ed1651f72608dc4dbff4254d0ac1ea242c"
	vecPSK           = "d823618029110c00d92829198230e77a5d36319826722cca4949901451b4b9a6"
	// The empty secret (open mesh): stretched too.
	vecOpenStretched = "1ce3d9e0c647ec192c04444a3d8493aa2aba5841ecec22e4154a58f022e175e9"
	vecOpenAdmission = "8671be0c15131b14ecf4b5243fd40c1875848df518fd1bc20664d501520642a1"
	vecOpenRV        = "3b1d07d61eb983b60523347eaa30908c1ef96cad36cc1243915355cf8ec71271"
	// A generated secret of the random bytes 00 01 ... 1f: used as is.
	vecGenerated          = "pnsec1_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8X5A4m"
	vecGeneratedRandom    = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	vecGeneratedPRK       = "3a67adc33c12ae6b80a42269f403f6238fbe10849bb7053c9b7721eda9c839b9"
	vecGeneratedAdmission = "f5ff8e46c34e82673e3f3af88893d23072a0751ad926e2c4397c8ceaaa233d44"
	vecGeneratedRV        = "910ef7a328ad57c800aa5f7290a0897413ddcff0aae0e3b518b6d3c32b780fed"
	vecGeneratedSeal      = "e5c002a8eba4cbc7eac29505a9f93edce879dda35af0ac774419d22a0e3a2363"
	vecGeneratedPSK       = "9718dfa8388e8bd6d6629a8a4ce25f2be70666f691ab15f59a19be307d9216d4"

	vecULA        = "fd65:c86b:39d6::/48"
	vecV6         = "fd65:c86b:39d6:63b1:62f2:9df4:a152:d540"
	vecV4Attempt0 = "100.106.42.4"
	vecV4Attempt1 = "100.107.123.171"
	vecNonce      = "000102030405060708090a0b0c0d0e0f1011121314151617"
	vecTimeNanos  = 1767323045000000006 // 2026-01-02T03:04:05.000000006Z
	vecName       = "alice-laptop"
	vecCand0      = "udp4 192.0.2.10:41641 host"
	vecCand1      = "udp6 [2001:db8::10]:41641 host"
	vecAnnounce   = "f1000102030405060708090a0b0c0d0e0f10111213141516174bfb9be0df8721fc0295cd01f292f4cc9265524fa6c327437a7e60ddbe399b920de2f5cc05205a7cd7895e84589d931c644733aa87805e3ef6de292414de968ba8229ed1aa371deb0e5296467f056aa4eef77bb800fdf6f8cbab11d11fb4266c4f5d16eea8c370b83a1f8ed3925405735e91ac68b28a73ae64f09e3277c88300ccc6508787eb9e870bea257dd62cb3cac9a78265b0447b9773b4aebc3ef01bd8a8f8a3657948212cdb2299264798db13f1b9220d06ad270b18b37c98923ed3055e6cdbeb574958c77010ba60dea2d66cee1540e0f769"
	vecLeave      = "f1000102030405060708090a0b0c0d0e0f101112131415161748fb9be0df8721fc0295cd01f292f4cc9265524fa6c327437a7e60ddbe399b920de2f5cc0564fcb2d753c91fc35e2efa6d3c80a049e8125eb5a81760304b2f0898a8101677e019049f7c6d8c7e0c2f6cd2c3641500bbe1e3affd50fe6cf0fdc7af0005cdf62bb6b43f3ed5707e9911dbbed8f652b340af3984" // timestamp vecTimeNanos + 1 s
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in vector: %v", err)
	}
	return b
}

// vecMeshKeys are the keys of the vector topic and secret, derived from the
// stretched vector so that tests do not pay for Argon2id each time
// (TestVectorDerivations checks that stretching gives it).
func vecMeshKeys(t testing.TB) Keys {
	var s Stretched
	copy(s[:], unhex(t, vecStretched))
	return DeriveKeys(TopicID(vecTopicName), s)
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
	stretched, kind, err := StretchSecret(id, vecSecret)
	if err != nil || kind != SecretHuman {
		t.Fatalf("StretchSecret = %v, %v; want a human-chosen secret", kind, err)
	}
	open, kind, err := StretchSecret(id, "")
	if err != nil || kind != SecretOpen {
		t.Fatalf("StretchSecret(empty) = %v, %v; want an open mesh", kind, err)
	}
	gen, kind, err := StretchSecret(id, vecGenerated)
	if err != nil || kind != SecretGenerated {
		t.Fatalf("StretchSecret(generated) = %v, %v; want a generated secret", kind, err)
	}
	var random [32]byte
	copy(random[:], unhex(t, vecGeneratedRandom))
	if g := encodeGenerated(random); g != vecGenerated {
		t.Errorf("generated secret of the vector bytes = %s, want %s", g, vecGenerated)
	}
	keys := DeriveKeys(id, stretched)
	openKeys := DeriveKeys(id, open)
	genKeys := DeriveKeys(id, gen)
	ula := ULAPrefix(id)
	prk := hkdf.Extract(sha256.New, stretched[:], id[:])
	genPRK := hkdf.Extract(sha256.New, gen[:], id[:])
	var seed [32]byte
	expand(prk, labelAdmission, seed[:])
	hexOf := func(b [32]byte) string { return hex.EncodeToString(b[:]) }
	for _, c := range []struct {
		name, got, want string
	}{
		{"TopicID", hexOf(id), vecTopicID},
		{"stretched", hexOf(stretched), vecStretched},
		{"PRK", hex.EncodeToString(prk), vecPRK},
		{"admission seed", hexOf(seed), vecAdmissionSeed},
		{"admission public key", hexOf(keys.Admission.Public()), vecAdmissionPub},
		{"Rendezvous", hexOf(keys.Rendezvous), vecRendezvous},
		{"Seal", hexOf(keys.Seal), vecSealKey},
		{"PSK", hexOf(keys.PSK), vecPSK},
		{"open stretched", hexOf(open), vecOpenStretched},
		{"open admission public key", hexOf(openKeys.Admission.Public()), vecOpenAdmission},
		{"open Rendezvous", hexOf(openKeys.Rendezvous), vecOpenRV},
		{"generated IKM", hexOf(gen), vecGeneratedRandom},
		{"generated PRK", hex.EncodeToString(genPRK), vecGeneratedPRK},
		{"generated admission public key", hexOf(genKeys.Admission.Public()), vecGeneratedAdmission},
		{"generated Rendezvous", hexOf(genKeys.Rendezvous), vecGeneratedRV},
		{"generated Seal", hexOf(genKeys.Seal), vecGeneratedSeal},
		{"generated PSK", hexOf(genKeys.PSK), vecGeneratedPSK},
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
	keys := vecMeshKeys(t)
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
