package main

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestNodeMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	setNodeMemoryLimit(func(string) string { return "" })
	if got := debug.SetMemoryLimit(-1); got != nodeMemoryLimit {
		t.Fatalf("without GOMEMLIMIT: limit %d, want %d", got, nodeMemoryLimit)
	}
	debug.SetMemoryLimit(math.MaxInt64)
	setNodeMemoryLimit(func(k string) string {
		if k == "GOMEMLIMIT" {
			return "1GiB"
		}
		return ""
	})
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("with GOMEMLIMIT set: limit changed to %d", got)
	}
}
