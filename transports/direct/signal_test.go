package direct

import (
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestSignalRoundTrip(t *testing.T) {
	cand := "1234 1 udp 2130706431 10.1.0.2 40000 typ host"
	long := strings.Repeat("x", maxCandidateLen)
	many := make([]string, maxCandidates)
	for i := range many {
		many[i] = long
	}
	tests := []struct {
		name string
		s    signal
	}{
		{"offer", signal{Type: sigOffer, Session: 42, Ufrag: "abcd", Pwd: "0123456789012345678901", Candidates: []string{cand}}},
		{"answer no candidates", signal{Type: sigAnswer, Session: 1 << 63, Ufrag: "u", Pwd: "p"}},
		{"request", signal{Type: sigRequest, Session: 7}},
		{"request zero", signal{Type: sigRequest}},
		{"probe", signal{Type: sigProbe, Session: 0x0123456789abcdef}},
		{"reply", signal{Type: sigReply, Session: 1}},
		{"largest", signal{Type: sigOffer, Session: ^uint64(0), Ufrag: strings.Repeat("u", maxUfragLen), Pwd: strings.Repeat("p", maxPwdLen), Candidates: many}},
		{"offer with flags", signal{Type: sigOffer, Session: 42, Ufrag: "abcd", Pwd: "p", Candidates: []string{cand}, Flags: flagUpdates}},
		{"request with flags", signal{Type: sigRequest, Session: 7, Flags: flagUpdates}},
		{"unknown flags kept", signal{Type: sigAnswer, Session: 3, Ufrag: "u", Pwd: "p", Flags: 0xfe}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := appendSignal(nil, &tt.s)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > MaxSignalSize {
				t.Fatalf("%d bytes, more than MaxSignalSize %d", len(b), MaxSignalSize)
			}
			got, err := parseSignal(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.s) {
				t.Fatalf("round trip: got %+v, want %+v", got, tt.s)
			}
			// A member from before the flags sends none: no flags. Zero
			// flags are left out, so such a signal is what it always was.
			noFlags := b
			if tt.s.Flags != 0 {
				noFlags = b[:len(b)-1]
			}
			old := tt.s
			old.Flags = 0
			if got, err := parseSignal(noFlags); err != nil || !reflect.DeepEqual(got, old) {
				t.Fatalf("without the flags byte: %+v, %v", got, err)
			}
			if len(noFlags) > maxSignalSizeNoFlags {
				t.Fatalf("%d bytes without flags, more than members before them take (%d)", len(noFlags), maxSignalSizeNoFlags)
			}
			// Bytes after the flags (a later version's fields) are ignored, within
			// the size bound.
			withFlags := b
			if tt.s.Flags == 0 {
				withFlags = append(b[:len(b):len(b)], 0)
			}
			if len(withFlags)+3 > MaxSignalSize {
				return
			}
			if got, err := parseSignal(append(withFlags, 1, 2, 3)); err != nil || !reflect.DeepEqual(got, tt.s) {
				t.Fatalf("with trailing bytes: %+v, %v", got, err)
			}
		})
	}
}

func TestSignalRejects(t *testing.T) {
	good, _ := appendSignal(nil, &signal{Type: sigOffer, Session: 1, Ufrag: "u", Pwd: "p", Candidates: []string{"c"}})
	tests := []struct {
		name    string
		in      []byte
		wantErr error
	}{
		{"empty", nil, ErrBadSignal},
		{"version 2", append([]byte{2}, good[1:]...), ErrSignalVersion},
		{"short header", good[:5], ErrBadSignal},
		{"truncated ufrag", good[:signalHeaderLen+1], ErrBadSignal},
		{"truncated candidate", good[:len(good)-1], ErrBadSignal},
		{"unknown type", func() []byte { b := append([]byte(nil), good...); b[1] = 9; return b }(), ErrBadSignal},
		{"offer without ufrag", []byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 'p', 0}, ErrBadSignal},
		{"request with creds", []byte{1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 1, 'u', 1, 'p', 0}, ErrBadSignal},
		{"control byte", []byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, '\n', 1, 'p', 0}, ErrBadSignal},
		{"too many candidates", []byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 'u', 1, 'p', maxCandidates + 1}, ErrBadSignal},
		{"too large", make([]byte, MaxSignalSize+1), ErrBadSignal},
		{"probe without nonce", []byte{1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrBadSignal},
		{"reply with candidates", []byte{1, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 'c'}, ErrBadSignal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseSignal(tt.in); !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	// The encoder refuses what the decoder would.
	if _, err := appendSignal(nil, &signal{Type: sigOffer, Ufrag: strings.Repeat("u", maxUfragLen+1), Pwd: "p"}); !errors.Is(err, ErrBadSignal) {
		t.Fatalf("long ufrag encoded: %v", err)
	}
}

func FuzzParseSignal(f *testing.F) {
	for _, s := range []signal{
		{Type: sigOffer, Session: 42, Ufrag: "abcd", Pwd: "0123456789012345678901", Candidates: []string{"1 1 udp 2130706431 10.1.0.2 40000 typ host"}},
		{Type: sigRequest, Session: 9},
		{Type: sigProbe, Session: 10},
		{Type: sigReply, Session: 11},
	} {
		b, _ := appendSignal(nil, &s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSignal(b)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to something that parses the same.
		enc, err := appendSignal(nil, &s)
		if err != nil {
			t.Fatalf("parsed signal does not encode: %v", err)
		}
		again, err := parseSignal(enc)
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("re-encoding changed it: %+v vs %+v (%v)", again, s, err)
		}
		if len(enc) > MaxSignalSize {
			t.Fatalf("encoding of %d bytes", len(enc))
		}
	})
}

// TestSignalVector checks the candidate-update vector of docs/protocol.md
// 2.4, and the size members before the flags accept.
func TestSignalVector(t *testing.T) {
	b, err := appendSignal(nil, &signal{Type: sigAnswer, Session: 42, Ufrag: "u", Pwd: "p",
		Candidates: []string{"1 1 udp 2130706431 10.1.0.2 41641 typ host"}, Flags: flagUpdates})
	if err != nil {
		t.Fatal(err)
	}
	const want = "0102000000000000002a01750170012a3120312075647020323133303730363433312031302e312e302e322034313634312074797020686f737401"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("encoding:\n got %s\nwant %s", got, want)
	}
	if maxSignalSizeNoFlags != 2617 {
		t.Fatalf("maxSignalSizeNoFlags = %d; docs/protocol.md 2.4 says 2,617", maxSignalSizeNoFlags)
	}
}
