package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/transports/relay"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scenario is one behaviour of docs/protocol.md, Part 1, checked the same
// way on every implementation.
type scenario struct {
	name string
	opts options
	run  func(t *testing.T, tg *target)
}

var scenarios = []scenario{
	{name: "http endpoints", run: testHTTP},
	{name: "handshake", run: testHandshake},
	{name: "impersonation refused", run: testAuth},
	{name: "rendezvous alone does not admit", run: testAdmission},
	{name: "v1 client told to upgrade", run: testV1Client},
	{name: "malformed frames refused", run: testBadFrames},
	{name: "unicast both ways", run: testUnicast},
	{name: "batch frames", run: testBatches},
	{name: "broadcast", run: testBroadcast},
	{name: "presence", run: testPresence},
	{name: "oversized frames refused", run: testOversized},
	{name: "connections per key", run: testTooManyConns},
	{name: "leave flushes and closes", run: testLeaveFlushes},
	{name: "drain on SIGTERM", opts: options{drainGrace: 3 * time.Second}, run: testDrainOnStop},
	{name: "connection lifetime", opts: options{lifetime: time.Second, drainGrace: time.Second}, run: testLifetime},
	{name: "make-before-break at lifetime", opts: options{lifetime: 2 * time.Second, drainGrace: 2 * time.Second}, run: testLifetimeSwitch},
	{name: "metrics not on the relay listener", opts: options{metrics: true}, run: testMetricsNotPublic},
	{name: "members per rendezvous", opts: options{maxMembers: 3}, run: testMembersCap},
	{name: "snapshot before later presence", run: testSnapshotOrder},
	{name: "broadcast charged per receiver", opts: options{rate: 1000, rateBurst: 100_000}, run: testBroadcastCharged},
	{name: "IPv6 /56 and /48 limits", opts: options{perIP: 1, trustProxy: true}, run: testPrefixLimits},
	{name: "stalled reader cut", opts: options{writeTimeout: stallWriteTimeout}, run: testWriteStall},
}

// TestConformance runs every scenario against every implementation, each
// on a fresh relay instance.
func TestConformance(t *testing.T) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					sc.run(t, im.start(t, sc.opts))
				})
			}
		})
	}
}

func testHTTP(t *testing.T, tg *target) {
	if code, body := get(t, tg.base+"/healthz"); code != http.StatusOK || body != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", code, body)
	}
	if code, _ := get(t, tg.base+relayproto.Path); code != http.StatusUpgradeRequired {
		t.Errorf("GET %s without Upgrade = %d, want 426", relayproto.Path, code)
	}
	if code := dialStatus(t, tg.url, nil); code != http.StatusBadRequest {
		t.Errorf("upgrade without the subprotocol = %d, want 400", code)
	}
	if code := dialStatus(t, tg.url, []string{"plurenet-relay.v0"}); code != http.StatusBadRequest {
		t.Errorf("upgrade offering another version only = %d, want 400", code)
	}
	if code := dialStatus(t, tg.url, []string{"plurenet-relay.v0", relayproto.Subprotocol}); code != http.StatusSwitchingProtocols {
		t.Errorf("upgrade offering v0 and v2 = %d, want 101", code)
	}
	// A client offering v1 and v2, as ours do, gets v2.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, tg.url, &websocket.DialOptions{Subprotocols: []string{relayproto.SubprotocolV1, relayproto.Subprotocol}})
	if err != nil {
		t.Fatalf("upgrade offering v1 and v2: %v", err)
	}
	defer ws.CloseNow()
	if ws.Subprotocol() != relayproto.Subprotocol {
		t.Errorf("upgrade offering v1 and v2 chose %q, want %q", ws.Subprotocol(), relayproto.Subprotocol)
	}
}

