package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/portmap"
	"github.com/plures/plurenet/transports"
	"github.com/plures/plurenet/transports/direct"
	"github.com/plures/plurenet/transports/relay"
	"github.com/plures/plurenet/tun/filter"
)

// maintainInterval is how often the node expires silent members. It is a
// fraction of mesh.MemberTimeout so a member is removed at most this much
// later than its timeout.
const maintainInterval = 2 * time.Second

// Node is a running member of a mesh.
type Node struct {
	cfg     Config
	log     *slog.Logger
	priv    nodekey.Private
	pub     nodekey.Public
	keys    keyring // rotate.go
	v6      netip.Addr
	members *mesh.Members
	adapter adapter
	bind    *transports.Bind
	dev     *device.Device
	relays  []*relay.Client   // primary first, as in cfg.Relays
	direct  *direct.Transport // nil with Transport "relay"
	swarm   *swarmMode        // nil unless Transport is "swarm", or "auto" with the DHT
	own     *ownedState       // nil in an open mesh
	filter  *filter.Device    // the access filter; nil in an open mesh (access.go)
	dns     *dnsService       // nil with DNS off
	portmap *portmap.Mapper   // nil unless auto mode maps the direct port (directpath.go)
	ctl     *controlServer

	// pmMu guards portmap and pmClosed once the node is up: a network
	// change replaces the mapper (roam.go).
	pmMu     sync.Mutex
	pmClosed bool

	stamp   *mesh.Stamper
	started time.Time
	// ready is closed once the device is up: handleSealed waits for it
	// before it acts on a message (a member joining configures the
	// device), and what arrives meanwhile waits with its carrier. done is
	// closed by Close.
	ready chan struct{}
	done  <-chan struct{}

	mu         sync.Mutex // guards the fields below
	selfV4     netip.Addr
	configured map[nodekey.Public]peerConfig // what the WireGuard device holds
	changed    chan struct{}                 // closed and replaced on every membership change

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	metricsState // metrics.go
	stopRequest  // stop.go: a control client asked the program to stop
}

