package relayserver_test

import (
	"context"
	"encoding/binary"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

// A client that never reads must cost the relay no more than its queue cap,
// however much is sent to it; the excess is dropped and counted.
func TestSlowReaderBounded(t *testing.T) {
	const (
		capFrames = 64
		capBytes  = 256 << 10
		flood     = 1000
		size      = 16 << 10
	)
	r := newRelay(t, relayserver.Config{
		SendQueueFrames: capFrames,
		SendQueueBytes:  capBytes,
		RateBytesPerSec: relayserver.Unlimited,
		WriteTimeout:    time.Minute, // keep the stuck reader connected for the test
	})
	rv := testkit.Admission(1)
	slow := connect(t, r, testkit.Key(t), rv) // reads nothing from now on
	fast := connect(t, r, testkit.Key(t), rv)
	sender := connect(t, r, testkit.Key(t), rv)
	fast.expect(relayproto.TypePeerPresent, slow.key)
	fast.expect(relayproto.TypePeerPresent, sender.key)

	stop := make(chan struct{})
	var sampled sync.WaitGroup
	var worst int
	sampled.Go(func() {
		for {
			if q := r.srv.Stats().QueuedBytes; q > worst {
				worst = q
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	payload := make([]byte, size)
	for i := range flood {
		binary.BigEndian.PutUint32(payload, uint32(i))
		writeMsg(t, sender.ws, relayproto.AppendSend(nil, slow.key, payload))
	}
	// The relay reads a connection in order, so once this arrives every
	// flood frame has been queued or dropped.
	sender.send(fast.key, "done")
	fast.expect(relayproto.TypeRecv, sender.key)
	close(stop)
	sampled.Wait()

	st := r.srv.Stats()
	// Queued bytes count whole frames (type, key and payload); the slow
	// reader's queue may also hold the other two clients' presence.
	if st.PeakQueueBytes > capBytes || worst > capBytes {
		t.Fatalf("a send queue reached %d bytes (sampled total %d), cap %d", st.PeakQueueBytes, worst, capBytes)
	}
	// "done" is counted as forwarded once it is queued to fast, which
	// may read it first: the counters are polled until they add up.
	var drops, fwd float64
	for deadline := time.Now().Add(testkit.Patience); ; time.Sleep(5 * time.Millisecond) {
		drops = metric(t, r, `plurenet_relay_drops_total{reason="queue_full"}`)
		fwd = metric(t, r, `plurenet_relay_frames_forwarded_total{kind="unicast"}`)
		if drops+fwd == flood+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v dropped + %v forwarded != %d sent", drops, fwd, flood+1)
		}
	}
	if drops == 0 {
		t.Fatal("no queue_full drops counted")
	}
	t.Logf("flooded %d MiB at a reader that never reads: %v frames dropped, queue peak %d KiB", flood*size>>20, drops, st.PeakQueueBytes>>10)
}

func TestRateLimit(t *testing.T) {
	const rate = 1000
	r := newRelay(t, relayserver.Config{RateBytesPerSec: rate, RateBurstBytes: 1})
	rv := testkit.Admission(1)
	a := connect(t, r, testkit.Key(t), rv)
	if a.welcome.RateBytes != rate {
		t.Fatalf("Welcome.RateBytes = %d, want %d", a.welcome.RateBytes, rate)
	}
	b := connect(t, r, testkit.Key(t), rv)
	a.expect(relayproto.TypePeerPresent, b.key)
	b.expect(relayproto.TypePeerPresent, a.key)

	// The burst is raised to one full frame, so a few of these pass; at
	// 1000 bytes/s the rest cannot.
	const sent = 100
	payload := string(make([]byte, 10<<10))
	for range sent {
		a.send(b.key, payload)
	}
	f := a.expect(relayproto.TypeError, relayproto.Key{})
	if f.Code != relayproto.ErrRateLimited || f.Code.Fatal() {
		t.Fatalf("got Error %v, want the non-fatal ErrRateLimited", f.Code)
	}
	// Not fatal: Leave (never rate limited) still works and closes cleanly.
	writeMsg(t, a.ws, relayproto.AppendLeave(nil))
	for {
		f, err := a.tryNext()
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("after Leave: %v, want a normal close", err)
			}
			break
		}
		if f.Type != relayproto.TypeError || f.Code != relayproto.ErrRateLimited {
			t.Fatalf("after Leave: %+v", f) // a later notice is possible, nothing else
		}
	}

	got := 0
	for {
		f := b.next()
		if f.Type == relayproto.TypePeerGone {
			break
		}
		if f.Type != relayproto.TypeRecv {
			t.Fatalf("b got %v", f.Type)
		}
		got++
	}
	if got == 0 || got >= sent {
		t.Fatalf("%d of %d frames passed the rate limit", got, sent)
	}
	if drops := metric(t, r, `plurenet_relay_drops_total{reason="rate_limited"}`); drops != float64(sent-got) {
		t.Fatalf("rate_limited drops = %v, want %d", drops, sent-got)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	r := newRelay(t, relayserver.Config{HandshakeTimeout: 100 * time.Millisecond})
	ws := dialWS(t, r.url, nil)
	readServerHello(t, ws)
	// ...and never answer.
	expectClose(t, ws, relayproto.ErrHandshakeSlow, websocket.StatusPolicyViolation)
	testkit.Eventually(t, "timeout counted", func() bool {
		return metric(t, r, `plurenet_relay_handshakes_total{result="timeout"}`) == 1
	})
}

func TestIdleTimeout(t *testing.T) {
	// Short, but not so short that a loaded test machine looks idle.
	cfg := relayserver.Config{PingInterval: 50 * time.Millisecond, IdleTimeout: time.Second}
	r := newRelay(t, cfg)
	rv := testkit.Admission(1)

	// Reads, but does not answer pings: dead to the relay.
	mute := connectWith(t, r, testkit.Key(t), rv, &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool { return false },
	})
	expectClose(t, mute.ws, relayproto.ErrIdle, websocket.StatusPolicyViolation)

	// Quiet clients that answer pings stay, however long they say nothing.
	a := connect(t, r, testkit.Key(t), rv)
	b := connect(t, r, testkit.Key(t), rv)
	frames := make(chan relayproto.Frame, 4)
	var readers sync.WaitGroup
	readers.Go(func() {
		defer close(frames)
		for {
			f, err := a.tryNext()
			if err != nil {
				return
			}
			frames <- f
		}
	})
	readers.Go(func() {
		for {
			if _, err := b.tryNext(); err != nil {
				return
			}
		}
	})
	time.Sleep(3 * cfg.IdleTimeout)
	b.send(a.key, "still there?")
	for f := range frames {
		if f.Type == relayproto.TypeRecv {
			break
		}
		if f.Type != relayproto.TypePeerPresent {
			t.Fatalf("a got %+v", f)
		}
	}
	a.ws.CloseNow()
	b.ws.CloseNow()
	readers.Wait()
}

func TestMaxConnsPerKey(t *testing.T) {
	r := newRelay(t, relayserver.Config{MaxConnsPerKey: 2})
	k := testkit.Key(t)
	first := connect(t, r, k, testkit.Admission(1))
	connect(t, r, k, testkit.Admission(1))
	ws := dialWS(t, r.url, nil)
	sh := readServerHello(t, ws)
	ch := answer(t, sh, k, k, testkit.Admission(1))
	writeMsg(t, ws, ch.Append(nil))
	expectClose(t, ws, relayproto.ErrTooManyConns, websocket.StatusTryAgainLater)

	connect(t, r, k, testkit.Admission(2)) // the limit is per rendezvous
	first.ws.Close(websocket.StatusNormalClosure, "")
	testkit.Eventually(t, "first connection gone", func() bool { return r.srv.Stats().Connections == 2 })
	connect(t, r, k, testkit.Admission(1))
}

func TestMaxConns(t *testing.T) {
	r := newRelay(t, relayserver.Config{MaxConns: 2})
	connect(t, r, testkit.Key(t), testkit.Admission(1))
	connect(t, r, testkit.Key(t), testkit.Admission(1))
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, r.url, &websocket.DialOptions{Subprotocols: []string{relayproto.Subprotocol}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection: %v, %v; want HTTP 503", resp, err)
	}
	if got := metric(t, r, `plurenet_relay_handshakes_total{result="refused_full"}`); got != 1 {
		t.Fatalf("refused_full = %v", got)
	}
}
