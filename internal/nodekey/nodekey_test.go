package nodekey

import (
	"encoding/hex"
	"testing"
)

// RFC 7748 section 6.1 test vector.
func TestSharedSecretRFC7748(t *testing.T) {
	var a, b Private
	mustHex(t, a[:], "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	mustHex(t, b[:], "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
	wantA := "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
	wantS := "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
	if got := a.Public().Hex(); got != wantA {
		t.Fatalf("public(a) = %s, want %s", got, wantA)
	}
	s1, err := a.SharedSecret(b.Public())
	if err != nil {
		t.Fatal(err)
	}
	s2, err := b.SharedSecret(a.Public())
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(s1[:]) != wantS || s1 != s2 {
		t.Fatalf("shared = %x / %x, want %s", s1, s2, wantS)
	}
}

func TestSharedSecretLowOrder(t *testing.T) {
	k, err := NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.SharedSecret(Public{}); err != ErrLowOrder {
		t.Fatalf("zero public key: err = %v, want ErrLowOrder", err)
	}
}

func TestParse(t *testing.T) {
	k, _ := NewPrivate()
	p := k.Public()
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{"base64", p.String(), false},
		{"hex", p.Hex(), false},
		{"spaces", "  " + p.String() + "\n", false},
		{"short", "abc", true},
		{"bad base64", "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=", true},
		{"bad hex", "zz" + p.Hex()[2:], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePublic(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got != p {
				t.Fatalf("got %v, want %v", got, p)
			}
		})
	}
}

func mustHex(t *testing.T, dst []byte, s string) {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(dst) {
		t.Fatalf("bad hex %q", s)
	}
	copy(dst, b)
}
