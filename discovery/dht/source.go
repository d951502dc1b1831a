// Package dht is the swarm-mode discovery source on the BitTorrent
// Mainline DHT (BEP 5, through github.com/anacrolix/dht/v2): members
// announce the node's direct socket under the mesh's daily info-hash
// (mesh.DHTInfoHashes) and look the others up, reporting the addresses
// found to the node, which sends them sealed announcements (the
// simultaneous open that gets through endpoint-independent NATs: both
// sides find and contact each other). The DHT node runs on the direct
// socket (direct.Transport.DHTConn) and announces with implied_port, so
// the address the DHT stores is the NAT mapping WireGuard uses.
//
// The package also gives a plain DHT node (NewServer) with a bounded peer
// store, for `plurenet dht-node` and private DHTs.
package dht

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	anacrolixdht "github.com/anacrolix/dht/v2"

	"github.com/plures/plurenet/discovery"
	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/transports/direct"
)

// Limits of the source.
const (
	// MinInterval and MaxInterval bound the pause between two lookups:
	// at start, and after a lookup found a new address, the next comes
	// after MinInterval (a member who started a moment later is found
	// within a few seconds); each lookup that finds nothing new doubles
	// the pause up to MaxInterval, which also re-announces well within
	// PeerTTL and finds a restarted member's new mapping within minutes.
	MinInterval = time.Second
	MaxInterval = 2 * time.Minute

	// lookupTimeout bounds one get_peers traversal and its announces: a
	// traversal that has not stalled by then (a huge or slow DHT) is cut.
	lookupTimeout = 30 * time.Second

	// MaxPeersPerLookup bounds the addresses taken from one lookup; a
	// mesh's info-hash has its members and nothing else.
	MaxPeersPerLookup = 32

	// MaxFound bounds the addresses reported to the node, which sends
	// each an announcement every announce interval: a new one replaces the
	// oldest (its label is reused).
	MaxFound = 64
)

// Config configures a Source.
type Config struct {
	// Conn is the node's direct socket as a PacketConn for the DHT
	// (direct.Transport.DHTConn). The Source closes it.
	Conn net.PacketConn
	// InfoHashes gives the info-hashes to announce and look up at a time
	// (mesh.DHTInfoHashes of the mesh's keys).
	InfoHashes func(now time.Time) [][mesh.DHTInfoHashSize]byte
	// Server configures the DHT node (bootstrap nodes, send rate).
	Server ServerConfig
	Logger *slog.Logger
}

// Source announces and looks up the mesh on the DHT.
type Source struct {
	cfg  Config
	log  *slog.Logger
	port int

	mu      sync.Mutex
	started bool
	srv     *anacrolixdht.Server // nil until Start
	cancel  context.CancelFunc
	soon    chan struct{}          // Soon's request for a lookup now; room for one
	found   map[netip.AddrPort]int // address -> slot
	slots   [MaxFound]netip.AddrPort
	next    int // the slot a new address takes
	stats   Stats
	closeMu sync.Once
	wg      sync.WaitGroup
}

// Stats says what the source did.
type Stats struct {
	Nodes        int       // nodes in the routing table
	GoodNodes    int       // of which answered recently
	Lookups      int       // lookups done
	LastLookup   time.Time // end of the last lookup (zero: none yet)
	LastAnnounce time.Time // last lookup whose announce_peer a node accepted
	Found        int       // addresses found (at most MaxFound)
}

// New checks cfg.
func New(cfg Config) (*Source, error) {
	if cfg.Conn == nil {
		return nil, errors.New("DHT discovery: no socket")
	}
	if cfg.InfoHashes == nil {
		return nil, errors.New("DHT discovery: no info-hashes")
	}
	if err := CheckBootstrap(cfg.Server.Bootstrap); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Server.Logger = cfg.Logger
	port := 0
	if ua, ok := cfg.Conn.LocalAddr().(*net.UDPAddr); ok {
		port = ua.Port
	}
	return &Source{cfg: cfg, log: cfg.Logger.With("source", "dht"), port: port,
		soon: make(chan struct{}, 1), found: make(map[netip.AddrPort]int)}, nil
}

// Start starts the DHT node and the lookups, reporting new addresses to
// sink.Found, until ctx ends or Close.
func (s *Source) Start(ctx context.Context, sink discovery.Sink) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := discovery.BeginStart(sink, &s.started, "DHT discovery"); err != nil {
		return err
	}
	srv, _, err := NewServer(s.cfg.Conn, s.cfg.Server)
	if err != nil {
		return err
	}
	s.srv = srv
	ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.loop(ctx, sink.Found)
	}()
	s.log.Info("DHT discovery started", "port", s.port, "bootstrap", s.cfg.Server.Bootstrap)
	return nil
}