// New starts a node: it loads or creates the node key in cfg.StateDir,
// brings up the userspace adapter and the WireGuard device, and starts
// connecting to the relays in the background (a relay that is down is
// retried; Status says so). It returns once the node is ready for Dial and
// Listen; peers appear as their announcements arrive.
func New(cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:        cfg,
		log:        cfg.Logger,
		configured: make(map[nodekey.Public]peerConfig),
		changed:    make(chan struct{}),
		started:    time.Now(),
		stamp:      &mesh.Stamper{},
		ready:      make(chan struct{}),
	}
	if err := n.setup(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) setup() error {
	cfg := n.cfg
	priv, created, err := mesh.LoadOrCreateKey(cfg.StateDir)
	if err != nil {
		return err
	}
	n.priv, n.pub = priv, priv.Public()
	if created {
		n.log.Info("created node key", "dir", cfg.StateDir, "key", n.pub.ShortString())
	}
	if cfg.Secret == "" {
		n.log.Warn("NO MESH SECRET: anyone who knows the topic can join this mesh and reach this node; give a secret with --key-file or PLURENET_KEY (see \"plurenet key generate\")")
	}
	// Argon2id for a chosen secret: slow on purpose, so it runs once here.
	began := time.Now()
	stretched, kind, err := mesh.StretchSecret(cfg.TopicID, cfg.Secret)
	if err != nil {
		return err
	}
	n.log.Debug("derived mesh keys", "secret", kind, "took", time.Since(began))
	n.keys.cur = mesh.DeriveKeys(cfg.TopicID, stretched)
	if err := n.setupOwned(); err != nil {
		return err
	}
	ula := mesh.ULAPrefix(cfg.TopicID)
	n.v6 = mesh.V6(ula, n.pub)
	n.members, err = mesh.NewMembers(mesh.Config{
		Self:     mesh.Claim{Key: n.pub, Pinned: cfg.PinnedV4},
		V4Prefix: cfg.V4Prefix,
		ULA:      ula,
	})
	if err != nil {
		return err
	}
	n.selfV4 = n.members.SelfV4()

	if cfg.TUN != "" {
		n.adapter, err = newKernel(n.selfV4, n.v6, ula, cfg)
	} else {
		n.adapter, err = newUserspace(n.selfV4, n.v6, cfg)
	}
	if err != nil {
		n.adapter = nil // not a typed nil, which Close would call close on
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, ctx.Done()
	n.bind = transports.NewBind(transports.BindConfig{Logger: n.log})
	var ts []transports.Transport
	switch cfg.Transport {
	case TransportAuto:
		if err := n.startDirect(); err != nil {
			return err
		}
		// Most preferred first: the Bind uses direct whenever it is up.
		ts = append(ts, n.direct)
	case TransportSwarm:
		// No relay at all (swarm.go).
		if err := n.startSwarm(); err != nil {
			return err
		}
		ts = append(ts, n.direct)
	}
	for i, u := range cfg.Relays {
		c, err := relay.New(relay.Config{
			URL:        u,
			PrivateKey: n.priv,
			Admission:  n.keys.current().Admission,
			TLSConfig:  cfg.TLSConfig,
			Proxy:      cfg.Proxy,
			Logger:     n.log,
			Name:       "relay:" + relayRole(i),
			// WireGuard packets go from the connection's reader straight
			// to the Bind; the node sees only sealed messages and
			// presence.
			Inbox: n.bind,
			// n.relays is complete once the node is ready.
			OnSealed: func(from nodekey.Public, msg []byte) {
				if n.waitReady() {
					n.handleSealed(fromRelay(n.relays[i], from), msg)
				}
			},
			OnPeer: func(peer nodekey.Public, present bool) {
				// Tell a newcomer about us now rather than at the next
				// periodic announcement, so it can reach us at once.
				if present && n.waitReady() {
					n.announceTo(n.relays[i], peer)
				}
			},
		})
		if err != nil {
			return fmt.Errorf("%s relay: %w", relayRole(i), err)
		}
		n.relays = append(n.relays, c)
		ts = append(ts, c)
	}
	n.bind.SetTransports(ts...)

	// The device comes up after the transports are set: the Bind gathers
	// the transports' own receive functions (the direct path's batched
	// socket reads) when the device opens it.
	n.dev = device.NewDevice(transports.WrapDevice(n.wrapFilter(n.adapter.device()), n.bind), n.bind, wireguardLogger(n.log))
	if err := n.dev.IpcSet("private_key=" + n.priv.Hex() + "\n"); err != nil {
		return fmt.Errorf("wireguard: setting key: %w", err)
	}
	if err := n.dev.Up(); err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	// Before ready: every membership change after this updates the names.
	if err := n.startDNS(ctx, ula); err != nil {
		return err
	}
	// Only now may sealed messages be acted on: a member joining
	// configures the device.
	close(n.ready)
	if n.swarm != nil {
		if err := n.startDiscovery(ctx); err != nil {
			return err
		}
	}

	n.ctl, err = startControl(cfg.StateDir, n, n.log)
	if err != nil {
		return err
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.maintain(ctx)
	}()
	n.watchNetwork(ctx)
	n.log.Info("node up", "name", cfg.Name, "adapter", n.adapter, "key", n.pub.ShortString(), "ipv4", n.selfV4, "ipv6", n.v6,
		"rendezvous", n.keys.rendezvousTag())
	return nil
}

// relayRole names the i-th relay of Config.Relays.
func relayRole(i int) string {
	if i == 0 {
		return "primary"
	}
	return "fallback"
}

// waitReady waits until the device is up; false if the node closes first.
func (n *Node) waitReady() bool {
	select {
	case <-n.ready:
		return true
	case <-n.done:
		return false
	}
}

// maintain announces this node periodically and removes silent members.
func (n *Node) maintain(ctx context.Context) {
	announce := time.NewTicker(mesh.AnnounceInterval)
	defer announce.Stop()
	expire := time.NewTicker(maintainInterval)
	defer expire.Stop()
	n.announce()
	for {
		select {
		case <-ctx.Done():
			return
		case <-announce.C:
			n.announce()
		case <-expire.C:
			n.rotateIfDue(time.Now())
			n.recheck(time.Now()) // certificates that expired
			n.autoDHTTick()       // auto mode with the DHT
			if gone := n.members.Expire(time.Now()); len(gone) > 0 {
				for _, m := range gone {
					n.log.Info("member timed out", "peer", m.Key.ShortString(), "name", m.Name)
				}
				n.syncPeers()
			}
		}
	}
}

// Close leaves the mesh (telling the other members, so they drop this node
// at once rather than after a timeout) and stops every goroutine. It is
// idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.members != nil && (len(n.relays) > 0 || n.swarm != nil) {
			n.broadcastSealed(mesh.Message{Kind: mesh.KindLeave, From: n.pub})
		}
		if n.cancel != nil {
			n.cancel()
		}
		// Split DNS is reverted while its interface still exists.
		if n.dns != nil {
			n.dns.closeLink()
		}
		// The device first, so WireGuard stops sending before the relays
		// go; closing it closes the Bind and the adapter too.
		if n.dev != nil {
			n.dev.Close()
		}
		if n.adapter != nil {
			if err := n.adapter.close(); err != nil {
				n.log.Warn("closing adapter", "adapter", n.adapter, "err", err)
			}
		}
		if n.dns != nil {
			n.dns.close()
		}
		for _, c := range n.relays {
			c.Close()
		}
		n.closeSwarm()
		n.closePortMapping() // removes the mapping from the gateway
		if n.direct != nil {
			n.direct.Close()
		}
		if n.ctl != nil {
			n.ctl.Close()
		}
		n.wg.Wait()
	})
	return nil
}

