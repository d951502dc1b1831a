// Package socks5 is a SOCKS5 proxy server (RFC 1928) for the userspace
// adapter: applications that cannot dial the overlay themselves point at it
// and reach members by overlay IP or by member name. It supports what those
// clients need and nothing more: no authentication (it listens on loopback)
// and CONNECT only.
package socks5

import (
	"context"
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
// only IP literals and logs to slog.Default().
type Config struct {
	// Dial opens the connection to the target, normally the overlay
	// stack's DialContext. network is always "tcp"; address is "ip:port".
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Resolve maps a member name to its overlay IP. nil means only IP
	// literals are accepted; a name it cannot resolve gets "host
	// unreachable".
	Resolve func(ctx context.Context, host string) (netip.Addr, error)
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Server is a SOCKS5 server. It holds no state between Serve calls.
type Server struct {
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
	resolve func(ctx context.Context, host string) (netip.Addr, error)
	logger  *slog.Logger
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	s := &Server{dial: cfg.Dial, resolve: cfg.Resolve, logger: cfg.Logger}
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

	noAuth, err := readGreeting(c)
	if err != nil {
		log.Debug("socks5: bad greeting", "err", err)
		return
	}
	if !noAuth {
		reject(c, []byte{version5, methodNoAcceptable})
		log.Debug("socks5: client offers no acceptable auth method")
		return
	}
	if _, err := c.Write([]byte{version5, methodNoAuth}); err != nil {
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

// connect resolves req's host if it is a name and dials it, returning the
// reply code that describes a failure.
func (s *Server) connect(ctx context.Context, req request) (net.Conn, byte, error) {
	ip := req.addr
	if req.host != "" {
		if lit, err := netip.ParseAddr(req.host); err == nil && lit.Zone() == "" {
			ip = lit.Unmap()
		} else if s.resolve == nil {
			return nil, repHostUnreachable, fmt.Errorf("resolve %q: no resolver, only IP addresses are accepted", req.host)
		} else {
			ip, err = s.resolve(ctx, req.host)
			if err != nil {
				return nil, repHostUnreachable, fmt.Errorf("resolve %q: %w", req.host, err)
			}
			if !ip.IsValid() {
				return nil, repHostUnreachable, fmt.Errorf("resolve %q: no address", req.host)
			}
		}
	}
	c, err := s.dial(ctx, "tcp", netip.AddrPortFrom(ip, req.port).String())
	if err != nil {
		return nil, replyCode(err), err
	}
	return c, repSucceeded, nil
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
