// Package resolvedtest gives tests a private D-Bus message bus and a fake
// systemd-resolved (org.freedesktop.resolve1) on it that records the link
// calls it receives, so that split DNS registration can be tested without
// touching the host's resolver.
package resolvedtest

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

// resolve1's bus name, object and interface, as package resolved calls
// them.
const (
	busName = "org.freedesktop.resolve1"
	objPath = dbus.ObjectPath("/org/freedesktop/resolve1")
	manager = "org.freedesktop.resolve1.Manager"
)

// busStartWait bounds how long dbus-daemon may take to print its address.
const busStartWait = 30 * time.Second

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

// PrivateBus starts a dbus-daemon of its own for the test and returns its
// address; the test's cleanup stops it. It skips the test, saying why,
// where dbus-daemon is missing (scripts/deps.sh installs it).
func PrivateBus(t testing.TB) string {
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
	case <-time.After(busStartWait):
		t.Fatalf("dbus-daemon printed no address within %v", busStartWait)
	}
	return ""
}

// Call is one method call the fake received.
type Call struct {
	Method string
	Index  int32
	Args   []any
}

// LinkDNS, LinkDNSEx and LinkDomain are the D-Bus structures of the
// SetLinkDNS, SetLinkDNSEx and SetLinkDomains arguments, as the fake
// decodes them.
type (
	LinkDNS struct {
		Family  int32
		Address []byte
	}
	LinkDNSEx struct {
		Family  int32
		Address []byte
		Port    uint16
		Name    string
	}
	LinkDomain struct {
		Domain      string
		RoutingOnly bool
	}
)

// Fake serves org.freedesktop.resolve1.Manager's link methods and records
// every call. Fail makes a method return a D-Bus error of that name
// instead (as a resolved too old to know it, or a polkit refusal, would);
// set it before Serve.
type Fake struct {
	Fail map[string]string

	mu    sync.Mutex
	calls []Call
}

func (f *Fake) record(method string, index int32, args ...any) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, Call{Method: method, Index: index, Args: args})
	if name, ok := f.Fail[method]; ok {
		return dbus.NewError(name, []any{method + " refused by the fake"})
	}
	return nil
}

func (f *Fake) SetLinkDNS(i int32, a []LinkDNS) *dbus.Error {
	return f.record("SetLinkDNS", i, a)
}
func (f *Fake) SetLinkDNSEx(i int32, a []LinkDNSEx) *dbus.Error {
	return f.record("SetLinkDNSEx", i, a)
}
func (f *Fake) SetLinkDomains(i int32, d []LinkDomain) *dbus.Error {
	return f.record("SetLinkDomains", i, d)
}
func (f *Fake) SetLinkDefaultRoute(i int32, b bool) *dbus.Error {
	return f.record("SetLinkDefaultRoute", i, b)
}
func (f *Fake) SetLinkDNSSEC(i int32, m string) *dbus.Error {
	return f.record("SetLinkDNSSEC", i, m)
}
func (f *Fake) SetLinkDNSOverTLS(i int32, m string) *dbus.Error {
	return f.record("SetLinkDNSOverTLS", i, m)
}
func (f *Fake) RevertLink(i int32) *dbus.Error { return f.record("RevertLink", i) }

// Taken returns the calls received since the last Taken.
func (f *Fake) Taken() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.calls
	f.calls = nil
	return out
}

// Serve exports f as systemd-resolved on the bus at addr until the test
// ends.
func Serve(t testing.TB, addr string, f *Fake) {
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
