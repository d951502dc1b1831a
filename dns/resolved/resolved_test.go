package resolved

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/plures/plurenet/dns/resolved/resolvedtest"
)

type call = resolvedtest.Call

// privateBus, serveFake: the fake resolve1 of package resolvedtest.
var (
	privateBus = resolvedtest.PrivateBus
	serveFake  = resolvedtest.Serve
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var (
	v4Server = netip.MustParseAddrPort("100.64.0.1:53")
	v6Server = netip.MustParseAddrPort("[fd12:3456:789a::1]:53")
	domains  = []string{"home.plurenet", "64.100.in-addr.arpa", "a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa"}
)

func config(addr string) Config {
	return Config{Index: 7, Servers: []netip.AddrPort{v4Server, v6Server}, Domains: domains, BusAddress: addr, Logger: quiet()}
}

func wantDomains() []resolvedtest.LinkDomain {
	var out []resolvedtest.LinkDomain
	for _, d := range domains {
		out = append(out, resolvedtest.LinkDomain{Domain: d, RoutingOnly: true})
	}
	return out
}

func checkCalls(t *testing.T, got, want []call) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("resolved got %d calls, want %d:\n got  %+v\n want %+v", len(got), len(want), got, want)
	}
	for i := range want {
		if got[i].Method != want[i].Method || got[i].Index != want[i].Index || !reflect.DeepEqual(got[i].Args, want[i].Args) {
			t.Fatalf("call %d: got %s(%d, %+v), want %s(%d, %+v)", i, got[i].Method, got[i].Index, got[i].Args, want[i].Method, want[i].Index, want[i].Args)
		}
	}
}

func TestRegisterAndRevert(t *testing.T) {
	addr := privateBus(t)
	fake := &resolvedtest.Fake{}
	serveFake(t, addr, fake)

	l, err := Register(context.Background(), config(addr))
	if err != nil {
		t.Fatal(err)
	}
	// Domains and default-route before the servers, so nothing is routed
	// to the mesh resolver before its domains are known.
	checkCalls(t, fake.Taken(), []call{
		{Method: "SetLinkDomains", Index: 7, Args: []any{wantDomains()}},
		{Method: "SetLinkDefaultRoute", Index: 7, Args: []any{false}},
		{Method: "SetLinkDNSSEC", Index: 7, Args: []any{"no"}},
		{Method: "SetLinkDNSOverTLS", Index: 7, Args: []any{"no"}},
		{Method: "SetLinkDNS", Index: 7, Args: []any{[]resolvedtest.LinkDNS{{Family: afInet, Address: []byte{100, 64, 0, 1}}, {Family: afInet6, Address: v6Server.Addr().AsSlice()}}}},
	})

	// The node's IPv4 moved.
	moved := netip.MustParseAddrPort("100.64.0.9:53")
	if err := l.SetServers(context.Background(), []netip.AddrPort{moved, v6Server}); err != nil {
		t.Fatal(err)
	}
	checkCalls(t, fake.Taken(), []call{
		{Method: "SetLinkDNS", Index: 7, Args: []any{[]resolvedtest.LinkDNS{{Family: afInet, Address: []byte{100, 64, 0, 9}}, {Family: afInet6, Address: v6Server.Addr().AsSlice()}}}},
	})

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checkCalls(t, fake.Taken(), []call{{Method: "RevertLink", Index: 7}})
	if err := l.SetServers(context.Background(), []netip.AddrPort{v4Server}); err == nil {
		t.Fatal("SetServers after Close succeeded")
	}
}

