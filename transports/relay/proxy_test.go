package relay

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

// connectProxy is a minimal HTTP CONNECT proxy on 127.0.0.1 that records the
// tunnels it opened.
type connectProxy struct {
	ln     net.Listener
	refuse bool // answer 403 instead of tunnelling

	mu      sync.Mutex
	targets []string
	auth    []string
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func startProxy(t testing.TB) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.stop)
	return p
}

func (p *connectProxy) url() *url.URL { return &url.URL{Scheme: "http", Host: p.ln.Addr().String()} }

func (p *connectProxy) stop() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *connectProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *connectProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			continue
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *connectProxy) handle(c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, req.Host)
	p.auth = append(p.auth, req.Header.Get("Proxy-Authorization"))
	p.mu.Unlock()
	host, _, _ := net.SplitHostPort(req.Host)
	if req.Method != http.MethodConnect || host != "127.0.0.1" || p.refuse {
		// Tests only ever tunnel to loopback.
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
		return
	}
	dst, err := net.Dial("tcp", req.Host)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer dst.Close()
	if !p.track(dst) {
		return
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(dst, br) // br holds anything the client sent early
		dst.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(c, dst)
	c.(*net.TCPConn).CloseWrite()
	wg.Wait()
}

func (p *connectProxy) tunnels() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

func TestThroughConnectProxy(t *testing.T) {
	plain := startRelay(t, relayserver.Config{}, nil)
	tlsRelay := startTLSRelay(t, relayserver.Config{})
	roots := x509.NewCertPool()
	roots.AddCert(tlsRelay.ts.Certificate())

	tests := []struct {
		name  string
		relay *testRelay
		tls   *tls.Config
		user  *url.Userinfo
	}{
		{"ws", plain, nil, nil},
		{"wss with private CA", tlsRelay, &tls.Config{RootCAs: roots}, nil},
		{"ws with proxy credentials", plain, nil, url.UserPassword("alice", "s3cret")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxy := startProxy(t)
			pu := proxy.url()
			pu.User = tt.user
			rv := newAdmission(t)
			viaProxy := newClient(t, Config{URL: tt.relay.url, Admission: rv, TLSConfig: tt.tls, Proxy: http.ProxyURL(pu)})
			direct := newClient(t, Config{URL: tt.relay.url, Admission: rv, TLSConfig: tt.tls, Proxy: noProxy})
			waitConnected(t, viaProxy)
			waitConnected(t, direct)
			sendUntilReceived(t, viaProxy, direct, "out through the proxy")
			sendUntilReceived(t, direct, viaProxy, "in through the proxy")

			relayAddr := tt.relay.ts.Listener.Addr().String()
			got := proxy.tunnels()
			if len(got) != 1 || got[0] != relayAddr {
				t.Fatalf("proxy tunnels = %v, want exactly one to %s", got, relayAddr)
			}
			if tt.user != nil {
				pass, _ := tt.user.Password()
				want := "Basic " + base64.StdEncoding.EncodeToString([]byte(tt.user.Username()+":"+pass))
				if a := proxy.auth[0]; a != want {
					t.Fatalf("Proxy-Authorization = %q, want %q", a, want)
				}
			}
		})
	}
}

func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

func TestProxyAndTLSFailuresReported(t *testing.T) {
	plain := startRelay(t, relayserver.Config{}, nil)
	tlsRelay := startTLSRelay(t, relayserver.Config{})
	refusing := startProxy(t)
	refusing.refuse = true

	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"proxy refuses", Config{URL: plain.url, Proxy: http.ProxyURL(refusing.url())}, "403 Forbidden"},
		{"untrusted certificate", Config{URL: tlsRelay.url, Proxy: noProxy}, "certificate"},
		{"socks proxy", Config{URL: plain.url, Proxy: http.ProxyURL(&url.URL{Scheme: "socks5", Host: "127.0.0.1:1"})}, "only http:// CONNECT proxies"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Admission = newAdmission(t)
			c := newClient(t, tt.cfg)
			testkit.Eventually(t, "a failed attempt", func() bool { return c.Status().LastError != "" })
			if st := c.Status(); st.Connected || !strings.Contains(st.LastError, tt.want) {
				t.Fatalf("status %+v, want not connected and an error containing %q", st, tt.want)
			}
		})
	}
}

func TestReadConnectResponse(t *testing.T) {
	req, _ := http.NewRequest(http.MethodConnect, "http://127.0.0.1:1", nil)
	tests := []struct {
		name     string
		in       string
		wantErr  string
		leftover string
	}{
		{"ok", "HTTP/1.1 200 Connection Established\r\n\r\n", "", ""},
		{"ok with headers", "HTTP/1.1 200 OK\r\nVia: test\r\n\r\n", "", ""},
		{"ok with early tunnel bytes", "HTTP/1.1 200 OK\r\n\r\nhello", "", "hello"},
		{"refused", "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "407", ""},
		{"garbage", "SSH-2.0-OpenSSH\r\n\r\n", "reading answer", ""},
		{"truncated", "HTTP/1.1 200 OK\r\n", "reading answer", ""},
		{"endless headers", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Pad: aaaaaaaaaaaaaaaa\r\n", maxProxyResponse/16), "longer than", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			left, err := readConnectResponse(strings.NewReader(tt.in), req)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(left) != tt.leftover {
				t.Fatalf("leftover %q, want %q", left, tt.leftover)
			}
		})
	}
}

// FuzzReadConnectResponse feeds arbitrary proxy answers to the CONNECT
// response reader: it must not panic, and must never return more leftover
// bytes than it was given.
func FuzzReadConnectResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 Connection Established\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nearly",
		"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	req, _ := http.NewRequest(http.MethodConnect, "http://127.0.0.1:1", nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		left, err := readConnectResponse(bytes.NewReader(b), req)
		if err == nil && len(left) > len(b) {
			t.Fatalf("leftover %d bytes from %d input bytes", len(left), len(b))
		}
		if err != nil && left != nil {
			t.Fatalf("leftover returned with error %v", err)
		}
	})
}