func testHandshake(t *testing.T, tg *target) {
	rv := testkit.Admission(1)
	a := dialRaw(t, tg)
	b := dialRaw(t, tg)
	if a.sh.Challenge == b.sh.Challenge {
		t.Fatal("two connections got the same challenge; it must be fresh per connection")
	}
	if a.sh.ServerKey != b.sh.ServerKey || a.sh.ServerKey.IsZero() {
		t.Fatalf("relay keys %v and %v: want one non-zero key per instance", a.sh.ServerKey, b.sh.ServerKey)
	}
	ka, kb := testkit.Key(t), testkit.Key(t)
	w := a.join(ka, rv)
	if w.MaxPayload != relayproto.MaxPayload || w.LifetimeSecs != 0 {
		t.Errorf("Welcome = %+v, want MaxPayload %d and no lifetime", w, relayproto.MaxPayload)
	}
	b.join(kb, rv)
	// The joiner learns who is there; the others learn of the joiner.
	b.expect(relayproto.TypePeerPresent, ka.Public())
	a.expect(relayproto.TypePeerPresent, kb.Public())
}

func testAuth(t *testing.T, tg *target) {
	rv := testkit.Admission(2)
	victim, attacker := testkit.Key(t), testkit.Key(t)
	cases := []struct {
		name  string
		hello func(r *raw) relayproto.ClientHello
	}{
		{"MAC keyed by another key", func(r *raw) relayproto.ClientHello {
			return r.hello(victim, attacker, rv)
		}},
		{"low-order client key", func(r *raw) relayproto.ClientHello {
			h := r.hello(attacker, attacker, rv)
			h.ClientKey, h.MAC = relayproto.Key{}, [32]byte{1, 2, 3}
			return h
		}},
		{"hello moved to another rendezvous", func(r *raw) relayproto.ClientHello {
			h := r.hello(victim, victim, rv)
			h.Rendezvous = testkit.Admission(3).Rendezvous()
			return h
		}},
		{"hello moved to another mesh", func(r *raw) relayproto.ClientHello {
			h := r.hello(victim, victim, rv)
			other := r.hello(victim, victim, testkit.Admission(3))
			h.Admission, h.Rendezvous = other.Admission, other.Rendezvous
			return h
		}},
		{"hello replayed from another connection", func(r *raw) relayproto.ClientHello {
			other := dialRaw(t, tg)
			return other.hello(victim, victim, rv)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, tg)
			h := tc.hello(r)
			r.write(h.Append(nil))
			r.expectFatal(relayproto.ErrAuthFailed, websocket.StatusPolicyViolation)
		})
	}
}

// testAdmission is issue 9 item 4: a client that knows a mesh's
// rendezvous, and even its admission public key (both travel in every
// member's hello: the relay operator, an observer of a ws:// link and a
// former member after a change of secret all have them), but not the
// secret, can neither join nor send. Under protocol v1 the rendezvous alone
// admitted any key.
func testAdmission(t *testing.T, tg *target) {
	mesh := testkit.Admission(15)
	member := connect(t, tg, testkit.Key(t), mesh)
	// What the attacker saw: a member's hello on another connection.
	seen := dialRaw(t, tg).hello(testkit.Key(t), testkit.Key(t), mesh)
	attacker, own := testkit.Key(t), testkit.Admission(99)
	cases := []struct {
		name  string
		hello func(r *raw) relayproto.ClientHello
	}{
		{"the rendezvous with an admission key of its own", func(r *raw) relayproto.ClientHello {
			// Both proofs honest for what it sends: only the check that
			// the rendezvous is the admission key's hash stops it.
			h := r.hello(attacker, attacker, own)
			h.Rendezvous = mesh.Rendezvous()
			h.MAC = r.mac(attacker, h)
			tr := r.transcript(h)
			h.Signature = tr.Sign(own)
			return h
		}},
		{"a signature replayed from another challenge", func(r *raw) relayproto.ClientHello {
			h := r.hello(attacker, attacker, own)
			h.Admission, h.Rendezvous, h.Signature = seen.Admission, seen.Rendezvous, seen.Signature
			h.MAC = r.mac(attacker, h) // its own key, honestly proved
			return h
		}},
		{"the admission key signed by another key", func(r *raw) relayproto.ClientHello {
			h := r.hello(attacker, attacker, own)
			h.Admission, h.Rendezvous = seen.Admission, seen.Rendezvous
			h.MAC = r.mac(attacker, h)
			tr := r.transcript(h)
			h.Signature = tr.Sign(own)
			return h
		}},
		{"a member's signature under another node key", func(r *raw) relayproto.ClientHello {
			h := r.hello(attacker, attacker, mesh) // what a member would send...
			honest := r.hello(testkit.Key(t), testkit.Key(t), mesh)
			h.Signature = honest.Signature // ...with a signature made for another key
			return h
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, tg)
			h := tc.hello(r)
			r.write(h.Append(nil))
			// And it tries to send into the mesh anyway.
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			_ = r.ws.Write(ctx, websocket.MessageBinary, relayproto.AppendBroadcast(nil, []byte("garbage")))
			r.expectFatal(relayproto.ErrAuthFailed, websocket.StatusPolicyViolation)
		})
	}
	// The member heard nothing of it: the next frame it gets is an honest
	// joiner's PeerPresent, then that joiner's data.
	kb := testkit.Key(t)
	other := connect(t, tg, kb, mesh)
	member.expect(relayproto.TypePeerPresent, kb.Public())
	other.write(relayproto.AppendBroadcast(nil, []byte("after")))
	if f := member.expect(relayproto.TypeBroadcastRecv, kb.Public()); string(f.Payload) != "after" {
		t.Fatalf("member got %q", f.Payload)
	}
}

