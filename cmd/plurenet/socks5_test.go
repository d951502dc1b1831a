package main

import (
	"net"
	"strings"
	"testing"
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
