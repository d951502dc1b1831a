// Package hostsfile keeps a marked block of member names in a hosts file
// (/etc/hosts), for hosts where split DNS cannot be registered:
//
//	# BEGIN plurenet home.plurenet
//	# Written by plurenet while it runs and removed when it stops; edits here are lost.
//	100.64.0.1	laptop.home.plurenet laptop-01010101.home.plurenet
//	fd12:3456:789a::1	laptop.home.plurenet laptop-01010101.home.plurenet
//	# END plurenet home.plurenet
//
// Everything outside the block is kept byte for byte, and Close removes the
// block so the file is again exactly what it was outside it. Each mesh's
// block is keyed by its suffix, so two meshes on one host each keep their
// own; a block left by a crashed run is replaced by the next Update.
//
// The file is rewritten atomically (a temporary file in the same directory,
// renamed over it) with its mode and owner kept, so a reader never sees half
// a file. A symbolic link is refused rather than followed or replaced, and
// a file above MaxSize is refused rather than read.
package hostsfile

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/plures/plurenet/dns/names"
)

// DefaultPath is the hosts file of Unix systems.
const DefaultPath = "/etc/hosts"

// MaxSize bounds the hosts file plurenet reads and rewrites. Ordinary ones
// are a few hundred bytes; ad-blocking lists reach about 10 MiB. Past 32 MiB
// it is not a file to rewrite on every membership change.
const MaxSize = 32 << 20

// Config configures a File. Suffix is required.
type Config struct {
	// Path is the hosts file; "" means DefaultPath.
	Path string
	// Suffix names the block (and must be the suffix of every table
	// given to Update): one block per mesh.
	Suffix string
	// Logger receives a line per rewrite at debug level; nil means
	// slog.Default.
	Logger *slog.Logger
}

// File is one mesh's block in a hosts file. Create it with Open.
type File struct {
	path, suffix string
	begin, end   string
	log          *slog.Logger

	mu     sync.Mutex
	closed bool
}

// ErrUnterminated is returned when the file has this mesh's BEGIN line but
// no END line after it: where the block ends is unknown, so nothing is
// touched.
var ErrUnterminated = errors.New("hosts file: block has no END line")

