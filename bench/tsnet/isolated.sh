#!/bin/sh
# isolated.sh CMD ARGS...: runs CMD in a network namespace of its own that
# nothing leaves: loopback and a veth pair whose two ends both stay inside
# (tsnet pauses without a default route through a non-loopback interface).
# Needs root (unshare -n).
set -eu
exec unshare -n sh -c '
	ip link set lo up
	ip link add bench0 type veth peer name bench1
	ip addr add 10.255.255.1/24 dev bench0
	ip link set bench0 up
	ip link set bench1 up
	ip route add default dev bench0
	exec "$@"
' isolated "$@"
