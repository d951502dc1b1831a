// Package owner gives the signed documents of an owned mesh: grants (what
// the owner lets one member be: name, tags, an optional IPv4 pin, an
// expiry), the certificates members present (a grant bound to a node key),
// invite tokens, revocation lists and access policies, each signed by the
// mesh owner's Ed25519 key and checked by every member with nothing but the
// owner's public key.
//
// No server is involved: the owner signs offline, a member enrols offline
// by binding its node key to a grant from an invite, and revocations and
// policies travel inside the mesh like announcements. Everything here is
// pure (no network, no files) so it is table-tested and fuzzed;
// docs/protocol.md Part 4 is the specification and holds the test vectors.
package owner
