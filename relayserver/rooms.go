package relayserver

import (
	"errors"
	"slices"
	"sync"

	"github.com/plures/plurenet/internal/relayproto"
)

// router moves frames between the members of a rendezvous. rooms, the local
// table below, is the only implementation; a backplane for several relay
// instances (Redis) would be a second one that wraps it, delivering locally
// what it can and publishing the rest. The connection code sees only this.
type router interface {
	// join makes c a member of its rendezvous and the routing target of its
	// key. It queues welcome, then a PeerPresent for every other key present,
	// on c, and announces c's key to the others if it was absent.
	join(c *conn, welcome []byte) error
	// leave stops routing to c at once; c's key is announced gone if c was its
	// last routable connection. Calling it again does nothing.
	leave(c *conn)
	// unicast queues frame (a Recv frame) on dst's routing target in c's
	// rendezvous and reports what happened.
	unicast(c *conn, dst relayproto.Key, frame []byte) deliverResult
	// broadcast queues frame (a BroadcastRecv frame) on every other key's
	// routing target in c's rendezvous; it returns how many took it and how
	// many dropped it for a full queue.
	broadcast(c *conn, frame []byte) (delivered, full int)
	// rendezvousCount is the number of rendezvous with a member.
	rendezvousCount() int
}

type deliverResult int

const (
	delivered deliverResult = iota
	noSuchPeer
	dstQueueFull
)

var errTooManyConns = errors.New("too many connections for this key")

// rooms is the local router. The map lock is taken only to join and leave;
// forwarding takes one room's lock, and only to queue frames, never to write
// to a socket.
type rooms struct {
	maxConnsPerKey int

	mu   sync.Mutex
	byRV map[relayproto.Rendezvous]*room
}

type room struct {
	mu sync.Mutex
	// members maps a key to its routable connections, oldest first; the last
	// one receives the key's frames. A key with none is removed.
	members map[relayproto.Key][]*conn
}

func newRooms(maxConnsPerKey int) *rooms {
	return &rooms{maxConnsPerKey: maxConnsPerKey, byRV: make(map[relayproto.Rendezvous]*room)}
}

func (rs *rooms) join(c *conn, welcome []byte) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.byRV[c.rv]
	if r == nil {
		r = &room{members: make(map[relayproto.Key][]*conn)}
		rs.byRV[c.rv] = r
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	conns := r.members[c.key]
	if len(conns) >= rs.maxConnsPerKey {
		return errTooManyConns // the room holds this key, so it is not empty
	}
	// The joiner's Welcome and presence snapshot skip the queue caps: they
	// are queued once per connection, bounded by the rendezvous size, and a
	// truncated snapshot would hide peers for good. Announcements to the
	// others obey the caps like data: a client too far behind to take them
	// is losing data too.
	c.q.push(welcome, true)
	for k := range r.members {
		if k != c.key {
			c.q.push(relayproto.AppendPeerPresent(nil, k), true)
		}
	}
	if len(conns) == 0 {
		present := relayproto.AppendPeerPresent(nil, c.key)
		for _, others := range r.members {
			c.srv.countPush(others[len(others)-1].q.push(present, false))
		}
	}
	r.members[c.key] = append(conns, c)
	c.room.Store(r)
	return nil
}

func (rs *rooms) leave(c *conn) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := c.room.Swap(nil)
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	conns := slices.DeleteFunc(r.members[c.key], func(x *conn) bool { return x == c })
	if len(conns) > 0 {
		r.members[c.key] = conns
		return
	}
	delete(r.members, c.key)
	if len(r.members) == 0 {
		delete(rs.byRV, c.rv)
		return
	}
	gone := relayproto.AppendPeerGone(nil, c.key)
	for _, others := range r.members {
		c.srv.countPush(others[len(others)-1].q.push(gone, false))
	}
}

func (rs *rooms) unicast(c *conn, dst relayproto.Key, frame []byte) deliverResult {
	r := c.room.Load()
	if r == nil {
		return noSuchPeer
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	conns := r.members[dst]
	if len(conns) == 0 {
		return noSuchPeer
	}
	if conns[len(conns)-1].q.push(frame, false) != pushed {
		return dstQueueFull
	}
	return delivered
}

func (rs *rooms) broadcast(c *conn, frame []byte) (n, full int) {
	r := c.room.Load()
	if r == nil {
		return 0, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, conns := range r.members {
		if k == c.key {
			continue
		}
		if conns[len(conns)-1].q.push(frame, false) == pushed {
			n++
		} else {
			full++
		}
	}
	return n, full
}

func (rs *rooms) rendezvousCount() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.byRV)
}
