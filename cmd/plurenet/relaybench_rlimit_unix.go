//go:build unix

package main

import (
	"fmt"
	"syscall"
)

// raiseFDLimit raises RLIMIT_NOFILE's soft limit to need (up to the hard
// limit, and the hard limit too when we may) and returns the soft limit
// before and after.
func raiseFDLimit(need uint64) (before, after uint64, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("reading the open-file limit: %w", err)
	}
	cur, hard := uint64(rl.Cur), uint64(rl.Max)
	if cur >= need {
		return cur, cur, nil
	}
	want := rl
	setRlimit(&want.Cur, &want.Max, need, max(hard, need)) // a higher hard limit works as root; otherwise fall back below
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		setRlimit(&want.Cur, &want.Max, hard, hard)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return cur, 0, fmt.Errorf("raising the open-file limit: %w", err)
		}
		if hard < need {
			return cur, hard, fmt.Errorf("open-file limit is %d, the run needs %d: raise the hard limit (ulimit -Hn) or use fewer --members", hard, need)
		}
	}
	return cur, uint64(want.Cur), nil
}

// setRlimit stores soft and hard limits into an Rlimit's fields, which are
// uint64 on Linux and macOS but int64 on FreeBSD.
func setRlimit[T int64 | uint64](curField, maxField *T, soft, hard uint64) {
	*curField, *maxField = T(soft), T(hard)
}
