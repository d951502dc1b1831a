package deploy_test

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// dockerignore reads deploy/Dockerfile.dockerignore: patterns in order, a
// leading '!' re-including what an earlier pattern excluded (the last
// match wins, as in Docker).
func dockerignore(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var pats []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			pats = append(pats, l)
		}
	}
	return pats
}

// ignored reports whether the build context leaves out file (a path
// relative to the repository root). It supports what our file uses:
// plain paths (a directory excludes what is below it), globs, "**/" and
// "!" exceptions.
func ignored(pats []string, file string) bool {
	out := false
	for _, p := range pats {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		if matchesContext(p, file) {
			out = !neg
		}
	}
	return out
}

func matchesContext(pat, file string) bool {
	parts := strings.Split(file, "/")
	for i := 1; i <= len(parts); i++ {
		prefix := strings.Join(parts[:i], "/")
		if sub, ok := strings.CutPrefix(pat, "**/"); ok {
			if m, _ := path.Match(sub, parts[i-1]); m {
				return true
			}
			continue
		}
		if m, _ := path.Match(pat, prefix); m {
			return true
		}
	}
	return false
}

// TestDockerContextBuilds copies what the Dockerfile's build context
// holds (the tracked files the .dockerignore keeps) and builds the
// binary from it as the Dockerfile does, so that a package the relay
// needs can never be left out of the image's build (the backplane's Lua
// scripts live under deploy/vercel, which the context otherwise skips).
func TestDockerContextBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary from a copy of the build context")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		t.Skipf("git ls-files: %v (needs a git checkout)", err)
	}
	pats := dockerignore(t)
	dir := t.TempDir()
	kept := 0
	for _, f := range strings.Split(strings.TrimSpace(string(ls)), "\n") {
		if ignored(pats, f) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the work tree, not yet committed
		}
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		kept++
	}
	if ignored(pats, "deploy/vercel/src/server.js") == false || ignored(pats, "deploy/vercel/backplanelua/join.lua") {
		t.Fatalf("the context must leave out the Node relay but keep deploy/vercel/backplanelua")
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(t.TempDir(), "plurenet"), "./cmd/plurenet")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build in the Docker build context (%d files) failed: %v\n%s", kept, err, out)
	}
}
