package resolver

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/plures/plurenet/internal/testkit"
	"golang.org/x/time/rate"
)

// rrStrings renders a section without TTLs' whitespace differences.
func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	return out
}

func TestAnswers(t *testing.T) {
	srv := serve(t, Config{})
	soa := "home.plurenet. 5 IN SOA home.plurenet. hostmaster.home.plurenet. 2 3600 600 86400 5"
	for _, tc := range []struct {
		name   string
		qname  string
		qtype  uint16
		edns   uint16
		rcode  int
		answer []string
		ns     []string // nil: not checked; empty: must be empty
	}{
		{name: "A", qname: "laptop.home.plurenet.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answer: []string{"laptop.home.plurenet. 5 IN A 100.64.0.1"}, ns: []string{}},
		{name: "AAAA", qname: "nas.home.plurenet.", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess,
			answer: []string{"nas.home.plurenet. 5 IN AAAA fd12:3456:789a::2"}},
		{name: "mixed case is answered as asked", qname: "LapTop.Home.PLURENET.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answer: []string{"LapTop.Home.PLURENET. 5 IN A 100.64.0.1"}},
		{name: "ANY gives both families", qname: "laptop.home.plurenet.", qtype: dns.TypeANY, rcode: dns.RcodeSuccess,
			answer: []string{"laptop.home.plurenet. 5 IN A 100.64.0.1", "laptop.home.plurenet. 5 IN AAAA fd12:3456:789a::1"}},
		{name: "other type is NODATA with SOA", qname: "laptop.home.plurenet.", qtype: dns.TypeMX, rcode: dns.RcodeSuccess,
			ns: []string{soa}},
		{name: "key label", qname: "laptop-01010101.home.plurenet.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answer: []string{"laptop-01010101.home.plurenet. 5 IN A 100.64.0.1"}},
		{name: "unknown member", qname: "db.home.plurenet.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "deeper name", qname: "x.laptop.home.plurenet.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "ambiguous name resolves to no one", qname: "raspberrypi.home.plurenet.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "each duplicate by key label", qname: "raspberrypi-04040404.home.plurenet.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answer: []string{"raspberrypi-04040404.home.plurenet. 5 IN A 100.64.0.4"}},
		{name: "apex SOA", qname: "home.plurenet.", qtype: dns.TypeSOA, rcode: dns.RcodeSuccess, answer: []string{soa}},
		{name: "apex other type", qname: "home.plurenet.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, ns: []string{soa}},
		{name: "outside the suffix is refused", qname: "example.com.", qtype: dns.TypeA, rcode: dns.RcodeRefused, ns: []string{}},
		{name: "a suffix lookalike is refused", qname: "laptop.xhome.plurenet.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "the parent is refused", qname: "plurenet.", qtype: dns.TypeSOA, rcode: dns.RcodeRefused},
		{name: "PTR v4", qname: "1.0.64.100.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeSuccess,
			answer: []string{"1.0.64.100.in-addr.arpa. 5 IN PTR laptop.home.plurenet."}},
		{name: "PTR of a duplicate gives its key label", qname: "3.0.64.100.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeSuccess,
			answer: []string{"3.0.64.100.in-addr.arpa. 5 IN PTR raspberrypi-03030303.home.plurenet."}},
		{name: "PTR v6", qname: "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeSuccess,
			answer: []string{"2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa. 5 IN PTR nas.home.plurenet."}},
		{name: "PTR of an address no member has", qname: "9.0.64.100.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeNameError,
			ns: []string{"64.100.in-addr.arpa. 5 IN SOA home.plurenet. hostmaster.home.plurenet. 2 3600 600 86400 5"}},
		{name: "PTR of a v6 address no member has", qname: "9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeNameError,
			ns: []string{"a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa. 5 IN SOA home.plurenet. hostmaster.home.plurenet. 2 3600 600 86400 5"}},
		{name: "A on a reverse name is NODATA", qname: "1.0.64.100.in-addr.arpa.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, answer: nil},
		{name: "reverse name above members is NODATA", qname: "64.100.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeSuccess, answer: nil},
		{name: "reverse name above no member", qname: "65.100.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeNameError},
		{name: "malformed reverse name in the zone", qname: "x.1.0.64.100.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeNameError},
		{name: "reverse outside the overlay is refused", qname: "1.0.0.10.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeRefused},
		{name: "reverse above the overlay prefix is refused", qname: "100.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeRefused},
		{name: "EDNS0", qname: "laptop.home.plurenet.", qtype: dns.TypeA, edns: 4096, rcode: dns.RcodeSuccess,
			answer: []string{"laptop.home.plurenet. 5 IN A 100.64.0.1"}},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				addr := srv.udp
				if network == "tcp" {
					addr = srv.tcp
				}
				r, err := query(t, network, addr, tc.qname, tc.qtype, tc.edns)
				if err != nil {
					t.Fatal(err)
				}
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if !r.Authoritative || r.RecursionAvailable {
					t.Errorf("AA %v RA %v, want AA and no RA", r.Authoritative, r.RecursionAvailable)
				}
				if got := rrStrings(r.Answer); !slices.Equal(got, tc.answer) {
					t.Errorf("answer %q, want %q", got, tc.answer)
				}
				if tc.ns != nil {
					if got := rrStrings(r.Ns); !slices.Equal(got, tc.ns) {
						t.Errorf("authority %q, want %q", got, tc.ns)
					}
				}
				opt := r.IsEdns0()
				switch {
				case tc.edns == 0 && opt != nil:
					t.Errorf("OPT in the answer to a query without one")
				case tc.edns != 0 && (opt == nil || opt.UDPSize() != maxUDPAnswer):
					t.Errorf("OPT %v, want one offering %d bytes", opt, maxUDPAnswer)
				}
			})
		}
	}
}

func TestEDNSAndClass(t *testing.T) {
	srv := serve(t, Config{})
	for _, tc := range []struct {
		name  string
		edit  func(*dns.Msg)
		rcode int
	}{
		{"EDNS version 1 gets BADVERS", func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }, dns.RcodeBadVers},
		{"CHAOS class is refused", func(m *dns.Msg) {
			m.Question[0] = dns.Question{Name: "version.bind.", Qtype: dns.TypeTXT, Qclass: dns.ClassCHAOS}
		}, dns.RcodeRefused},
		{"NOTIFY is not implemented", func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }, dns.RcodeNotImplemented},
		{"UPDATE is not implemented", func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }, dns.RcodeNotImplemented},
		{"two questions are a format error", func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }, dns.RcodeFormatError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion("laptop.home.plurenet.", dns.TypeA)
			tc.edit(m)
			c := &dns.Client{Timeout: 5 * time.Second}
			r, _, err := c.Exchange(m, srv.udp)
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.rcode || len(r.Answer) != 0 {
				t.Fatalf("rcode %s with %d answers, want %s and none", dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tc.rcode])
			}
		})
	}
}

func TestUpdate(t *testing.T) {
	srv := serve(t, Config{})
	serial := func() uint32 {
		r, err := query(t, "udp", srv.udp, "home.plurenet.", dns.TypeSOA, 0)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("SOA: %v %v", r, err)
		}
		return r.Answer[0].(*dns.SOA).Serial
	}
	before := serial()
	// laptop leaves; one raspberrypi leaves, so the other gets the name.
	if err := srv.s.Update(testTable(t, testMember(2, "nas"), testMember(3, "raspberrypi"))); err != nil {
		t.Fatal(err)
	}
	if r, err := query(t, "udp", srv.udp, "laptop.home.plurenet.", dns.TypeA, 0); err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("laptop after it left: %v %v, want NXDOMAIN", r, err)
	}
	r, err := query(t, "udp", srv.udp, "raspberrypi.home.plurenet.", dns.TypeA, 0)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "100.64.0.3" {
		t.Fatalf("raspberrypi once unique: %v %v, want 100.64.0.3", r, err)
	}
	if after := serial(); after != before+1 {
		t.Fatalf("SOA serial %d after one update from %d", after, before)
	}
	wrong := testTableSuffix(t, "other.plurenet")
	if err := srv.s.Update(wrong); err == nil {
		t.Fatal("Update accepted a table of another suffix")
	}
	if err := srv.s.Update(nil); err == nil {
		t.Fatal("Update accepted a nil table")
	}
}

