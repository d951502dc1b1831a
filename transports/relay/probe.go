package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
)

// ProbeConfig says how to reach a relay for Probe; the zero value of all
// but URL is usable, as in Config.
type ProbeConfig struct {
	URL       string
	TLSConfig *tls.Config
	Proxy     func(*http.Request) (*url.URL, error) // nil: http.ProxyFromEnvironment
	Timeout   time.Duration                         // 0: DefaultDialTimeout
}

// Probe opens a WebSocket to the relay the way a Client does (proxy, TLS,
// subprotocol) and closes it without logging in, returning how long the
// opening took: TCP, any proxy CONNECT, TLS and the HTTP upgrade, a few
// round trips to the relay. "plurenet netcheck" reports it.
func Probe(ctx context.Context, cfg ProbeConfig) (time.Duration, error) {
	u, err := ParseURL(cfg.URL)
	if err != nil {
		return 0, err
	}
	if cfg.Proxy == nil {
		cfg.Proxy = http.ProxyFromEnvironment
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultDialTimeout
	}
	tr := newHTTPTransport(u, cfg.Proxy, cfg.TLSConfig, cfg.Timeout)
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		Subprotocols:    []string{relayproto.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	took := time.Since(start)
	if err != nil {
		if resp != nil && resp.StatusCode != 0 {
			return 0, fmt.Errorf("relay %s: dial: HTTP %s: %w", u, resp.Status, err)
		}
		return 0, fmt.Errorf("relay %s: dial: %w", u, err)
	}
	defer ws.CloseNow()
	if p := ws.Subprotocol(); p != relayproto.Subprotocol {
		return 0, fmt.Errorf("relay %s: it answered subprotocol %q, want %q: not a plurenet relay", u, p, relayproto.Subprotocol)
	}
	return took, nil
}
