#!/usr/bin/env bash
# labs/break/run.sh: a "break it" lab. Starts the fault harness (`chaos`)
# against 3-node metcd clusters whose nodes break one safety rule on
# purpose (metcd --lab-break NAME), stops at the first run a check fails,
# and compares what happened with what the book says should happen.
#
# Usage: bash labs/break/run.sh NAME [ENGINE]   (or: just lab-break NAME)
# Exit 0 when the outcome is the expected one (caught, or, for skip-fsync,
# not caught by process kills), 1 otherwise, 2 on bad input.
set -uo pipefail

name="${1:-}"
engine="${2:-memory}"
# name | faults that can expose it | runs at most | expected outcome
case "$name" in
    stale-reads) faults=isolate-leader,bridge; runs=10; expect=caught ;;
    early-reads) faults=delay,loss,isolate-follower; runs=30; expect=caught ;;
    skip-flush) faults=kill; runs=10; expect=caught; engine="${2:-redb}" ;;
    skip-fsync) faults=kill; runs=10; expect=missed; engine="${2:-redb}" ;;
    *)
        echo "no break named '$name'; the breaks are: stale-reads, early-reads, skip-flush, skip-fsync" >&2
        exit 2
        ;;
esac

bin_dir="${CARGO_TARGET_DIR:-$HOME/.cache/metcd/target}/release"
out=$(mktemp -d /tmp/metcd-lab-break.XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "lab-break $name: up to $runs runs on $engine with faults $faults; expected: $expect"
"$bin_dir/chaos" "$engine" --lab-break "$name" --fault "$faults" --runs "$runs" \
    --duration-s 5 --until-caught --out "$out" | grep -v '^      '
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
    echo "lab-break: the harness itself failed (exit $status)" >&2
    exit 2
fi
if [ "$status" -eq 1 ]; then found=caught; else found=missed; fi
if [ "$found" == "$expect" ]; then
    echo "lab-break $name: $found, as expected"
    exit 0
fi
echo "lab-break $name: $found, but $expect was expected"
exit 1
