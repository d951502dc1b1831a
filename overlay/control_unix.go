//go:build !windows

package overlay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// listenControl listens on the control socket at path, which only the
// node's user may connect to. The umask makes the socket 0600 from its
// creation, so no other user can connect in the moment before the chmod
// (which makes it so whatever the umask did).
func listenControl(path string) (net.Listener, error) {
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}

// noListener reports whether a dial error means no node listens: no
// socket file, or one that a dead node left.
func noListener(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)
}
