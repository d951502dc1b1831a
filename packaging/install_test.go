package packaging_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What the install test writes as an admin would, and removes after.
const (
	testInstance  = "pkgtest"
	testTUN       = "pkgtun"
	relayConfig   = "/etc/plurenet/relay.json"
	nodeConfig    = "/etc/plurenet/" + testInstance + ".json"
	nodeKeyFile   = "/etc/plurenet/" + testInstance + ".key"
	nodeStateDir  = "/var/lib/plurenet/" + testInstance
	tunDropInDir  = "/etc/systemd/system/plurenet@" + testTUN + ".service.d"
	stateRoot     = "/var/lib/plurenet"
	configDir     = "/etc/plurenet"
	debNodeUnit   = debUnitDir + "/plurenet@.service"
	debRelayUnit  = debUnitDir + "/plurenet-relay.service"
	connectedWait = 30 * time.Second
)

var systemUsers = []string{"plurenet", "plurenet-relay"}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestDebInstall installs the host's .deb for real and uses it as an admin
// would, without systemd running: dpkg -i (users, files, modes,
// conffile), the units under systemd-analyze verify, the relay unit's and
// a node unit's commands run as their users the way systemd would run them
// (READY=1, the node reaching the relay, status as root, SIGTERM), an
// upgrade that keeps the node key and an edited config, dpkg -r that keeps
// state and config, dpkg -P that removes the state but not the admin's
// files. It leaves the machine as it found it.
func TestDebInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: installs the package with dpkg -i")
	}
	need(t, "dpkg", "dpkg-query", "dpkg-deb")
	deb := findPackage(t, "plurenet_*_"+strings.TrimSpace(command(t, "dpkg", "--print-architecture"))+".deb")
	if st, err := tryCommand("dpkg-query", "-W", "-f", "${Status}", "plurenet"); err == nil && !strings.Contains(st, "not-installed") {
		t.Skipf("plurenet is on this machine (%s): the test would replace and purge it", st)
	}
	// A purge deletes /var/lib/plurenet, which is also root's default
	// state dir for a hand-started "plurenet up".
	for _, p := range []string{stateRoot, relayConfig, nodeConfig, nodeKeyFile, tunDropInDir} {
		if exists(p) {
			t.Skipf("%s exists: the test would overwrite or delete it", p)
		}
	}
	hadUser := map[string]bool{}
	for _, u := range systemUsers {
		_, err := user.Lookup(u)
		hadUser[u] = err == nil
	}
	hadConfigDir := exists(configDir)
	t.Cleanup(func() {
		tryCommand("dpkg", "-P", "plurenet")
		for _, p := range []string{relayConfig, nodeConfig, nodeKeyFile, tunDropInDir} {
			os.RemoveAll(p)
		}
		if !hadConfigDir {
			os.Remove(configDir)
		}
		for _, u := range systemUsers {
			if !hadUser[u] {
				tryCommand("userdel", u)
			}
		}
	})

	out := command(t, "dpkg", "-i", deb)
	t.Logf("dpkg -i:\n%s", out)
	checkUsers(t)
	checkInstalledFiles(t, deb)
	verifyUnits(t)

	relayURL := runRelayUnit(t)
	nodeKey := runNodeUnit(t, relayURL)

	// Upgrade (a reinstall runs the same scripts with the same
	// arguments): the node key and an edited config stay.
	example := filepath.Join(configDir, "example.json")
	edited := []byte(`{"topic": "edited by the admin"}` + "\n")
	if err := os.WriteFile(example, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	uids := userIDs(t)
	t.Logf("dpkg -i again (upgrade):\n%s", command(t, "dpkg", "-i", deb))
	if b, err := os.ReadFile(filepath.Join(nodeStateDir, "node.key")); err != nil || !bytes.Equal(b, nodeKey) {
		t.Errorf("upgrade lost the node key: %v", err)
	}
	if b, _ := os.ReadFile(example); !bytes.Equal(b, edited) {
		t.Errorf("upgrade replaced the edited example.json with %q", b)
	}
	if got := userIDs(t); got != uids {
		t.Errorf("upgrade changed the users: %s, then %s", uids, got)
	}

	// Removal keeps state and configuration.
	t.Logf("dpkg -r:\n%s", command(t, "dpkg", "-r", "plurenet"))
	for _, gone := range []string{"/usr/bin/plurenet", debNodeUnit, debRelayUnit} {
		if exists(gone) {
			t.Errorf("dpkg -r left %s", gone)
		}
	}
	for _, kept := range []string{filepath.Join(nodeStateDir, "node.key"), example, nodeConfig} {
		if !exists(kept) {
			t.Errorf("dpkg -r removed %s", kept)
		}
	}
	if st := command(t, "dpkg-query", "-W", "-f", "${Status}", "plurenet"); st != "deinstall ok config-files" {
		t.Errorf("status after dpkg -r %q, want deinstall ok config-files", st)
	}

	// Purge removes the state and the package's own config, never the
	// admin's mesh configs and secrets.
	t.Logf("dpkg -P:\n%s", command(t, "dpkg", "-P", "plurenet"))
	for _, gone := range []string{stateRoot, example} {
		if exists(gone) {
			t.Errorf("dpkg -P left %s", gone)
		}
	}
	if !exists(nodeConfig) {
		t.Errorf("dpkg -P removed the admin's %s", nodeConfig)
	}
}

