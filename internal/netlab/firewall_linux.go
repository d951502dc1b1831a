package netlab

import (
	"context"
	"fmt"
	"strings"
)

// Profile is a firewall policy for the traffic a host or router sends to
// and receives from outside (its uplink; a router's WAN, for itself and for
// the LAN it forwards).
type Profile int

const (
	// Home allows everything (a router's NAT still drops unsolicited
	// inbound packets).
	Home Profile = iota
	// Corporate allows outbound TCP 443 and DNS (UDP and TCP 53) only, and
	// inbound packets only as replies; all other TCP and UDP is dropped
	// silently, as many enterprise firewalls do.
	Corporate
)

func (p Profile) String() string {
	switch p {
	case Home:
		return "home"
	case Corporate:
		return "corporate"
	}
	return fmt.Sprintf("Profile(%d)", int(p))
}

// Chains every node gets. They hang off INPUT/OUTPUT (and FORWARD on a
// router) at creation, empty; profiles and BlockUDP only refill them, so the
// order of rules never depends on the order of calls.
const (
	chainUDP   = "PLN-UDP"    // BlockUDP: drop all UDP, both directions
	chainFWOut = "PLN-FW-OUT" // profile: traffic leaving
	chainFWIn  = "PLN-FW-IN"  // profile: traffic arriving
)

// hookFirewall creates the node's chains and jumps to them.
func (h *Host) hookFirewall() {
	h.lab.t.Helper()
	// What counts as "outside": a router's WAN, a host's everything but
	// loopback (so a host's local services stay reachable to itself).
	out, in := []string{"!", "-o", "lo"}, []string{"!", "-i", "lo"}
	if h.router {
		out, in = []string{"-o", h.uplink}, []string{"-i", h.uplink}
	}
	rules := [][]string{
		{"-N", chainUDP}, {"-N", chainFWOut}, {"-N", chainFWIn},
		append(append([]string{"-A", "OUTPUT"}, out...), "-j", chainUDP),
		append(append([]string{"-A", "OUTPUT"}, out...), "-j", chainFWOut),
		append(append([]string{"-A", "INPUT"}, in...), "-j", chainUDP),
		append(append([]string{"-A", "INPUT"}, in...), "-j", chainFWIn),
	}
	if h.router {
		rules = append(rules,
			append(append([]string{"-A", "FORWARD"}, out...), "-j", chainUDP),
			append(append([]string{"-A", "FORWARD"}, in...), "-j", chainUDP),
			append(append([]string{"-A", "FORWARD"}, out...), "-j", chainFWOut),
			append(append([]string{"-A", "FORWARD"}, in...), "-j", chainFWIn),
		)
	}
	for _, r := range rules {
		if err := h.iptables(context.Background(), r...); err != nil {
			h.lab.t.Fatalf("netlab: %s: firewall chains: %v", h.name, err)
		}
	}
}

// Firewall applies a profile to the host (or router), replacing the
// previous one.
func (h *Host) Firewall(p Profile) {
	h.lab.t.Helper()
	var out, in [][]string
	switch p {
	case Home:
	case Corporate:
		established := []string{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}
		out = [][]string{
			established,
			{"-p", "tcp", "--dport", "443", "-j", "ACCEPT"},
			{"-p", "tcp", "--dport", "53", "-j", "ACCEPT"},
			{"-p", "udp", "--dport", "53", "-j", "ACCEPT"},
			{"-p", "tcp", "-j", "DROP"},
			{"-p", "udp", "-j", "DROP"},
		}
		in = [][]string{
			established,
			{"-p", "tcp", "-j", "DROP"},
			{"-p", "udp", "-j", "DROP"},
		}
	default:
		h.lab.t.Fatalf("netlab: unknown firewall profile %v", p)
	}
	if err := h.fillChain(chainFWOut, out); err != nil {
		h.lab.t.Fatalf("netlab: %s: firewall %v: %v", h.name, p, err)
	}
	if err := h.fillChain(chainFWIn, in); err != nil {
		h.lab.t.Fatalf("netlab: %s: firewall %v: %v", h.name, p, err)
	}
}

// BlockUDP drops every UDP packet the host (or router) sends or receives
// from outside, established flows included — as if a firewall cut UDP in
// the middle of a transfer.
func (h *Host) BlockUDP() {
	h.lab.t.Helper()
	if err := h.fillChain(chainUDP, [][]string{{"-p", "udp", "-j", "DROP"}}); err != nil {
		h.lab.t.Fatalf("netlab: %s: blocking UDP: %v", h.name, err)
	}
}

// UnblockUDP undoes BlockUDP.
func (h *Host) UnblockUDP() {
	h.lab.t.Helper()
	if err := h.fillChain(chainUDP, nil); err != nil {
		h.lab.t.Fatalf("netlab: %s: unblocking UDP: %v", h.name, err)
	}
}

// fillChain replaces the rules of chain with rules.
func (h *Host) fillChain(chain string, rules [][]string) error {
	ctx := context.Background()
	if err := h.iptables(ctx, "-F", chain); err != nil {
		return err
	}
	for _, r := range rules {
		if err := h.iptables(ctx, append([]string{"-A", chain}, r...)...); err != nil {
			return err
		}
	}
	return nil
}

// iptablesLockWait is how long iptables waits for the xtables lock, which
// other labs running at the same time may hold for a moment.
const iptablesLockWait = "10"

// iptables runs iptables with args in the host's namespace.
func (h *Host) iptables(ctx context.Context, args ...string) error {
	out, err := h.Run(ctx, "iptables", append([]string{"-w", iptablesLockWait}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s in %s: %w: %s", strings.Join(args, " "), h.nsName, err, strings.TrimSpace(string(out)))
	}
	return nil
}
