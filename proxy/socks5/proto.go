package socks5

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// Protocol constants from RFC 1928.
const (
	version5 = 0x05

	methodNoAuth       = 0x00
	methodNoAcceptable = 0xFF

	cmdConnect = 0x01

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04

	// Reply codes (RFC 1928 §6).
	repSucceeded           = 0x00
	repGeneralFailure      = 0x01
	repNetworkUnreachable  = 0x03
	repHostUnreachable     = 0x04
	repConnectionRefused   = 0x05
	repCommandNotSupported = 0x07
	repAddrNotSupported    = 0x08
)

// request is a parsed SOCKS5 request. Exactly one of addr and host is set.
type request struct {
	cmd  byte
	addr netip.Addr // for IPv4 and IPv6 address types
	host string     // for the domain-name type (1-255 bytes, no NUL)
	port uint16
}

// target is "host:port" for logs and the dialer.
func (r request) target() string {
	h := r.host
	if r.addr.IsValid() {
		h = r.addr.String()
	}
	return net.JoinHostPort(h, strconv.Itoa(int(r.port)))
}

// protocolError is a malformed message: the server replies with code (when
// the exchange has reached the point where a reply is defined) and closes.
type protocolError struct {
	code byte // reply code to send; 0 means close without a reply
	msg  string
}

func (e *protocolError) Error() string { return e.msg }

// readGreeting reads the client's method selection message (RFC 1928 §3) and
// reports whether it offers "no authentication", the only method we support.
// Its size is bounded by the format: at most 2+255 bytes.
func readGreeting(r io.Reader) (noAuth bool, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return false, fmt.Errorf("read greeting: %w", err)
	}
	if hdr[0] != version5 {
		return false, &protocolError{msg: fmt.Sprintf("greeting: version %d, want 5", hdr[0])}
	}
	if hdr[1] == 0 {
		return false, &protocolError{msg: "greeting: no authentication methods offered"}
	}
	var methods [255]byte
	if _, err := io.ReadFull(r, methods[:hdr[1]]); err != nil {
		return false, fmt.Errorf("read greeting methods: %w", err)
	}
	for _, m := range methods[:hdr[1]] {
		if m == methodNoAuth {
			return true, nil
		}
	}
	return false, nil
}

// readRequest reads a request (RFC 1928 §4). Its size is bounded by the
// format: at most 4+1+255+2 bytes. A request it cannot serve (unknown command
// or address type) is returned with a protocolError carrying the reply code.
func readRequest(r io.Reader) (request, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return request{}, fmt.Errorf("read request: %w", err)
	}
	if hdr[0] != version5 {
		return request{}, &protocolError{code: repGeneralFailure, msg: fmt.Sprintf("request: version %d, want 5", hdr[0])}
	}
	req := request{cmd: hdr[1]}
	switch hdr[3] {
	case atypIPv4:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return request{}, fmt.Errorf("read IPv4 address: %w", err)
		}
		req.addr = netip.AddrFrom4(b)
	case atypIPv6:
		var b [16]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return request{}, fmt.Errorf("read IPv6 address: %w", err)
		}
		req.addr = netip.AddrFrom16(b).Unmap()
	case atypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return request{}, fmt.Errorf("read domain length: %w", err)
		}
		if n[0] == 0 {
			return request{}, &protocolError{code: repGeneralFailure, msg: "request: empty domain name"}
		}
		var b [255]byte
		if _, err := io.ReadFull(r, b[:n[0]]); err != nil {
			return request{}, fmt.Errorf("read domain: %w", err)
		}
		for _, c := range b[:n[0]] {
			if c == 0 {
				return request{}, &protocolError{code: repGeneralFailure, msg: "request: NUL byte in domain name"}
			}
		}
		req.host = string(b[:n[0]])
	default:
		return request{}, &protocolError{code: repAddrNotSupported, msg: fmt.Sprintf("request: address type %d not supported", hdr[3])}
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return request{}, fmt.Errorf("read port: %w", err)
	}
	req.port = binary.BigEndian.Uint16(p[:])
	if req.cmd != cmdConnect {
		return req, &protocolError{code: repCommandNotSupported, msg: fmt.Sprintf("request: command %d not supported (only CONNECT)", req.cmd)}
	}
	return req, nil
}

// appendReply encodes a reply (RFC 1928 §6) with bound address bnd; an
// invalid bnd is sent as 0.0.0.0:0.
func appendReply(b []byte, code byte, bnd netip.AddrPort) []byte {
	b = append(b, version5, code, 0x00)
	ip := bnd.Addr().Unmap()
	switch {
	case ip.Is4():
		b = append(b, atypIPv4)
		b = append(b, ip.AsSlice()...)
	case ip.Is6():
		b = append(b, atypIPv6)
		b = append(b, ip.AsSlice()...)
	default:
		b = append(b, atypIPv4, 0, 0, 0, 0)
		return binary.BigEndian.AppendUint16(b, 0)
	}
	return binary.BigEndian.AppendUint16(b, bnd.Port())
}

// errIsProtocol reports whether err is a malformed-message error.
func errIsProtocol(err error) (*protocolError, bool) {
	var pe *protocolError
	ok := errors.As(err, &pe)
	return pe, ok
}
