#!/bin/sh
# plurenet postinstall (deb postinst, rpm %post). Never starts or enables
# a unit: a node needs its config and key file first (README, "Install as
# a service"). On an upgrade, running units keep the old binary until
# restarted: say so rather than cut every mesh at once.
set -e

# deb: "configure" with the old version when upgrading; rpm: 1 = install,
# 2 = upgrade.
upgrade=no
case "$1" in
configure) [ -n "$2" ] && upgrade=yes ;;
2) upgrade=yes ;;
esac

# /run/systemd/system exists only when systemd is the running init
# (sd_booted(3)): in a container, a chroot or an image build there is no
# manager to reload.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if [ "$upgrade" = yes ]; then
		running=$(systemctl list-units --state=active --no-legend --plain \
			'plurenet@*.service' plurenet-relay.service 2>/dev/null | awk '{printf " %s", $1}')
		if [ -n "$running" ]; then
			echo "plurenet: upgraded; restart to use the new version: systemctl restart$running"
		fi
	fi
fi
exit 0
