#!/usr/bin/env bash
# labs/check.sh: proves every lab's grader can fail and its solution passes.
#
# A lab folder with its own check.sh (the engine lab, which needs no
# cluster) is checked by it. For every other lab folder (or the ones named),
# on a fresh 3-node cluster of its own: grade.sh on the untouched cluster must FAIL, solution.sh then grade.sh
# must pass, and solution.sh run a second time then grade.sh must still pass.
#
# Usage: bash labs/check.sh [--etcd] [lab...]
#   default: metcd (memory engine) from $CARGO_TARGET_DIR/release/metcd
#   --etcd:  real etcd 3.4 (Debian's etcd-server), so each lab is known to
#            behave the same on etcd as on metcd
# Clusters listen on 127.0.0.1 ports 21378-23380 only (member i on 2i378,
# 2i379, 2i380: below the kernel's ephemeral range, which starts at 32768, so
# no outgoing connection holds one; `just cluster` uses 22379 and 23379, so
# stop it first; LABS_PORT_PREFIX=4 moves them to 4i378..., so two checks can
# run at once), and are stopped (SIGKILL after SIGTERM) when the script
# exits, however it exits. A port already in use fails the lab at once:
# otherwise the readiness probe would talk to somebody else's cluster.
set -uo pipefail

LABS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
target=metcd
if [ "${1:-}" == "--etcd" ]; then
    target=etcd
    shift
