package relayserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/plures/plurenet/internal/relayproto"
)

// router moves frames between the members of a rendezvous. rooms, the local
// table below, serves a single instance; backplane (backplane.go) wraps it
// for several instances sharing Redis, delivering locally what it can and
// publishing the rest. The connection code sees only this.
type router interface {
	// join makes c a member of its rendezvous and the routing target of its
	// key. It queues welcome, then a PeerPresent for every other key present,
	// on c, and announces c's key to the others if it was absent. It fails
	// with errTooManyConns or errRendezvousFull.
	join(c *conn, welcome []byte) error
	// leave stops routing to c at once; c's key is announced gone if c was its
	// last routable connection. Calling it again does nothing.
	leave(c *conn)
	// unicast queues frame (a Recv or RecvBatch frame made by getForward)
	// on dst's routing target in c's rendezvous and reports what happened;
	// unless delivered, the caller still owns frame.
	unicast(c *conn, dst relayproto.Key, frame []byte) deliverResult
	// fanout is how many keys other than c's a broadcast by c would reach,
	// here and on other instances: what the rate limit charges it for.
	fanout(c *conn) int
	// broadcast queues frame (a BroadcastRecv frame) on every other key's
	// routing target in c's rendezvous; it returns how many took it and how
	// many dropped it for a full queue.
	broadcast(c *conn, frame []byte) (delivered, full int)
	// rendezvousCount is the number of rendezvous with a member.
	rendezvousCount() int
	// flush waits until presence changes so far are visible to other
	// instances, or ctx ends.
	flush(ctx context.Context)
	// close stops what the router runs in the background and waits for it.
	close()
}

type deliverResult int

const (
	delivered deliverResult = iota
	noSuchPeer
	dstQueueFull
	// dstClosed: every connection of the key found was closing.
	dstClosed
	// relayed: handed to the backplane for another instance, which
	// counts the outcome in its own metrics.
	relayed
)

var (
	errTooManyConns   = errors.New("too many connections for this key")
	errRendezvousFull = errors.New("rendezvous full")
)

// joinRefused is the Error frame and handshake metric for a failed join.
func (s *Server) joinRefused(err error) (relayproto.ErrorCode, string, string) {
	if errors.Is(err, errRendezvousFull) {
		return relayproto.ErrRendezvousFull, fmt.Sprintf("rendezvous already holds %d member keys", s.cfg.MaxMembersPerRendezvous), hsRendezvousFull
	}
	return relayproto.ErrTooManyConns, fmt.Sprintf("key already holds %d connections in this rendezvous", s.cfg.MaxConnsPerKey), hsTooMany
}

// rooms is the local router. Its map lock is instance-wide, so it is held
// only to find, create or remove a room: O(1), never while taking a room's
// lock. Everything that grows with the members of a rendezvous (the
// snapshot, announcements, broadcasts) happens under that rendezvous's own
// lock or on its copy-on-write lists, so a large or churning rendezvous
// never delays the others.
type rooms struct {
	maxConnsPerKey int
	maxMembers     int
	// count records what became of presence frames pushed for remote
	// events, which have no sending connection.
	count func(pushResult)
	// hook, when set (by the backplane), learns of local presence changes.
	// It is called under a room's lock and must not block.
	hook presenceHook

	// seq numbers remote presence events, so that a sync reply (a
	// snapshot) does not undo an event that arrived after it was taken.
	seq atomic.Uint64

	mu   sync.Mutex
	byRV map[relayproto.Rendezvous]*room
}

// presenceHook is told when this instance's view of its own members changes,
// so that a backplane can publish it.
type presenceHook interface {
	// localJoin: key has its first routable connection here in rv.
	localJoin(rv relayproto.Rendezvous, key relayproto.Key)
	// localLeave: key's last routable connection here in rv is gone.
	localLeave(rv relayproto.Rendezvous, key relayproto.Key)
	// roomsChanged: a room appeared or disappeared.
	roomsChanged()
}

type room struct {
	rv relayproto.Rendezvous
	mu sync.Mutex
	// dead is set, under mu, when the room lost its last local member and
	// is being removed from rooms.byRV; a joiner that finds a dead room
	// looks again.
	dead bool
	// members maps a key to its routable connections here, oldest first;
	// the last one receives the key's frames. A key with none is removed.
	members map[relayproto.Key][]*conn
	// remote maps keys present on other relay instances to the instance
	// that routes them (backplane only; nil otherwise). A key is present in
	// the rendezvous when it is in members or remote; presence frames
	// announce changes of that union.
	remote map[relayproto.Key]instanceID
	// changed holds, per key, the seq of the last remote event about it,
	// until a sync taken after it has been applied.
	changed map[relayproto.Key]uint64
	// size is the number of keys present (members ∪ remote), for the
	// member cap and the broadcast charge. Written under mu.
	size atomic.Int64

	// keys and targets are copy-on-write lists, rebuilt under mu when nil
	// after a change and never modified once built: keys holds every
	// present key (the joiners' snapshots share it), targets the routing
	// target of every local key (broadcasts walk it without the lock).
	keys    []relayproto.Key
	targets []*conn
}

