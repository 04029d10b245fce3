#!/usr/bin/env bash
# labs/locks/solution.sh: one way to do the locks lab, without a human at
# the keyboard: the pause a reader makes with Ctrl-Z is a SIGSTOP of the
# holder's process group here (etcdctl, which keeps the lease alive, and
# the command it runs).
set -m # each background job in its own process group, so it can be paused whole
. "$(dirname "$0")/../lib.sh"
require_cluster
here="$(cd "$(dirname "$0")" && pwd)"

ectl del /labs/locks/ --prefix >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# holder-1 takes the lock and works for 4 s...
etcdctl --endpoints="$ENDPOINTS" lock --ttl=2 labs-locks bash "$here/fenced-write.sh" holder-1 4 >"$log" 2>&1 &
holder1=$!
trap 'kill -CONT -- -$holder1 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
    grep -q holds "$log" && break
    sleep 0.1
done
grep -q holds "$log" || {
    cat "$log"
    echo "holder-1 never got the lock" >&2
    exit 1
}
# ...and is paused in the middle of its work: no keep-alives, no writes.
kill -STOP -- -"$holder1"
echo "paused holder-1 (process group $holder1)"

# holder-2 waits for the lock; it gets it once holder-1's lease expires.
timeout 30 etcdctl --endpoints="$ENDPOINTS" lock --ttl=2 labs-locks bash "$here/fenced-write.sh" holder-2 0 ||
    { echo "holder-2 did not get the lock within 30 s" >&2; exit 1; }

# holder-1 resumes and finishes its work: its write must be refused.
kill -CONT -- -"$holder1"
wait "$holder1"
cat "$log"
grep -q REFUSED "$log"
