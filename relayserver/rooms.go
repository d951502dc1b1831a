package relayserver

import (
	"context"
	"errors"
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
	// relayed: handed to the backplane for another instance, which
	// counts the outcome in its own metrics.
	relayed
)

var errTooManyConns = errors.New("too many connections for this key")

// rooms is the local router. The map lock is taken only to join and leave
// (and, with a backplane, to apply remote presence and find a room for a
// frame from another instance); forwarding takes one room's lock, and only to
// queue frames, never to write to a socket.
type rooms struct {
	maxConnsPerKey int
	// count records what became of presence frames pushed for remote
	// events, which have no sending connection.
	count func(pushResult)
	// hook, when set (by the backplane), learns of local presence changes.
	// It is called under the locks and must not block.
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
	mu sync.Mutex
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
}

// noteChange records a remote event about k.
func (r *room) noteChange(k relayproto.Key, seq uint64) {
	if r.changed == nil {
		r.changed = make(map[relayproto.Key]uint64)
	}
	if _, ok := r.changed[k]; ok || len(r.changed) < maxRemoteMembers {
		r.changed[k] = seq
	}
}

// present reports whether k is in the rendezvous, here or elsewhere.
func (r *room) present(k relayproto.Key) bool {
	if len(r.members[k]) > 0 {
		return true
	}
	_, ok := r.remote[k]
	return ok
}

// announce queues frame on the routing target of every local key but skip.
func (r *room) announce(frame []byte, skip relayproto.Key, count func(pushResult)) {
	for k, conns := range r.members {
		if k != skip {
			count(conns[len(conns)-1].q.push(frame, false))
		}
	}
}

func newRooms(maxConnsPerKey int, count func(pushResult)) *rooms {
	return &rooms{maxConnsPerKey: maxConnsPerKey, count: count, byRV: make(map[relayproto.Rendezvous]*room)}
}

func (rs *rooms) close()                    {}
func (rs *rooms) flush(ctx context.Context) {}

func (rs *rooms) join(c *conn, welcome []byte) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.byRV[c.rv]
	created := false
	if r == nil {
		r = &room{members: make(map[relayproto.Key][]*conn)}
		rs.byRV[c.rv] = r
		created = true
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
	for k := range r.remote {
		if k != c.key && len(r.members[k]) == 0 {
			c.q.push(relayproto.AppendPeerPresent(nil, k), true)
		}
	}
	if len(conns) == 0 {
		if !r.present(c.key) {
			r.announce(relayproto.AppendPeerPresent(nil, c.key), c.key, c.srv.countPush)
		}
		if rs.hook != nil {
			rs.hook.localJoin(c.rv, c.key)
		}
	}
	r.members[c.key] = append(conns, c)
	c.room.Store(r)
	if created && rs.hook != nil {
		rs.hook.roomsChanged()
	}
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
	if rs.hook != nil {
		rs.hook.localLeave(c.rv, c.key)
	}
	if len(r.members) == 0 {
		// The remote view is kept only for rooms with local members: no
		// one here needs it otherwise.
		delete(rs.byRV, c.rv)
		if rs.hook != nil {
			rs.hook.roomsChanged()
		}
		return
	}
	if !r.present(c.key) {
		r.announce(relayproto.AppendPeerGone(nil, c.key), c.key, c.srv.countPush)
	}
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
	r.mu.Lock()
	defer r.mu.Unlock()
	conns := r.members[dst]
	if len(conns) == 0 {
		if inst, ok := r.remote[dst]; ok {
			return relayed, inst
		}
		return noSuchPeer, instanceID{}
	}
	if conns[len(conns)-1].q.push(frame, false) != pushed {
		return dstQueueFull, instanceID{}
	}
	return delivered, instanceID{}
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
	return n, full, len(r.remote) > 0
}

func (rs *rooms) rendezvousCount() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.byRV)
}

