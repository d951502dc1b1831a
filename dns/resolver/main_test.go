package resolver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/plures/plurenet/dns/names"
	"github.com/plures/plurenet/internal/nodekey"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testSuffix = "home.plurenet"

var (
	testV4Prefix = netip.MustParsePrefix("100.64.0.0/10")
	testULA      = netip.MustParsePrefix("fd12:3456:789a::/48")
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testKey(b byte) nodekey.Public { return nodekey.Public{b, b, b, b} }

// testMember is member b: 100.64.0.b and fd12:3456:789a::b.
func testMember(b byte, name string) names.Member {
	return names.Member{
		Key:  testKey(b),
		Name: name,
		V4:   netip.AddrFrom4([4]byte{100, 64, 0, b}),
		V6:   netip.AddrFrom16([16]byte{0xfd, 0x12, 0x34, 0x56, 0x78, 0x9a, 15: b}),
	}
}

func testTable(tb testing.TB, ms ...names.Member) *names.Table {
	tb.Helper()
	t, err := names.NewTable(testSuffix, ms)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// defaultMembers: laptop (1), nas (2), two raspberrypi (3, 4).
func defaultMembers() []names.Member {
	return []names.Member{testMember(1, "laptop"), testMember(2, "nas"), testMember(3, "raspberrypi"), testMember(4, "raspberrypi")}
}

// served is a server listening on 127.0.0.1 over UDP and TCP.
type served struct {
	s        *Server
	udp, tcp string
}

// serve starts a server (see start) on fresh 127.0.0.1 sockets.
func serve(tb testing.TB, cfg Config) served {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pc.Close()
		tb.Fatal(err)
	}
	s := start(tb, cfg, pc, l)
	return served{s: s, udp: pc.LocalAddr().String(), tcp: l.Addr().String()}
}

// start runs a server with cfg (Suffix, prefixes and logger filled in
// when empty) and the default members on pc and l; the test's cleanup
// closes it.
func start(tb testing.TB, cfg Config, pc net.PacketConn, l net.Listener) *Server {
	tb.Helper()
	if cfg.Suffix == "" {
		cfg.Suffix = testSuffix
	}
	if !cfg.V4Prefix.IsValid() {
		cfg.V4Prefix, cfg.ULA = testV4Prefix, testULA
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		pc.Close()
		l.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	if err := s.Update(testTable(tb, defaultMembers()...)); err != nil {
		tb.Fatal(err)
	}
	if err := s.ServePacketConn(pc); err != nil {
		l.Close()
		tb.Fatal(err)
	}
	if err := s.ServeListener(l); err != nil {
		tb.Fatal(err)
	}
	return s
}

// query sends one question over network ("udp" or "tcp") and returns the
// answer; edns > 0 adds an OPT record offering that many bytes.
func query(tb testing.TB, network, addr, name string, qtype uint16, edns uint16) (*dns.Msg, error) {
	tb.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func testTableSuffix(tb testing.TB, suffix string) *names.Table {
	tb.Helper()
	t, err := names.NewTable(suffix, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}
