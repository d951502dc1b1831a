package overlay

import (
	"bufio"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/plures/plurenet/internal/nodekey"
)

// TestAllowedIPsAreMemberAddresses: the WireGuard device holds each member
// with exactly its two overlay addresses as AllowedIPs (a /32 and a /128),
// so wireguard-go's cryptokey routing drops a packet whose source is
// anything else: a member cannot send as another member, nor as a host of
// some other network. (The destination half is the kernel TUN's filter,
// tun/kernel's TestMeshCannotReachHostNetworks.)
func TestAllowedIPsAreMemberAddresses(t *testing.T) {
	r := startRelay(t, "")
	a := startNode(t, "alpha", []string{r.URL}, nodeOpts{})
	b := startNode(t, "beta", []string{r.URL}, nodeOpts{})
	c := startNode(t, "gamma", []string{r.URL}, nodeOpts{})
	waitMember(t, a, "beta")
	waitMember(t, a, "gamma")

	got := allowedIPs(t, a)
	for _, m := range []*Node{b, c} {
		v4, v6 := m.Addrs()
		want := []string{netip.PrefixFrom(v4, 32).String(), netip.PrefixFrom(v6, 128).String()}
		have := got[m.PublicKey()]
		slices.Sort(want)
		slices.Sort(have)
		if !slices.Equal(have, want) {
			t.Errorf("AllowedIPs of %s = %v, want exactly %v", m.cfg.Name, have, want)
		}
	}
	if len(got) != 2 {
		t.Errorf("the device holds %d peers, want the 2 members", len(got))
	}
}

// allowedIPs reads n's WireGuard configuration: each peer's AllowedIPs.
func allowedIPs(t *testing.T, n *Node) map[nodekey.Public][]string {
	t.Helper()
	conf, err := n.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	out := map[nodekey.Public][]string{}
	var cur nodekey.Public
	sc := bufio.NewScanner(strings.NewReader(conf))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			if cur, err = nodekey.ParsePublic(v); err != nil {
				t.Fatal(err)
			}
			out[cur] = nil
		case "allowed_ip":
			out[cur] = append(out[cur], v)
		}
	}
	return out
}
