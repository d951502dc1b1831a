package socks5

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// meshPrefixes stand in for a mesh's overlay prefixes.
var meshPrefixes = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd5e:1:2::/48")}

// redirectDialer plays the overlay: a dial to a member's overlay address
// reaches the test's echo server, and every dial is recorded so a test can
// show that a refused target was never dialled.
type redirectDialer struct {
	to     netip.AddrPort
	mu     sync.Mutex
	dialed []string
}

func (d *redirectDialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, address)
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, d.to.String())
}

func (d *redirectDialer) calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dialed...)
}

// TestOnlyTheMesh: the proxy reaches the allowed prefixes and nothing else.
// Host loopback, the LAN, link-local (cloud metadata), IPv4-mapped tricks
// and names that are not members get reply 2, "connection not allowed by
// ruleset", without a dial.
func TestOnlyTheMesh(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	d := &redirectDialer{to: echo}
	member := netip.MustParseAddr("100.64.0.5")
	addr := startServer(t, Config{
		Dial: d.dial,
		Resolve: resolver(map[string]netip.Addr{
			"alpha":     member,
			"localhost": netip.MustParseAddr("127.0.0.1"), // a resolver gone wrong
		}),
		Allow: meshPrefixes,
	})
	refused := []struct {
		name string
		req  []byte
	}{
		{"host loopback", connectReq(cmdConnect, atypIPv4, []byte{127, 0, 0, 1}, echo.Port())},
		{"loopback v6", connectReq(cmdConnect, atypIPv6, netip.IPv6Loopback().AsSlice(), echo.Port())},
		{"v4-mapped loopback", connectReq(cmdConnect, atypIPv6, netip.MustParseAddr("::ffff:127.0.0.1").AsSlice(), echo.Port())},
		{"loopback as a name", connectReq(cmdConnect, atypDomain, []byte("127.0.0.1"), echo.Port())},
		{"name resolving outside", connectReq(cmdConnect, atypDomain, []byte("localhost"), echo.Port())},
		{"not a member", connectReq(cmdConnect, atypDomain, []byte("example.com"), 443)},
		{"cloud metadata", connectReq(cmdConnect, atypIPv4, []byte{169, 254, 169, 254}, 80)},
		{"LAN", connectReq(cmdConnect, atypIPv4, []byte{192, 168, 1, 1}, 22)},
		{"unspecified", connectReq(cmdConnect, atypIPv4, []byte{0, 0, 0, 0}, echo.Port())},
		{"just outside the mesh", connectReq(cmdConnect, atypIPv4, []byte{100, 128, 0, 1}, 80)},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			got := sendAll(t, addr, append([]byte{5, 1, methodNoAuth}, tt.req...))
			want := append([]byte{5, methodNoAuth}, appendReply(nil, repNotAllowed, netip.AddrPort{})...)
			if !bytes.Equal(got, want) {
				t.Fatalf("server sent % x, want % x (not allowed by ruleset)", got, want)
			}
		})
	}
	if calls := d.calls(); len(calls) != 0 {
		t.Fatalf("refused requests were dialled: %v", calls)
	}

	// Members, by name and by address, are reached.
	dialer, err := proxy.SOCKS5("tcp", addr, nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"alpha:80", "100.64.0.5:80", "[fd5e:1:2::9]:80"} {
		c, err := dialer.Dial("tcp", target)
		if err != nil {
			t.Fatalf("member %s: %v", target, err)
		}
		echoOnce(t, c)
	}
	if got := d.calls(); len(got) != 3 || got[0] != "100.64.0.5:80" || got[2] != "[fd5e:1:2::9]:80" {
		t.Fatalf("dials = %v, want the members' overlay addresses", got)
	}
}

// TestZeroConfigAllowsNothing: without Allow the server refuses every
// destination instead of acting as an open proxy.
func TestZeroConfigAllowsNothing(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	addr := startServer(t, Config{})
	dialer, err := proxy.SOCKS5("tcp", addr, nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := dialer.Dial("tcp", echo.String()); err == nil {
		c.Close()
		t.Fatal("a server without Allow connected to the host's loopback")
	} else if !strings.Contains(err.Error(), "not allowed by ruleset") {
		t.Fatalf("err = %v, want not allowed by ruleset", err)
	}
}

func TestUserPass(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	creds := &Credentials{Username: "alice", Password: "correct horse battery"}
	var d net.Dialer
	addr := startServer(t, Config{Dial: d.DialContext, Allow: loopback, Credentials: creds})

	t.Run("right credentials", func(t *testing.T) {
		dialer, err := proxy.SOCKS5("tcp", addr, &proxy.Auth{User: creds.Username, Password: creds.Password}, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		c, err := dialer.Dial("tcp", echo.String())
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c)
	})
	for _, auth := range []*proxy.Auth{
		{User: creds.Username, Password: "wrong"},
		{User: "mallory", Password: creds.Password},
		{User: creds.Username, Password: creds.Password + "x"},
		{User: creds.Username, Password: creds.Password[:len(creds.Password)-1]},
	} {
		t.Run("wrong "+auth.User+"/"+auth.Password, func(t *testing.T) {
			dialer, err := proxy.SOCKS5("tcp", addr, auth, proxy.Direct)
			if err != nil {
				t.Fatal(err)
			}
			if c, err := dialer.Dial("tcp", echo.String()); err == nil {
				c.Close()
				t.Fatal("wrong credentials were accepted")
			}
		})
	}

	// The exchanges byte for byte (RFC 1929 §2).
	tests := []struct {
		name string
		send []byte
		want []byte // everything the server sends before closing
	}{
		{"no auth only", []byte{5, 1, methodNoAuth}, []byte{5, methodNoAcceptable}},
		{"wrong password", append([]byte{5, 1, methodUserPass}, userPass("alice", "nope")...), []byte{5, methodUserPass, 1, userPassFailed}},
		{"empty username", []byte{5, 1, methodUserPass, 1, 0, 1, 'x'}, []byte{5, methodUserPass, 1, userPassFailed}},
		{"empty password", []byte{5, 1, methodUserPass, 1, 1, 'a', 0}, []byte{5, methodUserPass, 1, userPassFailed}},
		{"wrong subnegotiation version", []byte{5, 1, methodUserPass, 5, 1, 'a', 1, 'b'}, []byte{5, methodUserPass, 1, userPassFailed}},
		{"truncated", []byte{5, 1, methodUserPass, 1, 9, 'a'}, []byte{5, methodUserPass}},
		{"right, then a request outside", append(append([]byte{5, 2, methodNoAuth, methodUserPass}, userPass(creds.Username, creds.Password)...),
			connectReq(cmdConnect, atypIPv4, []byte{10, 0, 0, 1}, 80)...),
			append([]byte{5, methodUserPass, 1, userPassOK}, appendReply(nil, repNotAllowed, netip.AddrPort{})...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sendAll(t, addr, tt.send); !bytes.Equal(got, tt.want) {
				t.Fatalf("server sent % x, want % x", got, tt.want)
			}
		})
	}
}

func userPass(user, pass string) []byte {
	b := []byte{userPassVersion, byte(len(user))}
	b = append(b, user...)
	b = append(b, byte(len(pass)))
	return append(b, pass...)
}

// sendAll sends b to the server at addr and half-closes, so that truncated
// input reads as EOF rather than a stall until the handshake deadline, and
// returns everything the server sends before it closes.
func sendAll(t *testing.T, addr string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v", err)
	}
	return got
}

func echoOnce(t *testing.T, c net.Conn) {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	msg := []byte("hello through the proxy")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, %v", got, err)
	}
}
