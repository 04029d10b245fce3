#!/usr/bin/env bash
# labs/locks/fenced-write.sh: the work of a lock holder in the locks lab.
#
# Run it as the command of `etcdctl lock`, which hands it the lock's key in
# ETCD_LOCK_KEY (etcdctl 3.4 also sets ETCD_LOCK_REV, the revision of the
# answer that granted the lock):
#
#   etcdctl --endpoints=$ENDPOINTS lock --ttl=2 labs-locks \
#       bash labs/locks/fenced-write.sh NAME [WORK_SECONDS] [unfenced]
#
# It reads its fencing token (the create revision of its lock key), "works"
# for WORK_SECONDS, then writes /labs/locks/resource in a transaction that
# succeeds only if its lock key still exists with that create revision. If
# the key is gone (the lease expired while the holder was paused), the
# write is not applied and the refusal is recorded under
# /labs/locks/refused/NAME instead. With "unfenced" as the third argument
# it writes without the check, to show what the check prevents.
. "$(dirname "$0")/../lib.sh"

name="${1:?usage: fenced-write.sh NAME [WORK_SECONDS] [unfenced]}"
work="${2:-0}"
mode="${3:-fenced}"
key="${ETCD_LOCK_KEY:?run me as the command of etcdctl lock (ETCD_LOCK_KEY is not set)}"

token=$(ectl get "$key" -w fields | awk '$1 == "\"CreateRevision\"" { print $3 }')
if [ -z "$token" ]; then
    echo "$name: my lock key $key is already gone"
    exit 1
fi
echo "$name: holds $key with fencing token $token; working for $work s"
sleep "$work"

if [ "$mode" == unfenced ]; then
    ectl put /labs/locks/resource "$name key=$key token=$token" >/dev/null &&
        echo "$name: wrote the resource WITHOUT a fencing check (token $token)"
    exit
fi

# One transaction: the write happens only if this holder's lock key still
# exists with the create revision it had when the lock was granted.
outcome=$(ectl txn <<TXN | head -n 1
create("$key") = "$token"

put /labs/locks/resource "$name key=$key token=$token"

put /labs/locks/refused/$name "token=$token key=$key"

TXN
)
case "$outcome" in
SUCCESS) echo "$name: wrote the resource with token $token" ;;
FAILURE) echo "$name: write REFUSED: my lock key $key is gone (my lease expired); recorded under /labs/locks/refused/$name" ;;
*)
    echo "$name: the fenced write failed: $outcome"
    exit 1
    ;;
esac
