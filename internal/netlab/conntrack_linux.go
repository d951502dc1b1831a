package netlab

import (
	"github.com/vishvananda/netlink"
)

// FlushConntrack forgets every connection the host's (or router's)
// connection tracker holds, IPv4 and IPv6, like `conntrack -F`: a NAT
// router then has no mapping for its flows and no record that their
// inbound packets were solicited, until the inside sends again. It returns
// how many entries there were just before (a count to log; entries
// created in between are flushed too).
func (h *Host) FlushConntrack() int {
	h.lab.t.Helper()
	n := 0
	for _, family := range []netlink.InetFamily{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		flows, err := h.nl.ConntrackTableList(netlink.ConntrackTable, family)
		if err != nil {
			h.lab.t.Fatalf("netlab: %s: listing conntrack entries: %v", h.name, err)
		}
		n += len(flows)
	}
	if err := h.nl.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		h.lab.t.Fatalf("netlab: %s: flushing conntrack: %v", h.name, err)
	}
	return n
}
