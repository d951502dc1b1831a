package packaging_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const composeDir = "deploy/compose"

// composeFile is the part of a compose file the test reads.
type composeFile struct {
	Services map[string]composeService
}

type composeService struct {
	Build *struct {
		Context    string
		Dockerfile string
		Target     string
	}
	Image       string
	Command     []string
	EnvFile     []string `yaml:"env_file"`
	Environment map[string]string
	Ports       []string
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, composeDir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

// readEnvFile reads a compose env file: NAME=VALUE lines, # comments.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, line := range strings.Split(string(mustRead(t, path)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q", path, line)
		}
		env[k] = v
	}
	return env
}

// TestComposeSecrets: the mesh secret is in no service's inline
// environment, only in the env file that git ignores; the example of that
// file holds a placeholder plurenet refuses.
func TestComposeSecrets(t *testing.T) {
	c := readCompose(t)
	members := 0
	for name, svc := range c.Services {
		for k := range svc.Environment {
			if k == "PLURENET_KEY" || strings.Contains(k, "SECRET") {
				t.Errorf("service %s: %s inline in compose.yaml", name, k)
			}
		}
		if svc.Image == "plurenet-node" {
			members++
			if strings.Join(svc.EnvFile, " ") != "mesh.env" {
				t.Errorf("service %s: env_file %q, want mesh.env", name, svc.EnvFile)
			}
		}
	}
	if members != 2 {
		t.Errorf("%d members (image plurenet-node), want 2", members)
	}
	if ignore := string(mustRead(t, filepath.Join(repoRoot, composeDir, ".gitignore"))); !strings.Contains(ignore, "mesh.env\n") {
		t.Errorf("deploy/compose/.gitignore does not ignore mesh.env")
	}
	example := readEnvFile(t, filepath.Join(repoRoot, composeDir, "mesh.env.example"))
	// The node's shortest accepted secret is 16 characters.
	if k, ok := example["PLURENET_KEY"]; !ok || len(k) >= 16 {
		t.Errorf("mesh.env.example PLURENET_KEY %q: want a placeholder too short to be used", k)
	}
}

