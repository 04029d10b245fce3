#!/usr/bin/env bash
# The put path's CPU, one change at a time: 3-node metcd on redb under 256-client gRPC puts
# (etcd-client, 256-byte values over 100,000 keys, 2 s warm-up + 20 s), each configuration
# ROUNDS times, alternating. Member CPU is read from /proc/<pid>/stat of the three members,
# client CPU is the harness's own (getrusage through /usr/bin/time); both cover warm-up and
# run and are divided by the writes acknowledged over the same span (the harness's count).
# Usage: ablation.sh OUT label=binary[:flags] ...   (binaries built beforehand)
set -u
OUT=$1; shift
WB=${WB:-/root/.cache/metcd/target/release/workbench}
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
peers="1=127.0.0.1:21580,2=127.0.0.1:22580,3=127.0.0.1:23580"
clients="1=127.0.0.1:21578,2=127.0.0.1:22578,3=127.0.0.1:23578"
grpcs="1=127.0.0.1:21579,2=127.0.0.1:22579,3=127.0.0.1:23579"
echo "| configuration | round | puts/s | p50 ms | p99 ms | member CPU ms/put | client CPU ms/put |" > "$OUT/summary.md"
echo "|---|---:|---:|---:|---:|---:|---:|" >> "$OUT/summary.md"
for round in $(seq "$ROUNDS"); do
  for spec in "$@"; do
    label=${spec%%=*}; rest=${spec#*=}; bin=${rest%%:*}; flags=""
    [[ $rest == *:* ]] && flags=${rest#*:}
    D=/tmp/ablation/$label-r$round; rm -rf "$D"; mkdir -p "$D"
    pids=()
    for id in 1 2 3; do
      # shellcheck disable=SC2086
      "$bin" --id $id --engine redb --data-dir "$D/n$id" --listen-client 127.0.0.1:2${id}578 \
        --listen-peer 127.0.0.1:2${id}580 --listen-grpc 127.0.0.1:2${id}579 \
        --initial-cluster $peers --initial-cluster-clients $clients --initial-cluster-grpc $grpcs \
        --initial-cluster-token ablation $flags > "$D/n$id.log" 2>&1 &
      pids+=($!)
    done
    for _ in $(seq 50); do etcdctl --endpoints=127.0.0.1:21579 put /ready x >/dev/null 2>&1 && break; sleep 0.2; done
    cpu() { local t=0; for p in "${pids[@]}"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
    c0=$(cpu)
    /usr/bin/time -f "%U %S" -o "$D/client-cpu" timeout 150 "$WB" run cluster-put-64 --target etcd-v3 \
      --endpoints 127.0.0.1:21579,127.0.0.1:22579,127.0.0.1:23579 \
      --metrics-endpoints 127.0.0.1:21578,127.0.0.1:22578,127.0.0.1:23578 --name "$label" \
      --threads 256 --records 100000 --duration 20 --warmup 2 --out "$D/out" > "$D/workbench.log" 2>&1
    c1=$(cpu)
    kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null
    python3 - "$D" "$label" "$round" $((c1 - c0)) "$(getconf CLK_TCK)" >> "$OUT/summary.md" <<'PY'
import json, sys, glob
d, label, rnd, ticks, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
doc = json.load(open(glob.glob(f"{d}/out/cluster-put-64/*.json")[0]))
acked = doc["replication"]["acknowledged_writes"]
user, sys_ = map(float, open(f"{d}/client-cpu").read().split()[-2:])
o = doc["overall"]
print(f"| {label} | {rnd} | {doc['run']['throughput_ops_per_sec']:.0f} | {o['p50_ns']/1e6:.2f} | {o['p99_ns']/1e6:.2f} "
      f"| {ticks / hz * 1000 / acked:.3f} | {(user + sys_) * 1000 / acked:.3f} |")
PY
    cp "$D/out/cluster-put-64/"*.json "$OUT/$label-r$round.json"
    tail -1 "$OUT/summary.md"
  done
done
cp "$D/out/machine.json" "$OUT/machine.json" 2>/dev/null
