package secretfile

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/plures/plurenet/internal/ownerfs"
)

// On Windows a secret's privacy is its access list, not its mode bits:
// ownerfs.Check refuses one that admits anyone but the user, SYSTEM and
// Administrators. Symbolic links (reparse points) are refused by Lstat
// before the open; unlike O_NOFOLLOW this leaves a window in which the
// path could be swapped, but only by someone who can write the directory,
// which ownerfs.Check of that directory refuses for the state dir.

func openPrivate(path string) (*os.File, error) {
	if err := notLink(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := checkOpen(path, f, false); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func checkPath(path string, dir bool) error {
	if err := notLink(path); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return checkOpen(path, f, dir)
}

func notLink(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return symlinkError(path)
	}
	return nil
}

func checkOpen(path string, f *os.File, dir bool) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case dir && !st.IsDir():
		return fmt.Errorf("%s: not a directory", path)
	case !dir && !st.Mode().IsRegular():
		return fmt.Errorf("%s: not a regular file", path)
	}
	if err := ownerfs.Check(f); err != nil {
		return fmt.Errorf("%s: %w: %w", path, ErrInsecure, err)
	}
	return nil
}
