package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// privateDir is a fresh directory with the mode a state directory needs
// (t.TempDir's own directories are 0755).
func privateDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// writeMode writes a file and gives it mode.
func writeMode(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := writeFile(t, name, content)
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// resolveArgs parses args as "plurenet up" does, with env as the
// environment.
func resolveArgs(t *testing.T, args []string, env map[string]string) (*upSettings, error) {
	t.Helper()
	var s upSettings
	var configPath string
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	s.registerFlags(fs, &configPath)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &s, s.resolve(fs, configPath, func(k string) string { return env[k] })
}

// TestKeyFile: --key-file (or PLURENET_KEY_FILE, or keyFile in the config)
// gives the mesh secret from a private file, one trailing newline trimmed;
// a file others may read, a symlink or a second source of the secret is
// refused with an error naming the file and the fix.
func TestKeyFile(t *testing.T) {
	const secret = "file-secret-0123456789"
	good := writeMode(t, "mesh.key", secret+"\n", 0o600)
	open := writeMode(t, "open.key", secret+"\n", 0o644)
	link := filepath.Join(t.TempDir(), "link.key")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	cfgWithKeyFile := writeFile(t, "c.json", `{"keyFile": "`+good+`"}`)
	base := []string{"--topic", "t", "--relay", "ws://127.0.0.1:1"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		errHas  []string // nil: success with secret
		isUsage bool
	}{
		{"flag", []string{"--key-file", good}, nil, nil, false},
		{"environment", nil, map[string]string{"PLURENET_KEY_FILE": good}, nil, false},
		{"config file", []string{"--config", cfgWithKeyFile}, nil, nil, false},
		{"PLURENET_KEY still works", nil, map[string]string{"PLURENET_KEY": secret}, nil, false},
		{"open file", []string{"--key-file", open}, nil, []string{open, "chmod 600 " + open}, false},
		{"symlink", []string{"--key-file", link}, nil, []string{link, "symbolic link", good}, false},
		{"missing", []string{"--key-file", good + ".nope"}, nil, []string{"--key-file", good + ".nope"}, false},
		{"and --key", []string{"--key-file", good, "--key", secret}, nil, []string{"given twice"}, true},
		{"and PLURENET_KEY", []string{"--key-file", good}, map[string]string{"PLURENET_KEY": secret}, []string{"given twice"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := resolveArgs(t, append(append([]string{}, base...), tt.args...), tt.env)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := s.nodeConfig(quietLogger())
			if tt.errHas == nil {
				if err != nil || cfg.Secret != secret {
					t.Fatalf("secret %q, %v; want %q", cfg.Secret, err, secret)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: secret %q", cfg.Secret)
			}
			for _, want := range tt.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if isUsage := strings.HasPrefix(err.Error(), "usage:"); isUsage != tt.isUsage {
				t.Errorf("usage error = %v, want %v (%v)", isUsage, tt.isUsage, err)
			}
		})
	}
}

// TestConfigFileWithSecret: a config file holding the mesh secret must be
// as private as a key file; one without a secret may stay world-readable.
func TestConfigFileWithSecret(t *testing.T) {
	for _, c := range []struct {
		name, content string
		mode          os.FileMode
		refused       bool
	}{
		{"secret, private", `{"syncKey": "file-secret-0123456789"}`, 0o600, false},
		{"secret, world readable", `{"syncKey": "file-secret-0123456789"}`, 0o644, true},
		{"secret as key, group readable", `{"key": "file-secret-0123456789"}`, 0o640, true},
		{"no secret, world readable", `{"topic": "t", "relay": "ws://x"}`, 0o644, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeMode(t, "c.json", c.content, c.mode)
			_, err := resolveArgs(t, []string{"--config", path}, nil)
			if !c.refused {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
				t.Fatalf("resolve = %v, want a refusal saying chmod 600 %s", err, path)
			}
		})
	}
	t.Run("symlink to a private config with a secret", func(t *testing.T) {
		path := writeMode(t, "c.json", `{"syncKey": "file-secret-0123456789"}`, 0o600)
		link := filepath.Join(t.TempDir(), "link.json")
		if err := os.Symlink(path, link); err != nil {
			t.Fatal(err)
		}
		if _, err := resolveArgs(t, []string{"--config", link}, nil); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("resolve = %v, want a refusal of the symlink", err)
		}
	})
}

