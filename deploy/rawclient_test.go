package deploy_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/transports/relay"
)

// raw is a hand-driven relay connection, for what the real client never
// does (impersonate, send oversized or malformed frames) and for checking
// frames byte for byte.
type raw struct {
	t  *testing.T
	ws *websocket.Conn
	sh relayproto.ServerHello
}

// dialRaw opens a WebSocket offering the subprotocol and reads ServerHello.
func dialRaw(t *testing.T, tg *target) *raw {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, tg.url, &websocket.DialOptions{Subprotocols: []string{relayproto.Subprotocol}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", tg.url, err, status)
	}
	if ws.Subprotocol() != relayproto.Subprotocol {
		t.Fatalf("relay selected subprotocol %q, want %q", ws.Subprotocol(), relayproto.Subprotocol)
	}
	ws.SetReadLimit(4 * relayproto.MaxFrame)
	t.Cleanup(func() { ws.CloseNow() })
	r := &raw{t: t, ws: ws}
	b, err := r.read()
	if err != nil {
		t.Fatalf("reading ServerHello: %v", err)
	}
	if r.sh, err = relayproto.ParseServerHello(b); err != nil {
		t.Fatalf("ServerHello %x: %v", b, err)
	}
	if r.sh.Version != relayproto.Version || r.sh.Flags&^relayproto.FlagBatches != 0 {
		t.Fatalf("ServerHello version %d flags %#x, want %d and no flag but FlagBatches", r.sh.Version, r.sh.Flags, relayproto.Version)
	}
	return r
}

func (r *raw) read() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	typ, b, err := r.ws.Read(ctx)
	if err == nil && typ != websocket.MessageBinary {
		r.t.Fatalf("relay sent a %v message %q; frames are binary", typ, b)
	}
	return b, err
}

func (r *raw) write(b []byte) {
	r.t.Helper()
	r.writeType(websocket.MessageBinary, b)
}

