package relayserver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plures/plurenet/deploy/vercel/backplanelua"
	"github.com/plures/plurenet/internal/relayproto"
)

// Presence in Redis: one hash per rendezvous (rvMembersKey), field = the
// member's 32-byte key, value = the routing instance's 16-byte id followed by
// the entry's expiry in Redis-clock milliseconds, as decimal. Three Lua
// scripts are the only writers (join, leave, sync: their files say what each
// does). They read the clock with TIME inside Redis, so the instances' own
// clocks never have to agree. A whole hash expires twice the TTL after its
// last write, so rendezvous whose instances all died leave nothing behind.
//
// The scripts live in deploy/vercel/backplanelua, shared with the Node
// relay, so that Go and Node instances on one Redis run the same ones.
var (
	joinScript  = redis.NewScript(backplanelua.Join)
	leaveScript = redis.NewScript(backplanelua.Leave)
	syncScript  = redis.NewScript(backplanelua.Sync)
)

func (b *backplane) ttlMillis() int64 { return b.cfg.BackplaneTTL.Milliseconds() }

// receive reads our channels (this instance's and those of its rendezvous)
// until close. go-redis reconnects and resubscribes by itself; while Redis
// is unreachable this loop retries with backoff, and after an outage asks
// for a full sync, since pub/sub messages sent meanwhile are lost.
func (b *backplane) receive() {
	defer b.wg.Done()
	_ = b.ps.Subscribe(b.ctx, instChannel(b.id)) // recorded even if Redis is down
	delay := retryMin
	down := false
	for {
		msg, err := b.ps.ReceiveTimeout(b.ctx, recvPoll)
		if b.ctx.Err() != nil {
			return
		}
		if err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				// Quiet, not dead: a ping proves it (or breaks the
				// connection, which the next receive then redials).
				_ = b.ps.Ping(b.ctx)
				continue
			}
			down = true
			b.setUp(false, err)
			if !sleepCtx(b.ctx, delay/2+rand.N(delay/2+1)) {
				return
			}
			delay = min(2*delay, retryMax)
			continue
		}
		delay = retryMin
		if down {
			down = false
			b.setUp(true, nil)
			b.needSync.Store(true)
			b.poke()
		}
		if m, ok := msg.(*redis.Message); ok {
			b.handle([]byte(m.Payload))
		}
	}
}

