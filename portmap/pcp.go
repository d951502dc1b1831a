package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// PCP wire format (RFC 6887), the subset a client needs to map one port:
// the common header (section 7), the MAP opcode (section 11) and ANNOUNCE
// (section 14.1, used as a probe). No maintained Go library implements
// PCP, so this is written here; parsePCPResponse is fuzzed
// (FuzzParsePCPResponse).
const (
	pcpVersion  = 2
	pcpPort     = 5351 // the server's port, shared with NAT-PMP
	pcpMaxSize  = 1100 // section 7: every PCP message fits in 1100 bytes
	pcpHeader   = 24   // common request and response header
	pcpMapBody  = 36   // MAP opcode-specific data
	pcpResponse = 0x80 // R bit of the opcode byte

	pcpOpAnnounce = 0
	pcpOpMap      = 1

	protoUDP = 17 // IANA protocol number carried in MAP
)

// pcpResult is a PCP result code (section 7.4).
type pcpResult uint8

var pcpResultNames = [...]string{
	0:  "SUCCESS",
	1:  "UNSUPP_VERSION",
	2:  "NOT_AUTHORIZED",
	3:  "MALFORMED_REQUEST",
	4:  "UNSUPP_OPCODE",
	5:  "UNSUPP_OPTION",
	6:  "MALFORMED_OPTION",
	7:  "NETWORK_FAILURE",
	8:  "NO_RESOURCES",
	9:  "UNSUPP_PROTOCOL",
	10: "USER_EX_QUOTA",
	11: "CANNOT_PROVIDE_EXTERNAL",
	12: "ADDRESS_MISMATCH",
	13: "EXCESSIVE_REMOTE_PEERS",
}

func (r pcpResult) String() string {
	if int(r) < len(pcpResultNames) {
		return pcpResultNames[r]
	}
	return fmt.Sprintf("result %d", uint8(r))
}

// pcpError is a response whose result code is not SUCCESS.
type pcpError struct{ code pcpResult }

func (e pcpError) Error() string { return "PCP server answered " + e.code.String() }

// errNATPMPOnly: a NAT-PMP server answers a PCP request with its own
// "unsupported version" (RFC 6887 section 9).
var errNATPMPOnly = errors.New("the gateway speaks NAT-PMP, not PCP")

// pcpMessage is a parsed PCP response.
type pcpMessage struct {
	opcode   uint8
	result   pcpResult
	lifetime uint32 // seconds
	epoch    uint32 // the server's epoch time (section 8.5)

	// MAP responses only.
	nonce    [12]byte
	protocol uint8
	internal uint16         // internal port, as in the request
	external netip.AddrPort // assigned external address and port
}

// appendPCPMap appends a MAP request: map UDP port internal of client
// (the address the request is sent from), suggesting the external address
// and port ext (zero: none), for lifetime seconds (0 deletes the mapping).
func appendPCPMap(b []byte, nonce [12]byte, client netip.Addr, internal uint16, ext netip.AddrPort, lifetime uint32) []byte {
	b = appendPCPHeader(b, pcpOpMap, client, lifetime)
	b = append(b, nonce[:]...)
	b = append(b, protoUDP, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, internal)
	b = binary.BigEndian.AppendUint16(b, ext.Port())
	suggest := netip.IPv4Unspecified() // section 11.1: "no preference" for IPv4
	if ext.Addr().IsValid() {
		suggest = ext.Addr()
	}
	s := suggest.As16() // IPv4 as IPv4-mapped IPv6 (section 5)
	return append(b, s[:]...)
}

// appendPCPAnnounce appends an ANNOUNCE request, which a server answers
// without changing anything: a probe.
func appendPCPAnnounce(b []byte, client netip.Addr) []byte {
	return appendPCPHeader(b, pcpOpAnnounce, client, 0)
}

func appendPCPHeader(b []byte, op uint8, client netip.Addr, lifetime uint32) []byte {
	b = append(b, pcpVersion, op, 0, 0)
	b = binary.BigEndian.AppendUint32(b, lifetime)
	c := client.As16() // IPv4 as IPv4-mapped IPv6 (section 5)
	return append(b, c[:]...)
}

// parsePCPResponse parses a datagram from a PCP server. It checks the
// framing only; the caller matches opcode and nonce to its request.
func parsePCPResponse(b []byte) (pcpMessage, error) {
	var m pcpMessage
	switch {
	case len(b) >= 2 && b[0] == 0:
		// A NAT-PMP header (version 0); with the result code at byte 3
		// it says "unsupported version" to our version 2.
		return m, errNATPMPOnly
	case len(b) < pcpHeader:
		return m, fmt.Errorf("PCP response of %d bytes: shorter than its %d-byte header", len(b), pcpHeader)
	case len(b) > pcpMaxSize:
		return m, fmt.Errorf("PCP response of %d bytes: longer than PCP's %d", len(b), pcpMaxSize)
	case len(b)%4 != 0:
		return m, fmt.Errorf("PCP response of %d bytes: not a multiple of 4", len(b))
	case b[0] != pcpVersion:
		return m, fmt.Errorf("PCP response version %d, want %d", b[0], pcpVersion)
	case b[1]&pcpResponse == 0:
		return m, errors.New("PCP message is a request, not a response")
	}
	m.opcode = b[1] &^ pcpResponse
	m.result = pcpResult(b[3])
	m.lifetime = binary.BigEndian.Uint32(b[4:8])
	m.epoch = binary.BigEndian.Uint32(b[8:12])
	if m.opcode != pcpOpMap {
		return m, nil
	}
	body := b[pcpHeader:]
	if len(body) < pcpMapBody {
		if m.result != 0 {
			return m, nil // an error response may omit the opcode data
		}
		return m, fmt.Errorf("PCP MAP response of %d bytes: shorter than %d", len(b), pcpHeader+pcpMapBody)
	}
	copy(m.nonce[:], body[:12])
	m.protocol = body[12]
	m.internal = binary.BigEndian.Uint16(body[16:18])
	ip := netip.AddrFrom16([16]byte(body[20:36])).Unmap()
	m.external = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[18:20]))
	// Options (section 7.3) may follow; a client that sent none needs none
	// of them, so they are skipped unread.
	return m, nil
}
