package transports

import (
	"github.com/pion/stun/v4"

	"github.com/plures/plurenet/internal/mesh"
)

// Payload says what a packet carries. Every path carries more than one
// kind (a relay frame's payload is WireGuard or a sealed mesh message; the
// direct socket also carries ICE's STUN), told apart by their first bytes
// with no header of our own, so no copy and no byte is spent on it.
type Payload uint8

// Payload kinds.
const (
	PayloadOther     Payload = iota // none of the below: dropped and counted
	PayloadWireGuard                // a WireGuard message: to the device
	PayloadSTUN                     // a STUN message: to ICE (only the direct socket carries it)
	PayloadSealed                   // a sealed mesh message: to the node, which opens it
)

func (p Payload) String() string {
	switch p {
	case PayloadWireGuard:
		return "wireguard"
	case PayloadSTUN:
		return "stun"
	case PayloadSealed:
		return "sealed"
	}
	return "other"
}

// WireGuardMinLen is the shortest WireGuard message on the wire: a data
// message with an empty payload (type 4, receiver index, counter, tag) is
// 32 bytes; anything shorter cannot be one.
const WireGuardMinLen = 32

// stunHeaderLen is the fixed STUN header (RFC 5389 §6); shorter is no STUN
// message.
const stunHeaderLen = 20

// Classify tells what b is by its first bytes. It is the one rule every
// transport, the LAN discovery and the node use.
//
// A WireGuard message starts with its type, 1 to 4, as a little-endian
// uint32, so bytes 1..3 are zero. A STUN message (RFC 5389 §6) starts with
// two zero bits and carries the magic cookie 0x2112A442 at bytes 4..7. The
// two cannot be confused in practice: a STUN type with bytes 0..1 equal to
// 0x0100..0x0400 and a zero length is not a message any ICE agent sends,
// while a WireGuard handshake whose random sender index equals the magic
// cookie would be (1 in 2^32) misread as STUN if STUN were tested first.
// So WireGuard is tested first.
//
// A sealed mesh message starts with mesh.SealedHeader (0xF1): not a
// WireGuard type, and its top two bits are set, which no STUN message's
// are. Only its header byte and size (mesh.MinSealed to mesh.MaxSealed)
// are checked here, so nothing larger reaches an AEAD open; the node
// authenticates it.
func Classify(b []byte) Payload {
	if len(b) >= WireGuardMinLen && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
		return PayloadWireGuard
	}
	if len(b) >= stunHeaderLen && b[0]&0xC0 == 0 && stun.IsMessage(b) {
		return PayloadSTUN
	}
	if len(b) >= mesh.MinSealed && len(b) <= mesh.MaxSealed && b[0] == mesh.SealedHeader {
		return PayloadSealed
	}
	return PayloadOther
}
