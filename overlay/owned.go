package overlay

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/owner"
	"github.com/plures/plurenet/internal/ownerfs"
	"github.com/plures/plurenet/internal/secretfile"
)

// Owned makes a node a member of an owned mesh (docs/protocol.md Part 4):
// only members whose certificate chains to Owner become WireGuard peers,
// names and pinned IPv4s come only from certificates, and owner documents
// (revocation lists and access policies) spread through the mesh and take
// effect on receipt.
type Owned struct {
	// Owner is the mesh owner's public key.
	Owner owner.PublicKey
	// Grant is this node's owner-signed grant (from its invite); the node
	// binds it to its own key. Config.Name must be the grant's name and
	// Config.PinnedV4 its pin.
	Grant owner.SignedGrant
}

// RevocationsFile and PolicyFile are where a member keeps the newest
// revocation list and access policy it holds, in its state dir, so a
// restart forgets neither.
const (
	RevocationsFile = "revocations.pnd"
	PolicyFile      = "policy.pnd"
)

// docKinds are the owner documents a member takes, with their files and
// names in status and logs.
var docKinds = []struct {
	kind       byte
	file, name string
}{
	{owner.KindRevocations, RevocationsFile, "revocations"},
	{owner.KindPolicy, PolicyFile, "policy"},
	{owner.KindRotation, RotationFile, "rotation"},
}

// heldDoc is the newest owner document of one kind a member holds.
type heldDoc struct {
	raw []byte // as signed; nil: none
	ver uint64
}

// maxRefused bounds the refused certificates kept for status: enough to
// show every conflict of a personal mesh; a flood of invented keys only
// recycles the oldest entries.
const maxRefused = 64

// ownedState is a node's view of its owned mesh. Its mutex is taken after
// no other lock of the node.
type ownedState struct {
	cfg   Owned
	topic [mesh.TopicSize]byte
	self  owner.Certificate
	cert  []byte // self's encoding, announced

	mu     sync.Mutex
	docs   map[byte]heldDoc // by kind
	revs   *owner.Revocations
	policy *owner.Policy // nil: no policy, everything is allowed
	// enforced is the version of the policy the access filter holds
	// (updateAccess), which trails docs' by the moment between taking a
	// document and installing it: status reports this one, so that what
	// it shows is what is in force.
	enforced uint64
	certs    map[nodekey.Public]owner.Certificate // of members in the table
	refused  map[nodekey.Public]Refusal
	denied   map[nodekey.Public]*atomic.Uint64 // packets the policy dropped, per member (access.go)
}

// Refusal is a certificate this node refused, for status.
type Refusal struct {
	PublicKey string    `json:"publicKey"`
	Name      string    `json:"name,omitempty"`
	Reason    string    `json:"reason"`
	At        time.Time `json:"at"`
}

// setupOwned checks the node's own grant and loads the documents kept in
// the state dir. It runs once the node key is known.
func (n *Node) setupOwned() error {
	o := n.cfg.Owned
	if o == nil {
		return nil
	}
	if err := o.Grant.Verify(o.Owner, n.cfg.TopicID); err != nil {
		return fmt.Errorf("owned mesh: this node's grant: %w", err)
	}
	if n.cfg.Name != o.Grant.Name {
		return fmt.Errorf("owned mesh: name %q, but the grant names this node %q", n.cfg.Name, o.Grant.Name)
	}
	if n.cfg.PinnedV4 != o.Grant.V4 {
		return fmt.Errorf("owned mesh: pinned IPv4 %v, but the grant pins %v", n.cfg.PinnedV4, o.Grant.V4)
	}
	s := &ownedState{
		cfg:     *o,
		topic:   n.cfg.TopicID,
		self:    owner.Certificate{Grant: o.Grant, Key: n.pub},
		docs:    make(map[byte]heldDoc),
		certs:   make(map[nodekey.Public]owner.Certificate),
		refused: make(map[nodekey.Public]Refusal),
		denied:  make(map[nodekey.Public]*atomic.Uint64),
	}
	s.cert = owner.AppendCertificate(nil, &s.self)
	n.own = s
	for _, dk := range docKinds {
		b, err := secretfile.Read(filepath.Join(n.cfg.StateDir, dk.file), owner.MaxDocumentBody+256)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("owned mesh: %w", err)
		default:
			if _, err := n.takeDocument(b); err != nil {
				return fmt.Errorf("owned mesh: %s: %w", dk.file, err)
			}
		}
	}
	if err := s.self.Check(o.Owner, s.topic, s.revs, time.Now()); err != nil {
		n.log.Warn("this node's certificate is not valid: other members refuse it", "err", err)
	}
	return nil
}

