package packaging_test

import (
	"context"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// No Docker engine runs where these tests run, so the images and the
// compose example are checked the way they can be without one: each
// Dockerfile's build line is run as written, and the compose example's
// services are run as the processes their images would start, with the
// image's ENTRYPOINT and the service's environment, on loopback.

const repoRoot = ".."

// buildOutput is how a Dockerfile's build line names the binary.
const buildOutput = "-o /out/plurenet"

// dockerfile is what the tests read from a Dockerfile.
type dockerfile struct {
	build      string // the RUN line that builds /out/plurenet (shell form)
	entrypoint []string
	env        map[string]string
	user       string
	healthcmd  []string
}

var (
	execForm     = regexp.MustCompile(`^\[.*\]$`)
	healthPrefix = regexp.MustCompile(`^HEALTHCHECK(\s+--\S+)*\s+CMD\s+`)
)

func readDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	df := dockerfile{env: map[string]string{}}
	jsonArgs := func(s string) []string {
		var v []string
		if !execForm.MatchString(s) || json.Unmarshal([]byte(s), &v) != nil {
			t.Fatalf("%s: %q is not in exec form (a JSON list)", path, s)
		}
		return v
	}
	for _, line := range strings.Split(string(b), "\n") {
		instr, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch instr {
		case "RUN":
			if strings.Contains(rest, "go build") && strings.Contains(rest, buildOutput) {
				df.build = rest
			}
		case "ENTRYPOINT":
			df.entrypoint = jsonArgs(rest)
		case "ENV":
			k, v, _ := strings.Cut(rest, "=")
			df.env[k] = v
		case "USER":
			df.user = rest
		case "HEALTHCHECK":
			df.healthcmd = jsonArgs(healthPrefix.ReplaceAllString(strings.TrimSpace(line), ""))
		}
	}
	if df.build == "" || df.entrypoint == nil {
		t.Fatalf("%s: no go build line or no ENTRYPOINT", path)
	}
	return df
}

var (
	builtMu sync.Mutex
	built   = map[string]string{}
)

// buildImageBinary runs the Dockerfile's build line from the repository
// root, as the build stage does, with its output in a temporary directory,
// once per test binary.
func buildImageBinary(t *testing.T, path string, df dockerfile) string {
	t.Helper()
	builtMu.Lock()
	defer builtMu.Unlock()
	if bin, ok := built[path]; ok {
		return bin
	}
	dir, err := os.MkdirTemp("", "plurenet-image")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "plurenet")
	// RUN's shell form is sh -c; only the output path differs.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", strings.Replace(df.build, buildOutput, "-o "+bin, 1))
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: RUN %s: %v\n%s", path, df.build, err, out)
	}
	built[path] = bin
	return bin
}

// TestNodeImage: the node Dockerfile's build line builds, and its
// ENTRYPOINT, USER, ENV and HEALTHCHECK are what the image promises.
func TestNodeImage(t *testing.T) {
	df := readDockerfile(t, "deploy/node/Dockerfile")
	bin := buildImageBinary(t, "deploy/node/Dockerfile", df)
	checkBinary(t, "node image", mustRead(t, bin), arch{goarch: "amd64", machine: hostMachine(t)})
	if strings.Join(df.entrypoint, " ") != "plurenet up" {
		t.Errorf("ENTRYPOINT %q, want plurenet up", df.entrypoint)
	}
	if df.user != "65532:65532" {
		t.Errorf("USER %q, want the unprivileged 65532:65532 (userspace by default)", df.user)
	}
	if df.env["PLURENET_STATE_DIR"] != "/var/lib/plurenet" {
		t.Errorf("ENV PLURENET_STATE_DIR %q, want /var/lib/plurenet (the VOLUME)", df.env["PLURENET_STATE_DIR"])
	}
	if strings.Join(df.healthcmd, " ") != "plurenet status" {
		t.Errorf("HEALTHCHECK CMD %q, want plurenet status", df.healthcmd)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hostMachine(t *testing.T) elf.Machine {
	t.Helper()
	f, err := elf.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return f.Machine
}
