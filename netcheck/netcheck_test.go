package netcheck

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/plures/plurenet/internal/stuntest"
	"github.com/plures/plurenet/portmap"
	"github.com/plures/plurenet/relayserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// silentServer is a UDP port that never answers.
func silentServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func relayURL(t *testing.T) string {
	t.Helper()
	srv, err := relayserver.New(relayserver.Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		srv.Close()
		ts.CloseClientConnections()
		ts.Close()
	})
	return "ws" + strings.TrimPrefix(ts.URL, "http")
}

// TestRun runs the checks against STUN servers on loopback that tell the
// truth (this host's own address: no NAT), lie the way servers behind the
// two kinds of NAT would, or never answer; and a relay on loopback.
func TestRun(t *testing.T) {
	honest1, honest2 := stuntest.Server(t), stuntest.Server(t)
	sameA, sameB := stuntest.Reporting(t, netip.MustParseAddrPort("198.51.100.7:40000")), stuntest.Reporting(t, netip.MustParseAddrPort("198.51.100.7:40000"))
	diffB := stuntest.Reporting(t, netip.MustParseAddrPort("198.51.100.7:40001"))
	silent := silentServer(t)
	relay := relayURL(t)

	tests := []struct {
		name        string
		stun        []string
		wantUDP     bool
		wantMapping string
		wantVerdict string
	}{
		{"no nat", []string{honest1, honest2}, true, MappingNone, VerdictDirect},
		{"endpoint-independent", []string{sameA, sameB}, true, MappingIndependent, VerdictDirect},
		{"endpoint-dependent", []string{sameA, diffB}, true, MappingDependent, VerdictEasyOnly},
		{"one server", []string{sameA}, true, MappingUnknown, VerdictUnknown},
		{"one answers", []string{sameA, silent}, true, MappingUnknown, VerdictUnknown},
		{"udp blocked", []string{silent}, false, MappingUnknown, VerdictRelayOnly},
		{"no stun", nil, false, MappingUnknown, VerdictUnknown},
		{"bad server", []string{"no-port"}, false, MappingUnknown, VerdictRelayOnly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := Run(context.Background(), Config{STUNServers: tt.stun, Relays: []string{relay}, NoPortMapping: true, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			if r.UDP != tt.wantUDP || r.Mapping != tt.wantMapping || r.Verdict != tt.wantVerdict {
				t.Fatalf("udp %v, mapping %q, verdict %q (%s); want %v, %q, %q\n%+v",
					r.UDP, r.Mapping, r.Verdict, r.Summary, tt.wantUDP, tt.wantMapping, tt.wantVerdict, r.STUN)
			}
			if len(r.STUN) != len(tt.stun) {
				t.Errorf("%d STUN results for %d servers", len(r.STUN), len(tt.stun))
			}
			if len(r.Relays) != 1 || r.Relays[0].Error != "" || r.Relays[0].HandshakeMs <= 0 {
				t.Errorf("relay result %+v; want a handshake time", r.Relays)
			}
			if r.PortMapping != nil {
				t.Errorf("port mapping checked with NoPortMapping: %+v", *r.PortMapping)
			}
			if r.Summary == "" || r.Version != ReportVersion {
				t.Errorf("summary %q, version %d", r.Summary, r.Version)
			}
		})
	}
}

// TestRunPortMapping: a gateway that speaks nothing gives a report that
// lists every protocol as unavailable, and port mapping turns an
// endpoint-dependent verdict into a direct one.
func TestRunPortMapping(t *testing.T) {
	gw := netip.AddrFrom4([4]byte{127, 77, 0, 1}) // nothing listens there
	r, err := Run(context.Background(), Config{PortMapping: portmap.Config{Gateway: gw, Protocols: []portmap.Protocol{portmap.NATPMP, portmap.PCP}}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	pm := r.PortMapping
	if pm == nil || pm.Gateway != gw.String() || len(pm.Protocols) != 2 {
		t.Fatalf("port mapping report %+v", pm)
	}
	for _, p := range pm.Protocols {
		if p.Available || p.Error == "" {
			t.Errorf("%+v: want unavailable with a reason", p)
		}
	}

	sym := Report{STUN: []STUNResult{{Mapped: "x"}}, UDP: true, Mapping: MappingDependent,
		PortMapping: &PortMappingReport{Protocols: []ProtocolResult{{Protocol: "upnp", Available: true}, {Protocol: "pcp"}}}}
	sym.judge()
	if sym.Verdict != VerdictDirect || !strings.Contains(sym.Summary, "upnp") || strings.Contains(sym.Summary, "pcp") {
		t.Errorf("symmetric NAT with UPnP: %q: %s", sym.Verdict, sym.Summary)
	}
	// IPv6 UDP adds direct paths to an IPv4 verdict that has none.
	blocked := Report{STUN: []STUNResult{{Error: "timeout"}}}
	blocked.judge()
	withV6 := Report{STUN: []STUNResult{{Error: "timeout"}}, IPv6: IPv6Report{UDP: true}}
	withV6.judge()
	if strings.Contains(blocked.Summary, "IPv6") || !strings.Contains(withV6.Summary, "Over IPv6") || withV6.Verdict != VerdictRelayOnly {
		t.Errorf("IPv6 note: without %q, with %q (%s)", blocked.Summary, withV6.Summary, withV6.Verdict)
	}
}

// TestRunIPv6: a STUN server with an IPv6 address is asked over IPv6 too,
// and one without is not.
func TestRunIPv6(t *testing.T) {
	v6 := stuntest.ServerOn(t, "[::1]:0")
	v4 := stuntest.Server(t)
	r, err := Run(context.Background(), Config{STUNServers: []string{v4, v6}, NoPortMapping: true, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if !r.IPv6.UDP || len(r.IPv6.STUN) != 1 || r.IPv6.STUN[0].Server != v6 || !strings.HasPrefix(r.IPv6.STUN[0].Mapped, "[::1]:") {
		t.Fatalf("IPv6 report %+v; want %s answering over IPv6", r.IPv6, v6)
	}
	if r.IPv6.Global == nil {
		t.Error("ipv6.global is null; want a list (empty when there is none)")
	}
	for _, a := range r.IPv6.Global {
		if p := netip.MustParseAddr(a); !isGlobal6(p) {
			t.Errorf("%s listed as global", a)
		}
	}
	// Over IPv4 the IPv6-only server has no address, and the other sees
	// one of this host's own: no NAT.
	if !r.UDP || r.Mapping != MappingNone || len(r.STUN) != 2 {
		t.Errorf("udp %v mapping %q", r.UDP, r.Mapping)
	}
}
