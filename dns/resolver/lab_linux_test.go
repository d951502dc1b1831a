package resolver

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
)

// TestLabGlibcResolves points a real stub resolver (glibc, through getent)
// at the server across namespaces: forward and reverse lookups work for an
// allowed source, names outside the suffix fail, and a host outside the
// allowed sources gets nothing. (The allowed /32 stands in for the overlay
// prefix; the end-to-end test with nodes comes with the node's wiring.)
func TestLabGlibcResolves(t *testing.T) {
	if testing.Short() {
		t.Skip("network lab")
	}
	lab := netlab.New(t)
	server := lab.Host("dns", lab.Internet())
	member := lab.Host("member", lab.Internet())
	outsider := lab.Host("outsider", lab.Internet())

	var pc net.PacketConn
	var l net.Listener
	addr := netip.AddrPortFrom(server.Addr(), 53).String()
	if err := server.Do(func() (err error) {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Only the member's address stands for the overlay.
	s := start(t, Config{Allow: []netip.Prefix{netip.PrefixFrom(member.Addr(), 32)}}, pc, l)
	for _, h := range []*netlab.Host{member, outsider} {
		// `ip netns exec` mounts /etc/netns/NS/resolv.conf over
		// /etc/resolv.conf for the programs it runs.
		dir := filepath.Join("/etc/netns", h.Namespace())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		conf := "nameserver " + server.Addr().String() + "\noptions timeout:1 attempts:1\n"
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	getent := func(h *netlab.Host, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := h.Run(ctx, "getent", args...).Output()
		return string(out), err
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ahostsv4", "laptop.home.plurenet"}, "100.64.0.1"},
		{[]string{"ahostsv6", "nas.home.plurenet"}, "fd12:3456:789a::2"},
		{[]string{"hosts", "100.64.0.1"}, "laptop.home.plurenet"},
		{[]string{"hosts", "fd12:3456:789a::3"}, "raspberrypi-03030303.home.plurenet"},
	} {
		out, err := getent(member, tc.args...)
		if err != nil || !strings.Contains(out, tc.want) {
			t.Errorf("getent %s from a member: %q, %v; want %s", strings.Join(tc.args, " "), out, err, tc.want)
		}
	}
	for _, name := range []string{"db.home.plurenet", "raspberrypi.home.plurenet", "example.com"} {
		if out, err := getent(member, "ahostsv4", name); err == nil {
			t.Errorf("getent ahostsv4 %s from a member resolved: %q", name, out)
		}
	}
	if st := s.Stats(); st.Refused == 0 || st.NXDomain == 0 {
		t.Errorf("stats %+v: want example.com refused and the unknown names NXDOMAIN", st)
	}

	before := s.Stats()
	if out, err := getent(outsider, "ahostsv4", "laptop.home.plurenet"); err == nil {
		t.Errorf("getent from outside the allowed sources resolved: %q", out)
	}
	after := s.Stats()
	if after.DroppedSource == before.DroppedSource {
		t.Errorf("the outsider's queries were not dropped: %+v", after)
	}
	if after.Answered+after.NXDomain+after.Refused != before.Answered+before.NXDomain+before.Refused {
		t.Errorf("the outsider got answers: before %+v after %+v", before, after)
	}
}
