package ownerfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// wantCheck opens path and fails t unless Check accepts it (want == "") or
// refuses it with an error that contains want and every string of more.
func wantCheck(t *testing.T, path, want string, more ...string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = Check(f)
	if want == "" {
		if err != nil {
			t.Fatalf("Check: %v, want accepted", err)
		}
		return
	}
	for _, w := range append([]string{want}, more...) {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Fatalf("Check(%s): %v, want an error saying %q", path, err, w)
		}
	}
}

// What MkdirAll and RestrictFile make, Check accepts: the state dir (with
// missing parents), and a file restricted inside it.
func TestMadePrivateIsAccepted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "parent", "state")
	if err := MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(dir); err != nil {
		t.Fatalf("MkdirAll of an existing dir: %v", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := Check(d); err != nil {
		t.Fatalf("Check(new state dir): %v", err)
	}
	f, err := os.Create(filepath.Join(dir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := RestrictFile(f); err != nil {
		t.Fatal(err)
	}
	if err := Check(f); err != nil {
		t.Fatalf("Check(restricted file): %v", err)
	}
}

func TestMkdirAllRefusesAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(path); err == nil {
		t.Fatal("MkdirAll over a regular file succeeded")
	}
}
