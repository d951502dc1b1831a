package testkit

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

func TestAdmissionNamesOneMesh(t *testing.T) {
	if Admission(1).Rendezvous() == Admission(2).Rendezvous() {
		t.Fatal("two test meshes share a rendezvous")
	}
	first, again := Admission(1), Admission(1)
	if first.Rendezvous() != again.Rendezvous() {
		t.Fatal("one test mesh gave two rendezvous")
	}
}

func TestHashStream(t *testing.T) {
	data := RandomData(t, 100_000)
	sum, n, err := HashStream(bytes.NewReader(data))
	if err != nil || n != int64(len(data)) || sum != sha256.Sum256(data) {
		t.Fatalf("HashStream = %x, %d, %v", sum, n, err)
	}
}
