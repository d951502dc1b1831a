package socks5

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/echotest"
	"go.uber.org/goleak"
	"golang.org/x/net/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// loopback lets a test server reach the test's own echo servers, which
// stand in for members.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// testTimeout only keeps a broken test from hanging.
const testTimeout = 30 * time.Second

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// echoServer listens on network/addr and echoes each connection; cleanup
// closes it and waits.
func echoServer(t *testing.T, network, addr string) netip.AddrPort {
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s %s: %v", network, addr, err)
	}
	echotest.Serve(t, ln)
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// startServer runs a SOCKS5 server on 127.0.0.1 until the test ends.
func startServer(t *testing.T, cfg Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- New(cfg).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve after cancel = %v, want nil", err)
		}
	})
	return ln.Addr().String()
}

func resolver(names map[string]netip.Addr) func(context.Context, string) (netip.Addr, error) {
	return func(_ context.Context, host string) (netip.Addr, error) {
		if ip, ok := names[host]; ok {
			return ip, nil
		}
		return netip.Addr{}, fmt.Errorf("unknown member %q", host)
	}
}

func connectReq(cmd, atyp byte, addr []byte, port uint16) []byte {
	b := []byte{version5, cmd, 0, atyp}
	if atyp == atypDomain {
		b = append(b, byte(len(addr)))
	}
	b = append(b, addr...)
	return binary.BigEndian.AppendUint16(b, port)
}

func TestServerRequests(t *testing.T) {
	echo4 := echoServer(t, "tcp4", "127.0.0.1:0")
	echo6 := echoServer(t, "tcp6", "[::1]:0")
	// A port with nothing listening: take a free one and close it.
	closedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closedLn.Addr().(*net.TCPAddr).AddrPort().Port()
	closedLn.Close()

	var d net.Dialer
	withResolve := startServer(t, Config{
		Dial:    d.DialContext,
		Resolve: resolver(map[string]netip.Addr{"echo.mesh": echo4.Addr(), "echo6.mesh": echo6.Addr()}),
		Allow:   loopback,
	})
	noResolve := startServer(t, Config{Dial: d.DialContext, Allow: loopback})

	greeting := []byte{version5, 1, methodNoAuth}
	tests := []struct {
		name      string
		server    string
		send      []byte
		wantReply []byte // bytes expected after the method reply; nil: none
		wantEcho  bool   // the tunnel must echo
	}{
		{"connect ipv4", withResolve, connectReq(cmdConnect, atypIPv4, echo4.Addr().AsSlice(), echo4.Port()), []byte{5, repSucceeded, 0, atypIPv4}, true},
		{"connect ipv6", withResolve, connectReq(cmdConnect, atypIPv6, echo6.Addr().AsSlice(), echo6.Port()), []byte{5, repSucceeded, 0, atypIPv6}, true},
		{"connect domain resolved", withResolve, connectReq(cmdConnect, atypDomain, []byte("echo.mesh"), echo4.Port()), []byte{5, repSucceeded, 0, atypIPv4}, true},
		{"connect domain resolved to v6", withResolve, connectReq(cmdConnect, atypDomain, []byte("echo6.mesh"), echo6.Port()), []byte{5, repSucceeded, 0, atypIPv6}, true},
		{"connect domain that is an IP", noResolve, connectReq(cmdConnect, atypDomain, []byte("127.0.0.1"), echo4.Port()), []byte{5, repSucceeded, 0, atypIPv4}, true},
		{"unknown name", withResolve, connectReq(cmdConnect, atypDomain, []byte("nobody.mesh"), 80), []byte{5, repNotAllowed}, false},
		{"name without resolver", noResolve, connectReq(cmdConnect, atypDomain, []byte("echo.mesh"), echo4.Port()), []byte{5, repNotAllowed}, false},
		{"refused", withResolve, connectReq(cmdConnect, atypIPv4, []byte{127, 0, 0, 1}, closedPort), []byte{5, repConnectionRefused}, false},
		{"bind not supported", withResolve, connectReq(0x02, atypIPv4, []byte{127, 0, 0, 1}, 80), []byte{5, repCommandNotSupported}, false},
		{"udp associate not supported", withResolve, connectReq(0x03, atypIPv4, []byte{0, 0, 0, 0}, 0), []byte{5, repCommandNotSupported}, false},
		{"bad address type", withResolve, []byte{5, cmdConnect, 0, 0x09, 1, 2, 3, 4, 0, 80}, []byte{5, repAddrNotSupported}, false},
		{"empty domain", withResolve, []byte{5, cmdConnect, 0, atypDomain, 0, 0, 80}, []byte{5, repGeneralFailure}, false},
		{"request wrong version", withResolve, []byte{4, cmdConnect, 0, atypIPv4, 127, 0, 0, 1, 0, 80}, []byte{5, repGeneralFailure}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", tt.server)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(testTimeout))
			// Greeting and request in one write, as optimistic clients do.
			if _, err := c.Write(append(append([]byte{}, greeting...), tt.send...)); err != nil {
				t.Fatal(err)
			}
			method := make([]byte, 2)
			if _, err := io.ReadFull(c, method); err != nil || !bytes.Equal(method, []byte{5, methodNoAuth}) {
				t.Fatalf("method reply % x, %v", method, err)
			}
			got := make([]byte, len(tt.wantReply))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("read reply: %v", err)
			}
			if !bytes.Equal(got, tt.wantReply) {
				t.Fatalf("reply % x, want % x", got, tt.wantReply)
			}
			if !tt.wantEcho {
				// The rest of the reply, then the server must close.
				rest, err := io.ReadAll(c)
				if err != nil {
					t.Fatalf("after failure reply: %v", err)
				}
				if len(rest) != 1+1+4+2 { // RSV, ATYP, 0.0.0.0, port 0
					t.Fatalf("failure reply tail % x, want 0.0.0.0:0", rest)
				}
				return
			}
			addrLen := map[byte]int{atypIPv4: 4, atypIPv6: 16}[got[3]]
			bnd := make([]byte, addrLen+2)
			if _, err := io.ReadFull(c, bnd); err != nil {
				t.Fatalf("read bound address: %v", err)
			}
			msg := []byte("through the proxy: " + tt.name)
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			echo := make([]byte, len(msg))
			if _, err := io.ReadFull(c, echo); err != nil || !bytes.Equal(echo, msg) {
				t.Fatalf("echo %q, %v; want %q", echo, err, msg)
			}
		})
	}
}

