package main

import (
	"fmt"
	"log/slog"
	"net"
	"time"
)

// systemd readiness (sd_notify(3)). The units in packaging/systemd are
// Type=notify, so "systemctl start" returns, and units ordered after
// plurenet@NAME start, only once the node is really up: its key loaded, its
// transports and listeners open, its control socket answering. The protocol
// is one datagram of NAME=VALUE lines to the Unix socket named by
// $NOTIFY_SOCKET, so it needs no library. Outside systemd the variable is
// unset and nothing is sent.

// notifyTimeout bounds one notification: systemd reads its socket at once,
// and a stuck write must never hold up the node.
const notifyTimeout = time.Second

// systemdReady tells systemd that the service is up, with status as the
// line "systemctl status" shows, and returns the function that tells it the
// service is stopping. A failure is logged, not returned: the service works
// the same without systemd, and under systemd the unit's start timeout
// reports a readiness that never came.
func systemdReady(log *slog.Logger, status string) (stopping func()) {
	notify := func(state string) {
		if err := sdNotify(state); err != nil {
			log.Warn("cannot notify systemd", "state", state, "err", err)
		}
	}
	notify("READY=1\nSTATUS=" + status)
	return func() { notify("STOPPING=1") }
}

// sdNotify sends state to the socket named by $NOTIFY_SOCKET, if set.
func sdNotify(state string) error {
	path := getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	// systemd passes a file system path, or an abstract socket name
	// with a leading '@' (which Go's net package maps to the abstract
	// namespace on Linux).
	if path[0] != '/' && path[0] != '@' {
		return fmt.Errorf("NOTIFY_SOCKET %q: want an absolute path or an @abstract name", path)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", path, err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(notifyTimeout)); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", path, err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", path, err)
	}
	return nil
}
