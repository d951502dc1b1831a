//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/netcheck"
)

// TestLabNetcheck runs "plurenet netcheck --json" behind four routers, with
// the lab relay and a second STUN server on the internet, and checks each
// verdict: an easy home NAT (endpoint-independent) and a symmetric NAT
// whose router maps ports (miniupnpd) allow direct paths, a bare symmetric
// NAT allows them only to members with easy NATs, and a corporate firewall
// (TCP 443 out, no UDP) means relay only, with the relay still answering.
func TestLabNetcheck(t *testing.T) {
	m := newLabMesh(t)
	stun2 := m.lab.Host("stun2", m.lab.Internet())
	waitOutput(t, stun2.Start(context.Background(), m.bin, "relay", "--listen", fmt.Sprintf("0.0.0.0:%d", labRelayPort)), "plurenet relay listening on")
	args := []string{"netcheck", "--json", "--relay", m.relayURL,
		"--stun", netip.AddrPortFrom(m.relayHost.Addr(), labSTUNPort).String(),
		"--stun", netip.AddrPortFrom(stun2.Addr(), labSTUNPort).String()}

	easy := m.lab.NATRouter("r1", netlab.RouterConfig{})
	sym := m.lab.NATRouter("r2", netlab.RouterConfig{Random: true})
	office := m.lab.NATRouter("r4", netlab.RouterConfig{})
	office.Firewall(netlab.Corporate)
	tests := []struct {
		name        string
		router      *netlab.Router
		portMapper  bool
		wantUDP     bool
		wantMapping string
		wantVerdict string
	}{
		{"easy", easy, false, true, netcheck.MappingIndependent, netcheck.VerdictDirect},
		{"symmetric", sym, false, true, netcheck.MappingDependent, netcheck.VerdictEasyOnly},
		{"symmetric with miniupnpd", nil, true, true, netcheck.MappingDependent, netcheck.VerdictDirect},
		{"corporate", office, false, false, netcheck.MappingUnknown, netcheck.VerdictRelayOnly},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.router
			if tt.portMapper {
				if why := netlab.PortMapperMissing(); why != "" {
					t.Skip(why)
				}
				r = m.lab.NATRouter("r3", netlab.RouterConfig{Random: true})
				r.StartPortMapper(netip.AddrPortFrom(m.relayHost.Addr(), labSTUNPort))
			}
			h := m.lab.Host(fmt.Sprintf("h%d", i), r)
			out := labRun(t, h, m.bin, args...)
			var rep netcheck.Report
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("netcheck --json: %v\n%s", err, out)
			}
			t.Logf("%s: udp %v, mapping %s, verdict %s: %s", tt.name, rep.UDP, rep.Mapping, rep.Verdict, rep.Summary)
			if rep.UDP != tt.wantUDP || rep.Mapping != tt.wantMapping || rep.Verdict != tt.wantVerdict {
				t.Fatalf("udp %v, mapping %q, verdict %q; want %v, %q, %q\n%s", rep.UDP, rep.Mapping, rep.Verdict, tt.wantUDP, tt.wantMapping, tt.wantVerdict, out)
			}
			if len(rep.Relays) != 1 || rep.Relays[0].Error != "" || rep.Relays[0].HandshakeMs <= 0 {
				t.Errorf("relay: %+v; want it reached", rep.Relays)
			}
			pm := rep.PortMapping
			if pm == nil || pm.Gateway != r.LANAddr().String() || len(pm.Protocols) != 3 {
				t.Fatalf("port mapping report %+v; want all three protocols asked of %s", pm, r.LANAddr())
			}
			for _, p := range pm.Protocols {
				if p.Available != tt.portMapper {
					t.Errorf("%s available = %v (%s); want %v", p.Protocol, p.Available, p.Error, tt.portMapper)
				}
				if p.Available && p.External != "" && p.External != r.Addr().String() {
					t.Errorf("%s reports external address %s; the router's is %s", p.Protocol, p.External, r.Addr())
				}
			}
			if tt.wantUDP && rep.STUN[0].Mapped != "" {
				if a, _ := netip.ParseAddrPort(rep.STUN[0].Mapped); a.Addr() != r.Addr() {
					t.Errorf("STUN saw %s; want the router's WAN address %s", a, r.Addr())
				}
			}
		})
	}
}
