package portmap

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// pcpVectorRequest is a MAP request built by hand from RFC 6887 figures 2
// and 9: map UDP 51898 of 192.168.1.10 for 7200 s, suggesting external port
// 51898 and no address.
const pcpVectorRequest = "02010000" + "00001c20" + "00000000000000000000ffffc0a8010a" + // header
	"0102030405060708090a0b0c" + "11000000" + "cabacaba" + "00000000000000000000ffff00000000" // MAP

// pcpVectorResponse answers it: success, 3600 s, epoch 42, external
// 198.51.100.7:40000.
const pcpVectorResponse = "02810000" + "00000e10" + "0000002a" + "000000000000000000000000" +
	"0102030405060708090a0b0c" + "11000000" + "caba9c40" + "00000000000000000000ffffc6336407"

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPCPMapRequest(t *testing.T) {
	nonce := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	got := appendPCPMap(nil, nonce, netip.MustParseAddr("192.168.1.10"), 51898, netip.AddrPortFrom(netip.Addr{}, 51898), 7200)
	if want := unhex(t, pcpVectorRequest); !bytes.Equal(got, want) {
		t.Fatalf("MAP request\n got % x\nwant % x", got, want)
	}
	ann := appendPCPAnnounce(nil, netip.MustParseAddr("192.168.1.10"))
	if len(ann) != pcpHeader || ann[1] != pcpOpAnnounce || !bytes.Equal(ann[8:], unhex(t, "00000000000000000000ffffc0a8010a")) {
		t.Fatalf("ANNOUNCE request % x", ann)
	}
}

func TestParsePCPResponse(t *testing.T) {
	ok := unhex(t, pcpVectorResponse)
	m, err := parsePCPResponse(ok)
	if err != nil {
		t.Fatal(err)
	}
	want := pcpMessage{opcode: pcpOpMap, lifetime: 3600, epoch: 42, nonce: [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
		protocol: protoUDP, internal: 51898, external: netip.MustParseAddrPort("198.51.100.7:40000")}
	if m != want {
		t.Fatalf("parsed %+v\nwant %+v", m, want)
	}
	withOption := append(bytes.Clone(ok), 0x80, 0, 0, 4, 1, 2, 3, 4) // an option we did not ask for
	if m2, err := parsePCPResponse(withOption); err != nil || m2 != want {
		t.Errorf("with a trailing option: %+v, %v", m2, err)
	}

	bad := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "shorter"},
		{"nat-pmp", []byte{0, 129, 0, 1, 0, 0, 0, 0}, "NAT-PMP"},
		{"short header", ok[:20], "shorter"},
		{"not multiple of 4", append(bytes.Clone(ok), 0), "multiple of 4"},
		{"too long", make([]byte, 1104), "longer"},
		{"version 3", append([]byte{3}, ok[1:]...), "version 3"},
		{"request", append([]byte{2, 1}, ok[2:]...), "request"},
		{"short map", ok[:48], "shorter than 60"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.b
			if tt.name == "too long" {
				b[0], b[1] = pcpVersion, pcpOpMap|pcpResponse
			}
			_, err := parsePCPResponse(b)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v; want one saying %q", err, tt.want)
			}
		})
	}

	// An error answer may leave out the opcode data: its result counts.
	errResp := append([]byte{2, 0x81, 0, 8}, make([]byte, 20)...)
	m, err = parsePCPResponse(errResp)
	if err != nil || m.result != 8 {
		t.Fatalf("error answer: %+v, %v", m, err)
	}
	if got := (pcpError{m.result}).Error(); !strings.Contains(got, "NO_RESOURCES") {
		t.Errorf("error text %q", got)
	}
}

// TestPCPMatch: a MAP answer counts only if it echoes our nonce, protocol
// and port; anything else (another client's, a stale one) is skipped.
func TestPCPMatch(t *testing.T) {
	c := &pcpClient{nonce: [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}
	good, _ := parsePCPResponse(unhex(t, pcpVectorResponse))
	match := c.matchMap(51898)
	if !match(good) {
		t.Fatal("our own answer did not match")
	}
	for name, mut := range map[string]func(*pcpMessage){
		"nonce":    func(m *pcpMessage) { m.nonce[0] ^= 1 },
		"protocol": func(m *pcpMessage) { m.protocol = 6 },
		"port":     func(m *pcpMessage) { m.internal++ },
		"opcode":   func(m *pcpMessage) { m.opcode = pcpOpAnnounce },
	} {
		m := good
		mut(&m)
		if match(m) {
			t.Errorf("an answer with another %s matched", name)
		}
	}
}

func FuzzParsePCPResponse(f *testing.F) {
	f.Add(unhex(f, pcpVectorResponse))
	f.Add(unhex(f, pcpVectorRequest))
	f.Add([]byte{0, 129, 0, 1, 0, 0, 0, 0})
	f.Add(append([]byte{2, 0x80, 0, 0}, make([]byte, 20)...))
	f.Add(append([]byte{2, 0x81, 0, 8}, make([]byte, 20)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parsePCPResponse(b)
		if err != nil {
			if errors.Is(err, errNATPMPOnly) && (len(b) < 2 || b[0] != 0) {
				t.Fatalf("NAT-PMP verdict for % x", b)
			}
			return
		}
		if len(b) < pcpHeader || len(b) > pcpMaxSize || len(b)%4 != 0 || b[0] != pcpVersion || b[1]&pcpResponse == 0 {
			t.Fatalf("accepted a malformed message % x", b)
		}
		if m.opcode == pcpOpMap && m.result == 0 && len(b) < pcpHeader+pcpMapBody {
			t.Fatalf("accepted a successful MAP answer without its data: % x", b)
		}
		if m.external.IsValid() && m.external.Addr().Is4In6() {
			t.Fatalf("external address %s left IPv4-mapped", m.external)
		}
	})
}
