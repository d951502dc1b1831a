package owner

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
)

// A rotation hands the secret to the members it names and to nobody else,
// and survives its encoding inside a signed document.
func TestRotation(t *testing.T) {
	secret, err := mesh.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	a, b, revoked := testkit.Key(t), testkit.Key(t), testkit.Key(t)
	at := time.Unix(1_900_000_000, 0)
	r, err := NewRotation(mesh.TopicID("home"), secret, at, []nodekey.Public{a.Public(), b.Public(), a.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Entries) != 2 {
		t.Fatalf("%d entries for two distinct members", len(r.Entries))
	}
	body, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	own := testOwner(t, 7)
	d, err := own.SignDocument(KindRotation, mesh.TopicID("home"), 1, body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseDocument(d.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(own.Public(), mesh.TopicID("home")); err != nil {
		t.Fatal(err)
	}
	r2, err := ParseRotation(got.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Activate.Equal(at) {
		t.Errorf("activation %v, want %v", r2.Activate, at)
	}
	for _, k := range []nodekey.Private{a, b} {
		s, err := r2.Open(k)
		if err != nil || s != secret {
			t.Errorf("member %s opens %q, %v; want the secret", k.Public().ShortString(), s, err)
		}
	}
	if _, err := r2.Open(revoked); !errors.Is(err, ErrNotInRotation) {
		t.Errorf("a member left out opens the rotation: err %v", err)
	}
	// A member that forges the key of its entry into its own still holds
	// the wrong private key.
	r2.Entries[0].Key = revoked.Public()
	if _, err := r2.Open(revoked); err == nil || errors.Is(err, ErrNotInRotation) {
		t.Errorf("an entry sealed to another key opened: err %v", err)
	}
}

func TestRotationLimits(t *testing.T) {
	secret, _ := mesh.GenerateSecret()
	if _, err := NewRotation(mesh.TopicID("home"), "a chosen secret", time.Now(), []nodekey.Public{{1}}); err == nil {
		t.Error("a human secret was sealed")
	}
	if _, err := NewRotation(mesh.TopicID("home"), secret, time.Now(), nil); err == nil {
		t.Error("a rotation to nobody was made")
	}
	many := make([]nodekey.Public, MaxRotationMembers+1)
	for i := range many {
		many[i] = testkit.Key(t).Public()
	}
	if _, err := NewRotation(mesh.TopicID("home"), secret, time.Now(), many); err == nil {
		t.Errorf("%d members sealed into one document", len(many))
	}
	r, err := NewRotation(mesh.TopicID("home"), secret, time.Now(), many[:MaxRotationMembers])
	if err != nil {
		t.Fatal(err)
	}
	body, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testOwner(t, 7).SignDocument(KindRotation, mesh.TopicID("home"), 1, body); err != nil {
		t.Fatalf("a full rotation does not fit a document: %v", err)
	}
}

func FuzzParseRotation(f *testing.F) {
	secret, _ := mesh.GenerateSecret()
	r, _ := NewRotation(mesh.TopicID("home"), secret, time.Unix(1_900_000_000, 0), []nodekey.Public{testkit.Key(f).Public()})
	body, _ := r.Marshal()
	f.Add(body)
	f.Add(make([]byte, 42))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRotation(b)
		if err != nil {
			return
		}
		if again, err := r.Marshal(); err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x (%v), read %x", again, err, b)
		}
		r.Open(nodekey.Private{1})
	})
}
