package netlab

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// sweepStale deletes lab namespaces whose owning test process (the PID in
// the name) no longer exists: leftovers of a run that crashed or was killed
// before its cleanup ran. It returns a line per namespace removed or failed.
//
// A namespace whose PID was reused by an unrelated live process is kept
// until that process exits: telling the two apart needs clock arithmetic
// that can misjudge a live run, and deleting a live run's network is worse
// than keeping a stale one a little longer.
func sweepStale() []string {
	names, err := Names(nsFamily)
	if err != nil {
		return []string{fmt.Sprintf("stale sweep: %v", err)}
	}
	var msgs []string
	for _, name := range names {
		pid, ok := ownerPID(name)
		if !ok || pid == os.Getpid() || processExists(pid) {
			continue
		}
		if err := deleteNamespace(name); err != nil {
			msgs = append(msgs, fmt.Sprintf("stale sweep: %v", err))
			continue
		}
		msgs = append(msgs, fmt.Sprintf("removed stale namespace %s (its test process %d is gone)", name, pid))
	}
	return msgs
}

// ownerPID extracts the owning PID from one of our namespace names.
func ownerPID(name string) (int, bool) {
	m := nsPattern.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// processExists reports whether a process with this PID exists (zombies
// included).
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// killPID sends SIGKILL to pid.
func killPID(pid int) error {
	return syscall.Kill(pid, syscall.SIGKILL)
}
