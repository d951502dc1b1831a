package overlay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testSuffix is the suffix of the tests' topic, "overlay-test".
const testSuffix = "overlay-test.plurenet"

// askDNS sends one query over conn and returns the answer.
func askDNS(t *testing.T, c net.Conn, name string, qtype uint16) *dns.Msg {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	dc := &dns.Conn{Conn: c}
	if err := dc.WriteMsg(m); err != nil {
		t.Fatalf("asking %s for %s: %v", c.RemoteAddr(), name, err)
	}
	r, err := dc.ReadMsg()
	if err != nil {
		t.Fatalf("asking %s for %s: %v", c.RemoteAddr(), name, err)
	}
	return r
}

// answerAddr returns the one address of an A or AAAA answer, or fails t.
func answerAddr(t *testing.T, r *dns.Msg, what string) netip.Addr {
	t.Helper()
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("%s: rcode %s, answer %v; want one record", what, dns.RcodeToString[r.Rcode], r.Answer)
	}
	var ip net.IP
	switch rr := r.Answer[0].(type) {
	case *dns.A:
		ip = rr.A
	case *dns.AAAA:
		ip = rr.AAAA
	default:
		t.Fatalf("%s: answer %v is not an address", what, rr)
	}
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// TestDNSUserspace runs two userspace nodes: each answers the other's
// names on the overlay (through the netstack, UDP and TCP, IPv4 and IPv6),
// alpha also on a loopback socket (DNS.Listen) for local programs, Resolve
// takes NAME.SUFFIX, status shows the names, names outside the suffix are
// refused, and a member that leaves stops resolving.
func TestDNSUserspace(t *testing.T) {
	r := startRelay(t, "")
	a := startNode(t, "alpha", []string{r.URL}, nodeOpts{dns: DNSConfig{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}}})
	b := startNode(t, "beta", []string{r.URL}, nodeOpts{})
	waitMember(t, a, "beta")
	waitMember(t, b, "alpha")
	a4, a6 := a.Addrs()
	b4, b6 := b.Addrs()

	st := a.Status()
	if st.DNS == nil || st.DNS.Suffix != testSuffix || st.DNS.Address != netip.AddrPortFrom(a4, 53).String() ||
		st.DNS.Name != "alpha."+testSuffix || len(st.DNS.Listen) != 1 {
		t.Fatalf("alpha's DNS status %+v", st.DNS)
	}
	if len(st.Members) != 1 || st.Members[0].DNSName != "beta."+testSuffix {
		t.Fatalf("alpha's members %+v: want beta named beta.%s", st.Members, testSuffix)
	}

	if ip, err := a.Resolve("Beta." + testSuffix + "."); err != nil || ip != b4 {
		t.Fatalf("alpha resolving beta.%s: %v, %v; want %s", testSuffix, ip, err, b4)
	}
	if _, err := a.Resolve("gamma." + testSuffix); !errors.Is(err, ErrNoSuchMember) {
		t.Fatalf("alpha resolving gamma.%s: %v, want ErrNoSuchMember", testSuffix, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	overlay := func(network string, server netip.Addr) net.Conn {
		c, err := b.Dial(ctx, network, netip.AddrPortFrom(server, 53).String())
		if err != nil {
			t.Fatalf("beta dialing %s %s:53: %v", network, server, err)
		}
		return c
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, server := range []netip.Addr{a4, a6} {
			what := "beta asks alpha at " + server.String() + " over " + network
			if got := answerAddr(t, askDNS(t, overlay(network, server), "alpha."+testSuffix, dns.TypeA), what); got != a4 {
				t.Fatalf("%s: alpha is %s, want %s", what, got, a4)
			}
			if got := answerAddr(t, askDNS(t, overlay(network, server), "beta."+testSuffix, dns.TypeAAAA), what); got != b6 {
				t.Fatalf("%s: beta is %s, want %s", what, got, b6)
			}
		}
	}
	if r := askDNS(t, overlay("udp", a4), "example.com", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Fatalf("example.com over the overlay: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}

	local := func(network string) net.Conn {
		c, err := net.DialTimeout(network, st.DNS.Listen[0], testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, network := range []string{"udp", "tcp"} {
		if got := answerAddr(t, askDNS(t, local(network), "beta."+testSuffix, dns.TypeA), "loopback "+network); got != b4 {
			t.Fatalf("loopback %s: beta is %s, want %s", network, got, b4)
		}
	}
	// PTR of beta's address names beta.
	rev, _ := dns.ReverseAddr(b4.String())
	if r := askDNS(t, local("udp"), rev, dns.TypePTR); len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "beta."+testSuffix+"." {
		t.Fatalf("PTR %s: %v", rev, r.Answer)
	}

	// beta leaves: its goodbye removes it, and its name goes with it.
	b.Close()
	deadline := time.Now().Add(testTimeout)
	for {
		r := askDNS(t, local("udp"), "beta."+testSuffix, dns.TypeA)
		if r.Rcode == dns.RcodeNameError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("beta still resolves after it left: %v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDNSOff starts a node with DNS off: no status, NAME.SUFFIX is not a
// name it knows, and no resolver answers on the overlay.
func TestDNSOff(t *testing.T) {
	r := startRelay(t, "")
	a := startNode(t, "alpha", []string{r.URL}, nodeOpts{dns: DNSConfig{Off: true}})
	if st := a.Status(); st.DNS != nil {
		t.Fatalf("status with DNS off: %+v", st.DNS)
	}
	if _, err := a.Resolve("alpha." + testSuffix); err == nil {
		t.Fatal("Resolve of NAME.SUFFIX worked with DNS off")
	}
	if _, err := a.ListenPacket("udp", ":53"); err != nil {
		t.Fatalf("port 53 of the overlay is taken with DNS off: %v", err)
	}
}

// TestDNSConfigChecks refuses a bad suffix and a non-loopback listener.
func TestDNSConfigChecks(t *testing.T) {
	for _, tc := range []struct {
		dns  DNSConfig
		want string
	}{
		{DNSConfig{Suffix: "printer.local"}, "multicast DNS"},
		{DNSConfig{Suffix: "bad_label.plurenet"}, "not a host name label"},
		{DNSConfig{Listen: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:53")}}, "not a loopback address"},
	} {
		_, err := New(Config{StateDir: shortTempDir(t), Topic: "overlay-test", Secret: testSecret, Relays: []string{"ws://127.0.0.1:1"}, DNS: tc.dns, Logger: testLogger(t)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DNS %+v: err %v, want %q", tc.dns, err, tc.want)
		}
	}
}

// TestDNSListenPortTaken: DNS.Listen with port 0 takes for TCP the port the
// system gave UDP; when another program holds that TCP port, another pair
// is picked rather than failing the node's start (which TestDNSUserspace
// did now and then on a busy machine). A port asked for by number is not
// moved.
func TestDNSListenPortTaken(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	taken := netip.MustParseAddrPort(held.Addr().String())
	tries := 0
	// The first UDP socket lands on the port whose TCP side is held.
	listenPacket := func(network, address string) (net.PacketConn, error) {
		tries++
		if tries == 1 {
			address = taken.String()
		}
		return net.ListenPacket(network, address)
	}
	pc, l, bound, err := listenBoth(netip.MustParseAddrPort("127.0.0.1:0"), listenPacket)
	if err != nil {
		t.Fatalf("listen with port 0 while the first pick's TCP port is taken: %v", err)
	}
	defer pc.Close()
	defer l.Close()
	if bound.Port() == taken.Port() || tries < 2 {
		t.Fatalf("bound %s after %d tries; want another port than the taken %s", bound, tries, taken)
	}
	if l.Addr().String() != bound.String() || pc.LocalAddr().String() != bound.String() {
		t.Fatalf("UDP on %s, TCP on %s; want both on %s", pc.LocalAddr(), l.Addr(), bound)
	}

	if _, _, _, err := listenBoth(taken, net.ListenPacket); err == nil || !strings.Contains(err.Error(), "TCP") {
		t.Fatalf("listen on the taken %s: %v, want the TCP error", taken, err)
	}
}
