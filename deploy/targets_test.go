package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

// patience bounds every wait in these tests (testkit.Patience).
const patience = testkit.Patience

// npmTimeout bounds installing the Node relay's two dependencies.
const npmTimeout = 5 * time.Minute

// options configure one relay instance under test; zero values are the
// implementation's defaults.
type options struct {
	lifetime     time.Duration // MaxConnLifetime / --max-conn-lifetime
	drainGrace   time.Duration // DrainGrace / --drain-grace
	writeTimeout time.Duration // WriteTimeout / --write-timeout
	redis        string        // backplane URL
	maxMembers   int           // MaxMembersPerRendezvous / --max-members
	rate         int           // RateBytesPerSec / --rate
	rateBurst    int           // RateBurstBytes / --rate-burst
	perIP        int           // MaxConnsPerIP / --max-conns-per-ip
	trustProxy   bool          // TrustProxyHeaders / --trust-proxy-headers
	metrics      bool          // serve metrics on a listener of their own
}

// target is one running relay instance.
type target struct {
	url     string // ws://127.0.0.1:port/v1/relay
	base    string // http://127.0.0.1:port
	metrics string // http://127.0.0.1:otherport, with options.metrics
	// stop begins what SIGTERM begins (a drain) and returns a function that
	// waits for the instance to have stopped and reports how it ended.
	stop func() (wait func() error)
}

// impl is a relay implementation.
type impl struct {
	name  string
	start func(t *testing.T, o options) *target
}

var impls = []impl{
	{name: "go", start: startGo},
	{name: "node", start: startNode},
}

// startGo runs relayserver in process, served by Serve as cmd/plurenet's
// relay command serves it: cancelling Serve's context is what its SIGTERM
// handler does.
func startGo(t *testing.T, o options) *target {
	t.Helper()
	srv, err := relayserver.New(relayserver.Config{
		Logger:                  slog.New(slog.DiscardHandler),
		MaxConnLifetime:         o.lifetime,
		DrainGrace:              o.drainGrace,
		WriteTimeout:            o.writeTimeout,
		Backplane:               o.redis,
		MaxMembersPerRendezvous: o.maxMembers,
		RateBytesPerSec:         o.rate,
		RateBurstBytes:          o.rateBurst,
		MaxConnsPerIP:           o.perIP,
		TrustProxyHeaders:       o.trustProxy,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, "", "") }()
	metricsURL := ""
	if o.metrics {
		mln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		metricsURL = "http://" + mln.Addr().String()
		mdone := make(chan error, 1)
		go func() { mdone <- srv.ServeMetrics(ctx, mln) }()
		t.Cleanup(func() {
			cancel()
			if err := <-mdone; err != nil {
				t.Errorf("metrics listener: %v", err)
			}
		})
	}
	var once sync.Once
	var serveErr error
	wait := func() error {
		once.Do(func() { serveErr = <-done })
		return serveErr
	}
	t.Cleanup(func() {
		cancel()
		_ = wait()
		srv.Close()
	})
	addr := ln.Addr().String()
	return &target{
		url:     "ws://" + addr + relayproto.Path,
		base:    "http://" + addr,
		metrics: metricsURL,
		stop: func() func() error {
			cancel()
			return wait
		},
	}
}

// nodeDir is the Node relay's directory, relative to this package.
const nodeDir = "vercel"

var (
	npmOnce sync.Once
	npmErr  error
	npmOut  []byte
)

// needNode skips the test when node is not installed, and installs the
// Node relay's dependencies (npm ci) when they are missing and npm is there.
func needNode(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed (scripts/deps.sh installs nodejs and npm): skipping the Node relay")
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "ws")); err == nil {
		if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "ioredis")); err == nil {
			return
		}
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("deploy/vercel/node_modules is missing and npm is not installed: skipping the Node relay (run npm ci there)")
	}
	npmOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), npmTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = nodeDir
		npmOut, npmErr = cmd.CombinedOutput()
	})
	if npmErr != nil {
		t.Fatalf("npm ci in deploy/vercel failed: %v\n%s", npmErr, npmOut)
	}
}

// lockedBuffer collects a child's stderr for failure reports.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // keep the first MiB: enough to see what went wrong
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var (
	listenLine  = regexp.MustCompile(`listening on http://127\.0\.0\.1:(\d+)/v1/relay`)
	metricsLine = regexp.MustCompile(`metrics on http://127\.0\.0\.1:(\d+)/metrics`)
)

