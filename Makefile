# plurenet — build, test, demo, bench.
#
# The two commands a newcomer needs (see README.md):
#   make demo   a relay and two nodes in one process, a TCP exchange over overlay IPs
#   make test   every test; as root also the network-lab tests
#
# Everything else the project needs is installed by scripts/deps.sh.

GO      ?= go
BIN     := bin/plurenet
PKGS    := ./...
# Fuzz targets run for FUZZTIME each in "make fuzz".
FUZZTIME ?= 20s
# Besides Linux, plurenet builds (userspace adapter) for these; "make test"
# checks that it still does. The kernel TUN, the network lab and the bench
# are Linux-only (build tags).
CROSS_OS := windows darwin freebsd
# staticcheck, built from the version pinned in tools/go.mod (v0.8.2 is
# the release staticcheck calls 2026.2.2).
STATICCHECK := $(CURDIR)/bin/staticcheck

.PHONY: all build test test-short demo bench fuzz lint deps clean check-tidy check-os package package-test profile soak

all: build

build:
	$(GO) build -o $(BIN) ./cmd/plurenet

deps:
	./scripts/deps.sh

# -race on everything; the lab tests skip themselves when not root. The
# timeout is below CI's 90 minutes with room to spare. Packages run one at a
# time (-p 1): on a 2-core machine the lab's real processes and the race
# detector otherwise starve each other. (The stalled flow that two packages
# at a time once showed is fixed: docs/operations.md, "Known issues".)
# Then the 5-minute soak (below), which also skips without root.
test: deps check-tidy check-os
	$(GO) vet $(PKGS)
	$(GO) test -race -p 1 -timeout 30m -count=1 $(PKGS)
	$(MAKE) soak SOAK=5m SOAK_TIMEOUT=15m

# go.mod and go.sum say exactly what the code imports.
check-tidy:
	@$(GO) mod tidy -diff || (echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1)

