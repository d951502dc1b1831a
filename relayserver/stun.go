package relayserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/time/rate"
)

// The relay's STUN responder (RFC 5389 Binding only) tells a member the
// public address and port its UDP packets come from, the server-reflexive
// candidate ICE needs to punch through NATs. It keeps no state but a
// bounded table of per-source rate limiters.
//
// Amplification: a Binding Success carries only XOR-MAPPED-ADDRESS and
// FINGERPRINT, 40 bytes for IPv4 and 52 for IPv6; the smallest request is
// 20 bytes, so a spoofed request is reflected at most 2.6 times its size,
// and at most stunPerSourceRate times a second per source address and
// stunGlobalRate overall. Anything that is not a Binding Request is
// ignored, and so are requests larger than stunMaxRequest (no legitimate
// client sends one).
const (
	// stunMaxRequest: a Binding Request from an ICE agent is 20 to ~100
	// bytes; 548 is the RFC 5389 §7.1 size every path must carry, and
	// anything larger is not a request we serve.
	stunMaxRequest = 548
	// stunReadBuffer is larger than stunMaxRequest so that an oversized
	// datagram is recognised (and dropped) rather than silently truncated.
	stunReadBuffer = 2048
	// stunPerSourceRate and stunPerSourceBurst: ICE gathers once per session
	// per STUN server (plus retransmits), so a member needs a handful of
	// answers per minute; 10/s with a burst of 20 covers many members
	// behind one NAT address.
	stunPerSourceRate  = 10
	stunPerSourceBurst = 20
	// stunGlobalRate caps all answers: 20000/s × 52 bytes is ~1 MB/s, a
	// negligible reflection budget for anyone spoofing many sources.
	stunGlobalRate = 20000
	// stunMaxSources bounds the limiter table (~200 bytes an entry: under
	// 2 MB). When it is full, idle entries are evicted; if none is idle, new
	// sources share the global limiter only until some are.
	stunMaxSources = 8192
)

// ServeSTUN answers STUN Binding Requests on pc until ctx ends (it then
// returns nil) or pc fails. The caller owns pc and closes it after
// ServeSTUN returns.
func ServeSTUN(ctx context.Context, pc net.PacketConn, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	r := newSTUNResponder()
	stopWatch := context.AfterFunc(ctx, func() { _ = pc.SetReadDeadline(time.Now()) })
	defer stopWatch()
	buf := make([]byte, stunReadBuffer)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // a deadline left by someone else; ctx is still live
			}
			return fmt.Errorf("stun %s: read: %w", pc.LocalAddr(), err)
		}
		from := netAddrPort(addr)
		resp, ok := r.respond(buf[:n], from, time.Now())
		if !ok {
			continue
		}
		if _, err := pc.WriteTo(resp, addr); err != nil {
			logger.Debug("stun: answer not sent", "to", from.String(), "err", err)
		}
	}
}

func netAddrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// stunResponder turns requests into answers; it is not safe for concurrent
// use (ServeSTUN owns one).
type stunResponder struct {
	global  *rate.Limiter
	sources map[netip.Addr]*rate.Limiter
	req     stun.Message
	resp    stun.Message
}

func newSTUNResponder() *stunResponder {
	return &stunResponder{
		global:  rate.NewLimiter(stunGlobalRate, stunGlobalRate),
		sources: make(map[netip.Addr]*rate.Limiter),
	}
}

// respond returns the Binding Success for a Binding Request from from, or
// ok=false when the datagram gets no answer. The returned slice is valid
// until the next call.
func (r *stunResponder) respond(b []byte, from netip.AddrPort, now time.Time) ([]byte, bool) {
	if len(b) > stunMaxRequest || !stun.IsMessage(b) || !from.IsValid() || from.Port() == 0 {
		return nil, false
	}
	r.req.Reset()
	r.req.Raw = append(r.req.Raw[:0], b...)
	if err := r.req.Decode(); err != nil || r.req.Type != stun.BindingRequest {
		return nil, false
	}
	if !r.allow(from.Addr(), now) {
		return nil, false
	}
	r.resp.Reset()
	err := r.resp.Build(
		stun.NewTransactionIDSetter(r.req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())},
		stun.Fingerprint,
	)
	if err != nil {
		return nil, false
	}
	return r.resp.Raw, true
}

// allow applies the per-source and global rate limits.
func (r *stunResponder) allow(src netip.Addr, now time.Time) bool {
	l := r.sources[src]
	if l == nil {
		if len(r.sources) >= stunMaxSources {
			r.evictIdle(now)
		}
		if len(r.sources) < stunMaxSources {
			l = rate.NewLimiter(stunPerSourceRate, stunPerSourceBurst)
			r.sources[src] = l
		}
	}
	if l != nil && !l.AllowN(now, 1) {
		return false
	}
	return r.global.AllowN(now, 1)
}

// evictIdle forgets sources whose buckets have refilled: a fresh limiter
// would behave the same, so forgetting them changes nothing.
func (r *stunResponder) evictIdle(now time.Time) {
	for k, l := range r.sources {
		if l.TokensAt(now) >= stunPerSourceBurst {
			delete(r.sources, k)
		}
	}
}