// PublicKey returns the node's key.
func (n *Node) PublicKey() nodekey.Public { return n.pub }

// Addrs returns the node's IPv4 and IPv6 overlay addresses.
func (n *Node) Addrs() (v4, v6 netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.selfV4, n.v6
}

// ErrNoSuchMember is returned when a name matches no member.
var ErrNoSuchMember = errors.New("no such member")

// WaitMember waits until a member with this name (or overlay IP) is known
// and reachable: its WireGuard peer is configured, so a dial does not race
// the configuration (see firstcontact.go).
func (n *Node) WaitMember(ctx context.Context, nameOrIP string) (netip.Addr, error) {
	for {
		n.mu.Lock()
		ch := n.changed
		n.mu.Unlock()
		ip, err := n.Resolve(nameOrIP)
		if err == nil {
			if n.configuredMember(ip) {
				return ip, nil
			}
		} else if !errors.Is(err, ErrNoSuchMember) {
			return netip.Addr{}, err
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("waiting for member %q: %w", nameOrIP, ctx.Err())
		case <-ch:
		}
	}
}

// notifyChangedLocked wakes every WaitMember. n.mu must be held.
func (n *Node) notifyChangedLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// wireguardLogger sends wireguard-go's logs to slog: its verbose lines are
// per-packet detail (debug); its errors are worth a warning, but it logs one
// per failed packet, so a dead path would flood the log: each distinct
// format is logged at most once per wgErrorEvery, with a count of what was
// suppressed.
func wireguardLogger(log *slog.Logger) *device.Logger {
	log = log.With("component", "wireguard")
	var mu sync.Mutex
	type seen struct {
		last       time.Time
		suppressed int
	}
	byFormat := make(map[string]*seen)
	return &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
		Errorf: func(format string, args ...any) {
			now := time.Now()
			mu.Lock()
			s := byFormat[format]
			if s == nil {
				if len(byFormat) >= wgErrorFormats {
					clear(byFormat)
				}
				s = &seen{}
				byFormat[format] = s
			}
			if now.Sub(s.last) < wgErrorEvery {
				s.suppressed++
				mu.Unlock()
				return
			}
			suppressed := s.suppressed
			s.last, s.suppressed = now, 0
			mu.Unlock()
			if suppressed > 0 {
				log.Warn(fmt.Sprintf(format, args...), "suppressed", suppressed)
			} else {
				log.Warn(fmt.Sprintf(format, args...))
			}
		},
	}
}

// Bounds of wireguardLogger's rate limit: wireguard-go has a few dozen
// error formats, so the map stays small.
const (
	wgErrorEvery   = 5 * time.Second
	wgErrorFormats = 64
)
