#!/bin/sh
# plurenet postremove (deb postrm, rpm %postun). Removal keeps
# /var/lib/plurenet (node keys: a reinstalled node keeps its overlay IPs)
# and /etc/plurenet (configs, mesh key files); deb purge deletes the state
# and the units' enablement, never the admin's mesh secrets in /etc. The
# system users stay: files they own may remain.
set -e

case "$1" in
purge | 0)
	# deb purge; rpm erase (rpm has no purge) only forgets enablement.
	rm -f /etc/systemd/system/*.wants/plurenet@*.service \
		/etc/systemd/system/*.wants/plurenet-relay.service
	;;
esac
if [ "$1" = purge ]; then
	rm -rf /var/lib/plurenet
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
