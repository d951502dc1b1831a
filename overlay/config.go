package overlay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"

	dhtdisc "github.com/plures/plurenet/discovery/dht"
	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/portmap"
	"github.com/plures/plurenet/transports/relay"
)

// Config configures a Node. StateDir, a topic and at least one relay are
// required (no relay in swarm mode); everything else has a default.
type Config struct {
	// StateDir holds the node key (so the node keeps its IPs across
	// restarts) and the control socket.
	StateDir string

	// Topic names the mesh; TopicID gives its 32-byte id directly instead.
	Topic   string
	TopicID [32]byte

	// Secret is the mesh secret. Empty makes an open mesh that anyone who
	// knows the topic can join: the node warns loudly. A generated secret
	// (mesh.GenerateSecret) is used as it is; any other is stretched with
	// Argon2id once in New, which takes a few hundred milliseconds.
	Secret string

	// Name is this node's name in the mesh (default: the host name).
	Name string

	// Relays are relay URLs, primary first, then fallback. Swarm mode
	// takes none.
	Relays []string

	// V4Prefix is the mesh's IPv4 prefix (default 100.64.0.0/10). Every
	// member must use the same one.
	V4Prefix netip.Prefix

	// PinnedV4 pins this node's IPv4 address instead of deriving it.
	PinnedV4 netip.Addr

	// Owned makes the node a member of an owned mesh (owned.go); nil for
	// an open mesh.
	Owned *Owned

	// Transport is "auto" (the default: relays at once, direct UDP when ICE
	// succeeds; with DHT, members also meet through the DHT while no relay
	// reaches them), "relay" (relays only, no UDP at all) or "swarm" (no
	// relay at all: members find each other by LAN discovery, static
	// peers and the DHT, see Peers, LAN and DHT, and talk over direct
	// UDP). "direct", swarm mode's old name, is still accepted (see
	// ParseTransport).
	Transport string

	// ListenPort is the UDP port of the direct path; 0 picks one, except
	// in swarm mode, where 0 means DefaultDirectPort if it is free (else a
	// random port, with a warning): a peer that others dial needs a port
	// they know.
	ListenPort int
	// ListenAddr is the address the direct path binds (zero: every
	// address, IPv4 and IPv6 on one dual-stack socket). An IPv4 address,
	// 0.0.0.0 included, keeps the direct path on IPv4; an IPv6 one (not
	// link-local) on IPv6.
	ListenAddr netip.Addr

	// NoPortMapping turns off asking the gateway (UPnP IGD, NAT-PMP, PCP)
	// to forward the direct path's UDP port, which is on by default in
	// auto mode: the mapped address is offered to members as a candidate
	// that works through NATs no hole punch gets through. Relay mode sends
	// no UDP at all and direct mode has no ICE, so neither maps.
	NoPortMapping bool
	// PortMappingProtocols limits port mapping to these protocols, in
	// this order of preference; nil means portmap.Protocols.
	PortMappingProtocols []portmap.Protocol

	// STUNServers ("host:port") tell the direct path this node's public
	// address. Nil means the relays' own STUN responders (each relay's
	// host, port 3478); an empty non-nil slice means none.
	STUNServers []string

	// Peers are the static peers of swarm mode, each "KEY@HOST:PORT" (KEY
	// the peer's node public key as "plurenet key public" prints it) or
	// "HOST:PORT" (the key is learned from the peer's first sealed
	// announcement). This node announces itself to each; HOST may be a
	// name, looked up again every announce interval. IPv4 only.
	Peers []string

	// NoLAN turns LAN discovery off in swarm mode (it is on by default):
	// no multicast announcements, only Peers.
	NoLAN bool
	// LANGroup is the multicast group:port of LAN discovery (default
	// 239.255.77.77:51899). Members must use the same.
	LANGroup netip.AddrPort
	// LANInterfaces names the interfaces LAN discovery uses (default:
	// every interface that is up, multicast-capable and not loopback).
	LANInterfaces []string

	// DHT turns the Mainline DHT on: members announce themselves under
	// the mesh's daily info-hash and find each other across NATs with no
	// relay (discovery/dht). In swarm mode it is how members meet across
	// the internet; in auto mode it keeps members meeting while no relay
	// reaches them (autodht.go). Relay mode refuses it (it sends no UDP).
	// The CLI turns it on by default in swarm mode only; the zero value
	// here is off, so a library user's node sends nothing to the public
	// DHT unless asked.
	DHT bool
	// DHTBootstrap are the HOST:PORT of the DHT nodes to join through
	// (a private DHT); nil means the library's public bootstrap routers.
	DHTBootstrap []string

	// TUN, when set, names a kernel TUN device to create (needs
	// CAP_NET_ADMIN) instead of the userspace adapter.
	TUN string

	// MTU of the overlay (default 1280, the IPv6 minimum, which fits in
	// every path: a relay frame inside TLS inside TCP, or WireGuard in UDP
	// over a 1400-byte tunnel).
	MTU int

	// DNS configures the mesh's name server (dns.go); the zero value
	// serves the members' names.
	DNS DNSConfig

	// TLSConfig is used for wss:// relays (custom root CAs).
	TLSConfig *tls.Config
	// Proxy picks an HTTP CONNECT proxy per relay request; nil uses
	// HTTPS_PROXY and friends from the environment.
	Proxy func(*http.Request) (*url.URL, error)

	Logger *slog.Logger
}

// Transport modes.
const (
	TransportAuto  = "auto"
	TransportRelay = "relay"
	TransportSwarm = "swarm"
)

