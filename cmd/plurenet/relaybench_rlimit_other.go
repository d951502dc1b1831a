//go:build !unix

package main

// raiseFDLimit has nothing to raise here: Windows has no per-process limit
// on open sockets like RLIMIT_NOFILE (a process may hold millions of
// handles), so a run is bounded by memory alone. It reports 0 before and
// after, which the caller reads as "not raised".
func raiseFDLimit(need uint64) (before, after uint64, err error) {
	return 0, 0, nil
}
