#!/usr/bin/env bash
# Installs what the tests need on a Debian machine, only when missing.
# Without root it installs nothing and says which tests will skip.
set -euo pipefail

need=()
command -v ip >/dev/null        || need+=(iproute2)
command -v iptables >/dev/null  || need+=(iptables)
command -v iperf3 >/dev/null    || need+=(iperf3)
command -v ping >/dev/null      || need+=(iputils-ping)
command -v curl >/dev/null      || need+=(curl)
command -v redis-server >/dev/null || need+=(redis-server)
# A private D-Bus for the fake systemd-resolved of dns/resolved's tests.
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
# A router's port-mapping daemon in the lab (UPnP IGD, NAT-PMP, PCP) and the
# nft tool that prepares its chains: netlab.Router.StartPortMapper.
command -v miniupnpd >/dev/null || need+=(miniupnpd-nftables)
command -v nft >/dev/null || need+=(nftables)
# The Node.js relay (deploy/vercel) and its conformance test.
command -v node >/dev/null || need+=(nodejs npm)

# vercel_cli installs the Vercel CLI, which builds deploy/vercel offline the
# way Vercel does (TestVercelBuild). Pinned: later majors do not install here.
vercel_cli() {
	command -v vercel >/dev/null && return 0
	if [ "$(id -u)" -ne 0 ] || ! command -v npm >/dev/null; then
		echo "deps: no Vercel CLI; TestVercelBuild will skip (npm install -g vercel@58.10.0)" >&2
		return 0
	fi
	echo "deps: installing the Vercel CLI" >&2
	npm install -g --no-audit --no-fund --loglevel=error vercel@58.10.0 >/dev/null ||
		echo "deps: installing the Vercel CLI failed; TestVercelBuild will skip" >&2
}

if [ ${#need[@]} -eq 0 ]; then
	vercel_cli
	exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
	echo "deps: missing ${need[*]}; tests that need them will skip (run as root on Debian to install)" >&2
	exit 0
fi
echo "deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
vercel_cli
