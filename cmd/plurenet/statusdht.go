package main

import (
	"fmt"
	"io"
	"time"

	"github.com/plures/plurenet/overlay"
)

// printDHT prints the DHT lines of status: the routing table, the last
// announce, what was found, and every address that never answered, with
// the reason.
func printDHT(w io.Writer, d *overlay.DHTStatus, now time.Time) {
	if d == nil {
		return
	}
	fmt.Fprintf(w, "dht: %d nodes in the routing table (%d good), %d lookups, last announce %s, %d addresses found, %d members met through it\n",
		d.RoutingTable, d.GoodNodes, d.Lookups, ago(now, d.LastAnnounce), d.Found, d.MembersFound)
	for _, u := range d.Unreachable {
		who := u.Addr
		if u.Member != "" {
			who = u.Member + " at " + u.Addr
		}
		fmt.Fprintf(w, "  not reachable directly: %s (via %s, since %s): %s\n", who, u.Via, ago(now, u.Since), u.Reason)
	}
}
