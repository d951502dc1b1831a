package relay

import (
	"crypto/tls"
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
	tlsConf = tlsConf.Clone()
	if tlsConf != nil {
		// The WebSocket upgrade needs HTTP/1.1.
		tlsConf.NextProtos = []string{"http/1.1"}
	}
	return &http.Transport{
		// Wrapped so that the connection's writer can cork the socket
		// (internal/wscork); dial puts a slot in the context for it.
		DialContext:         wscork.Dial(d.dialContext),
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: timeout,
		// Every connection ends up hijacked by the WebSocket; one that
		// failed the upgrade is not worth keeping.
		DisableKeepAlives: true,
		// An upgrade answer is a handful of headers; this bounds what a
		// hostile relay or proxy can make us buffer.
		MaxResponseHeaderBytes: maxResponseHeader,
	}
}
