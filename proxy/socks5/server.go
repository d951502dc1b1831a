// Package socks5 is a SOCKS5 proxy server (RFC 1928) into the mesh:
// applications that cannot dial the overlay themselves point at it and
// reach members by overlay IP or by member name. It supports what those
// clients need and nothing more: CONNECT only, no authentication or one
// username and password (RFC 1929).
//
// It reaches only what Config.Allow lists (plurenet gives it the mesh's own
// prefixes): a proxy that dialled anything would hand whoever can reach it
// this host's loopback services, its LAN and, in the cloud, the metadata
// service. Everything else gets "connection not allowed by ruleset".
package socks5

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/plures/plurenet/proxy/portfwd"
)

const (
	// handshakeTimeout bounds the greeting and request together, so a
	// client that connects and stalls cannot hold a connection slot.
	handshakeTimeout = 10 * time.Second

	// drainLimit bounds what the server reads and discards after a failure
	// reply before closing: closing with unread input makes the kernel send
	// a reset, which can destroy the reply before the client reads it. The
	// drain also stops at the handshake deadline.
	drainLimit = 4 << 10

	// dialTimeout bounds name resolution plus the dial of the target,
	// after which the client gets "host unreachable".
	dialTimeout = 30 * time.Second
)

// Config configures a Server. The zero value dials with net.Dialer, accepts
// only IP literals, asks for no authentication, logs to slog.Default() and
// allows no destination at all: Allow must say what the proxy is for.
type Config struct {
	// Dial opens the connection to the target, normally the overlay
	// stack's DialContext. network is always "tcp"; address is "ip:port".
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Resolve maps a member name to its overlay IP. nil means only IP
	// literals are accepted. A name it cannot resolve gets "connection
	// not allowed by ruleset": the proxy reaches members, and a name that
	// is not one is not a destination.
	Resolve func(ctx context.Context, host string) (netip.Addr, error)
	// Allow lists the networks the proxy may connect to. A request for
	// any other address (after name resolution) gets "connection not
	// allowed by ruleset" (RFC 1928 §6, reply 2) and is never dialled.
	Allow []netip.Prefix
	// Credentials, if set, is the username and password (RFC 1929) every
	// client must give; a client offering only "no authentication" is
	// refused. Without it anyone who can connect uses the proxy, so the
	// listener must be reachable only by trusted users (loopback).
	Credentials *Credentials
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Credentials are the one username and password a Server accepts. RFC 1929
// sends them in clear text: they keep strangers off a listener, they do
// not protect the session.
type Credentials struct {
	Username, Password string
}

// Server is a SOCKS5 server. It holds no state between Serve calls.
type Server struct {
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
	resolve func(ctx context.Context, host string) (netip.Addr, error)
	allow   []netip.Prefix
	creds   *Credentials
	logger  *slog.Logger
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	s := &Server{dial: cfg.Dial, resolve: cfg.Resolve, allow: append([]netip.Prefix(nil), cfg.Allow...), logger: cfg.Logger}
	if cfg.Credentials != nil {
		c := *cfg.Credentials
		s.creds = &c
	}
	if s.dial == nil {
		var d net.Dialer
		s.dial = d.DialContext
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	return s
}

// Serve accepts SOCKS5 clients on ln, at most portfwd.MaxConns at once. It
// returns when ctx ends (nil) or ln fails or closes (the accept error), after
// closing ln and every connection it carries and waiting for them.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := portfwd.Serve(ctx, ln, s.logger, s.handle); err != nil {
		return fmt.Errorf("socks5: %w", err)
	}
	return nil
}

// handle runs one client: handshake, request, dial, then splice. Serve
// closes c when it returns.
func (s *Server) handle(ctx context.Context, c net.Conn) {
	log := s.logger.With("client", c.RemoteAddr())
	c.SetDeadline(time.Now().Add(handshakeTimeout))

	if !s.authenticate(c, log) {
		return
	}

	req, err := readRequest(c)
	if err != nil {
		if pe, ok := errIsProtocol(err); ok && pe.code != 0 {
			reject(c, appendReply(nil, pe.code, netip.AddrPort{}))
		}
		log.Debug("socks5: bad request", "err", err)
		return
	}

	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	out, code, err := s.connect(dctx, req)
	cancel()
	if err != nil {
		c.SetDeadline(time.Now().Add(handshakeTimeout))
		reject(c, appendReply(nil, code, netip.AddrPort{}))
		log.Info("socks5: connect failed", "target", req.target(), "reply", code, "err", err)
		return
	}
	var bnd netip.AddrPort
	if a, ok := out.LocalAddr().(*net.TCPAddr); ok {
		bnd = a.AddrPort()
	}
	if _, err := c.Write(appendReply(nil, repSucceeded, bnd)); err != nil {
		out.Close()
		return
	}
	c.SetDeadline(time.Time{})
	log.Debug("socks5: connected", "target", req.target())
	if err := portfwd.Splice(ctx, c, out); err != nil {
		log.Debug("socks5: connection ended", "target", req.target(), "err", err)
	}
}

