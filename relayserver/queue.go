package relayserver

import (
	"sync"

	"github.com/plures/plurenet/internal/relayproto"
)

// pushResult says what became of a frame offered to a sendQueue.
type pushResult int

const (
	pushed    pushResult = iota
	queueFull            // dropped: the queue is at its frame or byte cap
	queueShut            // dropped: the connection is closing
)

// queued is one entry of a sendQueue: a frame, or a joiner's presence
// snapshot, which the writer expands into one PeerPresent frame per key as
// it writes (snapshot.go).
type queued struct {
	frame []byte
	snap  *snapshot
	// recycle: frame came from getForward and goes back to its pool once
	// written.
	recycle bool
}

// Forward buffers come in two sizes. forwardBufSize fits the Recv frame of
// a WireGuard packet on a 1500-byte path (at most MTU+32 bytes, plus the
// 33-byte header) with room to spare: the frames the relay forwards most.
// relayproto.BatchSize fits the batch frames clients build. Larger frames
// are allocated and left to the collector.
const forwardBufSize = 2048

// The pools hold the buffers frames are read into and forwarded in, so that
// the forwarding path does not allocate per frame (the allocation
// profile's top entry before them). A buffer leaves its pool when a frame
// is read and returns when the receiver's writer has written it, or at once
// if it was not queued.
var (
	forwardPool = sync.Pool{New: func() any { b := make([]byte, 0, forwardBufSize); return &b }}
	batchPool   = sync.Pool{New: func() any { b := make([]byte, 0, relayproto.BatchSize); return &b }}
)

// getForward returns an empty buffer of at least n bytes' capacity.
func getForward(n int) []byte {
	switch {
	case n <= forwardBufSize:
		return (*forwardPool.Get().(*[]byte))[:0]
	case n <= relayproto.BatchSize:
		return (*batchPool.Get().(*[]byte))[:0]
	}
	return make([]byte, 0, n)
}

// putForward returns b, which getForward made and nothing else holds, to
// its pool.
func putForward(b []byte) {
	b = b[:0]
	switch cap(b) {
	case forwardBufSize:
		forwardPool.Put(&b)
	case relayproto.BatchSize:
		batchPool.Put(&b)
	}
}

// size is what the entry counts against the byte cap: the memory it holds.
// A forwarded frame holds its whole pooled buffer, so that frames a little
// over one size (2 KiB + 1 byte, in a 16 KiB buffer) cannot hold eight
// times the cap.
func (e queued) size() int {
	if e.snap != nil {
		return e.snap.size()
	}
	if e.recycle {
		return cap(e.frame)
	}
	return len(e.frame)
}

// sendQueue is one connection's outbound queue. Producers (other
// connections' readers, presence changes) push without blocking; the
// connection's writer takes entries and reports each one written. An entry
// counts against the caps until it is written, so queued plus in-flight data
// never exceeds them: a client that does not read costs at most the caps.
//
// When full the queue drops the newest frame, as a router drops a packet:
// WireGuard and the overlay's TCP recover from loss, not from unbounded
// latency.
type sendQueue struct {
	mu        sync.Mutex
	entries   []queued // waiting, oldest first
	pending   int      // entries waiting or being written
	bytes     int      // bytes waiting or being written
	shut      bool
	maxFrames int
	maxBytes  int
	// onWork is called, without the lock, when entries are waiting or the
	// queue shut: it starts the writer if none runs (conn.kick). Nil until
	// the connection runs.
	onWork func()
	// peak is called with the byte total after each push, for Stats.
	peak func(int)
}

func newSendQueue(maxFrames, maxBytes int, peak func(int)) *sendQueue {
	return &sendQueue{maxFrames: maxFrames, maxBytes: maxBytes, peak: peak}
}

// push appends b unless the queue is full or shut. force skips the caps: it
// is for the handful of control frames a connection gets from the relay
// itself (ServerHello, Welcome, the rate notice, Drain), never for frames
// other clients cause.
func (q *sendQueue) push(b []byte, force bool) pushResult {
	return q.add(queued{frame: b}, force)
}

// pushForward queues a frame made by getForward, which the writer returns
// to its pool after writing it. Unless it returns pushed, the caller still
// owns b.
func (q *sendQueue) pushForward(b []byte) pushResult {
	return q.add(queued{frame: b, recycle: true}, false)
}

