package relay

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

// TestHandshake: the exported handshake admits two members of one mesh to
// one rendezvous, and a refusal arrives as a *RelayError.
func TestHandshake(t *testing.T) {
	r := startRelay(t, relayserver.Config{MaxConnsPerKey: 1}, nil)
	adm := newAdmission(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	join := func(key [32]byte) (*websocket.Conn, error) {
		ws, err := DialWebSocket(ctx, r.url+relayproto.Path, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.CloseNow() })
		w, err := Handshake(ctx, ws, key, adm)
		if err == nil && w.MaxPayload != relayproto.MaxPayload {
			t.Fatalf("Welcome %+v", w)
		}
		return ws, err
	}
	ka, kb := testkit.Key(t), testkit.Key(t)
	if _, err := join(ka); err != nil {
		t.Fatal(err)
	}
	wsB, err := join(kb)
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := wsB.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := relayproto.Parse(b); err != nil || f.Type != relayproto.TypePeerPresent || f.Key != ka.Public() {
		t.Fatalf("second member's first frame = %+v, %v; want PeerPresent of the first", f, err)
	}
	// MaxConnsPerKey is 1: the relay refuses a second connection of ka.
	_, err = join(ka)
	var re *RelayError
	if !errors.As(err, &re) || re.Code != relayproto.ErrTooManyConns || re.Message == "" {
		t.Fatalf("second connection of one key: %v, want a RelayError with ErrTooManyConns", err)
	}
}

// fakeV1Relay accepts only the v1 subprotocol and sends a v1 ServerHello,
// as a relay from before protocol v2 does.
func fakeV1Relay(t *testing.T) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Sec-WebSocket-Protocol"), relayproto.SubprotocolV1) {
			http.Error(w, "plurenet relay: the client must offer WebSocket subprotocol "+relayproto.SubprotocolV1, http.StatusBadRequest)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{relayproto.SubprotocolV1}})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		hello := relayproto.ServerHello{Version: 1, ServerKey: testkit.Key(t).Public()}
		if err := ws.Write(r.Context(), websocket.MessageBinary, hello.Append(nil)); err != nil {
			return
		}
		_, _, _ = ws.Read(r.Context()) // until the client goes
	}))
	t.Cleanup(ts.Close)
	return "ws" + strings.TrimPrefix(ts.URL, "http") + relayproto.Path
}

// TestOldRelay: against a v1 relay the client fails with one error that
// says the relay needs upgrading, and never connects.
func TestOldRelay(t *testing.T) {
	url := fakeV1Relay(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := DialWebSocket(ctx, url, nil); !errors.Is(err, ErrRelayV1) {
		t.Fatalf("DialWebSocket to a v1 relay: %v, want ErrRelayV1", err)
	}
	c := newClient(t, Config{URL: url, Admission: newAdmission(t)})
	testkit.Eventually(t, "a failed attempt", func() bool { return c.Status().LastError != "" })
	if st := c.Status(); st.Connected || !strings.Contains(st.LastError, relayproto.SubprotocolV1) || !strings.Contains(st.LastError, "must be upgraded") {
		t.Fatalf("status %+v, want not connected and an error saying the v1 relay must be upgraded", st)
	}
}
