package mesh

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/ownerfs"
	"github.com/plures/plurenet/internal/secretfile"
)

// KeyFile is the name of the node's private key inside its state directory.
const KeyFile = "node.key"

// maxKeyFile bounds what LoadOrCreateKey reads: a key is 44 base64
// characters, so anything much longer is not a key file.
const maxKeyFile = 1024

// LoadOrCreateKey returns the node key kept in stateDir/node.key, creating
// the directory (0700) and a fresh key (0600) if there is none; created says
// which. On Windows an access list that lets only the user, SYSTEM and
// Administrators in stands for those modes (see internal/ownerfs). Keeping the key keeps the node's addresses, which derive from it,
// stable across restarts.
//
// Like ssh with its private keys, it refuses a state directory or key file
// that group or others may access, that another user owns, or that is a
// symbolic link (see internal/secretfile): someone else may have read the
// key, and a key they know lets them impersonate this node. The file is
// written to a temporary name and linked into place, so a crash never
// leaves a half-written key and two processes starting at once agree on
// one key.
func LoadOrCreateKey(stateDir string) (nodekey.Private, bool, error) {
	if stateDir == "" {
		return nodekey.Private{}, false, errors.New("node key: state directory not set")
	}
	if err := ownerfs.MkdirAll(stateDir); err != nil {
		return nodekey.Private{}, false, fmt.Errorf("node key: creating state directory: %w", err)
	}
	// MkdirAll leaves an existing directory as it is: check it.
	if err := secretfile.CheckDir(stateDir); err != nil {
		return nodekey.Private{}, false, fmt.Errorf("state directory: %w", err)
	}
	path := filepath.Join(stateDir, KeyFile)
	k, err := loadKey(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nodekey.Private{}, false, err
	}
	k, err = nodekey.NewPrivate()
	if err != nil {
		return nodekey.Private{}, false, fmt.Errorf("node key: %w", err)
	}
	won, err := writeKey(path, k)
	if err != nil {
		return nodekey.Private{}, false, err
	}
	if !won {
		// Another process created the file first: use its key.
		k, err = loadKey(path)
		return k, false, err
	}
	return k, true, nil
}

func loadKey(path string) (nodekey.Private, error) {
	b, err := secretfile.Read(path, maxKeyFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nodekey.Private{}, err
		}
		return nodekey.Private{}, fmt.Errorf("node key: %w", err) // err names the path
	}
	k, err := nodekey.ParsePrivate(string(b))
	if err != nil {
		return nodekey.Private{}, fmt.Errorf("node key %s: malformed: %w", path, err)
	}
	return k, nil
}

// writeKey writes k to path unless path already exists; won reports whether
// this call created it.
func writeKey(path string, k nodekey.Private) (won bool, err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+KeyFile+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("node key %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // harmless after a link or rename
	if err := ownerfs.RestrictFile(tmp); err != nil {
		tmp.Close()
		return false, fmt.Errorf("node key %s: %w", path, err)
	}
	if _, err := tmp.WriteString(k.String() + "\n"); err != nil {
		tmp.Close()
		return false, fmt.Errorf("node key %s: writing: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("node key %s: syncing: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("node key %s: %w", path, err)
	}
	// A hard link fails if path exists, where a rename would replace a key
	// another process just wrote. Filesystems without hard links get rename.
	switch err := os.Link(tmp.Name(), path); {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		return false, nil
	default:
		if err := os.Rename(tmp.Name(), path); err != nil {
			return false, fmt.Errorf("node key %s: %w", path, err)
		}
	}
	syncDir(dir)
	return true, nil
}

// syncDir makes the new directory entry durable where the platform allows;
// failure only risks losing a key that was never used, so it is ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
