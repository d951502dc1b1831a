package packaging_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
)

// commandTimeout bounds one dpkg, rpm or plurenet invocation; each takes
// seconds, so this only keeps a broken run from hanging.
const commandTimeout = 2 * time.Minute

// distDir is where "make package" leaves the packages.
const distDir = "../dist"

// arch is one architecture "make package" builds for, by its names in
// each system.
type arch struct {
	goarch, rpm string
	machine     elf.Machine
}

var arches = []arch{
	{"amd64", "x86_64", elf.EM_X86_64},
	{"arm64", "aarch64", elf.EM_AARCH64},
}

// wantFiles is every file and directory a package holds, with its mode as
// ls shows it, for a package whose units go to unitDir. The two packagers
// differ only there.
func wantFiles(unitDir string) map[string]string {
	return map[string]string{
		"/usr/bin/plurenet":                           "-rwxr-xr-x",
		unitDir + "/plurenet@.service":                "-rw-r--r--",
		unitDir + "/plurenet-relay.service":           "-rw-r--r--",
		"/usr/lib/sysusers.d/plurenet.conf":           "-rw-r--r--",
		"/etc/plurenet":                               "drwxr-xr-x",
		"/etc/plurenet/example.json":                  "-rw-r--r--",
		"/var/lib/plurenet":                           "drwxr-xr-x",
		"/usr/share/doc/plurenet/README.md":           "-rw-r--r--",
		"/usr/share/doc/plurenet/operations.md":       "-rw-r--r--",
		"/usr/share/doc/plurenet/examples/tun.conf":   "-rw-r--r--",
		"/usr/share/doc/plurenet/examples/relay.json": "-rw-r--r--",
	}
}

const (
	debUnitDir = "/lib/systemd/system"
	rpmUnitDir = "/usr/lib/systemd/system"
)

// findPackage returns the one file in dist/ matching pattern.
func findPackage(t *testing.T, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(distDir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 {
		t.Fatalf("dist/%s: %d files (%q), want exactly one: run \"make package\" first", pattern, len(m), m)
	}
	return m[0]
}

// command runs name with args and returns its output, failing the test
// with the output on error.
func command(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := tryCommand(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func tryCommand(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (\"make package-test\" installs rpm with apt as root)", tool)
		}
	}
}

// checkListing compares a package's listing (path -> mode, only the
// entries the package owns) with wantFiles.
func checkListing(t *testing.T, pkg string, got map[string]string, want map[string]string) {
	t.Helper()
	var problems []string
	for p, mode := range want {
		switch g, ok := got[p]; {
		case !ok:
			problems = append(problems, "missing "+p)
		case g != mode:
			problems = append(problems, fmt.Sprintf("%s: mode %s, want %s", p, g, mode))
		}
	}
	for p, mode := range got {
		if _, ok := want[p]; !ok && !strings.HasPrefix(mode, "d") {
			problems = append(problems, "unexpected "+p)
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		t.Errorf("%s:\n  %s", filepath.Base(pkg), strings.Join(problems, "\n  "))
	}
}

// checkBinary checks that bin is a static ELF executable for a.
func checkBinary(t *testing.T, pkg string, bin []byte, a arch) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("%s: /usr/bin/plurenet: %v", filepath.Base(pkg), err)
	}
	defer f.Close()
	if f.Machine != a.machine {
		t.Errorf("%s: /usr/bin/plurenet is for %s, want %s", filepath.Base(pkg), f.Machine, a.machine)
	}
	// CGO_ENABLED=0: no interpreter, so it runs on any distribution.
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: /usr/bin/plurenet is dynamically linked", filepath.Base(pkg))
		}
	}
}

// TestDebContents lists every .deb with dpkg-deb: files, modes, owners,
// conffiles, maintainer scripts and the binary's architecture.
func TestDebContents(t *testing.T) {
	need(t, "dpkg-deb")
	for _, a := range arches {
		t.Run(a.goarch, func(t *testing.T) {
			deb := findPackage(t, "plurenet_*_"+a.goarch+".deb")
			if got := strings.TrimSpace(command(t, "dpkg-deb", "-f", deb, "Architecture")); got != a.goarch {
				t.Errorf("Architecture %q, want %s", got, a.goarch)
			}
			got := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(command(t, "dpkg-deb", "-c", deb)), "\n") {
				// drwxr-xr-x root/root 0 2026-01-01 00:00 ./etc/plurenet/
				f := strings.Fields(line)
				if len(f) < 6 {
					t.Fatalf("dpkg-deb -c line %q", line)
				}
				if f[1] != "root/root" {
					t.Errorf("%s owned by %s, want root/root", f[len(f)-1], f[1])
				}
				p := strings.TrimSuffix(strings.TrimPrefix(f[len(f)-1], "."), "/")
				if p != "" {
					got[p] = f[0]
				}
			}
			checkListing(t, deb, got, wantFiles(debUnitDir))

			dir := t.TempDir()
			command(t, "dpkg-deb", "-e", deb, dir)
			conf, err := os.ReadFile(filepath.Join(dir, "conffiles"))
			if err != nil || strings.TrimSpace(string(conf)) != "/etc/plurenet/example.json" {
				t.Errorf("conffiles = %q (%v), want only /etc/plurenet/example.json", conf, err)
			}
			for _, s := range []string{"preinst", "postinst", "prerm", "postrm"} {
				if st, err := os.Stat(filepath.Join(dir, s)); err != nil || st.Mode().Perm()&0o111 == 0 {
					t.Errorf("maintainer script %s: %v (want an executable)", s, err)
				}
			}
			checkBinary(t, deb, debFile(t, deb, "./usr/bin/plurenet"), a)
		})
	}
}