func TestRegisterOtherPort(t *testing.T) {
	addr := privateBus(t)
	fake := &resolvedtest.Fake{}
	serveFake(t, addr, fake)
	cfg := config(addr)
	cfg.Servers = []netip.AddrPort{netip.MustParseAddrPort("100.64.0.1:5353")}
	l, err := Register(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	calls := fake.Taken()
	checkCalls(t, calls[len(calls)-1:], []call{
		{Method: "SetLinkDNSEx", Index: 7, Args: []any{[]resolvedtest.LinkDNSEx{{Family: afInet, Address: []byte{100, 64, 0, 1}, Port: 5353}}}},
	})
}

// TestOldResolved: a resolved that predates a method answers
// UnknownMethod. The optional settings are skipped; a port other than 53
// without SetLinkDNSEx is an error that says what to do, and the link is
// reverted.
func TestOldResolved(t *testing.T) {
	addr := privateBus(t)
	fake := &resolvedtest.Fake{Fail: map[string]string{
		"SetLinkDefaultRoute": errUnknownMethod,
		"SetLinkDNSOverTLS":   errUnknownMethod,
		"SetLinkDNSEx":        errUnknownMethod,
	}}
	serveFake(t, addr, fake)
	l, err := Register(context.Background(), config(addr))
	if err != nil {
		t.Fatalf("Register with optional settings unknown: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fake.Taken()

	cfg := config(addr)
	cfg.Servers = []netip.AddrPort{netip.MustParseAddrPort("100.64.0.1:5353")}
	_, err = Register(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "port 53") {
		t.Fatalf("Register on port 5353 with an old resolved: %v, want advice to use port 53", err)
	}
	calls := fake.Taken()
	if last := calls[len(calls)-1]; last.Method != "RevertLink" {
		t.Fatalf("after the failure the last call was %s, want RevertLink", last.Method)
	}
}

func TestPermissionDenied(t *testing.T) {
	addr := privateBus(t)
	fake := &resolvedtest.Fake{Fail: map[string]string{"SetLinkDomains": errAccessDenied}}
	serveFake(t, addr, fake)
	_, err := Register(context.Background(), config(addr))
	var ue *UnavailableError
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("Register refused by polkit: %v, want a permission error (not 'unavailable')", err)
	}
	checkCalls(t, fake.Taken(), []call{
		{Method: "SetLinkDomains", Index: 7, Args: []any{wantDomains()}},
		{Method: "RevertLink", Index: 7},
	})
}

func TestUnavailable(t *testing.T) {
	t.Run("no resolved on the bus", func(t *testing.T) {
		addr := privateBus(t)
		_, err := Register(context.Background(), config(addr))
		var ue *UnavailableError
		if !errors.As(err, &ue) || !strings.Contains(ue.Reason, "not running") {
			t.Fatalf("Register without resolved: %v, want *UnavailableError saying it is not running", err)
		}
	})
	t.Run("no bus", func(t *testing.T) {
		addr := "unix:path=" + filepath.Join(t.TempDir(), "no-such-bus")
		_, err := Register(context.Background(), config(addr))
		var ue *UnavailableError
		if !errors.As(err, &ue) || !strings.Contains(ue.Reason, "no D-Bus") {
			t.Fatalf("Register without a bus: %v, want *UnavailableError", err)
		}
	})
}

func TestRegisterConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Servers: []netip.AddrPort{v4Server}, Domains: domains},
		{Index: 7, Domains: domains},
		{Index: 7, Servers: []netip.AddrPort{v4Server}},
	} {
		if _, err := Register(context.Background(), cfg); err == nil {
			t.Errorf("Register accepted %+v", cfg)
		}
	}
}

func TestHint(t *testing.T) {
	h := Hint(netip.MustParseAddrPort("100.64.0.1:53"), "home.plurenet")
	for _, want := range []string{"100.64.0.1:53", "server=/home.plurenet/100.64.0.1#53", "dig @100.64.0.1 -p 53 NAME.home.plurenet"} {
		if !strings.Contains(h, want) {
			t.Errorf("hint %q lacks %q", h, want)
		}
	}
}

func TestUsedByHost(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stub := file("stub", "# managed by resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n")
	upstream := file("upstream", "nameserver 192.168.1.1\n; nameserver 127.0.0.53\n")
	nssResolve := file("nss-resolve", "passwd: files\nhosts: files mymachines resolve [!UNAVAIL=return] dns myhostname\n")
	nssDNS := file("nss-dns", "hosts: files dns # resolve\n")
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		resolv, nss string
		want        bool
	}{
		{stub, nssDNS, true},
		{upstream, nssResolve, true},
		{upstream, nssDNS, false},
		{missing, missing, false},
	} {
		if got := UsedByHost(tc.resolv, tc.nss); got != tc.want {
			t.Errorf("UsedByHost(%s, %s) = %v, want %v", filepath.Base(tc.resolv), filepath.Base(tc.nss), got, tc.want)
		}
	}
}
