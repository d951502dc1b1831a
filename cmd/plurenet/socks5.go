package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/plures/plurenet/overlay"
	"github.com/plures/plurenet/proxy/socks5"
)

// The SOCKS5 proxy hands whoever can connect to it this node's place in the
// mesh. On loopback that is this host's users (credentials keep out the
// others); anywhere else it is everyone on those networks, so a
// non-loopback address needs --socks5-allow-remote and credentials.

// minSOCKS5Password is the shortest password a SOCKS5 proxy takes: the
// proxy answers every guess at once, so only a long password makes
// guessing it over the LAN hopeless. 16 characters as for the mesh secret.
const minSOCKS5Password = 16

// maxSOCKS5Field is RFC 1929's limit on a username and a password.
const maxSOCKS5Field = 255

// listenSOCKS5 checks the SOCKS5 settings and opens the listener (nil
// without --socks5), before the node starts, so that a refused address
// fails the command at once.
func (s *upSettings) listenSOCKS5() (net.Listener, *socks5.Credentials, error) {
	creds, err := s.socks5Credentials()
	if err != nil {
		return nil, nil, err
	}
	if s.SOCKS5 == "" {
		if creds != nil || s.SOCKS5Remote {
			return nil, nil, usageErrorf("SOCKS5 credentials and --socks5-allow-remote go with --socks5 ADDRESS")
		}
		return nil, nil, nil
	}
	ln, err := net.Listen("tcp", s.SOCKS5)
	if err != nil {
		return nil, nil, fmt.Errorf("SOCKS5 listener: %w", err)
	}
	// Judge the address actually bound: "localhost" or a name may resolve
	// to anything, and ":1080" binds every interface.
	if ip := ln.Addr().(*net.TCPAddr).AddrPort().Addr().Unmap(); !ip.IsLoopback() {
		switch {
		case !s.SOCKS5Remote:
			ln.Close()
			return nil, nil, usageErrorf("--socks5 %s listens on %s, beyond this host: anyone who reaches it would use the mesh as this node. Use a loopback address (127.0.0.1:1080), or add --socks5-allow-remote with credentials (--socks5-auth-file)", s.SOCKS5, ln.Addr())
		case creds == nil:
			ln.Close()
			return nil, nil, usageErrorf("--socks5-allow-remote needs credentials: --socks5-auth-file FILE holding USER:PASSWORD (chmod 600), or PLURENET_SOCKS5_AUTH")
		}
	}
	return ln, creds, nil
}

// newSOCKS5Server is the proxy of --socks5: it reaches members, by name or
// overlay address, and nothing else, with either adapter.
func newSOCKS5Server(node *overlay.Node, creds *socks5.Credentials, log *slog.Logger) *socks5.Server {
	return socks5.New(socks5.Config{
		Dial:        node.Dial,
		Resolve:     func(_ context.Context, host string) (netip.Addr, error) { return node.Resolve(host) },
		Allow:       node.MeshPrefixes(),
		Credentials: creds,
		Logger:      log,
	})
}

// socks5Credentials reads USER:PASSWORD from --socks5-auth-file or
// PLURENET_SOCKS5_AUTH (never a flag: see secrets.go); nil when neither is
// set.
func (s *upSettings) socks5Credentials() (*socks5.Credentials, error) {
	env := getenv("PLURENET_SOCKS5_AUTH")
	var line, from string
	switch {
	case s.SOCKS5Auth != "" && env != "":
		return nil, usageErrorf("SOCKS5 credentials are given twice: --socks5-auth-file and PLURENET_SOCKS5_AUTH: give one")
	case s.SOCKS5Auth != "":
		var err error
		if line, err = readSecretFile("socks5-auth-file", s.SOCKS5Auth); err != nil {
			return nil, err
		}
		from = s.SOCKS5Auth
	case env != "":
		line, from = env, "PLURENET_SOCKS5_AUTH"
	default:
		return nil, nil
	}
	user, pass, ok := strings.Cut(line, ":")
	switch {
	case !ok || user == "" || pass == "":
		return nil, usageErrorf("SOCKS5 credentials in %s: want USER:PASSWORD on one line", from)
	case len(user) > maxSOCKS5Field || len(pass) > maxSOCKS5Field:
		return nil, usageErrorf("SOCKS5 credentials in %s: username and password are at most %d bytes each (RFC 1929)", from, maxSOCKS5Field)
	case len(pass) < minSOCKS5Password:
		return nil, usageErrorf("SOCKS5 password in %s is %d characters: use at least %d (\"plurenet key generate\" makes a strong one)", from, len(pass), minSOCKS5Password)
	}
	return &socks5.Credentials{Username: user, Password: pass}, nil
}
