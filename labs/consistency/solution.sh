#!/usr/bin/env bash
# labs/consistency/solution.sh: one way to do the consistency lab.
#
# A follower F is paused while the others write "after" (and enough other
# writes that the leader stops sending to F: it keeps at most a few hundred
# unacknowledged messages in flight to a member); then the other two are
# paused and F resumed, cut off from them with the state it had. F answers a
# serializable read from its own store: the stale "before". A linearizable
# read at F needs a leader to confirm the read index, and fails. Then all
# resume, and the outcomes are recorded for the grader.
. "$(dirname "$0")/../lib.sh"
require_cluster
here="$(cd "$(dirname "$0")" && pwd)"
trap 'bash "$here/cut-off.sh" cont all >/dev/null 2>&1' EXIT

leader=$(bash "$here/cut-off.sh" leader) || exit 1
n=$(member_count)
follower=""
others=()
for i in $(seq "$n"); do
    if [ -z "$follower" ] && [ "$i" != "$leader" ]; then follower=$i; else others+=("$i"); fi
done
others_endpoints=$(bash "$here/cut-off.sh" others "$follower")
at_f() { etcdctl --endpoints="$(endpoint_of "$follower")" --dial-timeout=2s --command-timeout=3s "$@"; }
on_others() { etcdctl --endpoints="$others_endpoints" --dial-timeout=2s --command-timeout=5s "$@"; }
echo "leader: member $leader; the member to cut off: member $follower"

ectl put /labs/consistency/x before >/dev/null
bash "$here/cut-off.sh" stop "$follower"
# 600 writes: more than the messages a leader keeps in flight to a silent
# member (256 in metcd, 512 in etcd 3.4), so the newest ones never reach F.
for i in $(seq 600); do on_others put /labs/consistency/filler "$i" >/dev/null || exit 1; done
on_others put /labs/consistency/x after >/dev/null || exit 1
for i in "${others[@]}"; do bash "$here/cut-off.sh" stop "$i"; done
bash "$here/cut-off.sh" cont "$follower"
sleep 1

s_answer=$(at_f get /labs/consistency/x --consistency=s -w fields)
s_value=$(awk '$1 == "\"Value\"" { sub(/^[^:]*: */, ""); gsub(/^"|"$/, ""); print }' <<<"$s_answer")
s_revision=$(awk '$1 == "\"Revision\"" { print $3 }' <<<"$s_answer")
if l_value=$(at_f get /labs/consistency/x --consistency=l --print-value-only 2>/tmp/lab-consistency.err); then
    linearizable="$l_value"
else
    linearizable="failed: $(grep -o 'Error: .*' /tmp/lab-consistency.err | head -n 1)"
fi
rm -f /tmp/lab-consistency.err
echo "at member $follower, cut off: serializable read: '$s_value' at revision $s_revision; linearizable read: $linearizable"

bash "$here/cut-off.sh" cont all
for _ in $(seq 50); do ectl endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
ectl put /labs/consistency/serializable/value "$s_value" >/dev/null
ectl put /labs/consistency/serializable/revision "$s_revision" >/dev/null
ectl put /labs/consistency/linearizable "$linearizable" >/dev/null
echo "after healing, member $follower reads: $(at_f get /labs/consistency/x --consistency=s --print-value-only)"
