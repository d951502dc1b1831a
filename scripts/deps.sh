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
# The Node.js relay (deploy/vercel) and its conformance test.
command -v node >/dev/null || need+=(nodejs npm)

if [ ${#need[@]} -eq 0 ]; then
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
