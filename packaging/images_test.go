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
// compose example are checked the way they can be without one: the
// Dockerfile's build line is run as written, and the compose example's
// services are run as the processes their images would start, with the
// image's ENTRYPOINT and ENV and the service's environment, on loopback.

const (
	repoRoot   = ".."
	dockerPath = "deploy/Dockerfile"
	// buildOutput is how the build line names the binary.
	buildOutput = "-o /out/plurenet"
)

// imageStage is what the tests read from one stage of the Dockerfile.
type imageStage struct {
	entrypoint []string
	env        map[string]string
	user       string
	healthcmd  []string
}

// dockerfile is the Dockerfile's build line and its stages by name.
type dockerfile struct {
	build  string // the RUN line that builds /out/plurenet (shell form)
	stages map[string]*imageStage
	last   string // the default target
}

var (
	fromLine     = regexp.MustCompile(`^FROM\s+\S+(?:\s+AS\s+(\S+))?$`)
	healthPrefix = regexp.MustCompile(`^HEALTHCHECK(\s+--\S+)*\s+CMD\s+`)
)

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	b := mustRead(t, filepath.Join(repoRoot, dockerPath))
	df := dockerfile{stages: map[string]*imageStage{}}
	jsonArgs := func(s string) []string {
		var v []string
		if !strings.HasPrefix(s, "[") || json.Unmarshal([]byte(s), &v) != nil {
			t.Fatalf("%s: %q is not in exec form (a JSON list)", dockerPath, s)
		}
		return v
	}
	var st *imageStage
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if m := fromLine.FindStringSubmatch(line); m != nil {
			st = &imageStage{env: map[string]string{}}
			df.stages[m[1]] = st
			df.last = m[1]
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		switch {
		case st == nil:
		case instr == "RUN" && strings.Contains(rest, "go build") && strings.Contains(rest, buildOutput):
			df.build = rest
		case instr == "ENTRYPOINT":
			st.entrypoint = jsonArgs(rest)
		case instr == "ENV":
			k, v, _ := strings.Cut(rest, "=")
			st.env[k] = v
		case instr == "USER":
			st.user = rest
		case instr == "HEALTHCHECK":
			st.healthcmd = jsonArgs(healthPrefix.ReplaceAllString(line, ""))
		}
	}
	if df.build == "" {
		t.Fatalf("%s: no go build line", dockerPath)
	}
	return df
}

// stage returns the named stage ("" for the default target) with an
// ENTRYPOINT.
func (df dockerfile) stage(t *testing.T, name string) *imageStage {
	t.Helper()
	if name == "" {
		name = df.last
	}
	st := df.stages[name]
	if st == nil || st.entrypoint == nil {
		t.Fatalf("%s: no stage %q with an ENTRYPOINT", dockerPath, name)
	}
	return st
}

var (
	builtOnce sync.Once
	builtBin  string
	builtErr  string
)

// imageBinary runs the Dockerfile's build line from the repository root,
// as the build stage does, with its output in a temporary directory; once
// per test binary.
func imageBinary(t *testing.T) string {
	t.Helper()
	builtOnce.Do(func() {
		df := readDockerfile(t)
		dir, err := os.MkdirTemp("", "plurenet-image")
		if err != nil {
			builtErr = err.Error()
			return
		}
		bin := filepath.Join(dir, "plurenet")
		// RUN's shell form is sh -c; only the output path differs.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", strings.Replace(df.build, buildOutput, "-o "+bin, 1))
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			builtErr = "RUN " + df.build + ": " + err.Error() + "\n" + string(out)
			return
		}
		builtBin = bin
	})
	if builtBin == "" {
		t.Fatalf("%s: %s", dockerPath, builtErr)
	}
	return builtBin
}

// TestNodeImage: the Dockerfile's build line builds, and the node target's
// ENTRYPOINT, USER, ENV and HEALTHCHECK are what the image promises; the
// relay stays the default target.
func TestNodeImage(t *testing.T) {
	df := readDockerfile(t)
	checkBinary(t, "image", mustRead(t, imageBinary(t)), arch{goarch: "host", machine: hostMachine(t)})
	node := df.stage(t, "node")
	if strings.Join(node.entrypoint, " ") != "plurenet up" {
		t.Errorf("node ENTRYPOINT %q, want plurenet up", node.entrypoint)
	}
	if node.user != "65532:65532" {
		t.Errorf("node USER %q, want the unprivileged 65532:65532 (userspace by default)", node.user)
	}
	if node.env["PLURENET_STATE_DIR"] != "/var/lib/plurenet" {
		t.Errorf("node ENV PLURENET_STATE_DIR %q, want /var/lib/plurenet (the VOLUME)", node.env["PLURENET_STATE_DIR"])
	}
	if strings.Join(node.healthcmd, " ") != "plurenet status" {
		t.Errorf("node HEALTHCHECK CMD %q, want plurenet status", node.healthcmd)
	}
	if df.last != "relay" || df.stage(t, "").entrypoint[1] != "relay" {
		t.Errorf("default target %q: want the relay last, so that a plain docker build makes the relay image", df.last)
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
