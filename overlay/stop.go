package overlay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Stopping a node from outside: `plurenet down --state-dir D` posts to the
// control socket, and the program that started the node (`plurenet up`)
// sees StopRequested close and stops as on SIGTERM: it closes the node,
// which sends the other members a Leave. The node does not close itself,
// because the program owns it and its other listeners (SOCKS5, forwards)
// and must stop those too before it exits.
//
// Who can ask: only a client of the control socket, which only the node's
// user can open (control_unix.go, control_windows.go).

// stopRequest is closed, once, when a control client asks for a stop.
type stopRequest struct {
	stopOnce sync.Once
	stopCh   chan struct{}
}

func (s *stopRequest) stopChan() chan struct{} {
	s.stopOnce.Do(func() { s.stopCh = make(chan struct{}) })
	return s.stopCh
}

// StopRequested is closed once a client of the control socket asked the
// program running the node to stop (RequestStop).
func (s *stopRequest) StopRequested() <-chan struct{} { return s.stopChan() }

// requestStop closes StopRequested; asking again changes nothing.
func (s *stopRequest) requestStop() {
	ch := s.stopChan()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// stopReply is the control socket's answer to POST /stop.
type stopReply struct {
	Stopping bool `json:"stopping"`
}

// stopPoll is how often WaitStopped looks whether the node is gone: a node
// leaves in well under a second, and a look is one connect on a local
// socket.
const stopPoll = 50 * time.Millisecond

// RequestStop asks the node running with stateDir to stop, and waits until
// its control socket no longer answers (the node has left the mesh and
// closed) or ctx ends.
func RequestStop(ctx context.Context, stateDir string) error {
	var rep stopReply
	if err := controlDo(ctx, stateDir, "POST", "/stop", nil, &rep); err != nil {
		return err
	}
	t := time.NewTicker(stopPoll)
	defer t.Stop()
	for {
		_, err := QueryStatus(ctx, stateDir)
		switch {
		case errors.Is(err, ErrNotRunning):
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("the node with state dir %s was asked to stop but still runs: %w", stateDir, ctx.Err())
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}
