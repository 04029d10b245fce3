#!/usr/bin/env bash
# labs/consistency/grade.sh: grades the consistency lab (book: "etcd,
# ZooKeeper and Consul").
#
# The lab: a member cut off from the others answers a serializable read of
# /labs/consistency/x with the stale "before" (it never applied "after"),
# while a linearizable read at that member fails. What is checked:
#   - x holds "after" now;
#   - the recorded serializable answer is "before", not the current value;
#   - its revision is older than the write of "after", and the history at
#     that revision holds exactly the value recorded;
#   - the recorded linearizable read failed (or, read at a member that could
#     reach a leader, returned "after").
. "$(dirname "$0")/../lib.sh"
require_cluster

x=$(key_field /labs/consistency/x Value)
x_rev=$(key_field /labs/consistency/x ModRevision)
s_value=$(key_field /labs/consistency/serializable/value Value)
s_rev=$(key_field /labs/consistency/serializable/revision Value)
linearizable=$(key_field /labs/consistency/linearizable Value)

expect_eq "/labs/consistency/x holds the newest write" "after" "$x"
expect_eq "the serializable read at the cut-off member returned the stale value" "before" "$s_value"
check "its revision (${s_rev:-none}) is older than the write of \"after\" (revision ${x_rev:-none})" \
    test -n "$s_rev" -a -n "$x_rev" -a "${s_rev:-0}" -gt 0 -a "${s_rev:-0}" -lt "${x_rev:-0}" 2>/dev/null
if [[ "$s_rev" =~ ^[0-9]+$ ]]; then
    at=$(ectl get /labs/consistency/x --rev="$s_rev" --print-value-only 2>&1)
    grep -q compacted <<<"$at" && at="(revision $s_rev was compacted: run labs/consistency/reset.sh and do the lab again)"
else
    at="(no revision recorded)"
fi
expect_eq "the history at that revision holds the value the member answered" "before" "$at"
check "the linearizable read at the cut-off member failed (recorded: '${linearizable}')" \
    grep -qE '^(failed|after$)' <<<"$linearizable"
finish
