package netcheck

import (
	"fmt"
	"strings"
	"time"
)

// ReportVersion is the version of Report's JSON form; it grows only when a
// field changes meaning or goes (new fields may appear without it).
const ReportVersion = 1

// Report is what Run found. Its JSON form is documented in
// docs/operations.md ("plurenet netcheck").
type Report struct {
	Version int       `json:"version"`
	Time    time.Time `json:"time"`

	// UDP is true when at least one STUN server answered over IPv4 UDP.
	UDP bool `json:"udp"`
	// Local is the local address of the socket the STUN requests left
	// from.
	Local string       `json:"local,omitempty"`
	STUN  []STUNResult `json:"stun"`
	// Mapping is how the NAT maps this host's UDP: one of the Mapping*
	// constants.
	Mapping string `json:"mapping"`

	PortMapping *PortMappingReport `json:"portMapping,omitempty"` // nil when not asked
	IPv6        IPv6Report         `json:"ipv6"`
	Relays      []RelayResult      `json:"relays"`

	// Verdict is one of the Verdict* constants; Summary says it, and why,
	// in plain words.
	Verdict string `json:"verdict"`
	Summary string `json:"summary"`
}

// STUNResult is one STUN server's answer.
type STUNResult struct {
	Server string  `json:"server"`           // as configured, host:port
	Addr   string  `json:"addr,omitempty"`   // the address it was reached at
	Mapped string  `json:"mapped,omitempty"` // this host's address as the server saw it
	RTTMs  float64 `json:"rttMs,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// PortMappingReport says which port-mapping protocols the gateway speaks.
type PortMappingReport struct {
	Gateway   string           `json:"gateway,omitempty"`
	Protocols []ProtocolResult `json:"protocols,omitempty"`
	Error     string           `json:"error,omitempty"` // no gateway to ask
}

// ProtocolResult is one port-mapping protocol's answer.
type ProtocolResult struct {
	Protocol  string `json:"protocol"` // "upnp", "nat-pmp" or "pcp"
	Available bool   `json:"available"`
	External  string `json:"external,omitempty"` // the gateway's external address, where the protocol tells
	Error     string `json:"error,omitempty"`
}

// IPv6Report says whether the host has IPv6 beyond its own link.
type IPv6Report struct {
	// Global lists the host's global unicast IPv6 addresses (not
	// link-local, not unique-local).
	Global []string `json:"global"`
	// STUN holds the answers of the STUN servers that have an IPv6
	// address, asked over IPv6 UDP; empty when none has one.
	STUN []STUNResult `json:"stun,omitempty"`
	// UDP is true when one of them answered.
	UDP bool `json:"udp"`
}

// RelayResult is one relay's WebSocket opening time.
type RelayResult struct {
	URL         string  `json:"url"`
	HandshakeMs float64 `json:"handshakeMs,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// How the NAT maps UDP (RFC 4787's terms).
const (
	// MappingNone: a STUN server saw one of this host's own addresses:
	// no NAT in the way.
	MappingNone = "none"
	// MappingIndependent: every STUN server saw the same public address
	// and port (endpoint-independent mapping): hole punching works.
	MappingIndependent = "endpoint-independent"
	// MappingDependent: servers saw different public ports or addresses
	// (endpoint-dependent mapping, a "symmetric" NAT): what STUN reports
	// is useless to peers.
	MappingDependent = "endpoint-dependent"
	// MappingUnknown: fewer than two STUN servers answered.
	MappingUnknown = "unknown"
)

// Verdicts: what the findings mean for direct paths.
const (
	VerdictDirect    = "direct"        // direct paths should work
	VerdictEasyOnly  = "easy-nat-only" // only to members whose NAT is easy
	VerdictRelayOnly = "relay-only"    // relay only
	VerdictUnknown   = "unknown"       // not enough to tell
)

// judge fills in Verdict and Summary from the findings.
func (r *Report) judge() {
	mapped := r.mappingProtocols()
	via := ""
	if len(mapped) > 0 {
		via = fmt.Sprintf(" The router also forwards a port on request (%s), which members can use.", strings.Join(mapped, ", "))
	}
	switch {
	case len(r.STUN) == 0:
		r.Verdict, r.Summary = VerdictUnknown, "No STUN server to test UDP with: give a relay (each answers STUN on port 3478) or --stun HOST:PORT."
	case !r.UDP:
		r.Verdict, r.Summary = VerdictRelayOnly, "Relay only: no STUN server answered over UDP, so UDP is blocked or filtered on the way out. Members reach this one through a relay, which works wherever HTTPS does."
	case r.Mapping == MappingNone:
		r.Verdict, r.Summary = VerdictDirect, "Direct paths should work: this host has a public address, with no NAT in front of it."
	case r.Mapping == MappingIndependent:
		r.Verdict, r.Summary = VerdictDirect, "Direct paths should work: the NAT keeps one public address and port for this host's UDP socket whatever the destination (endpoint-independent mapping), so hole punching works with most members."+via
	case len(mapped) > 0:
		r.Verdict, r.Summary = VerdictDirect, fmt.Sprintf("Direct paths should work: the router forwards a port on request (%s), and members can reach this host at the forwarded address%s.",
			strings.Join(mapped, ", "), r.mappingNote())
	case r.Mapping == MappingDependent:
		r.Verdict, r.Summary = VerdictEasyOnly, "Direct paths only to members whose NAT is easy: this NAT gives every destination a new public port (endpoint-dependent mapping, a \"symmetric\" NAT), so direct paths form only with members that have a public address or a port mapping (and with some behind easy NATs); with the others traffic stays on the relay. A router that allows UPnP, NAT-PMP or PCP port mapping would let every member in."
	default:
		r.Verdict, r.Summary = VerdictUnknown, "UDP gets out, but with one STUN server answering the NAT's mapping cannot be told. Run again with two (--stun HOST:PORT twice; every plurenet relay answers STUN on port 3478)."
	}
	// The verdict is IPv4's; IPv6, where UDP gets out over it, adds
	// direct paths to members that have IPv6 too (the direct path prefers
	// it), whatever the IPv4 NAT does.
	if r.IPv6.UDP && r.Verdict != VerdictDirect {
		r.Summary += " Over IPv6, which this host has and on which STUN answered, direct paths should work with members that have IPv6 too."
	}
}

// mappingNote adds to the port-mapping verdict what the NAT does otherwise.
func (r *Report) mappingNote() string {
	if r.Mapping == MappingDependent {
		return ", although the NAT itself gives every destination a new public port (a \"symmetric\" NAT) that no hole punch gets through"
	}
	return ""
}

// mappingProtocols lists the port-mapping protocols the gateway speaks.
func (r *Report) mappingProtocols() []string {
	var out []string
	if r.PortMapping != nil {
		for _, p := range r.PortMapping.Protocols {
			if p.Available {
				out = append(out, p.Protocol)
			}
		}
	}
	return out
}
