#!/usr/bin/env bash
# labs/locks/grade.sh: grades the locks lab (book: "Distributed locks").
#
# The lab: holder-1 takes the lock labs-locks, is paused past its lease's
# TTL, holder-2 takes the lock and writes the protected resource, holder-1
# resumes and its write is refused by the fencing check. What is checked,
# all from the cluster's state and its history:
#   - /labs/locks/resource holds holder-2's write;
#   - holder-1's write was refused and recorded (/labs/locks/refused/holder-1);
#   - holder-1's token is smaller than holder-2's;
#   - holder-1 tried to write after holder-2 had written (it really resumed late);
#   - when holder-2 wrote, its key was the only one under labs-locks/ (holder-1's
#     key had been deleted by its lease's expiry);
#   - the lock is free now.
. "$(dirname "$0")/../lib.sh"
require_cluster

resource=$(key_field /labs/locks/resource Value)
refused=$(key_field /labs/locks/refused/holder-1 Value)
resource_rev=$(key_field /labs/locks/resource ModRevision)
refused_rev=$(key_field /labs/locks/refused/holder-1 ModRevision)
holder2_key=$(sed -nE 's/^holder-2 key=([^ ]+) token=[0-9]+$/\1/p' <<<"$resource")
token2=$(sed -nE 's/^holder-2 key=[^ ]+ token=([0-9]+)$/\1/p' <<<"$resource")
token1=$(sed -nE 's/^token=([0-9]+) key=.*$/\1/p' <<<"$refused")

expect_eq "/labs/locks/resource holds holder-2's fenced write" "holder-2" "${resource%% *}"
check "holder-1's write was refused and recorded in /labs/locks/refused/holder-1" test -n "$token1"
check "holder-1's fencing token ($token1) is smaller than holder-2's ($token2)" \
    test -n "$token1" -a -n "$token2" -a "${token1:-0}" -lt "${token2:-0}"
check "holder-1 tried to write (revision ${refused_rev:-none}) after holder-2 had written (revision ${resource_rev:-none})" \
    test -n "$refused_rev" -a -n "$resource_rev" -a "${refused_rev:-0}" -gt "${resource_rev:-0}"
if [ -n "$resource_rev" ]; then
    at_write=$(ectl get labs-locks/ --prefix --keys-only --rev="$resource_rev" 2>&1 | grep -v '^$' | tr '\n' ' ' | sed 's/ $//')
    if grep -q compacted <<<"$at_write"; then
        at_write="(the history of revision $resource_rev was compacted: run labs/locks/reset.sh and do the lab again)"
    fi
else
    at_write="(no write by holder-2)"
fi
expect_eq "when holder-2 wrote, its own key was the only lock key (holder-1's had expired)" \
    "${holder2_key:-the key of holder-2}" "$at_write"
left=$(ectl get labs-locks/ --prefix --keys-only 2>&1 | grep -v '^$' | tr '\n' ' ' | sed 's/ $//')
expect_eq "the lock is free now (no key under labs-locks/)" "" "$left"
finish