// present reports whether k is in the rendezvous, here or elsewhere.
func (r *room) present(k relayproto.Key) bool {
	if len(r.members[k]) > 0 {
		return true
	}
	_, ok := r.remote[k]
	return ok
}

// changedMembers drops the copy-on-write lists after a change of members;
// the next reader rebuilds them. Joiners holding the old key list keep it.
func (r *room) changedMembers() {
	r.keys, r.targets = nil, nil
}

// snapshotKeys returns the present keys. The caller must not modify them.
func (r *room) snapshotKeys() []relayproto.Key {
	if r.keys == nil {
		keys := make([]relayproto.Key, 0, len(r.members)+len(r.remote))
		for k := range r.members {
			keys = append(keys, k)
		}
		for k := range r.remote {
			if len(r.members[k]) == 0 {
				keys = append(keys, k)
			}
		}
		r.keys = keys
	}
	return r.keys
}

// routeTargets returns the routing target of every local key. The caller
// must not modify the list.
func (r *room) routeTargets() []*conn {
	if r.targets == nil {
		targets := make([]*conn, 0, len(r.members))
		for _, conns := range r.members {
			targets = append(targets, conns[len(conns)-1])
		}
		r.targets = targets
	}
	return r.targets
}

// announce queues frame on the routing target of every local key but skip.
func (r *room) announce(frame []byte, skip relayproto.Key, count func(pushResult)) {
	for _, t := range r.routeTargets() {
		if t.key != skip {
			count(t.q.push(frame, false))
		}
	}
}

func newRooms(maxConnsPerKey, maxMembers int, count func(pushResult)) *rooms {
	return &rooms{maxConnsPerKey: maxConnsPerKey, maxMembers: maxMembers, count: count, byRV: make(map[relayproto.Rendezvous]*room)}
}

func (rs *rooms) close()                    {}
func (rs *rooms) flush(ctx context.Context) {}

// roomFor returns rv's room, creating it if need be.
func (rs *rooms) roomFor(rv relayproto.Rendezvous) (r *room, created bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r = rs.byRV[rv]; r != nil {
		return r, false
	}
	r = &room{rv: rv, members: make(map[relayproto.Key][]*conn)}
	rs.byRV[rv] = r
	return r, true
}

// unlink removes r, which its caller found dead, from the map if it is
// still there.
func (rs *rooms) unlink(r *room) {
	rs.mu.Lock()
	if rs.byRV[r.rv] == r {
		delete(rs.byRV, r.rv)
	}
	rs.mu.Unlock()
	if rs.hook != nil {
		rs.hook.roomsChanged()
	}
}

func (rs *rooms) join(c *conn, welcome []byte) error {
	for {
		r, created := rs.roomFor(c.rv)
		r.mu.Lock()
		if r.dead {
			// Emptied between the lookup and the lock: its last member's
			// leave is removing it. Help, then find or make the new one.
			r.mu.Unlock()
			rs.unlink(r)
			continue
		}
		err := rs.joinLocked(r, c, welcome)
		empty := err != nil && len(r.members) == 0
		if empty {
			r.dead = true
		}
		r.mu.Unlock()
		if empty {
			rs.unlink(r)
		} else if created && rs.hook != nil {
			rs.hook.roomsChanged()
		}
		if err == nil && c.ending() {
			// The connection was told to end while it joined (a drain
			// deadline, an eviction): its leave found no room to leave.
			rs.leave(c)
		}
		return err
	}
}

func (rs *rooms) joinLocked(r *room, c *conn, welcome []byte) error {
	conns := r.members[c.key]
	if len(conns) >= rs.maxConnsPerKey {
		return errTooManyConns
	}
	was := r.present(c.key)
	if !was && r.size.Load() >= int64(rs.maxMembers) {
		return errRendezvousFull
	}
	c.q.pushJoin(welcome, r.snapshotKeys(), c.key)
	if len(conns) == 0 {
		if !was {
			r.announce(relayproto.AppendPeerPresent(nil, c.key), c.key, c.srv.countPush)
			r.size.Add(1)
		}
		if rs.hook != nil {
			rs.hook.localJoin(c.rv, c.key)
		}
	}
	r.members[c.key] = append(conns, c)
	r.changedMembers()
	c.room.Store(r)
	return nil
}

