//go:build unix

package kernel

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// runTools as device_darwin.go uses it, with sh standing in for ifconfig
// and route (the commands themselves are checked in plan_test.go).
func TestRunTools(t *testing.T) {
	sh := func(script string, existsOK bool) command {
		return command{argv: []string{"/bin/sh", "-c", script}, existsOK: existsOK}
	}
	marker := t.TempDir() + "/ran"
	routeExistsMsg := "echo 'route: writing to routing socket: File exists' >&2; exit 1"

	if err := runTools("utun5", []command{sh("true", false), sh(routeExistsMsg, true), sh("touch "+marker, false)}); err != nil {
		t.Fatalf("an existing route where that is fine: %v", err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the command after an allowed failure did not run: %v", err)
	}

	os.Remove(marker)
	err := runTools("utun5", []command{sh(routeExistsMsg, false), sh("touch "+marker, false)})
	if err == nil || !strings.Contains(err.Error(), "File exists") || !strings.Contains(err.Error(), "/bin/sh -c") {
		t.Fatalf("an existing address where it is not fine: %v, want the command and its output", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a command after a failure ran")
	}

	err = runTools("utun5", []command{sh("echo 'ifconfig: ioctl (SIOCAIFADDR): Operation not permitted' >&2; exit 1", false)})
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), privilegeHint) {
		t.Fatalf("a refusal for want of privileges: %v, want os.ErrPermission with the hint", err)
	}

	err = runTools("utun5", []command{sh("head -c 5000 /dev/zero | tr \"\\000\" x; exit 3", false)})
	if err == nil || len(err.Error()) > maxToolOutput+200 || !strings.HasSuffix(err.Error(), "xxx...") {
		t.Fatalf("a long output is not cut: %v", err)
	}

	if err := runTools("utun5", []command{{argv: []string{"/nonexistent/ifconfig"}}}); err == nil {
		t.Fatal("a missing tool is not an error")
	}
}