// authenticate runs method selection and, with credentials configured, the
// username/password subnegotiation (RFC 1929). It reports whether the
// client may go on to its request; if not, it has answered and the caller
// closes.
func (s *Server) authenticate(c net.Conn, log *slog.Logger) bool {
	g, err := readGreeting(c)
	if err != nil {
		log.Debug("socks5: bad greeting", "err", err)
		return false
	}
	if s.creds == nil {
		if !g.noAuth {
			reject(c, []byte{version5, methodNoAcceptable})
			log.Debug("socks5: client offers no acceptable auth method")
			return false
		}
		_, err := c.Write([]byte{version5, methodNoAuth})
		return err == nil
	}
	if !g.userPass {
		reject(c, []byte{version5, methodNoAcceptable})
		log.Debug("socks5: client does not offer username/password, which this proxy requires")
		return false
	}
	if _, err := c.Write([]byte{version5, methodUserPass}); err != nil {
		return false
	}
	var buf [2 * 255]byte
	defer clear(buf[:]) // the password does not outlive the check
	user, pass, err := readUserPass(c, &buf)
	if err != nil {
		if _, ok := errIsProtocol(err); ok {
			reject(c, []byte{userPassVersion, userPassFailed})
		}
		log.Debug("socks5: bad username/password request", "err", err)
		return false
	}
	// Both compared in constant time, and both always compared, so the
	// reply time says nothing about which was wrong or how much matched.
	okUser := subtle.ConstantTimeCompare(user, []byte(s.creds.Username))
	okPass := subtle.ConstantTimeCompare(pass, []byte(s.creds.Password))
	if okUser&okPass != 1 {
		reject(c, []byte{userPassVersion, userPassFailed})
		// Debug, not Info: a client guessing passwords would otherwise
		// write the log as fast as it can connect.
		log.Debug("socks5: wrong username or password")
		return false
	}
	_, err = c.Write([]byte{userPassVersion, userPassOK})
	return err == nil
}

// reject sends a final reply, shuts the write side and drains a little input
// so that the close is a FIN the client can read the reply before, not a
// reset. The caller's deadline bounds the wait.
func reject(c net.Conn, reply []byte) {
	if _, err := c.Write(reply); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, drainLimit))
}

// connect resolves req's host if it is a name, checks the address against
// the allowed networks and dials it, returning the reply code that
// describes a failure.
func (s *Server) connect(ctx context.Context, req request) (net.Conn, byte, error) {
	ip := req.addr
	if req.host != "" {
		if lit, err := netip.ParseAddr(req.host); err == nil && lit.Zone() == "" {
			ip = lit.Unmap()
		} else if s.resolve == nil {
			return nil, repNotAllowed, fmt.Errorf("resolve %q: no resolver, only IP addresses are accepted", req.host)
		} else {
			ip, err = s.resolve(ctx, req.host)
			if err != nil {
				return nil, repNotAllowed, fmt.Errorf("resolve %q: %w", req.host, err)
			}
			if !ip.IsValid() {
				return nil, repNotAllowed, fmt.Errorf("resolve %q: no address", req.host)
			}
			ip = ip.Unmap()
		}
	}
	if !s.allowed(ip) {
		return nil, repNotAllowed, fmt.Errorf("%s is outside the networks this proxy reaches (%v)", ip, s.allow)
	}
	c, err := s.dial(ctx, "tcp", netip.AddrPortFrom(ip, req.port).String())
	if err != nil {
		return nil, replyCode(err), err
	}
	return c, repSucceeded, nil
}

func (s *Server) allowed(ip netip.Addr) bool {
	if ip.Zone() != "" {
		return false // a scoped address is a link, not a mesh destination
	}
	for _, p := range s.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// replyCode maps a dial error to the closest SOCKS5 reply.
func replyCode(err error) byte {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return repConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return repNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ETIMEDOUT),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return repHostUnreachable
	}
	return repGeneralFailure
}
