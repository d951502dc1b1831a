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

out=$(mktemp)
trap 'rm -f "$out"' EXIT

# coordinator_race reports whether a failed run of target $1 (output in
# $out) is Go's own fuzzing race rather than a finding: with a duration
# -fuzztime, the coordinator (internal/fuzz, Go 1.26 and older) can see its
# deadline before the workers' context is cancelled and then reports
# "context deadline exceeded" as the target's failure, after a complete
# window, with no input (go.dev/issue/75804, fixed in Go 1.27). A real
# finding always prints "Failing input written to" and saves the input;
# this race prints exactly that one error line under the target's FAIL.
coordinator_race() {
	! grep -q 'Failing input written to' "$out" &&
		[ "$(grep -A1 -- "^--- FAIL: $1 " "$out" | tail -n 1)" = "    context deadline exceeded" ] &&
		[ "$(grep -c -- '^--- FAIL: ' "$out")" -eq 1 ]
}

count=$(printf '%s\n' "$targets" | wc -l)
echo "fuzz: $count targets, $fuzztime each"
n=0
while read -r dir name; do
	n=$((n + 1))
	echo "fuzz: [$n/$count] $name in $dir"
	if "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$dir" </dev/null 2>&1 | tee "$out"; then
		continue
	fi
	if coordinator_race "$name"; then
		echo "fuzz: $name ran its $fuzztime without a finding; go test's \"context deadline exceeded\" is Go's fuzz coordinator race at the end of the window (go.dev/issue/75804), not an input of ours" >&2
		continue
	fi
	if grep -q 'Failing input written to' "$out"; then
		echo "fuzz: $name in $dir FAILED: the failing input is in $dir/testdata/fuzz/$name/" >&2
	else
		echo "fuzz: $name in $dir FAILED without a failing input (see go test's output above)" >&2
	fi
	exit 1
done <<<"$targets"
echo "fuzz: all $count targets ran $fuzztime without a finding"
