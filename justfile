# metcd's commands. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# One target directory outside the clone, so RocksDB's C++ is built once per
# machine, not once per checkout.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") / ".cache/metcd/target")

default:
    @just --list

# Install what the build needs on a Debian-like machine (idempotent): clang and libclang for rocksdb's bindings, mdbook for the book, prometheus for the /metrics test, protoc for the gRPC API, etcd 3.4 and etcdctl as the differential tests' reference.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    missing=()
    for pkg in clang libclang-dev; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
    else
        echo "setup: clang and libclang already installed"
    fi
    if dpkg -s prometheus >/dev/null 2>&1; then
        echo "setup: prometheus already installed"
    else
        echo "setup: installing prometheus (cluster/tests/metrics.rs scrapes a cluster with it)"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus
        # Debian enables a system-wide service; the test runs its own on 127.0.0.1.
        if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled prometheus >/dev/null 2>&1; then
            $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
    fi
    # protoc compiles the etcd API's .proto files; etcd-server and etcd-client
    # (etcd 3.4, etcdctl) are the reference peer of the differential tests.
    missing=()
    for pkg in protobuf-compiler etcd-server etcd-client; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "setup: protoc, etcd and etcdctl already installed"
    fi
    # Debian's etcd-server starts a system-wide etcd on 127.0.0.1:2379; the
    # tests start their own, so it is disabled (systemd unit or init script)
    # and an etcd listening on 2379 is ended by its pid. Not the init
    # script's `stop`: without a pid file it stops every /usr/bin/etcd,
    # test clusters included.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now etcd >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/etcd ]; then
        $sudo update-rc.d etcd disable >/dev/null 2>&1 || true
    fi
    for pid in $(ss -Hltnp 'sport = :2379' 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
        if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/bin/etcd ]; then
            echo "setup: stopping the system etcd (pid $pid) on port 2379"
            $sudo kill "$pid"
            for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
        fi
    done
    if command -v mdbook >/dev/null 2>&1; then
        echo "setup: mdbook already installed ($(mdbook --version))"
    else
        echo "setup: installing mdbook"
        cargo install --locked mdbook
    fi
    echo "setup: done; the first build compiles RocksDB's C++ (about 15 minutes on 2 cores) into $CARGO_TARGET_DIR"

# Everything CI checks: formatting, lints, every test (conformance, property, crash, harness, cluster, the short chaos runs and the break-it labs), the book, every Part IV lab's grader.
test:
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -- -D warnings
    cargo test --release --workspace
    just book-check
    just labs-check

# The main job: run workloads on engines (default: read-heavy and write-heavy on all six, a fixed operation count each) into results/<UTC time>/. Examples: just bench ycsb-a redb,bitcask; just bench read-heavy-large (data 4x the memory each engine may cache in; needs a memory cgroup)
bench WORKLOADS="default" ENGINES="all" *ARGS:
    cargo run --release -p workloads --bin workbench -- run {{WORKLOADS}} --engines {{ENGINES}} {{ARGS}}

# Re-run the committed reference run into results/reference/ (run it on a quiet machine; it replaces the directory's results).
bench-reference *ARGS:
    rm -rf results/reference
    cargo run --release -p workloads --bin workbench -- run default --engines all --out results/reference {{ARGS}}

# Redraw the plots and tables of a run from its JSON, e.g. just bench-plot results/reference
bench-plot RUN:
    cargo run --release -p workloads --bin workbench -- plot {{RUN}}

# Measure the harness (no-op target) and the Engine trait's cost against redb's and rocksdb's own APIs, in time and in instructions (valgrind's callgrind; add --no-callgrind without valgrind).
bench-overhead *ARGS:
    cargo run --release -p workloads --bin workbench -- overhead --out results/overhead {{ARGS}}

# What MVCC costs metcd's state machine, per engine: puts, gets and ranges against the plain layout it replaced, and the history's space before and after compaction and defragmentation (run it on a quiet machine; it replaces results/mvcc/).
bench-mvcc *ARGS:
    rm -rf results/mvcc
    cargo run --release -p workloads --bin workbench -- mvcc --out results/mvcc {{ARGS}}