func (rs *rooms) leave(c *conn) {
	r := c.room.Swap(nil)
	if r == nil {
		return
	}
	r.mu.Lock()
	conns := slices.DeleteFunc(r.members[c.key], func(x *conn) bool { return x == c })
	r.changedMembers()
	if len(conns) > 0 {
		r.members[c.key] = conns
		r.mu.Unlock()
		return
	}
	delete(r.members, c.key)
	if rs.hook != nil {
		rs.hook.localLeave(c.rv, c.key)
	}
	if len(r.members) == 0 {
		// The remote view is kept only for rooms with local members: no
		// one here needs it otherwise.
		r.dead = true
		r.mu.Unlock()
		rs.unlink(r)
		return
	}
	if !r.present(c.key) {
		r.size.Add(-1)
		if !c.srv.stopping.Load() {
			r.announce(relayproto.AppendPeerGone(nil, c.key), c.key, c.srv.countPush)
		}
	}
	r.mu.Unlock()
}

func (rs *rooms) unicast(c *conn, dst relayproto.Key, frame []byte) deliverResult {
	res, _ := rs.route(c, dst, frame)
	if res == relayed {
		return noSuchPeer // no backplane to carry it
	}
	return res
}

// route queues frame for dst if dst is here. If dst is only on another
// instance it returns relayed and that instance, and queues nothing. A key
// both here and elsewhere (moving between instances) is served here.
func (rs *rooms) route(c *conn, dst relayproto.Key, frame []byte) (deliverResult, instanceID) {
	r := c.room.Load()
	if r == nil {
		return noSuchPeer, instanceID{}
	}
	var inst instanceID
	var remote bool
	res, ok := pushRouted(func() *conn {
		r.mu.Lock()
		defer r.mu.Unlock()
		conns := r.members[dst]
		if len(conns) == 0 {
			inst, remote = r.remote[dst]
			return nil
		}
		return conns[len(conns)-1]
	}, func(t *conn) pushResult { return t.pushData(frame) })
	switch {
	case ok:
		return res, instanceID{}
	case remote:
		return relayed, inst
	}
	return noSuchPeer, instanceID{}
}

// maxRouteTries bounds how often pushRouted looks for a key's routing
// target again after finding one closing. A key has at most
// maxConnsPerKey connections, so a few looks find the live one; the bound
// only keeps a bug from becoming a spin.
const maxRouteTries = 4

// pushRouted offers a frame, with push, to the connection target names
// (nil: the key has none here) until one takes it or refuses it for a full
// queue. A connection whose queue is shut has left its room already
// (finish removes a connection before it shuts the queue), so target is
// asked again: in a make-before-break switch, a frame routed to the old
// connection just as it left goes to the new one instead of being lost.
// ok is false when target found no connection.
func pushRouted(target func() *conn, push func(*conn) pushResult) (res deliverResult, ok bool) {
	for range maxRouteTries {
		t := target()
		if t == nil {
			return noSuchPeer, false
		}
		switch push(t) {
		case pushed:
			return delivered, true
		case queueFull:
			return dstQueueFull, true
		}
	}
	return dstClosed, true
}

func (rs *rooms) fanout(c *conn) int {
	r := c.room.Load()
	if r == nil {
		return 0
	}
	return max(int(r.size.Load())-1, 0)
}

func (rs *rooms) broadcast(c *conn, frame []byte) (n, full int) {
	n, full, _ = rs.broadcastLocal(c, frame)
	return n, full
}

// broadcastLocal queues frame on every other local key's routing target and
// reports whether the rendezvous has members on other instances.
func (rs *rooms) broadcastLocal(c *conn, frame []byte) (n, full int, remote bool) {
	r := c.room.Load()
	if r == nil {
		return 0, 0, false
	}
	r.mu.Lock()
	targets := r.routeTargets()
	remote = len(r.remote) > 0
	r.mu.Unlock()
	n, full = pushAll(targets, c.key, frame)
	return n, full, remote
}

// pushAll queues frame on every target but skip's, outside any lock: the
// list is immutable, and a target that left meanwhile refuses or discards
// the frame as a closing connection does.
func pushAll(targets []*conn, skip relayproto.Key, frame []byte) (n, full int) {
	for _, t := range targets {
		if t.key == skip {
			continue
		}
		if t.q.push(frame, false) == pushed {
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
