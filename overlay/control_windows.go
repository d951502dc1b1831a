package overlay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/windows"

	"github.com/plures/plurenet/internal/ownerfs"
)

// listenControl listens on the control socket at path, which only the
// node's user may connect to. Windows has no umask, and chmod only sets the
// read-only attribute: who may connect to a Unix socket is decided by the
// socket file's access list, which it inherits from the state dir when it
// is created. So the state dir must let only the user, SYSTEM and
// Administrators in (ownerfs.Check), as it does when plurenet created it;
// a state dir that others may use is refused with the command that fixes
// it, rather than serving keys and addresses to them.
func listenControl(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	err = ownerfs.Check(d)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("control socket %s: state dir %s: %w", path, dir, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}

// noListener reports whether a dial error means no node listens: no
// socket file, or one that a dead node left (Winsock's own error number).
func noListener(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, windows.WSAECONNREFUSED)
}
