#!/usr/bin/env bash
# labs/lib.sh: what every lab's grade.sh and solution.sh share. Source it:
#   . "$(dirname "$0")/../lib.sh"
# It sets ENDPOINTS (default: the gRPC endpoints of `just cluster`), defines
# `ectl` (etcdctl v3 on those endpoints, with a bounded timeout), and the
# grading helpers `check`, `expect_eq` and `finish`.
set -uo pipefail

ENDPOINTS="${ENDPOINTS:-127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379}"
export ETCDCTL_API=3

if ! command -v etcdctl >/dev/null 2>&1; then
    echo "etcdctl is not installed; run 'just setup' (it installs Debian's etcd-client)" >&2
    exit 2
fi

# etcdctl against the lab's cluster; a dead cluster fails in seconds, not minutes.
ectl() {
    etcdctl --endpoints="$ENDPOINTS" --dial-timeout=2s --command-timeout=5s "$@"
}

# field NAME: one field of `etcdctl ... -w fields` read from stdin (the first
# line naming it), its quotes removed.
field() {
    awk -v f="\"$1\"" '$1 == f { sub(/^[^:]*: */, ""); gsub(/^"|"$/, ""); print; exit }'
}

# key_field KEY NAME [get options]: one field of `etcdctl get KEY -w fields`.
key_field() {
    local key=$1 name=$2
    shift 2
    ectl get "$key" "$@" -w fields 2>/dev/null | field "$name"
}

# value KEY: the key's value, nothing when it is absent.
value() { ectl get "$1" --print-value-only 2>/dev/null; }

# names RANGE...: the last path elements of a range's keys, comma-separated.
names() { ectl get "$@" --keys-only 2>/dev/null | grep . | sed 's|.*/||' | paste -sd, -; }

# The cluster must answer before any grading, or every check would fail
# for a reason that has nothing to do with the lab.
require_cluster() {
    if ! ectl endpoint health >/dev/null 2>&1; then
        echo "no cluster answers on $ENDPOINTS: start one with 'just cluster' (or set ENDPOINTS)" >&2
        exit 2
    fi
}

LAB_PASSED=0
LAB_FAILED=0

# check "what is checked" command...: ok when the command succeeds.
check() {
    local what="$1"
    shift
    if "$@" >/dev/null 2>&1; then
        LAB_PASSED=$((LAB_PASSED + 1))
        printf 'ok    %s\n' "$what"
    else
        LAB_FAILED=$((LAB_FAILED + 1))
        printf 'FAIL  %s\n' "$what"
    fi
}

# expect_eq "what is checked" expected found
expect_eq() {
    if [ "$2" == "$3" ]; then
        LAB_PASSED=$((LAB_PASSED + 1))
        printf 'ok    %s\n' "$1"
    else
        LAB_FAILED=$((LAB_FAILED + 1))
        printf 'FAIL  %s\n        expected: %s\n        found:    %s\n' "$1" "$2" "$3"
    fi
}

# Prints the verdict and exits with it.
finish() {
    if [ "$LAB_FAILED" -eq 0 ]; then
        printf '\n%d checks passed: lab done\n' "$LAB_PASSED"
        exit 0
    fi
    printf '\n%d of %d checks failed\n' "$LAB_FAILED" $((LAB_PASSED + LAB_FAILED))
    exit 1
}

# ---------------------------------------------------------------- members, pids, /metrics
# Added for the labs that pause members or read /metrics (consistency,
# operations, locks). Members are numbered 1, 2, 3... in the order of
# $ENDPOINTS.

LABS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# CLUSTER_PIDS: the directory holding n<i>.pid, the pid of member i.
# `just cluster <engine>` writes data/cluster/<engine>/n<id>.pid (default
# engine: memory); labs/check.sh exports its own directory.
CLUSTER_PIDS="${CLUSTER_PIDS:-$LABS_ROOT/data/cluster/memory}"

# METRICS_ENDPOINTS: where member i serves /metrics, in the order of
# $ENDPOINTS. etcd serves /metrics on its client port; metcd on its HTTP
# port, which `just cluster` puts at 13379, 23379 and 33379.
if [ -z "${METRICS_ENDPOINTS:-}" ]; then
    if [ "$ENDPOINTS" == "127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379" ]; then
        METRICS_ENDPOINTS="127.0.0.1:13379,127.0.0.1:23379,127.0.0.1:33379"
    else
        METRICS_ENDPOINTS="$ENDPOINTS"
    fi
fi

# endpoint_of I: the gRPC endpoint of member I.
endpoint_of() { tr ',' '\n' <<<"$ENDPOINTS" | sed -n "${1}p"; }

# member_count: how many endpoints $ENDPOINTS names.
member_count() { tr ',' '\n' <<<"$ENDPOINTS" | grep -c .; }

# member_pid I: the pid of member I, from $CLUSTER_PIDS/n<I>.pid (fails if
# the file is missing or the process is gone).
member_pid() {
    local pid
    pid=$(cat "$CLUSTER_PIDS/n$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

# metrics_of I: the Prometheus text of member I.
metrics_of() {
    local ep
    ep=$(tr ',' '\n' <<<"$METRICS_ENDPOINTS" | sed -n "${1}p")
    [ -n "$ep" ] && curl -sf --max-time 3 "http://$ep/metrics"
}

# status_field I FIELD: one field of `etcdctl endpoint status -w fields` for
# member I alone (MemberID, Leader, Revision, RaftTerm, DBSize, Version...).
status_field() {
    etcdctl --endpoints="$(endpoint_of "$1")" --dial-timeout=2s --command-timeout=5s \
        endpoint status -w fields 2>/dev/null |
        awk -v f="\"$2\"" '$1 == f { sub(/^[^:]*: */, ""); gsub(/"/, ""); print; exit }'
}

# leader_index: the number of the member that leads (none printed if no
# member answers that it is the leader).
leader_index() {
    local i n
    n=$(member_count)
    for i in $(seq "$n"); do
        local id leader
        id=$(status_field "$i" MemberID)
        leader=$(status_field "$i" Leader)
        if [ -n "$id" ] && [ "$id" == "$leader" ]; then
            echo "$i"
            return 0
        fi
    done
    return 1
}

# is_metcd: true when the cluster is metcd (its version carries "+metcd").
is_metcd() { status_field 1 Version | grep -q metcd; }
