//go:build !windows

package ownerfs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestMkdirAllMode(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "state")
	if err := MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o700 {
		t.Fatalf("mode %04o, want 0700", got)
	}
}

func TestCheckRefusesOpenModes(t *testing.T) {
	tmp := t.TempDir()
	for _, c := range []struct {
		name string
		dir  bool
		mode os.FileMode
		want string // "" for accepted
	}{
		{"file 0600", false, 0o600, ""},
		{"file 0400", false, 0o400, ""},
		{"file group readable", false, 0o640, "chmod 600"},
		{"file world writable", false, 0o602, "chmod 600"},
		{"dir 0700", true, 0o700, ""},
		{"dir world listable", true, 0o755, "chmod 700"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(tmp, strings.ReplaceAll(c.name, " ", "-"))
			var err error
			if c.dir {
				err = os.Mkdir(path, 0o700)
			} else {
				err = os.WriteFile(path, nil, 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			wantCheck(t, path, c.want)
		})
	}
}