// testV1Client: a client of protocol v1 offers only the v1 subprotocol.
// The relay lets it in to send one Error frame, in place of the ServerHello
// that client waits for, naming the version, then closes. A v1 client shows
// an Error frame received during its handshake as the relay's message.
func testV1Client(t *testing.T, tg *target) {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, tg.url, &websocket.DialOptions{Subprotocols: []string{relayproto.SubprotocolV1}})
	if err != nil {
		t.Fatalf("a v1 client's upgrade was refused: %v", err)
	}
	defer ws.CloseNow()
	if ws.Subprotocol() != relayproto.SubprotocolV1 {
		t.Fatalf("relay chose %q for a v1 client", ws.Subprotocol())
	}
	r := &raw{t: t, ws: ws}
	b, err := r.read()
	if err != nil {
		t.Fatalf("v1 client read nothing: %v", err)
	}
	f, err := relayproto.Parse(b)
	if err != nil || f.Type != relayproto.TypeError || f.Code != relayproto.ErrBadVersion {
		t.Fatalf("v1 client's first frame %x (%v), want Error %v", b, err, relayproto.ErrBadVersion)
	}
	if !strings.Contains(f.Message, relayproto.Subprotocol) || !strings.Contains(f.Message, "upgrade plurenet") {
		t.Fatalf("message %q does not name the version and say to upgrade", f.Message)
	}
	r.expectClose(websocket.StatusProtocolError)
}

func testBadFrames(t *testing.T, tg *target) {
	rv := testkit.Admission(4)
	key := testkit.Key(t)
	before := []struct {
		name   string
		frame  func(r *raw) []byte
		code   relayproto.ErrorCode
		status websocket.StatusCode
	}{
		{"Send before the handshake", func(r *raw) []byte { return relayproto.AppendSend(nil, key.Public(), []byte("x")) },
			relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"short ClientHello", func(r *raw) []byte { h := r.hello(key, key, rv); b := h.Append(nil); return b[:len(b)-1] },
			relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"a v1 ClientHello", func(r *raw) []byte { h := r.hello(key, key, rv); b := h.Append(nil); b[1] = 1; return b[:98] },
			relayproto.ErrBadFrame, websocket.StatusProtocolError},
		{"ClientHello version 1", func(r *raw) []byte { h := r.hello(key, key, rv); h.Version = 1; return h.Append(nil) },
			relayproto.ErrBadVersion, websocket.StatusProtocolError},
	}
	for _, tc := range before {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, tg)
			r.write(tc.frame(r))
			r.expectFatal(tc.code, tc.status)
		})
	}
	after := []struct {
		name string
		typ  websocket.MessageType
		b    []byte
	}{
		{"text message", websocket.MessageText, []byte("hello")},
		{"Recv from a client", websocket.MessageBinary, relayproto.AppendRecv(nil, key.Public(), []byte("x"))},
		{"PeerPresent from a client", websocket.MessageBinary, relayproto.AppendPeerPresent(nil, key.Public())},
		{"unknown type", websocket.MessageBinary, []byte{0x7f, 1, 2}},
		{"Send without a whole key", websocket.MessageBinary, []byte{byte(relayproto.TypeSend), 1, 2, 3}},
		{"Leave with a body", websocket.MessageBinary, []byte{byte(relayproto.TypeLeave), 0}},
		{"empty message", websocket.MessageBinary, []byte{}},
	}
	for _, tc := range after {
		t.Run(tc.name, func(t *testing.T) {
			r := connect(t, tg, testkit.Key(t), rv)
			r.writeType(tc.typ, tc.b)
			r.expectFatal(relayproto.ErrBadFrame, websocket.StatusProtocolError)
		})
	}
}

