package direct

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine (ours or an ICE
// agent's) outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
