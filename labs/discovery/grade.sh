#!/usr/bin/env bash
# labs/discovery/grade.sh: grades the lab of "Service discovery and
# configuration" (book chapter practice/discovery.md) from the cluster's state
# (the gateway's configuration, the registrations and their leases, the
# revisions the reader recorded) and three probes that change nothing: a watch
# from the first list's revision + 1 must be refused as compacted, a read at
# the re-list's revision must work, and a watch from it must not be refused.
. "$(dirname "$0")/../lib.sh"
require_cluster

UP=/apisix/upstreams/1
revision_marker() { local r; r=$(value "$1"); [[ "$r" =~ ^[0-9]+$ ]] && echo "$r"; }

# Step 1 and 5: the configuration, and the two administrators' edits.
expect_eq "the route /apisix/routes/1" '{"uri":"/hello","upstream_id":"1"}' "$(value /apisix/routes/1)"
expect_eq "the upstream holds both administrators' edits" \
    '{"type":"roundrobin","nodes":{"10.0.0.1:80":2,"10.0.0.3:80":1}}' "$(value "$UP")"
expect_eq "the upstream was written three times (version): created, edited, edited after a re-read" \
    3 "$(ectl get "$UP" -w fields 2>/dev/null | field Version)"

# Steps 2 and 4: registrations under leases; one kept alive, one expired.
expect_eq "the instances registered under /discovery/web/" "10.0.0.1:80" "$(names --prefix /discovery/web/)"
A=$(value /lab/discovery/lease-a)
B=$(value /lab/discovery/lease-b)
if [[ "$A" =~ ^[0-9a-f]+$ ]]; then
    attached=$(ectl get /discovery/web/10.0.0.1:80 -w fields 2>/dev/null | field Lease)
    expect_eq "10.0.0.1:80 is registered under lease A (/lab/discovery/lease-a)" "$((16#$A))" "${attached:-absent}"
    remaining=$(ectl lease timetolive "$A" 2>/dev/null | sed -nE 's/.*remaining\(([-0-9]+)s\).*/\1/p')
    check "lease A is alive (remaining TTL ${remaining:-none} s)" test "${remaining:--1}" -gt 0
else
    expect_eq "/lab/discovery/lease-a holds lease A's id in hex" "a lease id" "${A:-absent}"
fi
if [[ "$B" =~ ^[0-9a-f]+$ ]]; then
    expect_eq "lease B (/lab/discovery/lease-b) expired" "lease $B already expired" \
        "$(ectl lease timetolive "$B" 2>&1 | head -n 1)"
else
    expect_eq "/lab/discovery/lease-b holds lease B's id in hex" "a lease id" "${B:-absent}"
fi

# Steps 3, 6 and 7: the first list's revision was compacted away.
R=$(revision_marker /lab/discovery/list-revision)
if [ -n "$R" ]; then
    canceled=$(timeout 3 etcdctl --endpoints="$ENDPOINTS" --dial-timeout=2s watch --prefix /discovery/web/ \
        --rev $((R + 1)) 2>&1 | grep -o 'required revision has been compacted' | head -n 1)
    expect_eq "probe: a watch from /lab/discovery/list-revision + 1 ($((R + 1))) is refused" \
        "required revision has been compacted" "${canceled:-not refused}"
else
    expect_eq "/lab/discovery/list-revision holds the first list's revision" "a revision" "absent"
fi

# Step 8: the re-list, at a revision the cluster still has.
R2=$(revision_marker /lab/discovery/relist-revision)
if [ -n "$R2" ]; then
    expect_eq "the instances at /lab/discovery/relist-revision ($R2)" "10.0.0.1:80" \
        "$(names --prefix /discovery/web/ --rev "$R2")"
    check "the re-list's revision is after the first list's (${R:-none} < $R2)" test "${R:-$R2}" -lt "$R2"
    refused=$(timeout 2 etcdctl --endpoints="$ENDPOINTS" --dial-timeout=2s watch --prefix /discovery/web/ \
        --rev $((R2 + 1)) 2>&1 | grep -c 'compacted')
    expect_eq "probe: a watch from /lab/discovery/relist-revision + 1 is accepted" 0 "$refused"
else
    expect_eq "/lab/discovery/relist-revision holds the re-list's revision" "a revision" "absent"
fi

finish
