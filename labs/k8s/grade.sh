#!/usr/bin/env bash
# labs/k8s/grade.sh: grades the lab of "Kubernetes on etcd" (book chapter
# practice/kubernetes.md) from the cluster's state, plus three probes of the
# cluster's behaviour (a second create, a watch from the list's revision, a
# request over etcd's size limit). It changes nothing the reader wrote: the
# probes' writes are refused, or removed at once if a cluster accepts them.
. "$(dirname "$0")/../lib.sh"
require_cluster

POD=/registry/pods/default/web-0
NS=/registry/pods/default/
NS_END=/registry/pods/default0

# Steps 1-5: create if absent, update if unchanged, a stale update refused.
fields=$(ectl get "$POD" -w fields 2>/dev/null)
version=$(field Version <<<"$fields")
mod=$(field ModRevision <<<"$fields")
expect_eq "web-0 exists and was updated once after its creation (version)" 2 "${version:-absent}"
expect_eq "web-0 holds the updated object" '{"kind":"Pod","image":"nginx:1.25"}' "$(value "$POD")"
expect_eq "/lab/k8s/conflict holds the mod_revision the refused update read back" \
    "${mod:-web-0 absent}" "$(value /lab/k8s/conflict)"
# The probe runs only on an existing web-0, where its compare fails: on an
# absent key it would create it.
if [ -n "$version" ]; then
    second=$(ectl txn <<TXN 2>&1 | head -n 1
mod("$POD") = "0"

put $POD "{\"kind\":\"Pod\",\"image\":\"overwritten\"}"


TXN
    )
else
    second="not tried: web-0 does not exist"
fi
expect_eq "probe: a create-if-absent of the existing web-0 fails" FAILURE "$second"

# Steps 6-9: the pods, the pages, the revision they were read at.
expect_eq "the pods of namespace default now" "web-0,web-1,web-2,web-2a,web-3,web-4" "$(names "$NS" "$NS_END")"
expect_eq "the pods of namespace kube-system" "coredns-0" "$(names /registry/pods/kube-system/ /registry/pods/kube-system0)"
R=$(value /lab/k8s/list-revision)
if [[ "$R" =~ ^[0-9]+$ ]]; then
    expect_eq "the pods of namespace default at /lab/k8s/list-revision ($R)" \
        "web-0,web-1,web-2,web-3,web-4" "$(names "$NS" "$NS_END" --rev "$R")"
    created=$(ectl get /registry/pods/default/web-2a -w fields 2>/dev/null | field CreateRevision)
    check "web-2a was created after the first page was read (create_revision ${created:-absent} > $R)" \
        test "${created:-0}" -gt "$R"
    first=$(timeout 3 etcdctl --endpoints="$ENDPOINTS" --dial-timeout=2s watch --prefix "$NS" --rev $((R + 1)) 2>&1 |
        head -n 2 | paste -sd' ' -)
    expect_eq "probe: a watch from the list's revision + 1 starts with web-2a's creation" \
        "PUT /registry/pods/default/web-2a" "$first"
else
    expect_eq "/lab/k8s/list-revision holds the first page's revision" "a revision" "${R:-absent}"
fi
expect_eq "/lab/k8s/page2 lists page 2 read at the first page's revision" "web-2,web-3" "$(value /lab/k8s/page2)"

# Step 11: etcd refuses a request over --max-request-bytes (1.5 MiB by default).
probe=/lab/k8s/grader-probe-too-large
if answer=$(head -c 1600000 /dev/zero | tr '\0' x | ectl put "$probe" 2>&1); then
    ectl del "$probe" >/dev/null 2>&1
    answer="accepted (the cluster stored a 1,600,000-byte value)"
else
    answer=$(grep -o 'etcdserver: request is too large' <<<"$answer" | head -n 1)
fi
expect_eq "probe: a 1,600,000-byte put is refused" "etcdserver: request is too large" "$answer"

finish
