package relayserver

import (
	"slices"

	"github.com/plures/plurenet/internal/relayproto"
)

// What the backplane asks of the local rooms: deliver frames from other
// instances, keep each room's view of the members on other instances, and
// list this instance's members. Like the local paths, each takes the
// instance-wide map lock only to find a room.

// lockRoom returns rv's room locked, or nil if no one here is in rv.
func (rs *rooms) lockRoom(rv relayproto.Rendezvous) *room {
	rs.mu.Lock()
	r := rs.byRV[rv]
	rs.mu.Unlock()
	if r == nil {
		return nil
	}
	r.mu.Lock()
	if r.dead {
		r.mu.Unlock()
		return nil
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
	r.mu.Unlock()
	res, _ := pushRouted(func() *conn {
		r.mu.Lock()
		defer r.mu.Unlock()
		if conns := r.members[dst]; !r.dead && len(conns) > 0 {
			return conns[len(conns)-1]
		}
		return nil
	}, func(t *conn) pushResult { return t.q.push(frame, false) })
	return res
}

// broadcastFromRemote queues frame, a broadcast by src on another instance,
// on every local key but src.
func (rs *rooms) broadcastFromRemote(rv relayproto.Rendezvous, src relayproto.Key, frame []byte) (n, full int) {
	r := rs.lockRoom(rv)
	if r == nil {
		return 0, 0
	}
	targets := r.routeTargets()
	r.mu.Unlock()
	return pushAll(targets, src, frame)
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
		r.size.Add(1)
		r.changedMembers()
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
		r.size.Add(-1)
		r.changedMembers()
		r.announce(relayproto.AppendPeerGone(nil, key), key, rs.count)
	}
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
	size := len(r.members)
	for k := range next {
		if len(r.members[k]) == 0 {
			size++
		}
	}
	r.size.Store(int64(size))
	r.changedMembers()
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

// localRooms returns the rooms with members here. The map lock is held
// only to copy the room pointers; the callers read each room under its own
// lock.
func (rs *rooms) localRooms() []*room {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]*room, 0, len(rs.byRV))
	for _, r := range rs.byRV {
		out = append(out, r)
	}
	return out
}

// localRendezvous returns the rendezvous with members here.
func (rs *rooms) localRendezvous() map[relayproto.Rendezvous]bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make(map[relayproto.Rendezvous]bool, len(rs.byRV))
	for rv := range rs.byRV {
		out[rv] = true
	}
	return out
}

// localKeys returns, for every rendezvous with members here, their keys.
func (rs *rooms) localKeys() map[relayproto.Rendezvous][]relayproto.Key {
	rooms := rs.localRooms()
	out := make(map[relayproto.Rendezvous][]relayproto.Key, len(rooms))
	for _, r := range rooms {
		r.mu.Lock()
		if !r.dead {
			keys := make([]relayproto.Key, 0, len(r.members))
			for k := range r.members {
				keys = append(keys, k)
			}
			out[r.rv] = keys
		}
		r.mu.Unlock()
	}
	return out
}

// evict ends every local connection of key in rv with ErrRendezvousFull:
// the backplane found the rendezvous full across instances after this
// instance admitted key on its own, possibly older, view.
func (rs *rooms) evict(rv relayproto.Rendezvous, key relayproto.Key) int {
	r := rs.lockRoom(rv)
	if r == nil {
		return 0
	}
	conns := slices.Clone(r.members[key])
	r.mu.Unlock()
	// fail leaves the room, which takes its lock: call it outside.
	for _, c := range conns {
		code, msg, _ := c.srv.joinRefused(errRendezvousFull)
		c.fail(code, msg)
	}
	return len(conns)
}
