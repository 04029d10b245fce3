//! `metcd`: one node of a metcd cluster.
//!
//! ```text
//! metcd --id 1 --listen-client 127.0.0.1:13379 --listen-peer 127.0.0.1:13380 \
//!       --initial-cluster 1=127.0.0.1:13380,2=127.0.0.1:23380,3=127.0.0.1:33380 \
//!       --initial-cluster-clients 1=127.0.0.1:13379,2=127.0.0.1:23379,3=127.0.0.1:33379 \
//!       --data-dir data/cluster/n1 --engine redb
//! ```
//!
//! A node added with `metcdctl member add` starts with `--join <endpoint of
//! a member>` instead of `--initial-cluster`: it learns the members and the
//! cluster id from that endpoint and its state from the leader. A node with
//! an empty data directory and neither flag refuses to start; a node removed
//! from its cluster exits with status 3 (`REMOVED_EXIT_STATUS`).
//!
//! The process exits 0 only when it was interrupted (Ctrl-C), and 3 when it
//! was removed from the cluster. When the Raft thread fails (a disk error, corruption, a
//! panic, caught and reported with its message) it logs why and exits 1, so
//! that a supervisor restarts it or raises the alarm.
//!
//! `METCD_TEST_PANIC_AT_INDEX=<index>` is for tests only: read once at
//! start, it makes the Raft thread panic when it applies that entry, to
//! check the path above. Never set it in production.
//!
//! The process allocates with mimalloc, not glibc's malloc: under 256
//! concurrent clients glibc's malloc and free took 16-18% of a member's CPU
//! (`results/vs-etcd/profile`), and with mimalloc a put costs the three
//! members 0.030 ms of CPU less (`results/put-path`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use cluster::api::http::{DEFAULT_MAX_QUEUED_REQUESTS, serve};
use cluster::api::{ApiConfig, router};
use cluster::raft::identity::{REMOVED_EXIT_STATUS, RemovedFromCluster};
use cluster::raft::{NodeConfig, NodeExit};
use cluster::{Client, Member, parse_id_list};
use engines::{EngineKind, EngineOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A metcd node: a Raft-replicated key-value store over a choice of engines"
)]
struct Args {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    id: u64,
    /// Where the WAL, snapshots and engine files live [default: data/node-ID].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Storage engine: memory, redb, sled, rocksdb, fjall or bitcask.
    #[arg(long, default_value = "memory")]
    engine: String,
    /// Client HTTP address (any; a warning if not loopback: no TLS yet).
    #[arg(long, default_value = "127.0.0.1:3379")]
    listen_client: SocketAddr,
    /// etcd v3 gRPC address (etcdctl, etcd client libraries); none if not
    /// given. Any address; a warning if not loopback: no TLS yet.
    #[arg(long)]
    listen_grpc: Option<SocketAddr>,
    /// Raft peer address (any; a warning if not loopback: no TLS yet).
    #[arg(long, default_value = "127.0.0.1:3380")]
    listen_peer: SocketAddr,
    /// Bootstrap a new cluster of these members (peer addresses):
    /// 1=127.0.0.1:13380,2=... A one-node cluster is asked for explicitly:
    /// --initial-cluster 1=127.0.0.1:3380. Only read when the data
    /// directory is empty; needed then unless --join is given.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Client addresses of the initial cluster: 1=127.0.0.1:13379,2=...
    /// [default: this node's --listen-client only].
    #[arg(long)]
    initial_cluster_clients: Option<String>,
    /// gRPC addresses of the initial cluster: 1=127.0.0.1:12379,2=...
    /// [default: this node's --listen-grpc only]. A member without one
    /// cannot take writes forwarded by the others' gRPC APIs.
    #[arg(long)]
    initial_cluster_grpc: Option<String>,
    /// Part of the new cluster's id, with the members' ids and peer
    /// addresses: give every cluster its own (the same on all its initial
    /// members), so that two clusters are never taken for one.
    #[arg(long, default_value = "metcd-cluster")]
    initial_cluster_token: String,
    /// Join an existing cluster through these client endpoints (comma
    /// separated); add the node first with `metcdctl member add`.
    #[arg(long)]
    join: Option<String>,
    /// Take a snapshot (and compact the log) after this many applied entries.
    #[arg(long, default_value_t = cluster::raft::DEFAULT_SNAPSHOT_EVERY)]
    snapshot_every: u64,
    /// Entries kept behind a snapshot for followers to catch up from.
    #[arg(long, default_value_t = cluster::raft::DEFAULT_KEEP_ENTRIES)]
    keep_entries: u64,
    /// Raft tick in milliseconds (heartbeat = 1 tick).
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
    /// Election timeout in ticks (randomised between this and twice this).
    #[arg(long, default_value_t = 10)]
    election_ticks: usize,
    /// How long a write or linearizable read waits before a 503.
    #[arg(long, default_value_t = 5_000)]
    request_timeout_ms: u64,
    /// How long a client may take to send a request body before a 408.
    #[arg(long, default_value_t = 10_000)]
    body_timeout_ms: u64,
    /// How long a client may take to send a request's headers before the
    /// connection is closed (against slow-header attacks).
    #[arg(long, default_value_t = 10_000)]
    header_read_timeout_ms: u64,
    /// Client requests (writes, linearizable reads, membership changes)
    /// allowed to wait for the Raft thread; more are answered 503 with
    /// Retry-After (outcome not-applied).
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUED_REQUESTS)]
    max_queued_requests: usize,
    /// How often a watcher created with progress_notify that received no
    /// event meanwhile is sent a progress notification (etcd's default:
    /// 10 minutes).
    #[arg(long, default_value_t = 600_000)]
    watch_progress_notify_interval_ms: u64,
    /// Engine cache in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mb: u64,
    /// Break one safety rule on purpose, for the book's "break it" labs
    /// (stale-reads, early-reads, skip-fsync, skip-flush). Never for data.
    #[arg(long)]
    lab_break: Option<cluster::raft::lab_break::LabBreak>,
}

