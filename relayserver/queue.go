package relayserver

import "sync"

// pushResult says what became of a frame offered to a sendQueue.
type pushResult int

const (
	pushed    pushResult = iota
	queueFull            // dropped: the queue is at its frame or byte cap
	queueShut            // dropped: the connection is closing
)

// sendQueue is one connection's outbound queue. Producers (other
// connections' readers, presence changes) push without blocking; the
// connection's writer takes frames and reports each one written. A frame
// counts against the caps until it is written, so queued plus in-flight data
// never exceeds them: a client that does not read costs at most the caps.
//
// When full the queue drops the newest frame, as a router drops a packet:
// WireGuard and the overlay's TCP recover from loss, not from unbounded
// latency.
type sendQueue struct {
	mu        sync.Mutex
	frames    [][]byte // waiting, oldest first
	pending   int      // frames waiting or being written
	bytes     int      // bytes waiting or being written
	shut      bool
	maxFrames int
	maxBytes  int
	// notify holds a token when frames are waiting or the queue shut, so
	// the writer can select on it.
	notify chan struct{}
	// peak is called with the byte total after each push, for Stats.
	peak func(int)
}

func newSendQueue(maxFrames, maxBytes int, peak func(int)) *sendQueue {
	return &sendQueue{maxFrames: maxFrames, maxBytes: maxBytes, notify: make(chan struct{}, 1), peak: peak}
}

// push appends b unless the queue is full or shut. force skips the caps: it is
// for handshake and presence frames, which are few per connection (bounded by
// the rendezvous size) and must not be lost.
func (q *sendQueue) push(b []byte, force bool) pushResult {
	q.mu.Lock()
	if q.shut {
		q.mu.Unlock()
		return queueShut
	}
	if !force && (q.pending >= q.maxFrames || q.bytes+len(b) > q.maxBytes) {
		q.mu.Unlock()
		return queueFull
	}
	q.frames = append(q.frames, b)
	q.pending++
	q.bytes += len(b)
	total := q.bytes
	q.mu.Unlock()
	if q.peak != nil {
		q.peak(total)
	}
	q.wake()
	return pushed
}

func (q *sendQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take moves every waiting frame into batch (reusing its storage) and returns
// it. The frames stay counted until written is called for each.
func (q *sendQueue) take(batch [][]byte) [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch = append(batch[:0], q.frames...)
	clear(q.frames) // let the written frames be collected
	q.frames = q.frames[:0]
	return batch
}

// written releases one frame of n bytes taken earlier.
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

// discard drops everything waiting and returns how many frames that was.
func (q *sendQueue) discard() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.frames)
	for _, b := range q.frames {
		q.bytes -= len(b)
	}
	q.pending -= n
	clear(q.frames)
	q.frames = q.frames[:0]
	return n
}

// len returns the frames and bytes waiting or being written.
func (q *sendQueue) len() (frames, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pending, q.bytes
}
