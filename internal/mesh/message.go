package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

// Kind is the first plaintext byte of a sealed message.
type Kind byte

// Message kinds.
const (
	KindAnnounce Kind = 1 // "I am a member": key, addresses, name, candidates
	KindLeave    Kind = 2 // "I am leaving": remove me now rather than after MemberTimeout
	KindSignal   Kind = 3 // reserved for ICE signaling; the body is opaque to this package
	// KindDocument carries an owner-signed document of an owned mesh (a
	// revocation list): the body is opaque here, internal/owner reads it.
	KindDocument Kind = 4
	KindForward  Kind = 5 // "here is another member": its sealed announcement and where it was heard (forward.go)
)

func (k Kind) String() string {
	switch k {
	case KindAnnounce:
		return "announce"
	case KindLeave:
		return "leave"
	case KindSignal:
		return "signal"
	case KindDocument:
		return "document"
	case KindForward:
		return "forward"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// Announce body limits. A name is a DNS label (63 bytes); 16 candidates of
// 64 bytes cover host, server-reflexive and relayed addresses of a
// multi-homed machine, and keep the whole announcement near 1.2 KiB, well
// within MaxSealed.
const (
	MaxNameLen      = 63
	MaxCandidates   = 16
	MaxCandidateLen = 64
)

// Plaintext header: kind (1), sender key (32), unix nanoseconds (8), the
// sender's signature (64).
const (
	sigOffset = 1 + nodekey.Size + 8
	headerLen = sigOffset + nodekey.SignatureSize
)

// announceFixedLen is IPv4 (4), IPv6 (16), flags (1).
const announceFixedLen = 4 + 16 + 1

// Announce flags. Unknown bits are ignored on receipt so that a later
// version can add flags without breaking older members; senders set them 0.
const (
	flagPinnedV4 = 0x01
	// flagOwned says the owned-mesh fields (OwnedFields) follow the
	// candidates. Older members ignore the bit and, by the extensibility
	// rule, the bytes.
	flagOwned = 0x02
)

// Owned-mesh field limits: a certificate (internal/owner) is at most about
// 760 bytes, and a member holds one document per kind.
const (
	MaxCertLen  = 1024
	MaxDocKinds = 8
)

// ErrMalformed wraps every error about a plaintext that authenticated but
// does not parse: a member running a buggy or incompatible version.
var ErrMalformed = errors.New("malformed mesh message")

// Message is one sealed mesh message.
type Message struct {
	Kind Kind
	// From is the sender's node key. Open has verified that From's owner
	// signed the message (docs/protocol.md 2.3), so no member can speak for
	// another on any carrier; over a relay, Members.Observe also checks it
	// against the key the relay authenticated.
	From nodekey.Public
	// Time is the sender's clock when it sealed the message; receivers use it
	// against replay and staleness.
	Time time.Time
	// Announce is the body of KindAnnounce.
	Announce Announce
	// Signal is the body of KindSignal, opaque until ICE signaling defines it.
	Signal []byte
	// Document is the body of KindDocument: an owner document's encoding.
	Document []byte
	// Forward is the body of KindForward.
	Forward Forward
}

// Announce is what a member tells the mesh about itself.
type Announce struct {
	// V4 is the sender's IPv4: its pin when PinnedV4 is set, otherwise the
	// address it assigned itself. Receivers run Assign themselves and use V4
	// only as the pin of a pinned member.
	V4 netip.Addr
	// V6 is the sender's IPv6; receivers check it equals V6(ula, From).
	V6       netip.Addr
	PinnedV4 bool
	// Name is a human label: letters, digits, '-', '_', '.'; may be empty.
	Name string
	// Candidates are the sender's direct-path (ICE) candidates, printable
	// ASCII, for later use by the direct transport.
	Candidates []string
	// Owned is set by a member of an owned mesh: its certificate and the
	// versions of the owner documents it holds. Nil in an open mesh.
	Owned *OwnedFields
}

// OwnedFields are the announce fields of an owned mesh (docs/protocol.md
// 2.4): opaque to this package, checked by the overlay with internal/owner.
type OwnedFields struct {
	// Cert is the sender's certificate encoding.
	Cert []byte
	// Docs are the versions of the owner documents the sender holds, so
	// that a member that is behind is sent the newer document.
	Docs []DocVersion
}

// DocVersion names one owner document a member holds.
type DocVersion struct {
	Kind    byte
	Version uint64
}

// ValidName reports whether s may be a member name.
func ValidName(s string) error {
	if len(s) > MaxNameLen {
		return fmt.Errorf("name %q: longer than %d bytes", s, MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("name %q: byte %d: only letters, digits, '-', '_' and '.' are allowed", s, i)
		}
	}
	return nil
}

func validCandidate(s string) error {
	if len(s) == 0 || len(s) > MaxCandidateLen {
		return fmt.Errorf("candidate: length %d, want 1 to %d", len(s), MaxCandidateLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Errorf("candidate %q: byte %d is not printable ASCII", s, i)
		}
	}
	return nil
}

// appendBody appends the kind-specific body of m. It validates what it
// writes, so that a member never sends what others would reject.
func appendBody(b []byte, m *Message) ([]byte, error) {
	switch m.Kind {
	case KindAnnounce:
		return appendAnnounce(b, &m.Announce)
	case KindLeave:
		return b, nil
	case KindSignal:
		return append(b, m.Signal...), nil
	case KindDocument:
		return append(b, m.Document...), nil
	case KindForward:
		return appendForward(b, &m.Forward)
	}
	return nil, fmt.Errorf("mesh: cannot seal message of %v", m.Kind)
}

// appendAnnounce writes: IPv4 (4) | IPv6 (16) | flags (1) | name length (1) |
// name | candidate count (1) | per candidate: length (1) | bytes, then, with
// flag 0x02, the owned fields: certificate length (2) | certificate |
// document count (1) | per document: kind (1) | version (8). Receivers
// skip anything that follows (see parseAnnounce).
func appendAnnounce(b []byte, a *Announce) ([]byte, error) {
	if !a.V4.Is4() {
		return nil, fmt.Errorf("mesh: announce: IPv4 %v is not an IPv4 address", a.V4)
	}
	if !a.V6.Is6() || a.V6.Is4In6() || a.V6.Zone() != "" {
		return nil, fmt.Errorf("mesh: announce: IPv6 %v is not a plain IPv6 address", a.V6)
	}
	if err := ValidName(a.Name); err != nil {
		return nil, fmt.Errorf("mesh: announce: %w", err)
	}
	if len(a.Candidates) > MaxCandidates {
		return nil, fmt.Errorf("mesh: announce: %d candidates, at most %d", len(a.Candidates), MaxCandidates)
	}
	v4, v6 := a.V4.As4(), a.V6.As16()
	b = append(b, v4[:]...)
	b = append(b, v6[:]...)
	var flags byte
	if a.PinnedV4 {
		flags |= flagPinnedV4
	}
	if a.Owned != nil {
		flags |= flagOwned
	}
	b = append(b, flags, byte(len(a.Name)))
	b = append(b, a.Name...)
	b = append(b, byte(len(a.Candidates)))
	for _, c := range a.Candidates {
		if err := validCandidate(c); err != nil {
			return nil, fmt.Errorf("mesh: announce: %w", err)
		}
		b = append(b, byte(len(c)))
		b = append(b, c...)
	}
	if o := a.Owned; o != nil {
		if len(o.Cert) > MaxCertLen || len(o.Docs) > MaxDocKinds {
			return nil, fmt.Errorf("mesh: announce: certificate of %d bytes and %d documents, at most %d and %d", len(o.Cert), len(o.Docs), MaxCertLen, MaxDocKinds)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(o.Cert)))
		b = append(b, o.Cert...)
		b = append(b, byte(len(o.Docs)))
		for _, d := range o.Docs {
			b = append(b, d.Kind)
			b = binary.BigEndian.AppendUint64(b, d.Version)
		}
	}
	return b, nil
}

// parsePlaintext decodes a plaintext that decrypted under the mesh's key
// and checks its sender's signature.
func parsePlaintext(rendezvous [32]byte, p []byte) (Message, error) {
	var m Message
	if len(p) < headerLen {
		return m, fmt.Errorf("%w: %d-byte plaintext, header needs %d", ErrMalformed, len(p), headerLen)
	}
	m.Kind = Kind(p[0])
	copy(m.From[:], p[1:1+nodekey.Size])
	ns := int64(binary.BigEndian.Uint64(p[1+nodekey.Size:]))
	m.Time = time.Unix(0, ns)
	if err := m.From.Verify(signedBytes(rendezvous, p), p[sigOffset:headerLen]); err != nil {
		return Message{}, fmt.Errorf("%w: sender %s: %w", ErrForged, m.From.ShortString(), err)
	}
	body, err := parseBody(m.Kind, p[headerLen:])
	if err != nil {
		return Message{}, err
	}
	m.Announce, m.Signal, m.Document, m.Forward = body.Announce, body.Signal, body.Document, body.Forward
	return m, nil
}

// parseBody decodes the body of a message of kind k.
//
// Extensibility rule: bytes after the last field a kind defines are ignored,
// so a later version may append fields and older members still read the
// fields they know. A leave body is therefore any bytes. A change that older
// members must not misread gets a new Kind instead.
func parseBody(k Kind, b []byte) (Message, error) {
	var m Message
	switch k {
	case KindAnnounce:
		a, err := parseAnnounce(b)
		if err != nil {
			return m, err
		}
		m.Announce = a
	case KindLeave:
	case KindSignal:
		m.Signal = append([]byte(nil), b...)
	case KindDocument:
		m.Document = append([]byte(nil), b...)
	case KindForward:
		f, err := parseForward(b)
		if err != nil {
			return m, err
		}
		m.Forward = f
	default:
		return m, fmt.Errorf("%w: unknown kind %d", ErrMalformed, byte(k))
	}
	return m, nil
}

func parseAnnounce(b []byte) (Announce, error) {
	var a Announce
	if len(b) < announceFixedLen+2 {
		return a, fmt.Errorf("%w: announce: %d bytes, need at least %d", ErrMalformed, len(b), announceFixedLen+2)
	}
	a.V4 = netip.AddrFrom4([4]byte(b[0:4]))
	a.V6 = netip.AddrFrom16([16]byte(b[4:20]))
	a.PinnedV4 = b[20]&flagPinnedV4 != 0
	owned := b[20]&flagOwned != 0
	if a.V6.Is4In6() {
		return Announce{}, fmt.Errorf("%w: announce: IPv6 %v is IPv4-mapped", ErrMalformed, a.V6)
	}
	b = b[announceFixedLen:]

	name, b, err := readShort(b, MaxNameLen, "name")
	if err != nil {
		return Announce{}, err
	}
	if err := ValidName(name); err != nil {
		return Announce{}, fmt.Errorf("%w: announce: %w", ErrMalformed, err)
	}
	a.Name = name

	if len(b) < 1 {
		return Announce{}, fmt.Errorf("%w: announce: candidate count missing", ErrMalformed)
	}
	n := int(b[0])
	b = b[1:]
	if n > MaxCandidates {
		return Announce{}, fmt.Errorf("%w: announce: %d candidates, at most %d", ErrMalformed, n, MaxCandidates)
	}
	if n > 0 {
		a.Candidates = make([]string, 0, n)
	}
	for range n {
		var c string
		c, b, err = readShort(b, MaxCandidateLen, "candidate")
		if err != nil {
			return Announce{}, err
		}
		if err := validCandidate(c); err != nil {
			return Announce{}, fmt.Errorf("%w: announce: %w", ErrMalformed, err)
		}
		a.Candidates = append(a.Candidates, c)
	}
	if owned {
		o, err := parseOwned(b)
		if err != nil {
			return Announce{}, err
		}
		a.Owned = &o
	}
	// Trailing bytes: fields of a later version, ignored (see parseBody).
	return a, nil
}

// parseOwned reads the owned-mesh fields of an announcement (flag 0x02).
func parseOwned(b []byte) (OwnedFields, error) {
	var o OwnedFields
	if len(b) < 2 {
		return o, fmt.Errorf("%w: announce: certificate length missing", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n > MaxCertLen || len(b) < n {
		return o, fmt.Errorf("%w: announce: certificate of %d bytes (at most %d), %d present", ErrMalformed, n, MaxCertLen, len(b))
	}
	o.Cert = append([]byte(nil), b[:n]...)
	b = b[n:]
	if len(b) < 1 {
		return o, fmt.Errorf("%w: announce: document count missing", ErrMalformed)
	}
	k := int(b[0])
	b = b[1:]
	if k > MaxDocKinds || len(b) < 9*k {
		return o, fmt.Errorf("%w: announce: %d document versions (at most %d), %d bytes present", ErrMalformed, k, MaxDocKinds, len(b))
	}
	for i := range k {
		o.Docs = append(o.Docs, DocVersion{Kind: b[9*i], Version: binary.BigEndian.Uint64(b[9*i+1:])})
	}
	return o, nil
}

// readShort reads a 1-byte length and that many bytes, at most max.
func readShort(b []byte, max int, what string) (string, []byte, error) {
	if len(b) < 1 {
		return "", nil, fmt.Errorf("%w: announce: %s length missing", ErrMalformed, what)
	}
	n := int(b[0])
	if n > max {
		return "", nil, fmt.Errorf("%w: announce: %s of %d bytes, at most %d", ErrMalformed, what, n, max)
	}
	if len(b)-1 < n {
		return "", nil, fmt.Errorf("%w: announce: %s truncated", ErrMalformed, what)
	}
	return string(b[1 : 1+n]), b[1+n:], nil
}
