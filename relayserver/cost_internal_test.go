package relayserver

import (
	"encoding/binary"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/plures/plurenet/internal/relayproto"
)

// Connections without sockets: nothing writes their queues out, so what the
// router queues stays queued. That is a client that never reads, the worst
// case for the relay's memory.

func costServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testKey is a distinct key per i (not a valid curve point; the router does
// not care).
func testKey(i int) relayproto.Key {
	var k relayproto.Key
	binary.BigEndian.PutUint64(k[:], uint64(i)+1)
	return k
}

// member joins a socketless connection of key i to rv.
func member(t testing.TB, s *Server, rv relayproto.Rendezvous, i int) (*conn, error) {
	c := s.newConn("test")
	c.key, c.rv, c.established = testKey(i), rv, true
	return c, s.router.join(c, s.welcome)
}

func mustMember(t testing.TB, s *Server, rv relayproto.Rendezvous, i int) *conn {
	t.Helper()
	c, err := member(t, s, rv, i)
	if err != nil {
		t.Fatalf("join %d: %v", i, err)
	}
	return c
}

// written expands what is queued on c as its writer would write it.
func written(c *conn) []relayproto.Frame {
	var out []relayproto.Frame
	for _, e := range c.q.take(nil) {
		write := func(b []byte) error {
			if relayproto.Type(b[0]) == relayproto.TypeWelcome {
				out = append(out, relayproto.Frame{Type: relayproto.TypeWelcome})
				return nil
			}
			f, err := relayproto.Parse(b)
			if err != nil {
				panic(err)
			}
			out = append(out, f)
			return nil
		}
		if e.snap != nil {
			_ = e.snap.each(c.scratch[:], write)
		} else {
			_ = write(e.frame)
		}
		c.q.written(e.size())
	}
	return out
}

// The presence snapshot obeys the send queue's caps: it is one entry,
// counted as the bytes of its frames, not one forced frame per member past
// the frame cap (before: 100 members made 101 frames in a 16-frame queue).
func TestSnapshotIsOneQueueEntry(t *testing.T) {
	const members = 100
	s := costServer(t, Config{SendQueueFrames: 16})
	rv := relayproto.Rendezvous{1}
	for i := range members {
		mustMember(t, s, rv, i)
	}
	joiner := mustMember(t, s, rv, members)
	frames, bytes := joiner.q.len()
	if frames != 2 || bytes != len(s.welcome)+members*snapshotFrameSize {
		t.Fatalf("joiner's queue: %d entries, %d bytes; want Welcome and one snapshot of %d keys (%d bytes)",
			frames, bytes, members, len(s.welcome)+members*snapshotFrameSize)
	}
	if frames > s.cfg.SendQueueFrames {
		t.Fatalf("joiner's queue holds %d entries, cap %d", frames, s.cfg.SendQueueFrames)
	}
	// Data still fits behind the snapshot.
	if r := joiner.q.push(relayproto.AppendRecv(nil, testKey(0), []byte("x")), false); r != pushed {
		t.Fatalf("a frame after the snapshot: %v", r)
	}
}

// The snapshot is written before anything queued after it, and each
// joiner's view stays what it was when it joined, however the room changes
// before its writer gets to it.
func TestSnapshotOrder(t *testing.T) {
	s := costServer(t, Config{})
	rv := relayproto.Rendezvous{2}
	var ms []*conn
	for i := range 3 {
		ms = append(ms, mustMember(t, s, rv, i))
	}
	joiner := mustMember(t, s, rv, 3)
	ms[1].finish(closeGone, 0, "") // gone before the joiner read anything
	late := mustMember(t, s, rv, 4)

	got := written(joiner)
	want := []relayproto.Frame{{Type: relayproto.TypeWelcome}}
	present := map[relayproto.Key]bool{}
	for _, f := range got[1:4] {
		if f.Type != relayproto.TypePeerPresent {
			t.Fatalf("snapshot frame %v", f.Type)
		}
		present[f.Key] = true
	}
	if got[0].Type != want[0].Type || len(present) != 3 || !present[testKey(0)] || !present[testKey(1)] || !present[testKey(2)] {
		t.Fatalf("joiner's first frames: %+v", got[:4])
	}
	if rest := got[4:]; len(rest) != 2 ||
		rest[0].Type != relayproto.TypePeerGone || rest[0].Key != testKey(1) ||
		rest[1].Type != relayproto.TypePeerPresent || rest[1].Key != testKey(4) {
		t.Fatalf("after the snapshot: %+v, want PeerGone(1), PeerPresent(4)", rest)
	}
	// The later joiner's snapshot has the room as it is now, without
	// itself.
	got = written(late)
	keys := map[relayproto.Key]bool{}
	for _, f := range got[1:] {
		keys[f.Key] = true
	}
	if len(got) != 4 || len(keys) != 3 || keys[testKey(1)] || keys[testKey(4)] {
		t.Fatalf("late joiner got %+v", got)
	}
}

// A churn of 10,000 joins and leaves against one rendezvous, none of whose
// members read: the relay's live heap stays within what its caps allow, and
// returns to where it was when they leave. Before the member cap, the
// rendezvous grew to every joiner in the window, each joiner was queued a
// forced frame per member, and the heap grew with the square of the window.
func TestJoinChurnMemoryBounded(t *testing.T) {
	const (
		joins  = 10_000
		window = 2048 // joiners trying at once: twice the member cap
		sample = 500  // joins between heap samples
	)
	s := costServer(t, Config{})
	rv := relayproto.Rendezvous{3}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	base := heap()
	// Each joiner leaves when window joins have been tried after it, if it
	// was admitted: the rendezvous is offered twice its cap, and once
	// saturated it alternates between admitting (as the oldest leave) and
	// refusing.
	tried := make([]*conn, joins)
	refused, peak := 0, uint64(0)
	maxSize := int64(0)
	for i := range joins {
		if i >= window && tried[i-window] != nil {
			tried[i-window].finish(closeGone, 0, "")
			tried[i-window] = nil
		}
		c, err := member(t, s, rv, i)
		switch err {
		case nil:
			tried[i] = c
			maxSize = max(maxSize, c.room.Load().size.Load())
		case errRendezvousFull:
			refused++
		default:
			t.Fatalf("join %d: %v", i, err)
		}
		if i%sample == sample-1 {
			peak = max(peak, heap())
		}
	}
	for i, c := range tried {
		if c != nil {
			c.finish(closeGone, 0, "")
			tried[i] = nil
		}
	}
	after := heap()
	// The caps: at most MaxMembers connections hold a queue, each at most
	// SendQueueFrames entries (a queued struct, its frames shared) and one
	// snapshot of at most MaxMembers keys. Twice that covers the maps and
	// the frames themselves.
	cfg := s.cfg
	perConn := uint64(cfg.SendQueueFrames*int(sizeofQueued)+cfg.MaxMembersPerRendezvous*relayproto.KeySize) + 4<<10
	bound := 2 * uint64(cfg.MaxMembersPerRendezvous) * perConn
	t.Logf("%d joins, each leaving after %d more, member cap %d: %d refused, largest rendezvous %d; live heap %.1f MiB before, peak %.1f MiB (+%.1f, bound +%.1f), %.1f MiB after all left",
		joins, window, cfg.MaxMembersPerRendezvous, refused, maxSize, mib(base), mib(peak), mib(peak-min(peak, base)), mib(bound), mib(after))
	if maxSize > int64(cfg.MaxMembersPerRendezvous) {
		t.Fatalf("the rendezvous grew to %d keys, cap %d", maxSize, cfg.MaxMembersPerRendezvous)
	}
	if peak > base+bound {
		t.Fatalf("live heap peaked %.1f MiB above its start, over the %.1f MiB the caps allow", mib(peak-base), mib(bound))
	}
	if after > base+8<<20 {
		t.Fatalf("live heap %.1f MiB after every member left, %.1f MiB at the start: something is kept", mib(after), mib(base))
	}
	if n := s.router.rendezvousCount(); n != 0 {
		t.Fatalf("%d rendezvous left", n)
	}
}

// sizeofQueued is the size of one queue entry.
const sizeofQueued = unsafe.Sizeof(queued{})

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// BenchmarkJoinLeave is one join and one leave in a rendezvous of 1023
// members that never read: the linear part (announcing to each member) is
// what a churning rendezvous costs.
func BenchmarkJoinLeave(b *testing.B) {
	s := costServer(b, Config{})
	rv := relayproto.Rendezvous{4}
	for i := range 1023 {
		mustMember(b, s, rv, i)
	}
	b.ResetTimer()
	for i := range b.N {
		c := mustMember(b, s, rv, 2000+i)
		c.finish(closeGone, 0, "")
	}
}

// BenchmarkJoinBesideChurn is one join and leave in a small rendezvous
// while another goroutine churns a rendezvous of 1023 members. Joins take
// the instance-wide lock only to find their room, so the large one must not
// slow the small one down (before: each of its joins held that lock while
// it queued 1023 snapshot frames and announcements).
func BenchmarkJoinBesideChurn(b *testing.B) {
	s := costServer(b, Config{})
	big, small := relayproto.Rendezvous{5}, relayproto.Rendezvous{6}
	for i := range 1023 {
		mustMember(b, s, big, i)
	}
	mustMember(b, s, small, 100_000)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if c, err := member(b, s, big, 200_000+i); err == nil {
				c.finish(closeGone, 0, "")
			}
		}
	})
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		c := mustMember(b, s, small, 300_000+i)
		c.finish(closeGone, 0, "")
		lat[i] = time.Since(t0)
	}
	b.StopTimer()
	// The tail shows waits for the instance-wide lock; reported, not
	// asserted (timing is for make bench).
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
	close(stop)
	wg.Wait()
}

