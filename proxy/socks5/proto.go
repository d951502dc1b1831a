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

// Protocol constants from RFC 1928 and RFC 1929.
const (
	version5 = 0x05

	methodNoAuth       = 0x00
	methodUserPass     = 0x02
	methodNoAcceptable = 0xFF

	// userPassVersion is the version of the username/password
	// subnegotiation (RFC 1929 §2); its status byte is 0 for success and
	// anything else for failure.
	userPassVersion = 0x01
	userPassOK      = 0x00
	userPassFailed  = 0x01

	cmdConnect = 0x01

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04

	// Reply codes (RFC 1928 §6).
	repSucceeded           = 0x00
	repGeneralFailure      = 0x01
	repNotAllowed          = 0x02 // "connection not allowed by ruleset"
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

// greeting is what a client's method selection message offers.
type greeting struct {
	noAuth, userPass bool
}

// readGreeting reads the client's method selection message (RFC 1928 §3)
// and reports which of the methods we support it offers: "no
// authentication" and username/password. Its size is bounded by the format:
// at most 2+255 bytes.
func readGreeting(r io.Reader) (greeting, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return greeting{}, fmt.Errorf("read greeting: %w", err)
	}
	if hdr[0] != version5 {
		return greeting{}, &protocolError{msg: fmt.Sprintf("greeting: version %d, want 5", hdr[0])}
	}
	if hdr[1] == 0 {
		return greeting{}, &protocolError{msg: "greeting: no authentication methods offered"}
	}
	var methods [255]byte
	if _, err := io.ReadFull(r, methods[:hdr[1]]); err != nil {
		return greeting{}, fmt.Errorf("read greeting methods: %w", err)
	}
	var g greeting
	for _, m := range methods[:hdr[1]] {
		switch m {
		case methodNoAuth:
			g.noAuth = true
		case methodUserPass:
			g.userPass = true
		}
	}
	return g, nil
}

// readUserPass reads a username/password request (RFC 1929 §2): version 1,
// then the username and the password, each 1 to 255 bytes after a length
// byte. Its size is bounded by the format: at most 3+255+255 bytes. The
// returned slices point into buf, which the caller clears after use.
func readUserPass(r io.Reader, buf *[2 * 255]byte) (user, pass []byte, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, nil, fmt.Errorf("read username/password: %w", err)
	}
	if hdr[0] != userPassVersion {
		return nil, nil, &protocolError{msg: fmt.Sprintf("username/password: version %d, want 1", hdr[0])}
	}
	ulen := int(hdr[1])
	if ulen == 0 {
		return nil, nil, &protocolError{msg: "username/password: empty username"}
	}
	// The username and the password's length byte in one read.
	if _, err := io.ReadFull(r, buf[:ulen+1]); err != nil {
		return nil, nil, fmt.Errorf("read username: %w", err)
	}
	plen := int(buf[ulen])
	if plen == 0 {
		return nil, nil, &protocolError{msg: "username/password: empty password"}
	}
	if _, err := io.ReadFull(r, buf[ulen:ulen+plen]); err != nil {
		return nil, nil, fmt.Errorf("read password: %w", err)
	}
	return buf[:ulen], buf[ulen : ulen+plen], nil
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
