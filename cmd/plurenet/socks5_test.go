package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/plures/plurenet/internal/echotest"
	"github.com/plures/plurenet/overlay"
	"github.com/plures/plurenet/proxy/socks5"
	"github.com/plures/plurenet/relayserver"
)

// TestSOCKS5Listen: --socks5 on loopback needs nothing more; any other
// address is refused unless --socks5-allow-remote is given, and then only
// with credentials from a private file or the environment (never a flag).
func TestSOCKS5Listen(t *testing.T) {
	const pass = "a-long-socks-password"
	good := writeMode(t, "socks", "alice:"+pass+"\n", 0o600)
	open := writeMode(t, "socks-open", "alice:"+pass+"\n", 0o644)
	short := writeMode(t, "socks-short", "alice:short\n", 0o600)
	noColon := writeMode(t, "socks-bad", "alice\n", 0o600)
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		errHas   string // "" means a listener
		wantUser string // with credentials
	}{
		{"loopback", []string{"--socks5", "127.0.0.1:0"}, nil, "", ""},
		{"loopback v6", []string{"--socks5", "[::1]:0"}, nil, "", ""},
		{"localhost", []string{"--socks5", "localhost:0"}, nil, "", ""},
		{"loopback with credentials", []string{"--socks5", "127.0.0.1:0", "--socks5-auth-file", good}, nil, "", "alice"},
		{"every interface", []string{"--socks5", ":0"}, nil, "--socks5-allow-remote", ""},
		{"unspecified", []string{"--socks5", "0.0.0.0:0"}, nil, "beyond this host", ""},
		{"remote without credentials", []string{"--socks5", "0.0.0.0:0", "--socks5-allow-remote"}, nil, "needs credentials", ""},
		{"remote with file", []string{"--socks5", "0.0.0.0:0", "--socks5-allow-remote", "--socks5-auth-file", good}, nil, "", "alice"},
		{"remote with env", []string{"--socks5", "0.0.0.0:0", "--socks5-allow-remote"}, map[string]string{"PLURENET_SOCKS5_AUTH": "bob:" + pass}, "", "bob"},
		{"file and env", []string{"--socks5", "127.0.0.1:0", "--socks5-auth-file", good}, map[string]string{"PLURENET_SOCKS5_AUTH": "bob:" + pass}, "given twice", ""},
		{"open file", []string{"--socks5", "127.0.0.1:0", "--socks5-auth-file", open}, nil, "chmod 600 " + open, ""},
		{"short password", []string{"--socks5", "127.0.0.1:0", "--socks5-auth-file", short}, nil, "at least 16", ""},
		{"no colon", []string{"--socks5", "127.0.0.1:0", "--socks5-auth-file", noColon}, nil, "USER:PASSWORD", ""},
		{"credentials without --socks5", []string{"--socks5-auth-file", good}, nil, "go with --socks5", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := resolveArgs(t, tt.args, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			restore := getenv
			getenv = func(k string) string { return tt.env[k] }
			defer func() { getenv = restore }()
			ln, creds, err := s.listenSOCKS5()
			if ln != nil {
				defer ln.Close()
			}
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("listenSOCKS5 = %v, want an error mentioning %q", err, tt.errHas)
				}
				if ln != nil {
					t.Fatal("a listener was returned with the error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantUser == "" && creds != nil || tt.wantUser != "" && (creds == nil || creds.Username != tt.wantUser) {
				t.Fatalf("credentials %+v, want user %q", creds, tt.wantUser)
			}
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatalf("the listener does not accept: %v", err)
			}
			c.Close()
		})
	}
}

// TestSOCKS5UserspaceOnlyMesh: with the userspace adapter, the proxy of
// "plurenet up --socks5" (newSOCKS5Server) reaches a member by name, and
// answers "not allowed by ruleset" for this host's loopback and the LAN;
// with credentials it serves only clients that give them.
func TestSOCKS5UserspaceOnlyMesh(t *testing.T) {
	relayURL := startTestRelay(t)
	mk := func(name string) *overlay.Node {
		n, err := overlay.New(overlay.Config{
			StateDir:  privateDir(t),
			Topic:     "socks5-test",
			Secret:    "socks5 test secret 0123456789",
			Name:      name,
			Relays:    []string{relayURL},
			Transport: overlay.TransportRelay,
			Logger:    quietLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	a, b := mk("alpha"), mk("beta")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := a.WaitMember(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	bl, err := b.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	echotest.Serve(t, bl)
	// A service on this host's loopback: what the proxy must not reach.
	hostLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echotest.Serve(t, hostLn)

	creds := &socks5.Credentials{Username: "u", Password: "a-long-socks-password"}
	for _, withCreds := range []bool{false, true} {
		t.Run(fmt.Sprintf("credentials=%v", withCreds), func(t *testing.T) {
			var c *socks5.Credentials
			var auth *proxy.Auth
			if withCreds {
				c, auth = creds, &proxy.Auth{User: creds.Username, Password: creds.Password}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			sctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- newSOCKS5Server(a, c, quietLogger()).Serve(sctx, ln) }()
			t.Cleanup(func() { stop(); <-done })

			d, err := proxy.SOCKS5("tcp", ln.Addr().String(), auth, proxy.Direct)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", "beta:9000")
			if err != nil {
				t.Fatalf("member by name through SOCKS5: %v", err)
			}
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4)
			if _, err := io.ReadFull(conn, got); err != nil || string(got) != "ping" {
				t.Fatalf("echo through SOCKS5: %q, %v", got, err)
			}
			conn.Close()
			for _, target := range []string{hostLn.Addr().String(), "localhost:22", "10.1.2.3:80", "169.254.169.254:80"} {
				if c, err := d.Dial("tcp", target); err == nil {
					c.Close()
					t.Errorf("%s through SOCKS5: connected, want refused", target)
				} else if !strings.Contains(err.Error(), "not allowed by ruleset") {
					t.Errorf("%s through SOCKS5: %v, want not allowed by ruleset", target, err)
				}
			}
			if withCreds {
				nd, _ := proxy.SOCKS5("tcp", ln.Addr().String(), nil, proxy.Direct)
				if c, err := nd.Dial("tcp", "beta:9000"); err == nil {
					c.Close()
					t.Error("a client without credentials was served")
				}
			}
		})
	}
}

// startTestRelay runs an in-process relay on loopback until the test ends.
func startTestRelay(t *testing.T) string {
	t.Helper()
	srv, err := relayserver.New(relayserver.Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
		<-done
	})
	return "ws://" + ln.Addr().String()
}
