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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use cluster::api::{ApiConfig, router};
use cluster::raft::identity::{REMOVED_EXIT_STATUS, RemovedFromCluster};
use cluster::raft::{NodeConfig, NodeExit};
use cluster::{Client, Member, parse_id_list};
use engines::{EngineKind, EngineOptions};

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
    /// Client HTTP address (loopback only).
    #[arg(long, default_value = "127.0.0.1:3379")]
    listen_client: SocketAddr,
    /// Raft peer address (loopback only).
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
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Entries kept behind a snapshot for followers to catch up from.
    #[arg(long, default_value_t = 5_000)]
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
    /// Engine cache in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mb: u64,
}

fn loopback(address: SocketAddr, flag: &str) -> anyhow::Result<SocketAddr> {
    if !address.ip().is_loopback() {
        bail!("{flag} {address}: metcd listens on loopback addresses only (e.g. 127.0.0.1:3379)");
    }
    Ok(address)
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
    let listen_client = loopback(args.listen_client, "--listen-client")?;
    let listen_peer = loopback(args.listen_peer, "--listen-peer")?;
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
    };
    let node = cluster::raft::start(config, tokio::runtime::Handle::current(), peer_listener)
        .with_context(|| format!("starting node {} in {}", args.id, data_dir.display()))?;
    let identity = node.identity;
    tracing::info!(
        id = args.id,
        engine = %engine,
        client = %listen_client,
        peer = %listen_peer,
        data_dir = %data_dir.display(),
        "metcd node started"
    );
    let api = ApiConfig {
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        body_timeout: Duration::from_millis(args.body_timeout_ms),
    };
    let mut exit = node.exit.clone();
    let outcome = node.exit.clone();
    let app = router(node, api);
    let stopped = async move {
        tokio::select! {
            _ = exit.wait_for(|e| e.is_some()) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let server = axum::serve(client_listener, app).with_graceful_shutdown(stopped);
    server.await.context("serving the client API")?;
    let outcome = outcome.borrow().clone();
    match outcome {
        Some(NodeExit::Failed(message)) => bail!("the raft node failed: {message}"),
        Some(NodeExit::Removed) => {
            return Err(RemovedFromCluster {
                member: args.id,
                cluster: identity.cluster,
            }
            .into());
        }
        None => tracing::info!("interrupted; exiting"),
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
