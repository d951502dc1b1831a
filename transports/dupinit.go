package transports

import (
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/plures/plurenet/internal/nodekey"
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
// So each receive function lets one copy of an initiation through, holds
// back copies that arrive within initiationRetry of it, and drops the rest
// for initiationMemory, recognising a copy by its sender index and
// ephemeral key: every new initiation, a retry included, has a fresh
// ephemeral key, so only a copy matches.
//
// A copy is held, not dropped, because the first one may have been
// refused for a reason that is gone a moment later: on first contact a
// member's initiation can reach this node before the member's
// announcement has made it a peer of the device, and the Bind's resend
// on first contact (ResendHandshake) comes right behind it. Dropping that
// copy left the flow waiting for wireguard-go's retry, 5 s later (1 start
// of the forward worker in ~60). One held copy goes to the device
// initiationRetry after the first (through the Bind's inbox, as if
// delivered again): late enough that the device has finished with the
// first, so its replay check refuses the copy if the first was taken and
// judges it afresh if it was not. A copy arriving on its own that late
// passes the same way, once.
const (
	// initiationMemory is how long a passed initiation is remembered:
	// far longer than two copies of one sent together can arrive apart
	// (a relay and a direct path), and below wireguard-go's 5 s retry,
	// which is a new initiation anyway.
	initiationMemory = 2 * time.Second
	// initiationRetry is how long after the first copy of an initiation
	// a second may reach the device: wireguard-go handles an initiation
	// in well under a millisecond, so by then the two cannot race.
	initiationRetry = 100 * time.Millisecond
	// initiationsKept bounds the memory: a burst of more initiations than
	// this in initiationMemory (a flood, or a mesh of that many peers
	// meeting at once) evicts the oldest, so a copy may then pass, as
	// without the filter. At most as many copies are held at once.
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
	held int // copies waiting for their timer, at most initiationsKept
	// redeliver hands a held copy to the device again: the Bind's Deliver.
	// Nil: copies are dropped, not held.
	redeliver func(from nodekey.Public, pkt []byte)
}

type seenInitiation struct {
	id    [initiationIDSize]byte
	at    time.Time // when the first copy passed
	again bool      // a second copy passed, initiationRetry or more after the first
	held  bool      // a copy was held for redelivery
}

// isInitiation reports whether pkt is a WireGuard handshake initiation.
func isInitiation(pkt []byte) bool {
	return len(pkt) == wgInitiationSize && pkt[0] == wgInitiation && pkt[1] == 0 && pkt[2] == 0 && pkt[3] == 0
}

// admit reports whether initiation pkt, arriving at now, may reach the
// device, and remembers it. When it may not and this is the first copy
// held back, hold is how long until a copy should be delivered again
// (and counts as held until release); otherwise hold is zero.
func (s *initiations) admit(pkt []byte, now time.Time) (pass bool, hold time.Duration) {
	var id [initiationIDSize]byte
	copy(id[:], pkt[4:])
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.seen {
		e := &s.seen[i]
		if e.id != id || now.Sub(e.at) >= initiationMemory {
			continue
		}
		if e.again {
			return false, 0
		}
		if since := now.Sub(e.at); since >= initiationRetry {
			e.again = true
			return true, 0
		} else if !e.held && s.held < initiationsKept && s.redeliver != nil {
			e.held = true
			s.held++
			return false, initiationRetry - since
		}
		return false, 0
	}
	s.seen[s.next] = seenInitiation{id: id, at: now}
	s.next = (s.next + 1) % initiationsKept
	return true, 0
}

// release counts a held copy as delivered again.
func (s *initiations) release() {
	s.mu.Lock()
	s.held--
	s.mu.Unlock()
}

// filter wraps a receive function so that a copy of an initiation that
// admit turns away reaches the device as an empty packet, which the device
// skips; a held copy is delivered again when its time comes. A data packet
// costs a length comparison.
func (s *initiations) filter(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(pkts [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(pkts, sizes, eps)
		for i := range n {
			p := pkts[i][:sizes[i]]
			if !isInitiation(p) {
				continue
			}
			pass, hold := s.admit(p, time.Now())
			if pass {
				continue
			}
			sizes[i] = 0
			if hold == 0 {
				continue
			}
			ep, ok := eps[i].(Endpoint)
			if !ok {
				s.release()
				continue
			}
			pkt := append([]byte(nil), p...)
			// A timer, not a goroutine: it delivers into the Bind's inbox
			// and returns; after Close the Bind drops it (DropsClosed).
			time.AfterFunc(hold, func() {
				s.release()
				s.redeliver(ep.Key, pkt)
			})
		}
		return n, err
	}
}
