// Package testkit gives plurenet's tests the small things they all need:
// node keys, the admission key of a test mesh, waiting for a condition,
// and a SHA-256 check of a stream. It imports nothing above internal/, so
// every package's tests may use it (relayserver/relaytest starts a relay).
package testkit

import (
	"crypto/rand"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
)

// Patience bounds every wait of Eventually: it only keeps a broken test
// from hanging (a slow, loaded CI machine must never fail a test by it),
// nothing is asserted about it.
const Patience = 20 * time.Second

// Key returns a fresh node key.
func Key(t testing.TB) nodekey.Private {
	t.Helper()
	k, err := nodekey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Admission returns the admission key of test mesh b: what a member needs
// to join the relay rendezvous it names (its Rendezvous method). Different
// bytes are different meshes.
func Admission(b byte) relayproto.AdmissionKey {
	var seed [32]byte
	for i := range seed {
		seed[i] = b
	}
	return relayproto.NewAdmissionKey(seed)
}

// Eventually polls cond every few milliseconds until it holds, and fails
// the test naming what it waited for once Patience has passed.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, Patience, what, cond)
}

// EventuallyWithin is Eventually with a patience of its own, for what
// takes several protocol rounds (a revocation spreading through a mesh).
func EventuallyWithin(t testing.TB, patience time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// RandomData returns n random bytes, the payload of a transfer test.
func RandomData(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// HashStream reads r to its end and returns the SHA-256 of what it read
// and how many bytes that was: the receiving side of a transfer test, which
// compares the sum with sha256.Sum256 of what was sent.
func HashStream(r io.Reader) ([sha256.Size]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}