// lockRoom returns rv's room locked, or nil if no one here is in rv.
func (rs *rooms) lockRoom(rv relayproto.Rendezvous) *room {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.byRV[rv]
	if r != nil {
		r.mu.Lock()
	}
	return r
}

// deliverLocal queues frame, from another instance, on dst's routing target
// here in rv.
func (rs *rooms) deliverLocal(rv relayproto.Rendezvous, dst relayproto.Key, frame []byte) deliverResult {
	r := rs.lockRoom(rv)
	if r == nil {
		return noSuchPeer
	}
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

// broadcastFromRemote queues frame, a broadcast by src on another instance,
// on every local key but src.
func (rs *rooms) broadcastFromRemote(rv relayproto.Rendezvous, src relayproto.Key, frame []byte) (n, full int) {
	r := rs.lockRoom(rv)
	if r == nil {
		return 0, 0
	}
	defer r.mu.Unlock()
	for k, conns := range r.members {
		if k == src {
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

// remoteJoin records that inst now routes key in rv, announcing key if it
// is new to the rendezvous.
func (rs *rooms) remoteJoin(rv relayproto.Rendezvous, key relayproto.Key, inst instanceID) {
	r := rs.lockRoom(rv)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	if _, ok := r.remote[key]; !ok && len(r.remote) >= maxRemoteMembers {
		return // the next sync will not add it either; see maxRemoteMembers
	}
	r.noteChange(key, rs.seq.Add(1))
	was := r.present(key)
	if r.remote == nil {
		r.remote = make(map[relayproto.Key]instanceID)
	}
	r.remote[key] = inst
	if !was {
		r.announce(relayproto.AppendPeerPresent(nil, key), key, rs.count)
	}
}

// remoteLeave records that inst no longer routes key in rv. An event from an
// instance that no longer owns key (another took it since) is stale.
func (rs *rooms) remoteLeave(rv relayproto.Rendezvous, key relayproto.Key, inst instanceID) {
	r := rs.lockRoom(rv)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	if cur, ok := r.remote[key]; !ok || cur != inst {
		return
	}
	r.noteChange(key, rs.seq.Add(1))
	delete(r.remote, key)
	if !r.present(key) {
		r.announce(relayproto.AppendPeerGone(nil, key), key, rs.count)
	}
}

// setRemote replaces rv's remote view with view, a snapshot read from Redis
// after remote event number seq, and announces what that changes. Keys with
// a later event keep what the event said: the snapshot is older.
func (rs *rooms) setRemote(rv relayproto.Rendezvous, view map[relayproto.Key]instanceID, seq uint64) {
	r := rs.lockRoom(rv)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	old := r.remote
	next := make(map[relayproto.Key]instanceID, len(view))
	for k, inst := range view {
		if r.changed[k] <= seq {
			next[k] = inst
		}
	}
	for k, inst := range old {
		if r.changed[k] > seq {
			next[k] = inst
		}
	}
	for k, s := range r.changed {
		if s <= seq {
			delete(r.changed, k)
		}
	}
	r.remote = next
	for k := range old {
		if _, still := next[k]; !still && len(r.members[k]) == 0 {
			r.announce(relayproto.AppendPeerGone(nil, k), k, rs.count)
		}
	}
	for k := range next {
		if _, was := old[k]; !was && len(r.members[k]) == 0 {
			r.announce(relayproto.AppendPeerPresent(nil, k), k, rs.count)
		}
	}
}

// localKeys returns, for every rendezvous with members here, their keys.
func (rs *rooms) localKeys() map[relayproto.Rendezvous][]relayproto.Key {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make(map[relayproto.Rendezvous][]relayproto.Key, len(rs.byRV))
	for rv, r := range rs.byRV {
		r.mu.Lock()
		keys := make([]relayproto.Key, 0, len(r.members))
		for k := range r.members {
			keys = append(keys, k)
		}
		r.mu.Unlock()
		out[rv] = keys
	}
	return out
}
