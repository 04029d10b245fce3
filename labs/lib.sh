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