# Every package builds and vets for each of CROSS_OS (go vet type-checks
# the test files too). For TEST_OS the test binaries are also compiled and
# linked (go test -c, into a temporary folder removed afterwards): they
# cannot run here, but what they would run is then known to build. The
# tests of the pure pieces those OSes use (tun/kernel's plan_test.go) run
# on Linux in "make test" proper. About 15 s of CPU per OS on a warm cache.
TEST_OS := windows darwin
check-os:
	@for os in $(CROSS_OS); do \
		echo "GOOS=$$os go build, go vet"; \
		GOOS=$$os $(GO) build $(PKGS) && GOOS=$$os $(GO) vet $(PKGS) || exit 1; \
	done
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for os in $(TEST_OS); do \
		echo "GOOS=$$os go test -c (compile only)"; \
		GOOS=$$os $(GO) test -c -o "$$tmp/" $(PKGS) >/dev/null; \
		rm -f "$$tmp"/*; \
	done

# The soak (docs/operations.md, "Soak"), not in CI: three kernel-TUN
# members in the network lab with continuous transfers checked by SHA-256
# while the relay drains every 30 s, UDP is cut every 2 min, the NAT
# routers' conntrack is flushed every 5 min and a member restarts every
# 10 min. Needs root (skips without). "make soak SOAK=5m" is the short run
# "make test" ends with (about 5.5 minutes). SOAK_TIMEOUT must
# exceed SOAK by about 7 minutes (the test says so if not).
SOAK ?= 1h
SOAK_TIMEOUT ?= 3h
soak: deps
	PLURENET_SOAK=$(SOAK) $(GO) test -count=1 -v -timeout $(SOAK_TIMEOUT) -run '^TestLabSoak$$' ./cmd/plurenet/

test-short:
	$(GO) test -short -count=1 $(PKGS)

demo: build
	$(BIN) demo

bench: build
	./scripts/bench.sh

fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# staticcheck for Linux, then for Windows and macOS, which compile the
# files no Linux build sees (the _windows, _darwin and !linux ones). Off
# Linux, code that only Linux calls is unused by design, so U1000 (unused)
# is left to the Linux run.
lint:
	$(GO) vet $(PKGS)
	$(GO) build -C tools -o $(STATICCHECK) honnef.co/go/tools/cmd/staticcheck
	$(STATICCHECK) $(PKGS)
	GOOS=windows $(STATICCHECK) -checks inherit,-U1000 $(PKGS)
	GOOS=darwin $(STATICCHECK) -checks inherit,-U1000 $(PKGS)
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)

clean:
	rm -rf bin dist profile

# Packages: .deb and .rpm for each of PKG_ARCHES in dist/, built with nfpm
# (pinned in packaging/go.mod, a module of its own so that the project's
# go.mod stays free of it). VERSION comes from git (packaging/version.sh);
# "make package VERSION=1.2.3" overrides it. docs/operations.md, "System
# service", says what the packages install.
PKG_ARCHES ?= amd64 arm64
VERSION    ?= $(shell ./packaging/version.sh)
# Package file times are the last commit's, so that one commit gives the
# same packages on any machine (nfpm reads SOURCE_DATE_EPOCH).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
export SOURCE_DATE_EPOCH

package:
	@test -n "$(VERSION)" || { echo "package: no VERSION (see packaging/version.sh)"; exit 1; }
	rm -rf dist
	set -e; for arch in $(PKG_ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath \
			-ldflags "-s -w -X main.version=$(VERSION)" -o dist/build/$$arch/plurenet ./cmd/plurenet; \
		for fmt in deb rpm; do \
			PKG_ARCH=$$arch VERSION=$(VERSION) $(GO) -C packaging tool nfpm package \
				--config nfpm.yaml --packager $$fmt --target ../dist/; \
		done; \
	done
	@ls -l dist/*.deb dist/*.rpm

# Checks the packages (packaging/*_test.go): every .deb's and .rpm's files,
# modes, scripts and binary architecture; as root, a real dpkg -i, -r and
# -P of the host's .deb, systemd-analyze verify on the units, each unit's
# command run as its user, the maintainer scripts under a stand-in systemd;
# the node image's build line and the compose example without Docker.
# Installs rpm with apt when missing. Not part of "make test": building nfpm
# and two cross-compiled binaries takes minutes on a cold cache (about 12 s
# warm).
package-test: package
	@command -v rpm >/dev/null || [ "$$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rpm >/dev/null; }
	$(GO) -C packaging test -count=1 -v ./...

# Relay capacity: 10,000 idle WebSocket members held by an in-process relay
# (memory per member measured in the relay's process, the members run in a
# child process), then 10 pairs sending 1 KiB frames for 10 s.
.PHONY: loadtest
loadtest: build
	$(BIN) relay-bench --members 10000 --pairs 10 --duration 10s --size 1024

# CPU and allocation profiles of the userspace adapter under load: two
# embedded nodes on loopback (direct path), once over the Go API and once
# through --forward/--expose, 1 GiB each (docs/operations.md, "Profiling").
PROFILE_DIR ?= profile
PROFILE_BYTES ?= 1073741824

profile:
	mkdir -p $(PROFILE_DIR)
	$(GO) build -o $(PROFILE_DIR)/plurenet-bench ./cmd/plurenet-bench
	for w in embedded forward; do \
		$(PROFILE_DIR)/plurenet-bench -worker $$w -bytes $(PROFILE_BYTES) \
			-cpuprofile $(PROFILE_DIR)/$$w.cpu -memprofile $(PROFILE_DIR)/$$w.mem || exit 1; \
		$(GO) tool pprof -top -nodecount 25 $(PROFILE_DIR)/plurenet-bench $(PROFILE_DIR)/$$w.cpu; \
		$(GO) tool pprof -sample_index=alloc_space -top -nodecount 10 $(PROFILE_DIR)/plurenet-bench $(PROFILE_DIR)/$$w.mem; \
	done
