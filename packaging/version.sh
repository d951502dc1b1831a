#!/bin/sh
# Prints the version of the packages and of "plurenet version": the latest
# vX.Y.Z tag, with "+gitN.gHASH" for N commits after it; "0.0.0+gitN.gHASH"
# (N commits in all) before the first tag; ".dirty" for uncommitted
# changes. The +metadata keeps the order right in both dpkg and rpm: a
# build after v1.2.3 sorts above 1.2.3 (a "-N" prerelease would sort below).
set -eu
cd "$(dirname "$0")/.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "version.sh: not a git checkout; give the version with make VERSION=X.Y.Z" >&2
	exit 1
fi
if desc=$(git describe --tags --match 'v[0-9]*' --long --abbrev=12 2>/dev/null); then
	# v1.2.3-5-g0123456789ab
	hash=${desc##*-}
	rest=${desc%-*}
	n=${rest##*-}
	base=${rest%-*}
	base=${base#v}
else
	base=0.0.0
	n=$(git rev-list --count HEAD)
	hash=g$(git rev-parse --short=12 HEAD)
fi
v=$base
[ "$n" = 0 ] || v="$base+git$n.$hash"
if ! git diff --quiet HEAD -- 2>/dev/null; then
	case $v in *+*) v="$v.dirty" ;; *) v="$v+dirty" ;; esac
fi
echo "$v"