// publish sends queued frames to Redis in pipelined batches. A batch that
// fails is dropped and counted: like a lost packet, not retried.
func (b *backplane) publish() {
	defer b.wg.Done()
	batch := make([]pubItem, 0, pubBatch)
	for {
		select {
		case <-b.ctx.Done():
			return
		case it := <-b.data:
			batch = append(batch[:0], it)
		}
	fill:
		for len(batch) < pubBatch {
			select {
			case it := <-b.data:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(b.ctx, redisOpTimeout)
		pipe := b.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(batch))
		for i, it := range batch {
			cmds[i] = pipe.Publish(ctx, it.channel, it.msg)
		}
		_, err := pipe.Exec(ctx)
		cancel()
		for i, it := range batch {
			b.dataBytes.Add(-int64(len(it.msg)))
			if cmds[i].Err() != nil {
				b.m.drops[bpDropRedisError].Inc()
			} else {
				b.m.published[it.kind].Inc()
			}
			batch[i] = pubItem{}
		}
		if err != nil {
			b.setUp(false, err)
		} else {
			b.setUp(true, nil)
		}
	}
}

// control owns presence in Redis and the rendezvous subscriptions: it runs
// queued joins and leaves, subscribes to the channels of the rendezvous that
// have members here (and leaves the others), and every BackplaneRefresh syncs
// every such rendezvous.
func (b *backplane) control() {
	defer b.wg.Done()
	tick := time.NewTicker(b.cfg.BackplaneRefresh)
	defer tick.Stop()
	subscribed := make(map[relayproto.Rendezvous]bool)
	ops := make([]ctrlOp, 0, ctrlBatch)
	for {
		full := false
		select {
		case <-b.ctx.Done():
			return
		case op := <-b.ctrl:
			ops = append(ops[:0], op)
		fill:
			for len(ops) < ctrlBatch {
				select {
				case op := <-b.ctrl:
					ops = append(ops, op)
				default:
					break fill
				}
			}
			b.runOps(ops)
			clear(ops)
		case <-b.wake:
		case <-tick.C:
			full = true
		}
		if b.needSync.Swap(false) {
			full = true
		}
		fresh := b.resubscribe(subscribed)
		if full {
			b.sync(nil)
		} else if len(fresh) > 0 {
			b.sync(fresh)
		}
	}
}

// runOps sends joins and leaves in one pipeline and answers flushes.
func (b *backplane) runOps(ops []ctrlOp) {
	ctx, cancel := context.WithTimeout(b.ctx, redisOpTimeout)
	defer cancel()
	pipe := b.rdb.Pipeline()
	n := 0
	me := string(b.id[:])
	joins := make(map[int]*redis.Cmd) // by index in ops
	for i, op := range ops {
		if op.flush != nil {
			continue
		}
		n++
		key := rvMembersKey(op.rv)
		if op.join {
			msg := appendBPKey(nil, bpJoin, b.id, op.rv, op.key)
			joins[i] = joinScript.Eval(ctx, pipe, []string{key}, op.key[:], me, b.ttlMillis(), rvChannel(op.rv), msg, b.cfg.MaxMembersPerRendezvous)
			b.m.ops[bpOpJoin].Inc()
		} else {
			msg := appendBPKey(nil, bpLeave, b.id, op.rv, op.key)
			leaveScript.Eval(ctx, pipe, []string{key}, op.key[:], me, rvChannel(op.rv), msg)
			b.m.ops[bpOpLeave].Inc()
		}
	}
	if n > 0 {
		b.execScripts(ctx, pipe)
	}
	for i, cmd := range joins {
		if v, err := cmd.Int(); err == nil && v == 0 {
			b.refused(ops[i].rv, ops[i].key)
		}
	}
	for _, op := range ops {
		if op.flush != nil {
			close(op.flush)
		}
	}
}

// execScripts runs a pipeline of scripts. They go as EVAL, not EVALSHA:
// a few hundred bytes more per call, but nothing to reload when Redis
// restarts with an empty script cache, and Redis caches the compiled
// script by its hash anyway.
func (b *backplane) execScripts(ctx context.Context, pipe redis.Pipeliner) []redis.Cmder {
	cmds, err := pipe.Exec(ctx)
	failed := 0
	for _, c := range cmds {
		if c.Err() != nil {
			failed++
		}
	}
	b.m.opErrors.Add(float64(failed))
	if err != nil {
		b.setUp(false, err)
		if b.ctx.Err() == nil {
			b.log.Debug("relay: backplane: presence update failed", "err", err)
		}
	} else {
		b.setUp(true, nil)
	}
	return cmds
}

// resubscribe makes the subscriptions match the rendezvous with members here
// and returns those newly subscribed, which need a sync to learn who is
// already there. It subscribes before that sync so no join in between is
// missed.
func (b *backplane) resubscribe(subscribed map[relayproto.Rendezvous]bool) []relayproto.Rendezvous {
	local := b.rooms.localRendezvous()
	var add []string
	var fresh []relayproto.Rendezvous
	for rv := range local {
		if !subscribed[rv] {
			subscribed[rv] = true
			fresh = append(fresh, rv)
			add = append(add, rvChannel(rv))
		}
	}
	var drop []string
	for rv := range subscribed {
		if _, ok := local[rv]; !ok {
			delete(subscribed, rv)
			drop = append(drop, rvChannel(rv))
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, redisOpTimeout)
	defer cancel()
	// Errors need no handling here: go-redis records the channels either
	// way and subscribes again when it reconnects; the receiver then asks
	// for a full sync.
	if len(add) > 0 {
		_ = b.ps.Subscribe(ctx, add...)
	}
	if len(drop) > 0 {
		_ = b.ps.Unsubscribe(ctx, drop...)
	}
	return fresh
}

// sync refreshes this instance's entries and reloads the remote views of the
// given rendezvous, or of all with members here when only is nil.
func (b *backplane) sync(only []relayproto.Rendezvous) {
	local := b.rooms.localKeys()
	rvs := only
	if rvs == nil {
		rvs = make([]relayproto.Rendezvous, 0, len(local))
		for rv := range local {
			rvs = append(rvs, rv)
		}
	}
	me := string(b.id[:])
	for start := 0; start < len(rvs); start += syncBatch {
		chunk := rvs[start:min(start+syncBatch, len(rvs))]
		ctx, cancel := context.WithTimeout(b.ctx, redisOpTimeout)
		seq := b.rooms.seq.Load()
		pipe := b.rdb.Pipeline()
		for _, rv := range chunk {
			keys := local[rv]
			args := make([]any, 0, 5+len(keys))
			args = append(args, me, b.ttlMillis(), rvChannel(rv), appendBPHeader(nil, bpJoin, b.id, rv), b.cfg.MaxMembersPerRendezvous)
			for _, k := range keys {
				args = append(args, k[:])
			}
			syncScript.Eval(ctx, pipe, []string{rvMembersKey(rv)}, args...)
			b.m.ops[bpOpSync].Inc()
		}
		cmds := b.execScripts(ctx, pipe)
		cancel()
		for i, c := range cmds {
			if i >= len(chunk) || c.Err() != nil {
				continue
			}
			view, refused, err := parseSyncReply(c.(*redis.Cmd).Val())
			if err != nil {
				b.m.drops[bpDropBadMessage].Inc()
				b.log.Debug("relay: backplane: bad sync reply", "err", err)
				continue
			}
			b.rooms.setRemote(chunk[i], view, seq)
			for _, k := range refused {
				b.refused(chunk[i], k)
			}
		}
		if b.ctx.Err() != nil {
			return
		}
	}
}

// refused evicts key's local connections in rv: Redis found the rendezvous
// at its member cap across instances.
func (b *backplane) refused(rv relayproto.Rendezvous, key relayproto.Key) {
	if n := b.rooms.evict(rv, key); n > 0 {
		b.m.evicted.Add(float64(n))
		b.log.Debug("relay: backplane: rendezvous full across instances, member evicted", "peer", key.ShortString(), "conns", n)
	}
}

// parseSyncReply checks syncScript's answer: a list of pairs of a 32-byte
// key and a 16-byte instance id, at most maxRemoteMembers of them, and a
// list of the refused local keys.
func parseSyncReply(v any) (map[relayproto.Key]instanceID, []relayproto.Key, error) {
	both, ok := v.([]any)
	if !ok || len(both) != 2 {
		return nil, nil, fmt.Errorf("sync reply is %T, want a list of two lists", v)
	}
	list, ok1 := both[0].([]any)
	refusedList, ok2 := both[1].([]any)
	if !ok1 || !ok2 {
		return nil, nil, fmt.Errorf("sync reply holds %T and %T, want two lists", both[0], both[1])
	}
	if len(list)%2 != 0 {
		return nil, nil, errors.New("sync reply has an odd length")
	}
	if len(list)/2 > maxRemoteMembers || len(refusedList) > maxRemoteMembers {
		return nil, nil, fmt.Errorf("sync reply lists %d members and %d refused, over %d", len(list)/2, len(refusedList), maxRemoteMembers)
	}
	view := make(map[relayproto.Key]instanceID, len(list)/2)
	for i := 0; i < len(list); i += 2 {
		k, ok1 := replyKey(list[i])
		inst, ok2 := list[i+1].(string)
		if !ok1 || !ok2 || len(inst) != len(instanceID{}) {
			return nil, nil, errors.New("sync reply entry " + strconv.Itoa(i/2) + " is malformed")
		}
		var id instanceID
		copy(id[:], inst)
		view[k] = id
	}
	refused := make([]relayproto.Key, 0, len(refusedList))
	for i, f := range refusedList {
		k, ok := replyKey(f)
		if !ok {
			return nil, nil, errors.New("sync reply refused entry " + strconv.Itoa(i) + " is malformed")
		}
		refused = append(refused, k)
	}
	return view, refused, nil
}

// replyKey checks one key of a sync reply.
func replyKey(v any) (relayproto.Key, bool) {
	var k relayproto.Key
	f, ok := v.(string)
	if !ok || len(f) != relayproto.KeySize {
		return k, false
	}
	copy(k[:], f)
	return k, true
}

// sleepCtx sleeps for d unless ctx ends first, and reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