// debFile returns one file of a .deb's data archive.
func debFile(t *testing.T, deb, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	data, err := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile %s: %v", deb, err)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s: no %s", deb, name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// TestRPMContents lists every .rpm with rpm -qp: files, modes, owners,
// config flags, scriptlets, requirements and the binary's architecture.
func TestRPMContents(t *testing.T) {
	need(t, "rpm", "rpm2cpio")
	for _, a := range arches {
		t.Run(a.goarch, func(t *testing.T) {
			r := findPackage(t, "plurenet-*."+a.rpm+".rpm")
			if got := command(t, "rpm", "-qp", "--qf", "%{ARCH}", r); got != a.rpm {
				t.Errorf("ARCH %q, want %s", got, a.rpm)
			}
			got := map[string]string{}
			var config []string
			list := command(t, "rpm", "-qp", "--qf", "[%{FILENAMES}\t%{FILEMODES:perms}\t%{FILEUSERNAME}:%{FILEGROUPNAME}\t%{FILEFLAGS:fflags}\n]", r)
			for _, line := range strings.Split(strings.TrimRight(list, "\n"), "\n") {
				f := strings.Split(line, "\t")
				if len(f) != 4 {
					t.Fatalf("rpm listing line %q", line)
				}
				got[f[0]] = f[1]
				if f[2] != "root:root" {
					t.Errorf("%s owned by %s, want root:root", f[0], f[2])
				}
				if strings.Contains(f[3], "c") {
					config = append(config, f[0]+" "+f[3])
				}
			}
			checkListing(t, r, got, wantFiles(rpmUnitDir))
			// %config(noreplace): an edited example survives upgrades.
			if len(config) != 1 || config[0] != "/etc/plurenet/example.json cn" {
				t.Errorf("config files %q, want only /etc/plurenet/example.json, noreplace (cn)", config)
			}
			scripts := command(t, "rpm", "-qp", "--scripts", r)
			for _, s := range []string{"preinstall", "postinstall", "preuninstall", "postuninstall"} {
				if !strings.Contains(scripts, s+" scriptlet") {
					t.Errorf("no %s scriptlet:\n%s", s, scripts)
				}
			}
			if req := command(t, "rpm", "-qpR", r); !strings.Contains(req, "/usr/sbin/useradd") {
				t.Errorf("requirements %q: want /usr/sbin/useradd (run by %%pre)", req)
			}
			checkBinary(t, r, rpmFile(t, r, "/usr/bin/plurenet"), a)
		})
	}
}

// rpmFile returns one file of an .rpm's payload.
func rpmFile(t *testing.T, rpm, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	// rpm2cpio writes the whole payload of an nfpm-built package but
	// exits 1: rpmpack records a payload size that rpm2cpio compares with
	// what it copied (nfpm issue 341). So the exit status is not the
	// check; reading the archive through to its trailer, with each file
	// at its full size, is.
	data, err := exec.CommandContext(ctx, "rpm2cpio", rpm).Output()
	if len(data) == 0 {
		t.Fatalf("rpm2cpio %s: no output (%v)", rpm, err)
	}
	var found []byte
	cr := cpio.NewReader(bytes.NewReader(data))
	for {
		h, err := cr.Next()
		if errors.Is(err, io.EOF) {
			if found == nil {
				t.Fatalf("%s: no %s", rpm, name)
			}
			return found
		}
		if err != nil {
			t.Fatalf("%s: payload: %v", rpm, err)
		}
		b, err := io.ReadAll(cr)
		if err != nil || int64(len(b)) != h.Size {
			t.Fatalf("%s: payload %s: %d of %d bytes (%v)", rpm, h.Name, len(b), h.Size, err)
		}
		// rpmpack writes absolute names, rpmbuild "./"-relative ones.
		if "/"+strings.TrimPrefix(strings.TrimPrefix(h.Name, "."), "/") == name {
			found = b
		}
	}
}
