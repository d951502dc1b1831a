#!/usr/bin/env bash
# Runs every Go fuzz target of the repository (each "func FuzzXxx" in a
# _test.go file) for FUZZTIME, one after another, and stops at the first
# one that finds a failing input (go test saves it under the package's
# testdata/fuzz/ so that plain "go test" replays it from then on).
#
#   scripts/fuzz.sh 20s        # what "make fuzz" runs
#   scripts/fuzz.sh 5m         # a longer soak
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 FUZZTIME   (e.g. 20s, 5m, or 1000x for a number of runs)" >&2
	exit 2
fi
fuzztime=$1
GO=${GO:-go}
cd "$(dirname "$0")/.."

# "dir name" pairs ("./pkg FuzzXxx"), sorted so that runs are reproducible.
targets=$(grep -rE --include='*_test.go' --exclude-dir=testdata --exclude-dir=vendor --exclude-dir=.git \
	-o '^func Fuzz[A-Za-z0-9_]*\(' . |
	while IFS=: read -r file match; do
		name=${match#func }
		echo "$(dirname "$file") ${name%(}"
	done | sort -u) || true
if [ -z "$targets" ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

count=$(printf '%s\n' "$targets" | wc -l)
echo "fuzz: $count targets, $fuzztime each"
n=0
while read -r dir name; do
	n=$((n + 1))
	echo "fuzz: [$n/$count] $name in $dir"
	if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$dir" </dev/null; then
		echo "fuzz: $name in $dir FAILED: the failing input is in $dir/testdata/fuzz/$name/" >&2
		exit 1
	fi
done <<<"$targets"
echo "fuzz: all $count targets ran $fuzztime without a finding"
