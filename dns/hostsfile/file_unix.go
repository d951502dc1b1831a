//go:build unix

package hostsfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// openNoFollow opens path for reading and fails on a symbolic link even if
// one replaced the file since it was checked. O_NONBLOCK keeps a FIFO put
// there in the meantime from blocking the open.
func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

// chownLike gives f the owner and group of old.
func chownLike(f *os.File, old fs.FileInfo) error {
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return f.Chown(int(st.Uid), int(st.Gid))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Lock waiting: a holder keeps the lock for one read and one rename, so
// 5 s means it is stuck; polling every 10 ms keeps the wait bounded
// without a blocking flock that could hang the node.
const (
	lockWait = 5 * time.Second
	lockPoll = 10 * time.Millisecond
)

// lockDir takes an exclusive flock on the file's directory. The file itself
// cannot carry the lock: each rewrite replaces it with a new inode. Only
// plurenet processes take this lock; it keeps two meshes that update their
// blocks at once from losing each other's edit.
func lockDir(dir string) (unlock func(), err error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockWait)
	for {
		err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { d.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			d.Close()
			return nil, fmt.Errorf("locking %s (another plurenet process holds it?): %w", dir, err)
		}
		time.Sleep(lockPoll)
	}
}
