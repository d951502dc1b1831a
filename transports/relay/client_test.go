package relay

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

func TestUnicastBroadcastPresence(t *testing.T) {
	r := startRelay(t, relayserver.Config{}, nil)
	rv := newAdmission(t)
	a := newClient(t, Config{URL: r.url, Admission: rv})
	waitConnected(t, a)
	b := newClient(t, Config{URL: r.url, Admission: rv})
	// A member of another mesh on the same relay must see none of it.
	other := newClient(t, Config{URL: r.url, Admission: newAdmission(t)})
	waitConnected(t, other)

	waitPresent(t, a, b.PublicKey()) // b joined after a
	waitPresent(t, b, a.PublicKey()) // a was there when b joined

	tests := []struct {
		name     string
		from, to *Client
		payload  []byte
	}{
		{"a to b", a, b, []byte("hello b")},
		{"b to a", b, a, []byte("hello a")},
		{"empty payload", a, b, []byte{}},
		{"large payload", b, a, bytes.Repeat([]byte{0xa5}, relayproto.MaxPayload)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.from.Send(tt.to.PublicKey(), tt.payload); err != nil {
				t.Fatalf("Send: %v", err)
			}
			m := recvMatch(t, tt.to, "unicast", func(m Message) bool { return m.Kind == KindUnicast })
			if m.From != tt.from.PublicKey() || !bytes.Equal(m.Payload, tt.payload) {
				t.Fatalf("got %v from %s, %d bytes; want from %s, %d bytes",
					m.Kind, m.From.ShortString(), len(m.Payload), tt.from.PublicKey().ShortString(), len(tt.payload))
			}
		})
	}

	// A batch arrives as its packets, in order, those that a batch frame
	// cannot carry (empty, longer than 64 KiB - 1) included.
	batch := [][]byte{[]byte("one"), {}, []byte("two"), bytes.Repeat([]byte{0x5a}, relayproto.MaxPayload), []byte("three"), []byte("four")}
	if err := a.SendBatch(b.PublicKey(), batch); err != nil {
		t.Fatalf("SendBatch: %v", err)
	}
	for i, want := range batch {
		m := recvMatch(t, b, "unicast", func(m Message) bool { return m.Kind == KindUnicast })
		if m.From != a.PublicKey() || !bytes.Equal(m.Payload, want) {
			t.Fatalf("batch packet %d: got %.8q (%d bytes) from %s, want %.8q (%d bytes) from a", i, m.Payload, len(m.Payload), m.From.ShortString(), want, len(want))
		}
	}

	if err := a.Broadcast([]byte("to all")); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	m := recvMatch(t, b, "broadcast", func(m Message) bool { return m.Kind == KindBroadcast })
	if m.From != a.PublicKey() || string(m.Payload) != "to all" {
		t.Fatalf("broadcast: got %q from %s", m.Payload, m.From.ShortString())
	}

	if got := a.Peers(); !slices.Equal(got, []nodekey.Public{b.PublicKey()}) {
		t.Fatalf("a.Peers() = %v, want [b]", got)
	}

	// Frames too large for the relay are refused before they are queued.
	if err := a.Send(b.PublicKey(), make([]byte, relayproto.MaxPayload+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized Send: err = %v, want ErrTooLarge", err)
	}
	if err := a.Broadcast(make([]byte, relayproto.MaxPayload+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized Broadcast: err = %v, want ErrTooLarge", err)
	}

	b.Close()
	recvMatch(t, a, "PeerGone b", func(m Message) bool { return m.Kind == KindPeerGone && m.From == b.PublicKey() })
	if got := a.Peers(); len(got) != 0 {
		t.Fatalf("a.Peers() after b left = %v, want none", got)
	}
	if _, err := b.Recv(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: err = %v, want ErrClosed", err)
	}
	if err := b.Send(a.PublicKey(), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: err = %v, want ErrClosed", err)
	}

	st := a.Status()
	if !st.Connected || st.SentFrames == 0 || st.RecvFrames == 0 || st.URL != r.url+relayproto.Path {
		t.Fatalf("a.Status() = %+v", st)
	}
	// The other mesh saw no presence and no data.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if m, err := other.Recv(ctx); err == nil {
		t.Fatalf("client of another rendezvous received %v from %s", m.Kind, m.From.ShortString())
	}
}

func TestRelayRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	r1 := startRelay(t, relayserver.Config{}, ln)
	rv := newAdmission(t)
	a := newClient(t, Config{URL: r1.url, Admission: rv})
	b := newClient(t, Config{URL: r1.url, Admission: rv})
	waitConnected(t, a)
	waitConnected(t, b)
	sendUntilReceived(t, a, b, "before restart")
	// b's frames reaching b say nothing of whether a has read the relay's
	// PeerPresent(b) yet; what a relay going down keeps is what a knew.
	testkit.Eventually(t, "a to learn that b is present", func() bool { return a.Present(b.PublicKey()) })

	r1.stop()
	testkit.Eventually(t, "both clients to notice the relay is gone", func() bool {
		return !a.Status().Connected && !b.Status().Connected
	})
	if a.Connected() || b.Connected() || a.Present(b.PublicKey()) || !a.Reachable(b.PublicKey()) {
		t.Fatalf("relay gone: Connected %v/%v, Present %v, Reachable %v; want false, false, true",
			a.Connected(), b.Connected(), a.Present(b.PublicKey()), a.Reachable(b.PublicKey()))
	}
	if err := a.Send(b.PublicKey(), []byte("into the void")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Send while relay is down: err = %v, want ErrNotConnected", err)
	}

	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening again on %s: %v", addr, err)
	}
	startRelay(t, relayserver.Config{}, ln2)
	waitConnected(t, a)
	waitConnected(t, b)
	if !a.Connected() || !b.Connected() {
		t.Fatal("Connected says a client is not connected after WaitConnected")
	}
	sendUntilReceived(t, a, b, "after restart a→b")
	sendUntilReceived(t, b, a, "after restart b→a")
	for _, c := range []*Client{a, b} {
		if st := c.Status(); st.Reconnects < 1 || st.LastError == "" {
			t.Errorf("status after restart = %+v, want Reconnects ≥ 1 and the loss recorded", st)
		}
	}
	testkit.Eventually(t, "presence to be rebuilt", func() bool {
		return slices.Contains(a.Peers(), b.PublicKey()) && slices.Contains(b.Peers(), a.PublicKey())
	})
	testkit.Eventually(t, "each to be present to the other again", func() bool {
		return a.Present(b.PublicKey()) && b.Present(a.PublicKey())
	})
}

func TestRelayDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now

	c := newClient(t, Config{URL: "ws://" + addr, Admission: newAdmission(t)})
	testkit.Eventually(t, "a failed attempt in Status", func() bool {
		st := c.Status()
		return st.LastError != "" && !st.Connected
	})
	st := c.Status()
	if !strings.Contains(st.LastError, addr) {
		t.Errorf("LastError %q does not name the relay %s", st.LastError, addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.WaitConnected(ctx); err == nil {
		t.Fatal("WaitConnected succeeded with no relay")
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	startRelay(t, relayserver.Config{}, ln)
	waitConnected(t, c)
	if st := c.Status(); !st.Connected || !st.NextAttempt.IsZero() || st.Reconnects != 0 {
		t.Fatalf("status once connected = %+v", st)
	}
}

func TestRelayRefusalReported(t *testing.T) {
	r := startRelay(t, relayserver.Config{MaxConnsPerKey: 1}, nil)
	rv := newAdmission(t)
	key := testkit.Key(t)
	first := newClient(t, Config{URL: r.url, Admission: rv, PrivateKey: key})
	waitConnected(t, first)
	second := newClient(t, Config{URL: r.url, Admission: rv, PrivateKey: key})
	testkit.Eventually(t, "the refusal in Status", func() bool { return second.Status().LastError != "" })
	if st := second.Status(); st.Connected || !strings.Contains(st.LastError, "too many connections") {
		t.Fatalf("second client status %+v, want the relay's refusal", st)
	}
	if !first.Status().Connected {
		t.Fatal("first client lost its connection")
	}
}

func TestNewConfigErrors(t *testing.T) {
	key := testkit.Key(t)
	adm := newAdmission(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty URL", Config{PrivateKey: key}, "URL is empty"},
		{"http scheme", Config{URL: "http://relay.example/v1/relay", PrivateKey: key}, `write "ws://relay.example/v1/relay"`},
		{"no scheme", Config{URL: "relay.example:443", PrivateKey: key}, "relay.example:443"},
		{"no host", Config{URL: "wss:///v1/relay", PrivateKey: key}, "has no host"},
		{"user info", Config{URL: "wss://u:p@relay.example", PrivateKey: key}, "user info"},
		{"zero key", Config{URL: "wss://relay.example"}, "PrivateKey is zero"},
		{"zero admission key", Config{URL: "wss://relay.example", PrivateKey: key}, "Admission is zero"},
		{"negative queue", Config{URL: "wss://relay.example", PrivateKey: key, Admission: adm, RecvQueue: -1}, "RecvQueue"},
		{"negative backoff", Config{URL: "wss://relay.example", PrivateKey: key, Admission: adm, MinBackoff: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestCloseIdempotent(t *testing.T) {
	r := startRelay(t, relayserver.Config{}, nil)
	c := newClient(t, Config{URL: r.url, Admission: newAdmission(t)})
	waitConnected(t, c)
	done := make(chan struct{})
	go func() {
		c.Close()
		close(done)
	}()
	c.Close()
	<-done
	if err := c.WaitConnected(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitConnected after Close: %v, want ErrClosed", err)
	}
	if st := c.Status(); st.Connected {
		t.Fatalf("Status after Close says connected")
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 10 * time.Millisecond, max: 80 * time.Millisecond}
	ceilings := []time.Duration{10, 20, 40, 80, 80, 80}
	for i, c := range ceilings {
		c *= time.Millisecond
		if d := b.next(); d < 0 || d > c {
			t.Fatalf("attempt %d: delay %v outside [0, %v]", i, d, c)
		}
	}
	for range 100 {
		if d := b.next(); d > b.max {
			t.Fatalf("delay %v above max %v", d, b.max)
		}
	}
	b.reset()
	if d := b.next(); d > b.min {
		t.Fatalf("after reset: delay %v above min %v", d, b.min)
	}
}

// TestSendQueueBytes: a connection's send queue holds sendQueueBytes at
// most, whatever the frames' sizes: 64 batch frames of 16 KiB, not 512.
func TestSendQueueBytes(t *testing.T) {
	cn := &conn{out: make(chan *[]byte, sendQueueLen)}
	n := 0
	for ; n <= sendQueueLen; n++ {
		b := getBatchFrame()
		*b = (*b)[:relayproto.BatchSize]
		if err := cn.enqueue(b); err != nil {
			if !errors.Is(err, ErrQueueFull) {
				t.Fatalf("frame %d: %v, want ErrQueueFull", n, err)
			}
			break
		}
	}
	if want := sendQueueBytes / relayproto.BatchSize; n != want {
		t.Fatalf("queue took %d frames of %d bytes, want %d", n, relayproto.BatchSize, want)
	}
	// Writing one makes room for one more.
	b := <-cn.out
	cn.outBytes.Add(-int64(len(*b)))
	if err := cn.enqueue(b); err != nil {
		t.Fatalf("after one left: %v", err)
	}
}
