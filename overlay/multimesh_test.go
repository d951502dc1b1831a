package overlay

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/plures/plurenet/internal/mesh"
)

// TestTwoMeshesOneHost runs two meshes at once on one host, as
// docs/operations.md ("Several meshes on one host") describes: each with
// its own topic, secret, IPv4 prefix and state dirs, both through one
// relay; mesh B also runs the direct path. One host (this process) has a
// node in each and reaches a member of each; neither mesh ever lists a
// member of the other, and each host node's metrics describe its own mesh
// only.
func TestTwoMeshesOneHost(t *testing.T) {
	r := startRelay(t, "")
	relays := []string{r.URL}
	meshA := nodeOpts{topic: "multimesh-a", v4Prefix: netip.MustParsePrefix("100.64.0.0/16")}
	secretB, err := mesh.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	meshB := nodeOpts{topic: "multimesh-b", v4Prefix: netip.MustParsePrefix("100.65.0.0/16"), auto: true, secret: secretB}
	hostA := startNode(t, "host-a", relays, meshA)
	hostB := startNode(t, "host-b", relays, meshB)
	memberA := startNode(t, "member-a", relays, meshA)
	memberB := startNode(t, "member-b", relays, meshB)
	serveEcho(t, memberA, 7400)
	serveEcho(t, memberB, 7400)

	ipA := waitMember(t, hostA, "member-a")
	ipB := waitMember(t, hostB, "member-b")
	if !meshA.v4Prefix.Contains(ipA) || !meshB.v4Prefix.Contains(ipB) {
		t.Fatalf("member-a at %s, member-b at %s: want each in its mesh's prefix", ipA, ipB)
	}
	exchange(t, hostA, ipA, 7400, "member-a")
	exchange(t, hostB, ipB, 7400, "member-b")
	waitMember(t, memberA, "host-a")
	waitMember(t, memberB, "host-b")

	for _, tc := range []struct {
		n    *Node
		want []string
	}{
		{hostA, []string{"member-a"}},
		{memberA, []string{"host-a"}},
		{hostB, []string{"member-b"}},
		{memberB, []string{"host-b"}},
	} {
		var got []string
		for _, m := range tc.n.Status().Members {
			got = append(got, m.Name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s lists %v, want %v: the meshes must not mix", tc.n.cfg.Name, got, tc.want)
		}
	}

	for _, tc := range []struct {
		n          *Node
		member     *Node
		other      *Node
		wantDirect bool
	}{
		{hostA, memberA, memberB, false},
		{hostB, memberB, memberA, true},
	} {
		fams := scrape(t, serveNodeMetrics(t, tc.n))
		key := func(n *Node) map[string]string { return map[string]string{"member": n.PublicKey().String()} }
		if _, ok := metricValue(fams, "plurenet_node_member_sent_bytes_total", key(tc.member)); !ok {
			t.Errorf("%s's metrics have no traffic counter for %s", tc.n.cfg.Name, tc.member.cfg.Name)
		}
		if _, ok := metricValue(fams, "plurenet_node_member_info", key(tc.other)); ok {
			t.Errorf("%s's metrics list %s, a member of the other mesh", tc.n.cfg.Name, tc.other.cfg.Name)
		}
		// Where the direct path runs, exactly one of its states is current.
		current := 0.0
		for _, state := range []string{"connecting", "direct", "lost"} {
			labels := key(tc.member)
			labels["state"] = state
			v, _ := metricValue(fams, "plurenet_node_member_direct_state", labels)
			current += v
		}
		if want := map[bool]float64{true: 1, false: 0}[tc.wantDirect]; current != want {
			t.Errorf("%s: direct states current for %s sum to %v, want %v", tc.n.cfg.Name, tc.member.cfg.Name, current, want)
		}
	}
}
