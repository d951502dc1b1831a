package relayserver_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

func TestUnicastAndBroadcast(t *testing.T) {
	r := newRelay(t, relayserver.Config{})
	rv, other := testkit.Admission(1), testkit.Admission(2)
	a := connect(t, r, testkit.Key(t), rv)
	if a.welcome != (relayproto.Welcome{MaxPayload: relayproto.MaxPayload, RateBytes: relayserver.DefaultRateBytesPerSec}) {
		t.Fatalf("Welcome = %+v", a.welcome)
	}
	b := connect(t, r, testkit.Key(t), rv)
	a.expect(relayproto.TypePeerPresent, b.key)
	b.expect(relayproto.TypePeerPresent, a.key)
	c := connect(t, r, testkit.Key(t), rv)
	a.expect(relayproto.TypePeerPresent, c.key)
	b.expect(relayproto.TypePeerPresent, c.key)
	seen := map[relayproto.Key]bool{}
	for range 2 {
		f := c.next()
		if f.Type != relayproto.TypePeerPresent {
			t.Fatalf("c got %v, want its presence snapshot", f.Type)
		}
		seen[f.Key] = true
	}
	if !seen[a.key] || !seen[b.key] {
		t.Fatalf("c's presence snapshot %v lacks a or b", seen)
	}
	d := connect(t, r, testkit.Key(t), other) // another mesh on the same relay

	a.send(b.key, "to b")
	if f := b.expect(relayproto.TypeRecv, a.key); string(f.Payload) != "to b" {
		t.Fatalf("b got %q", f.Payload)
	}
	b.send(a.key, "") // empty payloads are legal
	if f := a.expect(relayproto.TypeRecv, b.key); len(f.Payload) != 0 {
		t.Fatalf("a got %q", f.Payload)
	}
	a.send(d.key, "across meshes") // d is not in a's rendezvous: dropped
	a.broadcast("to all")
	for _, x := range []*client{b, c} {
		if f := x.expect(relayproto.TypeBroadcastRecv, a.key); string(f.Payload) != "to all" {
			t.Fatalf("broadcast payload %q", f.Payload)
		}
	}
	// d got neither the unicast nor the broadcast: the next thing it sees
	// is this.
	e := connect(t, r, testkit.Key(t), other)
	d.expect(relayproto.TypePeerPresent, e.key)
	e.expect(relayproto.TypePeerPresent, d.key)

	if got := metric(t, r, `plurenet_relay_drops_total{reason="no_such_peer"}`); got != 1 {
		t.Fatalf("no_such_peer drops = %v, want 1", got)
	}
	// A forwarded frame is counted once it is queued to its receivers,
	// which may read it first; a handshake once its welcome is sent.
	waitMetric(t, r, `plurenet_relay_frames_forwarded_total{kind="unicast"}`, 2)
	waitMetric(t, r, `plurenet_relay_frames_forwarded_total{kind="broadcast"}`, 2)
	waitMetric(t, r, `plurenet_relay_bytes_forwarded_total{kind="broadcast"}`, 2*float64(len("to all")))
	if got := metric(t, r, `plurenet_relay_rendezvous`); got != 2 {
		t.Fatalf("rendezvous gauge = %v, want 2", got)
	}
	if got := metric(t, r, `plurenet_relay_connections`); got != 5 {
		t.Fatalf("connections gauge = %v, want 5", got)
	}
	waitMetric(t, r, `plurenet_relay_handshakes_total{result="ok"}`, 5)
}

func TestPresence(t *testing.T) {
	r := newRelay(t, relayserver.Config{})
	rv := testkit.Admission(1)
	a := connect(t, r, testkit.Key(t), rv)
	bKey := testkit.Key(t)
	b1 := connect(t, r, bKey, rv)
	a.expect(relayproto.TypePeerPresent, b1.key)
	b1.expect(relayproto.TypePeerPresent, a.key)

	// A second connection of the same key is not news to a...
	b2 := connect(t, r, bKey, rv)
	b2.expect(relayproto.TypePeerPresent, a.key)
	// ...and neither is the first one going while the second stays.
	b1.ws.Close(websocket.StatusNormalClosure, "")
	testkit.Eventually(t, "b1 gone", func() bool { return r.srv.Stats().Connections == 2 })
	b2.send(a.key, "still here")
	a.expect(relayproto.TypeRecv, b2.key)
	// The last one going is.
	b2.ws.Close(websocket.StatusNormalClosure, "")
	a.expect(relayproto.TypePeerGone, b2.key)
	testkit.Eventually(t, "b2 gone", func() bool { return r.srv.Stats().Connections == 1 })
	a.ws.Close(websocket.StatusNormalClosure, "")
	testkit.Eventually(t, "room empty", func() bool { st := r.srv.Stats(); return st.Connections == 0 && st.Rendezvous == 0 })
}