// TestSecretOnCommandLineWarns runs the real binary: a secret given as a
// flag (--key, --backplane with a password) is logged as a warning that
// names the safer way; the file and the environment are not.
func TestSecretOnCommandLineWarns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plurenet binary")
	}
	bin := plurenetBinary(t)
	keyFile := writeMode(t, "mesh.key", "file-secret-0123456789\n", 0o600)
	bpFile := writeMode(t, "backplane", "redis://user:hunter2hunter2@127.0.0.1:1/0\n", 0o600)
	// Each run stops at a bad setting checked after the warning, so
	// nothing starts.
	up := []string{"up", "--topic", "t", "--relay", "ws://127.0.0.1:1", "--state-dir", privateDir(t), "--ip", "10.0.0.1"}
	tests := []struct {
		name string
		args []string
		env  []string
		warn string // "" means no warning
	}{
		{"--key", append(up, "--key", "argv-secret-0123456789"), nil, "--key-file"},
		{"--key-file", append(up, "--key-file", keyFile), nil, ""},
		{"PLURENET_KEY", up, []string{"PLURENET_KEY=env-secret-0123456789"}, ""},
		{"--backplane with password", []string{"relay", "--backplane", "redis://user:hunter2hunter2@127.0.0.1:1/0", "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"}, nil, "--backplane-file"},
		{"--backplane-file", []string{"relay", "--backplane-file", bpFile, "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"}, nil, ""},
		{"--backplane without password", []string{"relay", "--backplane", "redis://127.0.0.1:1/0", "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tt.args...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, tt.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err == nil {
				t.Fatalf("plurenet %v succeeded; the test expects it to stop at a bad setting", tt.args)
			}
			warned := strings.Contains(stderr.String(), "secret was given on the command line")
			if warned != (tt.warn != "") || !strings.Contains(stderr.String(), tt.warn) {
				t.Fatalf("warned = %v, want %v naming %q; stderr:\n%s", warned, tt.warn != "", tt.warn, stderr.String())
			}
			if strings.Contains(stderr.String(), "hunter2") {
				t.Errorf("the backplane password appears in the output:\n%s", stderr.String())
			}
		})
	}
}

// TestBackplaneFile: the relay reads its backplane URL from a private
// file; an open file and a second source are refused.
func TestBackplaneFile(t *testing.T) {
	const u = "redis://user:pw@127.0.0.1:1/0"
	good := writeMode(t, "bp", u+"\n", 0o600)
	open := writeMode(t, "bp-open", u+"\n", 0o644)
	// A relay config file that holds the password is checked like a key file.
	cfg := writeMode(t, "relay.json", `{"backplane":"`+u+`"}`, 0o644)
	if _, err := newRelaySettings().parse([]string{"--config", cfg}, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "backplane password") {
		t.Fatalf("open relay config with a backplane password: %v, want a refusal", err)
	}
	if got, err := backplaneURL("", good, false, quietLogger()); err != nil || got != u {
		t.Fatalf("backplaneURL(file) = %q, %v; want %q", got, err, u)
	}
	if _, err := backplaneURL("", open, false, quietLogger()); err == nil || !strings.Contains(err.Error(), "chmod 600 "+open) {
		t.Fatalf("open backplane file: %v, want a chmod 600 refusal", err)
	}
	if _, err := backplaneURL(u, good, false, quietLogger()); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Fatalf("URL and file: %v, want a refusal", err)
	}
}
