package deploy_test

import (
	"context"
	"os/exec"
	"testing"
)

// TestNodeUnits runs the Node relay's own unit tests (deploy/vercel/test,
// node:test): the queue interleavings that a socket on loopback never shows,
// with a fake socket.
func TestNodeUnits(t *testing.T) {
	needNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--test", "test/")
	cmd.Dir = nodeDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
}