// ownedFields are the owned-mesh fields of this node's announcements.
func (n *Node) ownedFields() *mesh.OwnedFields {
	s := n.own
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &mesh.OwnedFields{Cert: s.cert}
	for _, dk := range docKinds {
		if v := s.docs[dk.kind].ver; v > 0 {
			f.Docs = append(f.Docs, mesh.DocVersion{Kind: dk.kind, Version: v})
		}
	}
	return f
}

// admit decides whether an announcement from key may enter the membership
// of an owned mesh: its certificate must chain to the owner for this
// topic, be bound to key, be neither expired nor revoked, and name the
// name and pin it announces; a single-use grant held by another member
// goes to owner.Winner's pick. The loser is refused and, if it was a
// member, removed. An open mesh admits every announcement.
func (n *Node) admit(key nodekey.Public, a *mesh.Announce, now time.Time) bool {
	s := n.own
	if s == nil {
		return true
	}
	cert, err := s.check(key, a, now)
	if err != nil {
		n.refuse(key, a.Name, err.Error(), now)
		n.drop(key)
		return false
	}
	if cert.Grant.MultiUse {
		return true
	}
	holder, ok := s.holderOf(cert.Grant.ID, key)
	if !ok {
		return true
	}
	if owner.Winner(holder, key) != key {
		n.refuse(key, a.Name, fmt.Sprintf("single-use grant %q is held by %s (the lower key keeps it)", cert.Grant.Name, holder.ShortString()), now)
		return false
	}
	if holder == n.pub {
		// The other key wins by the rule every member applies, so the
		// others refuse this node: say so rather than fight over it.
		n.refuse(n.pub, cert.Grant.Name, fmt.Sprintf("this node lost its single-use grant to %s (the lower key keeps it): ask the owner for a new invite", key.ShortString()), now)
		return true
	}
	n.refuse(holder, cert.Grant.Name, fmt.Sprintf("single-use grant %q is held by %s (the lower key keeps it)", cert.Grant.Name, key.ShortString()), now)
	n.drop(holder)
	return true
}

// check returns the certificate an announcement carries if it makes key a
// member now.
func (s *ownedState) check(key nodekey.Public, a *mesh.Announce, now time.Time) (owner.Certificate, error) {
	if a.Owned == nil {
		return owner.Certificate{}, errors.New("no certificate: not enrolled in this owned mesh")
	}
	c, err := owner.ParseCertificate(a.Owned.Cert)
	if err != nil {
		return c, fmt.Errorf("certificate: %w", err)
	}
	if c.Key != key {
		return c, fmt.Errorf("certificate is bound to key %s, not the sender's", c.Key.ShortString())
	}
	s.mu.Lock()
	revs := s.revs
	s.mu.Unlock()
	if err := c.Check(s.cfg.Owner, s.topic, revs, now); err != nil {
		return c, err
	}
	if a.Name != c.Grant.Name {
		return c, fmt.Errorf("announces name %q, its certificate says %q", a.Name, c.Grant.Name)
	}
	var pin netip.Addr
	if a.PinnedV4 {
		pin = a.V4
	}
	if pin != c.Grant.V4 {
		return c, fmt.Errorf("announces pinned IPv4 %v, its certificate pins %v", pin, c.Grant.V4)
	}
	s.mu.Lock()
	s.certs[key] = c
	delete(s.refused, key)
	s.mu.Unlock()
	return c, nil
}

