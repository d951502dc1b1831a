package overlay

import (
	"net"
	"reflect"
	"testing"

	"github.com/plures/plurenet/dns/names"
	"github.com/plures/plurenet/dns/resolved/resolvedtest"
	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/netlab"
)

// TestSplitDNSRegistered runs a kernel-TUN node (in a namespace of its
// own, swarm mode with nobody to meet) against a fake systemd-resolved on a
// private bus: it registers the suffix and the reverse zones as routing
// domains of its TUN interface, with its overlay addresses as servers, and
// reverts the link when it closes.
func TestSplitDNSRegistered(t *testing.T) {
	if testing.Short() {
		t.Skip("network lab")
	}
	bus := resolvedtest.PrivateBus(t)
	fake := &resolvedtest.Fake{}
	resolvedtest.Serve(t, bus, fake)
	lab := netlab.New(t)
	h := lab.Host("node", lab.Internet())
	// The node runs in the lab's namespace, the fake resolved does not
	// care where: the check that protects the host's resolved is lifted.
	splitDNSCheck = func() (bool, string) { return true, "" }
	t.Cleanup(func() { splitDNSCheck = splitDNSApplies })

	const tun = "pndns0"
	var n *Node
	var index int
	if err := h.Do(func() (err error) {
		// Sockets and the TUN are made here, in the namespace; nothing the
		// node starts later opens one (no peers, no LAN discovery).
		n, err = New(Config{
			StateDir: shortTempDir(t), Topic: "overlay-test", Secret: testSecret, Name: "alpha",
			Transport: TransportSwarm, NoLAN: true, TUN: tun,
			DNS:    DNSConfig{SplitDNSBus: bus},
			Logger: testLogger(t),
		})
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(tun)
		if err != nil {
			n.Close()
			return err
		}
		index = ifi.Index
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	v4, v6 := n.Addrs()
	if st := n.Status(); st.DNS == nil || !st.DNS.SplitDNS {
		t.Fatalf("dns status %+v: want split DNS registered", st.DNS)
	}

	var domains []resolvedtest.LinkDomain
	zones := append([]string{testSuffix}, names.ReverseZones(mesh.DefaultV4Prefix)...)
	zones = append(zones, names.ReverseZones(mesh.ULAPrefix(mesh.TopicID("overlay-test")))...)
	for _, d := range zones {
		domains = append(domains, resolvedtest.LinkDomain{Domain: d, RoutingOnly: true})
	}
	i := int32(index)
	want := []resolvedtest.Call{
		{Method: "SetLinkDomains", Index: i, Args: []any{domains}},
		{Method: "SetLinkDefaultRoute", Index: i, Args: []any{false}},
		{Method: "SetLinkDNSSEC", Index: i, Args: []any{"no"}},
		{Method: "SetLinkDNSOverTLS", Index: i, Args: []any{"no"}},
		{Method: "SetLinkDNS", Index: i, Args: []any{[]resolvedtest.LinkDNS{
			{Family: 2, Address: v4.AsSlice()}, {Family: 10, Address: v6.AsSlice()}}}},
	}
	if got := fake.Taken(); !reflect.DeepEqual(got, want) {
		t.Fatalf("resolved got\n %+v\nwant\n %+v", got, want)
	}
	n.Close()
	if got, want := fake.Taken(), []resolvedtest.Call{{Method: "RevertLink", Index: i}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("on Close resolved got %+v, want %+v", got, want)
	}
}