/// Any address may be listened on, so that a cluster can span machines.
/// metcd has no TLS and no authentication yet: whoever reaches a
/// non-loopback address can read and write every key and join the Raft
/// group, so such an address is logged as a warning (until TLS comes).
fn listen_address(address: SocketAddr, flag: &str) -> SocketAddr {
    if !address.ip().is_loopback() {
        tracing::warn!(
            "{flag} {address} is not a loopback address: metcd has no TLS or authentication yet, \
             so anyone who can reach it can read, write and join; use it only on a trusted network"
        );
    }
    address
}

/// The members of `--initial-cluster`; none without it (a restart reads
/// them from its data, and an empty data directory is then refused).
fn initial_members(args: &Args) -> anyhow::Result<Vec<Member>> {
    let Some(initial_cluster) = args.initial_cluster.as_deref() else {
        return Ok(Vec::new());
    };
    let default_clients = format!("{}={}", args.id, args.listen_client);
    let peers =
        parse_id_list(initial_cluster).map_err(|e| anyhow::anyhow!("--initial-cluster: {e}"))?;
    let clients = parse_id_list(
        args.initial_cluster_clients
            .as_deref()
            .unwrap_or(&default_clients),
    )
    .map_err(|e| anyhow::anyhow!("--initial-cluster-clients: {e}"))?;
    let grpcs = match (&args.initial_cluster_grpc, &args.listen_grpc) {
        (Some(list), _) => {
            parse_id_list(list).map_err(|e| anyhow::anyhow!("--initial-cluster-grpc: {e}"))?
        }
        (None, Some(own)) => vec![(args.id, own.to_string())],
        (None, None) => Vec::new(),
    };
    let mut members = Vec::new();
    for (id, peer) in peers {
        let Some((_, client)) = clients.iter().find(|(c, _)| *c == id) else {
            bail!(
                "node {id} is in --initial-cluster but has no address in --initial-cluster-clients"
            );
        };
        members.push(Member {
            id,
            peer,
            client: client.clone(),
            grpc: grpcs
                .iter()
                .find(|(g, _)| *g == id)
                .map(|(_, address)| address.clone()),
            learner: false,
        });
    }
    Ok(members)
}

