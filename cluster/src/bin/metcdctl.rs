//! `metcdctl`: the command-line client of a metcd cluster.
//!
//! ```text
//! metcdctl --endpoints 127.0.0.1:13379,127.0.0.1:23379 put hello world
//! metcdctl get hello
//! metcdctl member add-learner 4 --peer 127.0.0.1:43380 --client 127.0.0.1:43379
//! metcdctl status
//! metcdctl snapshot restore backup.db --data-dir data/new-1 --engine redb
//! ```
//!
//! Backups are taken with `etcdctl snapshot save` against a member's gRPC
//! address; `snapshot restore` builds one new member's data directory from
//! such a file (see `cluster::backup`), without contacting any endpoint.
//!
//! Requests go to the endpoints in turn and follow redirects to the leader
//! (see `cluster::client`). A write is retried only when it certainly was
//! not applied; when its outcome is unknown (a timeout, a leader change
//! before the answer) metcdctl says so and exits with status 2, so that a
//! script can read the key before deciding to write again. Other errors
//! exit with status 1. Benchmarks are not here: `workbench run cluster
//! --target cluster` measures the cluster with the one harness and its
//! machine calibration (see `cluster/README.md`).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cluster::Client;

#[derive(Parser, Debug)]
#[command(version, about = "Client for a metcd cluster")]
struct Args {
    /// Client endpoints of the cluster, comma separated.
    #[arg(long, global = true, default_value = "127.0.0.1:3379")]
    endpoints: String,
    /// Per-request deadline in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store VALUE under KEY (returns once committed and applied).
    Put { key: String, value: String },
    /// Print the value of KEY (linearizable unless --serializable).
    Get {
        key: String,
        #[arg(long)]
        serializable: bool,
    },
    /// Remove KEY.
    Del { key: String },
    /// Status of every endpoint.
    Status,
    /// Membership.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Backups (saved with `etcdctl snapshot save`).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Build the data directory of one member of a NEW cluster from a
    /// backup: run it once per member (same file, a directory each), then
    /// start the members with --initial-cluster as a new cluster.
    Restore {
        /// The backup file (from `etcdctl snapshot save`).
        file: std::path::PathBuf,
        /// The new member's data directory (must not exist or be empty).
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// The engine the new member will run: redb, sled, rocksdb, fjall
        /// or bitcask (the memory engine keeps nothing on disk).
        #[arg(long)]
        engine: String,
    },
}

#[derive(Subcommand, Debug)]
enum MemberCommand {
    /// List the members.
    List,
    /// Add a voting member.
    Add {
        id: u64,
        #[arg(long)]
        peer: String,
        #[arg(long)]
        client: String,
        /// The member's etcd gRPC address (its --listen-grpc), if any.
        #[arg(long)]
        grpc: Option<String>,
    },
    /// Add a learner (non-voting member that receives the log).
    AddLearner {
        id: u64,
        #[arg(long)]
        peer: String,
        #[arg(long)]
        client: String,
        /// The member's etcd gRPC address (its --listen-grpc), if any.
        #[arg(long)]
        grpc: Option<String>,
    },
    /// Promote a learner to a voter.
    Promote { id: u64 },
    /// Remove a member (it shuts itself down).
    Remove { id: u64 },
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Command::Snapshot {
        command:
            SnapshotCommand::Restore {
                file,
                data_dir,
                engine,
            },
    } = &args.command
    {
        let kind: engines::EngineKind = engine.parse()?;
        if kind == engines::EngineKind::Memory {
            anyhow::bail!(
                "the memory engine keeps nothing on disk, so a restored directory would start \
                 empty; restore for redb, sled, rocksdb, fjall or bitcask"
            );
        }
        let restored = cluster::backup::restore(file, data_dir, kind)?;
        println!(
            "restored {} pairs (the history at raft index {} of the old cluster) into {}; \
             start this member with --engine {engine} --data-dir {} and --initial-cluster \
             (a new cluster)",
            restored.pairs,
            restored.index,
            data_dir.display(),
            data_dir.display()
        );
        return Ok(());
    }
    let client = Client::new(&[args.endpoints.as_str()])?
        .with_timeout(Duration::from_millis(args.timeout_ms));
    match args.command {
        Command::Put { key, value } => {
            client.put(key.as_bytes(), value.as_bytes()).await?;
            println!("OK");
        }
        Command::Get { key, serializable } => {
            let value = if serializable {
                client.get_serializable(key.as_bytes()).await?
            } else {
                client.get(key.as_bytes()).await?
            };
            match value {
                Some(value) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&value)?;
                    out.write_all(b"\n")?;
                }
                None => anyhow::bail!("key not found: {key}"),
            }
        }
        Command::Del { key } => {
            client.delete(key.as_bytes()).await?;
            println!("OK");
        }
        Command::Status => {
            println!(
                "{:<24} {:>3} {:<10} {:>6} {:>5} {:>8} {:>8} {:>8}  members",
                "endpoint", "id", "role", "leader", "term", "commit", "applied", "fsyncs"
            );
            for endpoint in client.endpoints() {
                match client.status_of(&endpoint).await {
                    Ok(s) => println!(
                        "{:<24} {:>3} {:<10} {:>6} {:>5} {:>8} {:>8} {:>8}  voters {:?} learners {:?}",
                        endpoint,
                        s.id,
                        s.role,
                        s.leader,
                        s.term,
                        s.commit_index,
                        s.applied_index,
                        s.wal_fsyncs,
                        s.voters,
                        s.learners
                    ),
                    Err(err) => println!("{endpoint:<24} unreachable: {err}"),
                }
            }
        }
        Command::Member { command } => match command {
            MemberCommand::List => {
                let status = client.status().await?;
                println!("{:>3}  {:<8} {:<22} {:<22}", "id", "role", "peer", "client");
                for m in status.members {
                    let role = if status.learners.contains(&m.id) {
                        "learner"
                    } else {
                        "voter"
                    };
                    let leader = if m.id == status.leader {
                        " (leader)"
                    } else {
                        ""
                    };
                    println!(
                        "{:>3}  {:<8} {:<22} {:<22}{leader}",
                        m.id, role, m.peer, m.client
                    );
                }
            }
            MemberCommand::Add {
                id,
                peer,
                client: c,
                grpc,
            } => {
                client
                    .member_add(id, &peer, &c, grpc.as_deref(), false)
                    .await?;
                println!(
                    "member {id} added as a voter; start it with --join {}",
                    args.endpoints
                );
            }
            MemberCommand::AddLearner {
                id,
                peer,
                client: c,
                grpc,
            } => {
                client
                    .member_add(id, &peer, &c, grpc.as_deref(), true)
                    .await?;
                println!(
                    "member {id} added as a learner; start it with --join {}",
                    args.endpoints
                );
            }
            MemberCommand::Promote { id } => {
                client.member_promote(id).await?;
                println!("member {id} promoted to voter");
            }
            MemberCommand::Remove { id } => {
                client.member_remove(id).await?;
                println!("member {id} removed");
            }
        },
        // Handled above, before any endpoint is contacted.
        Command::Snapshot { .. } => {}
    }
    Ok(())
}

/// Exit status when a write's outcome is unknown.
const EXIT_UNKNOWN: u8 = 2;

fn main() -> std::process::ExitCode {
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let unknown = err
                .downcast_ref::<cluster::client::ClientError>()
                .is_some_and(|e| matches!(e, cluster::client::ClientError::Unknown(_)));
            if unknown {
                std::process::ExitCode::from(EXIT_UNKNOWN)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn start() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}
