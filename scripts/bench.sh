#!/usr/bin/env bash
# "make bench": measures plurenet beside its baselines in one run and prints
# one table of ratios (cmd/plurenet-bench says what each row measures).
#
# Without root: the loopback rows (relay forwarding vs a TCP pipe, two
# userspace nodes through a relay, set-up time). As root it also builds a
# network lab and compares plurenet with the bare veths and with plain
# wireguard-go built from the module pinned in go.mod. Extra arguments go to
# plurenet-bench (e.g. -duration 10s -pings 50).
set -euo pipefail

GO=${GO:-go}
export GO
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

[ -x bin/plurenet ] || "$GO" build -o bin/plurenet ./cmd/plurenet
"$GO" build -o "$tmp/plurenet-bench" ./cmd/plurenet-bench

args=()
if [ "$(id -u)" -eq 0 ]; then
	./scripts/deps.sh # iperf3 and ping for the lab rows
	"$GO" build -o "$tmp/wireguard-go" golang.zx2c4.com/wireguard
	args+=(-wireguard-go "$tmp/wireguard-go")
fi
"$tmp/plurenet-bench" -repo . -plurenet bin/plurenet "${args[@]}" "$@"
