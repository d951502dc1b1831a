package hostsfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// readBounded reads the hosts file without following a symbolic link and
// without reading more than MaxSize bytes, and returns its metadata for
// writeAtomic.
func readBounded(path string) ([]byte, fs.FileInfo, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		// Renaming over a link would replace it with a file, and writing
		// through it would edit a file the user did not name.
		return nil, nil, fmt.Errorf("is a symbolic link; plurenet does not follow it: name its target instead")
	case !info.Mode().IsRegular():
		return nil, nil, fmt.Errorf("not a regular file (%s)", info.Mode().Type())
	case info.Size() > MaxSize:
		return nil, nil, fmt.Errorf("%d bytes, more than the %d plurenet rewrites", info.Size(), MaxSize)
	}
	f, err := openNoFollow(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	// The file may have grown since Lstat: never read past the bound.
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, nil, err
	}
	if len(b) > MaxSize {
		return nil, nil, fmt.Errorf("more than the %d bytes plurenet rewrites", MaxSize)
	}
	return b, info, nil
}

// writeAtomic replaces path with data: a temporary file in the same
// directory (so the rename cannot cross file systems) with the old file's
// mode and owner, synced, then renamed over path, then the directory
// synced so the rename survives a crash.
func writeAtomic(path string, data []byte, old fs.FileInfo) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".plurenet-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Chmod(old.Mode().Perm()); err != nil {
		return err
	}
	if err := chownLike(tmp, old); err != nil {
		return fmt.Errorf("keeping the owner: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}