// TestComposeConfig runs "docker compose config" (or docker-compose v1)
// on the example, which needs only the client.
func TestComposeConfig(t *testing.T) {
	var argv []string
	if out, err := tryCommand("docker", "compose", "version"); err == nil {
		argv = []string{"docker", "compose"}
	} else if _, err := exec.LookPath("docker-compose"); err == nil {
		argv = []string{"docker-compose"}
	} else {
		t.Skipf("no docker compose (%s) and no docker-compose", strings.TrimSpace(out))
	}
	envFile := filepath.Join(repoRoot, composeDir, "mesh.env")
	if !exists(envFile) {
		// The file the README has the user write; removed after.
		if err := os.WriteFile(envFile, []byte("PLURENET_TOPIC=demo\nPLURENET_KEY="+generateKey(t)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(envFile)
	}
	out := command(t, argv[0], append(argv[1:], "--project-directory", filepath.Join(repoRoot, composeDir), "-f", filepath.Join(repoRoot, composeDir, "compose.yaml"), "config", "-q")...)
	if strings.TrimSpace(out) != "" {
		t.Errorf("%s config -q: %s", strings.Join(argv, " "), out)
	}
}

func generateKey(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(command(t, imageBinary(t), "key", "generate"))
}

// TestComposeMesh runs the example's services as the processes their
// images start (ENTRYPOINT, the image's ENV, env_file, environment), with
// the services' host names mapped to loopback ports, and makes the
// request the example's header promises: beta's forwarded port reaches
// the relay's /healthz through alpha, across the mesh.
func TestComposeMesh(t *testing.T) {
	c := readCompose(t)
	df := readDockerfile(t)
	bin := imageBinary(t)
	images := map[string]*imageStage{} // by image name
	for name, svc := range c.Services {
		if svc.Build == nil {
			continue
		}
		if svc.Build.Dockerfile != dockerPath || svc.Build.Context != "../.." {
			t.Fatalf("service %s builds %s in %s, want %s in the repository root", name, svc.Build.Dockerfile, svc.Build.Context, dockerPath)
		}
		images[svc.Image] = df.stage(t, svc.Build.Target)
	}
	hosts := map[string]string{} // "relay:8080" -> "127.0.0.1:PORT"

	redis := c.Services["redis"]
	if _, err := exec.LookPath("redis-server"); err == nil {
		port := freePort(t)
		argv := append(append([]string{"redis-server"}, redis.Command[1:]...), "--port", port, "--bind", "127.0.0.1")
		startProc(t, "redis", argv, nil)
		waitTCP(t, "127.0.0.1:"+port)
		hosts["redis:6379"] = "127.0.0.1:" + port
	} else {
		t.Log("redis-server not installed: the relay runs without its backplane")
	}

	relaySvc := c.Services["relay"]
	relayEnv := map[string]string{}
	for k, v := range relaySvc.Environment {
		if strings.Contains(v, "redis:6379") && hosts["redis:6379"] == "" {
			continue
		}
		relayEnv[k] = v
	}
	// After the ENTRYPOINT's flags, as "docker run IMAGE FLAGS" adds
	// them: loopback and a free port instead of the container's :8080.
	relay := startService(t, "relay", bin, images[relaySvc.Image], nil, relayEnv, hosts,
		"--listen", "127.0.0.1:0", "--stun-listen", "127.0.0.1:0")
	hosts["relay:8080"] = relay.waitLine(t, regexp.MustCompile(`listening on ws://(\S+)/v1/relay`))

	mesh := readEnvFile(t, filepath.Join(repoRoot, composeDir, "mesh.env.example"))
	mesh["PLURENET_KEY"] = generateKey(t)
	members := map[string]*proc{}
	for _, name := range []string{"alpha", "beta"} {
		svc := c.Services[name]
		env := map[string]string{}
		for k, v := range svc.Environment {
			env[k] = v
		}
		// Inside a container the forward listens on 0.0.0.0 for the
		// published port; here loopback and a free port stand in.
		if f, ok := env["PLURENET_FORWARD"]; ok {
			env["PLURENET_FORWARD"] = regexp.MustCompile(`^0\.0\.0\.0:\d+=`).ReplaceAllString(f, "127.0.0.1:"+freePort(t)+"=")
		}
		// The relay path only: ICE would also try this machine's
		// non-loopback addresses, and the test stays on loopback.
		env["PLURENET_TRANSPORT"] = "relay"
		// The image's state directory: mode 0700, owned by the node's user.
		state := t.TempDir()
		if err := os.Chmod(state, 0o700); err != nil {
			t.Fatal(err)
		}
		env["PLURENET_STATE_DIR"] = state
		members[name] = startService(t, name, bin, images[svc.Image], mesh, env, hosts)
		members[name].waitLine(t, regexp.MustCompile(`plurenet: (\S+) is up`))
	}
	fwd := members["beta"].waitLine(t, regexp.MustCompile(`forwarding (\S+) to alpha:8000`))

	// Until beta has learnt alpha from the relay and WireGuard has
	// shaken hands, the forward's connection fails: retry, bounded.
	deadline := time.Now().Add(time.Minute)
	for {
		body, err := httpGet("http://" + fwd + "/healthz")
		if err == nil && strings.TrimSpace(body) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /healthz through beta's forward %s: %q, %v", fwd, body, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The image's HEALTHCHECK, with the member's environment.
	for name, m := range members {
		hc := images["plurenet-node"].healthcmd
		cmd := exec.Command(bin, hc[1:]...)
		cmd.Env = m.env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: HEALTHCHECK %q: %v\n%s", name, hc, err, out)
		}
	}
}

func httpGet(url string) (string, error) {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s", resp.Status)
	}
	return string(b), err
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startService starts a compose service as its image would: the
// ENTRYPOINT (its program is bin), then extra; the image's ENV, then the
// env file, then the service's environment, with host names mapped.
func startService(t *testing.T, name, bin string, img *imageStage, envFile, environment, hosts map[string]string, extra ...string) *proc {
	t.Helper()
	env := map[string]string{}
	for _, layer := range []map[string]string{img.env, envFile, environment} {
		for k, v := range layer {
			env[k] = v
		}
	}
	var list []string
	for k, v := range env {
		for from, to := range hosts {
			v = strings.ReplaceAll(v, from, to)
		}
		list = append(list, k+"="+v)
	}
	argv := append(append([]string{bin}, img.entrypoint[1:]...), extra...)
	return startProc(t, name, argv, list)
}

// proc is a process the test started; its output is kept for the log and
// scanned line by line.
type proc struct {
	name  string
	env   []string
	lines chan string
	mu    sync.Mutex
	out   strings.Builder
}

// startProc starts argv with env (nil: this process's) and stops it with
// SIGTERM when the test ends.
func startProc(t *testing.T, name string, argv, env []string) *proc {
	t.Helper()
	p := &proc{name: name, env: env, lines: make(chan string, 256)}
	cmd := exec.Command(argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		p.env = cmd.Env
	}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer close(p.lines) // the process has ended: waitLine stops waiting
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default: // nobody waits for more: the log keeps it
			}
		}
	}()
	waited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		w.Close()
		waited <- err
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-waited
		}
		<-scanned
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s output:\n%s", name, p.out.String())
			p.mu.Unlock()
		}
	})
	return p
}

// waitLine returns the first submatch of the next output line matching re.
func (p *proc) waitLine(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("%s exited before printing a line matching %s", p.name, re)
			}
			if m := re.FindStringSubmatch(line); m != nil {
				return m[1]
			}
		case <-ctx.Done():
			t.Fatalf("%s: no output line matching %s", p.name, re)
		}
	}
}
