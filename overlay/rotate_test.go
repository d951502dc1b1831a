package overlay

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/owner"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/transports/relay"
)

// sealedTap is a relay client that is no member: it holds the keys of one
// mesh secret and keeps every sealed message those keys open, as a
// revoked member (or anyone given the secret) would.
type sealedTap struct {
	c    *relay.Client
	keys mesh.Keys
	mu   sync.Mutex
	got  []mesh.Message
}

func tapRelay(t *testing.T, url, secret string) *sealedTap {
	t.Helper()
	stretched, _, err := mesh.StretchSecret(mesh.TopicID(ownedTopic), secret)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := nodekey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	tap := &sealedTap{keys: mesh.DeriveKeys(mesh.TopicID(ownedTopic), stretched)}
	tap.c, err = relay.New(relay.Config{
		URL: url, PrivateKey: priv, Admission: tap.keys.Admission, Logger: testLogger(t).With("node", "tap"),
		OnSealed: func(_ nodekey.Public, b []byte) {
			if m, err := mesh.Open(tap.keys, b); err == nil {
				tap.mu.Lock()
				tap.got = append(tap.got, m)
				tap.mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tap.c.Close() })
	return tap
}

// from returns the messages from key sealed after t.
func (tap *sealedTap) from(key nodekey.Public, after time.Time) int {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	n := 0
	for _, m := range tap.got {
		if m.From == key && m.Time.After(after) {
			n++
		}
	}
	return n
}

// rotationDoc seals secret to members, active at at, as owner document
// version gen.
func rotationDoc(t *testing.T, ok owner.Key, gen uint64, secret string, at time.Time, members ...nodekey.Public) []byte {
	t.Helper()
	r, err := owner.NewRotation(mesh.TopicID(ownedTopic), secret, at, members)
	if err != nil {
		t.Fatal(err)
	}
	body, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ok.SignDocument(owner.KindRotation, mesh.TopicID(ownedTopic), gen, body)
	if err != nil {
		t.Fatal(err)
	}
	return d.Append(nil)
}

// After the owner rotates the secret without a revoked member, the members
// it named switch together and keep talking, a restarted member comes back
// on the new secret, and the old secret opens nothing they seal any more.
func TestOwnedSecretRotation(t *testing.T) {
	r := startRelay(t, "")
	ok, _ := owner.NewKey()
	start := func(name, dir string) *Node {
		return startOwnedNode(t, []string{r.URL}, dir, name, netip.Addr{}, &Owned{Owner: ok.Public(), Grant: grantFor(t, ok, name, netip.Addr{})})
	}
	bDir := shortTempDir(t)
	a, b, lost := start("alpha", ""), start("beta", bDir), start("lost", "")
	bGrant := b.cfg.Owned.Grant
	for _, n := range []*Node{a, b} {
		waitMember(t, n, "lost")
	}
	serveEcho(t, b, 7)
	// lost is revoked, then left out of the rotation; it keeps the old
	// secret, as the tap does.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	rev, err := ok.SignDocument(owner.KindRevocations, mesh.TopicID(ownedTopic), 1, mustMarshal(t, &owner.Revocations{Keys: []nodekey.Public{lost.PublicKey()}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PushDocument(ctx, a.cfg.StateDir, rev.Append(nil)); err != nil {
		t.Fatal(err)
	}
	old := tapRelay(t, r.URL, testSecret)
	testkit.EventuallyWithin(t, testTimeout, "the old secret's tap opens what alpha seals before the rotation", func() bool {
		return old.from(a.PublicKey(), time.Time{}) > 0
	})

	secret, err := mesh.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	fresh := tapRelay(t, r.URL, secret)
	// The activation is a few seconds ahead, so that the document
	// reaches beta under the old keys first, as in a real rotation.
	at := time.Now().Add(3 * time.Second)
	doc := rotationDoc(t, ok, 1, secret, at, a.PublicKey(), b.PublicKey())
	res, err := PushDocument(ctx, a.cfg.StateDir, doc)
	if err != nil || !res.Applied {
		t.Fatalf("pushing the rotation: %+v, %v", res, err)
	}
	for _, n := range []*Node{a, b} {
		testkit.EventuallyWithin(t, testTimeout, n.cfg.Name+" switches to the new secret", func() bool { return n.Status().Owned.SecretRotation == 1 })
	}
	switched := time.Now()
	if got, err := os.ReadFile(filepath.Join(bDir, RotatedSecretFile)); err != nil || string(got) != secret+"\n" {
		t.Fatalf("beta kept %q (%v), want the new secret", got, err)
	}
	if st := lost.Status().Owned; st.SecretRotation != 0 || !st.NextSecretAt.IsZero() {
		t.Fatalf("the member left out of the rotation holds a new secret: %+v", st)
	}
	exchange(t, a, waitMember(t, a, "beta"), 7, "beta")

	// Both announce to every newcomer at their rendezvous and to all of
	// it every mesh.AnnounceInterval: once the new secret's tap has an
	// announcement from each sealed after the switch, the old secret's
	// tap, at the old rendezvous all along, would have one too if the
	// old secret still opened anything they send.
	for _, n := range []*Node{a, b} {
		testkit.EventuallyWithin(t, testTimeout, "the new secret opens an announcement "+n.cfg.Name+" sealed after the switch", func() bool {
			return fresh.from(n.PublicKey(), switched) > 0
		})
	}
	for _, n := range []*Node{a, b} {
		if k := old.from(n.PublicKey(), switched); k > 0 {
			t.Errorf("the old secret opens %d messages %s sealed after the switch", k, n.cfg.Name)
		}
	}
	// Each replaced its connection make-before-break: the one at the old
	// rendezvous leaves after the new one carries, so the tap there may
	// hear of the leaving after the new secret's tap heard them.
	atOld := func() []string {
		var still []string
		for _, k := range old.c.Peers() {
			if k == a.PublicKey() || k == b.PublicKey() {
				still = append(still, k.ShortString())
			}
		}
		return still
	}
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(20 * time.Millisecond) {
		still := atOld()
		if len(still) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%v still at the old secret's rendezvous", still)
			break
		}
	}

	// beta, restarted with the old secret in its config, starts on the
	// rotated one it keeps.
	b.Close()
	b = startOwnedNode(t, []string{r.URL}, bDir, "beta", netip.Addr{}, &Owned{Owner: ok.Public(), Grant: bGrant})
	if got := b.Status().Owned.SecretRotation; got != 1 {
		t.Fatalf("beta restarted on rotation %d, want 1", got)
	}
	serveEcho(t, b, 7)
	exchange(t, a, waitMember(t, a, "beta"), 7, "beta")
}