// startNode runs the Node relay as a child process on a free port (it
// binds port 0 and prints the one it got) and waits for /healthz.
func startNode(t *testing.T, o options) *target {
	t.Helper()
	needNode(t)
	args := []string{"src/server.js", "--host", "127.0.0.1", "--port", "0"}
	if o.lifetime > 0 {
		args = append(args, "--max-conn-lifetime", fmt.Sprintf("%dms", o.lifetime.Milliseconds()))
	}
	if o.drainGrace > 0 {
		args = append(args, "--drain-grace", fmt.Sprintf("%dms", o.drainGrace.Milliseconds()))
	}
	if o.writeTimeout > 0 {
		args = append(args, "--write-timeout", fmt.Sprintf("%dms", o.writeTimeout.Milliseconds()))
	}
	if o.redis != "" {
		args = append(args, "--redis", o.redis)
	}
	for _, f := range []struct {
		flag string
		v    int
	}{{"--max-members", o.maxMembers}, {"--rate", o.rate}, {"--rate-burst", o.rateBurst}, {"--max-conns-per-ip", o.perIP}} {
		if f.v != 0 {
			args = append(args, f.flag, strconv.Itoa(f.v))
		}
	}
	if o.trustProxy {
		args = append(args, "--trust-proxy-headers")
	}
	if o.metrics {
		args = append(args, "--metrics-listen", "127.0.0.1:0")
	}
	if os.Getenv("RELAY_TEST_LOG") != "" {
		args = append(args, "--log-level", "debug")
	}
	cmd := exec.Command("node", args...)
	cmd.Dir = nodeDir
	// The child must not pick up a developer's settings.
	cmd.Env = append(os.Environ(), "VERCEL=", "PORT=", "HOST=", "PLURENET_RELAY_BACKPLANE=", "PLURENET_RELAY_MAX_CONN_LIFETIME=", "PLURENET_RELAY_SINGLE_INSTANCE=", "PLURENET_RELAY_METRICS_LISTEN=")
	port, c := startChild(t, "node relay", cmd, listenLine)
	if port == "" {
		t.Fatalf("node relay exited before listening: %v\n%s", c.err, c.stderr.String())
	}
	base := "http://127.0.0.1:" + port
	waitHealthy(t, base)
	metricsURL := ""
	if o.metrics {
		// The Node relay prints its metrics line before the listening one.
		m := metricsLine.FindStringSubmatch(c.stdout.String())
		if m == nil {
			t.Fatalf("node relay printed no metrics line before listening:\n%s", c.stdout.String())
		}
		metricsURL = "http://127.0.0.1:" + m[1]
	}
	return &target{
		url:     "ws://127.0.0.1:" + port + relayproto.Path,
		base:    base,
		metrics: metricsURL,
		stop: func() func() error {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return func() error {
				select {
				case <-c.done:
					return c.err
				case <-time.After(patience):
					return errors.New("node relay did not exit after SIGTERM")
				}
			}
		},
	}
}

// waitHealthy polls GET /healthz until it answers 200.
func waitHealthy(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		code, _ := get(t, base+"/healthz")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/healthz never answered 200 (last %d)", base, code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get returns the status and body of a GET, or 0 when the request failed.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// startRedis runs a redis-server child process on a free 127.0.0.1 port
// without persistence, or skips the test when none is installed.
func startRedis(t *testing.T) string {
	t.Helper()
	return startRedisAuth(t, "")
}

// startRedisAuth is startRedis with a password (none when empty). The URL
// it returns carries the password percent-encoded the way the Azure template
// encodes an access key (uriComponent).
func startRedisAuth(t *testing.T, password string) string {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed (scripts/deps.sh installs it): skipping the backplane tests")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--loglevel", "warning"}
	userinfo := ""
	if password != "" {
		args = append(args, "--requirepass", password)
		userinfo = ":" + uriComponent(password) + "@"
	}
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(patience)
	for {
		if redisAnswers(addr) {
			return "redis://" + userinfo + addr + "/0"
		}
		select {
		case <-exited:
			t.Fatalf("redis-server on port %d exited", port)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on port %d does not answer", port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redisAnswers sends PING in the inline protocol and expects +PONG, or the
// refusal of a server that wants a password first: either way it is up.
func redisAnswers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

// TestNodeUnit runs the Node relay's own tests (deploy/vercel/test, node:test):
// its handshake against the test vectors of docs/protocol.md §1.11, and its
// connection queue against a fake socket (the interleavings a socket on
// loopback never shows). The queue tests load relay.js, hence needNode's ws.
func TestNodeUnit(t *testing.T) {
	needNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--test", "test/")
	cmd.Dir = nodeDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
}