func testUnicast(t *testing.T, tg *target) {
	a, b := meet(t, tg, tg, testkit.Key(t), testkit.Key(t), testkit.Admission(5))
	exchange(t, a, b)
}

// testBatches: a relay that offers batch frames (FlagBatches) forwards a
// SendBatch whole, as a RecvBatch, to a member that sent AcceptBatches, and
// packet by packet, as Recv frames in order, to one that did not; a batch
// with an empty packet is a bad frame. A relay that does not offer them
// refuses them as frames of an unknown type.
func testBatches(t *testing.T, tg *target) {
	rv := testkit.Admission(14)
	ka, kb, kc := testkit.Key(t), testkit.Key(t), testkit.Key(t)
	a := dialRaw(t, tg)
	a.join(ka, rv)
	packets := [][]byte{[]byte("one"), []byte("two!"), bytes.Repeat([]byte{7}, 1400)}
	batch := relayproto.AppendSendBatch(nil, kb.Public())
	for _, p := range packets {
		batch = relayproto.AppendBatchPacket(batch, p)
	}
	if a.sh.Flags&relayproto.FlagBatches == 0 {
		a.write(batch)
		a.expectFatal(relayproto.ErrBadFrame, websocket.StatusProtocolError)
		t.Skip("this relay does not offer batch frames: refused as it should be")
	}
	b := dialRaw(t, tg)
	b.join(kb, rv)
	c := dialRaw(t, tg)
	c.join(kc, rv)
	b.write(relayproto.AppendAcceptBatches(nil))
	// Frames from one connection are handled in order: once a has b's
	// Send, the relay has taken b's AcceptBatches.
	b.write(relayproto.AppendSend(nil, ka.Public(), []byte("ready")))
	for f := a.next(); f.Type != relayproto.TypeRecv; f = a.next() {
	}
	a.write(batch)
	for {
		f := b.next()
		if f.Type == relayproto.TypePeerPresent {
			continue
		}
		if f.Type != relayproto.TypeRecvBatch || f.Key != ka.Public() || f.Count != len(packets) {
			t.Fatalf("b, which accepts batches, got %v from %v with %d packets; want a RecvBatch from a with %d", f.Type, f.Key.ShortString(), f.Count, len(packets))
		}
		rest := f.Payload
		for i, want := range packets {
			var p []byte
			p, rest = relayproto.NextPacket(rest)
			if !bytes.Equal(p, want) {
				t.Fatalf("b: packet %d is %q, want %q", i, p, want)
			}
		}
		break
	}
	batch = relayproto.Forwarded(batch, kc.Public()) // to c: a Send header again
	batch[0] = byte(relayproto.TypeSendBatch)
	a.write(batch)
	for i := 0; i < len(packets); {
		f := c.next()
		if f.Type == relayproto.TypePeerPresent {
			continue
		}
		if f.Type != relayproto.TypeRecv || f.Key != ka.Public() || !bytes.Equal(f.Payload, packets[i]) {
			t.Fatalf("c, which does not accept batches, got %v from %v %.8q as packet %d; want a Recv from a with %.8q", f.Type, f.Key.ShortString(), f.Payload, i, packets[i])
		}
		i++
	}
	bad := relayproto.AppendBatchPacket(relayproto.AppendSendBatch(nil, kb.Public()), []byte("x"))
	a.write(append(bad, 0, 0)) // an empty packet after it
	a.expectFatal(relayproto.ErrBadFrame, websocket.StatusProtocolError)
}

