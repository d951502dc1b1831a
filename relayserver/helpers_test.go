package relayserver_test

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// patience bounds every wait in these tests (testkit.Patience).
const patience = testkit.Patience

type testRelay struct {
	srv     *relayserver.Server
	hs      *httptest.Server
	url     string // ws://127.0.0.1:port/v1/relay
	base    string // http://127.0.0.1:port
	metrics string // http://127.0.0.1:otherport, the metrics listener
}

func newRelay(t testing.TB, cfg relayserver.Config) *testRelay {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv, err := relayserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	ms := httptest.NewServer(srv.MetricsHandler())
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
		ms.Close()
	})
	return &testRelay{srv: srv, hs: hs, base: hs.URL, metrics: ms.URL, url: "ws" + strings.TrimPrefix(hs.URL, "http") + relayproto.Path}
}

// dialWS opens a WebSocket offering the relay subprotocol, closed at test end.
func dialWS(t testing.TB, url string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	opts.Subprotocols = []string{relayproto.Subprotocol}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	ws.SetReadLimit(relayproto.MaxFrame + 64)
	t.Cleanup(func() { ws.CloseNow() })
	return ws
}

func readMsg(t testing.TB, ws *websocket.Conn) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, b, err := ws.Read(ctx)
	return b, err
}

