package overlay

import (
	"strconv"
	"strings"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

// Status is a snapshot of a running node. Its JSON form is what
// "plurenet status --json" prints; docs/operations.md documents every field,
// and fields are only ever added, never renamed, so scripts keep working.
type Status struct {
	Name       string `json:"name"`
	PublicKey  string `json:"publicKey"`
	IPv4       string `json:"ipv4"`
	IPv6       string `json:"ipv6"`
	Rendezvous string `json:"rendezvous"`    // first 8 hex characters of the hash the relays see
	Transport  string `json:"transport"`     // configured mode: auto, relay or swarm
	UDP        string `json:"udp,omitempty"` // local address of the direct path's socket
	Adapter    string `json:"adapter"`       // "userspace" or "tun:NAME"
	// ForeignDropped counts packets from members that the kernel TUN
	// refused because they were not addressed to this node's overlay
	// addresses (a member trying to reach the host's other networks).
	ForeignDropped uint64         `json:"foreignDropped,omitempty"`
	Started        time.Time      `json:"started"`
	Relays         []RelayStatus  `json:"relays"`
	Members        []MemberStatus `json:"members"`
	Warnings       []string       `json:"warnings,omitempty"`
	// Owned describes the owned mesh; absent in an open mesh.
	Owned *OwnedStatus `json:"owned,omitempty"`
	// DNS describes the mesh's name server; absent with DNS off.
	DNS *DNSStatus `json:"dns,omitempty"`
	// DHT is the Mainline DHT's state (swarm mode, or auto mode with
	// --dht on); absent without it.
	DHT *DHTStatus `json:"dht,omitempty"`

	// PortMapping is the gateway's mapping of the UDP socket's port, while
	// there is one.
	PortMapping *PortMappingStatus `json:"portMapping,omitempty"`
}

// RelayStatus describes one relay connection.
type RelayStatus struct {
	Role       string    `json:"role"` // "primary" or "fallback"
	URL        string    `json:"url"`
	Connected  bool      `json:"connected"`
	Since      time.Time `json:"since,omitzero"` // when it last connected or disconnected
	LastError  string    `json:"lastError,omitempty"`
	Reconnects int       `json:"reconnects"`
}

// MemberStatus describes one other member of the mesh.
type MemberStatus struct {
	Name          string    `json:"name"`
	DNSName       string    `json:"dnsName,omitempty"` // the member's first name under the DNS suffix, if it has one
	PublicKey     string    `json:"publicKey"`
	IPv4          string    `json:"ipv4"`
	IPv6          string    `json:"ipv6"`
	Path          string    `json:"path"`                   // transport last used to send, e.g. "relay:primary"; "" before any traffic
	PathSince     time.Time `json:"pathSince,omitzero"`     // when the path last changed
	LastHandshake time.Time `json:"lastHandshake,omitzero"` // last completed WireGuard handshake
	RxBytes       uint64    `json:"rxBytes"`
	TxBytes       uint64    `json:"txBytes"`
	LastSeen      time.Time `json:"lastSeen"` // last membership announcement
	// Direct is the direct UDP path's state; absent with transport "relay".
	Direct *DirectStatus `json:"direct,omitempty"`
	// Certified says the member's certificate chains to the mesh owner
	// (always false in an open mesh, where nobody is certified); Tags are
	// its certificate's.
	Certified bool     `json:"certified"`
	Tags      []string `json:"tags,omitempty"`
	// Via is how a member was first heard off the relays (swarm mode, or
	// auto mode with the DHT): "dht" (at an address the DHT found),
	// "forward" (another member introduced it), or the carrier ("direct",
	// "lan"); empty for a member met only over a relay.
	Via string `json:"via,omitempty"`
	// Denied counts this member's packets the access policy dropped here.
	Denied uint64 `json:"denied,omitempty"`
}

// PortMappingStatus describes the gateway's port mapping of the direct
// path's socket.
type PortMappingStatus struct {
	Protocol string `json:"protocol"` // "upnp", "nat-pmp" or "pcp"
	External string `json:"external"` // the address members are offered
}

// DirectStatus describes the direct UDP path to one member.
type DirectStatus struct {
	State  string    `json:"state"`            // connecting, direct or lost
	Remote string    `json:"remote,omitempty"` // the member's address on the path, while direct
	RTTMs  float64   `json:"rttMs,omitempty"`  // ICE's latest round-trip time
	Since  time.Time `json:"since,omitzero"`   // when the state last changed
	// Static says the path was learned without ICE: swarm mode's paths,
	// or in auto mode a path found through the DHT while no relay reached
	// the member.
	Static bool `json:"static,omitempty"`
}

// Status returns a snapshot of the node.
func (n *Node) Status() Status {
	v4, v6 := n.Addrs()
	st := Status{
		Name:       n.cfg.Name,
		PublicKey:  n.pub.String(),
		IPv4:       v4.String(),
		IPv6:       v6.String(),
		Rendezvous: n.keys.rendezvousTag(),
		Transport:  n.cfg.Transport,
		Adapter:    n.adapter.String(),
		Started:    n.started,

		ForeignDropped: n.adapter.dropped(),
	}
	if n.direct != nil {
		st.UDP = n.direct.LocalAddr().String()
	}
	if pm := n.portMapper(); pm != nil {
		if mp, ok := pm.Mapping(); ok {
			st.PortMapping = &PortMappingStatus{Protocol: string(mp.Protocol), External: mp.External.String()}
		}
	}
	if n.cfg.Secret == "" {
		st.Warnings = append(st.Warnings, "no mesh secret: anyone who knows the topic can join")
	}
	var dnsNames map[nodekey.Public]string
	if n.dns != nil {
		st.DNS, dnsNames = n.dns.status(n.pub)
		st.Warnings = append(st.Warnings, n.dns.warningList()...)
	}
	for i, c := range n.relays {
		rs := c.Status()
		st.Relays = append(st.Relays, RelayStatus{
			Role:       relayRole(i),
			URL:        n.cfg.Relays[i],
			Connected:  rs.Connected,
			Since:      rs.Since,
			LastError:  rs.LastError,
			Reconnects: rs.Reconnects,
		})
	}
	var owned map[nodekey.Public]memberOwned
	st.Owned, owned = n.ownedStatus()
	wg := n.wireguardPeers()
	for _, m := range n.members.List() {
		ms := MemberStatus{
			Name:      m.Name,
			DNSName:   dnsNames[m.Key],
			PublicKey: m.Key.String(),
			IPv4:      m.V4.String(),
			IPv6:      m.V6.String(),
			LastSeen:  m.LastSeen,
		}
		if o, ok := owned[m.Key]; ok {
			ms.Certified, ms.Tags, ms.Denied = true, o.tags, o.denied
		}
		p := n.bind.PathTo(m.Key)
		ms.Path, ms.PathSince = p.Name, p.Since
		if n.direct != nil {
			if pi, ok := n.direct.PathInfo(m.Key); ok {
				ds := &DirectStatus{State: pi.State.String(), Since: pi.Since, Static: pi.Static}
				if pi.Remote.IsValid() {
					ds.Remote = pi.Remote.String()
				}
				if pi.RTT > 0 {
					ds.RTTMs = float64(pi.RTT.Microseconds()) / 1000
				}
				ms.Direct = ds
			}
		}
		ms.Via = n.howMet(m.Key)
		if w, ok := wg[m.Key]; ok {
			ms.LastHandshake, ms.RxBytes, ms.TxBytes = w.lastHandshake, w.rx, w.tx
		}
		st.Members = append(st.Members, ms)
	}
	st.DHT = n.dhtStatus(st.Members)
	return st
}

type wgPeer struct {
	lastHandshake time.Time
	rx, tx        uint64
}

// wireguardPeers reads per-peer counters from the device's UAPI dump.
func (n *Node) wireguardPeers() map[nodekey.Public]wgPeer {
	out := make(map[nodekey.Public]wgPeer)
	dump, err := n.dev.IpcGet()
	if err != nil {
		n.log.Debug("reading wireguard state", "err", err)
		return out
	}
	var cur *nodekey.Public
	var p wgPeer
	var sec, nsec int64
	flush := func() {
		if cur != nil {
			if sec != 0 || nsec != 0 {
				p.lastHandshake = time.Unix(sec, nsec)
			}
			out[*cur] = p
		}
	}
	for _, line := range strings.Split(dump, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			flush()
			key, err := nodekey.ParsePublic(v)
			if err != nil {
				cur = nil
				continue
			}
			cur, p, sec, nsec = &key, wgPeer{}, 0, 0
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			p.rx, _ = strconv.ParseUint(v, 10, 64)
		case "tx_bytes":
			p.tx, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	flush()
	return out
}
