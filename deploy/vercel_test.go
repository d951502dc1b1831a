package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
)

// vercelLifetimeSecs is the connection lifetime the Node relay announces on
// Vercel (src/server.js, VERCEL_DEFAULT_LIFETIME_MS): below the functions'
// 300 s default maximum duration.
const vercelLifetimeSecs = 240

// TestVercelProject: deploy/vercel is a project Vercel's Node preset
// deploys: vercel.json names the preset (it overrides a dashboard left on
// "Other", which would publish src/ as static files and run nothing), and
// nothing in it turns the preset's zero-config build off.
func TestVercelProject(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(nodeDir, "vercel.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("vercel.json: %v", err)
	}
	if cfg["framework"] != "node" {
		t.Errorf("vercel.json framework = %v, want \"node\" (Vercel's Node.js server preset)", cfg["framework"])
	}
	// builds disables zero-config detection; a functions pattern that
	// matches no file fails the deployment; routes/rewrites would shadow
	// the preset's catch-all route to the server.
	for _, k := range []string{"builds", "functions", "routes", "rewrites"} {
		if _, ok := cfg[k]; ok {
			t.Errorf("vercel.json sets %q, which breaks or shadows the Node preset", k)
		}
	}
	var pkg struct {
		Main    string            `json:"main"`
		Type    string            `json:"type"`
		Engines map[string]string `json:"engines"`
		Scripts map[string]string `json:"scripts"`
	}
	raw, err = os.ReadFile(filepath.Join(nodeDir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &pkg); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	// The preset finds its entry point as src/server.js (or package.json
	// main); the server must be that file.
	if pkg.Main != "src/server.js" || pkg.Type != "module" {
		t.Errorf("package.json main %q type %q, want src/server.js and module", pkg.Main, pkg.Type)
	}
	if e := pkg.Engines["node"]; e == "" || strings.Contains(e, ">") {
		t.Errorf("package.json engines.node %q: pin major versions, or Vercel moves the relay to each new Node major unasked", e)
	}
}

// startVercelLike runs src/server.js the way Vercel's runtime does: VERCEL
// set, the port from PORT. It returns the address of a relay that listens,
// or "" and the process of one that exited.
func startVercelLike(t *testing.T, env ...string) (string, *child) {
	t.Helper()
	needNode(t)
	cmd := exec.Command("node", "src/server.js")
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(), append([]string{"VERCEL=1", "PORT=0", "HOST=127.0.0.1",
		"PLURENET_RELAY_BACKPLANE=", "PLURENET_RELAY_MAX_CONN_LIFETIME=", "PLURENET_RELAY_SINGLE_INSTANCE="}, env...)...)
	port, c := startChild(t, "node relay (VERCEL=1)", cmd, listenLine)
	if port == "" {
		return "", c
	}
	return "127.0.0.1:" + port, c
}

// TestVercelRefusesWithoutBackplane: on Vercel, instances share nothing, so
// the relay will not start without a backplane unless told it may.
func TestVercelRefusesWithoutBackplane(t *testing.T) {
	base, c := startVercelLike(t)
	if base != "" {
		t.Fatal("the relay started on Vercel with no backplane and no PLURENET_RELAY_SINGLE_INSTANCE")
	}
	out := c.stderr.String()
	var exit *exec.ExitError
	if !errors.As(c.err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit %v, want status 2\n%s", c.err, out)
	}
	for _, want := range []string{"PLURENET_RELAY_BACKPLANE", "PLURENET_RELAY_SINGLE_INSTANCE"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not name %s:\n%s", want, out)
		}
	}
}

// TestVercelSingleInstance: told it runs alone, the relay starts on Vercel,
// warns, and announces the Vercel connection lifetime in Welcome.
func TestVercelSingleInstance(t *testing.T) {
	base, c := startVercelLike(t, "PLURENET_RELAY_SINGLE_INSTANCE=1")
	if base == "" {
		t.Fatalf("the relay did not start with PLURENET_RELAY_SINGLE_INSTANCE=1: %v\n%s", c.err, c.stderr.String())
	}
	tg := &target{url: "ws://" + base + relayproto.Path, base: "http://" + base}
	r := dialRaw(t, tg)
	if w := r.join(testkit.Key(t), testkit.Admission(30)); w.LifetimeSecs != vercelLifetimeSecs {
		t.Errorf("Welcome lifetime %d s on Vercel, want %d", w.LifetimeSecs, vercelLifetimeSecs)
	}
}

// TestVercelBuild runs `vercel build` on a copy of the project, as Vercel's
// build does, with a project whose dashboard preset is "Other" (vercel.json
// must override it), and checks the output: one Node function whose handler
// is the server, every path routed to it, and no source published as a
// static file. It needs the Vercel CLI (npm i -g vercel@58.10.0; the build
// runs offline) and skips without it.
func TestVercelBuild(t *testing.T) {
	cli, err := exec.LookPath("vercel")
	if err != nil {
		t.Skip("the Vercel CLI is not installed (npm i -g vercel@58.10.0): skipping the local Vercel build")
	}
	needNode(t)
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "vercel.json", "src"} {
		if out, err := exec.Command("cp", "-r", filepath.Join(nodeDir, f), dir).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v\n%s", f, err, out)
		}
	}
	// A linked project whose preset is "Other" (framework null), as a
	// project imported without choosing one is.
	if err := os.MkdirAll(filepath.Join(dir, ".vercel"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := `{"projectId":"prj_plurenettest","orgId":"team_plurenettest","settings":{"framework":null}}`
	if err := os.WriteFile(filepath.Join(dir, ".vercel", "project.json"), []byte(link), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), npmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, "build", "--yes")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "VERCEL_TELEMETRY_DISABLED=1", "NO_UPDATE_NOTIFIER=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vercel build: %v\n%s", err, out)
	}
	output := filepath.Join(dir, ".vercel", "output")
	funcs, _ := filepath.Glob(filepath.Join(output, "functions", "*.func", ".vc-config.json"))
	if len(funcs) != 1 {
		t.Fatalf("vercel build made %d functions, want 1 (the relay server)", len(funcs))
	}
	var fn struct {
		Handler string `json:"handler"`
		Runtime string `json:"runtime"`
	}
	raw, err := os.ReadFile(funcs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &fn); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(fn.Handler, "src/server.") || !strings.HasPrefix(fn.Runtime, "nodejs") {
		t.Errorf("function handler %q runtime %q, want src/server.* on nodejs", fn.Handler, fn.Runtime)
	}
	var routes struct {
		Routes []struct{ Src, Dest string } `json:"routes"`
	}
	raw, err = os.ReadFile(filepath.Join(output, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &routes); err != nil {
		t.Fatal(err)
	}
	catchAll := false
	for _, r := range routes.Routes {
		catchAll = catchAll || (r.Src == "/(.*)" && r.Dest == "/")
	}
	if !catchAll {
		t.Errorf("no route sends every path to the function: %+v", routes.Routes)
	}
	if static, _ := filepath.Glob(filepath.Join(output, "static", "src", "*")); len(static) > 0 {
		t.Errorf("the build publishes source as static files: %v", static)
	}
}
