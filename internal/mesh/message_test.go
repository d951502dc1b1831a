package mesh

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"", true},
		{"alice-laptop", true},
		{"Home_Server.2", true},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
		{"a b", false},
		{"a/b", false},
		{"é", false},
		{"a\x00", false},
	} {
		if err := ValidName(c.name); (err == nil) != c.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

// announceBody encodes a known-good announce body for mutation.
func announceBody(t testing.TB) []byte {
	t.Helper()
	m := vecAnnounceMessage(t)
	b, err := appendAnnounce(nil, &m.Announce)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseAnnounce(t *testing.T) {
	good := announceBody(t)
	want := vecAnnounceMessage(t).Announce
	nameAt := announceFixedLen // offset of the name length byte
	candAt := nameAt + 1 + len(want.Name)
	with := func(i int, v byte) []byte {
		b := slices.Clone(good)
		b[i] = v
		return b
	}
	mapped := slices.Clone(good)
	copy(mapped[4:20], netip.MustParseAddr("::ffff:192.0.2.1").AsSlice())

	for _, c := range []struct {
		name string
		body []byte
		ok   bool
		pin  bool
	}{
		{"good", good, true, false},
		{"trailing extension bytes ignored", append(slices.Clone(good), 0x07, 0x02, 0xaa, 0xbb), true, false},
		{"pinned flag", with(20, flagPinnedV4), true, true},
		{"unknown flag bits ignored", with(20, 0xfc), true, false},
		{"owned flag without its fields", with(20, flagOwned), false, false},
		{"empty", nil, false, false},
		{"fixed part only", good[:announceFixedLen], false, false},
		{"IPv4-mapped IPv6", mapped, false, false},
		{"name length over limit", with(nameAt, MaxNameLen+1), false, false},
		{"name truncated", good[:nameAt+3], false, false},
		{"name with bad byte", with(nameAt+1, ' '), false, false},
		{"candidate count missing", good[:candAt], false, false},
		{"too many candidates", with(candAt, MaxCandidates+1), false, false},
		{"more candidates than present", with(candAt, 3), false, false},
		{"candidate length over limit", with(candAt+1, MaxCandidateLen+1), false, false},
		{"empty candidate", with(candAt+1, 0), false, false},
		{"candidate not printable", with(candAt+2, 0x7f), false, false},
		{"last candidate truncated", good[:len(good)-1], false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := parseBody(KindAnnounce, c.body)
			if !c.ok {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("got %+v, %v; want ErrMalformed", m.Announce, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w := want
			w.PinnedV4 = c.pin
			a := m.Announce
			if a.V4 != w.V4 || a.V6 != w.V6 || a.PinnedV4 != w.PinnedV4 || a.Name != w.Name || !slices.Equal(a.Candidates, w.Candidates) {
				t.Fatalf("got %+v, want %+v", a, w)
			}
		})
	}
}

func TestParseBodyKinds(t *testing.T) {
	for _, c := range []struct {
		name string
		kind Kind
		body []byte
		ok   bool
	}{
		{"leave empty", KindLeave, nil, true},
		{"leave with future fields", KindLeave, []byte{1, 2, 3}, true},
		{"signal", KindSignal, []byte("x"), true},
		{"kind 0", 0, nil, false},
		{"document", KindDocument, []byte{1}, true},
		{"forward empty", KindForward, nil, false},
		{"kind 6", 6, nil, false},
		{"kind 255", 255, []byte{1}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseBody(c.kind, c.body)
			if (err == nil) != c.ok {
				t.Fatalf("parseBody = %v, want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
		})
	}
}

// FuzzParseBody checks the body decoder on arbitrary input: no panic, every
// error is ErrMalformed, and every accepted announce re-encodes to a body
// that decodes to the same announce.
func FuzzParseBody(f *testing.F) {
	f.Add(byte(KindAnnounce), announceBody(f))
	f.Add(byte(KindLeave), []byte{})
	f.Add(byte(KindSignal), []byte("sdp"))
	f.Add(byte(KindAnnounce), make([]byte, announceFixedLen+2))
	owned := vecAnnounceMessage(f).Announce
	owned.Owned = &OwnedFields{Cert: []byte("cert"), Docs: []DocVersion{{Kind: 1, Version: 3}}}
	if b, err := appendAnnounce(nil, &owned); err == nil {
		f.Add(byte(KindAnnounce), b)
	}
	f.Add(byte(KindDocument), []byte("doc"))
	f.Add(byte(KindForward), forwardBody(f))
	f.Fuzz(func(t *testing.T, kind byte, body []byte) {
		m, err := parseBody(Kind(kind), body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if Kind(kind) == KindForward {
			fw := m.Forward
			enc, err := appendForward(nil, &fw)
			if err != nil {
				t.Fatalf("accepted forward does not re-encode: %v (%+v)", err, fw)
			}
			back, err := parseBody(KindForward, enc)
			if err != nil || back.Forward.Addr != fw.Addr || !bytes.Equal(back.Forward.Sealed, fw.Sealed) {
				t.Fatalf("re-decoded %+v, %v; want %+v", back.Forward, err, fw)
			}
			return
		}
		if Kind(kind) != KindAnnounce {
			return
		}
		a := m.Announce
		if len(a.Name) > MaxNameLen || len(a.Candidates) > MaxCandidates {
			t.Fatalf("accepted out-of-bounds announce %+v", a)
		}
		enc, err := appendAnnounce(nil, &a)
		if err != nil {
			t.Fatalf("accepted announce does not re-encode: %v (%+v)", err, a)
		}
		back, err := parseBody(KindAnnounce, enc)
		if err != nil {
			t.Fatal(err)
		}
		b := back.Announce
		if b.V4 != a.V4 || b.V6 != a.V6 || b.PinnedV4 != a.PinnedV4 || b.Name != a.Name || !slices.Equal(b.Candidates, a.Candidates) {
			t.Fatalf("re-decoded %+v, want %+v", b, a)
		}
	})
}

func TestAnnounceOwnedFields(t *testing.T) {
	a := vecAnnounceMessage(t).Announce
	a.Owned = &OwnedFields{Cert: bytes.Repeat([]byte{7}, 700), Docs: []DocVersion{{Kind: 1, Version: 42}}}
	b, err := appendAnnounce(nil, &a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseAnnounce(append(b, 9, 9)) // a later version's fields
	if err != nil {
		t.Fatal(err)
	}
	if got.Owned == nil || !bytes.Equal(got.Owned.Cert, a.Owned.Cert) || !slices.Equal(got.Owned.Docs, a.Owned.Docs) {
		t.Fatalf("owned fields: got %+v, want %+v", got.Owned, a.Owned)
	}
	for i := len(b) - 1; i > len(b)-1-9-1-700-2; i -= 97 {
		if _, err := parseAnnounce(b[:i]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("owned fields cut at %d of %d: %v, want ErrMalformed", i, len(b), err)
		}
	}
	a.Owned.Cert = make([]byte, MaxCertLen+1)
	if _, err := appendAnnounce(nil, &a); err == nil {
		t.Fatal("sealed a certificate over MaxCertLen")
	}
}
