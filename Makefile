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

.PHONY: all build test test-short demo bench fuzz lint deps clean profile

all: build

build:
	$(GO) build -o $(BIN) ./cmd/plurenet

deps:
	./scripts/deps.sh

# -race on everything; the lab tests skip themselves when not root. The
# timeout is below CI's 90 minutes with room to spare. Packages run one at a
# time (-p 1): on a 2-core machine the lab's real processes and the race
# detector otherwise starve each other. (A 64 MiB overlay transfer that
# stalled once that way was a gVisor bug, now fixed: docs/operations.md.)
test: deps
	$(GO) vet $(PKGS)
	$(GO) test -race -p 1 -timeout 30m -count=1 $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

demo: build
	$(BIN) demo

bench: build
	./scripts/bench.sh

fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

lint:
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@2026.2.2 $(PKGS)
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)

clean:
	rm -rf bin profile

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