// transportSwarmOldName is what swarm mode was called until "direct" came
// to mean only the direct UDP path (which auto mode uses too). Existing
// command lines and config files keep working.
const transportSwarmOldName = "direct"

// SwarmRenamedNotice is the line logged when a configuration names swarm
// mode by its old name.
const SwarmRenamedNotice = "--transport direct is now --transport swarm (the relay-less mode); the old name keeps working"

// ParseTransport checks a transport mode and returns its current name: ""
// is TransportAuto, and the old name of swarm mode is TransportSwarm with
// renamed true, for the caller to log SwarmRenamedNotice once.
func ParseTransport(s string) (mode string, renamed bool, err error) {
	switch s {
	case "":
		return TransportAuto, false, nil
	case TransportAuto, TransportRelay, TransportSwarm:
		return s, false, nil
	case transportSwarmOldName:
		return TransportSwarm, true, nil
	}
	return "", false, fmt.Errorf("transport %q: want %q, %q or %q", s, TransportAuto, TransportRelay, TransportSwarm)
}

// relaySTUNPort is where a plurenet relay answers STUN (plurenet relay
// --stun-listen), so a deployment needs no other server.
const relaySTUNPort = "3478"

// RelaySTUN returns the STUN responders of the relays (each relay's host,
// port 3478): the default STUN servers of the direct path and of netcheck.
// URLs that do not parse are skipped.
func RelaySTUN(relays []string) []string {
	out := []string{}
	for _, r := range relays {
		if u, err := relay.ParseURL(r); err == nil {
			out = append(out, net.JoinHostPort(u.Hostname(), relaySTUNPort))
		}
	}
	return out
}

// DefaultMTU is the overlay MTU unless configured otherwise.
const DefaultMTU = 1280

func (cfg Config) withDefaults() (Config, error) {
	if cfg.StateDir == "" {
		return cfg, errors.New("no state dir: set one so that the node key (and so its IPs) survive restarts")
	}
	if cfg.Topic == "" && cfg.TopicID == ([32]byte{}) {
		return cfg, errors.New("no topic: give the mesh a topic name (members must share it)")
	}
	if cfg.Topic != "" {
		cfg.TopicID = mesh.TopicID(cfg.Topic)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var err error
	if cfg.DNS, err = cfg.DNS.withDefaults(cfg.Topic, cfg.TopicID); err != nil {
		return cfg, err
	}
	mode, renamed, err := ParseTransport(cfg.Transport)
	if err != nil {
		return cfg, err
	}
	if renamed {
		cfg.Logger.Warn(SwarmRenamedNotice)
	}
	cfg.Transport = mode
	if cfg.DHT && cfg.Transport == TransportRelay {
		return cfg, fmt.Errorf("transport %q sends no UDP at all and the DHT needs it: turn the DHT off, or use transport %q (relays and direct paths) or %q", TransportRelay, TransportAuto, TransportSwarm)
	}
	if !cfg.DHT && len(cfg.DHTBootstrap) > 0 {
		return cfg, errors.New("DHT bootstrap nodes given but the DHT is off: turn it on (--dht on) or drop them")
	}
	if err := dhtdisc.CheckBootstrap(cfg.DHTBootstrap); err != nil {
		return cfg, err
	}
	if cfg.Transport == TransportSwarm {
		if err := cfg.checkSwarm(); err != nil {
			return cfg, err
		}
	} else {
		if len(cfg.Relays) == 0 {
			return cfg, errors.New("no relay: give a relay URL (ws://host:port or wss://host); see README \"Run a relay\"")
		}
		if len(cfg.Peers) > 0 {
			return cfg, fmt.Errorf("static peers are for transport %q (no relay); with relays, members find each other through them", TransportSwarm)
		}
	}
	// Normalized here so that status shows the URL the client dials. A
	// copy: the caller's slice is not ours to rewrite.
	var relays []string
	for _, r := range cfg.Relays {
		u, err := relay.ParseURL(r)
		if err != nil {
			return cfg, err
		}
		relays = append(relays, u.String())
	}
	cfg.Relays = relays
	if !cfg.V4Prefix.IsValid() {
		cfg.V4Prefix = mesh.DefaultV4Prefix
	}
	if err := mesh.ValidateV4Prefix(cfg.V4Prefix); err != nil {
		return cfg, err
	}
	if cfg.PinnedV4.IsValid() && !cfg.V4Prefix.Contains(cfg.PinnedV4) {
		return cfg, fmt.Errorf("pinned IPv4 %s is outside the mesh prefix %s", cfg.PinnedV4, cfg.V4Prefix)
	}
	if cfg.Name == "" {
		h, _ := os.Hostname()
		cfg.Name = sanitizeName(h)
	}
	if err := mesh.ValidName(cfg.Name); err != nil {
		return cfg, err
	}
	if cfg.ListenPort < 0 || cfg.ListenPort > 65535 {
		return cfg, fmt.Errorf("UDP listen port %d: want 0 to 65535", cfg.ListenPort)
	}
	if cfg.STUNServers == nil {
		cfg.STUNServers = RelaySTUN(cfg.Relays)
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 1280 || cfg.MTU > 9000 {
		return cfg, fmt.Errorf("MTU %d: want 1280 to 9000 (1280 is the IPv6 minimum)", cfg.MTU)
	}
	return cfg, nil
}

// sanitizeName turns a host name into a valid member name.
func sanitizeName(h string) string {
	h, _, _ = strings.Cut(h, ".")
	var b strings.Builder
	for _, c := range h {
		if b.Len() >= mesh.MaxNameLen {
			break
		}
		if c < 128 && mesh.ValidName(string(c)) == nil {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "node"
	}
	return b.String()
}