func writeMsg(t testing.TB, ws *websocket.Conn, b []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func readServerHello(t testing.TB, ws *websocket.Conn) relayproto.ServerHello {
	t.Helper()
	b, err := readMsg(t, ws)
	if err != nil {
		t.Fatalf("reading ServerHello: %v", err)
	}
	h, err := relayproto.ParseServerHello(b)
	if err != nil {
		t.Fatalf("ServerHello: %v", err)
	}
	return h
}

// answer builds the ClientHello that proves priv and the admission key adm
// to the relay of sh. macKey is the private key whose shared secret keys the
// MAC: priv itself for an honest client, another key for an impostor.
func answer(t testing.TB, sh relayproto.ServerHello, priv, macKey nodekey.Private, adm relayproto.AdmissionKey) relayproto.ClientHello {
	t.Helper()
	ch, err := relayproto.NewClientHello(sh, priv, adm)
	if err != nil {
		t.Fatal(err)
	}
	if macKey != priv {
		shared, err := macKey.SharedSecret(sh.ServerKey)
		if err != nil {
			t.Fatal(err)
		}
		tr := relayproto.Transcript{ServerKey: sh.ServerKey, Challenge: sh.Challenge, ClientKey: ch.ClientKey, Admission: ch.Admission, Rendezvous: ch.Rendezvous}
		ch.MAC = tr.MAC(shared)
	}
	return ch
}

// client is a hand-written relay client, just enough to drive the server.
type client struct {
	t       testing.TB
	ws      *websocket.Conn
	key     relayproto.Key
	welcome relayproto.Welcome
}

// connect does the handshake as priv in the mesh of rv and checks the
// Welcome.
func connect(t testing.TB, r *testRelay, priv nodekey.Private, rv relayproto.AdmissionKey) *client {
	t.Helper()
	return connectWith(t, r, priv, rv, nil)
}

func connectWith(t testing.TB, r *testRelay, priv nodekey.Private, rv relayproto.AdmissionKey, opts *websocket.DialOptions) *client {
	t.Helper()
	ws := dialWS(t, r.url, opts)
	sh := readServerHello(t, ws)
	if sh.Version != relayproto.Version || sh.ServerKey != r.srv.PublicKey() {
		t.Fatalf("ServerHello = %+v, want version %d and key %v", sh, relayproto.Version, r.srv.PublicKey())
	}
	ch := answer(t, sh, priv, priv, rv)
	writeMsg(t, ws, ch.Append(nil))
	b, err := readMsg(t, ws)
	if err != nil {
		t.Fatalf("reading Welcome: %v", err)
	}
	w, err := relayproto.ParseWelcome(b)
	if err != nil {
		if f, perr := relayproto.Parse(b); perr == nil && f.Type == relayproto.TypeError {
			t.Fatalf("handshake refused: %v: %s", f.Code, f.Message)
		}
		t.Fatalf("Welcome: %v", err)
	}
	return &client{t: t, ws: ws, key: priv.Public(), welcome: w}
}

// next returns the next frame; its payload is the client's own copy.
func (c *client) next() relayproto.Frame {
	c.t.Helper()
	f, err := c.tryNext()
	if err != nil {
		c.t.Fatalf("client %s: read: %v", c.key.ShortString(), err)
	}
	return f
}

func (c *client) tryNext() (relayproto.Frame, error) {
	b, err := readMsg(c.t, c.ws)
	if err != nil {
		return relayproto.Frame{}, err
	}
	f, err := relayproto.Parse(b)
	if err != nil {
		c.t.Fatalf("client %s: relay sent a bad frame %x: %v", c.key.ShortString(), b, err)
	}
	return f, nil
}

// expect returns the next frame, failing unless it has type typ and key k
// (k is ignored for keyless types).
func (c *client) expect(typ relayproto.Type, k relayproto.Key) relayproto.Frame {
	c.t.Helper()
	f := c.next()
	if f.Type != typ {
		c.t.Fatalf("client %s: got %v (%+v), want %v", c.key.ShortString(), f.Type, f, typ)
	}
	switch typ {
	case relayproto.TypeRecv, relayproto.TypeBroadcastRecv, relayproto.TypePeerPresent, relayproto.TypePeerGone:
		if f.Key != k {
			c.t.Fatalf("client %s: %v about %v, want %v", c.key.ShortString(), typ, f.Key.ShortString(), k.ShortString())
		}
	}
	return f
}

func (c *client) send(dst relayproto.Key, payload string) {
	c.t.Helper()
	writeMsg(c.t, c.ws, relayproto.AppendSend(nil, dst, []byte(payload)))
}

func (c *client) broadcast(payload string) {
	c.t.Helper()
	writeMsg(c.t, c.ws, relayproto.AppendBroadcast(nil, []byte(payload)))
}

// expectClose reads until the connection ends. It fails unless the last
// frame before the close was an Error with code (code 0: no Error at all)
// and the close status is status. Frames before that are returned.
func expectClose(t testing.TB, ws *websocket.Conn, code relayproto.ErrorCode, status websocket.StatusCode) []relayproto.Frame {
	t.Helper()
	var frames []relayproto.Frame
	for {
		b, err := readMsg(t, ws)
		if err != nil {
			if got := websocket.CloseStatus(err); got != status {
				t.Fatalf("connection ended with %v (status %v), want status %v", err, got, status)
			}
			break
		}
		f, perr := relayproto.Parse(b)
		if perr != nil {
			t.Fatalf("relay sent a bad frame %x: %v", b, perr)
		}
		frames = append(frames, f)
	}
	var last relayproto.Frame
	if len(frames) > 0 {
		last = frames[len(frames)-1]
	}
	switch {
	case code == 0 && last.Type == relayproto.TypeError:
		t.Fatalf("unexpected Error %v: %s", last.Code, last.Message)
	case code != 0 && (last.Type != relayproto.TypeError || last.Code != code):
		t.Fatalf("last frame before close = %+v, want Error %v", last, code)
	case code != 0:
		if last.Message == "" {
			t.Fatalf("Error %v has no message", code)
		}
		frames = frames[:len(frames)-1]
	}
	return frames
}

// metric scrapes /metrics and returns the value of the sample named by
// series (name plus labels as exposed, e.g. `x_total{reason="a"}`).
func metric(t testing.TB, r *testRelay, series string) float64 {
	t.Helper()
	resp, err := http.Get(r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exposed", series)
	return 0
}

// waitMetric polls series until it reads want, and fails t showing the
// last value after testkit.Patience. For what the relay counts after a
// client can see it: a forwarded frame once it is queued to the
// receivers, a handshake once the welcome is sent.
func waitMetric(t testing.TB, r *testRelay, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(testkit.Patience)
	for {
		got := metric(t, r, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", series, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