async fn members_from(join: &str, id: u64) -> anyhow::Result<Vec<Member>> {
    let client = Client::new(&[join])?.with_timeout(Duration::from_secs(3));
    let mut last = None;
    for _ in 0..10 {
        match client.members().await {
            Ok(members) => {
                if !members.iter().any(|m| m.id == id) {
                    bail!(
                        "node {id} is not a member of the cluster at {join}; add it first: \
                         metcdctl --endpoints {join} member add {id} --peer <host:port> --client <host:port>"
                    );
                }
                return Ok(members);
            }
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(anyhow::anyhow!(
        "could not read the members from {join}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let engine: EngineKind = args.engine.parse()?;
    let listen_client = listen_address(args.listen_client, "--listen-client");
    let listen_peer = listen_address(args.listen_peer, "--listen-peer");
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("data/node-{}", args.id)));
    let (members, join, cluster_id) = match &args.join {
        Some(join) => {
            let has_wal = data_dir.join("wal").exists();
            let learned = match members_from(join, args.id).await {
                Ok(members) => cluster::api::identity::cluster_id_from(join)
                    .await
                    .map(|id| (members, id))
                    .map_err(|e| {
                        anyhow::anyhow!("could not learn the cluster id from {join}: {e}")
                    }),
                Err(err) => Err(err),
            };
            match learned {
                Ok((members, id)) => (members, true, Some(id)),
                Err(err) if has_wal => {
                    tracing::warn!(%err, "could not refresh the members; restarting from the local state");
                    (Vec::new(), true, None)
                }
                Err(err) => return Err(err),
            }
        }
        None => (initial_members(&args)?, false, None),
    };
    let peer_listener = tokio::net::TcpListener::bind(listen_peer)
        .await
        .with_context(|| format!("binding the peer address {listen_peer}"))?;
    let client_listener = tokio::net::TcpListener::bind(listen_client)
        .await
        .with_context(|| format!("binding the client address {listen_client}"))?;
    let grpc_listener = match args.listen_grpc {
        Some(address) => {
            let address = listen_address(address, "--listen-grpc");
            Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding the gRPC address {address}"))?,
            )
        }
        None => None,
    };
    let config = NodeConfig {
        id: args.id,
        data_dir: data_dir.clone(),
        engine,
        engine_options: EngineOptions {
            cache_bytes: args.cache_mb << 20,
            ..EngineOptions::default()
        },
        snapshot_every: args.snapshot_every,
        keep_entries: args.keep_entries,
        tick: Duration::from_millis(args.tick_ms.max(1)),
        election_ticks: args.election_ticks.max(2),
        members,
        join,
        cluster_token: args.initial_cluster_token.clone(),
        cluster_id,
        lab_break: args.lab_break,
        publish: Some(cluster::raft::publish::Publication {
            client: listen_client.to_string(),
            grpc: args.listen_grpc.map(|a| a.to_string()),
        }),
    };
    let node = cluster::raft::start(config, tokio::runtime::Handle::current(), peer_listener)
        .with_context(|| format!("starting node {} in {}", args.id, data_dir.display()))?;
    let identity = node.identity;
    tracing::info!(
        id = args.id,
        engine = %engine,
        client = %listen_client,
        grpc = ?args.listen_grpc,
        peer = %listen_peer,
        data_dir = %data_dir.display(),
        "metcd node started"
    );
    if args.max_queued_requests == 0 {
        bail!("--max-queued-requests must be 1 or more");
    }
    let api = ApiConfig {
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms.max(1)),
        max_queued_requests: args.max_queued_requests,
        watch_progress_interval: Duration::from_millis(
            args.watch_progress_notify_interval_ms.max(1),
        ),
    };
    let mut exit = node.exit.clone();
    let outcome = node.exit.clone();
    let (grpc_stop_tx, mut grpc_stop_rx) = tokio::sync::watch::channel(false);
    if let Some(listener) = grpc_listener {
        let node = node.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = grpc_stop_rx.wait_for(|stop| *stop).await;
            };
            if let Err(err) = cluster::api::grpc::serve(listener, node, api, shutdown).await {
                tracing::error!(%err, "the gRPC server failed");
            }
        });
    }
    let app = router(node, api);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<bool>();
    let stopped = async move {
        // `true` when interrupted; `false` when the node stopped (or its
        // thread vanished without a word, which is a failure too).
        let interrupted = tokio::select! {
            _ = exit.wait_for(|e| e.is_some()) => false,
            _ = tokio::signal::ctrl_c() => true,
        };
        let _ = grpc_stop_tx.send(true);
        let _ = stop_tx.send(interrupted);
    };
    serve(client_listener, app, api.header_read_timeout, stopped).await;
    let interrupted = stop_rx.await.unwrap_or(false);
    let outcome = outcome.borrow().clone();
    match outcome {
        Some(NodeExit::Failed(message)) => {
            tracing::error!(%message, "the raft node failed; exiting with an error");
            bail!("the raft node failed: {message}")
        }
        Some(NodeExit::Removed) => {
            return Err(RemovedFromCluster {
                member: args.id,
                cluster: identity.cluster,
            }
            .into());
        }
        None if interrupted => tracing::info!("interrupted; exiting"),
        None => {
            tracing::error!("the raft thread stopped without reporting why; exiting with an error");
            bail!("the raft thread stopped without reporting why")
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) if err.is::<RemovedFromCluster>() => {
            eprintln!("metcd: {err:#}");
            std::process::ExitCode::from(REMOVED_EXIT_STATUS)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}
