// Package portfwd carries TCP connections between a listener and a dialer:
// the plumbing behind `plurenet up --forward` (a local port reaching a
// member's port over the overlay) and `--expose` (an overlay port reaching a
// local service). Both are one Forward call with the listener and dialer
// swapped; ParseForward and ParseExpose read the flags' specs.
package portfwd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

const (
	// MaxConns bounds the connections one Forward (or one SOCKS5 server)
	// carries at once. Each costs two goroutines and up to two copy
	// buffers; 1024 is far above interactive use and keeps a connection
	// flood to a few tens of MiB. Past it, Forward stops accepting until a
	// connection ends, leaving the rest in the listener's backlog.
	MaxConns = 1024

	// dialTimeout bounds one dial of the target so that an unreachable
	// member does not hold a connection slot for minutes of SYN retries.
	dialTimeout = 30 * time.Second

	// acceptBackoffMax caps the pause after a temporary Accept error
	// (EMFILE and the like), so the loop neither spins nor stalls long.
	acceptBackoffMax = time.Second
)

// Forward accepts connections on ln and, for each, dials the target with
// dial and splices the two until both directions end. It returns when ctx
// ends (nil) or ln fails or closes (the accept error), after closing ln and
// every connection it carries and waiting for their goroutines. A nil logger
// means slog.Default().
func Forward(ctx context.Context, ln net.Listener, dial func(ctx context.Context) (net.Conn, error), logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	return Serve(ctx, ln, logger, func(ctx context.Context, c net.Conn) {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		target, err := dial(dctx)
		cancel()
		if err != nil {
			logger.Warn("portfwd: dial target failed", "from", c.RemoteAddr(), "err", err)
			return
		}
		logger.Debug("portfwd: connection opened", "from", c.RemoteAddr(), "to", target.RemoteAddr())
		if err := Splice(ctx, c, target); err != nil {
			logger.Debug("portfwd: connection ended", "from", c.RemoteAddr(), "err", err)
		}
	})
}

// Serve is the accept loop shared by Forward and the SOCKS5 server: it runs
// handle for each accepted connection, at most MaxConns at a time, and closes
// the connection when handle returns or ctx ends. It returns when ctx ends
// (nil) or Accept fails with a permanent error (that error), after closing ln
// and waiting for every handler.
func Serve(ctx context.Context, ln net.Listener, logger *slog.Logger, handle func(ctx context.Context, c net.Conn)) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		ln.Close()
		wg.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	slots := make(chan struct{}, MaxConns)
	var backoff time.Duration
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := ln.Accept()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() && !errors.Is(err, net.ErrClosed) {
				backoff = min(max(2*backoff, 5*time.Millisecond), acceptBackoffMax)
				logger.Warn("accept failed, retrying", "listener", ln.Addr(), "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			defer c.Close()
			handle(ctx, c)
		}()
	}
}

// Splice copies a to b and b to a until both directions have ended, then
// closes both. When one direction reaches EOF, the destination's write side
// is shut (CloseWrite) so its peer sees EOF while the other direction keeps
// flowing; a conn without CloseWrite is closed outright instead. An error in
// either direction, or the end of ctx, closes both at once. It returns the
// first copy error, ctx's error if ctx ended, or nil when both ended cleanly.
func Splice(ctx context.Context, a, b net.Conn) error {
	stop := context.AfterFunc(ctx, func() {
		a.Close()
		b.Close()
	})
	defer stop()
	defer a.Close()
	defer b.Close()

	errc := make(chan error, 2)
	go func() { errc <- pipe(b, a) }()
	go func() { errc <- pipe(a, b) }()
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
			// Abort the other direction: the connection is broken.
			a.Close()
			b.Close()
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// pipe copies src to dst and, on EOF, half-closes dst.
func pipe(dst, src net.Conn) error {
	_, err := copyConn(dst, src)
	if errors.Is(err, net.ErrClosed) {
		// Splice itself closed the conn: the other direction ended it.
		return nil
	}
	if err != nil {
		return err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("close write: %w", err)
		}
		return nil
	}
	return dst.Close()
}
