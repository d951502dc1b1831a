#!/bin/sh
# plurenet preremove (deb prerm, rpm %preun): on removal (not upgrade),
# stop the units before their binary goes away. State is kept.
set -e

remove=no
case "$1" in
remove) remove=yes ;; # deb; "upgrade" and others keep running
0) remove=yes ;;      # rpm: 0 = erase, 1 = upgrade
esac

if [ "$remove" = yes ] && [ -d /run/systemd/system ]; then
	systemctl stop 'plurenet@*.service' plurenet-relay.service || true
fi
exit 0