func TestSourceNotAllowed(t *testing.T) {
	// Only the overlay is allowed, so 127.0.0.1 is an outsider here.
	srv := serve(t, Config{Allow: []netip.Prefix{testV4Prefix, testULA}})

	// UDP: no answer at all.
	m := new(dns.Msg)
	m.SetQuestion("laptop.home.plurenet.", dns.TypeA)
	c := &dns.Client{Timeout: 300 * time.Millisecond}
	if r, _, err := c.Exchange(m, srv.udp); err == nil {
		t.Fatalf("UDP query from outside got an answer: %v", r)
	}
	testkit.Eventually(t, "the UDP query is counted as dropped", func() bool { return srv.s.Stats().DroppedSource >= 1 })

	// TCP: the connection is closed without a byte.
	conn, err := net.Dial("tcp", srv.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dc := &dns.Conn{Conn: conn}
	_ = dc.WriteMsg(m) // may fail if the close already arrived
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if n != 0 || err == nil {
		t.Fatalf("TCP from outside read %d bytes, err %v; want the connection closed", n, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("TCP from outside was left open (read timed out) instead of closed")
	}
	st := srv.s.Stats()
	if st.Answered+st.NXDomain+st.Refused+st.Other != 0 {
		t.Fatalf("stats %+v: something was answered", st)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestRateLimit(t *testing.T) {
	const burst = 3
	// One token an hour after the burst: the test sees exactly the burst.
	srv := serve(t, Config{Rate: rate.Every(time.Hour), Burst: burst})
	conn, err := net.Dial("udp", srv.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const sent = 10
	for i := range sent {
		m := new(dns.Msg)
		m.SetQuestion("laptop.home.plurenet.", dns.TypeA)
		m.Id = uint16(i + 1)
		b, _ := m.Pack()
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, "every query is answered or dropped", func() bool {
		st := srv.s.Stats()
		return st.Answered+st.DroppedRate == sent
	})
	if st := srv.s.Stats(); st.Answered != burst || st.DroppedRate != sent-burst {
		t.Fatalf("stats %+v: want %d answered and %d dropped over rate", st, burst, sent-burst)
	}
	got := 0
	buf := make([]byte, 1500)
	for {
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := conn.Read(buf); err != nil {
			break
		}
		got++
	}
	if got != burst {
		t.Fatalf("received %d answers, want %d", got, burst)
	}
	// TCP shares the source's bucket: the connection is refused too.
	c, err := net.Dial("tcp", srv.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("TCP from a source over its rate: read %d, %v; want EOF", n, err)
	}
}

func TestTCPConnectionCap(t *testing.T) {
	srv := serve(t, Config{MaxTCPConns: 1})
	first, err := net.Dial("tcp", srv.tcp)
	if err != nil {
		t.Fatal(err)
	}
	// A query on the first connection proves it holds the slot.
	d := &dns.Conn{Conn: first}
	m := new(dns.Msg)
	m.SetQuestion("laptop.home.plurenet.", dns.TypeA)
	if err := d.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	second, err := net.Dial("tcp", srv.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := second.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("second connection beyond the cap: read %d, %v; want EOF", n, err)
	}
	if st := srv.s.Stats(); st.DroppedBusy != 1 {
		t.Fatalf("DroppedBusy %d, want 1", st.DroppedBusy)
	}
	first.Close()
	// The slot comes back once the server has seen the close.
	testkit.Eventually(t, "a new connection is served after the first closed", func() bool {
		r, err := query(t, "tcp", srv.tcp, "laptop.home.plurenet.", dns.TypeA, 0)
		return err == nil && len(r.Answer) == 1
	})
}

func TestLifecycle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := New(ctx, Config{Suffix: testSuffix, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServePacketConn(pc); err != nil {
		t.Fatal(err)
	}
	if err := s.ServeListener(l); err != nil {
		t.Fatal(err)
	}
	// Cancelling the context stops serving: the listener is closed.
	cancel()
	testkit.Eventually(t, "the TCP listener is closed after cancel", func() bool {
		c, err := net.Dial("tcp", l.Addr().String())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The UDP socket was closed too.
	if _, err := pc.WriteTo([]byte{0}, pc.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("UDP socket after Close: %v, want net.ErrClosed", err)
	}
	// Serving after Close fails and closes what it was given.
	pc2, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServePacketConn(pc2); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ServePacketConn after Close: %v, want net.ErrClosed", err)
	}
	if _, err := pc2.WriteTo([]byte{0}, pc2.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("socket given after Close is still open: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no suffix", Config{}, "empty"},
		{"suffix not canonical", Config{Suffix: "Home.plurenet"}, "not canonical"},
		{"v4 prefix is v6", Config{Suffix: testSuffix, V4Prefix: testULA}, "not an IPv4 prefix"},
		{"ULA with host bits", Config{Suffix: testSuffix, ULA: mustPrefix("fd12:3456:789a::1/48")}, "not an IPv6 prefix"},
		{"TTL too long", Config{Suffix: testSuffix, TTL: time.Hour}, "out of range"},
		{"TTL under a second", Config{Suffix: testSuffix, TTL: time.Millisecond}, "out of range"},
		{"negative burst", Config{Suffix: testSuffix, Burst: -1}, "positive"},
		{"invalid allow", Config{Suffix: testSuffix, Allow: []netip.Prefix{{}}}, "invalid prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(context.Background(), tc.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("New accepted %+v", tc.cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestRetireSocket: closing one socket the server was given stops serving
// it alone, as the node does when its IPv4 moves.
func TestRetireSocket(t *testing.T) {
	srv := serve(t, Config{})
	extra, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.s.ServePacketConn(extra); err != nil {
		t.Fatal(err)
	}
	if r, err := query(t, "udp", extra.LocalAddr().String(), "laptop.home.plurenet.", dns.TypeA, 0); err != nil || len(r.Answer) != 1 {
		t.Fatalf("extra socket: %v %v", r, err)
	}
	serving := func() int {
		srv.s.mu.Lock()
		defer srv.s.mu.Unlock()
		return len(srv.s.servers)
	}
	if n := serving(); n != 3 {
		t.Fatalf("%d sockets served, want 3", n)
	}
	extra.Close()
	testkit.Eventually(t, "the closed socket is no longer served", func() bool { return serving() == 2 })
	if r, err := query(t, "udp", srv.udp, "laptop.home.plurenet.", dns.TypeA, 0); err != nil || len(r.Answer) != 1 {
		t.Fatalf("the other socket after one was retired: %v %v", r, err)
	}
}