// Open checks that cfg.Path is a regular file plurenet can rewrite and
// returns the mesh's block in it. It writes nothing.
func Open(cfg Config) (*File, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if s, err := names.ParseSuffix(cfg.Suffix); err != nil {
		return nil, fmt.Errorf("hosts file %s: %w", cfg.Path, err)
	} else if s != cfg.Suffix {
		return nil, fmt.Errorf("hosts file %s: suffix %q not canonical (want %q)", cfg.Path, cfg.Suffix, s)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	f := &File{
		path:   cfg.Path,
		suffix: cfg.Suffix,
		begin:  "# BEGIN plurenet " + cfg.Suffix,
		end:    "# END plurenet " + cfg.Suffix,
		log:    cfg.Logger.With("component", "hosts-file", "path", cfg.Path),
	}
	// Reading now reports a missing file, a link or an oversized file at
	// start rather than at the first membership change.
	if err := f.edit(func(content []byte) ([]byte, error) { return content, nil }); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the hosts file's path.
func (f *File) Path() string { return f.path }

// Update rewrites the block with t's names: one line per address of each
// named member. The file is not rewritten when the block already says
// this.
func (f *File) Update(t *names.Table) error {
	if t.Suffix() != f.suffix {
		return fmt.Errorf("hosts file %s: table for suffix %q given to the block of %q", f.path, t.Suffix(), f.suffix)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("hosts file %s: %w", f.path, os.ErrClosed)
	}
	return f.edit(func(content []byte) ([]byte, error) {
		block, err := f.block(t, eol(content))
		if err != nil {
			return nil, err
		}
		return f.replace(content, block)
	})
}

// Close removes the block, leaving the file exactly as it is outside it.
// It is idempotent; only the first call touches the file.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	return f.edit(func(content []byte) ([]byte, error) { return f.replace(content, nil) })
}

// block renders the block for t with line ending nl.
func (f *File) block(t *names.Table, nl string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(f.begin + nl)
	b.WriteString("# Written by plurenet while it runs and removed when it stops; edits here are lost." + nl)
	for _, e := range t.Entries() {
		for _, n := range e.Names {
			// The table only makes host names; checking again keeps a
			// bug there from writing arbitrary lines into a root-owned
			// file.
			if !names.IsHostName(n) {
				return nil, fmt.Errorf("hosts file %s: refusing to write name %q", f.path, n)
			}
		}
		for _, a := range []netip.Addr{e.V4, e.V6} {
			if a.IsValid() {
				b.WriteString(a.String() + "\t" + strings.Join(e.Names, " ") + nl)
			}
		}
	}
	b.WriteString(f.end + nl)
	return b.Bytes(), nil
}

// replace returns content with every block of this mesh removed and, when
// block is not nil, block in the place of the first one. Without a block
// already there the new one goes at the end, or at the start when the
// file's last line has no newline: appending would then have to add one,
// and removing the block could not tell that newline was not the user's.
func (f *File) replace(content, block []byte) ([]byte, error) {
	var out []byte
	at := -1
	rest := content
	for {
		start, stop, found, err := f.find(rest)
		if err != nil {
			return nil, err
		}
		if !found {
			out = append(out, rest...)
			break
		}
		out = append(out, rest[:start]...)
		if at < 0 {
			at = len(out)
		}
		rest = rest[stop:]
	}
	if block == nil {
		return out, nil
	}
	switch {
	case at >= 0:
	case len(out) == 0 || out[len(out)-1] == '\n':
		at = len(out)
	default:
		at = 0
	}
	return append(out[:at:at], append(block, out[at:]...)...), nil
}

// find locates the first block of this mesh in b: its BEGIN line's start
// and the end of its END line (with the line ending, if any).
func (f *File) find(b []byte) (start, stop int, found bool, err error) {
	start = -1
	for off := 0; off < len(b); {
		line, next := lineAt(b, off)
		switch {
		case start < 0 && line == f.begin:
			start = off
		case start >= 0 && line == f.end:
			return start, next, true, nil
		}
		off = next
	}
	if start >= 0 {
		return 0, 0, false, fmt.Errorf("%w: %q at byte %d of %s has no %q after it; remove the block by hand", ErrUnterminated, f.begin, start, f.path, f.end)
	}
	return 0, 0, false, nil
}

// lineAt returns the line starting at off, without its line ending, and
// the offset of the next line.
func lineAt(b []byte, off int) (string, int) {
	i := bytes.IndexByte(b[off:], '\n')
	if i < 0 {
		return strings.TrimSuffix(string(b[off:]), "\r"), len(b)
	}
	return strings.TrimSuffix(string(b[off:off+i]), "\r"), off + i + 1
}

// eol returns the file's line ending: CRLF when its first line ends so.
func eol(content []byte) string {
	if i := bytes.IndexByte(content, '\n'); i > 0 && content[i-1] == '\r' {
		return "\r\n"
	}
	return "\n"
}

// edit reads the file, applies change, and writes the result atomically
// when it differs, all under the directory lock that serialises plurenet
// processes editing the same file.
func (f *File) edit(change func([]byte) ([]byte, error)) error {
	unlock, err := lockDir(filepath.Dir(f.path))
	if err != nil {
		return fmt.Errorf("hosts file %s: %w", f.path, err)
	}
	defer unlock()
	content, info, err := readBounded(f.path)
	if err != nil {
		return fmt.Errorf("hosts file %s: %w", f.path, err)
	}
	out, err := change(content)
	if err != nil {
		return err
	}
	if bytes.Equal(out, content) {
		return nil
	}
	if err := writeAtomic(f.path, out, info); err != nil {
		return fmt.Errorf("hosts file %s: %w", f.path, err)
	}
	f.log.Debug("rewrote the hosts file", "bytes", len(out))
	return nil
}