func TestHandshakeRefused(t *testing.T) {
	r := newRelay(t, relayserver.Config{})
	rv := testkit.Admission(7)
	victim := testkit.Key(t)
	attacker := testkit.Key(t)

	// A hello recorded on an honest connection, to replay below.
	var recorded []byte
	{
		ws := dialWS(t, r.url, nil)
		sh := readServerHello(t, ws)
		ch := answer(t, sh, victim, victim, rv)
		recorded = ch.Append(nil)
		writeMsg(t, ws, recorded)
		if b, err := readMsg(t, ws); err != nil || b[0] != byte(relayproto.TypeWelcome) {
			t.Fatalf("honest handshake: %x, %v", b, err)
		}
		ws.Close(websocket.StatusNormalClosure, "")
	}

	tests := []struct {
		name   string
		hello  func(sh relayproto.ServerHello) []byte
		code   relayproto.ErrorCode
		status websocket.StatusCode
		result string
	}{
		{"impersonation", func(sh relayproto.ServerHello) []byte {
			// Claims the victim's key with a MAC keyed by the attacker's.
			ch := answer(t, sh, victim, attacker, rv)
			return ch.Append(nil)
		}, relayproto.ErrAuthFailed, websocket.StatusPolicyViolation, "auth_failed"},
		{"replayed hello", func(relayproto.ServerHello) []byte { return recorded },
			relayproto.ErrAuthFailed, websocket.StatusPolicyViolation, "auth_failed"},
		{"rendezvous swapped after signing", func(sh relayproto.ServerHello) []byte {
			ch := answer(t, sh, victim, victim, rv)
			ch.Rendezvous = testkit.Admission(8).Rendezvous()
			return ch.Append(nil)
		}, relayproto.ErrAuthFailed, websocket.StatusPolicyViolation, "auth_failed"},
		{"admission key swapped after signing", func(sh relayproto.ServerHello) []byte {
			ch := answer(t, sh, victim, victim, rv)
			other := answer(t, sh, victim, victim, testkit.Admission(8))
			ch.Admission, ch.Rendezvous = other.Admission, other.Rendezvous
			return ch.Append(nil)
		}, relayproto.ErrAuthFailed, websocket.StatusPolicyViolation, "auth_failed"},
		{"low-order key", func(sh relayproto.ServerHello) []byte {
			ch := answer(t, sh, attacker, attacker, rv)
			ch.ClientKey = relayproto.Key{}
			return ch.Append(nil)
		}, relayproto.ErrAuthFailed, websocket.StatusPolicyViolation, "auth_failed"},
		{"version 1 in a v2 hello", func(sh relayproto.ServerHello) []byte {
			ch := answer(t, sh, victim, victim, rv)
			ch.Version = 1
			return ch.Append(nil)
		}, relayproto.ErrBadVersion, websocket.StatusProtocolError, "bad_version"},
		{"truncated hello", func(sh relayproto.ServerHello) []byte {
			ch := answer(t, sh, victim, victim, rv)
			return ch.Append(nil)[:50]
		}, relayproto.ErrBadFrame, websocket.StatusProtocolError, "bad_frame"},
		{"data before hello", func(relayproto.ServerHello) []byte {
			return relayproto.AppendSend(nil, victim.Public(), []byte("x"))
		}, relayproto.ErrBadFrame, websocket.StatusProtocolError, "bad_frame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, r, `plurenet_relay_handshakes_total{result="`+tt.result+`"}`)
			ws := dialWS(t, r.url, nil)
			sh := readServerHello(t, ws)
			writeMsg(t, ws, tt.hello(sh))
			if fs := expectClose(t, ws, tt.code, tt.status); len(fs) != 0 {
				t.Fatalf("frames before the error: %+v", fs)
			}
			testkit.Eventually(t, "handshake metric", func() bool {
				return metric(t, r, `plurenet_relay_handshakes_total{result="`+tt.result+`"}`) == before+1
			})
		})
	}
	// The victim's key is still free: nobody joined as it.
	v := connect(t, r, victim, rv)
	a := connect(t, r, testkit.Key(t), rv)
	v.expect(relayproto.TypePeerPresent, a.key)
}

func TestSubprotocolRequired(t *testing.T) {
	r := newRelay(t, relayserver.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, r.url, &websocket.DialOptions{Subprotocols: []string{"plurenet-relay.v0"}})
	if err == nil {
		t.Fatal("dial without the relay subprotocol succeeded")
	}
	if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("response %v, want 400", resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), relayproto.Subprotocol) {
		t.Fatalf("refusal %q does not name the subprotocol", body)
	}

	plain, err := http.Get(strings.Replace(r.url, "ws:", "http:", 1))
	if err != nil {
		t.Fatal(err)
	}
	plain.Body.Close()
	if plain.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET: %v, want 426", plain.Status)
	}
}