func TestServerRejects(t *testing.T) {
	addr := startServer(t, Config{})
	tests := []struct {
		name string
		send []byte
		want []byte // everything the server sends before closing
	}{
		{"only username/password auth", []byte{5, 1, 0x02}, []byte{5, methodNoAcceptable}},
		{"gssapi and userpass", []byte{5, 2, 0x01, 0x02}, []byte{5, methodNoAcceptable}},
		{"socks4", []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, nil},
		{"http garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), nil},
		{"no methods", []byte{5, 0}, nil},
		{"truncated greeting", []byte{5, 3, 0}, nil},
		{"truncated request", []byte{5, 1, 0, 5, 1, 0, 1, 127}, []byte{5, methodNoAuth}},
		{"truncated domain", []byte{5, 1, 0, 5, 1, 0, 3, 200, 'a'}, []byte{5, methodNoAuth}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sendAll(t, addr, tt.send); !bytes.Equal(got, tt.want) {
				t.Fatalf("server sent % x, want % x", got, tt.want)
			}
		})
	}
}

func TestXNetProxyClient(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	var d net.Dialer
	addr := startServer(t, Config{
		Dial:    d.DialContext,
		Resolve: resolver(map[string]netip.Addr{"echo.mesh": echo.Addr()}),
		Allow:   loopback,
	})
	dialer, err := proxy.SOCKS5("tcp", addr, nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{fmt.Sprintf("echo.mesh:%d", echo.Port()), echo.String()} {
		t.Run(target, func(t *testing.T) {
			c, err := dialer.(proxy.ContextDialer).DialContext(context.Background(), "tcp", target)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(testTimeout))
			msg := bytes.Repeat([]byte("x/net/proxy "), 10000)
			go c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo mismatch: %v", err)
			}
		})
	}
	if _, err := dialer.Dial("tcp", "nobody.mesh:80"); err == nil {
		t.Fatal("dial to unknown member succeeded")
	} else if !strings.Contains(err.Error(), "not allowed by ruleset") {
		t.Fatalf("err = %v, want connection not allowed by ruleset", err)
	}
}

func TestCurlSocks5Hostname(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s via %s", r.Host, r.URL.Path)
	}))
	defer web.Close()
	webAddr := netip.MustParseAddrPort(web.Listener.Addr().String())
	var d net.Dialer
	addr := startServer(t, Config{
		Dial:    d.DialContext,
		Resolve: resolver(map[string]netip.Addr{"web.mesh": webAddr.Addr()}),
		Allow:   loopback,
	})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	url := fmt.Sprintf("http://web.mesh:%d/page", webAddr.Port())
	cmd := exec.CommandContext(ctx, curl, "--silent", "--show-error", "--max-time", "20", "--socks5-hostname", addr, url)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no proxy variables
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	if want := fmt.Sprintf("hello web.mesh:%d via /page", webAddr.Port()); string(out) != want {
		t.Fatalf("curl got %q, want %q", out, want)
	}
	web.CloseClientConnections()
}

func TestServeStopsOnListenerClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- New(Config{Logger: quiet()}).Serve(context.Background(), ln) }()
	// A client stuck mid-handshake must be closed by Serve on the way out.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{5})
	ln.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve = %v, want net.ErrClosed", err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("client connection still open after Serve returned")
	}
}
