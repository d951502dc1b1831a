// Package secretfile reads the files that hold plurenet's secrets (the mesh
// secret, the node key, proxy credentials, a backplane URL with its
// password) and checks the directories that hold them.
//
// Like ssh with its private keys, it refuses anything another local user
// could have read or swapped: a file or directory that group or others may
// access, one owned by another user, and symbolic links (a link in a
// directory someone else can write lets them point us at a file of their
// choosing; a secret that others could read is no longer secret). Each
// refusal is an error naming the path and the command that fixes it, and
// matches errors.Is(err, ErrInsecure).
//
// Only the last path component is checked, not the parent directories: a
// user who controls a parent of the path can replace the whole file anyway,
// and refusing every path under a group-writable home would help nobody.
package secretfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrInsecure marks a refusal: the file or directory exists but others may
// read or replace it.
var ErrInsecure = errors.New("not private to this user")

// Read returns the contents of the regular file at path, at most limit
// bytes (more is an error: a wrong path to a large file must fail fast).
// The file must be owned by the effective user, give group and others no
// access (0600 or stricter; on Windows, an access list that admits only
// the user, SYSTEM and Administrators), and not be a symbolic link: the
// file is checked on the open descriptor, so what is checked is what is
// read. A missing file gives an error matching fs.ErrNotExist.
func Read(path string, limit int) ([]byte, error) {
	f, err := openPrivate(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%s: reading: %w", path, err)
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes: is this the right file?", path, limit)
	}
	return b, nil
}

// ReadLine reads a file holding one secret on one line (as "plurenet key
// generate > FILE" writes it): Read, then one trailing newline ("\n" or
// "\r\n") is removed. An empty secret is an error.
func ReadLine(path string, limit int) (string, error) {
	b, err := Read(path, limit)
	if err != nil {
		return "", err
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", fmt.Errorf("%s: empty: the file must hold the secret on its first line", path)
	}
	if bytes.ContainsAny(b, "\r\n") {
		return "", fmt.Errorf("%s: more than one line: the file must hold only the secret", path)
	}
	return string(b), nil
}

// CheckFile checks the file at path as Read would, without reading it: for
// a file read by other means that turned out to hold a secret (a config
// file with the mesh secret in it).
func CheckFile(path string) error { return checkPath(path, false) }

// CheckDir checks that path is a directory (not a symbolic link to one)
// owned by the effective user with no access for group and others (0700).
func CheckDir(path string) error { return checkPath(path, true) }

func symlinkError(path string) error {
	hint := "give the path of the file itself"
	if target, err := os.Readlink(path); err == nil {
		hint = fmt.Sprintf("it points to %s: give that path instead", target)
	}
	return fmt.Errorf("%s: %w: it is a symbolic link, which is not followed for a secret; %s", path, ErrInsecure, hint)
}
