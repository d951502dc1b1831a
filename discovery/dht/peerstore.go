package dht

import (
	"net/netip"
	"sync"
	"time"

	"github.com/anacrolix/dht/v2/krpc"
	peer_store "github.com/anacrolix/dht/v2/peer-store"
)

// The library's peer_store.InMemory is unusable here (v2.23.0): its
// GetPeers decodes the map key, which holds only the peer's IP, as a whole
// IP+port address, and it keeps one peer per IP, so announced peers are
// never returned. PeerStore is our own, small and bounded.

// Peer store limits. The store holds what others announce to this node, so
// every bound is against strangers on the DHT.
const (
	// MaxInfoHashes bounds the info-hashes stored; beyond it the one
	// announced to least recently is forgotten. A node of the public DHT
	// near an info-hash holds a handful; 4096 keeps a private DHT node's
	// memory under a few MiB whatever is announced to it.
	MaxInfoHashes = 4096
	// MaxPeersPerHash bounds the peers stored for one info-hash (a mesh's
	// members on one day); beyond it the one announced least recently is
	// replaced. get_peers replies carry at most this many.
	MaxPeersPerHash = 64
	// PeerTTL is how long an announcement is kept: BEP 5 nodes keep
	// peers about 30 minutes, and members announce far more often.
	PeerTTL = 30 * time.Minute
)

// PeerStore is a bounded peer_store.Interface keyed by IP and port.
type PeerStore struct {
	mu     sync.Mutex
	hashes map[peer_store.InfoHash]*hashPeers
	now    func() time.Time
}

type hashPeers struct {
	last  time.Time
	peers map[netip.AddrPort]time.Time // when announced
}

var _ peer_store.Interface = (*PeerStore)(nil)

// NewPeerStore returns an empty store.
func NewPeerStore() *PeerStore {
	return &PeerStore{hashes: make(map[peer_store.InfoHash]*hashPeers), now: time.Now}
}

// AddPeer records that p announced itself under ih.
func (s *PeerStore) AddPeer(ih peer_store.InfoHash, p krpc.NodeAddr) {
	ap := addrPortOf(p)
	if !ap.Addr().IsValid() || ap.Port() == 0 {
		return
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hashes[ih]
	if h == nil {
		if len(s.hashes) >= MaxInfoHashes {
			s.evictHashLocked(now)
		}
		h = &hashPeers{peers: make(map[netip.AddrPort]time.Time)}
		s.hashes[ih] = h
	}
	h.last = now
	if _, ok := h.peers[ap]; !ok && len(h.peers) >= MaxPeersPerHash {
		oldest, at := netip.AddrPort{}, now
		for a, t := range h.peers {
			if !t.After(at) {
				oldest, at = a, t
			}
		}
		delete(h.peers, oldest)
	}
	h.peers[ap] = now
}

// evictHashLocked drops expired info-hashes, or else the least recently
// announced to. Linear, but only when the store is full.
func (s *PeerStore) evictHashLocked(now time.Time) {
	var oldest peer_store.InfoHash
	at := now
	for ih, h := range s.hashes {
		if now.Sub(h.last) > PeerTTL {
			delete(s.hashes, ih)
			continue
		}
		if !h.last.After(at) {
			oldest, at = ih, h.last
		}
	}
	if len(s.hashes) >= MaxInfoHashes {
		delete(s.hashes, oldest)
	}
}

// GetPeers returns the live peers announced under ih.
func (s *PeerStore) GetPeers(ih peer_store.InfoHash) []krpc.NodeAddr {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hashes[ih]
	if h == nil {
		return nil
	}
	out := make([]krpc.NodeAddr, 0, len(h.peers))
	for a, t := range h.peers {
		if now.Sub(t) > PeerTTL {
			delete(h.peers, a)
			continue
		}
		var na krpc.NodeAddr
		na.FromAddrPort(a)
		out = append(out, na)
	}
	if len(h.peers) == 0 {
		delete(s.hashes, ih)
	}
	return out
}

// Len is the number of info-hashes held.
func (s *PeerStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hashes)
}

// addrPortOf is a KRPC address as a netip.AddrPort, IPv4 unmapped.
func addrPortOf(a krpc.NodeAddr) netip.AddrPort {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok || a.Port <= 0 || a.Port > 65535 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port))
}
