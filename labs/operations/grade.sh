#!/usr/bin/env bash
# labs/operations/grade.sh: grades the operations lab (book: "Operating a
# cluster"). What is checked:
#   - the backup named in /labs/operations/snapshot-file exists, has etcd's
#     frame (its size is 32 bytes, a SHA-256, more than a multiple of 512),
#     and holds the value of /labs/operations/marker;
#   - the revision in /labs/operations/compacted was compacted: a read just
#     below it is refused, a read at it answers;
#   - /labs/operations/leader-endpoint is the member that leads (by
#     etcdctl endpoint status), and its /metrics says so;
#   - /labs/operations/leader-wal-fsyncs is a count that member's
#     /metrics had reached (positive, not above its count now).
. "$(dirname "$0")/../lib.sh"
require_cluster

value() { ectl get "$1" --print-value-only 2>/dev/null | head -n 1; }

file=$(value /labs/operations/snapshot-file)
marker=$(value /labs/operations/marker)
compacted=$(value /labs/operations/compacted)
leader_ep=$(value /labs/operations/leader-endpoint)
fsyncs=$(value /labs/operations/leader-wal-fsyncs)

check "the backup ${file:-(none recorded)} exists and is not empty" test -n "$file" -a -s "${file:-/nonexistent}"
size=$(stat -c %s "${file:-/nonexistent}" 2>/dev/null || echo 0)
expect_eq "the backup's size is a multiple of 512 plus a 32-byte SHA-256" 32 $((size % 512))
check "the backup holds the marker value (${marker:-none recorded})" \
    test -n "$marker" -a "$(grep -c -a -F "${marker:-no marker}" "${file:-/nonexistent}" 2>/dev/null)" -gt 0 2>/dev/null

if [[ "$compacted" =~ ^[0-9]+$ ]] && [ "$compacted" -gt 1 ]; then
    below=$(ectl get /labs/operations/marker --rev=$((compacted - 1)) 2>&1)
    at=$(ectl get /labs/operations/marker --rev="$compacted" 2>&1)
else
    below="(no compaction revision recorded)"
    at="$below"
fi
check "a read below the compacted revision ${compacted:-?} is refused as compacted" grep -q "required revision has been compacted" <<<"$below"
check "a read at the compacted revision ${compacted:-?} answers" \
    bash -c '[[ "$1" =~ ^[0-9]+$ ]] && ! grep -qi error <<<"$2"' _ "$compacted" "$at"

leader=$(leader_index)
expect_eq "the recorded leader (from /metrics) is the member that leads" "$(endpoint_of "${leader:-0}")" "$leader_ep"
index=""
for i in $(seq "$(member_count)"); do [ "$(endpoint_of "$i")" == "$leader_ep" ] && index=$i; done
metrics=$( [ -n "$index" ] && metrics_of "$index")
check "that member's /metrics says etcd_server_is_leader 1" grep -q '^etcd_server_is_leader 1$' <<<"$metrics"
now=$(awk '$1 == "etcd_disk_wal_fsync_duration_seconds_count" { print $2 }' <<<"$metrics")
check "the recorded WAL fsync count (${fsyncs:-none}) is positive and not above that member's count now (${now:-none})" \
    awk -v r="$fsyncs" -v n="$now" 'BEGIN { exit !(r ~ /^[0-9]+$/ && n ~ /^[0-9]+$/ && r > 0 && r + 0 <= n + 0) }'
finish
