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
	PayloadDHT                      // a Mainline DHT (KRPC) message: to the DHT node (only the direct socket carries it)
)

func (p Payload) String() string {
	switch p {
	case PayloadWireGuard:
		return "wireguard"
	case PayloadSTUN:
		return "stun"
	case PayloadSealed:
		return "sealed"
	case PayloadDHT:
		return "dht"
	}
	return "other"
}

// WireGuardMinLen is the shortest WireGuard message on the wire: a data
// message with an empty payload (type 4, receiver index, counter, tag) is
// 32 bytes; anything shorter cannot be one.
const WireGuardMinLen = 32

// KRPC datagram sizes admitted as PayloadDHT. The smallest message a DHT
// node sends, an error reply with a one-byte transaction id
// ("d1:eli201e0:e1:t1:x1:y1:ee"), is 26 bytes; a get_peers reply with
// eight nodes and a full list of values stays under 1.5 KiB, and DHT
// implementations keep to one unfragmented datagram. 2048 leaves margin
// while keeping what the DHT node parses small.
const (
	KRPCMinLen = 26
	KRPCMaxLen = 2048
)

// krpcMaxKeyDigits bounds the digits of the first key's length: KRPC keys
// are one or two letters ("a", "r", "t", "y", "ip"), so one digit is what
// a DHT message has; two leave room for extensions.
const krpcMaxKeyDigits = 2

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
//
// A Mainline DHT message (BEP 5, KRPC) is a bencoded dictionary: 'd', then
// its first key as a byte string ("1:a", "1:r", "1:t"...: a length without
// leading zero, a colon), and a final 'e'. 'd' (0x64) is no WireGuard type,
// has its second-highest bit set (no STUN message) and is not the sealed
// header, so the four kinds are disjoint whatever order they are tested in.
// Only this shape and the size (KRPCMinLen to KRPCMaxLen) are checked; the
// DHT node parses the rest.
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
	if IsKRPC(b) {
		return PayloadDHT
	}
	return PayloadOther
}

// IsKRPC reports whether b has the shape of a KRPC message: see Classify.
func IsKRPC(b []byte) bool {
	if len(b) < KRPCMinLen || len(b) > KRPCMaxLen || b[0] != 'd' || b[len(b)-1] != 'e' {
		return false
	}
	if b[1] < '1' || b[1] > '9' {
		return false
	}
	for i := 2; i < 2+krpcMaxKeyDigits; i++ {
		switch {
		case b[i] == ':':
			return true
		case b[i] < '0' || b[i] > '9':
			return false
		}
	}
	return false
}
