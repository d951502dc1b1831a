// Package httpserve runs an http.Server for as long as a context lives:
// the shape of every listener plurenet serves on the side of its main job
// (the node's and the relay's metrics).
package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Serve serves hs on ln until ctx ends, then shuts hs down, giving
// requests in flight up to slack to finish, and returns nil. It returns
// the error if serving fails first. ln is closed either way.
func Serve(ctx context.Context, hs *http.Server, ln net.Listener, slack time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), slack)
	defer cancel()
	err := hs.Shutdown(stopCtx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
