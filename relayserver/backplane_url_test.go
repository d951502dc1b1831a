package relayserver_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/plures/plurenet/relayserver"
)

// TestBackplaneURLNotEchoed: a backplane URL that does not parse (here a
// base64 access key pasted unencoded, as Azure hands it out) is refused with
// an error that says how to fix it and does not repeat the key, which would
// otherwise land in the logs.
func TestBackplaneURLNotEchoed(t *testing.T) {
	const key = "Kx9/ab+Zq2=" // an access key with '/', '+' and '='
	for _, url := range []string{
		"rediss://:" + key + "@relay.example:10000/0",
		"rediss://default:" + key + "@relay.example:10000/0",
	} {
		_, err := relayserver.New(relayserver.Config{Logger: slog.New(slog.DiscardHandler), Backplane: url})
		if err == nil {
			t.Fatalf("New accepted a backplane URL with an unencoded '/' in the password")
		}
		for _, part := range []string{key, "Kx9", "ab+Zq2"} {
			if strings.Contains(err.Error(), part) {
				t.Errorf("error %q repeats part of the password (%q)", err, part)
			}
		}
		if !strings.Contains(err.Error(), "percent-encoded") {
			t.Errorf("error %q does not say the password must be percent-encoded", err)
		}
	}
}
