#!/usr/bin/env bash
# A CPU profile of a 3-node metcd (redb) under 256-client gRPC puts.
set -u
T=/root/.cache/metcd/target/release
D=${PROFILE_DIR:-/tmp/prof}; rm -rf $D; mkdir -p $D
peers="1=127.0.0.1:21480,2=127.0.0.1:22480,3=127.0.0.1:23480"
clients="1=127.0.0.1:21478,2=127.0.0.1:22478,3=127.0.0.1:23478"
grpcs="1=127.0.0.1:21479,2=127.0.0.1:22479,3=127.0.0.1:23479"
pids=()
for id in 1 2 3; do
  $T/metcd --id $id --engine redb --data-dir $D/n$id --listen-client 127.0.0.1:2${id}478 \
    --listen-peer 127.0.0.1:2${id}480 --listen-grpc 127.0.0.1:2${id}479 \
    --initial-cluster $peers --initial-cluster-clients $clients --initial-cluster-grpc $grpcs \
    --initial-cluster-token prof > $D/n$id.log 2>&1 &
  pids+=($!)
done
trap 'kill ${pids[@]} 2>/dev/null; wait' EXIT
for i in $(seq 50); do etcdctl --endpoints=127.0.0.1:21479 put /ready x >/dev/null 2>&1 && break; sleep 0.2; done
leader=$(etcdctl --endpoints=127.0.0.1:21479,127.0.0.1:22479,127.0.0.1:23479 endpoint status -w json | python3 -c 'import json,sys; s=json.load(sys.stdin); l=s[0]["Status"]["leader"]; print([i for i,x in enumerate(s) if x["Status"]["header"]["member_id"]==l][0])')
echo "leader index $leader (pids ${pids[*]})"
lp=${pids[$leader]}; fp=${pids[$(( (leader+1)%3 ))]}
( sleep 12; perf record -F 499 -g -p $lp -o $D/leader.data -- sleep 10 >/dev/null 2>&1 ) &
( sleep 12; perf record -F 499 -g -p $fp -o $D/follower.data -- sleep 10 >/dev/null 2>&1 ) &
timeout 150 $T/workbench run cluster-put-64 --target etcd-v3 --endpoints 127.0.0.1:21479,127.0.0.1:22479,127.0.0.1:23479 \
  --metrics-endpoints 127.0.0.1:21478,127.0.0.1:22478,127.0.0.1:23478 --name metcd-redb \
  --threads 256 --records 10000 --duration 25 --warmup 2 --out $D/out 2>&1 | tail -5
wait
