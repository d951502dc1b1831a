package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/plures/plurenet/internal/wscork"
)

// newHTTPTransport returns the HTTP transport under a relay's WebSocket:
// through proxy when it names one (proxy.go), with tlsConf for wss://, each
// step bounded by timeout.
func newHTTPTransport(u *url.URL, proxy func(*http.Request) (*url.URL, error), tlsConf *tls.Config, timeout time.Duration) *http.Transport {
	d := &dialer{relayURL: u, proxy: proxy}
	d.net.Timeout = timeout
	if tlsConf = tlsConf.Clone(); tlsConf == nil {
		tlsConf = &tls.Config{}
	}
	// The WebSocket upgrade needs HTTP/1.1.
	tlsConf.NextProtos = []string{"http/1.1"}
	return &http.Transport{
		// Wrapped so that the connection's writer can cork the socket
		// (internal/wscork); dial puts a slot in the context for it.
		DialContext: wscork.Dial(d.dialContext),
		// TLS is done here rather than by the transport so that the cork
		// sits above it: a batch of frames is then a few full TLS records,
		// not one record (and one AES-GCM seal and MAC) per frame.
		DialTLSContext: wscork.Dial(func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialTLS(ctx, d.dialContext, network, addr, tlsConf, timeout)
		}),
		// Every connection ends up hijacked by the WebSocket; one that
		// failed the upgrade is not worth keeping.
		DisableKeepAlives: true,
		// An upgrade answer is a handful of headers; this bounds what a
		// hostile relay or proxy can make us buffer.
		MaxResponseHeaderBytes: maxResponseHeader,
	}
}

// dialTLS dials addr (through the proxy, if any) and runs the TLS handshake
// within timeout, verifying the certificate for addr's host unless conf
// names another.
func dialTLS(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), network, addr string, conf *tls.Config, timeout time.Duration) (net.Conn, error) {
	raw, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if conf.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS to %s: %w", addr, err)
		}
		conf = conf.Clone()
		conf.ServerName = host
	}
	// The Conn below TLS lets the cork above it (wscork.Dial) send a
	// batch's records in one write.
	tc := tls.Client(wscork.Below(raw), conf)
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}
