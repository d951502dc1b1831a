//go:build unix

package hostsfile

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/plures/plurenet/dns/names"
	"github.com/plures/plurenet/internal/nodekey"
)

const suffix = "home.plurenet"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func table(tb testing.TB, suffix string, ms ...names.Member) *names.Table {
	tb.Helper()
	t, err := names.NewTable(suffix, ms)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func member(b byte, name string) names.Member {
	return names.Member{
		Key:  nodekey.Public{b, b, b, b},
		Name: name,
		V4:   netip.AddrFrom4([4]byte{100, 64, 0, b}),
		V6:   netip.AddrFrom16([16]byte{0xfd, 0x12, 0x34, 0x56, 0x78, 0x9a, 15: b}),
	}
}

// hostsWith writes content to a fresh hosts file and returns its path.
func hostsWith(tb testing.TB, content string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "hosts")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

func read(tb testing.TB, p string) string {
	tb.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func open(tb testing.TB, p, suffix string) *File {
	tb.Helper()
	f, err := Open(Config{Path: p, Suffix: suffix, Logger: quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

const laptopBlock = "# BEGIN plurenet home.plurenet\n" +
	"# Written by plurenet while it runs and removed when it stops; edits here are lost.\n" +
	"100.64.0.1\tlaptop.home.plurenet laptop-01010101.home.plurenet\n" +
	"fd12:3456:789a::1\tlaptop.home.plurenet laptop-01010101.home.plurenet\n" +
	"# END plurenet home.plurenet\n"

func TestBlockPlacementAndRestore(t *testing.T) {
	const base = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
	for _, tc := range []struct {
		name, original, withBlock string
	}{
		{"appended after a final newline", base, base + laptopBlock},
		{"empty file", "", laptopBlock},
		{"first when the last line has no newline", "127.0.0.1 localhost", laptopBlock + "127.0.0.1 localhost"},
		{"stale block replaced where it is", "a\n" + strings.ReplaceAll(laptopBlock, "100.64.0.1", "100.64.9.9") + "b\n", "a\n" + laptopBlock + "b\n"},
		{"two stale blocks become one", "a\n" + laptopBlock + "b\n" + laptopBlock + "c", "a\n" + laptopBlock + "b\nc"},
		{"another mesh's block is left alone",
			base + strings.ReplaceAll(laptopBlock, "home.plurenet", "work.plurenet"),
			base + strings.ReplaceAll(laptopBlock, "home.plurenet", "work.plurenet") + laptopBlock},
		{"a mesh whose suffix ends in ours is another mesh",
			strings.ReplaceAll(laptopBlock, "home.plurenet", "x.home.plurenet"),
			strings.ReplaceAll(laptopBlock, "home.plurenet", "x.home.plurenet") + laptopBlock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := hostsWith(t, tc.original)
			f := open(t, p, suffix)
			if err := f.Update(table(t, suffix, member(1, "laptop"))); err != nil {
				t.Fatal(err)
			}
			if got := read(t, p); got != tc.withBlock {
				t.Fatalf("after Update:\n%q\nwant\n%q", got, tc.withBlock)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			want := tc.original
			// What Close leaves is the file without any block of ours.
			for {
				i := strings.Index(want, "# BEGIN plurenet home.plurenet\n")
				if i < 0 {
					break
				}
				j := strings.Index(want[i:], "# END plurenet home.plurenet\n")
				want = want[:i] + want[i+j+len("# END plurenet home.plurenet\n"):]
			}
			if got := read(t, p); got != want {
				t.Fatalf("after Close:\n%q\nwant\n%q", got, want)
			}
			if err := f.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := f.Update(table(t, suffix)); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("Update after Close: %v, want os.ErrClosed", err)
			}
			entries, _ := os.ReadDir(filepath.Dir(p))
			if len(entries) != 1 {
				t.Fatalf("directory holds %d entries, want only the hosts file (no temporary left)", len(entries))
			}
		})
	}
}

func TestMembershipChanges(t *testing.T) {
	const base = "127.0.0.1 localhost\n"
	p := hostsWith(t, base)
	f := open(t, p, suffix)
	defer f.Close()
	steps := []struct {
		members []names.Member
		lines   []string
	}{
		{[]names.Member{member(1, "laptop"), member(2, "nas")}, []string{
			"100.64.0.1\tlaptop.home.plurenet laptop-01010101.home.plurenet",
			"fd12:3456:789a::1\tlaptop.home.plurenet laptop-01010101.home.plurenet",
			"100.64.0.2\tnas.home.plurenet nas-02020202.home.plurenet",
			"fd12:3456:789a::2\tnas.home.plurenet nas-02020202.home.plurenet",
		}},
		// laptop leaves; a second nas arrives: both only by key label.
		{[]names.Member{member(2, "nas"), member(3, "nas")}, []string{
			"100.64.0.2\tnas-02020202.home.plurenet",
			"fd12:3456:789a::2\tnas-02020202.home.plurenet",
			"100.64.0.3\tnas-03030303.home.plurenet",
			"fd12:3456:789a::3\tnas-03030303.home.plurenet",
		}},
		{nil, nil},
	}
	for i, st := range steps {
		if err := f.Update(table(t, suffix, st.members...)); err != nil {
			t.Fatal(err)
		}
		want := base + "# BEGIN plurenet home.plurenet\n" +
			"# Written by plurenet while it runs and removed when it stops; edits here are lost.\n"
		for _, l := range st.lines {
			want += l + "\n"
		}
		want += "# END plurenet home.plurenet\n"
		if got := read(t, p); got != want {
			t.Fatalf("step %d:\n%s\nwant\n%s", i, got, want)
		}
	}
}

func TestTwoMeshes(t *testing.T) {
	const base = "127.0.0.1 localhost\n"
	p := hostsWith(t, base)
	home := open(t, p, "home.plurenet")
	work := open(t, p, "work.plurenet")
	// Both update at once, many times, each naming its member after the
	// round: the directory lock keeps either from writing back a file read
	// before the other's rename, which would put an older version of the
	// other's block back.
	const rounds = 100
	var wg sync.WaitGroup
	for _, side := range []struct {
		f      *File
		suffix string
		name   string
	}{{home, "home.plurenet", "laptop"}, {work, "work.plurenet", "desk"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if err := side.f.Update(table(t, side.suffix, member(1, fmt.Sprintf("%s%d", side.name, i)))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := read(t, p)
	for _, want := range []string{
		fmt.Sprintf("laptop%d.home.plurenet", rounds-1),
		fmt.Sprintf("desk%d.work.plurenet", rounds-1),
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("the last update naming %q was lost:\n%s", want, got)
		}
	}
	if err := home.Close(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, p); strings.Contains(got, "home.plurenet") || !strings.Contains(got, "work.plurenet") {
		t.Fatalf("after closing home:\n%s", got)
	}
	if err := work.Close(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, p); got != base {
		t.Fatalf("after closing both: %q, want %q", got, base)
	}
}

func TestUnchangedIsNotRewritten(t *testing.T) {
	p := hostsWith(t, "")
	f := open(t, p, suffix)
	defer f.Close()
	tab := table(t, suffix, member(1, "laptop"))
	if err := f.Update(tab); err != nil {
		t.Fatal(err)
	}
	inode := func() uint64 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	before := inode()
	if err := f.Update(tab); err != nil {
		t.Fatal(err)
	}
	if inode() != before {
		t.Fatal("an Update that changes nothing replaced the file")
	}
}

func TestKeepsModeAndOwner(t *testing.T) {
	p := hostsWith(t, "x\n")
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		// As root, give the file another owner to see it kept.
		uid, gid = 1234, 5678
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	f := open(t, p, suffix)
	if err := f.Update(table(t, suffix, member(1, "laptop"))); err != nil {
		t.Fatal(err)
	}
	for _, when := range []string{"after Update", "after Close"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode().Perm() != 0o640 || int(sys.Uid) != uid || int(sys.Gid) != gid {
			t.Fatalf("%s: mode %v owner %d:%d, want -rw-r----- %d:%d", when, st.Mode().Perm(), sys.Uid, sys.Gid, uid, gid)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCRLF(t *testing.T) {
	p := hostsWith(t, "127.0.0.1 localhost\r\n")
	f := open(t, p, suffix)
	if err := f.Update(table(t, suffix, member(1, "laptop"))); err != nil {
		t.Fatal(err)
	}
	want := "127.0.0.1 localhost\r\n" + strings.ReplaceAll(laptopBlock, "\n", "\r\n")
	if got := read(t, p); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, p); got != "127.0.0.1 localhost\r\n" {
		t.Fatalf("after Close: %q", got)
	}
}

func TestRefusals(t *testing.T) {
	t.Run("unterminated block is left alone", func(t *testing.T) {
		const content = "a\n# BEGIN plurenet home.plurenet\n100.64.0.1 x.home.plurenet\nb\n"
		p := hostsWith(t, content)
		_, err := Open(Config{Path: p, Suffix: suffix, Logger: quiet()})
		if err != nil {
			t.Fatalf("Open refused a file it has not yet needed to edit: %v", err)
		}
		f := open(t, p, suffix)
		if err := f.Update(table(t, suffix, member(1, "laptop"))); !errors.Is(err, ErrUnterminated) {
			t.Fatalf("Update: %v, want ErrUnterminated", err)
		}
		if err := f.Close(); !errors.Is(err, ErrUnterminated) {
			t.Fatalf("Close: %v, want ErrUnterminated", err)
		}
		if got := read(t, p); got != content {
			t.Fatalf("file changed: %q", got)
		}
	})
	t.Run("symbolic link", func(t *testing.T) {
		target := hostsWith(t, "x\n")
		link := filepath.Join(t.TempDir(), "hosts")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(Config{Path: link, Suffix: suffix}); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("Open of a link: %v, want a refusal naming the link", err)
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatal("the link was replaced")
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := Open(Config{Path: t.TempDir(), Suffix: suffix}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("Open of a directory: %v", err)
		}
	})
	t.Run("missing file is not created", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "hosts")
		if _, err := Open(Config{Path: p, Suffix: suffix}); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Open of a missing file: %v, want not-exist", err)
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("Open created the file")
		}
	})
	t.Run("oversized", func(t *testing.T) {
		p := hostsWith(t, "")
		if err := os.Truncate(p, MaxSize+1); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(Config{Path: p, Suffix: suffix}); err == nil || !strings.Contains(err.Error(), "bytes") {
			t.Fatalf("Open of an oversized file: %v", err)
		}
	})
	t.Run("bad suffix", func(t *testing.T) {
		p := hostsWith(t, "")
		for _, s := range []string{"", "Home.plurenet", "x\n# END"} {
			if _, err := Open(Config{Path: p, Suffix: s}); err == nil {
				t.Errorf("Open accepted suffix %q", s)
			}
		}
	})
	t.Run("table of another mesh", func(t *testing.T) {
		f := open(t, hostsWith(t, ""), suffix)
		defer f.Close()
		if err := f.Update(table(t, "work.plurenet")); err == nil {
			t.Fatal("Update accepted another mesh's table")
		}
	})
}