// holderOf returns another key holding grant id among the members and
// this node.
func (s *ownedState) holderOf(id owner.GrantID, except nodekey.Public) (nodekey.Public, bool) {
	if s.self.Grant.ID == id && s.self.Key != except {
		return s.self.Key, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, c := range s.certs {
		if k != except && c.Grant.ID == id {
			return k, true
		}
	}
	return nodekey.Public{}, false
}

// refuse records a refused certificate for status, and logs it once per
// reason.
func (n *Node) refuse(key nodekey.Public, name, reason string, now time.Time) {
	s := n.own
	s.mu.Lock()
	prev, seen := s.refused[key]
	if !seen && len(s.refused) >= maxRefused {
		var oldest nodekey.Public
		for k, r := range s.refused {
			if oldest.IsZero() || r.At.Before(s.refused[oldest].At) {
				oldest = k
			}
		}
		delete(s.refused, oldest)
	}
	s.refused[key] = Refusal{PublicKey: key.String(), Name: name, Reason: reason, At: now}
	if key != n.pub {
		delete(s.certs, key)
	}
	s.mu.Unlock()
	if !seen || prev.Reason != reason {
		n.log.Warn("refused a member of the owned mesh", "peer", key.ShortString(), "name", name, "reason", reason)
	}
}

// drop removes a member from the table and from WireGuard at once.
func (n *Node) drop(key nodekey.Public) {
	if m, ok := n.members.Remove(key); ok {
		n.log.Info("member removed", "peer", key.ShortString(), "name", m.Name)
		n.syncPeers()
	}
}

// recheck removes the members whose certificates stopped being valid: a
// new revocation list, or an expiry passed. It also forgets certificates
// of members no longer in the table.
func (n *Node) recheck(now time.Time) {
	n.recheckMembers(n.members.List(), true, now)
}

// recheckMember is recheck for a member that just entered or refreshed the
// table, and reports whether it was removed. admit checked its certificate
// before the table took it; a revocation applied in between ran its
// recheck before the member was in the table, and would otherwise leave it
// peered until the next round.
func (n *Node) recheckMember(m mesh.Member, now time.Time) bool {
	return n.own != nil && n.recheckMembers([]mesh.Member{m}, false, now)
}

// recheckMembers removes those of members whose certificates are no longer
// valid; with all (members is the whole table) it also forgets the
// certificates of keys not in it.
func (n *Node) recheckMembers(members []mesh.Member, all bool, now time.Time) (removed bool) {
	s := n.own
	if s == nil {
		return false
	}
	in := make(map[nodekey.Public]bool)
	var gone []mesh.Member
	var reasons []string
	s.mu.Lock()
	for _, m := range members {
		in[m.Key] = true
		c, ok := s.certs[m.Key]
		if !ok {
			continue
		}
		switch {
		case s.revs.Revokes(c.Grant.ID, c.Key):
			gone, reasons = append(gone, m), append(reasons, "revoked by the owner")
		case !c.Grant.NotAfter.IsZero() && now.After(c.Grant.NotAfter):
			gone, reasons = append(gone, m), append(reasons, "certificate expired")
		}
	}
	if all {
		for k := range s.certs {
			if !in[k] {
				delete(s.certs, k)
			}
		}
	}
	s.mu.Unlock()
	for i, m := range gone {
		n.refuse(m.Key, m.Name, reasons[i], now)
		if _, ok := n.members.Remove(m.Key); ok {
			n.log.Info("member removed", "peer", m.Key.ShortString(), "name", m.Name, "reason", reasons[i])
		}
	}
	if len(gone) > 0 {
		n.syncPeers()
	}
	return len(gone) > 0
}

// ErrNotOwned is returned when an owner document is handed to a node of an
// open mesh.
var ErrNotOwned = errors.New("this node is in an open mesh (no owner): it takes no owner documents")

// DocumentResult says what a node did with an owner document.
type DocumentResult struct {
	Kind    string `json:"kind"`
	Version uint64 `json:"version"`
	// Applied is false when the node already held this version or a newer
	// one (nothing changed).
	Applied bool `json:"applied"`
	// Held is the version the node holds afterwards.
	Held uint64 `json:"held"`
}

// ApplyDocument takes an owner document (from the control socket): it is
// checked, kept in the state dir, applied at once and spread to every
// member on every carrier.
func (n *Node) ApplyDocument(b []byte) (DocumentResult, error) {
	if n.own == nil {
		return DocumentResult{}, ErrNotOwned
	}
	return n.takeDocument(b)
}

// takeDocument checks an owner document and, if it is newer than the one
// of its kind held, keeps it, applies it and spreads it.
func (n *Node) takeDocument(b []byte) (DocumentResult, error) {
	s := n.own
	d, err := owner.ParseDocument(b)
	if err != nil {
		return DocumentResult{}, err
	}
	if err := d.Verify(s.cfg.Owner, s.topic); err != nil {
		return DocumentResult{}, err
	}
	// Parsed before anything is kept: a body this build cannot read is
	// refused, never spread.
	var (
		revs *owner.Revocations
		pol  *owner.Policy
		rot  *owner.Rotation
	)
	switch d.Kind {
	case owner.KindRevocations:
		r, err := owner.ParseRevocations(d.Body)
		if err != nil {
			return DocumentResult{}, err
		}
		revs = &r
	case owner.KindPolicy:
		p, err := owner.ParsePolicy(d.Body)
		if err != nil {
			return DocumentResult{}, fmt.Errorf("owner document (policy, version %d): %w", d.Version, err)
		}
		pol = &p
	case owner.KindRotation:
		r, err := owner.ParseRotation(d.Body)
		if err != nil {
			return DocumentResult{}, fmt.Errorf("owner document (rotation, version %d): %w", d.Version, err)
		}
		rot = &r
	}
	dk := docKinds[0]
	for _, k := range docKinds {
		if k.kind == d.Kind {
			dk = k
		}
	}
	res := DocumentResult{Kind: dk.name, Version: d.Version}
	s.mu.Lock()
	if held := s.docs[d.Kind].ver; d.Version <= held {
		res.Held = held
		s.mu.Unlock()
		return res, nil
	}
	if err := ownerfs.WriteFile(filepath.Join(n.cfg.StateDir, dk.file), b); err != nil {
		s.mu.Unlock()
		return res, fmt.Errorf("keeping the %s document: %w", dk.name, err)
	}
	s.docs[d.Kind] = heldDoc{raw: append([]byte(nil), b...), ver: d.Version}
	switch {
	case revs != nil:
		s.revs = revs
	case pol != nil:
		s.policy = pol
	}
	res.Applied, res.Held = true, d.Version
	s.mu.Unlock()
	if revs != nil {
		n.log.Info("applied revocation list", "version", d.Version, "grants", len(revs.Grants), "keys", len(revs.Keys))
		if revs.Revokes(s.self.Grant.ID, n.pub) {
			n.log.Warn("this node is revoked by the owner: other members refuse it")
		}
	} else if pol != nil {
		n.log.Info("applied access policy", "version", d.Version, "rules", len(pol.Allow))
		n.updateAccess()
	}
	if rot != nil {
		n.takeRotation(d.Version, rot) // rotate.go
	}
	// Before the device is up (setupOwned), there is nobody to tell yet.
	if n.dev != nil {
		if revs != nil {
			n.recheck(time.Now())
		}
		n.broadcastSealed(mesh.Message{Kind: mesh.KindDocument, From: n.pub, Document: b})
	}
	return res, nil
}

// receiveDocument applies a document a member sent.
func (n *Node) receiveDocument(c carrier, b []byte) {
	if n.own == nil {
		n.log.Debug("ignoring owner document in an open mesh", "via", c.name, "from", c.who())
		return
	}
	if _, err := n.takeDocument(b); err != nil {
		n.log.Info("refused owner document", "via", c.name, "from", c.who(), "err", err)
	}
}

// compareDocuments sends a member that announced an older document of a
// kind the newer one, and answers a member that holds a newer one, so
// that it sends it: a member that was offline learns revocations and
// policies from the first member it meets.
func (n *Node) compareDocuments(c carrier, peer nodekey.Public, f *mesh.OwnedFields) {
	s := n.own
	if s == nil || f == nil {
		return
	}
	behind := false
	for _, dk := range docKinds {
		var theirs uint64
		for _, d := range f.Docs {
			if d.Kind == dk.kind {
				theirs = d.Version
			}
		}
		s.mu.Lock()
		ours := s.docs[dk.kind]
		s.mu.Unlock()
		switch {
		case theirs < ours.ver:
			n.sendSealedTo(c, peer, mesh.Message{Kind: mesh.KindDocument, From: n.pub, Document: ours.raw})
		case theirs > ours.ver:
			behind = true
		}
	}
	if behind {
		n.answer(c, peer)
	}
}

// OwnedStatus is the owned-mesh part of Status.
type OwnedStatus struct {
	Owner              string   `json:"owner"`
	Grant              string   `json:"grant"` // this node's name in its grant
	Tags               []string `json:"tags,omitempty"`
	RevocationsVersion uint64   `json:"revocationsVersion"`
	PolicyVersion      uint64   `json:"policyVersion"` // 0: no policy, every member may reach every port
	// Denied counts packets from members the access policy dropped on
	// this node (MemberStatus.Denied has them per member).
	Denied uint64 `json:"denied"`
	// SecretRotation is the owner's secret rotation in force (0: the
	// secret the node was started with); NextSecretAt, when a received
	// rotation takes over.
	SecretRotation uint64    `json:"secretRotation"`
	NextSecretAt   time.Time `json:"nextSecretAt,omitzero"`
	Refused        []Refusal `json:"refused,omitempty"`
}

// memberOwned is the owned-mesh part of one member's status.
type memberOwned struct {
	tags   []string
	denied uint64
}

// ownedStatus returns the node's owned-mesh status and the certified
// members' tags and denials; nil in an open mesh.
func (n *Node) ownedStatus() (*OwnedStatus, map[nodekey.Public]memberOwned) {
	s := n.own
	if s == nil {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &OwnedStatus{
		Owner:              s.cfg.Owner.String(),
		Grant:              s.self.Grant.Name,
		Tags:               s.self.Grant.Tags,
		RevocationsVersion: s.docs[owner.KindRevocations].ver,
		PolicyVersion:      s.enforced,
	}
	if n.filter == nil { // no device yet: nothing enforces it, the document is held
		st.PolicyVersion = s.docs[owner.KindPolicy].ver
	}
	st.SecretRotation, st.NextSecretAt = n.keys.status()
	if n.filter != nil {
		st.Denied = n.filter.Denied()
	}
	for _, r := range s.refused {
		st.Refused = append(st.Refused, r)
	}
	sort.Slice(st.Refused, func(i, j int) bool { return st.Refused[i].PublicKey < st.Refused[j].PublicKey })
	ms := make(map[nodekey.Public]memberOwned, len(s.certs))
	for k, c := range s.certs {
		mo := memberOwned{tags: c.Grant.Tags}
		if d := s.denied[k]; d != nil {
			mo.denied = d.Load()
		}
		ms[k] = mo
	}
	return st, ms
}