// BenchmarkHandleSend is the relay's own per-frame work for a 1400-byte
// Send with the rate limit on (set high enough never to drop): parse,
// charge, route, queue. No sockets, so it measures the relay's CPU and not
// the scheduler's.
func BenchmarkHandleSend(b *testing.B) {
	s := costServer(b, Config{RateBytesPerSec: 1 << 40, RateBurstBytes: 1 << 40})
	rv := relayproto.Rendezvous{7}
	snd := mustMember(b, s, rv, 0)
	dst := mustMember(b, s, rv, 1)
	frame := relayproto.AppendSend(nil, testKey(1), make([]byte, 1400))
	drainQueue(dst)
	now := time.Now()
	b.SetBytes(1400)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		in := readLike(frame) // the copy readFrame makes from the socket
		snd.handleFrame(in, now)
		in.release()
		if i%256 == 255 {
			drainQueue(dst)
		}
	}
}

// BenchmarkHandleBroadcast: a 200-byte Broadcast into 100 members.
func BenchmarkHandleBroadcast(b *testing.B) {
	s := costServer(b, Config{RateBytesPerSec: 1 << 40, RateBurstBytes: 1 << 40})
	rv := relayproto.Rendezvous{8}
	snd := mustMember(b, s, rv, 0)
	var ms []*conn
	for i := range 99 {
		ms = append(ms, mustMember(b, s, rv, i+1))
	}
	bcast := relayproto.AppendBroadcast(nil, make([]byte, 200))
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		snd.handleFrame(&frame{b: bcast}, now)
		if i%256 == 255 {
			for _, m := range ms {
				drainQueue(m)
			}
		}
	}
}

