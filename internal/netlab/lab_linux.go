package netlab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// nsFamily is the prefix of every namespace netlab creates. It is distinctive
// enough that the stale sweep never touches namespaces made by other tools.
const nsFamily = "pln-"

// nsPattern matches our namespace names and captures the owning PID.
var nsPattern = regexp.MustCompile(`^` + nsFamily + `([0-9]+)-[0-9]+-[a-z0-9]+$`)

// nodeName is what a test may call a node: short (namespace names stay
// readable, port names fit IFNAMSIZ) and safe in a file name.
var nodeName = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// Addressing of the lab.
var (
	// internetPrefix is the RFC 2544 benchmarking range: never routed on the
	// real internet, so lab traffic cannot leak anywhere if misrouted.
	internetPrefix = netip.MustParsePrefix("198.18.0.0/15")
)

// labSeq numbers labs within one process so parallel tests get distinct
// prefixes.
var labSeq atomic.Uint32

// sweepOnce makes the stale sweep run once per test binary.
var sweepOnce sync.Once

// Lab is one test's network. Build nodes with Internet, NATRouter and Host.
// Methods must be called from the test goroutine (they fail the test with
// t.Fatal on setup errors) unless documented otherwise.
type Lab struct {
	t      testing.TB
	prefix string

	mu      sync.Mutex
	names   map[string]bool // node names in use
	nodes   []*Host         // every namespace, in creation order (incl. the internet's)
	inet    *Internet
	routers int
	procs   []*Proc
}

// New returns an empty lab whose objects are removed when t ends. It skips t
// when the process lacks the privileges or tools the lab needs, and first
// removes namespaces left behind by crashed earlier runs.
func New(t testing.TB) *Lab {
	t.Helper()
	if reason := missingRequirement(); reason != "" {
		t.Skip(reason)
	}
	sweepOnce.Do(func() {
		for _, msg := range sweepStale() {
			t.Logf("netlab: %s", msg)
		}
	})
	l := &Lab{
		t:      t,
		prefix: fmt.Sprintf("%s%d-%d-", nsFamily, os.Getpid(), labSeq.Add(1)),
		names:  map[string]bool{"inet": true},
	}
	t.Cleanup(l.teardown)
	return l
}

// Prefix is the name prefix of every namespace of this lab.
func (l *Lab) Prefix() string { return l.prefix }

// missingRequirement says why the lab cannot run here, or "" when it can.
func missingRequirement() string {
	if os.Geteuid() != 0 || !hasCaps(capNetAdmin, capSysAdmin) {
		return "netlab: needs root (CAP_NET_ADMIN) to create network namespaces; run as root or in CI"
	}
	for _, tool := range []struct{ cmd, pkg string }{{"ip", "iproute2"}, {"iptables", "iptables"}} {
		if _, err := exec.LookPath(tool.cmd); err != nil {
			return fmt.Sprintf("netlab: the %q command is missing: install it (Debian: apt-get install -y %s)", tool.cmd, tool.pkg)
		}
	}
	return ""
}

// Linux capability numbers (linux/capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21 // setns(2) and the bind mounts of `ip netns add`
)

// hasCaps reports whether the process's effective capability set holds all
// of caps. Root in a restricted container may lack them.
func hasCaps(caps ...uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		hex, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		eff, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return false
		}
		for _, c := range caps {
			if eff&(1<<c) == 0 {
				return false
			}
		}
		return true
	}
	return false
}

// newNode creates the namespace for a node called name, with loopback up and
// the firewall chains hooked in. uplink is the interface that leads out of
// the node ("" for the internet switch itself).
func (l *Lab) newNode(name string) *Host {
	l.t.Helper()
	l.mu.Lock()
	if name != "inet" && (!nodeName.MatchString(name) || l.names[name]) {
		l.mu.Unlock()
		l.t.Fatalf("netlab: node name %q is taken or invalid (want %s, unique per lab)", name, nodeName)
	}
	l.names[name] = true
	l.mu.Unlock()

	h := &Host{lab: l, name: name, nsName: l.prefix + name, ns: -1}
	// Register before creating so teardown removes a half-built node too.
	l.mu.Lock()
	l.nodes = append(l.nodes, h)
	l.mu.Unlock()

	if out, err := exec.Command("ip", "netns", "add", h.nsName).CombinedOutput(); err != nil {
		l.t.Fatalf("netlab: ip netns add %s: %v: %s", h.nsName, err, out)
	}
	h.created = true
	var err error
	if h.ns, err = netns.GetFromName(h.nsName); err != nil {
		l.t.Fatalf("netlab: opening namespace %s: %v", h.nsName, err)
	}
	if h.nl, err = netlink.NewHandleAt(h.ns); err != nil {
		l.t.Fatalf("netlab: netlink handle in %s: %v", h.nsName, err)
	}
	lo, err := h.nl.LinkByName("lo")
	if err == nil {
		err = h.nl.LinkSetUp(lo)
	}
	if err != nil {
		l.t.Fatalf("netlab: bringing up lo in %s: %v", h.nsName, err)
	}
	return h
}

// teardown stops every process and deletes every namespace of the lab. It
// reports problems with t.Errorf but always tries every step.
func (l *Lab) teardown() {
	l.mu.Lock()
	procs, nodes := l.procs, l.nodes
	l.procs, l.nodes = nil, nil
	l.mu.Unlock()

	for _, p := range procs {
		if out := p.Output(); l.t.Failed() && out != "" {
			l.t.Logf("netlab: output of %s:\n%s", p, out)
		}
		p.Kill()
	}
	for i := len(nodes) - 1; i >= 0; i-- {
		h := nodes[i]
		if h.nl != nil {
			h.nl.Close()
		}
		if h.ns >= 0 {
			h.ns.Close()
		}
		if !h.created {
			continue
		}
		if err := deleteNamespace(h.nsName); err != nil {
			l.t.Errorf("netlab: teardown: %v", err)
		}
	}
}

// deleteNamespace kills whatever still runs inside the named namespace (a
// process keeps a namespace and its veths alive after `ip netns del`) and
// deletes it. Only namespaces of our family are ever passed here.
func deleteNamespace(name string) error {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err == nil {
		for f := range strings.FieldsSeq(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				// Best effort: the process may have exited meanwhile.
				_ = killPID(pid)
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Names lists the lab namespaces that currently exist (`ip netns list`)
// whose names start with prefix. Tests use it to check cleanup.
func Names(prefix string) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing /run/netns: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// ipNet converts p to the type netlink wants.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