# metcd beside a real etcd (Debian's etcd-server, default settings): fresh 3-member clusters, never at the same time, alternating over rounds, one etcd v3 client; etcd's benchmark cases and YCSB A-F into results/vs-etcd/ (quiet machine). Example: just bench-vs-etcd redb,bitcask --rounds 3
bench-vs-etcd ENGINES="redb" *ARGS:
    cargo build --release -p cluster -p workloads
    rm -rf results/vs-etcd
    cargo run --release -p workloads --bin workbench -- vs-etcd --engines {{ENGINES}} --out results/vs-etcd {{ARGS}}

# Watch fan-out, put-to-event latency and lease keep-alives on a fresh 3-member etcd, then on a fresh 3-node metcd of ENGINE (never both at once), into results/watch/ (run it on a quiet machine).
bench-watch ENGINE="redb" *ARGS:
    cargo build --release -p cluster -p workloads
    rm -rf results/watch
    cargo run --release -p workloads --bin workbench -- watch --spawn etcd --name etcd --out results/watch {{ARGS}}
    cargo run --release -p workloads --bin workbench -- watch --spawn metcd:{{ENGINE}} --name metcd-{{ENGINE}} --out results/watch {{ARGS}}

# The metcd cluster workloads (cluster-put-1, cluster-put-64, cluster-get) on a 3-node cluster the harness starts, into results/cluster/.
bench-cluster ENGINE="redb" *ARGS:
    cargo build --release -p cluster -p workloads
    cargo run --release -p workloads --bin workbench -- run cluster --target cluster --spawn-cluster {{ENGINE}} --out results/cluster {{ARGS}}

# Fault-injection runs on 3-node metcd clusters, checked for linearizability and convergence; report in results/chaos/. Examples: just chaos; just chaos redb --runs 50; just chaos --runs 1000 --fault kill,pause
chaos *ARGS:
    cargo build --release -p cluster -p chaos
    cargo run --release -p chaos --bin chaos -- {{ARGS}}

# List the workload specs and engines.
bench-list:
    cargo run --release -p workloads --bin workbench -- list

# Start a local 3-node metcd cluster (clients on 127.0.0.1:13379, 23379, 33379) on an engine; further arguments go to every node (just cluster redb --snapshot-every 10000); Ctrl-C stops all three.
cluster engine="memory" *ARGS:
    cluster/scripts/local-cluster.sh {{engine}} {{ARGS}}

# Build the book and serve it on http://127.0.0.1:3000 (rebuilds on change; Ctrl-C stops).
book PORT="3000":
    mdbook serve book --hostname 127.0.0.1 --port {{PORT}}

# Grade a lab of the book's Part IV against the running cluster (`just cluster` in another terminal), e.g. just lab locks; ENDPOINTS=127.0.0.1:2379 just lab locks grades against an etcd.
lab NAME:
    @test -f labs/{{NAME}}/grade.sh || { echo "no lab named '{{NAME}}'; the labs are: $(cd labs && ls -d */ | tr -d / | tr '\n' ' ')"; exit 2; }
    bash labs/{{NAME}}/grade.sh

# A "break it" lab: run the fault harness against nodes that break one safety rule on purpose (stale-reads, early-reads, skip-flush, skip-fsync) and compare with the expected outcome, e.g. just lab-break stale-reads
lab-break NAME *ENGINE:
    cargo build --release -p cluster -p chaos
    bash labs/break/run.sh {{NAME}} {{ENGINE}}

# Prove every lab's grader fails on an untouched cluster and passes after its solution, on fresh metcd clusters (add --etcd to run them on etcd 3.4).
labs-check *ARGS:
    cargo build --release -p cluster --bin metcd
    bash labs/check.sh {{ARGS}}

# Check the book: chapters, include anchors, the reference run's plots and tables, a warning-free build.
book-check:
    bash book/check.sh

# Criterion micro-benchmarks of single engine operations (optionally a filter such as `redb/100B`).
bench-micro *FILTER:
    cargo bench -p engines --bench engine_ops -- {{FILTER}}