// meet connects a client with key ka to ta and one with kb to tb, in
// rendezvous rv, and waits until each sees the other present.
func meet(t *testing.T, ta, tb *target, ka, kb nodekey.Private, rv relayproto.AdmissionKey) (a, b *relay.Client) {
	t.Helper()
	a = newClient(t, ta, ka, rv)
	b = newClient(t, tb, kb, rv)
	waitKind(t, a, relay.KindPeerPresent, kb.Public())
	waitKind(t, b, relay.KindPeerPresent, ka.Public())
	return a, b
}

// exchange sends one frame each way between a and b, which already see each
// other present, and checks source, kind and payload.
func exchange(t *testing.T, a, b *relay.Client) {
	t.Helper()
	for _, d := range []struct{ from, to *relay.Client }{{a, b}, {b, a}} {
		payload := fmt.Sprintf("%s to %s", d.from.PublicKey().ShortString(), d.to.PublicKey().ShortString())
		if err := d.from.Send(d.to.PublicKey(), []byte(payload)); err != nil {
			t.Fatalf("Send: %v", err)
		}
		m := recvData(t, d.to)
		if m.Kind != relay.KindUnicast || m.From != d.from.PublicKey() || string(m.Payload) != payload {
			t.Fatalf("received %v from %v %q, want unicast from %v %q", m.Kind, m.From.ShortString(), m.Payload, d.from.PublicKey().ShortString(), payload)
		}
	}
}

func testBroadcast(t *testing.T, tg *target) {
	rv := testkit.Admission(6)
	keys := []nodekey.Private{testkit.Key(t), testkit.Key(t), testkit.Key(t)}
	var cs []*relay.Client
	for _, k := range keys {
		cs = append(cs, newClient(t, tg, k, rv))
	}
	for i, c := range cs {
		others := append(append([]nodekey.Private(nil), keys[:i]...), keys[i+1:]...)
		waitPresent(t, c, others...)
	}
	broadcastAll(t, cs)
}

// broadcastAll has each client broadcast in turn and checks that every other
// client, and not the sender, receives it.
func broadcastAll(t *testing.T, cs []*relay.Client) {
	t.Helper()
	for i, from := range cs {
		payload := fmt.Sprintf("broadcast %d", i)
		if err := from.Broadcast([]byte(payload)); err != nil {
			t.Fatalf("Broadcast: %v", err)
		}
		for j, to := range cs {
			if i == j {
				continue
			}
			m := recvData(t, to)
			if m.Kind != relay.KindBroadcast || m.From != from.PublicKey() || string(m.Payload) != payload {
				t.Fatalf("client %d received %v from %v %q, want broadcast from %v %q (a sender must not get its own)",
					j, m.Kind, m.From.ShortString(), m.Payload, from.PublicKey().ShortString(), payload)
			}
		}
	}
}

func testPresence(t *testing.T, tg *target) {
	rv := testkit.Admission(7)
	ka := testkit.Key(t)
	a := newClient(t, tg, ka, rv)
	t.Run("polite leave", func(t *testing.T) {
		kb := testkit.Key(t)
		b := newClient(t, tg, kb, rv)
		waitKind(t, a, relay.KindPeerPresent, kb.Public())
		waitKind(t, b, relay.KindPeerPresent, ka.Public())
		b.Close() // flushes and sends Leave
		waitKind(t, a, relay.KindPeerGone, kb.Public())
	})
	t.Run("connection dropped", func(t *testing.T) {
		kc := testkit.Key(t)
		c := connect(t, tg, kc, rv)
		waitKind(t, a, relay.KindPeerPresent, kc.Public())
		c.ws.CloseNow()
		waitKind(t, a, relay.KindPeerGone, kc.Public())
	})
}

