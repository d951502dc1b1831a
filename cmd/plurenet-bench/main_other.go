//go:build !linux

// Command plurenet-bench is "make bench". It is built for Linux only: its
// lab rows build network namespaces and TUN devices, and its figures are
// compared between runs on one kind of machine. Elsewhere it says so and
// fails.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintf(os.Stderr, "plurenet-bench: built for Linux only, not %s (the bench builds network namespaces); run make bench on Linux\n", runtime.GOOS)
	os.Exit(1)
}