// drainQueue empties c's queue as a writer would, without writing.
func drainQueue(c *conn) {
	for _, e := range c.q.take(nil) {
		c.q.written(e.size())
	}
}

// readLike returns b as readFrame would: in a forward buffer if it fits one.
func readLike(b []byte) *frame {
	if len(b) > relayproto.BatchSize {
		return &frame{b: b}
	}
	fwd := getForward(len(b))
	return &frame{b: append(fwd, b...), fwd: fwd}
}

// TestQueueCountsBuffers: a send queue counts a forwarded frame as the
// pooled buffer it holds, so frames just over the small buffer's size,
// each forwarded in a 16 KiB buffer, cannot make a receiver that does not
// read hold more than its byte cap.
func TestQueueCountsBuffers(t *testing.T) {
	const capBytes = 1 << 20
	s := costServer(t, Config{RateBytesPerSec: Unlimited, SendQueueBytes: capBytes})
	rv := relayproto.Rendezvous{11}
	src, dst := mustMember(t, s, rv, 0), mustMember(t, s, rv, 1)
	drainQueue(dst)
	frame := relayproto.AppendSend(nil, dst.key, make([]byte, forwardBufSize+1-1-relayproto.KeySize))
	for range 512 {
		in := readLike(frame)
		src.handleFrame(in, time.Now())
		in.release()
	}
	frames, bytes := dst.q.len()
	if held := frames * relayproto.BatchSize; held > capBytes || bytes > capBytes {
		t.Fatalf("%d frames of %d bytes queued in %d KiB of buffers (counted %d), cap %d", frames, len(frame), held>>10, bytes, capBytes)
	}
	if frames < capBytes/relayproto.BatchSize {
		t.Fatalf("only %d frames queued; the cap holds %d", frames, capBytes/relayproto.BatchSize)
	}
}

// TestBatchChargedAsSends: a SendBatch is charged as its packets would be
// as Sends, so batching lets no more through the rate limit: with the same
// budget (a burst and no refill), batches of three deliver as many packets
// as single Sends, less the remainder of the last batch that did not fit.
// A batch over the budget is dropped whole.
func TestBatchChargedAsSends(t *testing.T) {
	s := costServer(t, Config{RateBytesPerSec: 1, RateBurstBytes: 1})
	rv := relayproto.Rendezvous{10}
	pkt := make([]byte, 1000)
	now := time.Now()
	delivered := func(sender int, frame []byte) int {
		src, dst := mustMember(t, s, rv, sender), mustMember(t, s, rv, sender+1)
		drainQueue(dst)
		for range 1000 {
			in := readLike(frame)
			src.handleFrame(in, now)
			in.release()
		}
		n := 0
		for _, f := range written(dst) {
			if f.Type == relayproto.TypeRecv && f.Key == src.key {
				n++
			}
		}
		return n
	}
	single := delivered(0, relayproto.AppendSend(nil, testKey(1), pkt))
	batch := relayproto.AppendSendBatch(nil, testKey(3))
	for range 3 {
		batch = relayproto.AppendBatchPacket(batch, pkt)
	}
	batched := delivered(2, batch)
	if single == 0 || batched > single || batched < single-2 || batched%3 != 0 {
		t.Fatalf("same budget: %d packets as Sends, %d in batches of 3; want batches to deliver %d", single, batched, single/3*3)
	}
}
