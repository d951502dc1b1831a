#!/bin/sh
# plurenet preinstall (deb preinst, rpm %pre): create the system users the
# units run as (the same as /usr/lib/sysusers.d/plurenet.conf), so they
# exist before anything could start a unit.
set -e

add_user() { # NAME HOME COMMENT
	getent passwd "$1" >/dev/null && return 0
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	useradd --system --user-group --no-create-home --home-dir "$2" \
		--shell "$nologin" --comment "$3" "$1"
}

add_user plurenet /var/lib/plurenet "plurenet mesh node"
add_user plurenet-relay / "plurenet relay"
exit 0
