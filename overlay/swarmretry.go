package overlay

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
)

// First contact in swarm mode. An address a discovery source found (a
// static peer, a DHT hit, an introduction) is sent the node's announcement
// at once and then every AnnounceInterval. When that first datagram is
// lost (the peer's process not listening yet, a NAT mapping that the
// peer's own first datagram has yet to open, plain loss), waiting for the
// next round costs 15 s. So an address nobody has answered from yet is
// announced to again after 1 s, 2 s, 4 s and 8 s; by then the regular
// round takes over. An answer (an authenticated message from the address:
// heard) ends its retries.
const (
	// retryFirst is the first retry's delay; each next one doubles.
	retryFirst = time.Second
	// retryTick is how often due retries are looked for.
	retryTick = 250 * time.Millisecond
	// maxRetries bounds the addresses being retried: more than any
	// source reports at once (dhtdisc.MaxFound, a config's peers).
	maxRetries = 1024
)

// retries are the found addresses that have not answered yet, with when
// each is due for another announcement. The same schedule serves the path
// checks of members heard from an address they have no usable path at
// (checks): a lost probe or reply is otherwise probed again only when
// another copy of the member's announcement comes, which for a member met
// through an introduction is a whole round later.
type retries struct {
	mu     sync.Mutex
	due    map[netip.AddrPort]retry
	checks map[nodekey.Public]checkRetry
}

type checkRetry struct {
	addr netip.AddrPort
	retry
}

// addCheck schedules path-check retries of key at addr (once per address;
// a full table takes no more).
func (r *retries) addCheck(key nodekey.Public, addr netip.AddrPort, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.checks == nil {
		r.checks = make(map[nodekey.Public]checkRetry)
	}
	if c, ok := r.checks[key]; (ok && c.addr == addr) || (!ok && len(r.checks) >= maxRetries) {
		return
	}
	r.checks[key] = checkRetry{addr: addr, retry: firstRetry(now)}
}

// takeChecks returns the path checks due at now, rescheduled like take.
func (r *retries) takeChecks(now time.Time) map[nodekey.Public]netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out map[nodekey.Public]netip.AddrPort
	for k, c := range r.checks {
		if now.Before(c.at) {
			continue
		}
		if out == nil {
			out = make(map[nodekey.Public]netip.AddrPort)
		}
		out[k] = c.addr
		if next, ok := c.next(now); ok {
			r.checks[k] = checkRetry{addr: c.addr, retry: next}
		} else {
			delete(r.checks, k)
		}
	}
	return out
}

type retry struct {
	at   time.Time
	wait time.Duration // the delay that led to at; the next one doubles it
}

// firstRetry is the schedule of something first seen at now.
func firstRetry(now time.Time) retry {
	return retry{at: now.Add(retryFirst), wait: retryFirst}
}

// next is the retry after e, taken at now: twice the delay, or none (false)
// once the delay would reach the regular announce round.
func (e retry) next(now time.Time) (retry, bool) {
	wait := 2 * e.wait
	return retry{at: now.Add(wait), wait: wait}, wait < mesh.AnnounceInterval
}

// add schedules retries for a newly found address (once; a full table
// takes no more, and those addresses wait for the regular round).
func (r *retries) add(a netip.AddrPort, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.due == nil {
		r.due = make(map[netip.AddrPort]retry)
	}
	if _, ok := r.due[a]; ok || len(r.due) >= maxRetries {
		return
	}
	r.due[a] = firstRetry(now)
}

// answered ends a's retries: a member spoke from there.
func (r *retries) answered(a netip.AddrPort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.due, a)
}

// take returns the addresses due at now and schedules their next retry,
// dropping those whose next delay would reach the regular round.
func (r *retries) take(now time.Time) []netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []netip.AddrPort
	for a, e := range r.due {
		if now.Before(e.at) {
			continue
		}
		out = append(out, a)
		if next, ok := e.next(now); ok {
			r.due[a] = next
		} else {
			delete(r.due, a)
		}
	}
	return out
}

// pending returns how many addresses are being retried.
func (r *retries) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.due)
}

// retryFound announces the node again to found addresses that have not
// answered, on retries' schedule, until ctx ends. It runs in n.wg.
func (n *Node) retryFound(ctx context.Context) {
	t := time.NewTicker(retryTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for key, addr := range n.swarm.retries.takeChecks(now) {
				if n.relayReaches(key) {
					continue // auto mode: the relay carries it (autodht.go)
				}
				if n.unconfirmedAt(key, addr) {
					n.direct.Heard(key, addr, false) // probes again
				}
			}
			due := n.swarm.retries.take(now)
			if len(due) == 0 {
				continue
			}
			b, ok := n.seal(n.selfAnnounce())
			if !ok {
				continue
			}
			for _, a := range due {
				n.sendMeshTo(a, b)
			}
		}
	}
}

// unconfirmedAt reports whether key has no usable direct path at addr yet:
// a path check there is (still) wanted.
func (n *Node) unconfirmedAt(key nodekey.Public, addr netip.AddrPort) bool {
	cur, usable, ok := n.direct.StaticAddr(key)
	return !ok || !usable || cur != addr
}
