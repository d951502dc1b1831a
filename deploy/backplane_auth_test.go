package deploy_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/plures/plurenet/internal/testkit"
)

// accessKey looks like an Azure Managed Redis access key: base64, so it may
// hold '/', '+' and '=', which end or change a URL's authority unless they
// are percent-encoded.
const accessKey = "q7/Zr+Yh0a=Vb/9x+Km=="

// TestBackplanePassword: a Go and a Node relay share a Redis that requires
// a password holding '/', '+' and '=', given in the URL encoded as the Azure
// template encodes it (uriComponent). Both must authenticate for members on
// the two instances to see each other.
func TestBackplanePassword(t *testing.T) {
	redisURL := startRedisAuth(t, accessKey)
	if strings.Contains(redisURL, accessKey) {
		t.Fatalf("URL %q carries the key unencoded", redisURL)
	}
	i1 := impls[0].start(t, options{redis: redisURL})
	i2 := impls[1].start(t, options{redis: redisURL})
	a, b := meet(t, i1, i2, testkit.Key(t), testkit.Key(t), testkit.Admission(21))
	exchange(t, a, b)
}

// TestNodeBackplaneURLUnencoded: the Node relay refuses a backplane URL with
// the key pasted unencoded, says how to fix it, and does not print the key
// (the Go relay's side is relayserver's TestBackplaneURLNotEchoed).
func TestNodeBackplaneURLUnencoded(t *testing.T) {
	needNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "src/server.js", "--host", "127.0.0.1", "--port", "0")
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(), "VERCEL=", "PLURENET_RELAY_BACKPLANE=rediss://:"+accessKey+"@cache.example:10000/0")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("node relay with an unencoded key in the backplane URL: %v, want exit status 2\n%s", err, out)
	}
	for _, part := range strings.FieldsFunc(accessKey, func(r rune) bool { return r == '/' || r == '+' || r == '=' }) {
		if strings.Contains(string(out), part) {
			t.Errorf("output repeats part of the key (%q):\n%s", part, out)
		}
	}
	if !strings.Contains(string(out), "percent-encoded") {
		t.Errorf("output does not say the password must be percent-encoded:\n%s", out)
	}
}
