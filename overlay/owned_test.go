package overlay

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/owner"
	"github.com/plures/plurenet/internal/testkit"
)

// ownedTopic is startNode's topic.
const ownedTopic = "overlay-test"

func grantFor(t *testing.T, k owner.Key, name string, pin netip.Addr, tags ...string) owner.SignedGrant {
	t.Helper()
	id, err := owner.NewGrantID()
	if err != nil {
		t.Fatal(err)
	}
	sg, err := k.SignGrant(owner.Grant{ID: id, Topic: mesh.TopicID(ownedTopic), Name: name, Tags: tags, V4: pin})
	if err != nil {
		t.Fatal(err)
	}
	return sg
}

// startOwnedNode starts a member of an owned mesh with grant g (nil owner:
// an uncertified node of the same secret, announcing name and pin).
func startOwnedNode(t *testing.T, relays []string, dir, name string, pin netip.Addr, own *Owned) *Node {
	t.Helper()
	return startNode(t, name, relays, nodeOpts{dir: dir, pin: pin, owned: own})
}

// dirWithKeyBelow returns a state dir holding a node key lower, byte-wise,
// than key: a key is cheap to generate, so an attacker always has one.
func dirWithKeyBelow(t *testing.T, key nodekey.Public) string {
	t.Helper()
	dir := shortTempDir(t)
	for {
		k, err := nodekey.NewPrivate()
		if err != nil {
			t.Fatal(err)
		}
		pub := k.Public()
		if bytes.Compare(pub[:], key[:]) < 0 {
			if err := os.WriteFile(filepath.Join(dir, mesh.KeyFile), []byte(k.String()+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}
	}
}

func member(n *Node, key nodekey.Public) (mesh.Member, bool) {
	for _, m := range n.members.List() {
		if m.Key == key {
			return m, true
		}
	}
	return mesh.Member{}, false
}

func isPeer(n *Node, key nodekey.Public) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.configured[key]
	return ok
}

func refusedFor(n *Node, key nodekey.Public) string {
	st := n.Status()
	if st.Owned == nil {
		return ""
	}
	for _, r := range st.Owned.Refused {
		if r.PublicKey == key.String() {
			return r.Reason
		}
	}
	return ""
}

// An uncertified member holding the secret, with a lower key, announcing
// the name and pinned IPv4 of a certified member, takes neither: it never
// becomes a peer, and the certified member keeps its address.
func TestOwnedHijackRefused(t *testing.T) {
	r := startRelay(t, "")
	ok, _ := owner.NewKey()
	pin := netip.MustParseAddr("100.64.0.5")
	db := startOwnedNode(t, []string{r.URL}, "", "db", pin, &Owned{Owner: ok.Public(), Grant: grantFor(t, ok, "db", pin, "server")})
	web := startOwnedNode(t, []string{r.URL}, "", "web", netip.Addr{}, &Owned{Owner: ok.Public(), Grant: grantFor(t, ok, "web", netip.Addr{}, "dev")})
	waitMember(t, web, "db")

	impostor := startOwnedNode(t, []string{r.URL}, dirWithKeyBelow(t, db.PublicKey()), "db", pin, nil)
	testkit.EventuallyWithin(t, testTimeout, "web refuses the impostor", func() bool { return refusedFor(web, impostor.PublicKey()) != "" })
	if _, in := member(web, impostor.PublicKey()); in || isPeer(web, impostor.PublicKey()) {
		t.Fatal("the uncertified impostor became a member or WireGuard peer")
	}
	m, in := member(web, db.PublicKey())
	if !in || m.V4 != pin || m.Name != "db" {
		t.Fatalf("certified db: member %v, %+v; want it at %v", in, m, pin)
	}
	if ip, err := web.Resolve("db"); err != nil || ip != pin {
		t.Fatalf("web resolves db to %v, %v; want %v", ip, err, pin)
	}
	st := web.Status()
	for _, ms := range st.Members {
		if ms.Name == "db" && (!ms.Certified || !slices.Equal(ms.Tags, []string{"server"})) {
			t.Fatalf("status of db: certified %v tags %v", ms.Certified, ms.Tags)
		}
	}
	// A certificate from another owner is refused too.
	other, _ := owner.NewKey()
	stranger := startOwnedNode(t, []string{r.URL}, "", "stranger", netip.Addr{}, &Owned{Owner: other.Public(), Grant: grantFor(t, other, "stranger", netip.Addr{})})
	testkit.EventuallyWithin(t, testTimeout, "web refuses another owner's member", func() bool {
		return strings.Contains(refusedFor(web, stranger.PublicKey()), "signature")
	})
	if isPeer(web, stranger.PublicKey()) {
		t.Fatal("a member certified by another owner became a peer")
	}
}

// A single-use grant used by two keys: every member keeps the lower key
// and refuses the other.
func TestOwnedSingleUseGrantTwoKeys(t *testing.T) {
	r := startRelay(t, "")
	ok, _ := owner.NewKey()
	obs := startOwnedNode(t, []string{r.URL}, "", "observer", netip.Addr{}, &Owned{Owner: ok.Public(), Grant: grantFor(t, ok, "observer", netip.Addr{})})
	g := grantFor(t, ok, "laptop", netip.Addr{})
	a := startOwnedNode(t, []string{r.URL}, "", "laptop", netip.Addr{}, &Owned{Owner: ok.Public(), Grant: g})
	b := startOwnedNode(t, []string{r.URL}, "", "laptop", netip.Addr{}, &Owned{Owner: ok.Public(), Grant: g})
	win, lose := a, b
	if owner.Winner(a.PublicKey(), b.PublicKey()) == b.PublicKey() {
		win, lose = b, a
	}
	testkit.EventuallyWithin(t, testTimeout, "the observer sees both and keeps the lower key", func() bool {
		_, wIn := member(obs, win.PublicKey())
		_, lIn := member(obs, lose.PublicKey())
		return wIn && !lIn && refusedFor(obs, lose.PublicKey()) != ""
	})
	if isPeer(obs, lose.PublicKey()) {
		t.Fatal("the losing key of a single-use grant is a WireGuard peer")
	}
}

// Revoking a member: every online member drops it within seconds; a member
// that was offline during the revocation refuses it once it is back.
func TestOwnedRevocation(t *testing.T) {
	r := startRelay(t, "")
	ok, _ := owner.NewKey()
	start := func(name, dir string) *Node {
		return startOwnedNode(t, []string{r.URL}, dir, name, netip.Addr{}, &Owned{Owner: ok.Public(), Grant: grantFor(t, ok, name, netip.Addr{})})
	}
	a, b := start("alpha", ""), start("beta", "")
	cDir := shortTempDir(t)
	c := start("gamma", cDir)
	cGrant := c.cfg.Owned.Grant
	lost := start("lost", "")
	for _, n := range []*Node{a, b, c} {
		waitMember(t, n, "lost")
	}
	c.Close() // offline during the revocation

	doc, err := ok.SignDocument(owner.KindRevocations, mesh.TopicID(ownedTopic), 1, mustMarshal(t, &owner.Revocations{Keys: []nodekey.Public{lost.PublicKey()}}))
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	res, err := PushDocument(ctx, a.cfg.StateDir, doc.Append(nil))
	if err != nil || !res.Applied || res.Held != 1 {
		t.Fatalf("pushing the revocation: %+v, %v", res, err)
	}
	for _, n := range []*Node{a, b} {
		testkit.EventuallyWithin(t, testTimeout, n.cfg.Name+" drops the revoked member", func() bool {
			_, in := member(n, lost.PublicKey())
			return !in && !isPeer(n, lost.PublicKey())
		})
	}
	t.Logf("revocation: pushed to alpha, the last online member dropped the revoked one after %v", time.Since(began))
	if st := b.Status(); st.Owned.RevocationsVersion != 1 {
		t.Fatalf("beta holds revocations version %d, want 1", st.Owned.RevocationsVersion)
	}
	// An old version changes nothing.
	if res, err := PushDocument(ctx, b.cfg.StateDir, doc.Append(nil)); err != nil || res.Applied {
		t.Fatalf("pushing the same version again: %+v, %v", res, err)
	}

	c = startOwnedNode(t, []string{r.URL}, cDir, "gamma", netip.Addr{}, &Owned{Owner: ok.Public(), Grant: cGrant})
	testkit.EventuallyWithin(t, testTimeout, "gamma, back, learns the revocation and refuses the revoked member", func() bool {
		st := c.Status()
		return st.Owned.RevocationsVersion == 1 && strings.Contains(refusedFor(c, lost.PublicKey()), "revoked")
	})
	waitMember(t, c, "alpha")
	if _, in := member(c, lost.PublicKey()); in || isPeer(c, lost.PublicKey()) {
		t.Fatal("gamma peers with the revoked member")
	}
	if _, err := os.Stat(filepath.Join(cDir, RevocationsFile)); err != nil {
		t.Fatalf("gamma did not keep the revocation list: %v", err)
	}
}

func mustMarshal(t *testing.T, r *owner.Revocations) []byte {
	t.Helper()
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
