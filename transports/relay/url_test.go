package relay

import (
	"strings"
	"testing"

	"github.com/plures/plurenet/internal/relayproto"
)

// urlCases are the rules of ParseURL, one case each. want is the normalized
// URL, or "" when the URL is refused with an error containing err.
var urlCases = []struct {
	name, in, want, err string
}{
	{name: "ws with port", in: "ws://127.0.0.1:8080", want: "ws://127.0.0.1:8080" + relayproto.Path},
	{name: "wss without port", in: "wss://relay.example", want: "wss://relay.example" + relayproto.Path},
	{name: "root path", in: "wss://relay.example/", want: "wss://relay.example" + relayproto.Path},
	{name: "path kept", in: "wss://relay.example/custom/path", want: "wss://relay.example/custom/path"},
	{name: "query kept", in: "wss://relay.example?x=1", want: "wss://relay.example" + relayproto.Path + "?x=1"},
	{name: "scheme case", in: "WSS://relay.example:443/", want: "wss://relay.example:443" + relayproto.Path},
	{name: "ipv6", in: "ws://[::1]:8080", want: "ws://[::1]:8080" + relayproto.Path},
	{name: "spaces around", in: " wss://relay.example\n", want: "wss://relay.example" + relayproto.Path},
	{name: "escaped path kept", in: "wss://relay.example/a%2Fb", want: "wss://relay.example/a%2Fb"},

	{name: "empty", in: "", err: "relay URL is empty"},
	{name: "only spaces", in: "  \t", err: "relay URL is empty"},
	{name: "too long", in: "wss://relay.example/" + strings.Repeat("a", maxURLLen), err: "over 2048"},
	{name: "no scheme", in: "relay.example", err: `has no scheme: write wss://relay.example`},
	{name: "no scheme with port", in: "relay.example:443", err: `has no scheme: write wss://relay.example:443`},
	{name: "http", in: "http://relay.example:8080/x", err: `write "ws://relay.example:8080/x"`},
	{name: "https", in: "https://relay.example", err: `write "wss://relay.example"`},
	{name: "other scheme", in: "ftp://relay.example", err: "scheme must be ws:// or wss://, not ftp://"},
	{name: "no host", in: "wss:///v1/relay", err: "has no host"},
	{name: "port only", in: "ws://:8080", err: "has no host"},
	{name: "empty port", in: "ws://relay.example:/", err: "empty port"},
	{name: "port zero", in: "ws://relay.example:0", err: "port 0 is not 1 to 65535"},
	{name: "port too big", in: "ws://relay.example:65536", err: "port 65536 is not 1 to 65535"},
	{name: "port not a number", in: "ws://relay.example:http", err: `relay URL "ws://relay.example:http"`},
	{name: "user info", in: "wss://user:secret@relay.example", err: "remove the user info"},
	{name: "empty user info", in: "wss://@relay.example", err: "remove the user info"},
	{name: "fragment", in: "wss://relay.example#frag", err: "remove the #fragment"},
	{name: "empty fragment", in: "wss://relay.example/#", err: "remove the #fragment"},
	{name: "bad escape", in: "wss://relay.example/%zz", err: `relay URL "wss://relay.example/%zz"`},
	{name: "control character", in: "wss://relay.example/\x7f", err: "invalid control character"},
}

func TestParseURL(t *testing.T) {
	for _, tt := range urlCases {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseURL(tt.in)
			if tt.want != "" {
				if err != nil {
					t.Fatalf("ParseURL(%q): %v", tt.in, err)
				}
				if u.String() != tt.want {
					t.Fatalf("ParseURL(%q) = %q, want %q", tt.in, u, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseURL(%q) = %q, want an error containing %q", tt.in, u, tt.err)
			}
			if !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("ParseURL(%q) error %q does not contain %q", tt.in, err, tt.err)
			}
		})
	}
}

// TestParseURLHidesPassword: a refused URL's error must not repeat the
// password it carried, since errors end up in logs.
func TestParseURLHidesPassword(t *testing.T) {
	for _, in := range []string{"wss://user:hunter2-secret@relay.example", "http://user:hunter2-secret@relay.example"} {
		_, err := ParseURL(in)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("ParseURL(%q) error = %v; want an error without the password", in, err)
		}
	}
}

// FuzzParseURL: relay URLs come from config files and the environment. Any
// input either fails with an error or yields a URL that keeps every rule
// and normalizes to itself.
func FuzzParseURL(f *testing.F) {
	for _, c := range urlCases {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		u, err := ParseURL(in)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		switch {
		case u.Scheme != "ws" && u.Scheme != "wss":
			t.Fatalf("ParseURL(%q) accepted scheme %q", in, u.Scheme)
		case u.User != nil:
			t.Fatalf("ParseURL(%q) accepted user info", in)
		case u.Fragment != "":
			t.Fatalf("ParseURL(%q) accepted a fragment", in)
		case u.Hostname() == "":
			t.Fatalf("ParseURL(%q) accepted no host", in)
		case u.Path == "" || u.Path == "/":
			t.Fatalf("ParseURL(%q) left the path %q", in, u.Path)
		}
		again, err := ParseURL(u.String())
		if err != nil {
			t.Fatalf("ParseURL(%q) = %q, which it then refuses: %v", in, u, err)
		}
		if again.String() != u.String() {
			t.Fatalf("ParseURL(%q) = %q, but that normalizes to %q", in, u, again)
		}
	})
}
