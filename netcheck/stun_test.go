package netcheck

import (
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

func TestClassifyMapping(t *testing.T) {
	own := map[netip.Addr]bool{netip.MustParseAddr("192.0.2.10"): true}
	res := func(mapped ...string) []STUNResult {
		var out []STUNResult
		for _, m := range mapped {
			out = append(out, STUNResult{Mapped: m})
		}
		return out
	}
	tests := []struct {
		name string
		in   []STUNResult
		want string
	}{
		{"none answered", res("", ""), MappingUnknown},
		{"one answered", res("198.51.100.7:1000", ""), MappingUnknown},
		{"same", res("198.51.100.7:1000", "198.51.100.7:1000"), MappingIndependent},
		{"other port", res("198.51.100.7:1000", "198.51.100.7:1001"), MappingDependent},
		{"other address", res("198.51.100.7:1000", "198.51.100.8:1000"), MappingDependent},
		{"three, one differs", res("198.51.100.7:1000", "198.51.100.7:1000", "198.51.100.7:2000"), MappingDependent},
		{"own address", res("192.0.2.10:1000"), MappingNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classifyMapping(tt.in, own); got != tt.want {
				t.Fatalf("classifyMapping = %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzMatchSTUN: whatever a STUN server (or anyone) sends, matching it to
// our requests neither panics nor accepts it from the wrong address.
func FuzzMatchSTUN(f *testing.F) {
	server := netip.MustParseAddrPort("192.0.2.1:3478")
	targets := []stunTarget{{server: "s:3478", addr: server}}
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	ids := [][stun.TransactionIDSize]byte{req.TransactionID}
	ok := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: netip.MustParseAddr("198.51.100.7").AsSlice(), Port: 40000})
	f.Add(ok.Raw, true)
	f.Add(ok.Raw, false)
	f.Add(req.Raw, true)
	f.Fuzz(func(t *testing.T, b []byte, fromServer bool) {
		from := netip.MustParseAddrPort("203.0.113.9:3478")
		if fromServer {
			from = server
		}
		i, mapped, matched := matchSTUN(b, from, targets, ids)
		if !matched {
			return
		}
		if !fromServer || i != 0 || !mapped.IsValid() || mapped.Port() == 0 {
			t.Fatalf("matched %d %s from %s", i, mapped, from)
		}
	})
}
