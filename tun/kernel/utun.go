package kernel

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// macOS configuration, as pure functions so that Linux tests check them
// (plan_test.go): the utun naming rule and the argument vectors of
// ifconfig(8) and route(8) that device_darwin.go runs. The tools, not
// ioctls and routing-socket messages built by hand: golang.org/x/sys/unix
// has no in_aliasreq or in6_aliasreq for darwin, so an ioctl would mean
// structure layouts no test here can check, while the tools' command lines
// are documented, stable and what wg-quick uses on macOS.

// Paths of the tools. Absolute, so that PATH cannot substitute others.
const (
	ifconfigPath = "/sbin/ifconfig"
	routePath    = "/sbin/route"
)

// maxUtunUnit bounds N in utunN: far more devices than a Mac runs, and it
// keeps the name within maxNameLen.
const maxUtunUnit = 9999

// checkUtunName accepts "utun" (the kernel picks the first free unit) and
// "utunN"; macOS's TUN devices have no other names.
func checkUtunName(name string) error {
	if name == "utun" {
		return nil
	}
	digits, ok := strings.CutPrefix(name, "utun")
	n, err := strconv.Atoi(digits)
	if !ok || err != nil || n < 0 || n > maxUtunUnit || strconv.Itoa(n) != digits {
		return fmt.Errorf("TUN device name %q: on macOS a TUN device is a utun interface: give --tun utun (the kernel picks the number) or utunN with N at most %d (e.g. utun7)", name, maxUtunUnit)
	}
	return nil
}

// command is one program run with its arguments (never through a shell).
type command struct {
	argv []string
	// existsOK: the command failing because what it adds exists already
	// is success (a route the kernel made for an address).
	existsOK bool
}

// utunAddCommands configure a new utun: its addresses, link up, a route for
// each mesh prefix (utun is point-to-point: an address's prefix length
// routes nothing there by itself).
func utunAddCommands(name string, addrs []netip.Prefix) []command {
	var cmds []command
	for _, p := range addrs {
		cmds = append(cmds, utunAddrCommand(name, p, true))
	}
	cmds = append(cmds, command{argv: []string{ifconfigPath, name, "up"}})
	for _, p := range routedPrefixes(addrs) {
		cmds = append(cmds, utunRouteCommand(name, p))
	}
	return cmds
}

// utunSetAddrsCommands move a configured utun from have to want: new
// addresses first, so the interface never goes without one, then the old
// ones go, then every mesh prefix of want is routed again (the kernel may
// take a route along with the address it was added through; one that is
// still there is fine).
func utunSetAddrsCommands(name string, have, want []netip.Prefix) []command {
	add, del := addrChanges(have, want)
	if len(add) == 0 && len(del) == 0 {
		return nil
	}
	var cmds []command
	for _, p := range add {
		cmds = append(cmds, utunAddrCommand(name, p, true))
	}
	for _, p := range del {
		cmds = append(cmds, utunAddrCommand(name, p, false))
	}
	for _, p := range routedPrefixes(want) {
		cmds = append(cmds, utunRouteCommand(name, p))
	}
	return cmds
}

// utunAddrCommand adds (or removes) one address. An IPv4 address on a
// point-to-point interface needs a destination: the address itself, as
// wg-quick gives it.
func utunAddrCommand(name string, p netip.Prefix, add bool) command {
	if p.Addr().Is4() {
		if add {
			return command{argv: []string{ifconfigPath, name, "inet", p.String(), p.Addr().String(), "alias"}}
		}
		return command{argv: []string{ifconfigPath, name, "inet", p.Addr().String(), "-alias"}}
	}
	if add {
		return command{argv: []string{ifconfigPath, name, "inet6", p.String(), "alias"}}
	}
	return command{argv: []string{ifconfigPath, name, "inet6", p.Addr().String(), "-alias"}}
}

// utunRouteCommand routes prefix p to the interface.
func utunRouteCommand(name string, p netip.Prefix) command {
	family := "-inet"
	if p.Addr().Is6() {
		family = "-inet6"
	}
	return command{argv: []string{routePath, "-n", "add", family, p.String(), "-interface", name}, existsOK: true}
}

// routeExists reports whether route(8)'s output says the route was there
// already (EEXIST from the routing socket).
func routeExists(out string) bool {
	return strings.Contains(out, "File exists")
}

// Bounds of one ifconfig or route run: they answer at once; a tool that
// hangs must not hang Create, and its output only feeds an error message.
const (
	toolTimeout   = 10 * time.Second
	maxToolOutput = 512
)

// runTools runs cmds in order (no shell) and stops at the first failure,
// which it reports with the command line and what the tool said. A
// failure the command allows (existsOK and the tool says so) is success;
// a refusal for want of privileges is permissionError for device name.
func runTools(name string, cmds []command) error {
	for _, c := range cmds {
		ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
		out, err := exec.CommandContext(ctx, c.argv[0], c.argv[1:]...).CombinedOutput()
		cancel()
		if err == nil {
			continue
		}
		text := strings.TrimSpace(string(out))
		if c.existsOK && routeExists(text) {
			continue
		}
		if strings.Contains(text, "ermission denied") || strings.Contains(text, "not permitted") {
			return permissionError(name)
		}
		if len(text) > maxToolOutput {
			text = text[:maxToolOutput] + "..."
		}
		return fmt.Errorf("%s: %w: %s", strings.Join(c.argv, " "), err, text)
	}
	return nil
}