// Announce sends nothing: members found on the DHT are reached at the
// addresses Start reported, which the node announces to.
func (s *Source) Announce([]byte) error { return nil }

// Close stops the lookups and the DHT node, closes the socket's DHT conn
// and waits for the lookups. It is idempotent.
func (s *Source) Close() error {
	s.closeMu.Do(func() {
		s.mu.Lock()
		cancel, srv := s.cancel, s.srv
		s.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		s.wg.Wait()
		if srv != nil {
			srv.Close() // closes the conn too, once it has marked itself closed
		} else {
			s.cfg.Conn.Close()
		}
	})
	return nil
}

// Stats returns what the source did so far.
func (s *Source) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Found = len(s.found)
	if s.srv != nil {
		ss := s.srv.Stats()
		st.Nodes, st.GoodNodes = ss.Nodes, ss.GoodNodes
	}
	return st
}

// Soon asks for a lookup now, and for the pause between lookups to start
// again from MinInterval, as if the last lookup had found a new address:
// the node calls it when the DHT has just become the way members meet
// (every relay went down in auto mode), so that a member that joins or
// restarts meanwhile is found within seconds, not after MaxInterval. It
// never blocks; requests made while one is pending are one request.
func (s *Source) Soon() {
	select {
	case s.soon <- struct{}{}:
	default:
	}
}

// Found reports whether a was found on the DHT.
func (s *Source) Found(a netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.found[a]
	return ok
}

func (s *Source) loop(ctx context.Context, found func(discovery.Peer)) {
	wait := MinInterval
	for {
		fresh := false
		for _, ih := range s.cfg.InfoHashes(time.Now()) {
			if s.lookup(ctx, ih, found) {
				fresh = true
			}
		}
		if fresh {
			wait = MinInterval
		} else {
			wait = min(2*wait, MaxInterval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.soon:
			t.Stop()
			wait = MinInterval / 2 // doubled back to MinInterval by a lookup that finds nothing new
		}
	}
}

// lookup runs one get_peers traversal toward ih, announcing this node to
// the closest nodes at its end, and reports the addresses it finds. It
// returns whether any was new.
func (s *Source) lookup(ctx context.Context, ih [mesh.DHTInfoHashSize]byte, found func(discovery.Peer)) bool {
	before := s.srv.Stats().SuccessfulOutboundAnnouncePeerQueries
	a, err := s.srv.AnnounceTraversal(ih, anacrolixdht.AnnouncePeer(anacrolixdht.AnnouncePeerOpts{Port: s.port, ImpliedPort: true}))
	if err != nil {
		s.log.Debug("DHT lookup not started", "err", err)
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	fresh, taken := false, 0
	// The Peers channel must be drained to its end: the traversal blocks
	// on it, and announces only once it has finished.
	peers := a.Peers
	for peers != nil {
		select {
		case pv, ok := <-peers:
			if !ok {
				peers = nil
				break
			}
			for _, p := range pv.Peers {
				if taken == MaxPeersPerLookup {
					break
				}
				taken++
				if s.add(addrPortOf(p), found) {
					fresh = true
				}
			}
		case <-ctx.Done():
			a.Close()
			for range peers {
			}
			peers = nil
		}
	}
	a.Close()
	after := s.srv.Stats().SuccessfulOutboundAnnouncePeerQueries
	s.mu.Lock()
	s.stats.Lookups++
	s.stats.LastLookup = time.Now()
	if after > before {
		s.stats.LastAnnounce = s.stats.LastLookup
	}
	s.mu.Unlock()
	s.log.Debug("DHT lookup done", "infohash", fmt.Sprintf("%x", ih[:4]), "peers", taken, "announced", after > before, "nodes", s.srv.NumNodes())
	return fresh
}

// add records an address and reports it if it is new; false if not.
func (s *Source) add(a netip.AddrPort, found func(discovery.Peer)) bool {
	if !direct.ValidRemote(a) {
		return false
	}
	s.mu.Lock()
	if _, ok := s.found[a]; ok {
		s.mu.Unlock()
		return false
	}
	slot := s.next
	s.next = (s.next + 1) % MaxFound
	if old := s.slots[slot]; old.IsValid() {
		delete(s.found, old)
	}
	s.slots[slot] = a
	s.found[a] = slot
	s.mu.Unlock()
	s.log.Debug("DHT found an address", "addr", a.String())
	found(discovery.Peer{Label: fmt.Sprintf("dht#%d", slot), Addr: a})
	return true
}
