//! `metcdctl`: the command-line client of a metcd cluster.
//!
//! ```text
//! metcdctl --endpoints 127.0.0.1:13379,127.0.0.1:23379 put hello world
//! metcdctl get hello
//! metcdctl member add-learner 4 --peer 127.0.0.1:43380 --client 127.0.0.1:43379
//! metcdctl status
//! ```
//!
//! Requests go to the endpoints in turn and follow redirects to the leader
//! (see `cluster::client`).

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
    /// Closed-loop PUT benchmark: latency percentiles, throughput, and WAL
    /// fsyncs per acknowledged write (from every endpoint's /-/status).
    Bench {
        /// Concurrent clients, each with one request in flight.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Total PUTs.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Value size in bytes.
        #[arg(long, default_value_t = 256)]
        value_size: usize,
        /// Distinct keys written (round robin).
        #[arg(long, default_value_t = 1000)]
        keys: usize,
        /// Also measure fdatasync latency of a 4 KiB append in this
        /// directory (put it on the cluster's disk).
        #[arg(long)]
        fsync_dir: Option<std::path::PathBuf>,
        /// Bytes appended before each probe fdatasync (a WAL record of a
        /// 256-byte PUT is about 300 bytes).
        #[arg(long, default_value_t = 4096)]
        fsync_bytes: usize,
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
    },
    /// Add a learner (non-voting member that receives the log).
    AddLearner {
        id: u64,
        #[arg(long)]
        peer: String,
        #[arg(long)]
        client: String,
    },
    /// Promote a learner to a voter.
    Promote { id: u64 },
    /// Remove a member (it shuts itself down).
    Remove { id: u64 },
}

async fn run(args: Args) -> anyhow::Result<()> {
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
        Command::Bench {
            clients: concurrency,
            requests,
            value_size,
            keys,
            fsync_dir,
            fsync_bytes,
        } => {
            let probe = fsync_dir.map(|dir| (dir, fsync_bytes.max(1)));
            bench(
                &client,
                concurrency.max(1),
                requests.max(1),
                value_size,
                keys.max(1),
                probe,
            )
            .await?
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
            } => {
                client.member_add(id, &peer, &c, false).await?;
                println!(
                    "member {id} added as a voter; start it with --join {}",
                    args.endpoints
                );
            }
            MemberCommand::AddLearner {
                id,
                peer,
                client: c,
            } => {
                client.member_add(id, &peer, &c, true).await?;
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
    }
    Ok(())
}

/// Median and p99 of `fdatasync` after an append of `bytes`, over 200 rounds.
fn fdatasync_latency(dir: &std::path::Path, bytes: usize) -> anyhow::Result<(Duration, Duration)> {
    let path = dir.join(format!("metcdctl-fsync-probe-{}", std::process::id()));
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0xA5u8; bytes];
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        file.write_all(&block)?;
        let started = std::time::Instant::now();
        file.sync_data()?;
        samples.push(started.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    samples.sort_unstable();
    Ok((percentile(&samples, 0.50), percentile(&samples, 0.99)))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// (node id, WAL fsyncs, microseconds in fsync) of every reachable node.
async fn fsync_counters(client: &Client) -> Vec<(u64, u64, u64)> {
    let mut per_node: Vec<(u64, u64, u64)> = Vec::new();
    for endpoint in client.endpoints() {
        if let Ok(status) = client.status_of(&endpoint).await
            && !per_node.iter().any(|(id, _, _)| *id == status.id)
        {
            per_node.push((status.id, status.wal_fsyncs, status.wal_fsync_micros));
        }
    }
    per_node
}

async fn bench(
    client: &Client,
    concurrency: usize,
    requests: usize,
    value_size: usize,
    keys: usize,
    probe: Option<(std::path::PathBuf, usize)>,
) -> anyhow::Result<()> {
    if let Some((dir, bytes)) = &probe {
        let (p50, p99) = fdatasync_latency(dir, *bytes)?;
        println!(
            "fdatasync ({bytes}-byte append) in {}: p50 {:.3} ms, p99 {:.3} ms",
            dir.display(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    // One warm-up write finds the leader and opens a connection.
    client.put(b"bench/warmup", b"x").await?;
    let leader = client.status().await?.leader;
    let nodes_before = fsync_counters(client).await;
    let value = vec![b'v'; value_size];
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let value = value.clone();
        let share = requests / concurrency + usize::from(worker < requests % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for i in 0..share {
                let key = format!("bench/{:08}", (worker + i * concurrency) % keys);
                let t = std::time::Instant::now();
                client.put(key.as_bytes(), &value).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, cluster::client::ClientError>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    let nodes_after = fsync_counters(client).await;
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "PUT x{requests}, {concurrency} clients, {value_size}-byte values, {keys} keys: {:.0} writes/s over {:.2} s",
        requests as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0))
    );
    if let Some((dir, bytes)) = &probe {
        let (p50, p99) = fdatasync_latency(dir, *bytes)?;
        println!(
            "fdatasync probe again after the run: p50 {:.3} ms, p99 {:.3} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    let mut cluster_fsyncs = 0;
    for (id, after, after_micros) in &nodes_after {
        if let Some((_, before, before_micros)) = nodes_before.iter().find(|(b, _, _)| b == id) {
            let role = if *id == leader { "leader" } else { "follower" };
            let fsyncs = after - before;
            cluster_fsyncs += fsyncs;
            let mean = (after_micros - before_micros) as f64 / fsyncs.max(1) as f64 / 1e3;
            println!(
                "node {id} ({role}): {fsyncs} WAL fsyncs, {:.3} per acknowledged write, mean WAL fdatasync {mean:.3} ms",
                fsyncs as f64 / requests as f64
            );
        }
    }
    println!(
        "cluster: {cluster_fsyncs} WAL fsyncs, {:.3} per acknowledged write",
        cluster_fsyncs as f64 / requests as f64
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
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
