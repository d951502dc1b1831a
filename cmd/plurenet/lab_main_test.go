package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test of the package leaks a goroutine, and
// removes the plurenet binary the lab tests built.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		labBinary.mu.Lock()
		if labBinary.dir != "" {
			os.RemoveAll(labBinary.dir)
		}
		labBinary.mu.Unlock()
		os.Exit(code)
	}))
}

// labBinary is the plurenet binary the lab tests run inside network
// namespaces. A node cannot run in-process there: its goroutines dial relays
// from arbitrary OS threads, which are in the test's namespace, not the
// host's. It is built once per test binary, on first use, so that runs
// that skip the lab (not root, -short) do not pay for the build.
var labBinary struct {
	once sync.Once
	mu   sync.Mutex
	dir  string // removed by TestMain
	path string
	err  error
}

// plurenetBinary returns the path of a freshly built plurenet, or fails t.
// It is built without -race even when the tests run with it: the lab
// measures nothing, but a race-instrumented node is several times slower
// and makes the relay-restart transfer needlessly long.
func plurenetBinary(t *testing.T) string {
	t.Helper()
	labBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "plurenet-lab-bin-")
		if err != nil {
			labBinary.err = err
			return
		}
		labBinary.mu.Lock()
		labBinary.dir = dir
		labBinary.mu.Unlock()
		// World-readable, so that the privilege test can run it as
		// nobody.
		if err := os.Chmod(dir, 0o755); err != nil {
			labBinary.err = err
			return
		}
		path := filepath.Join(dir, "plurenet")
		// go test puts GOROOT/bin first on the PATH of test binaries.
		cmd := exec.Command("go", "build", "-o", path, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			labBinary.err = fmt.Errorf("go build -o %s: %w\n%s", path, err, out)
			return
		}
		labBinary.path = path
	})
	if labBinary.err != nil {
		t.Fatalf("building plurenet for the lab: %v", labBinary.err)
	}
	return labBinary.path
}
