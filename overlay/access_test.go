package overlay

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/owner"
	"github.com/plures/plurenet/internal/testkit"
)

// deniedDial is how long a test waits for a connection the policy drops:
// a dropped SYN gets no answer, so the dial ends only by this deadline.
const deniedDial = 3 * time.Second

// dialDenied checks that from cannot open a TCP connection to port on to.
func dialDenied(t *testing.T, from *Node, to netip.Addr, port int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deniedDial)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", netip.AddrPortFrom(to, uint16(port)).String())
	if err == nil {
		c.Close()
		t.Fatalf("%s connected to %s port %d, which the policy denies", from.cfg.Name, to, port)
	}
}

func memberDenied(n *Node, name string) uint64 {
	for _, m := range n.Status().Members {
		if m.Name == name {
			return m.Denied
		}
	}
	return 0
}

// The policy of the issue with userspace nodes: tag:dev may reach
// tag:server on tcp/22 and nothing else. The owner hands it to one
// member, every member applies it; tcp/22 connects (and the server's
// replies reach the laptop, whose own policy allows nobody in), tcp/8000
// does not, a member without the tag reaches nothing, the server cannot
// open a connection to the laptop, and each node counts what it denied.
func TestOwnedPolicy(t *testing.T) {
	r := startRelay(t, "")
	ok, _ := owner.NewKey()
	start := func(name string, tags ...string) *Node {
		return startOwnedNode(t, []string{r.URL}, "", name, netip.Addr{}, &Owned{Owner: ok.Public(), Grant: grantFor(t, ok, name, netip.Addr{}, tags...)})
	}
	laptop, server, guest := start("laptop", "dev"), start("server", "server"), start("guest", "guest")
	serveEcho(t, server, 22)
	serveEcho(t, server, 8000)
	serveEcho(t, laptop, 9000)
	srvIP := waitMember(t, laptop, "server")
	waitMember(t, guest, "server")
	lapIP := waitMember(t, server, "laptop")

	// No policy yet: everything is allowed, as in an open mesh.
	exchange(t, laptop, srvIP, 8000, "server")

	pol, err := owner.ParsePolicy([]byte(`{"allow":[{"from":"tag:dev","to":"tag:server","ports":["tcp/22"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, err := pol.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := ok.SignDocument(owner.KindPolicy, mesh.TopicID(ownedTopic), 1, body)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if res, err := PushDocument(ctx, laptop.cfg.StateDir, doc.Append(nil)); err != nil || !res.Applied || res.Kind != "policy" {
		t.Fatalf("pushing the policy: %+v, %v", res, err)
	}
	for _, n := range []*Node{laptop, server, guest} {
		testkit.EventuallyWithin(t, testTimeout, n.cfg.Name+" applies the policy", func() bool { return n.Status().Owned.PolicyVersion == 1 })
	}

	exchange(t, laptop, srvIP, 22, "server")
	dialDenied(t, laptop, srvIP, 8000)
	dialDenied(t, guest, srvIP, 22)
	dialDenied(t, server, lapIP, 9000)
	if memberDenied(server, "laptop") == 0 || memberDenied(server, "guest") == 0 || memberDenied(laptop, "server") == 0 {
		t.Fatalf("denials: server counts laptop %d, guest %d; laptop counts server %d; want all above 0",
			memberDenied(server, "laptop"), memberDenied(server, "guest"), memberDenied(laptop, "server"))
	}
	if st := server.Status(); st.Owned.Denied == 0 {
		t.Fatal("the server's status counts no denial")
	}
	// Tags come from certificates: the same connection from the laptop
	// still works after all that.
	exchange(t, laptop, srvIP, 22, "server")
}
