#!/usr/bin/env bash
# labs/consistency/cut-off.sh: pauses and resumes members for the
# consistency lab, by their number in $ENDPOINTS (1, 2, 3), with SIGSTOP and
# SIGCONT on the pids in $CLUSTER_PIDS (see labs/lib.sh).
#
#   bash labs/consistency/cut-off.sh leader          which member leads
#   bash labs/consistency/cut-off.sh others 1        the endpoints of every member but 1
#   bash labs/consistency/cut-off.sh stop 3          pause member 3
#   bash labs/consistency/cut-off.sh cont 3          resume member 3
#   bash labs/consistency/cut-off.sh cont all        resume every member
. "$(dirname "$0")/../lib.sh"

signal_member() {
    local pid
    pid=$(member_pid "$2") || {
        echo "no live pid for member $2 in $CLUSTER_PIDS/n$2.pid (set CLUSTER_PIDS to the directory with the n<id>.pid files)" >&2
        exit 2
    }
    kill -"$1" "$pid" && echo "member $2 ($(endpoint_of "$2"), pid $pid): SIG$1"
}

case "${1:-}" in
leader)
    leader_index || {
        echo "no member answers that it leads" >&2
        exit 1
    }
    ;;
others)
    for i in $(seq "$(member_count)"); do
        [ "$i" != "${2:?which member?}" ] && endpoint_of "$i"
    done | paste -sd,
    ;;
stop) signal_member STOP "${2:?which member?}" ;;
cont)
    if [ "${2:-}" == all ]; then
        for i in $(seq "$(member_count)"); do signal_member CONT "$i"; done
    else
        signal_member CONT "${2:?which member?}"
    fi
    ;;
*)
    echo "usage: cut-off.sh leader | others N | stop N | cont N | cont all" >&2
    exit 2
    ;;
esac