fi
labs=("$@")
if [ ${#labs[@]} -eq 0 ]; then
    for d in "$LABS_DIR"/*/; do
        [ -f "$d/grade.sh" ] && labs+=("$(basename "$d")")
    done
fi
if [ ${#labs[@]} -eq 0 ]; then
    echo "labs/check.sh: no lab folder with a grade.sh under $LABS_DIR"
    exit 1
fi

bin="${CARGO_TARGET_DIR:-$HOME/.cache/metcd/target}/release/metcd"
if [ "$target" == metcd ] && [ ! -x "$bin" ]; then
    echo "labs/check.sh: $bin is missing; build it with 'cargo build --release -p cluster'" >&2
    exit 2
fi
if [ "$target" == etcd ] && ! command -v etcd >/dev/null; then
    echo "labs/check.sh: etcd is not installed; run 'just setup'" >&2
    exit 2
fi

work=$(mktemp -d /tmp/metcd-labs.XXXXXX)
pids=()
stop_cluster() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for _ in $(seq 50); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
    wait 2>/dev/null
    pids=()
}
trap 'stop_cluster; rm -rf "$work"' EXIT

p="${LABS_PORT_PREFIX:-2}"
if [[ ! "$p" =~ ^[1-5]$ ]]; then
    echo "labs/check.sh: LABS_PORT_PREFIX must be one digit from 1 to 5 (ports <prefix><member>379); got '$p'" >&2
    exit 2
fi
export ENDPOINTS="127.0.0.1:${p}1379,127.0.0.1:${p}2379,127.0.0.1:${p}3379"

# Whether something already listens on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_cluster() {
    local dir="$1"
    mkdir -p "$dir"
    for id in 1 2 3; do
        for port in "${p}${id}378" "${p}${id}379" "${p}${id}380"; do
            if port_busy "$port"; then
                echo "labs/check.sh: 127.0.0.1:$port is already in use (another labs/check.sh? set LABS_PORT_PREFIX)" >&2
                return 1
            fi
        done
    done
    for id in 1 2 3; do
        if [ "$target" == metcd ]; then
            "$bin" --id "$id" --engine memory --data-dir "$dir/n$id" \
                --listen-client "127.0.0.1:${p}${id}378" --listen-peer "127.0.0.1:${p}${id}380" \
                --listen-grpc "127.0.0.1:${p}${id}379" \
                --initial-cluster "1=127.0.0.1:${p}1380,2=127.0.0.1:${p}2380,3=127.0.0.1:${p}3380" \
                --initial-cluster-clients "1=127.0.0.1:${p}1378,2=127.0.0.1:${p}2378,3=127.0.0.1:${p}3378" \
                --initial-cluster-grpc "1=127.0.0.1:${p}1379,2=127.0.0.1:${p}2379,3=127.0.0.1:${p}3379" \
                --initial-cluster-token "labs-$$" >"$dir/n$id.log" 2>&1 &
        else
            etcd --name "n$id" --data-dir "$dir/n$id" \
                --listen-client-urls "http://127.0.0.1:${p}${id}379" \
                --advertise-client-urls "http://127.0.0.1:${p}${id}379" \
                --listen-peer-urls "http://127.0.0.1:${p}${id}380" \
                --initial-advertise-peer-urls "http://127.0.0.1:${p}${id}380" \
                --initial-cluster "n1=http://127.0.0.1:${p}1380,n2=http://127.0.0.1:${p}2380,n3=http://127.0.0.1:${p}3380" \
                --initial-cluster-token "labs-$$" --initial-cluster-state new >"$dir/n$id.log" 2>&1 &
        fi
        pids+=($!)
        echo $! >"$dir/n$id.pid"
    done
    # What the labs that pause members or read /metrics need (labs/lib.sh).
    export CLUSTER_PIDS="$dir"
    if [ "$target" == metcd ]; then
        export METRICS_ENDPOINTS="127.0.0.1:${p}1378,127.0.0.1:${p}2378,127.0.0.1:${p}3378"
    else
        export METRICS_ENDPOINTS="$ENDPOINTS"
    fi
    for _ in $(seq 100); do
        if etcdctl --endpoints="$ENDPOINTS" --dial-timeout=1s --command-timeout=2s \
            put /labs-check/ready yes >/dev/null 2>&1 &&
            etcdctl --endpoints="$ENDPOINTS" --dial-timeout=1s --command-timeout=2s \
                del /labs-check/ready >/dev/null 2>&1; then
            # A quorum answers; every member must be running too (one that
            # could not bind its ports has exited, and a lab would then fail
            # for a reason that has nothing to do with it).
            local id=0 pid
            for pid in "${pids[@]}"; do
                id=$((id + 1))
                if ! kill -0 "$pid" 2>/dev/null; then
                    echo "labs/check.sh: member $id of the $target cluster exited: $(tail -n 1 "$dir/n$id.log")" >&2
                    echo "  (is 'just cluster' or another labs/check.sh running? set LABS_PORT_PREFIX=1..5 to move the ports)" >&2
                    return 1
                fi
            done
            return 0
        fi
        sleep 0.2
    done
    echo "labs/check.sh: the $target cluster in $dir did not start; its logs:" >&2
    tail -n 20 "$dir"/n*.log >&2
    return 1
}

passed=0
failed=0
for lab in "${labs[@]}"; do
    dir="$LABS_DIR/$lab"
    # A lab that needs no cluster (the engine lab) proves its grader itself.
    if [ -f "$dir/check.sh" ]; then
        if [ "$target" == etcd ]; then
            echo "skip  $lab (no cluster involved)"
        elif bash "$dir/check.sh"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
        continue
    fi
    if [ ! -f "$dir/grade.sh" ] || [ ! -f "$dir/solution.sh" ]; then
        echo "FAIL  $lab: needs grade.sh and solution.sh"
        failed=$((failed + 1))
        continue
    fi
    start_cluster "$work/$lab" || { failed=$((failed + 1)); stop_cluster; continue; }
    problems=()
    if timeout 120 bash "$dir/grade.sh" >"$work/$lab/untouched.out" 2>&1; then
        problems+=("grade.sh passed on an untouched cluster: it cannot fail")
    fi
    if ! timeout 300 bash "$dir/solution.sh" >"$work/$lab/solution.out" 2>&1; then
        problems+=("solution.sh failed: $(tail -n 3 "$work/$lab/solution.out" | tr '\n' ' ')")
    elif ! timeout 120 bash "$dir/grade.sh" >"$work/$lab/solved.out" 2>&1; then
        problems+=("grade.sh failed after solution.sh: $(grep FAIL "$work/$lab/solved.out" | head -n 3 | tr '\n' ' ')")
    elif ! timeout 300 bash "$dir/solution.sh" >"$work/$lab/again.out" 2>&1; then
        problems+=("solution.sh failed when run a second time: $(tail -n 3 "$work/$lab/again.out" | tr '\n' ' ')")
    elif ! timeout 120 bash "$dir/grade.sh" >"$work/$lab/solved-again.out" 2>&1; then
        problems+=("grade.sh failed after a second solution.sh: $(grep FAIL "$work/$lab/solved-again.out" | head -n 3 | tr '\n' ' ')")
    fi
    stop_cluster
    if [ ${#problems[@]} -eq 0 ]; then
        passed=$((passed + 1))
        echo "ok    $lab ($target)"
    else
        failed=$((failed + 1))
        echo "FAIL  $lab ($target)"
        for p in "${problems[@]}"; do echo "        $p"; done
    fi
done
echo "labs: $passed passed, $failed failed ($target)"
[ "$failed" -eq 0 ]