func testOversized(t *testing.T, tg *target) {
	rv := testkit.Admission(8)
	cases := []struct {
		name  string
		frame func(dst relayproto.Key) []byte
		// errorFrame: the Error frame is required before the close. A
		// message far over the limit may be refused by the WebSocket layer
		// while it reads the header (the Node relay's ws does), with close
		// 1009 alone.
		errorFrame bool
	}{
		{"Send one byte over MaxFrame", func(dst relayproto.Key) []byte {
			return relayproto.AppendSend(nil, dst, make([]byte, relayproto.MaxPayload+1))
		}, true},
		{"Broadcast payload one byte over MaxPayload", func(relayproto.Key) []byte {
			return relayproto.AppendBroadcast(nil, make([]byte, relayproto.MaxPayload+1))
		}, true},
		{"three times MaxFrame", func(dst relayproto.Key) []byte {
			return relayproto.AppendSend(nil, dst, make([]byte, 3*relayproto.MaxFrame))
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := testkit.Key(t)
			r := connect(t, tg, k, rv)
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			// The relay may close before it has read the whole message;
			// the write error is then expected and the close tells.
			_ = r.ws.Write(ctx, websocket.MessageBinary, tc.frame(k.Public()))
			if tc.errorFrame {
				r.expectFatal(relayproto.ErrFrameTooLarge, websocket.StatusMessageTooBig)
			} else {
				r.expectClose(websocket.StatusMessageTooBig)
			}
		})
	}
	// A full-size frame is fine.
	a, b := testkit.Key(t), testkit.Key(t)
	ra := connect(t, tg, a, rv)
	rb := connect(t, tg, b, rv)
	ra.expect(relayproto.TypePeerPresent, b.Public())
	payload := make([]byte, relayproto.MaxPayload)
	payload[len(payload)-1] = 0xab
	ra.write(relayproto.AppendSend(nil, b.Public(), payload))
	rb.expect(relayproto.TypePeerPresent, a.Public())
	f := rb.expect(relayproto.TypeRecv, a.Public())
	if len(f.Payload) != relayproto.MaxPayload || f.Payload[len(f.Payload)-1] != 0xab {
		t.Fatalf("full-size payload arrived as %d bytes", len(f.Payload))
	}
}

func testTooManyConns(t *testing.T, tg *target) {
	rv := testkit.Admission(9)
	k := testkit.Key(t)
	const perKey = 4 // the default MaxConnsPerKey of both implementations
	for range perKey {
		connect(t, tg, k, rv)
	}
	r := dialRaw(t, tg)
	h := r.hello(k, k, rv)
	r.write(h.Append(nil))
	r.expectFatal(relayproto.ErrTooManyConns, websocket.StatusTryAgainLater)
	// The same key in another rendezvous is another matter.
	connect(t, tg, k, testkit.Admission(10))
}

func testLeaveFlushes(t *testing.T, tg *target) {
	rv := testkit.Admission(11)
	ka, kb := testkit.Key(t), testkit.Key(t)
	a := connect(t, tg, ka, rv)
	b := connect(t, tg, kb, rv)
	a.expect(relayproto.TypePeerPresent, kb.Public())
	const n = 50
	for i := range n {
		a.write(relayproto.AppendSend(nil, kb.Public(), []byte{byte(i)}))
	}
	// Frames of one connection are handled in order: once a's frame to
	// itself is back, all n are queued for b, which has read none yet.
	a.write(relayproto.AppendSend(nil, ka.Public(), []byte("barrier")))
	if f := a.expect(relayproto.TypeRecv, ka.Public()); string(f.Payload) != "barrier" {
		t.Fatalf("got %q, want the barrier", f.Payload)
	}
	b.write(relayproto.AppendLeave(nil))
	b.expect(relayproto.TypePeerPresent, ka.Public())
	for i := range n {
		f := b.expect(relayproto.TypeRecv, ka.Public())
		if len(f.Payload) != 1 || f.Payload[0] != byte(i) {
			t.Fatalf("frame %d after Leave carried %x", i, f.Payload)
		}
	}
	b.expectClose(websocket.StatusNormalClosure)
	a.expect(relayproto.TypePeerGone, kb.Public())
}

