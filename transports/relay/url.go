package relay

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/plures/plurenet/internal/relayproto"
)

// maxURLLen bounds a relay URL. Relay URLs come from flags, environment
// variables and config files; 2 KiB is far above any real one (a host name
// is at most 253 bytes) and keeps a wrong value (a pasted file) from being
// parsed and echoed back in full.
const maxURLLen = 2048

// ParseURL is the one place a relay URL is checked and put in shape. The
// relay client, the node's config and every command that takes a relay URL
// call it, so that a URL accepted in one place is accepted in all of them,
// and refused with the same words.
//
// The rules:
//   - Spaces around the URL are dropped: a value read from a file or an
//     environment variable often ends in a newline.
//   - The scheme is ws:// or wss:// (any case). http:// and https:// are
//     refused with the ws:// or wss:// spelling to use instead: the relay
//     speaks WebSocket, and silently rewriting would hide which of the two
//     (plain or TLS) the user meant when a config mixes them.
//   - A host is required; a port, when given, is 1 to 65535.
//   - No user info (user:password@): the relay protocol authenticates with
//     node keys, so credentials would be sent nowhere useful and end up in
//     logs and status output.
//   - No fragment (#...): it is never sent to a server, so it can only be a
//     mistake.
//   - The path and query are kept; an empty path or "/" means
//     relayproto.Path.
//
// The result's String() is the normalized URL. Applied to it, ParseURL
// returns the same URL again.
func ParseURL(raw string) (*url.URL, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return nil, errors.New("relay URL is empty: give ws://HOST:PORT or wss://HOST")
	}
	if len(s) > maxURLLen {
		return nil, fmt.Errorf("relay URL is %d bytes, over %d: is this the right value?", len(s), maxURLLen)
	}
	if !strings.Contains(s, "://") {
		return nil, fmt.Errorf("relay URL %q has no scheme: write wss://%s (TLS) or ws://%s (plain)", s, s, s)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL we name anyway
		}
		return nil, fmt.Errorf("relay URL %q: %v", s, err)
	}
	if u.User != nil {
		u.User = nil // never echo the password
		return nil, fmt.Errorf("relay URL %q: remove the user info (the part before @): relays authenticate members by their keys, and a password here would only end up in logs", u.String())
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http", "https":
		want := *u
		want.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
		return nil, fmt.Errorf("relay URL %q: the relay speaks WebSocket: write %q", s, want.String())
	default:
		return nil, fmt.Errorf("relay URL %q: scheme must be ws:// or wss://, not %s://", s, u.Scheme)
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return nil, fmt.Errorf("relay URL %q has no host: write %s://HOST[:PORT][/PATH]", s, u.Scheme)
	}
	if strings.HasSuffix(u.Host, ":") {
		return nil, fmt.Errorf("relay URL %q: empty port after the colon: give one or drop the colon", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("relay URL %q: port %s is not 1 to 65535", s, p)
		}
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return nil, fmt.Errorf("relay URL %q: remove the #fragment: it is never sent to the relay", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = relayproto.Path
		u.RawPath = ""
	}
	return u, nil
}
