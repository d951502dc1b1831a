package direct

import (
	"github.com/pion/stun/v4"

	"github.com/plures/plurenet/internal/mesh"
)

// packetClass is what a datagram on the shared socket carries.
type packetClass int

const (
	classOther     packetClass = iota // neither: dropped and counted
	classWireGuard                    // a WireGuard message: to the device
	classSTUN                         // a STUN message: to ICE
	classMesh                         // a sealed mesh message: to Config.OnMesh
)

func (c packetClass) String() string {
	switch c {
	case classWireGuard:
		return "wireguard"
	case classSTUN:
		return "stun"
	case classMesh:
		return "mesh"
	}
	return "other"
}

// wireGuardMinLen is the shortest WireGuard message on the wire: a data
// message with an empty payload (type 4, receiver index, counter, tag) is
// 32 bytes; anything shorter cannot be one.
const wireGuardMinLen = 32

// classify tells WireGuard from STUN by the first bytes of a datagram.
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
// are. Only its size is checked here; the overlay authenticates it.
func classify(b []byte) packetClass {
	if len(b) >= wireGuardMinLen && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
		return classWireGuard
	}
	if len(b) >= 20 && b[0]&0xC0 == 0 && stun.IsMessage(b) {
		return classSTUN
	}
	if len(b) >= mesh.MinSealed && len(b) <= mesh.MaxSealed && b[0] == mesh.SealedHeader {
		return classMesh
	}
	return classOther
}
