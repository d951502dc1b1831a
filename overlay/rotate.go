package overlay

import (
	"encoding/hex"
	"errors"
	"path/filepath"
	"sync"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/owner"
	"github.com/plures/plurenet/internal/ownerfs"
	"github.com/plures/plurenet/internal/relayproto"
)

// Secret rotation (docs/protocol.md 4.5). The owner hands a new secret to
// every member it names, sealed to the member's key, with an activation
// time; every member switches all the keys derived from the secret (seal,
// relay admission and rendezvous, WireGuard PSK) at that time by its own
// clock. One switching moment, rather than both meshes run side by side,
// keeps one relay connection and one PSK per peer: members whose clocks
// agree to within a few seconds lose the relay path between them for at
// most that long (their WireGuard sessions and direct paths go on), and
// sealed messages under the other secret are opened for rotationGrace on
// either side of the switch, so announcements, revocations and the
// rotation itself still cross that gap.
const (
	// RotationFile keeps the newest rotation document, RotatedSecretFile
	// the secret this node opened from it (0600, like every state file).
	RotationFile      = "rotation.pnd"
	RotatedSecretFile = "rotated.secret"
	// rotationGrace is how long around the switch sealed messages under
	// the other secret are still opened: far above the clock difference
	// of NTP-synchronised hosts, short enough that the old secret soon
	// opens nothing of this node's.
	rotationGrace = 2 * time.Minute
)

// keyring holds the keys derived from the mesh secret in force and, around
// a rotation, those of the other secret.
type keyring struct {
	mu        sync.Mutex
	cur       mesh.Keys
	gen       uint64    // rotation version in force; 0: the configured secret
	prev      mesh.Keys // the keys before the last switch
	prevUntil time.Time // prev opens messages until then
	next      *pendingKeys
}

// pendingKeys are the keys of a rotation not yet active.
type pendingKeys struct {
	gen  uint64
	at   time.Time
	keys mesh.Keys
}

// current returns the keys this node seals, admits and configures with.
func (k *keyring) current() mesh.Keys {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

// open opens a sealed message under the keys in force, then under the
// previous keys within the grace, then under a pending rotation's.
func (k *keyring) open(b []byte, now time.Time) (mesh.Message, error) {
	k.mu.Lock()
	cur, prev, next := k.cur, k.prev, k.next
	usePrev := now.Before(k.prevUntil)
	k.mu.Unlock()
	m, err := mesh.Open(cur, b)
	if err == nil {
		return m, nil
	}
	if usePrev {
		if m, err2 := mesh.Open(prev, b); err2 == nil {
			return m, nil
		}
	}
	if next != nil && now.After(next.at.Add(-rotationGrace)) {
		if m, err2 := mesh.Open(next.keys, b); err2 == nil {
			return m, nil
		}
	}
	return m, err
}

// setNext records the keys of rotation gen, active from at; an older or
// equal generation than the one in force or pending changes nothing.
func (k *keyring) setNext(gen uint64, at time.Time, keys mesh.Keys) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if gen <= k.gen || (k.next != nil && gen <= k.next.gen) {
		return false
	}
	k.next = &pendingKeys{gen: gen, at: at, keys: keys}
	return true
}

// adopt records rotation gen as in force without a switch when the keys
// in force already are its (rendezvous rv): the node was invited after it.
func (k *keyring) adopt(gen uint64, rv relayproto.Rendezvous) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur.Rendezvous != rv {
		return false
	}
	k.gen = max(k.gen, gen)
	return true
}

// activate switches to the pending keys if their time has come.
func (k *keyring) activate(now time.Time) (mesh.Keys, uint64, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.next == nil || now.Before(k.next.at) {
		return mesh.Keys{}, 0, false
	}
	k.prev, k.prevUntil = k.cur, now.Add(rotationGrace)
	k.cur, k.gen = k.next.keys, k.next.gen
	k.next = nil
	return k.cur, k.gen, true
}

// status returns the rotation in force and the pending one's time.
func (k *keyring) status() (gen uint64, next time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.next != nil {
		next = k.next.at
	}
	return k.gen, next
}

// takeRotation opens this node's entry of rotation gen and schedules the
// switch to its secret; a rotation whose time has passed switches at once
// (before the device is up: the node starts with the new keys).
func (n *Node) takeRotation(gen uint64, r *owner.Rotation) {
	secret, err := r.Open(n.priv)
	if errors.Is(err, owner.ErrNotInRotation) && n.keys.adopt(gen, r.Rendezvous) {
		return // invited after the rotation, with its secret
	}
	if errors.Is(err, owner.ErrNotInRotation) {
		n.log.Warn("the owner rotated the mesh secret without this node: it loses the mesh when the new secret takes over; ask the owner for a new invite",
			"rotation", gen, "at", r.Activate)
		return
	}
	if err != nil {
		n.log.Error("cannot open the rotated mesh secret", "rotation", gen, "err", err)
		return
	}
	stretched, _, err := mesh.StretchSecret(n.cfg.TopicID, secret)
	if err != nil {
		n.log.Error("rotated mesh secret", "rotation", gen, "err", err)
		return
	}
	if err := ownerfs.WriteFile(filepath.Join(n.cfg.StateDir, RotatedSecretFile), []byte(secret+"\n")); err != nil {
		// The rotation document in the state dir holds it too.
		n.log.Warn("keeping the rotated mesh secret", "err", err)
	}
	if n.keys.setNext(gen, r.Activate, mesh.DeriveKeys(n.cfg.TopicID, stretched)) {
		n.log.Info("received a new mesh secret from the owner", "rotation", gen, "activates", r.Activate)
	}
	n.rotateIfDue(time.Now())
}

// rotateIfDue switches to a pending secret whose time has come: relay
// connections are replaced by ones admitted to the new rendezvous, peers
// get the new PSK, and members hear of this node under the new keys.
func (n *Node) rotateIfDue(now time.Time) {
	keys, gen, ok := n.keys.activate(now)
	if !ok {
		return
	}
	n.log.Info("switched to the rotated mesh secret", "rotation", gen)
	for _, c := range n.relays {
		c.SetAdmission(keys.Admission)
	}
	if n.dev != nil {
		n.syncPeers()
		n.announce()
	}
}

// rendezvousTag names the rendezvous in force in logs and status: its
// first four bytes in hex.
func (k *keyring) rendezvousTag() string {
	rv := k.current().Rendezvous
	return hex.EncodeToString(rv[:4])
}
