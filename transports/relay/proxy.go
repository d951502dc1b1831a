package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// maxProxyResponse bounds the CONNECT response headers we read from a proxy.
// A proxy's answer is a status line and a few headers; 16 KiB leaves room
// for verbose ones while a hostile or broken proxy cannot stream headers
// forever.
const maxProxyResponse = 16 << 10

// dialer opens the TCP connection under the WebSocket: directly, or through
// an HTTP proxy with CONNECT. The client tunnels with CONNECT for ws:// as
// well as wss://: corporate proxies pass CONNECT through untouched, while a
// forwarded plain-HTTP Upgrade request is often mangled or refused.
type dialer struct {
	relayURL *url.URL // the relay, to choose a proxy for
	proxy    func(*http.Request) (*url.URL, error)
	net      net.Dialer
}

// dialContext is the http.Transport DialContext hook. addr is the relay's
// host:port as the transport resolved it from the URL.
func (d *dialer) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	proxyURL, err := d.proxyFor()
	if err != nil {
		return nil, fmt.Errorf("choosing proxy: %w", err)
	}
	if proxyURL == nil {
		return d.net.DialContext(ctx, network, addr)
	}
	return d.dialViaProxy(ctx, network, proxyURL, addr)
}

// proxyFor asks the configured proxy function about the relay URL, written as
// the http(s) URL that HTTP proxy settings are keyed on.
func (d *dialer) proxyFor() (*url.URL, error) {
	u := *d.relayURL
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	req := &http.Request{Method: http.MethodGet, URL: &u, Header: http.Header{}, Host: u.Host}
	return d.proxy(req)
}

func (d *dialer) dialViaProxy(ctx context.Context, network string, proxyURL *url.URL, addr string) (net.Conn, error) {
	if proxyURL.Scheme != "http" && proxyURL.Scheme != "" {
		return nil, fmt.Errorf("proxy %s: scheme %q not supported (only http:// CONNECT proxies)", proxyURL.Redacted(), proxyURL.Scheme)
	}
	proxyAddr := proxyURL.Host
	if proxyURL.Port() == "" {
		proxyAddr = net.JoinHostPort(proxyURL.Hostname(), "80")
	}
	conn, err := d.net.DialContext(ctx, network, proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", proxyURL.Redacted(), err)
	}
	c, err := connectTunnel(ctx, conn, proxyURL, addr)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", proxyURL.Redacted(), addr, err)
	}
	return c, nil
}

// connectTunnel asks the proxy on conn to open a tunnel to addr and returns
// the connection to use for the tunnel's bytes.
func connectTunnel(ctx context.Context, conn net.Conn, proxyURL *url.URL, addr string) (net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Unblock the exchange if ctx ends without a deadline (Close).
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: http.Header{},
	}
	if u := proxyURL.User; u != nil {
		pass, _ := u.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(u.Username() + ":" + pass))
		req.Header.Set("Proxy-Authorization", "Basic "+cred)
	}
	if err := req.Write(conn); err != nil {
		return nil, err
	}
	leftover, err := readConnectResponse(conn, req)
	if err != nil {
		return nil, err
	}
	if !stop() && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	conn.SetDeadline(time.Time{})
	if len(leftover) > 0 {
		// The proxy sent tunnel bytes right behind its answer; keep them.
		return &bufferedConn{Conn: conn, r: io.MultiReader(bytes.NewReader(leftover), conn)}, nil
	}
	return conn, nil
}

// readConnectResponse reads and checks the proxy's answer to CONNECT. It
// returns the bytes read past the answer, which already belong to the
// tunnel.
func readConnectResponse(r io.Reader, req *http.Request) ([]byte, error) {
	lr := &io.LimitedReader{R: r, N: maxProxyResponse}
	br := bufio.NewReader(lr)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		if lr.N <= 0 {
			return nil, fmt.Errorf("answer longer than %d bytes", maxProxyResponse)
		}
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("proxy answered %q", resp.Status)
	}
	// A 200 answer to CONNECT has no body: whatever bufio read past the
	// headers is the start of the tunnel.
	n := br.Buffered()
	if n == 0 {
		return nil, nil
	}
	rest, _ := br.Peek(n)
	return bytes.Clone(rest), nil
}

// bufferedConn reads first from r (bytes the proxy sent behind its
// answer, then the connection).
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