func testDrainOnStop(t *testing.T, tg *target) {
	rv := testkit.Admission(12)
	a := connect(t, tg, testkit.Key(t), rv)
	wait := tg.stop()
	f := a.expect(relayproto.TypeDrain, relayproto.Key{})
	if f.Millis != 3000 {
		t.Errorf("Drain deadline %d ms, want the drain grace, 3000", f.Millis)
	}
	if code, _ := get(t, tg.base+"/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz while draining = %d, want 503", code)
	}
	if code := dialStatus(t, tg.url, []string{relayproto.Subprotocol}); code != http.StatusServiceUnavailable {
		t.Errorf("upgrade while draining = %d, want 503", code)
	}
	a.write(relayproto.AppendLeave(nil))
	a.expectClose(websocket.StatusNormalClosure)
	if err := wait(); err != nil {
		t.Errorf("relay did not stop cleanly: %v", err)
	}
}

func testLifetime(t *testing.T, tg *target) {
	r := dialRaw(t, tg)
	w := r.join(testkit.Key(t), testkit.Admission(13))
	if w.LifetimeSecs != 1 {
		t.Errorf("Welcome lifetime %d s, want 1", w.LifetimeSecs)
	}
	f := r.expect(relayproto.TypeDrain, relayproto.Key{})
	if f.Millis != 1000 {
		t.Errorf("Drain deadline %d ms, want the drain grace, 1000", f.Millis)
	}
	// No Leave: at the deadline the relay closes the connection.
	r.expectFatal(relayproto.ErrServerShutdown, websocket.StatusGoingAway)
}

// testLifetimeSwitch: clients replace a connection before its lifetime ends
// (make-before-break), so peers never see them gone and traffic goes on.
func testLifetimeSwitch(t *testing.T, tg *target) {
	rv := testkit.Admission(14)
	ka, kb := testkit.Key(t), testkit.Key(t)
	a := newClient(t, tg, ka, rv)
	b := newClient(t, tg, kb, rv)
	waitKind(t, a, relay.KindPeerPresent, kb.Public())
	waitKind(t, b, relay.KindPeerPresent, ka.Public())
	deadline := time.Now().Add(patience)
	for a.Status().Reconnects < 1 || b.Status().Reconnects < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("clients did not replace their connections: %+v %+v", a.Status(), b.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, d := range []struct{ from, to *relay.Client }{{a, b}, {b, a}} {
		payload := "after the switch"
		if err := d.from.Send(d.to.PublicKey(), []byte(payload)); err != nil {
			t.Fatalf("Send after the switch: %v", err)
		}
		recvMatch(t, d.to, "the frame sent after the switch", func(m relay.Message) bool {
			if m.Kind == relay.KindPeerGone {
				t.Fatalf("%v was reported gone during a make-before-break switch", m.From.ShortString())
			}
			return m.Kind == relay.KindUnicast && m.From == d.from.PublicKey() && string(m.Payload) == payload
		})
	}
}

// TestBackplane: relay instances sharing one Redis serve one rendezvous,
// whichever implementation each is: members on different instances see each
// other, exchange unicast and broadcast frames, and see each other leave.
func TestBackplane(t *testing.T) {
	pairs := [][2]impl{
		{impls[1], impls[1]}, // node + node
		{impls[0], impls[1]}, // go + node: the two share the Redis design
		{impls[0], impls[0]}, // go + go, the reference
	}
	for _, pair := range pairs {
		t.Run(pair[0].name+"+"+pair[1].name, func(t *testing.T) {
			redisURL := startRedis(t)
			i1 := pair[0].start(t, options{redis: redisURL})
			i2 := pair[1].start(t, options{redis: redisURL})
			rv := testkit.Admission(20)
			ka, kb, kc := testkit.Key(t), testkit.Key(t), testkit.Key(t)
			a, b := meet(t, i1, i2, ka, kb, rv)
			exchange(t, a, b)

			c := newClient(t, i2, kc, rv)
			waitPresent(t, a, kc)
			waitPresent(t, b, kc)
			waitPresent(t, c, ka, kb)
			broadcastAll(t, []*relay.Client{a, b, c})

			b.Close()
			waitKind(t, a, relay.KindPeerGone, kb.Public())
			waitKind(t, c, relay.KindPeerGone, kb.Public())
		})
	}
}
