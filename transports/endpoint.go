package transports

import (
	"encoding/hex"
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/plures/plurenet/internal/nodekey"
)

// Endpoint is a WireGuard endpoint that names a peer by its public key. The
// Bind resolves the key to a path when it sends.
type Endpoint struct {
	Key nodekey.Public
}

var _ conn.Endpoint = Endpoint{}

// ClearSrc is a no-op: the source is chosen by the transport.
func (Endpoint) ClearSrc() {}

// SrcToString returns "": there is no fixed local address.
func (Endpoint) SrcToString() string { return "" }

// DstToString returns the peer key in hex, the form ParseEndpoint accepts.
func (e Endpoint) DstToString() string { return hex.EncodeToString(e.Key[:]) }

// DstToBytes returns the peer key. WireGuard binds its cookie MAC (the DoS
// defence under load) to these bytes, so a cookie is valid for one key only.
func (e Endpoint) DstToBytes() []byte { return e.Key[:] }

// DstIP returns a synthetic address made from the key. WireGuard rate-limits
// handshakes per DstIP; a per-key address keeps one flooding peer from
// using up every other peer's handshake budget.
func (e Endpoint) DstIP() netip.Addr {
	var a [16]byte
	copy(a[:], e.Key[:16])
	return netip.AddrFrom16(a)
}

// SrcIP returns the zero address: there is no fixed local address.
func (Endpoint) SrcIP() netip.Addr { return netip.Addr{} }

// ParseEndpoint parses a peer key in hex (as DstToString prints) or base64.
func ParseEndpoint(s string) (Endpoint, error) {
	k, err := nodekey.ParsePublic(s)
	if err != nil {
		return Endpoint{}, fmt.Errorf("endpoint: %w", err)
	}
	return Endpoint{Key: k}, nil
}
