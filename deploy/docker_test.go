package deploy_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testcert"
)

// dockerBuildTimeout bounds building the image (it downloads the base
// images and the modules on a cold cache).
const dockerBuildTimeout = 15 * time.Minute

// dockerRun is the README's `docker run` line that serves wss:// directly.
type dockerRun struct {
	publish []string // -p
	volumes []string // -v
	image   string
	args    []string // after the image: flags for plurenet relay
}

// readmeDockerRun finds the one-line `docker run ... --tls-cert ...` in
// deploy/README.md and splits it.
func readmeDockerRun(t *testing.T) dockerRun {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "docker run ") && strings.Contains(l, "--tls-cert") {
			line = l
		}
	}
	if line == "" {
		t.Fatal("deploy/README.md has no one-line `docker run ... --tls-cert ...`")
	}
	withValue := map[string]bool{"--name": true, "--restart": true, "-p": true, "-v": true, "-e": true, "--user": true}
	toks := strings.Fields(line)[2:]
	var r dockerRun
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		switch {
		case r.image != "":
			r.args = append(r.args, tok)
		case withValue[tok] && i+1 < len(toks):
			i++
			switch tok {
			case "-p":
				r.publish = append(r.publish, toks[i])
			case "-v":
				r.volumes = append(r.volumes, toks[i])
			}
		case strings.HasPrefix(tok, "-"):
		default:
			r.image = tok
		}
	}
	return r
}

// entrypoint reads the relay's ENTRYPOINT (exec form): the last stage's,
// the default target (the node stage before it has its own).
func entrypoint(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	all := regexp.MustCompile(`(?m)^ENTRYPOINT (\[.*\])$`).FindAllSubmatch(b, -1)
	if all == nil {
		t.Fatal("the Dockerfile has no exec-form ENTRYPOINT")
	}
	m := all[len(all)-1]
	var ep []string
	if err := json.Unmarshal(m[1], &ep); err != nil {
		t.Fatalf("ENTRYPOINT %s: %v", m[1], err)
	}
	return ep
}

// selfSigned puts cert.pem and key.pem for 127.0.0.1 in a new directory and
// returns it with a pool that trusts the certificate.
func selfSigned(t *testing.T) (dir string, roots *x509.CertPool) {
	t.Helper()
	certFile, _, roots := testcert.SelfSigned(t)
	return filepath.Dir(certFile), roots
}

// expectWSS opens a WebSocket to url trusting roots and checks that a relay
// answers with its ServerHello.
func expectWSS(t *testing.T, url string, roots *x509.CertPool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: tr},
		Subprotocols: []string{relayproto.Subprotocol},
	})
	if err != nil {
		t.Fatalf("wss dial %s: %v", url, err)
	}
	defer ws.CloseNow()
	_, b, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("reading ServerHello over wss: %v", err)
	}
	if _, err := relayproto.ParseServerHello(b); err != nil {
		t.Fatalf("ServerHello %x: %v", b, err)
	}
}

var listeningWSS = regexp.MustCompile(`listening on (wss://127\.0\.0\.1:\d+/v1/relay)`)

// TestReadmeDockerRunServesWSS runs what the README's TLS `docker run` line
// runs in the container, the image's ENTRYPOINT followed by the line's
// arguments, with the mounted /tls directory standing for a real one, and
// connects over wss://. It also holds the line to the image: the published
// port is the container's 8080 (a non-root user may not bind 443 everywhere)
// and the certificates come from a read-only mount.
func TestReadmeDockerRunServesWSS(t *testing.T) {
	run := readmeDockerRun(t)
	ep := entrypoint(t)
	if len(ep) < 2 || ep[0] != "plurenet" || ep[1] != "relay" || !strings.Contains(strings.Join(ep, " "), "--listen :8080") {
		t.Fatalf("ENTRYPOINT %q: want plurenet relay --listen :8080", ep)
	}
	if !containsPrefix(run.publish, "443:8080") {
		t.Errorf("the README's docker run publishes %q; want 443:8080 (the relay listens on 8080 as a non-root user)", run.publish)
	}
	mount := ""
	for _, v := range run.volumes {
		if parts := strings.Split(v, ":"); len(parts) == 3 && parts[1] == "/tls" && parts[2] == "ro" {
			mount = parts[1]
		}
	}
	if mount == "" {
		t.Fatalf("the README's docker run mounts %q; want HOSTDIR:/tls:ro", run.volumes)
	}
	tlsDir, roots := selfSigned(t)
	args := append([]string(nil), ep[1:]...)
	for _, a := range run.args {
		args = append(args, strings.Replace(a, mount+"/", tlsDir+"/", 1))
	}
	// Go flags: the last one wins, so these move the listener to a free
	// loopback port and turn STUN off without touching the line's flags.
	args = append(args, "--listen", "127.0.0.1:0", "--stun-listen=")

	bin := filepath.Join(t.TempDir(), "plurenet")
	build := exec.Command("go", "build", "-o", bin, "github.com/plures/plurenet/cmd/plurenet")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/plurenet: %v\n%s", err, out)
	}
	url, c := startChild(t, "plurenet relay", exec.Command(bin, args...), listeningWSS)
	if url == "" {
		t.Fatalf("plurenet %q exited: %v\n%s", args, c.err, c.stderr.String())
	}
	expectWSS(t, url, roots)
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// TestDockerImage builds deploy/Dockerfile and runs the image as the
// README's TLS line does, then connects over wss://. It needs a Docker
// engine and skips without one.
func TestDockerImage(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker is not installed: skipping the image build")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine answers (%v): skipping the image build\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dockerBuildTimeout)
	defer cancel()
	tag := "plurenet-relay-test:" + strings.ToLower(rand.Text()[:12])
	build := exec.CommandContext(ctx, "docker", "build", "-f", "deploy/Dockerfile", "-t", tag, ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })

	run := readmeDockerRun(t)
	tlsDir, roots := selfSigned(t)
	// The image runs as uid 65532: the key must be readable by it.
	for _, f := range []string{"cert.pem", "key.pem"} {
		if err := os.Chmod(filepath.Join(tlsDir, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(tlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := "plurenet-relay-test-" + strings.ToLower(rand.Text()[:8])
	args := []string{"run", "-d", "--name", name, "-p", "127.0.0.1::8080", "-v", tlsDir + ":/tls:ro", tag}
	args = append(args, run.args...)
	args = append(args, "--stun-listen=")
	if out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput(); err != nil {
		t.Fatalf("docker %q: %v\n%s", args, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", name).Run() })
	out, err := exec.CommandContext(ctx, "docker", "port", name, "8080/tcp").Output()
	if err != nil {
		t.Fatalf("docker port: %v", err)
	}
	addr := strings.TrimSpace(strings.Split(string(out), "\n")[0])
	url := "wss://" + addr + relayproto.Path
	deadline := time.Now().Add(patience)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			logs, _ := exec.Command("docker", "logs", name).CombinedOutput()
			t.Fatalf("the container does not accept connections on %s: %v\n%s", addr, err, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	expectWSS(t, url, roots)
}