// pushForwards queues frames made by getForward, all of them or, if they
// do not all fit, none: a batch split for a connection that does not take
// batch frames is dropped whole, as a router drops a GSO packet. Unless
// it returns pushed, the caller still owns the frames.
func (q *sendQueue) pushForwards(frames [][]byte) pushResult {
	n := 0
	for _, b := range frames {
		n += cap(b) // as size counts them
	}
	q.mu.Lock()
	res := q.admitLocked(len(frames), n, false)
	if res == pushed {
		for _, b := range frames {
			q.entries = append(q.entries, queued{frame: b, recycle: true})
		}
	}
	return q.admitted(res)
}

// pushJoin queues the Welcome and then the presence snapshot of keys (less
// skip, the joiner's own key) as one entry. Both skip the caps: they come
// first and once per connection, and the snapshot holds no copy of its keys
// (the room's list is shared and immutable) while it counts as the frames
// it will become, which Config.withDefaults keeps below the byte cap.
func (q *sendQueue) pushJoin(welcome []byte, keys []relayproto.Key, skip relayproto.Key) {
	q.add(queued{frame: welcome}, true)
	if len(keys) > 0 {
		q.add(queued{snap: &snapshot{keys: keys, skip: skip}}, true)
	}
}

func (q *sendQueue) add(e queued, force bool) pushResult {
	q.mu.Lock()
	res := q.admitLocked(1, e.size(), force)
	if res == pushed {
		q.entries = append(q.entries, e)
	}
	return q.admitted(res)
}

// admitLocked counts k entries of n bytes in all as queued, unless the
// queue is shut or they do not fit its caps (force skips the caps). The
// caller holds q.mu and appends the entries if it returns pushed.
func (q *sendQueue) admitLocked(k, n int, force bool) pushResult {
	if q.shut {
		return queueShut
	}
	if !force && (q.pending+k > q.maxFrames || q.bytes+n > q.maxBytes) {
		return queueFull
	}
	q.pending += k
	q.bytes += n
	return pushed
}

// admitted unlocks q.mu after admitLocked and, if entries were queued,
// records the peak and wakes the writer.
func (q *sendQueue) admitted(res pushResult) pushResult {
	total := q.bytes
	q.mu.Unlock()
	if res != pushed {
		return res
	}
	if q.peak != nil {
		q.peak(total)
	}
	q.wake()
	return pushed
}

// setOnWork sets the function wake calls.
func (q *sendQueue) setOnWork(f func()) {
	q.mu.Lock()
	q.onWork = f
	q.mu.Unlock()
}

func (q *sendQueue) wake() {
	q.mu.Lock()
	f := q.onWork
	q.mu.Unlock()
	if f != nil {
		f()
	}
}

// release lets go of the entries' storage when nothing waits (conn.release).
func (q *sendQueue) release() {
	q.mu.Lock()
	if len(q.entries) == 0 {
		q.entries = nil
	}
	q.mu.Unlock()
}

// take moves every waiting entry into batch (reusing its storage) and
// returns it. The entries stay counted until written is called for each.
func (q *sendQueue) take(batch []queued) []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch = append(batch[:0], q.entries...)
	clear(q.entries) // let the written frames be collected
	q.entries = q.entries[:0]
	return batch
}

// written releases one entry of n bytes taken earlier.
func (q *sendQueue) written(n int) {
	q.mu.Lock()
	q.pending--
	q.bytes -= n
	q.mu.Unlock()
}

// shutdown refuses further pushes. What is waiting stays for the writer to
// flush (after Leave) or discard (after a fatal error).
func (q *sendQueue) shutdown() {
	q.mu.Lock()
	q.shut = true
	q.mu.Unlock()
	q.wake()
}

// discard drops everything waiting and returns how many entries that was.
func (q *sendQueue) discard() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.entries)
	for _, e := range q.entries {
		q.bytes -= e.size()
	}
	q.pending -= n
	clear(q.entries)
	q.entries = q.entries[:0]
	return n
}

// len returns the entries and bytes waiting or being written.
func (q *sendQueue) len() (frames, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pending, q.bytes
}
