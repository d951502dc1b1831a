package overlay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/plures/plurenet/internal/mesh"
)

// ControlSocketName is the file name of the control socket in the state dir.
const ControlSocketName = "plurenet.sock"

// maxSocketPath is the longest path a Unix socket address can hold on Linux
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// maxStatusResponse bounds what a status client reads: a status with a
// thousand members is well under a megabyte.
const maxStatusResponse = 8 << 20

// ControlSocketPath returns where a node with this state dir listens.
func ControlSocketPath(stateDir string) string {
	return filepath.Join(stateDir, ControlSocketName)
}

// controlServer serves the node's status over HTTP on a Unix socket that
// only the node's user can open (0600, or the state dir's owner-only access
// list on Windows: see listenControl): status shows keys and addresses, and
// later commands on this socket will change the node.
type controlServer struct {
	srv  *http.Server
	ln   net.Listener
	path string
	done chan struct{}
}

// controlled is what the control socket serves.
type controlled interface {
	Status() Status
	Ping(ctx context.Context, peer string) (PingResult, error)
	ApplyDocument(b []byte) (DocumentResult, error)
	requestStop()
}

// pingTimeout bounds one ping requested over the control socket.
const pingTimeout = 5 * time.Second

func startControl(stateDir string, node controlled, log *slog.Logger) (*controlServer, error) {
	path := ControlSocketPath(stateDir)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control socket path %s is %d bytes, longer than the %d a Unix socket allows: use a shorter --state-dir", path, len(path), maxSocketPath)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := listenControl(path)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			log.Debug("control: writing reply", "err", err)
		}
	}
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, node.Status())
	})
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), pingTimeout)
		defer cancel()
		res, err := node.Ping(ctx, r.URL.Query().Get("peer"))
		if err != nil {
			reply(w, http.StatusBadGateway, controlError{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /document", func(w http.ResponseWriter, r *http.Request) {
		// Anyone who can open the socket may hand over a document, but
		// only an owner-signed one newer than the node's is applied.
		b, err := io.ReadAll(io.LimitReader(r.Body, maxDocumentRequest+1))
		if err != nil || len(b) > maxDocumentRequest {
			reply(w, http.StatusBadRequest, controlError{Error: fmt.Sprintf("owner document: unreadable or over %d bytes", maxDocumentRequest)})
			return
		}
		res, err := node.ApplyDocument(b)
		if err != nil {
			reply(w, http.StatusUnprocessableEntity, controlError{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		node.requestStop() // stop.go
		reply(w, http.StatusOK, stopReply{Stopping: true})
	})
	c := &controlServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		path: path,
		done: make(chan struct{}),
	}
	go func() {
		defer close(c.done)
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("control socket stopped", "err", err)
		}
	}()
	return c, nil
}

// removeStaleSocket removes a socket left by a node that died, and refuses
// to start beside a node that is still running with the same state dir (two
// nodes with one key would fight over the relay connection).
func removeStaleSocket(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another plurenet node is running with this state dir (%s answers); stop it or use another --state-dir", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing stale control socket: %w", err)
	}
	return nil
}

func (c *controlServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.srv.Shutdown(ctx)
	<-c.done
	os.Remove(c.path)
	return err
}

// ErrNotRunning is returned by QueryStatus when no node answers on the
// state dir's control socket.
var ErrNotRunning = errors.New("no plurenet node is running with this state dir")

// controlError is the body of a failed control request.
type controlError struct {
	Error string `json:"error"`
}

// QueryStatus asks the node running with stateDir for its status.
func QueryStatus(ctx context.Context, stateDir string) (Status, error) {
	var st Status
	err := controlGet(ctx, stateDir, "/status", &st)
	return st, err
}

// QueryPing asks the node running with stateDir to ping a member.
func QueryPing(ctx context.Context, stateDir, peer string) (PingResult, error) {
	var res PingResult
	err := controlGet(ctx, stateDir, "/ping?peer="+url.QueryEscape(peer), &res)
	return res, err
}

// maxDocumentRequest bounds an owner document handed over the control
// socket: one fits a sealed message.
const maxDocumentRequest = mesh.MaxSealed

// PushDocument hands an owner document to the node running with stateDir,
// which applies and spreads it.
func PushDocument(ctx context.Context, stateDir string, doc []byte) (DocumentResult, error) {
	var res DocumentResult
	err := controlDo(ctx, stateDir, http.MethodPost, "/document", doc, &res)
	return res, err
}

func controlGet(ctx context.Context, stateDir, path string, out any) error {
	return controlDo(ctx, stateDir, http.MethodGet, path, nil, out)
}

func controlDo(ctx context.Context, stateDir, method, path string, body []byte, out any) error {
	sock := ControlSocketPath(stateDir)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, "http://plurenet"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		if noListener(err) {
			return fmt.Errorf("%w (%s)", ErrNotRunning, sock)
		}
		return fmt.Errorf("control socket %s: %w", sock, err)
	}
	defer resp.Body.Close()
	reply := io.LimitReader(resp.Body, maxStatusResponse)
	if resp.StatusCode != http.StatusOK {
		var ce controlError
		if json.NewDecoder(reply).Decode(&ce) == nil && ce.Error != "" {
			return errors.New(ce.Error)
		}
		return fmt.Errorf("control socket %s: %s", sock, resp.Status)
	}
	if err := json.NewDecoder(reply).Decode(out); err != nil {
		return fmt.Errorf("control socket %s: decoding reply: %w", sock, err)
	}
	return nil
}
