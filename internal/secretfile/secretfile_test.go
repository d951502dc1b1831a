//go:build !windows

package secretfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is a uid that is not ours when the tests run as root.
const nobody = 65534

func write(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadLine(t *testing.T) {
	for _, c := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
		errHas  string
		insec   bool
	}{
		{"trailing newline trimmed", "s3cret-value\n", 0o600, "s3cret-value", "", false},
		{"CRLF trimmed", "s3cret-value\r\n", 0o600, "s3cret-value", "", false},
		{"no newline", "s3cret-value", 0o400, "s3cret-value", "", false},
		{"inner spaces kept", " a b \n", 0o600, " a b ", "", false},
		{"empty", "", 0o600, "", "empty", false},
		{"only a newline", "\n", 0o600, "", "empty", false},
		{"two lines", "one\ntwo\n", 0o600, "", "more than one line", false},
		{"group readable", "x\n", 0o640, "", "chmod 600", true},
		{"world readable", "x\n", 0o644, "", "chmod 600", true},
		{"group writable", "x\n", 0o620, "", "chmod 600", true},
		{"too large", strings.Repeat("x", 100), 0o600, "", "larger than 64 bytes", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := write(t, c.content, c.mode)
			got, err := ReadLine(path, 64)
			if c.errHas == "" {
				if err != nil || got != c.want {
					t.Fatalf("ReadLine = %q, %v; want %q", got, err, c.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.errHas) || !strings.Contains(err.Error(), path) {
				t.Fatalf("ReadLine = %q, %v; want an error naming %s and %q", got, err, path, c.errHas)
			}
			if errors.Is(err, ErrInsecure) != c.insec {
				t.Fatalf("errors.Is(%v, ErrInsecure) = %v, want %v", err, !c.insec, c.insec)
			}
		})
	}
}

func TestReadRefuses(t *testing.T) {
	dir := t.TempDir()
	real := write(t, "secret\n", 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path, errHas string
		insec              bool
	}{
		// The link's target is fine; the link is still refused, and the
		// error says where it points.
		{"symlink", link, "symbolic link", true},
		{"FIFO", fifo, "not a regular file", false},
		{"directory", sub, "not a regular file", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(c.path, 64)
			if err == nil || !strings.Contains(err.Error(), c.errHas) || !strings.Contains(err.Error(), c.path) {
				t.Fatalf("Read(%s) = %v, want an error naming it and %q", c.path, err, c.errHas)
			}
			if errors.Is(err, ErrInsecure) != c.insec {
				t.Fatalf("errors.Is(%v, ErrInsecure) = %v, want %v", err, !c.insec, c.insec)
			}
			if c.name == "symlink" && !strings.Contains(err.Error(), real) {
				t.Errorf("symlink error %q does not name the target %s", err, real)
			}
			if err := CheckFile(c.path); err == nil {
				t.Errorf("CheckFile(%s) accepted it", c.path)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, err := Read(filepath.Join(dir, "nope"), 64)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Read of a missing file = %v, want fs.ErrNotExist", err)
		}
	})
}

// TestOwner: a file or directory of another user is refused even with
// private permissions: that user can read and replace it.
func TestOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	path := write(t, "secret\n", 0o600)
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, dir} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Read(path, 64); !errors.Is(err, ErrInsecure) || !strings.Contains(err.Error(), "chown 0 "+path) {
		t.Errorf("Read of nobody's file = %v, want ErrInsecure with a chown hint", err)
	}
	if err := CheckFile(path); !errors.Is(err, ErrInsecure) {
		t.Errorf("CheckFile of nobody's file = %v, want ErrInsecure", err)
	}
	if err := CheckDir(dir); !errors.Is(err, ErrInsecure) || !strings.Contains(err.Error(), "uid 65534") {
		t.Errorf("CheckDir of nobody's directory = %v, want ErrInsecure naming the owner", err)
	}
}

func TestCheckDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := mk("ok", 0o700)
	link := filepath.Join(base, "link")
	if err := os.Symlink(ok, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path, errHas string
	}{
		{"private", ok, ""},
		{"group readable", mk("g", 0o750), "chmod 700"},
		{"world open", mk("w", 0o777), "chmod 700"},
		{"symlink", link, "symbolic link"},
		{"a file", file, "not a directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := CheckDir(c.path)
			if c.errHas == "" {
				if err != nil {
					t.Fatalf("CheckDir = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.errHas) || !strings.Contains(err.Error(), c.path) {
				t.Fatalf("CheckDir = %v, want an error naming %s and %q", err, c.path, c.errHas)
			}
		})
	}
}
