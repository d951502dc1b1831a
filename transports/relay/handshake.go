package relay

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
)

// ErrRelayV1 means the relay speaks protocol v1, which cannot check that a
// client holds the mesh secret; this client speaks v2 only.
var ErrRelayV1 = errors.New("relay speaks " + relayproto.SubprotocolV1 + ", an older protocol than this plurenet's " + relayproto.Subprotocol + ": the relay must be upgraded")

// DialWebSocket opens a WebSocket to the relay at rawURL (ws:// or wss://,
// with its path) and checks that the relay chose relayproto.Subprotocol.
// hc carries the connection (proxy, TLS); nil means http.DefaultClient.
//
// It offers relayproto.SubprotocolV1 as well, after v2: a v2 relay picks
// v2, and an old relay picks v1 instead of refusing the upgrade with a bare
// HTTP 400, so that the user is told the relay needs upgrading
// (ErrRelayV1). Nothing of v1 is ever spoken.
//
// This and Handshake are the one client handshake: the Client and
// "plurenet relay-bench" both use them.
func DialWebSocket(ctx context.Context, rawURL string, hc *http.Client) (*websocket.Conn, error) {
	ws, resp, err := websocket.Dial(ctx, rawURL, &websocket.DialOptions{
		HTTPClient:   hc,
		Subprotocols: []string{relayproto.Subprotocol, relayproto.SubprotocolV1},
		// Payloads are encrypted: compression would cost CPU for nothing.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != 0 {
			return nil, fmt.Errorf("dial: HTTP %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	switch p := ws.Subprotocol(); p {
	case relayproto.Subprotocol:
	case relayproto.SubprotocolV1:
		ws.Close(websocket.StatusProtocolError, "this client speaks "+relayproto.Subprotocol)
		return nil, fmt.Errorf("handshake: %w", ErrRelayV1)
	default:
		ws.CloseNow()
		return nil, fmt.Errorf("handshake: relay chose subprotocol %q, want %q", p, relayproto.Subprotocol)
	}
	ws.SetReadLimit(relayproto.MaxFrame)
	return ws, nil
}

// Joined is what the relay said in a handshake that admitted the client.
type Joined struct {
	relayproto.Welcome
	// Batches: the relay takes SendBatch and AcceptBatches frames
	// (relayproto.FlagBatches in its ServerHello).
	Batches bool
}

// Handshake runs the client side of the relay handshake (docs/protocol.md
// §1.3) on ws, which DialWebSocket opened: it answers the relay's challenge
// as the node key key, admitted by the mesh's admission key adm, and returns
// what the relay said. The relay's PeerPresent burst follows on ws. A
// refusal by the relay is returned as a *RelayError.
func Handshake(ctx context.Context, ws *websocket.Conn, key nodekey.Private, adm relayproto.AdmissionKey) (Joined, error) {
	var j Joined
	b, err := readHandshakeFrame(ctx, ws)
	if err != nil {
		return j, fmt.Errorf("handshake: reading ServerHello: %w", err)
	}
	hello, err := relayproto.ParseServerHello(b)
	if err != nil {
		return j, fmt.Errorf("handshake: %w", refusalOr(b, fmt.Errorf("parsing ServerHello: %w", err)))
	}
	if hello.Version != relayproto.Version {
		return j, fmt.Errorf("handshake: relay speaks protocol version %d, want %d", hello.Version, relayproto.Version)
	}
	ch, err := relayproto.NewClientHello(hello, key, adm)
	if err != nil {
		return j, fmt.Errorf("handshake: %w", err)
	}
	if err := ws.Write(ctx, websocket.MessageBinary, ch.Append(nil)); err != nil {
		return j, fmt.Errorf("handshake: writing ClientHello: %w", err)
	}
	b, err = readHandshakeFrame(ctx, ws)
	if err != nil {
		return j, fmt.Errorf("handshake: reading Welcome: %w", err)
	}
	j.Welcome, err = relayproto.ParseWelcome(b)
	if err != nil {
		return j, fmt.Errorf("handshake: %w", refusalOr(b, fmt.Errorf("parsing Welcome: %w", err)))
	}
	j.Batches = hello.Flags&relayproto.FlagBatches != 0
	return j, nil
}

func readHandshakeFrame(ctx context.Context, ws *websocket.Conn) ([]byte, error) {
	typ, b, err := ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageBinary {
		return nil, errors.New("relay sent a text message")
	}
	return b, nil
}

// refusalOr turns an Error frame sent in place of a handshake frame into a
// *RelayError, and returns otherwise for anything else.
func refusalOr(b []byte, otherwise error) error {
	if len(b) > 0 && relayproto.Type(b[0]) == relayproto.TypeError {
		if f, err := relayproto.Parse(b); err == nil {
			return &RelayError{Code: f.Code, Message: f.Message}
		}
	}
	return otherwise
}
