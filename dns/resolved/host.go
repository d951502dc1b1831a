package resolved

import (
	"bufio"
	"io"
	"os"
	"strings"
)

// Where a host says how it resolves names.
const (
	ResolvConf = "/etc/resolv.conf"
	NSSwitch   = "/etc/nsswitch.conf"
)

// maxConfig bounds how much of either file is read: both are a few hundred
// bytes.
const maxConfig = 64 << 10

// stubAddrs are resolved's local listeners: the stub (with search domains)
// and, since systemd 247, the proxy without them.
var stubAddrs = []string{"127.0.0.53", "127.0.0.54"}

// UsedByHost reports whether programs on this host resolve names through
// systemd-resolved: resolvConf names its stub as a nameserver, or the hosts
// line of nsswitch uses nss-resolve. A host where resolved runs but neither
// holds ignores a split-DNS registration, and the caller should say so
// (with Hint). Unreadable files count as "no".
func UsedByHost(resolvConf, nsswitch string) bool {
	for _, l := range configLines(resolvConf) {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "nameserver" {
			for _, a := range stubAddrs {
				if f[1] == a {
					return true
				}
			}
		}
	}
	for _, l := range configLines(nsswitch) {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "hosts:" {
			for _, src := range f[1:] {
				if src == "resolve" {
					return true
				}
			}
		}
	}
	return false
}

// configLines returns the lines of a configuration file without comments.
func configLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(io.LimitReader(f, maxConfig))
	for sc.Scan() {
		l := sc.Text()
		if i := strings.IndexAny(l, "#;"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
