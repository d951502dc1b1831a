//go:build !windows

package ownerfs

import (
	"fmt"
	"os"
)

// MkdirAll creates dir and its missing parents, dir with mode 0700 (less
// the umask). An existing dir is left as it is.
func MkdirAll(dir string) error {
	return os.MkdirAll(dir, 0o700)
}

// RestrictFile makes f readable and writable by its owner only (0600).
func RestrictFile(f *os.File) error {
	return f.Chmod(0o600)
}

// Check returns an error when group or others may access f, naming the
// permissions and the chmod that fixes them.
func Check(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	perm := st.Mode().Perm()
	if perm&0o077 == 0 {
		return nil
	}
	fix := "600"
	if st.IsDir() {
		fix = "700"
	}
	return fmt.Errorf("permissions %04o are too open (group or others may use it); run: chmod %s %s", perm, fix, f.Name())
}
