package resolved

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// busConfig is a private message bus that lets anyone own any name: enough
// for a fake resolve1 and the client under test, and nothing else listens.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="*"/>
  </policy>
</busconfig>
`

// privateBus starts a dbus-daemon of its own for the test and returns its
// address; the test's cleanup stops it. It skips the test, saying why,
// where dbus-daemon is missing (scripts/deps.sh installs it).
func privateBus(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon not installed (scripts/deps.sh installs it): cannot run a private bus for the fake systemd-resolved")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(conf, []byte(strings.Replace(busConfig, "%s", filepath.Join(dir, "bus"), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config-file="+conf, "--nofork", "--nopidfile", "--print-address")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting dbus-daemon: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	select {
	case addr := <-line:
		if addr == "" {
			t.Fatal("dbus-daemon printed no address")
		}
		return addr
	case <-time.After(30 * time.Second):
		t.Fatal("dbus-daemon printed no address within 30 s")
	}
	return ""
}

// call is one method call the fake resolve1 received.
type call struct {
	Method string
	Index  int32
	Args   []any
}

// fakeResolved serves org.freedesktop.resolve1.Manager's link methods on a
// bus and records every call. fail makes a method return a D-Bus error of
// that name instead (as a resolved too old to know it, or a polkit
// refusal, would).
type fakeResolved struct {
	mu    sync.Mutex
	calls []call
	fail  map[string]string
}

func (f *fakeResolved) record(method string, index int32, args ...any) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{Method: method, Index: index, Args: args})
	if name, ok := f.fail[method]; ok {
		return dbus.NewError(name, []any{method + " refused by the fake"})
	}
	return nil
}

func (f *fakeResolved) SetLinkDNS(i int32, a []linkDNS) *dbus.Error {
	return f.record("SetLinkDNS", i, a)
}
func (f *fakeResolved) SetLinkDNSEx(i int32, a []linkDNSEx) *dbus.Error {
	return f.record("SetLinkDNSEx", i, a)
}
func (f *fakeResolved) SetLinkDomains(i int32, d []linkDomain) *dbus.Error {
	return f.record("SetLinkDomains", i, d)
}
func (f *fakeResolved) SetLinkDefaultRoute(i int32, b bool) *dbus.Error {
	return f.record("SetLinkDefaultRoute", i, b)
}
func (f *fakeResolved) SetLinkDNSSEC(i int32, m string) *dbus.Error {
	return f.record("SetLinkDNSSEC", i, m)
}
func (f *fakeResolved) SetLinkDNSOverTLS(i int32, m string) *dbus.Error {
	return f.record("SetLinkDNSOverTLS", i, m)
}
func (f *fakeResolved) RevertLink(i int32) *dbus.Error { return f.record("RevertLink", i) }

func (f *fakeResolved) taken() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.calls
	f.calls = nil
	return out
}

// serveFake exports f as systemd-resolved on the bus at addr.
func serveFake(t *testing.T, addr string, f *fakeResolved) {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.Export(f, objPath, manager); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(busName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("owning %s on the private bus: %v %v", busName, reply, err)
	}
}
