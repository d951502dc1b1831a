package direct

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/plures/plurenet/internal/nodekey"
)

// Same-host evidence. Whether a peer runs on this host cannot come from
// what the peer says (its candidates, its announcement): a member elsewhere
// would just claim it. It comes from the kernel instead. Every Transport
// binds a Unix datagram socket in the abstract namespace under a name made
// of its public key, and asks for a peer's name with connect(2), which
// succeeds only if a socket of that name is bound. The abstract namespace
// belongs to the network namespace, exactly like loopback and the interface
// addresses the answer unlocks. Nothing is ever sent, so nothing queues.
//
// A process on this host could bind the name of a remote member's key and
// so unlock that member's loopback candidates; such a process can reach
// this host's loopback itself, so it gains nothing.

// markerPrefix starts every marker's abstract socket name ('@' is Go's
// spelling of the leading NUL).
const markerPrefix = "@plurenet-direct-"

// hostMarker is this node's marker and the socket that asks for others'.
type hostMarker struct {
	ln *net.UnixConn // bound to our name; never read

	mu    sync.Mutex
	probe int // unbound AF_UNIX datagram socket, made in New's namespace; -1 once closed
}

func markerName(k nodekey.Public) string { return markerPrefix + k.Hex() }

// newHostMarker binds self's marker in the calling thread's network
// namespace. A name already taken (another process with this key, or a
// squatter) is not an error: peers will still find a marker.
func newHostMarker(self nodekey.Public) (*hostMarker, error) {
	probe, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("direct: same-host probe socket: %w", err)
	}
	m := &hostMarker{probe: probe}
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: markerName(self), Net: "unixgram"})
	switch {
	case err == nil:
		m.ln = ln
	case errors.Is(err, unix.EADDRINUSE):
	default:
		unix.Close(probe)
		return nil, fmt.Errorf("direct: same-host marker: %w", err)
	}
	return m, nil
}

// present reports whether peer's marker is bound in our namespace.
func (m *hostMarker) present(peer nodekey.Public) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.probe < 0 {
		return false
	}
	err := unix.Connect(m.probe, &unix.SockaddrUnix{Name: markerName(peer)})
	// EAGAIN: the marker exists but its queue is full (it never is: we
	// never send). Anything else (ECONNREFUSED, ENOENT) means absent.
	return err == nil || errors.Is(err, unix.EAGAIN)
}

func (m *hostMarker) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.probe >= 0 {
		unix.Close(m.probe)
		m.probe = -1
	}
	if m.ln != nil {
		m.ln.Close()
	}
}
