package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMaintainerScriptsUnderSystemd runs the maintainer scripts with
// every argument dpkg and rpm pass, in a private mount namespace where
// /run/systemd/system exists (systemd "is running"), /var/lib and
// /etc/systemd/system are scratch tmpfs, and systemctl is a stand-in that
// records its calls. The install test covers the other side: no systemd,
// no systemctl call. Nothing here touches the host's files.
func TestMaintainerScriptsUnderSystemd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts in a private mount namespace")
	}
	need(t, "unshare")
	bin := t.TempDir()
	calls := filepath.Join(t.TempDir(), "calls")
	// An active instance, so an upgrade has something to name.
	fake := `#!/bin/sh
echo "$*" >> ` + calls + `
case "$1" in
list-units) echo "plurenet@home.service loaded active running plurenet mesh node home" ;;
esac
`
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	scripts, err := filepath.Abs("scripts")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, script string
		args         []string
		wantCalls    []string // systemctl calls, in order
		wantOut      string   // in the script's output
		stateGone    bool     // /var/lib/plurenet removed
		linksGone    bool     // enablement links removed
	}{
		{"deb install", "postinstall.sh", []string{"configure", ""}, []string{"daemon-reload"}, "", false, false},
		{"deb upgrade", "postinstall.sh", []string{"configure", "0.9.0-1"}, []string{"daemon-reload", "list-units"}, "systemctl restart plurenet@home.service", false, false},
		{"rpm install", "postinstall.sh", []string{"1"}, []string{"daemon-reload"}, "", false, false},
		{"rpm upgrade", "postinstall.sh", []string{"2"}, []string{"daemon-reload", "list-units"}, "systemctl restart plurenet@home.service", false, false},
		{"deb remove", "preremove.sh", []string{"remove"}, []string{"stop plurenet@*.service plurenet-relay.service"}, "", false, false},
		{"deb upgrade, old prerm", "preremove.sh", []string{"upgrade", "1.0.0-1"}, nil, "", false, false},
		{"rpm erase", "preremove.sh", []string{"0"}, []string{"stop plurenet@*.service plurenet-relay.service"}, "", false, false},
		{"rpm upgrade, old preun", "preremove.sh", []string{"1"}, nil, "", false, false},
		{"deb remove, postrm", "postremove.sh", []string{"remove"}, []string{"daemon-reload"}, "", false, false},
		{"deb purge", "postremove.sh", []string{"purge"}, []string{"daemon-reload"}, "", true, true},
		{"deb upgrade, old postrm", "postremove.sh", []string{"upgrade", "1.0.0-1"}, []string{"daemon-reload"}, "", false, false},
		{"rpm erase, postun", "postremove.sh", []string{"0"}, []string{"daemon-reload"}, "", false, true},
		{"rpm upgrade, old postun", "postremove.sh", []string{"1"}, []string{"daemon-reload"}, "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(calls)
			// Scratch state and enablement links, then the script, then
			// what is left of them.
			setup := `set -e
mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system
mount -t tmpfs tmpfs /var/lib && mkdir -p /var/lib/plurenet/home && touch /var/lib/plurenet/home/node.key
mount -t tmpfs tmpfs /etc/systemd/system && mkdir /etc/systemd/system/multi-user.target.wants
touch /etc/systemd/system/multi-user.target.wants/plurenet@home.service /etc/systemd/system/multi-user.target.wants/other.service
sh "$0" "$@"
echo "state: $(ls /var/lib/plurenet 2>/dev/null | tr '\n' ' ')"
echo "links: $(ls /etc/systemd/system/multi-user.target.wants | tr '\n' ' ')"
`
			cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", setup, filepath.Join(scripts, tt.script)}, tt.args...)...)
			cmd.Env = []string{"PATH=" + bin + ":/usr/sbin:/usr/bin:/sbin:/bin"}
			outb, err := cmd.CombinedOutput()
			out := string(outb)
			if err != nil {
				t.Fatalf("%s %q: %v\n%s", tt.script, tt.args, err, out)
			}
			b, _ := os.ReadFile(calls)
			got := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(b) == 0 {
				got = nil
			}
			for i := range got {
				// list-units' filter arguments are not the point.
				if strings.HasPrefix(got[i], "list-units") {
					got[i] = "list-units"
				}
			}
			if strings.Join(got, "|") != strings.Join(tt.wantCalls, "|") {
				t.Errorf("systemctl calls %q, want %q", got, tt.wantCalls)
			}
			for _, c := range got {
				if strings.HasPrefix(c, "start") || strings.HasPrefix(c, "enable") || strings.HasPrefix(c, "restart") {
					t.Errorf("systemctl %s: the scripts never start, enable or restart a unit", c)
				}
			}
			if tt.wantOut != "" && !strings.Contains(out, tt.wantOut) {
				t.Errorf("output %q: want %q", out, tt.wantOut)
			}
			state, links := lineAfter(out, "state: "), lineAfter(out, "links: ")
			if gone := !strings.Contains(state, "home "); gone != tt.stateGone {
				t.Errorf("state removed: %v, want %v\n%s", gone, tt.stateGone, out)
			}
			if gone := !strings.Contains(links, "plurenet@home.service "); gone != tt.linksGone {
				t.Errorf("enablement links removed: %v, want %v\n%s", gone, tt.linksGone, out)
			}
			if !strings.Contains(links, "other.service ") {
				t.Errorf("another package's link was removed:\n%s", out)
			}
		})
	}
}

// lineAfter returns the rest of the first line of out that starts with
// prefix.
func lineAfter(out, prefix string) string {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return rest
		}
	}
	return ""
}
