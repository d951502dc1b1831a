package resolver

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/plures/plurenet/dns/names"
)

// Message sizes. maxUDPAnswer is what the server advertises in EDNS0 and
// the most it sends over UDP: 1232 bytes fit a 1280-byte IPv6 path (the
// overlay's minimum MTU) without fragments, the DNS Flag Day 2020 value.
// Without EDNS0 a UDP answer is at most 512 bytes (RFC 1035 section 4.2.1);
// over TCP, the 16-bit length prefix is the only limit. Answers here hold
// at most two address records and a SOA, so truncation only ever happens to
// absurd questions.
const (
	maxUDPAnswer = 1232
	maxTCPAnswer = dns.MaxMsgSize
)

// SOA timers other than the TTL. No secondary ever transfers these zones,
// so they only need to be sane values.
const (
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
)

// snapshot is one Update's view: the table and the serial its SOA carries.
type snapshot struct {
	table  *names.Table
	serial uint32
}

// answerer turns a query into an answer from a snapshot; it holds what is
// fixed for the server's life.
type answerer struct {
	suffix string
	v4, v6 netip.Prefix // overlay prefixes; invalid: no reverse answers
	zones  []string     // their reverse zones, for the SOA of negative answers
	ttl    uint32
}

// answer builds the reply to req (already past the accept check: a query
// with one question). The rules:
//
//   - NAME.SUFFIX: A and AAAA from the table, both for ANY; NXDOMAIN when no
//     member answers to NAME (or the name is deeper); NOERROR with no
//     records (NODATA) for other types and for a member without that
//     address family.
//   - SUFFIX itself: its SOA; NODATA for other types.
//   - reverse names inside the overlay prefixes: PTR to the member's first
//     name; NXDOMAIN for addresses of no named member.
//   - anything else: REFUSED, never forwarded.
//
// Negative answers carry the zone's SOA, whose minimum is the TTL, so that
// resolvers cache "no such member" no longer than they cache an address
// (RFC 2308): a member that joins resolves within one TTL.
func (a *answerer) answer(req *dns.Msg, snap snapshot) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = false
	if opt := req.IsEdns0(); opt != nil {
		// The OPT in the answer says what this server can receive, not
		// what the client offered (RFC 6891 section 6.2.3).
		resp.SetEdns0(maxUDPAnswer, false)
		if opt.Version() != 0 {
			resp.Rcode = dns.RcodeBadVers
			return resp
		}
	}
	if len(req.Question) != 1 {
		resp.Rcode = dns.RcodeFormatError
		return resp
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		resp.Rcode = dns.RcodeRefused
		return resp
	}
	name := strings.ToLower(strings.TrimSuffix(q.Name, "."))
	switch {
	case name == a.suffix:
		a.apex(resp, q, snap)
	case strings.HasSuffix(name, "."+a.suffix):
		a.member(resp, q, strings.TrimSuffix(name, "."+a.suffix), snap)
	default:
		a.reverse(resp, q, name, snap)
	}
	return resp
}

func (a *answerer) apex(resp *dns.Msg, q dns.Question, snap snapshot) {
	if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
		resp.Answer = append(resp.Answer, a.soa(a.suffix, snap))
		return
	}
	resp.Ns = append(resp.Ns, a.soa(a.suffix, snap))
}

func (a *answerer) member(resp *dns.Msg, q dns.Question, label string, snap snapshot) {
	e, ok := snap.table.Lookup(label)
	if !ok {
		// Unknown members, deeper names ("x.laptop.SUFFIX") and labels
		// with escapes all land here.
		resp.Rcode = dns.RcodeNameError
		resp.Ns = append(resp.Ns, a.soa(a.suffix, snap))
		return
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: a.ttl}
	}
	if (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY) && e.V4.Is4() {
		resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: e.V4.AsSlice()})
	}
	if (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY) && e.V6.Is6() {
		resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: e.V6.AsSlice()})
	}
	if len(resp.Answer) == 0 {
		resp.Ns = append(resp.Ns, a.soa(a.suffix, snap))
	}
}

func (a *answerer) reverse(resp *dns.Msg, q dns.Question, name string, snap snapshot) {
	p, exact, ok := names.ParseReverse(name)
	var mesh netip.Prefix
	for _, m := range []netip.Prefix{a.v4, a.v6} {
		if ok && m.IsValid() && p.Addr().BitLen() == m.Addr().BitLen() && p.Bits() >= m.Bits() && m.Contains(p.Addr()) {
			mesh = m
		}
	}
	if !mesh.IsValid() {
		resp.Rcode = dns.RcodeRefused
		return
	}
	zone := a.reverseZone(name)
	full := p.Bits() == p.Addr().BitLen()
	switch {
	case !exact:
		resp.Rcode = dns.RcodeNameError
	case full:
		e, named := snap.table.Reverse(p.Addr())
		switch {
		case !named:
			resp.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY:
			resp.Answer = append(resp.Answer, &dns.PTR{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: a.ttl},
				Ptr: e.Names[0] + ".",
			})
			return
		}
	case !snap.table.AnyWithin(p):
		// A partial reverse name exists only above some member's address
		// (RFC 8020: NXDOMAIN says nothing exists below).
		resp.Rcode = dns.RcodeNameError
	}
	resp.Ns = append(resp.Ns, a.soa(zone, snap))
}

// reverseZone returns the reverse zone (of names.ReverseZones, kept in
// a.zones) that name, a reverse name inside an overlay prefix, lies in.
func (a *answerer) reverseZone(name string) string {
	for _, z := range a.zones {
		if name == z || strings.HasSuffix(name, "."+z) {
			return z
		}
	}
	// Unreachable for a name inside the prefixes: the zones cover them.
	return name
}

func (a *answerer) soa(zone string, snap snapshot) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone + ".", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: a.ttl},
		Ns:      a.suffix + ".",
		Mbox:    "hostmaster." + a.suffix + ".",
		Serial:  snap.serial,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  a.ttl,
	}
}