func checkUsers(t *testing.T) {
	t.Helper()
	for _, name := range systemUsers {
		line := strings.TrimSpace(command(t, "getent", "passwd", name))
		f := strings.Split(line, ":")
		uid, _ := strconv.Atoi(f[2])
		// System users: below UID_MIN (1000 on Debian), and no login.
		if len(f) != 7 || uid >= 1000 || !strings.HasSuffix(f[6], "/nologin") {
			t.Errorf("user %s: %q, want a system user with a nologin shell", name, line)
		}
	}
}

// userIDs names the users' uids and gids, to compare before and after.
func userIDs(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, name := range systemUsers {
		u, err := user.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(name + "=" + u.Uid + ":" + u.Gid + " ")
	}
	return b.String()
}

// checkInstalledFiles checks what dpkg -i put on disk, and that every path
// the units name is there.
func checkInstalledFiles(t *testing.T, deb string) {
	t.Helper()
	for p, mode := range wantFiles(debUnitDir) {
		st, err := os.Lstat(p)
		if err != nil {
			t.Errorf("after dpkg -i: %v", err)
			continue
		}
		if st.Mode().String() != mode {
			t.Errorf("%s: mode %s, want %s", p, st.Mode(), mode)
		}
	}
	if c := command(t, "dpkg-query", "-W", "-f", "${Conffiles}", "plurenet"); !strings.Contains(c, "/etc/plurenet/example.json") {
		t.Errorf("conffiles %q: want /etc/plurenet/example.json", c)
	}
	// The binary reports the package's version (without the release).
	pkgVersion := strings.TrimSpace(command(t, "dpkg-deb", "-f", deb, "Version"))
	upstream := pkgVersion[:strings.LastIndex(pkgVersion, "-")]
	if got := strings.TrimSpace(command(t, "/usr/bin/plurenet", "version")); got != "plurenet "+upstream {
		t.Errorf("plurenet version: %q, want %q (package %s)", got, "plurenet "+upstream, pkgVersion)
	}
	for _, unit := range []string{debNodeUnit, debRelayUnit} {
		svc := unitSection(t, unit, "Service")
		argv := strings.Fields(one(t, svc, "ExecStart"))
		if st, err := os.Stat(argv[0]); err != nil || st.Mode().Perm()&0o001 == 0 {
			t.Errorf("%s: ExecStart %s: %v (want an executable)", unit, argv[0], err)
		}
		for i, a := range argv {
			if a == "--config" && !exists(filepath.Dir(argv[i+1])) {
				t.Errorf("%s: config directory of %s missing", unit, argv[i+1])
			}
		}
		for _, doc := range strings.Fields(one(t, unitSection(t, unit, "Unit"), "Documentation")) {
			if p, ok := strings.CutPrefix(doc, "file:"); ok && !exists(p) {
				t.Errorf("%s: Documentation %s is not installed", unit, p)
			}
		}
	}
	if dirs := unitSection(t, debNodeUnit, "Service")["StateDirectory"]; len(dirs) != 1 || !strings.HasPrefix("/var/lib/"+dirs[0], stateRoot+"/") {
		t.Errorf("StateDirectory=%q, want plurenet/%%i below %s", dirs, stateRoot)
	}
}

// unknownToOldSystemd are the unit keys systemd before 254 does not know
// (and ignores with a warning): the restart backoff.
var unknownToOldSystemd = regexp.MustCompile(`^\S+\.service:\d+: Unknown key '(RestartSteps|RestartMaxDelaySec)' in section \[Service\], ignoring\.$`)

