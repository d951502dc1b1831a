package transports

import (
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// Duplicate handshake initiations. wireguard-go checks an initiation's
// timestamp against the last one it accepted from the peer under a read
// lock, and records the new one later under the write lock, while its
// handshake workers (one per CPU) run in parallel. So two copies of one
// initiation that arrive together can both pass the replay check, and the
// responder answers both: the initiator completes the handshake with
// whichever answer comes first and ignores the other, while the responder
// keeps the keys of the second. They no longer share a session; the flow
// stalls until WireGuard gives up on it and handshakes again, 15 s later.
//
// Copies arrive together more often than on a duplicating network: the
// Bind itself sends them on purpose (ResendHandshake on first contact, a
// tentative direct path's copy over the relay), on the assumption that
// WireGuard drops the second. Measured before this filter: the first byte
// of 2 in 29 starts of the bench's forward worker (two embedded nodes)
// waited 15 s, the responder's log showing two answers to one initiation.
//
// So each receive function drops an initiation it already passed to the
// device less than initiationMemory ago, recognised by its sender index and
// ephemeral key: every new initiation, a retry included, has a fresh
// ephemeral key, so only a copy matches.
const (
	// initiationMemory is how long a passed initiation is remembered:
	// far longer than two copies of one sent together can arrive apart
	// (a relay and a direct path), and below wireguard-go's 5 s retry,
	// which is a new initiation anyway.
	initiationMemory = 2 * time.Second
	// initiationsKept bounds the memory: a burst of more initiations than
	// this in initiationMemory (a flood, or a mesh of that many peers
	// meeting at once) evicts the oldest, so a copy may then pass, as
	// without the filter.
	initiationsKept = 64
	// initiationIDSize is the sender index (4 bytes) and ephemeral key (32)
	// that follow the message type.
	initiationIDSize = 4 + 32
)

// initiations remembers the initiations the receive functions passed.
type initiations struct {
	mu   sync.Mutex
	seen [initiationsKept]seenInitiation
	next int
}

type seenInitiation struct {
	id [initiationIDSize]byte
	at time.Time
}

// isInitiation reports whether pkt is a WireGuard handshake initiation.
func isInitiation(pkt []byte) bool {
	return len(pkt) == wgInitiationSize && pkt[0] == wgInitiation && pkt[1] == 0 && pkt[2] == 0 && pkt[3] == 0
}

// duplicate reports whether initiation pkt was seen less than
// initiationMemory before now, and remembers it if not.
func (s *initiations) duplicate(pkt []byte, now time.Time) bool {
	var id [initiationIDSize]byte
	copy(id[:], pkt[4:])
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.seen {
		if e := &s.seen[i]; e.id == id && now.Sub(e.at) < initiationMemory {
			return true
		}
	}
	s.seen[s.next] = seenInitiation{id: id, at: now}
	s.next = (s.next + 1) % initiationsKept
	return false
}

// filter wraps a receive function so that a copy of an initiation already
// passed to the device reaches it as an empty packet, which the device
// skips. A data packet costs a length comparison.
func (s *initiations) filter(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(pkts [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(pkts, sizes, eps)
		for i := range n {
			if p := pkts[i][:sizes[i]]; isInitiation(p) && s.duplicate(p, time.Now()) {
				sizes[i] = 0
			}
		}
		return n, err
	}
}
