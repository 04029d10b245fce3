#!/usr/bin/env bash
# Builds metcd and starts a 3-node local cluster on loopback:
#   HTTP clients 127.0.0.1:13379, 23379, 33379; etcd gRPC (etcdctl) 127.0.0.1:12379, 22379, 32379;
#   peers 127.0.0.1:13380, 23380, 33380.
# Usage: cluster/scripts/local-cluster.sh [engine [metcd flags...]] (engine: memory, redb, sled, rocksdb,
# fjall, bitcask; default memory); the flags go to every node, e.g. --snapshot-every 10000.
# Data lives under ${METCD_DATA:-./data/cluster}/<engine>/n<id>; a restart reuses it (and
# the cluster's token in <engine>/cluster-token; delete the directory for a new cluster).
# Each node's log lines are prefixed with its name; its pid is in <data>/n<id>.pid;
# Ctrl-C stops all three.
set -euo pipefail

engine="${1:-memory}"
shift || true
data="${METCD_DATA:-./data/cluster}/${engine}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/metcd/target}"

cargo build --release --manifest-path "$(dirname "$0")/../Cargo.toml" --bins
bin="$CARGO_TARGET_DIR/release/metcd"

peers="1=127.0.0.1:13380,2=127.0.0.1:23380,3=127.0.0.1:33380"
# This cluster's own --initial-cluster-token (part of its cluster id), made
# once and kept next to its data, so a rebuilt cluster is a new cluster.
mkdir -p "$data"
if [ ! -s "$data/cluster-token" ]; then
    echo "metcd-$engine-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')" > "$data/cluster-token"
fi
token="$(cat "$data/cluster-token")"
clients="1=127.0.0.1:13379,2=127.0.0.1:23379,3=127.0.0.1:33379"
grpcs="1=127.0.0.1:12379,2=127.0.0.1:22379,3=127.0.0.1:32379"

pids=()
stop() {
    trap - INT TERM EXIT
    echo "stopping the cluster"
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

for id in 1 2 3; do
    mkdir -p "$data/n$id"
    # Process substitution, so that $! is metcd itself (not sed) and the
    # trap can stop it.
    "$bin" --id "$id" --engine "$engine" --data-dir "$data/n$id" \
        --listen-client "127.0.0.1:${id}3379" --listen-peer "127.0.0.1:${id}3380" \
        --listen-grpc "127.0.0.1:${id}2379" \
        --initial-cluster "$peers" --initial-cluster-clients "$clients" \
        --initial-cluster-grpc "$grpcs" \
        --initial-cluster-token "$token" "$@" \
        > >(sed -u "s/^/[n$id] /") 2>&1 &
    pids+=($!)
    echo $! > "$data/n$id.pid"
done

echo "metcd: 3 nodes ($engine); HTTP on 127.0.0.1:13379, 23379, 33379; etcdctl --endpoints 127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379; data in $data; Ctrl-C stops them"
wait
