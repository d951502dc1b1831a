// Package packaging builds plurenet's .deb and .rpm (nfpm.yaml, run by
// "make package") and holds what they install besides the binary: the
// systemd units (systemd/), the system users (sysusers.conf), the
// maintainer scripts (scripts/) and the example configs.
//
// It is a Go module of its own so that nfpm, pinned here as a tool
// (go.mod's tool line, run as "go -C packaging tool nfpm"), stays out of
// the project's go.mod. It has no Go API. Its tests ("make package-test")
// check the packages in dist/: contents and modes of every .deb and .rpm,
// the architecture of each binary, and, as root on a Debian machine, a
// real dpkg -i, the units under systemd-analyze verify, the units' commands
// run as their users, an upgrade, dpkg -r and dpkg -P; the maintainer
// scripts under a stand-in systemd; and, with no Docker engine, the node
// image's build line and the compose example's services as processes.
package packaging
