package relayserver_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testcert"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

// A client switching connections the make-before-break way (connect anew,
// then Leave the old one) loses nothing sent to it meanwhile.
func TestLeaveSwitchIsLossless(t *testing.T) {
	const n = 3000
	r := newRelay(t, relayserver.Config{SendQueueFrames: 2 * n, SendQueueBytes: 8 << 20, RateBytesPerSec: relayserver.Unlimited})
	rv := testkit.Admission(1)
	a := connect(t, r, testkit.Key(t), rv)
	bKey := testkit.Key(t)
	b1 := connect(t, r, bKey, rv)
	a.expect(relayproto.TypePeerPresent, b1.key)
	b1.expect(relayproto.TypePeerPresent, a.key)

	seqs := make(chan uint32, 2*n)
	collect := func(c *client) (closeErr error) {
		for {
			f, err := c.tryNext()
			if err != nil {
				return err
			}
			if f.Type == relayproto.TypeRecv && len(f.Payload) == 4 {
				seqs <- binary.BigEndian.Uint32(f.Payload)
			} else {
				seqs <- ^uint32(0) // anything else is wrong; counted below
			}
		}
	}
	var wg sync.WaitGroup
	var b1Err, sendErr error
	half := make(chan struct{})
	wg.Go(func() { b1Err = collect(b1) })
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		var p [4]byte
		for i := range n {
			binary.BigEndian.PutUint32(p[:], uint32(i))
			if err := a.ws.Write(ctx, websocket.MessageBinary, relayproto.AppendSend(nil, b1.key, p[:])); err != nil {
				sendErr = err
				return
			}
			if i == n/3 {
				close(half)
			}
		}
	})

	<-half
	b2 := connect(t, r, bKey, rv)
	b2.expect(relayproto.TypePeerPresent, a.key)
	writeMsg(t, b1.ws, relayproto.AppendLeave(nil))
	var b2Err error
	wg.Go(func() { b2Err = collect(b2) })

	got := make(map[uint32]bool)
	deadline := time.After(patience)
	for len(got) < n {
		select {
		case s := <-seqs:
			if s >= n {
				t.Fatalf("unexpected frame during the switch")
			}
			got[s] = true
		case <-deadline:
			t.Fatalf("only %d of %d frames arrived", len(got), n)
		}
	}
	// Peers saw no flicker: b never left. The next thing a sees is this.
	b2.send(a.key, "marker")
	a.expect(relayproto.TypeRecv, b2.key)

	b2.ws.Close(websocket.StatusNormalClosure, "")
	wg.Wait()
	if sendErr != nil {
		t.Fatal(sendErr)
	}
	if websocket.CloseStatus(b1Err) != websocket.StatusNormalClosure {
		t.Fatalf("old connection ended with %v, want a normal close after Leave", b1Err)
	}
	if b2Err == nil {
		t.Fatal("b2 reader ended without error")
	}
	if d := metric(t, r, `plurenet_relay_drops_total{reason="closed"}`) + metric(t, r, `plurenet_relay_drops_total{reason="queue_full"}`); d != 0 {
		t.Fatalf("%v frames dropped", d)
	}
}

func TestDrain(t *testing.T) {
	// Long enough for a to move in time on a loaded machine; b waits it out.
	const grace = 1500 * time.Millisecond
	r := newRelay(t, relayserver.Config{DrainGrace: grace})
	rv := testkit.Admission(1)
	a := connect(t, r, testkit.Key(t), rv)
	b := connect(t, r, testkit.Key(t), rv)
	a.expect(relayproto.TypePeerPresent, b.key)
	b.expect(relayproto.TypePeerPresent, a.key)
	// Connected, but still in the handshake: no Drain for it, just the end.
	pending := dialWS(t, r.url, nil)
	readServerHello(t, pending)

	drained := make(chan error, 1)
	go func() { drained <- r.srv.Drain(context.Background()) }()
	for _, c := range []*client{a, b} {
		if f := c.expect(relayproto.TypeDrain, relayproto.Key{}); f.Millis != uint32(grace.Milliseconds()) {
			t.Fatalf("Drain deadline %d ms, want %d", f.Millis, grace.Milliseconds())
		}
	}
	expectClose(t, pending, relayproto.ErrServerShutdown, websocket.StatusGoingAway)

	// Load balancers see the instance going: health fails, upgrades are refused.
	resp, err := http.Get(r.base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz while draining: %v", resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if _, resp, err := websocket.Dial(ctx, r.url, &websocket.DialOptions{Subprotocols: []string{relayproto.Subprotocol}}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial while draining: %v %v, want 503", resp, err)
	}

	// a moves away in time; b does not and is cut at the deadline.
	writeMsg(t, a.ws, relayproto.AppendLeave(nil))
	expectClose(t, a.ws, 0, websocket.StatusNormalClosure)
	rest := expectClose(t, b.ws, relayproto.ErrServerShutdown, websocket.StatusGoingAway)
	if len(rest) != 1 || rest[0].Type != relayproto.TypePeerGone || rest[0].Key != a.key {
		t.Fatalf("b saw %+v before the shutdown, want a's PeerGone", rest)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

func TestDrainContextEnds(t *testing.T) {
	r := newRelay(t, relayserver.Config{DrainGrace: time.Hour})
	a := connect(t, r, testkit.Key(t), testkit.Admission(1))
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan relayproto.Type, 1)
	go func() {
		f, _ := a.tryNext()
		first <- f.Type
		cancel()
	}()
	if err := r.srv.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain = %v, want context.Canceled", err)
	}
	if typ := <-first; typ != relayproto.TypeDrain {
		t.Fatalf("first frame after Drain: %v", typ)
	}
	// What remained is closed with ErrServerShutdown.
	_, err := a.tryNext()
	for err == nil {
		_, err = a.tryNext()
	}
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("after Drain: %v", err)
	}
}

