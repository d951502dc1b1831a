package owner

import (
	"crypto/ed25519"
	"fmt"

	"github.com/plures/plurenet/internal/mesh"
)

// Document kinds: the versioned owner documents that travel inside the mesh
// and that every member keeps, replacing one only by a higher version.
const (
	KindRevocations byte = 1
	KindPolicy      byte = 2
	KindRotation    byte = 3
)

const (
	documentFormat = 1
	labelDocument  = "plurenet v1 owner document"
	// MaxDocumentBody bounds a document's body so that the signed document
	// fits one sealed mesh message (mesh.MaxSealed, with its 146 bytes of
	// overhead and this envelope's 108) on every carrier.
	MaxDocumentBody = 3584
)

// Document is an owner-signed, versioned document: a revocation list or an
// access policy. A member applies one only if the owner signed it for this
// mesh and its version is higher than the one it holds, so an old document
// replayed by anyone changes nothing.
type Document struct {
	Kind    byte
	Topic   [mesh.TopicSize]byte
	Version uint64
	Body    []byte
	Sig     [ed25519.SignatureSize]byte
}

// signedPart writes what the signature covers: format (1) | kind (1) |
// topic (32) | version (8) | body length (2) | body.
func (d *Document) signedPart(b []byte) []byte {
	b = append(b, documentFormat, d.Kind)
	b = append(b, d.Topic[:]...)
	b = appendUint64(b, d.Version)
	b = appendUint16(b, len(d.Body))
	return append(b, d.Body...)
}

// SignDocument signs a document of kind with body for topic at version.
func (k Key) SignDocument(kind byte, topic [mesh.TopicSize]byte, version uint64, body []byte) (Document, error) {
	if len(body) > MaxDocumentBody {
		return Document{}, fmt.Errorf("owner document: body of %d bytes, at most %d", len(body), MaxDocumentBody)
	}
	if version == 0 {
		return Document{}, fmt.Errorf("owner document: version 0 is reserved for \"none\"")
	}
	d := Document{Kind: kind, Topic: topic, Version: version, Body: append([]byte(nil), body...)}
	copy(d.Sig[:], k.sign(labelDocument, d.signedPart(nil)))
	return d, nil
}

// Append writes the document followed by its signature (64).
func (d *Document) Append(b []byte) []byte {
	b = d.signedPart(b)
	return append(b, d.Sig[:]...)
}

// ParseDocument decodes a document; it checks no signature (Verify does).
func ParseDocument(b []byte) (Document, error) {
	r := reader{b: b}
	var d Document
	if f := r.byte("document format"); r.err == nil && f != documentFormat {
		r.fail("document format %d, this build reads %d", f, documentFormat)
	}
	d.Kind = r.byte("document kind")
	if r.err == nil && (d.Kind < KindRevocations || d.Kind > KindRotation) {
		r.fail("unknown document kind %d", d.Kind)
	}
	copy(d.Topic[:], r.bytes(mesh.TopicSize, "document topic"))
	d.Version = r.uint64("document version")
	n := r.uint16("document body length")
	if r.err == nil && n > MaxDocumentBody {
		r.fail("document body of %d bytes, at most %d", n, MaxDocumentBody)
	}
	d.Body = append([]byte(nil), r.bytes(n, "document body")...)
	copy(d.Sig[:], r.bytes(ed25519.SignatureSize, "document signature"))
	if err := r.end("document"); err != nil {
		return Document{}, err
	}
	return d, nil
}

// Verify checks the owner's signature and that the document is for topic.
func (d *Document) Verify(owner PublicKey, topic [mesh.TopicSize]byte) error {
	if err := owner.verify(labelDocument, d.signedPart(nil), d.Sig[:]); err != nil {
		return fmt.Errorf("owner document (kind %d, version %d): %w", d.Kind, d.Version, err)
	}
	if d.Topic != topic {
		return fmt.Errorf("owner document (kind %d, version %d): issued for another mesh", d.Kind, d.Version)
	}
	return nil
}
