//go:build !unix

package relay

import "time"

// processCPU is not measured here; the benchmarks then report no CPU figure.
func processCPU() (time.Duration, bool) { return 0, false }
