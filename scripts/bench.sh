#!/usr/bin/env bash
# "make bench": measures plurenet beside its baselines in one run and prints
# one table of ratios (cmd/plurenet-bench says what each row measures).
#
# Without root: the loopback rows (relay forwarding vs a TCP pipe and beside
# Tailscale's DERP, two embedded nodes, set-up time). As root it also runs
# the tsnet anchor (in a closed network namespace), builds a network lab and
# compares plurenet with the bare veths and with plain wireguard-go built
# from the module pinned in go.mod. The Tailscale anchors are built from
# bench/ (modules of their own, so go.mod never grows); DERP needs Go 1.27,
# which GOTOOLCHAIN fetches through the module proxy. A row whose anchor
# does not build says so. Extra arguments go to plurenet-bench (e.g.
# -duration 10s -pings 50).
set -euo pipefail

GO=${GO:-go}
export GO
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

[ -x bin/plurenet ] || "$GO" build -o bin/plurenet ./cmd/plurenet
"$GO" build -o "$tmp/plurenet-bench" ./cmd/plurenet-bench

args=()
# The anchors: a failed build leaves its rows out with a note.
if (cd bench/derp && GOTOOLCHAIN=${DERP_GOTOOLCHAIN:-go1.27.4} "$GO" build -o "$tmp/derper" tailscale.com/cmd/derper &&
	GOTOOLCHAIN=${DERP_GOTOOLCHAIN:-go1.27.4} "$GO" build -o "$tmp/derpfwd" ./cmd/derpfwd); then
	args+=(-derper "$tmp/derper" -derpfwd "$tmp/derpfwd")
else
	echo "bench: bench/derp did not build: no DERP row" >&2
fi
if (cd bench/tsnet && "$GO" build -o "$tmp/tsnetpair" ./cmd/tsnetpair); then
	args+=(-tsnetpair "$tmp/tsnetpair" -isolate "$PWD/bench/tsnet/isolated.sh")
else
	echo "bench: bench/tsnet did not build: no tsnet row" >&2
fi
if [ "$(id -u)" -eq 0 ]; then
	./scripts/deps.sh # iperf3 and ping for the lab rows
	"$GO" build -o "$tmp/wireguard-go" golang.zx2c4.com/wireguard
	args+=(-wireguard-go "$tmp/wireguard-go")
fi
"$tmp/plurenet-bench" -repo . -plurenet bin/plurenet "${args[@]}" "$@"