// verifyUnits runs systemd-analyze verify on a node instance, a node
// instance with the TUN drop-in, and the relay. It needs no running
// systemd.
func verifyUnits(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed (package systemd): units not verified")
		return
	}
	if err := os.MkdirAll(tunDropInDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tun, err := os.ReadFile("/usr/share/doc/plurenet/examples/tun.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tunDropInDir, "tun.conf"), tun, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tunDropInDir)
	version, _ := tryCommand("systemd-analyze", "--version")
	var major int
	if f := strings.Fields(version); len(f) > 1 {
		major, _ = strconv.Atoi(f[1])
	}
	units := []string{"plurenet@" + testInstance + ".service", "plurenet@" + testTUN + ".service", "plurenet-relay.service"}
	out, err := tryCommand("systemd-analyze", append([]string{"verify"}, units...)...)
	t.Logf("systemd %d: systemd-analyze verify %s: %v\n%s", major, strings.Join(units, " "), err, out)
	if err != nil {
		t.Errorf("systemd-analyze verify failed: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" && !(major < 254 && unknownToOldSystemd.MatchString(line)) {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}

// writeOwned writes an admin's file: content, mode, owner and group.
func writeOwned(t *testing.T, path string, content []byte, mode os.FileMode, owner, group string) {
	t.Helper()
	if err := os.WriteFile(path, content, mode); err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup(owner)
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(g.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// runRelayUnit runs plurenet-relay.service's command with a relay.json on
// loopback and returns the relay's ws:// URL, leaving it running for the
// rest of the test.
func runRelayUnit(t *testing.T) string {
	t.Helper()
	writeOwned(t, relayConfig, []byte(`{"listen": "127.0.0.1:0", "stunListen": "off"}`+"\n"), 0o640, "root", "plurenet-relay")
	relay := startUnit(t, debRelayUnit, "")
	status := relay.ready(t)
	addr, ok := strings.CutPrefix(status, "serving ")
	if !ok {
		t.Fatalf("relay status %q, want serving ADDR", status)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("relay ready but not answering: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("relay /healthz: %s", resp.Status)
	}
	t.Cleanup(func() { relay.stop(t) })
	return "ws://" + addr
}

// runNodeUnit runs plurenet@pkgtest.service's command with a config that
// reaches the relay at relayURL, checks it as an admin would, stops it,
// and returns its node key.
func runNodeUnit(t *testing.T, relayURL string) []byte {
	t.Helper()
	const secret = "pkgtest-secret-0123456789abcdef"
	cfg := map[string]string{"topic": testInstance, "relay": relayURL, "transport": "relay", "name": testInstance}
	// As the README says: the secret in a key file only the node's user
	// reads, named by a config the node's group reads.
	writeOwned(t, nodeKeyFile, []byte(secret+"\n"), 0o600, "plurenet", "plurenet")
	cfg["keyFile"] = nodeKeyFile
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeOwned(t, nodeConfig, b, 0o640, "root", "plurenet")
	// What StateDirectory=plurenet/%i and StateDirectoryMode=0700 make.
	if err := os.Mkdir(nodeStateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	u, _ := user.Lookup("plurenet")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(nodeStateDir, uid, gid); err != nil {
		t.Fatal(err)
	}

	node := startUnit(t, debNodeUnit, testInstance)
	status := node.ready(t)
	if !strings.HasPrefix(status, "up: IPv4 ") {
		t.Fatalf("node status %q, want up: IPv4 ...", status)
	}
	// "plurenet status" as root, as the README says, until the node
	// shows its relay connected.
	deadline := time.Now().Add(connectedWait)
	for {
		out := command(t, "/usr/bin/plurenet", "status", "--state-dir", nodeStateDir, "--json")
		var st struct {
			Name   string
			Relays []struct{ Connected bool }
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		if st.Name != testInstance {
			t.Fatalf("status names %q, want %q", st.Name, testInstance)
		}
		if len(st.Relays) == 1 && st.Relays[0].Connected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not connected to the relay after %v:\n%s", connectedWait, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	node.stop(t)

	key := filepath.Join(nodeStateDir, "node.key")
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || int(sys.Uid) != uid || st.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %s, owner %v, want 0600 owned by plurenet (uid %d)", key, st.Mode(), st.Sys(), uid)
	}
	nodeKey, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	return nodeKey
}
