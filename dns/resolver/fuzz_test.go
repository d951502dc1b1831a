package resolver

import (
	"context"
	"net"
	"testing"

	"github.com/miekg/dns"
)

// recorder is a dns.ResponseWriter that keeps what the handler wrote.
type recorder struct {
	remote net.Addr
	msgs   []*dns.Msg
}

func (r *recorder) LocalAddr() net.Addr         { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr        { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error   { r.msgs = append(r.msgs, m); return nil }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}

func packed(f *testing.F, name string, qtype uint16, edns uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, true)
	}
	b, err := m.Pack()
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzServeDNS feeds arbitrary bytes to the query path: whatever parses
// as a DNS message goes to the handler (even what the accept check would
// stop first), which must answer exactly once with a message that packs,
// parses, matches the query's ID and fits what the client can take.
func FuzzServeDNS(f *testing.F) {
	s, err := New(context.Background(), Config{Suffix: testSuffix, V4Prefix: testV4Prefix, ULA: testULA, Logger: quiet()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	if err := s.Update(testTable(f, defaultMembers()...)); err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{
		packed(f, "laptop.home.plurenet.", dns.TypeA, 0),
		packed(f, "LAPTOP.home.plurenet.", dns.TypeANY, 1232),
		packed(f, "raspberrypi-03030303.home.plurenet.", dns.TypeAAAA, 4096),
		packed(f, "home.plurenet.", dns.TypeSOA, 0),
		packed(f, "db.home.plurenet.", dns.TypeA, 512),
		packed(f, "1.0.64.100.in-addr.arpa.", dns.TypePTR, 0),
		packed(f, "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa.", dns.TypePTR, 1232),
		packed(f, "64.100.in-addr.arpa.", dns.TypeANY, 0),
		packed(f, "example.com.", dns.TypeA, 0),
		{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, // header only, no question
		{},
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, tcp bool) {
		req := new(dns.Msg)
		if err := req.Unpack(data); err != nil {
			return // the library drops or FORMERRs what does not parse
		}
		w := &recorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}}
		if tcp {
			w.remote = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}
		}
		s.ServeDNS(w, req)
		if len(w.msgs) != 1 {
			t.Fatalf("%d answers written, want 1", len(w.msgs))
		}
		resp := w.msgs[0]
		b, err := resp.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v\n%v", err, resp)
		}
		if limit := answerLimit(req, w.remote); len(b) > limit {
			t.Fatalf("answer of %d bytes exceeds the client's %d", len(b), limit)
		}
		var back dns.Msg
		if err := back.Unpack(b); err != nil {
			t.Fatalf("answer does not parse back: %v", err)
		}
		if back.Id != req.Id || !back.Response {
			t.Fatalf("answer ID %d response %v, want ID %d and a response", back.Id, back.Response, req.Id)
		}
	})
}

func TestAnswerLimit(t *testing.T) {
	udp := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	withOPT := func(size uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("a.home.plurenet.", dns.TypeA)
		if size > 0 {
			m.SetEdns0(size, false)
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		req    *dns.Msg
		remote net.Addr
		want   int
	}{
		{"UDP without EDNS0", withOPT(0), udp, 512},
		{"UDP offering 4096 gets the cap", withOPT(4096), udp, maxUDPAnswer},
		{"UDP offering 800", withOPT(800), udp, 800},
		{"UDP offering under 512 counts as 512", withOPT(100), udp, 512},
		{"TCP", withOPT(0), tcp, maxTCPAnswer},
	} {
		if got := answerLimit(tc.req, tc.remote); got != tc.want {
			t.Errorf("%s: limit %d, want %d", tc.name, got, tc.want)
		}
	}
}
