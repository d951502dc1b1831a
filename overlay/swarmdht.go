package overlay

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	dhtdisc "github.com/plures/plurenet/discovery/dht"
	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
)

// The Mainline DHT in swarm mode (discovery/dht), and in auto mode beside
// the relays (autodht.go). The DHT node runs on the
// direct socket; the addresses it finds are reported like any source's,
// and the node announces itself to each (swarm.go: found, sendSwarm). An
// address found on the DHT is only an address: it becomes a member's path
// only when the member answers a path check from it (heard, and
// transports/direct/pathcheck.go), so a
// stranger who announces itself under our info-hash (it cannot compute
// it without the secret, but could replay what it saw) gets our sealed
// announcements and nothing else.

var _ discoverySource = (*dhtdisc.Source)(nil)

// unansweredAfter is how long an address found on the DHT or introduced
// by a member may stay silent before status names it with the reason:
// both sides have then sent each other announcements for two rounds.
const unansweredAfter = 2 * mesh.AnnounceInterval

// maxMet bounds how-we-met records (one per member, bounded by the member
// table anyway) and answered DHT addresses (bounded by dhtdisc.MaxFound).
const maxMet = mesh.DefaultMaxMembers

// dhtState is the node's view of its DHT source.
type dhtState struct {
	src *dhtdisc.Source

	mu       sync.Mutex
	foundAt  map[netip.AddrPort]time.Time      // DHT addresses reported, when
	answered map[netip.AddrPort]nodekey.Public // DHT addresses a member announced itself from
}

// startDHT adds the DHT source on the direct socket to the swarm's sources.
func (n *Node) startDHT() error {
	conn, err := n.direct.DHTConn()
	if err != nil {
		return err
	}
	src, err := dhtdisc.New(dhtdisc.Config{
		Conn: conn,
		InfoHashes: func(now time.Time) [][mesh.DHTInfoHashSize]byte {
			return mesh.DHTInfoHashes(n.keys.current(), now)
		},
		Server: dhtdisc.ServerConfig{Bootstrap: n.cfg.DHTBootstrap},
		Logger: n.log,
	})
	if err != nil {
		conn.Close()
		return fmt.Errorf("DHT discovery (turn it off with --dht off / Config.DHT false): %w", err)
	}
	n.swarm.dht = &dhtState{src: src, foundAt: map[netip.AddrPort]time.Time{}, answered: map[netip.AddrPort]nodekey.Public{}}
	n.swarm.sources = append(n.swarm.sources, src)
	return nil
}

// dhtFound notes an address the DHT reported (for status).
func (n *Node) dhtFound(a netip.AddrPort) {
	d := n.swarm.dht
	if d == nil || !d.src.Found(a) {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for old := range d.foundAt {
		if !d.src.Found(old) {
			delete(d.foundAt, old)
			delete(d.answered, old)
		}
	}
	d.foundAt[a] = time.Now()
}

// dhtAnswered notes that a member announced itself from src, and reports
// whether src is an address the DHT found.
func (n *Node) dhtAnswered(src netip.AddrPort, key nodekey.Public) bool {
	if n.swarm == nil || n.swarm.dht == nil {
		return false
	}
	d := n.swarm.dht
	if !d.src.Found(src) {
		return false
	}
	d.mu.Lock()
	if _, ok := d.answered[src]; ok || len(d.answered) < maxMet {
		d.answered[src] = key
	}
	d.mu.Unlock()
	return true
}

// howMet is how a member was first met off the relays (status
// members[].via): introduced by a member; else at an address the DHT found
// (by either side: the member's announcements may have come first because
// it found this node); else the carrier it was first heard on.
func (n *Node) howMet(key nodekey.Public) string {
	if n.swarm == nil {
		return ""
	}
	via := n.swarm.fwd.howMet(key)
	if via == viaForward || n.swarm.dht == nil {
		return via
	}
	if addr, _, ok := n.direct.StaticAddr(key); ok && n.dhtAnswered(addr, key) {
		return viaDHT
	}
	return via
}

// DHTStatus describes the DHT (swarm mode, or auto mode with the DHT).
type DHTStatus struct {
	RoutingTable int         `json:"routingTable"`          // nodes in the DHT routing table
	GoodNodes    int         `json:"goodNodes"`             // of which answered recently
	Lookups      int         `json:"lookups"`               // lookups done
	LastLookup   time.Time   `json:"lastLookup,omitzero"`   // end of the last lookup
	LastAnnounce time.Time   `json:"lastAnnounce,omitzero"` // last lookup whose announce a DHT node accepted
	Found        int         `json:"found"`                 // addresses found under the mesh's info-hash
	MembersFound int         `json:"membersFound"`          // members first met at an address the DHT found
	Unreachable  []Unreached `json:"unreachable,omitempty"` // addresses found or introduced that never answered
}

// Unreached is an address where a member should be that never answered.
type Unreached struct {
	Addr   string    `json:"addr"`
	Via    string    `json:"via"`              // "dht", or "forward" (a member introduced it)
	Member string    `json:"member,omitempty"` // the introduced member's name and key, for "forward"
	Since  time.Time `json:"since"`
	Reason string    `json:"reason"`
}

// Reasons an address never answered.
const (
	reasonDHTSilent   = "found on the DHT but no authenticated answer: not a member of this mesh (a stale entry, or a stranger replaying one), or both sides' NATs map per destination (symmetric) so no direct path can be opened without a relay"
	reasonIntroSilent = "introduced by a member but no authenticated answer: both NATs map per destination (symmetric), or the member left; no direct path without a relay"
)

// dhtStatus is the DHT part of status; nil without the DHT.
func (n *Node) dhtStatus(members []MemberStatus) *DHTStatus {
	if n.swarm == nil || n.swarm.dht == nil {
		return nil
	}
	d := n.swarm.dht
	ss := d.src.Stats()
	st := &DHTStatus{
		RoutingTable: ss.Nodes, GoodNodes: ss.GoodNodes, Lookups: ss.Lookups,
		LastLookup: ss.LastLookup, LastAnnounce: ss.LastAnnounce, Found: ss.Found,
	}
	for _, m := range members {
		if m.Via == viaDHT {
			st.MembersFound++
		}
	}
	now := time.Now()
	d.mu.Lock()
	for a, at := range d.foundAt {
		if _, ok := d.answered[a]; !ok && now.Sub(at) > unansweredAfter && d.src.Found(a) {
			st.Unreachable = append(st.Unreachable, Unreached{Addr: a.String(), Via: viaDHT, Since: at, Reason: reasonDHTSilent})
		}
	}
	d.mu.Unlock()
	st.Unreachable = append(st.Unreachable, n.swarm.fwd.unreached(now, n.members)...)
	sort.Slice(st.Unreachable, func(i, j int) bool { return st.Unreachable[i].Addr < st.Unreachable[j].Addr })
	return st
}