func (r *raw) writeType(typ websocket.MessageType, b []byte) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := r.ws.Write(ctx, typ, b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// hello builds the ClientHello for key priv in the mesh of adm, with the
// MAC keyed by macKey's shared secret: priv itself for an honest client.
func (r *raw) hello(priv, macKey nodekey.Private, adm relayproto.AdmissionKey) relayproto.ClientHello {
	r.t.Helper()
	ch, err := relayproto.NewClientHello(r.sh, priv, adm)
	if err != nil {
		r.t.Fatal(err)
	}
	if macKey != priv {
		ch.MAC = r.mac(macKey, ch)
	}
	return ch
}

// transcript is what the proofs of ch on this connection cover.
func (r *raw) transcript(ch relayproto.ClientHello) relayproto.Transcript {
	return relayproto.Transcript{ServerKey: r.sh.ServerKey, Challenge: r.sh.Challenge, ClientKey: ch.ClientKey, Admission: ch.Admission, Rendezvous: ch.Rendezvous}
}

// mac is the MAC of ch on this connection keyed by key's shared secret.
func (r *raw) mac(key nodekey.Private, ch relayproto.ClientHello) [relayproto.MACSize]byte {
	r.t.Helper()
	shared, err := key.SharedSecret(r.sh.ServerKey)
	if err != nil {
		r.t.Fatal(err)
	}
	tr := r.transcript(ch)
	return tr.MAC(shared)
}

// join completes the handshake honestly and returns the Welcome.
func (r *raw) join(priv nodekey.Private, rv relayproto.AdmissionKey) relayproto.Welcome {
	r.t.Helper()
	ch := r.hello(priv, priv, rv)
	r.write(ch.Append(nil))
	b, err := r.read()
	if err != nil {
		r.t.Fatalf("reading Welcome: %v", err)
	}
	w, err := relayproto.ParseWelcome(b)
	if err != nil {
		if f, perr := relayproto.Parse(b); perr == nil && f.Type == relayproto.TypeError {
			r.t.Fatalf("handshake refused: %v: %s", f.Code, f.Message)
		}
		r.t.Fatalf("Welcome %x: %v", b, err)
	}
	return w
}

// connect dials and joins.
func connect(t *testing.T, tg *target, priv nodekey.Private, rv relayproto.AdmissionKey) *raw {
	t.Helper()
	r := dialRaw(t, tg)
	r.join(priv, rv)
	return r
}

// next returns the next frame.
func (r *raw) next() relayproto.Frame {
	r.t.Helper()
	b, err := r.read()
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	f, err := relayproto.Parse(b)
	if err != nil {
		r.t.Fatalf("relay sent a bad frame %x: %v", b, err)
	}
	f.Payload = append([]byte(nil), f.Payload...)
	return f
}

// expect returns the next frame, failing unless it has type typ (and key k
// when k is not zero).
func (r *raw) expect(typ relayproto.Type, k relayproto.Key) relayproto.Frame {
	r.t.Helper()
	f := r.next()
	if f.Type != typ || (!k.IsZero() && f.Key != k) {
		r.t.Fatalf("got %v key %v (%+v), want %v key %v", f.Type, f.Key.ShortString(), f, typ, k.ShortString())
	}
	return f
}

// expectFatal reads frames until an Error frame, which must carry code,
// then expects the WebSocket to close with status.
func (r *raw) expectFatal(code relayproto.ErrorCode, status websocket.StatusCode) {
	r.t.Helper()
	for {
		b, err := r.read()
		if err != nil {
			r.t.Fatalf("connection ended (%v) before an Error frame with %v", err, code)
		}
		f, err := relayproto.Parse(b)
		if err != nil {
			r.t.Fatalf("relay sent a bad frame %x: %v", b, err)
		}
		if f.Type != relayproto.TypeError {
			continue
		}
		if f.Code != code {
			r.t.Fatalf("Error frame code %v (%q), want %v", f.Code, f.Message, code)
		}
		if f.Message == "" {
			r.t.Fatalf("Error frame %v has no message", code)
		}
		break
	}
	r.expectClose(status)
}

// expectClose reads until the connection ends, which must be a close with
// status; frames before it are ignored.
func (r *raw) expectClose(status websocket.StatusCode) {
	r.t.Helper()
	for {
		_, err := r.read()
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != status {
			r.t.Fatalf("connection ended with %v (status %v), want close status %v", err, got, status)
		}
		return
	}
}

// dialStatus attempts an upgrade with the given subprotocols and returns the
// HTTP status of the refusal (or 101 if it was accepted).
func dialStatus(t *testing.T, url string, subprotocols []string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: subprotocols})
	if err == nil {
		ws.CloseNow()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return resp.StatusCode
}

// newClient starts a transports/relay client, closed at test end.
func newClient(t *testing.T, tg *target, priv nodekey.Private, rv relayproto.AdmissionKey) *relay.Client {
	t.Helper()
	c, err := relay.New(relay.Config{URL: tg.url, PrivateKey: priv, Admission: rv, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("%v (status %+v)", err, c.Status())
	}
	return c
}

// recvMatch returns the first message for which match is true, discarding
// others.
func recvMatch(t *testing.T, c *relay.Client, what string, match func(relay.Message) bool) relay.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v (status %+v)", what, err, c.Status())
		}
		if match(m) {
			return m
		}
	}
}

func waitKind(t *testing.T, c *relay.Client, kind relay.Kind, from nodekey.Public) relay.Message {
	t.Helper()
	return recvMatch(t, c, kind.String()+" from "+from.ShortString(), func(m relay.Message) bool {
		return m.Kind == kind && m.From == from
	})
}

// waitPresent waits until c has been told that every key in keys is
// present, in whatever order the relay announces them.
func waitPresent(t *testing.T, c *relay.Client, keys ...nodekey.Private) {
	t.Helper()
	want := make(map[nodekey.Public]bool, len(keys))
	for _, k := range keys {
		want[k.Public()] = true
	}
	recvMatch(t, c, fmt.Sprintf("PeerPresent of %d keys", len(keys)), func(m relay.Message) bool {
		if m.Kind == relay.KindPeerPresent {
			delete(want, m.From)
		}
		return len(want) == 0
	})
}

// recvData returns the next data message, skipping presence changes.
func recvData(t *testing.T, c *relay.Client) relay.Message {
	t.Helper()
	return recvMatch(t, c, "a data message", func(m relay.Message) bool {
		return m.Kind == relay.KindUnicast || m.Kind == relay.KindBroadcast
	})
}
