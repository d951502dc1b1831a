package mesh

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/plures/plurenet/internal/nodekey"
)

func TestLoadOrCreateKey(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("POSIX permissions")
	}
	dir := filepath.Join(t.TempDir(), "state", "nested")
	k, created, err := LoadOrCreateKey(dir)
	if err != nil || !created || k.IsZero() {
		t.Fatalf("first call: %v, created=%v", err, created)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %o, want 700", st.Mode().Perm())
	}
	path := filepath.Join(dir, KeyFile)
	st, err = os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %o, want 600", st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != k.String() {
		t.Fatalf("file holds %q, want the base64 key %q", got, k.String())
	}
	again, created, err := LoadOrCreateKey(dir)
	if err != nil || created || again != k {
		t.Fatalf("second call: %v, created=%v, same key %v", err, created, again == k)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("state dir holds %d entries, want only %s (temp file left behind?)", len(entries), KeyFile)
	}
}

func TestLoadOrCreateKeyExisting(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("POSIX permissions")
	}
	want := vecKey(t)
	for _, c := range []struct {
		name    string
		content string
		mode    os.FileMode
		errHas  string // "" means success with want
	}{
		{"base64", want.String() + "\n", 0o600, ""},
		{"hex", want.Hex(), 0o400, ""},
		{"group readable", want.String(), 0o640, "chmod 600"},
		{"world readable", want.String(), 0o644, "chmod 600"},
		{"world writable", want.String(), 0o602, "chmod 600"},
		{"empty", "", 0o600, "malformed"},
		{"garbage", "not a key", 0o600, "malformed"},
		{"short base64", want.String()[:40], 0o600, "malformed"},
		{"huge", strings.Repeat("A", 4096), 0o600, "larger than"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := privateDir(t)
			path := filepath.Join(dir, KeyFile)
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			k, created, err := LoadOrCreateKey(dir)
			if c.errHas == "" {
				if err != nil || created || k != want {
					t.Fatalf("got %v, created=%v, err %v", k == want, created, err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.errHas) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q should name %s and say %q", err, path, c.errHas)
			}
			if b, _ := os.ReadFile(path); string(b) != c.content {
				t.Fatal("a refused key file was modified")
			}
		})
	}
}

func TestLoadOrCreateKeyBadDir(t *testing.T) {
	if _, _, err := LoadOrCreateKey(""); err == nil {
		t.Fatal("empty state dir accepted")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(file); err == nil {
		t.Fatal("a regular file accepted as state dir")
	}
	dir := privateDir(t)
	if err := os.Mkdir(filepath.Join(dir, KeyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Fatalf("directory as key file: %v", err)
	}
}

// TestLoadOrCreateKeyRace starts several creators at once on an empty
// directory: exactly one creates, and all end with the same key.
func TestLoadOrCreateKeyRace(t *testing.T) {
	dir := privateDir(t)
	const n = 8
	keys := make([]nodekey.Private, n)
	created := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], created[i], errs[i] = LoadOrCreateKey(dir)
		}()
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if keys[i] != keys[0] {
			t.Fatalf("caller %d got a different key", i)
		}
		if created[i] {
			creators++
		}
	}
	if creators != 1 {
		t.Fatalf("%d callers report creating the key, want 1", creators)
	}
}

// privateDir is a fresh state directory with the mode LoadOrCreateKey
// wants (t.TempDir's own directories are 0755).
func privateDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestLoadOrCreateKeyUnsafeState: a state directory or key file that other
// users may open or replace is refused with an error naming it and the fix,
// and nothing is written into the directory.
func TestLoadOrCreateKeyUnsafeState(t *testing.T) {
	t.Run("open directory", func(t *testing.T) {
		dir := privateDir(t)
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadOrCreateKey(dir)
		if err == nil || !strings.Contains(err.Error(), "chmod 700 "+dir) {
			t.Fatalf("0755 state dir: %v, want a refusal saying chmod 700 %s", err, dir)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("a key was written into a refused directory: %v", entries)
		}
	})
	t.Run("symlinked directory", func(t *testing.T) {
		real := privateDir(t)
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreateKey(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("symlinked state dir: %v, want a refusal", err)
		}
	})
	t.Run("symlinked key", func(t *testing.T) {
		other := privateDir(t)
		k, _, err := LoadOrCreateKey(other)
		if err != nil {
			t.Fatal(err)
		}
		dir := privateDir(t)
		if err := os.Symlink(filepath.Join(other, KeyFile), filepath.Join(dir, KeyFile)); err != nil {
			t.Fatal(err)
		}
		got, _, err := LoadOrCreateKey(dir)
		if err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("symlinked node.key: key %v (the target's: %v), err %v; want a refusal", got == k, got == k, err)
		}
	})
	t.Run("key of another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give a file to another user")
		}
		dir := privateDir(t)
		if _, _, err := LoadOrCreateKey(dir); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, KeyFile)
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "chown") || !strings.Contains(err.Error(), path) {
			t.Fatalf("node.key owned by nobody: %v, want a refusal naming %s with a chown hint", err, path)
		}
	})
}
