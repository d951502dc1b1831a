package relay

import (
	"sync"

	"github.com/plures/plurenet/internal/nodekey"
)

// maxPeers bounds the presence set. A rendezvous is one mesh, and meshes of
// more than a few thousand nodes are out of scope for relay presence; without
// a bound a hostile relay could announce keys until the node ran out of
// memory.
const maxPeers = 1 << 14

// maxDirty is when the change list is compacted: twice the largest
// current-plus-reported set, so compaction is rare and amortized.
const maxDirty = 4 * maxPeers

// presence tracks which keys the relay says are in the rendezvous, and what
// the consumer of Recv has been told so far. Recv hands out the difference
// one key at a time, so presence events are never dropped the way data is
// when the queue is full: a burst of changes costs at most one entry per key.
// A key that comes and goes before the consumer looks produces no event,
// which is the truth as of the moment the consumer looks.
//
// Each connection has an epoch; only the newest connection's presence frames
// count. When a connection starts, the keys we knew become unconfirmed; the
// new connection's opening PeerPresent burst confirms the ones still there,
// and settle drops the rest. So a reconnect reports only what changed.
type presence struct {
	self nodekey.Public

	mu       sync.Mutex
	epoch    uint64
	settled  bool
	current  map[nodekey.Public]bool // key → confirmed in this epoch
	reported map[nodekey.Public]struct{}
	dirty    []nodekey.Public
	inDirty  map[nodekey.Public]struct{}
	overflow int // PeerPresent frames ignored because the set was full

	// notify has room for one token: set when dirty gains an entry, so a
	// waiting Recv wakes up.
	notify chan struct{}
}

func newPresence(self nodekey.Public) *presence {
	return &presence{
		self:     self,
		current:  make(map[nodekey.Public]bool),
		reported: make(map[nodekey.Public]struct{}),
		inDirty:  make(map[nodekey.Public]struct{}),
		notify:   make(chan struct{}, 1),
	}
}

// begin makes epoch the authoritative connection and marks every known key
// unconfirmed until the new connection announces it again.
func (p *presence) begin(epoch uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.epoch = epoch
	p.settled = false
	for k := range p.current {
		p.current[k] = false
	}
}

// settle ends the opening burst of epoch: keys it did not confirm are gone.
// It does nothing for an old epoch or when already settled.
func (p *presence) settle(epoch uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if epoch != p.epoch || p.settled {
		return
	}
	p.settled = true
	for k, ok := range p.current {
		if !ok {
			delete(p.current, k)
			p.markLocked(k)
		}
	}
}

// present records a PeerPresent from epoch. It reports false when the set is
// full and the key was ignored.
func (p *presence) present(epoch uint64, k nodekey.Public) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if epoch != p.epoch || k == p.self {
		return true
	}
	if _, known := p.current[k]; !known && len(p.current) >= maxPeers {
		p.overflow++
		return false
	}
	p.current[k] = true
	p.markLocked(k)
	return true
}

// gone records a PeerGone from epoch.
func (p *presence) gone(epoch uint64, k nodekey.Public) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if epoch != p.epoch {
		return
	}
	if _, known := p.current[k]; !known {
		return
	}
	delete(p.current, k)
	p.markLocked(k)
}

func (p *presence) markLocked(k nodekey.Public) {
	if _, ok := p.inDirty[k]; ok {
		return
	}
	if len(p.dirty) >= maxDirty {
		p.compactLocked()
	}
	p.inDirty[k] = struct{}{}
	p.dirty = append(p.dirty, k)
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// compactLocked drops dirty entries whose state matches what the consumer
// was told. Without it a relay flapping ever-new keys at a consumer that
// does not call Recv would grow dirty without bound; after it, dirty holds
// at most the keys in current or reported.
func (p *presence) compactLocked() {
	kept := p.dirty[:0]
	for _, k := range p.dirty {
		_, now := p.current[k]
		_, told := p.reported[k]
		if now != told {
			kept = append(kept, k)
		} else {
			delete(p.inDirty, k)
		}
	}
	clear(p.dirty[len(kept):])
	p.dirty = kept
}

// next returns the oldest change the consumer has not seen.
func (p *presence) next() (Message, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.dirty) > 0 {
		k := p.dirty[0]
		p.dirty[0] = nodekey.Public{}
		p.dirty = p.dirty[1:]
		delete(p.inDirty, k)
		_, now := p.current[k]
		_, told := p.reported[k]
		switch {
		case now && !told:
			p.reported[k] = struct{}{}
			p.rearmLocked()
			return Message{Kind: KindPeerPresent, From: k}, true
		case !now && told:
			delete(p.reported, k)
			p.rearmLocked()
			return Message{Kind: KindPeerGone, From: k}, true
		}
	}
	// Let the backing array go once drained so a past burst does not pin it.
	p.dirty = nil
	return Message{}, false
}

// rearmLocked leaves a token in notify while changes remain, so a Recv
// racing with another still finds them.
func (p *presence) rearmLocked() {
	if len(p.dirty) == 0 {
		return
	}
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// has reports whether k is present as last told by the relay (including,
// after a reconnect, a key the new connection has not confirmed yet).
func (p *presence) has(k nodekey.Public) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.current[k]
	return ok
}

// confirmed reports whether k is present and the current connection has
// said so (has without the keys a reconnect has not confirmed yet).
func (p *presence) confirmed(k nodekey.Public) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current[k]
}

// peers returns the keys present as last told by the relay.
func (p *presence) peers() []nodekey.Public {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]nodekey.Public, 0, len(p.current))
	for k := range p.current {
		out = append(out, k)
	}
	return out
}