func TestMaxConnLifetime(t *testing.T) {
	r := newRelay(t, relayserver.Config{MaxConnLifetime: 500 * time.Millisecond, DrainGrace: 100 * time.Millisecond})
	a := connect(t, r, testkit.Key(t), testkit.Admission(1))
	if a.welcome.LifetimeSecs != 1 {
		t.Fatalf("Welcome.LifetimeSecs = %d, want 1 (rounded up from below a second)", a.welcome.LifetimeSecs)
	}
	if f := a.expect(relayproto.TypeDrain, relayproto.Key{}); f.Millis != 100 {
		t.Fatalf("Drain deadline %d ms, want 100", f.Millis)
	}
	expectClose(t, a.ws, relayproto.ErrServerShutdown, websocket.StatusGoingAway)
}

func TestHealthzAndMetrics(t *testing.T) {
	r := newRelay(t, relayserver.Config{})
	resp, err := http.Get(r.base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("/healthz: %v %q", resp.Status, body)
	}
	// Not on the listener clients reach: they would learn how many
	// clients the relay has and how its limits stand.
	resp, err = http.Get(r.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on the relay's own listener: %v, want 404", resp.Status)
	}
	resp, err = http.Get(r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{
		"plurenet_relay_connections 0",
		"plurenet_relay_rendezvous 0",
		`plurenet_relay_frames_forwarded_total{kind="unicast"} 0`,
		`plurenet_relay_frames_forwarded_total{kind="broadcast"} 0`,
		`plurenet_relay_bytes_forwarded_total{kind="unicast"} 0`,
		`plurenet_relay_drops_total{reason="queue_full"} 0`,
		`plurenet_relay_drops_total{reason="no_such_peer"} 0`,
		`plurenet_relay_drops_total{reason="rate_limited"} 0`,
		`plurenet_relay_handshakes_total{result="ok"} 0`,
		`plurenet_relay_handshakes_total{result="auth_failed"} 0`,
		`plurenet_relay_handshakes_total{result="rendezvous_full"} 0`,
		"plurenet_relay_rate_charged_bytes_total 0",
	} {
		if !strings.Contains(string(body), "\n"+name+"\n") {
			t.Errorf("/metrics lacks %q", name)
		}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics content type %q", ct)
	}
}

// Serve runs the relay over TLS and drains it when its context ends.
func TestServeTLS(t *testing.T) {
	certFile, keyFile, pool := testcert.SelfSigned(t)
	srv, err := relayserver.New(relayserver.Config{DrainGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, certFile, keyFile) }()

	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer httpc.CloseIdleConnections()
	r := &testRelay{srv: srv, url: "wss://" + ln.Addr().String() + relayproto.Path}
	a := connectWith(t, r, testkit.Key(t), testkit.Admission(1), &websocket.DialOptions{HTTPClient: httpc})
	cancel()
	a.expect(relayproto.TypeDrain, relayproto.Key{})
	writeMsg(t, a.ws, relayproto.AppendLeave(nil))
	expectClose(t, a.ws, 0, websocket.StatusNormalClosure)
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestServeRejectsHalfTLS(t *testing.T) {
	srv, err := relayserver.New(relayserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := srv.Serve(context.Background(), ln, "cert.pem", ""); err == nil {
		t.Fatal("Serve accepted a certificate without a key")
	}
}

// TestStopAnnouncesNoDepartures: when the relay cuts every connection
// (Close), no member is told that another left on the way out. A crash
// tells them nothing either, and a client keeps the members it knew while
// its relay is down (transports/relay's Reachable), so the two look alike.
func TestStopAnnouncesNoDepartures(t *testing.T) {
	const n = 8
	r := newRelay(t, relayserver.Config{})
	rv := testkit.Admission(1)
	cs := make([]*client, n)
	for i := range cs {
		cs[i] = connect(t, r, testkit.Key(t), rv)
	}
	// Each learns of the n-1 others (its snapshot, then later joins).
	for _, c := range cs {
		for range n - 1 {
			if f := c.next(); f.Type != relayproto.TypePeerPresent {
				t.Fatalf("client %s: got %v, want PeerPresent", c.key.ShortString(), f.Type)
			}
		}
	}
	r.srv.Close()
	for _, c := range cs {
		for {
			f, err := c.tryNext()
			if err != nil {
				break // cut
			}
			if f.Type == relayproto.TypePeerGone {
				t.Fatalf("client %s was told %s left while the relay stopped", c.key.ShortString(), f.Key.ShortString())
			}
		}
	}
}
