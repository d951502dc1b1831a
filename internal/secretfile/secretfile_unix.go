//go:build !windows

package secretfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// openPrivate opens path for reading with O_NOFOLLOW and checks the open
// descriptor. O_NONBLOCK keeps a FIFO at path from blocking the open; the
// descriptor is then refused as not a regular file.
func openPrivate(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, symlinkError(path)
		}
		return nil, err // *fs.PathError naming path; keeps fs.ErrNotExist
	}
	st, err := f.Stat()
	if err == nil {
		err = checkPrivate(path, st, false)
	} else {
		err = fmt.Errorf("%s: %w", path, err)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func checkPath(path string, dir bool) error {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return symlinkError(path)
	}
	return checkPrivate(path, st, dir)
}

// checkPrivate checks that st (of path) is a regular file, or a directory
// if dir, owned by us and closed to group and others.
func checkPrivate(path string, st fs.FileInfo, dir bool) error {
	what, fix := "", "chmod 600"
	switch {
	case dir && !st.IsDir():
		return fmt.Errorf("%s: not a directory", path)
	case dir:
		what, fix = "directory ", "chmod 700"
	case !st.Mode().IsRegular():
		return fmt.Errorf("%s: not a regular file", path)
	}
	if err := checkOwner(path, st); err != nil {
		return err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s%s: %w: permissions %04o are too open (other users may read or change it); run: %s %s", what, path, ErrInsecure, perm, fix, path)
	}
	return nil
}

func checkOwner(path string, st fs.FileInfo) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: cannot tell its owner on this system", path)
	}
	if uid := os.Geteuid(); int(sys.Uid) != uid {
		return fmt.Errorf("%s: %w: owned by uid %d, not by this user (uid %d); run: chown %d %s (or use a file of your own)", path, ErrInsecure, sys.Uid, uid, uid, path)
	}
	return nil
}
