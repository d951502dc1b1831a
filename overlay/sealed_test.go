package overlay

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
)

// TestSealedCarriers feeds one node sealed announcements as each carrier
// would: a carrier that authenticated the sender (a relay) makes its key
// the sender, so a message sealed by another member is refused; one that
// did not (UDP, multicast) takes the seal's sender, checks the address it
// learned from the source (UDP) or the candidates (multicast) before any
// path goes there (a probe, which nobody answers here: TestSwarmReplay has
// members that do), and ignores the node's own messages.
func TestSealedCarriers(t *testing.T) {
	n := startSwarmNode(t, "alpha", swarmOpts{})
	ula := mesh.ULAPrefix(n.cfg.TopicID)
	newMember := func() nodekey.Private {
		k, err := nodekey.NewPrivate()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	announce := func(from nodekey.Private, name string, cands ...string) []byte {
		t.Helper()
		b, err := mesh.Seal(n.keys.current(), from, mesh.Message{Kind: mesh.KindAnnounce, Announce: mesh.Announce{
			V4: netip.MustParseAddr("100.64.0.9"), V6: mesh.V6(ula, from.Public()), Name: name, Candidates: cands,
		}}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	listed := func(name string) bool {
		for _, m := range n.Status().Members {
			if m.Name == name {
				return true
			}
		}
		return false
	}

	// Authenticated as one key, sealed by another: refused.
	liar, victim := newMember(), newMember()
	n.handleSealed(carrier{name: "relay:test", key: liar.Public()}, announce(victim, "victim"))
	if listed("victim") {
		t.Fatal("a message sealed by one member and carried as another's was applied")
	}

	// Over UDP, no carrier vouches for the sender: a member holding the
	// secret rewrites its own sealed announcement to name the victim's
	// key. The sender signature refuses it (issue 9 item 7).
	liarsOwn, err := mesh.Seal(n.keys.current(), liar, mesh.Message{Kind: mesh.KindAnnounce, Announce: mesh.Announce{
		V4: netip.MustParseAddr("100.64.0.9"), V6: mesh.V6(ula, victim.Public()), Name: "victim",
	}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged := forgeSender(t, n.keys.current(), liarsOwn, victim.Public())
	n.handleSealed(carrier{name: "direct", src: netip.MustParseAddrPort("127.0.0.1:40009")}, forged)
	if listed("victim") {
		t.Fatal("an announcement forged for another member's key was applied")
	}

	// Unauthenticated UDP: the sealed sender joins; its source is checked
	// (probed) before it becomes the path.
	udp := newMember()
	src := netip.MustParseAddrPort("127.0.0.1:40001")
	n.handleSealed(carrier{name: "direct", src: src}, announce(udp, "udp"))
	if !listed("udp") {
		t.Fatal("a member announcing over UDP did not join")
	}
	if addr, _, ok := n.direct.StaticAddr(udp.Public()); ok {
		t.Fatalf("path to the UDP member set to %s before its source answered a check", addr)
	}
	if got := n.direct.Stats().ProbesSent; got != 1 {
		t.Fatalf("%d path checks sent, want 1 (to the UDP member's source)", got)
	}

	// Multicast: the address checked is the source IP with the announced
	// port.
	lanMember := newMember()
	n.handleSealed(carrier{name: "lan", src: netip.MustParseAddrPort("127.0.0.2:5353"), multicast: true},
		announce(lanMember, "lan", "udp4 0.0.0.0:40002 host"))
	if addr, _, ok := n.direct.StaticAddr(lanMember.Public()); ok {
		t.Fatalf("path to the LAN member set to %s before it answered a check", addr)
	}
	if got := n.direct.Stats().ProbesSent; got != 2 {
		t.Fatalf("%d path checks sent, want 2 (the second to the LAN member)", got)
	}

	// The node's own announcement, looped back: ignored.
	own, ok := n.seal(n.selfAnnounce())
	if !ok {
		t.Fatal("sealing")
	}
	before := len(n.Status().Members)
	n.handleSealed(carrier{name: "lan", src: netip.MustParseAddrPort("127.0.0.1:5353"), multicast: true}, own)
	if got := len(n.Status().Members); got != before {
		t.Fatalf("members %d -> %d after the node's own announcement", before, got)
	}
}

// forgeSender decrypts a sealed message with the mesh key (which every
// member holds), replaces the sender key in its plaintext with victim and
// seals it again: what a member running modified code can do.
func forgeSender(t *testing.T, keys mesh.Keys, sealed []byte, victim nodekey.Public) []byte {
	t.Helper()
	aead, err := chacha20poly1305.NewX(keys.Seal[:])
	if err != nil {
		t.Fatal(err)
	}
	nonce := sealed[1 : 1+mesh.NonceSize]
	pt, err := aead.Open(nil, nonce, sealed[1+mesh.NonceSize:], sealed[:1])
	if err != nil {
		t.Fatal(err)
	}
	copy(pt[1:], victim[:])
	out := append([]byte(nil), sealed[:1+mesh.NonceSize]...)
	return aead.Seal(out, nonce, pt, out[:1])
}
