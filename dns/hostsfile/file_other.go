//go:build !unix

package hostsfile

import (
	"io/fs"
	"os"
)

// openNoFollow opens path; readBounded has refused links already.
func openNoFollow(path string) (*os.File, error) { return os.Open(path) }

// chownLike does nothing: these systems keep no Unix owner to restore.
func chownLike(*os.File, fs.FileInfo) error { return nil }

func syncDir(string) error { return nil }

// lockDir does nothing: there is no flock here, so two plurenet processes
// editing one hosts file at the same instant can lose one edit (the next
// membership change writes it again).
func lockDir(string) (func(), error) { return func() {}, nil }
