#!/usr/bin/env bash
# labs/operations/solution.sh: one way to do the operations lab: inspect
# the cluster, back it up, compact and defragment it, read /metrics, and
# record what was found under /labs/operations/ for the grader.
. "$(dirname "$0")/../lib.sh"
require_cluster
snapshot="${LAB_SNAPSHOT:-/tmp/metcd-lab-backup.db}"

# Inspection.
ectl endpoint health
ectl endpoint status -w table
ectl member list -w table

# A marker, then a backup from one member (snapshot save takes one endpoint).
marker="backup-marker-$(date +%s%N)"
ectl put /labs/operations/marker "$marker" >/dev/null
rm -f "$snapshot"
etcdctl --endpoints="$(endpoint_of 1)" snapshot save "$snapshot" || exit 1
if is_metcd; then
    echo "metcd: its backup is one of its own snapshot files, not a bbolt database; etcdctl snapshot status cannot read it"
else
    etcdctl snapshot status "$snapshot" -w table
fi
ectl put /labs/operations/snapshot-file "$snapshot" >/dev/null

# Compaction at the current revision, then defragmentation of every member.
revision=$(status_field 1 Revision)
ectl compaction "$revision" || exit 1
ectl defrag || exit 1
ectl put /labs/operations/compacted "$revision" >/dev/null

# /metrics: which member says it leads, and its WAL fsync count.
for i in $(seq "$(member_count)"); do
    metrics=$(metrics_of "$i") || {
        echo "member $i serves no /metrics at $(tr ',' '\n' <<<"$METRICS_ENDPOINTS" | sed -n "${i}p")" >&2
        exit 1
    }
    if grep -q '^etcd_server_is_leader 1$' <<<"$metrics"; then
        ectl put /labs/operations/leader-endpoint "$(endpoint_of "$i")" >/dev/null
        fsyncs=$(awk '$1 == "etcd_disk_wal_fsync_duration_seconds_count" { print $2 }' <<<"$metrics")
        ectl put /labs/operations/leader-wal-fsyncs "$fsyncs" >/dev/null
        echo "member $i leads; its WAL fsyncs so far: $fsyncs"
    fi
done
