package owner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/plures/plurenet/internal/mesh"
)

// Protocol numbers a rule can name (IANA).
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// MaxRules bounds a policy; it also fits MaxDocumentBody in practice.
const MaxRules = 64

// Policy says which members may open which ports on which members. A mesh
// without a policy allows everything (as an open mesh does); with one,
// everything not allowed is denied.
//
// The file format (docs/protocol.md 4.5):
//
//	{"allow":[{"from":"tag:dev","to":"tag:server","ports":["tcp/22","tcp/5432"]}]}
//
// "from" and "to" select members: "tag:NAME", a member name, or "*". A port
// is "tcp/22", "udp/53", "tcp/8000-8100", "tcp/*", "udp/*" or "*" (every
// protocol and port). ICMP echo is allowed between two members whenever
// any rule lets the first reach the second at all, as in Tailscale, so
// `ping` answers where some service does.
type Policy struct {
	Allow []Rule `json:"allow"`
}

// Rule allows From to reach To on Ports.
type Rule struct {
	From  string   `json:"from"`
	To    string   `json:"to"`
	Ports []string `json:"ports"`

	ports []portRange
}

type portRange struct {
	proto    uint8 // 0: any protocol
	lo, hi   uint16
	anyPorts bool
}

// Member is what a rule is evaluated against: a certified member's name
// and tags.
type Member struct {
	Name string
	Tags []string
}

// ParsePolicy reads a policy file, strictly: unknown fields, bad selectors
// and bad ports are errors that name the rule, so a typo never silently
// opens or closes a port.
func ParsePolicy(b []byte) (Policy, error) {
	var p Policy
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Policy{}, fmt.Errorf("policy: %w", err)
	}
	if dec.More() {
		return Policy{}, fmt.Errorf("policy: more than one JSON value")
	}
	if p.Allow == nil {
		return Policy{}, fmt.Errorf(`policy: no "allow" list (an empty list denies everything: write "allow": [] if you mean that)`)
	}
	if len(p.Allow) > MaxRules {
		return Policy{}, fmt.Errorf("policy: %d rules, at most %d", len(p.Allow), MaxRules)
	}
	for i := range p.Allow {
		r := &p.Allow[i]
		for _, sel := range []string{r.From, r.To} {
			if err := validSelector(sel); err != nil {
				return Policy{}, fmt.Errorf("policy: rule %d: %w", i+1, err)
			}
		}
		if len(r.Ports) == 0 {
			return Policy{}, fmt.Errorf(`policy: rule %d: no ports (use ["*"] for every port)`, i+1)
		}
		for _, ps := range r.Ports {
			pr, err := parsePort(ps)
			if err != nil {
				return Policy{}, fmt.Errorf("policy: rule %d: %w", i+1, err)
			}
			r.ports = append(r.ports, pr)
		}
	}
	return p, nil
}

// Marshal returns the policy's canonical JSON, the bytes the owner signs.
func (p *Policy) Marshal() ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if len(b) > MaxDocumentBody {
		return nil, fmt.Errorf("policy: %d bytes encoded, at most %d", len(b), MaxDocumentBody)
	}
	return b, nil
}

func validSelector(s string) error {
	switch {
	case s == "*":
		return nil
	case strings.HasPrefix(s, "tag:"):
		return ValidTag(s[len("tag:"):])
	case s == "":
		return fmt.Errorf(`empty selector: use "tag:NAME", a member name or "*"`)
	}
	if err := mesh.ValidName(s); err != nil {
		return fmt.Errorf(`selector %q: not "tag:NAME", "*" or a member name: %w`, s, err)
	}
	return nil
}

func parsePort(s string) (portRange, error) {
	if s == "*" {
		return portRange{anyPorts: true}, nil
	}
	proto, ports, ok := strings.Cut(s, "/")
	var pr portRange
	switch proto {
	case "tcp":
		pr.proto = ProtoTCP
	case "udp":
		pr.proto = ProtoUDP
	default:
		ok = false
	}
	if !ok {
		return pr, fmt.Errorf(`port %q: want "tcp/PORT", "udp/PORT", "tcp/LO-HI", "tcp/*" or "*"`, s)
	}
	if ports == "*" {
		pr.anyPorts = true
		return pr, nil
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || l == 0 || l > h {
		return pr, fmt.Errorf("port %q: ports are 1 to 65535, a range LO-HI with LO <= HI", s)
	}
	pr.lo, pr.hi = uint16(l), uint16(h)
	return pr, nil
}

func (m *Member) matches(sel string) bool {
	switch {
	case sel == "*":
		return true
	case strings.HasPrefix(sel, "tag:"):
		return slices.Contains(m.Tags, sel[len("tag:"):])
	}
	return m.Name == sel
}

// Allows reports whether the policy lets src open (proto, port) on dst. For
// ICMP and ICMPv6 the port is ignored: echo is allowed when any rule lets
// src reach dst.
func (p *Policy) Allows(src, dst Member, proto uint8, port uint16) bool {
	for i := range p.Allow {
		r := &p.Allow[i]
		if !src.matches(r.From) || !dst.matches(r.To) {
			continue
		}
		if proto == ProtoICMP || proto == ProtoICMPv6 {
			return true
		}
		for _, pr := range r.ports {
			if (pr.proto == 0 || pr.proto == proto) && (pr.anyPorts || pr.lo <= port && port <= pr.hi) {
				return true
			}
		}
	}
	return false
}