func TestBadFramesAfterHandshake(t *testing.T) {
	r := newRelay(t, relayserver.Config{})
	rv := testkit.Admission(3)
	peer := testkit.Key(t).Public()
	tests := []struct {
		name   string
		typ    websocket.MessageType
		msg    []byte
		code   relayproto.ErrorCode
		status websocket.StatusCode
	}{
		{"empty", websocket.MessageBinary, nil, relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"unknown type", websocket.MessageBinary, []byte{0x7f, 1, 2}, relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"relay-to-client Recv", websocket.MessageBinary, relayproto.AppendRecv(nil, peer, []byte("x")), relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"relay-to-client Drain", websocket.MessageBinary, relayproto.AppendDrain(nil, 1), relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"relay-to-client Error", websocket.MessageBinary, relayproto.AppendError(nil, relayproto.ErrIdle, "x"), relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"second hello", websocket.MessageBinary, (&relayproto.ClientHello{}).Append(nil), relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"short Send", websocket.MessageBinary, []byte{byte(relayproto.TypeSend), 1}, relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"text message", websocket.MessageText, []byte("hello"), relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"oversized message", websocket.MessageBinary, make([]byte, relayproto.MaxFrame+1), relayproto.ErrFrameTooLarge, websocket.StatusMessageTooBig},
		{"huge message", websocket.MessageBinary, make([]byte, 1<<20), relayproto.ErrFrameTooLarge, websocket.StatusMessageTooBig},
		{"broadcast payload over MaxPayload", websocket.MessageBinary, relayproto.AppendBroadcast(nil, make([]byte, relayproto.MaxPayload+1)), relayproto.ErrFrameTooLarge, websocket.StatusMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := connect(t, r, testkit.Key(t), rv)
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			if err := c.ws.Write(ctx, tt.typ, tt.msg); err != nil {
				t.Fatal(err)
			}
			expectClose(t, c.ws, tt.code, tt.status)
		})
	}
	// The relay still serves everyone else, and full-size frames pass.
	a := connect(t, r, testkit.Key(t), rv)
	b := connect(t, r, testkit.Key(t), rv)
	a.expect(relayproto.TypePeerPresent, b.key)
	big := strings.Repeat("x", relayproto.MaxPayload)
	a.send(b.key, big)
	b.expect(relayproto.TypePeerPresent, a.key)
	if f := b.expect(relayproto.TypeRecv, a.key); len(f.Payload) != relayproto.MaxPayload {
		t.Fatalf("full-size payload arrived with %d bytes", len(f.Payload))
	}
	a.broadcast(big)
	b.expect(relayproto.TypeBroadcastRecv, a.key)
	// Frames around the size of the buffer the relay reads into first and
	// forwards in (2048 bytes) arrive byte for byte, as do the rest.
	const hdr = 1 + relayproto.KeySize
	for i, n := range []int{0, 1, 1400, 2048 - hdr - 1, 2048 - hdr, 2048 - hdr + 1, 9032} {
		p := strings.Repeat(string(rune('a'+i)), n)
		a.send(b.key, p)
		if f := b.expect(relayproto.TypeRecv, a.key); string(f.Payload) != p {
			t.Fatalf("%d-byte payload arrived as %d bytes %.8q...", n, len(f.Payload), f.Payload)
		}
	}
}

func TestClosedServerRefuses(t *testing.T) {
	r := newRelay(t, relayserver.Config{})
	c := connect(t, r, testkit.Key(t), testkit.Admission(1))
	if err := r.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.srv.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := c.tryNext(); err == nil {
		t.Fatal("connection survived Close")
	}
	if st := r.srv.Stats(); st.Connections != 0 {
		t.Fatalf("after Close: %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, r.url, &websocket.DialOptions{Subprotocols: []string{relayproto.Subprotocol}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after Close: %v, %v; want 503", resp, err)
	}
}

func TestConfigRejected(t *testing.T) {
	tests := []relayserver.Config{
		{PingInterval: 10, IdleTimeout: 5},
		{MaxConns: -1},
		{SendQueueBytes: 100},
		{WriteTimeout: -1},
		// Unlimited is the one spelling of "no limit".
		{RateBytesPerSec: -2},
		{MaxConnsPerIP: -100},
		{HandshakeRatePerIP: -0.5},
		{MaxConnsPer56: -2},
		{HandshakeRatePer48: -4},
	}
	for i, cfg := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if _, err := relayserver.New(cfg); err == nil {
				t.Fatalf("New(%+v) accepted", cfg)
			}
		})
	}
}
