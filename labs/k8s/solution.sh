#!/usr/bin/env bash
# labs/k8s/solution.sh: one way to do the lab of "Kubernetes on etcd", the
# chapter's commands in order. It starts from reset.sh, so running it twice
# leaves the same state (with new revisions).
set -euo pipefail
here=$(dirname "$0")
bash "$here/reset.sh"
. "$here/../lib.sh"
set -e

POD=/registry/pods/default/web-0


# 1. Create if absent: the compare holds only while the key does not exist.
ectl txn <<TXN
mod("$POD") = "0"

put $POD "{\"kind\":\"Pod\",\"image\":\"nginx:1.24\"}"


TXN
# 2. The same create again: FAILURE, nothing written.
ectl txn <<TXN
mod("$POD") = "0"

put $POD "{\"kind\":\"Pod\",\"image\":\"nginx:1.24\"}"


TXN

# 3. Read the object and its resourceVersion (the key's mod_revision).
REV=$(ectl get "$POD" -w fields | field ModRevision)
echo "web-0 read at mod_revision $REV"

# 4. Update if unchanged since that read; on a conflict, read it back.
update() {
    ectl txn -w fields <<TXN
mod("$POD") = "$REV"

put $POD "{\"kind\":\"Pod\",\"image\":\"nginx:1.25\"}"

get $POD

TXN
}
update | grep -E '^"(Succeeded|ModRevision|Version)"'
# 5. The same update with the now stale revision: refused, and the failure
#    branch returns the object as it is now (Kubernetes' 409 Conflict).
CURRENT=$(update | tee /dev/stderr | field ModRevision)
ectl put /lab/k8s/conflict "$CURRENT"

# 6. More pods, in two namespaces.
for i in 1 2 3 4; do
    ectl put "/registry/pods/default/web-$i" '{"kind":"Pod","image":"nginx:1.25"}'
done
ectl put /registry/pods/kube-system/coredns-0 '{"kind":"Pod","image":"coredns:1.11"}'

# 7. Page 1 of the namespace's pods, two at a time; remember its revision.
ectl get /registry/pods/default/ /registry/pods/default0 --limit 2 --keys-only -w fields |
    grep -E '^"(Revision|Key|More|Count)"'
R=$(ectl get /registry/pods/default/ /registry/pods/default0 --limit 2 --keys-only -w fields | field Revision)
ectl put /lab/k8s/list-revision "$R"

# 8. Someone creates a pod between the two pages.
ectl put /registry/pods/default/web-2a '{"kind":"Pod","image":"nginx:1.25"}'

# 9. Page 2 at the first page's revision, from the last key seen (dropped).
ectl get /registry/pods/default/web-1 /registry/pods/default0 --rev "$R" --limit 3 --keys-only
page2=$(ectl get /registry/pods/default/web-1 /registry/pods/default0 --rev "$R" --limit 3 --keys-only |
    grep . | tail -n +2 | sed 's|.*/||' | paste -sd, -)
ectl put /lab/k8s/page2 "$page2"

# 10. Watch from the list's revision + 1: the first event is web-2a's creation.
timeout 3 etcdctl --endpoints="$ENDPOINTS" watch --prefix /registry/pods/default/ --rev $((R + 1)) || true

# 11. A value over etcd's 1.5 MiB request limit is refused.
head -c 1600000 /dev/zero | tr '\0' x | ectl put /registry/configmaps/default/huge || true
