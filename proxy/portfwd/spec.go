package portfwd

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// defaultLocalHost is where a spec's bare port binds or points: loopback,
// so a forward is not opened to the LAN unless the user names an address.
const defaultLocalHost = "127.0.0.1"

// maxHostLen is the longest DNS name (RFC 1035 §2.3.4); member names and
// local host names longer than that are typos or abuse.
const maxHostLen = 253

const (
	forwardForm = `want LOCAL=TARGET:PORT, where LOCAL is PORT or HOST:PORT (e.g. 8080=laptop:80, 127.0.0.1:8080=100.64.1.2:80, [::1]:8080=[fd5e::1]:80)`
	exposeForm  = `want PORT or PORT=HOST:PORT (e.g. 8080, or 8080=127.0.0.1:3000)`
)

// ForwardSpec is one --forward: connections to Listen on this machine reach
// Target:Port on the overlay.
type ForwardSpec struct {
	// Listen is the local "host:port" to listen on (host 127.0.0.1 when
	// the spec gives only a port, empty for all interfaces).
	Listen string
	// Target is an overlay IP literal or a member name to resolve.
	Target string
	// Port is the target's port.
	Port uint16
}

// TargetAddr returns "Target:Port", bracketing an IPv6 literal.
func (f ForwardSpec) TargetAddr() string {
	return net.JoinHostPort(f.Target, strconv.Itoa(int(f.Port)))
}

// ExposeSpec is one --expose: overlay connections to this node's Port reach
// the local service at Local.
type ExposeSpec struct {
	// Port is the overlay port to listen on.
	Port uint16
	// Local is the "host:port" of the local service.
	Local string
}

// ParseForward reads "LOCAL=TARGET:PORT" where LOCAL is "PORT" or
// "HOST:PORT" and TARGET is an IP or a member name.
func ParseForward(spec string) (ForwardSpec, error) {
	bad := func(format string, args ...any) (ForwardSpec, error) {
		return ForwardSpec{}, fmt.Errorf("forward %q: %s; %s", spec, fmt.Sprintf(format, args...), forwardForm)
	}
	local, target, ok := strings.Cut(spec, "=")
	if !ok {
		return bad(`missing "="`)
	}
	listen, err := parseLocal(local, true)
	if err != nil {
		return bad("local side: %v", err)
	}
	if target == "" {
		return bad("empty target")
	}
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return bad("target %q is not HOST:PORT", target)
	}
	port, err := parsePort(portStr)
	if err != nil {
		return bad("target: %v", err)
	}
	host, err = checkHost(host)
	if err != nil {
		return bad("target: %v", err)
	}
	if host == "" {
		return bad("empty target host")
	}
	return ForwardSpec{Listen: listen, Target: host, Port: port}, nil
}

// ParseExpose reads "PORT" (the local service is 127.0.0.1:PORT) or
// "PORT=HOST:PORT" (or "PORT=LOCALPORT", host 127.0.0.1).
func ParseExpose(spec string) (ExposeSpec, error) {
	bad := func(format string, args ...any) (ExposeSpec, error) {
		return ExposeSpec{}, fmt.Errorf("expose %q: %s; %s", spec, fmt.Sprintf(format, args...), exposeForm)
	}
	overlay, local, hasLocal := strings.Cut(spec, "=")
	port, err := parsePort(overlay)
	if err != nil {
		return bad("overlay port: %v", err)
	}
	if !hasLocal {
		return ExposeSpec{Port: port, Local: net.JoinHostPort(defaultLocalHost, strconv.Itoa(int(port)))}, nil
	}
	addr, err := parseLocal(local, false)
	if err != nil {
		return bad("local service: %v", err)
	}
	return ExposeSpec{Port: port, Local: addr}, nil
}

// parseLocal reads "PORT" or "HOST:PORT" into "host:port". allowEmptyHost
// admits ":PORT" (all interfaces), which makes sense to listen on but not to
// dial.
func parseLocal(s string, allowEmptyHost bool) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty address")
	}
	if !strings.ContainsAny(s, ":[]") {
		port, err := parsePort(s)
		if err != nil {
			return "", err
		}
		return net.JoinHostPort(defaultLocalHost, strconv.Itoa(int(port))), nil
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not PORT or HOST:PORT (bracket IPv6 addresses: [::1]:8080)", s)
	}
	port, err := parsePort(portStr)
	if err != nil {
		return "", err
	}
	host, err = checkHost(host)
	if err != nil {
		return "", err
	}
	if host == "" && !allowEmptyHost {
		return "", fmt.Errorf("empty host in %q", s)
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port))), nil
}

// parsePort accepts 1-65535 in decimal.
func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, fmt.Errorf("missing port")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("port %q is not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d out of range 1-65535", n)
	}
	return uint16(n), nil
}

// checkHost accepts an IP literal (normalised) or a host/member name made of
// letters, digits, '-', '_' and '.'.
func checkHost(h string) (string, error) {
	if h == "" {
		return "", nil
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Zone() != "" {
			return "", fmt.Errorf("address %q: zones are not supported", h)
		}
		return ip.Unmap().String(), nil
	}
	if len(h) > maxHostLen {
		return "", fmt.Errorf("host name longer than %d bytes", maxHostLen)
	}
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return "", fmt.Errorf("host %q: invalid character %q (want an IP or a name of letters, digits, '-', '_', '.')", h, r)
		}
	}
	return h, nil
}
