#!/usr/bin/env bash
# labs/discovery/solution.sh: one way to do the lab of "Service discovery and
# configuration", the chapter's commands in order, with the waiting done by
# polling instead of by watching a terminal. It starts from reset.sh, so a
# second run redoes the lab (with new leases and revisions).
set -euo pipefail
here=$(dirname "$0")
bash "$here/reset.sh"
. "$here/../lib.sh"
set -e

UP=/apisix/upstreams/1

# 1. The gateway's configuration, in APISIX's layout.
ectl put /apisix/routes/1 '{"uri":"/hello","upstream_id":"1"}'
ectl put "$UP" '{"type":"roundrobin","nodes":{"10.0.0.1:80":1}}'

# 2. A gateway starts: list the prefix (empty so far), then watch from the
#    list's revision + 1.
ectl get --prefix /discovery/web/ -w fields | grep -E '^"(Revision|Key)"'
R=$(ectl get --prefix /discovery/web/ -w fields | field Revision)
ectl put /lab/discovery/list-revision "$R"
events=$(mktemp)
timeout 20 etcdctl --endpoints="$ENDPOINTS" watch --prefix /discovery/web/ --rev $((R + 1)) >"$events" 2>&1 &
watcher=$!

# 3. Two instances of the service "web" register, each under a lease of its own.
A=$(ectl lease grant 60 | awk '{ print $2 }')
B=$(ectl lease grant 5 | awk '{ print $2 }')
ectl put /lab/discovery/lease-a "$A"
ectl put /lab/discovery/lease-b "$B"
ectl put --lease="$A" /discovery/web/10.0.0.1:80 '{"weight":1}'
ectl put --lease="$B" /discovery/web/10.0.0.2:80 '{"weight":1}'

# 4. Instance A stays healthy (one keep-alive here; a service runs
#    `lease keep-alive` for as long as it lives); instance B stops sending any.
ectl lease keep-alive --once "$A"
for _ in $(seq 40); do
    ectl lease timetolive "$B" | grep -q 'already expired' && break
    sleep 0.5
done
ectl lease timetolive "$B"
ectl lease timetolive --keys "$A"
sleep 1
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
echo "the gateway's watch saw:"
cat "$events"
rm -f "$events"

# 5. Two administrators edit the upstream at once, each from what they read.
M=$(ectl get "$UP" -w fields | field ModRevision)
edit() { # edit <mod_revision read> <new value>
    ectl txn -w fields <<TXN
mod("$UP") = "$1"

put $UP "$(sed 's/"/\\"/g' <<<"$2")"

get $UP

TXN
}
edit "$M" '{"type":"roundrobin","nodes":{"10.0.0.1:80":1,"10.0.0.3:80":1}}' | grep -E '^"Succeeded"'
# The second administrator's edit was based on the same read: refused.
M2=$(edit "$M" '{"type":"roundrobin","nodes":{"10.0.0.1:80":2}}' | tee /dev/stderr | field ModRevision)
# Re-read (the failure branch did), re-apply the change to what is there now.
edit "$M2" '{"type":"roundrobin","nodes":{"10.0.0.1:80":2,"10.0.0.3:80":1}}' | grep -E '^"Succeeded"'

# 6. Compact the history, as etcd's periodic compaction or kube-apiserver would.
NOW=$(ectl get /apisix/routes/1 -w fields | field Revision)
ectl compaction "$NOW"

# 7. The gateway reconnects and resumes its watch from where it was: refused.
timeout 5 etcdctl --endpoints="$ENDPOINTS" watch --prefix /discovery/web/ --rev $((R + 1)) || true

# 8. Recovery: list again, then watch from the new list's revision + 1.
ectl get --prefix /discovery/web/ -w fields | grep -E '^"(Revision|Key)"'
R2=$(ectl get --prefix /discovery/web/ -w fields | field Revision)
ectl put /lab/discovery/relist-revision "$R2"
timeout 2 etcdctl --endpoints="$ENDPOINTS" watch --prefix /discovery/web/ --rev $((R2 + 1)) || true
