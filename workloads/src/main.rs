//! `workbench`: run workloads against the storage engines, redraw plots,
//! list what exists, and measure the harness's own overhead.
//!
//! Everything is checked before anything runs: workload names and spec
//! files, engine names, overrides, and that the results directory is
//! writable. Results go to `results/<UTC timestamp>/` unless `--out` says
//! otherwise; see `results/README.md` for the layout and schema.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use engines::{EngineKind, EngineOptions};
use workloads::cluster_target::locate_metcd;
use workloads::overhead::{self, OverheadConfig};
use workloads::report::write_reports;
use workloads::results::run_directory_name;
use workloads::spec::{self, DurabilityMode, Overrides, ReadConsistency};
use workloads::suite::{ClusterChoice, Suite};

#[derive(Parser)]
#[command(
    name = "workbench",
    version,
    about = "Storage-engine workloads with HdrHistogram latencies, JSON results and SVG plots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run workloads on engines: load phase, measured run phase, results and plots.
    Run(Box<RunArgs>),
    /// Redraw every plot, summary.md and index.md of a run directory from its JSON.
    Plot {
        /// A run directory, e.g. results/reference.
        run_dir: PathBuf,
    },
    /// List the built-in workloads and the engines.
    List,
    /// Measure the harness against a no-op target and the Engine trait's cost
    /// (redb and rocksdb direct vs through `engines::open`), in time and in
    /// instructions (valgrind's callgrind).
    Overhead(OverheadArgs),
    /// Measure what MVCC costs metcd's state machine: puts, gets and ranges
    /// against the plain layout it replaced, per engine, and the history's
    /// space before and after compaction.
    Mvcc(MvccArgs),
    /// Measure watch fan-out (events/s to 1, 100, 1000 watchers),
    /// put-to-event latency and lease keep-alives/s on any server of etcd's
    /// v3 API (real etcd or metcd's gRPC port).
    Watch(WatchArgs),
    /// metcd beside a real etcd: fresh 3-member clusters of each, never at
    /// the same time, alternating over rounds, the same etcd v3 client and
    /// cases (etcd's benchmark put, range, txn-put; YCSB A-F).
    VsEtcd(VsEtcdArgs),
    /// Internal: one workload on one engine inside a memory cgroup, started
    /// by `run` for memory-limited workloads.
    #[command(hide = true)]
    RunJob {
        /// The job file `run` wrote.
        job: PathBuf,
    },
    /// Internal: the instruction-counted loops of `overhead`, run under
    /// callgrind.
    #[command(hide = true)]
    OverheadLoops {
        /// redb or rocksdb.
        engine: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        records: u64,
        #[arg(long)]
        operations: usize,
        #[arg(long)]
        value_size: usize,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Comma-separated workloads: built-in names (see `workbench list`),
    /// `default` (read-heavy, write-heavy), `all`, or paths to .toml specs or
    /// YCSB property files.
    #[arg(default_value = "default")]
    workloads: String,
    /// Comma-separated engines, or `all`.
    #[arg(long, short, default_value = "all")]
    engines: String,
    /// Run directory for results [default: results/<UTC timestamp>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where each (workload, engine) gets a fresh temporary directory,
    /// removed after its run [default: the system temporary directory].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Records written by the load phase.
    #[arg(long)]
    records: Option<u64>,
    /// Measured operations of the run phase (replaces the spec's duration).
    #[arg(long, conflicts_with = "duration")]
    operations: Option<u64>,
    /// Measured seconds of the run phase (replaces the spec's operation
    /// count: a timed run, where faster engines do more and end larger).
    #[arg(long)]
    duration: Option<f64>,
    /// Count-bound runs: warm-up operations, executed but not measured.
    #[arg(long)]
    warmup_ops: Option<u64>,
    /// Count-bound runs: stop a run after this many seconds and mark it capped.
    #[arg(long)]
    time_cap: Option<f64>,
    /// Duration-bound runs: warm-up seconds, executed but not measured.
    #[arg(long)]
    warmup: Option<f64>,
    /// The longest each settling wait (after the load, after the run) may take, in seconds.
    #[arg(long)]
    settle: Option<f64>,
    /// Run workloads whose writes sync even when the data directory is on
    /// tmpfs, where fsync costs nothing.
    #[arg(long)]
    allow_tmpfs: bool,
    /// Client threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Open loop: target operations per second over all threads (latency
    /// measured from each request's intended start).
    #[arg(long)]
    rate: Option<f64>,
    /// Seed of all random choices (thread i uses seed + i).
    #[arg(long)]
    seed: Option<u64>,
    /// Durability of run-phase writes: sync, batched or none.
    #[arg(long, value_parser = parse_durability)]
    durability: Option<DurabilityMode>,
    /// Batched mode: writes per thread between syncs.
    #[arg(long)]
    batch_ops: Option<u64>,
    /// Batched mode: milliseconds after which the next write syncs.
    #[arg(long)]
    batch_ms: Option<u64>,
    /// Engine cache size in MiB (redb, sled, rocksdb, fjall).
    #[arg(long)]
    cache_mib: Option<u64>,
    /// What to run against: `engines` (embedded, see --engines),
    /// `cluster` (metcd over HTTP; needs --endpoints or --spawn-cluster) or
    /// `etcd-v3` (any server of etcd's v3 gRPC API, real etcd or metcd;
    /// needs --endpoints, the gRPC addresses).
    #[arg(long, default_value = "engines", value_parser = ["engines", "cluster", "etcd-v3"])]
    target: String,
    /// With --target cluster: client endpoints of a running cluster,
    /// comma separated (e.g. 127.0.0.1:13379,127.0.0.1:23379,127.0.0.1:33379).
    /// With --target etcd-v3: the members' gRPC addresses (etcd:
    /// 127.0.0.1:2379,...; `just cluster`: 127.0.0.1:12379,22379,32379).
    /// Pass --data-dir on the cluster's disk so the calibration measures it.
    #[arg(long, conflicts_with = "spawn_cluster")]
    endpoints: Option<String>,
    /// With --target etcd-v3: where each member serves /metrics over HTTP,
    /// in the order of --endpoints [default: the --endpoints themselves, as
    /// etcd serves both on its client port; for `just cluster` give
    /// 127.0.0.1:13379,127.0.0.1:23379,127.0.0.1:33379].
    #[arg(long)]
    metrics_endpoints: Option<String>,
    /// With --target etcd-v3: the name of the results (e.g. etcd,
    /// metcd-redb) [default: etcd-v3].
    #[arg(long)]
    name: Option<String>,
    /// With --target etcd-v3: gRPC connections shared by the client threads
    /// [default: one per thread].
    #[arg(long)]
    connections: Option<usize>,
    /// With --target cluster: start 3 metcd nodes of this engine (the
    /// metcd binary next to workbench) under --data-dir for each workload.
    #[arg(long)]
    spawn_cluster: Option<String>,
    /// Reads of a cluster: linearizable or serializable [default: the spec's].
    #[arg(long, value_parser = parse_consistency)]
    read_consistency: Option<ReadConsistency>,
}

#[derive(Args)]
struct OverheadArgs {
    /// Output directory for overhead.json and overhead.md.
    #[arg(long, default_value = "results/overhead")]
    out: PathBuf,
    /// Where redb and rocksdb get their temporary directories.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds of each no-op harness run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Records loaded into redb and rocksdb.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Reads per round.
    #[arg(long, default_value_t = 300_000)]
    reads: usize,
    /// Buffered writes per round.
    #[arg(long, default_value_t = 10_000)]
    writes: usize,
    /// Rounds of (direct, trait) per engine.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1000)]
    value_size: usize,
    /// Records loaded for the instruction counts (callgrind runs about 50x
    /// slower than native).
    #[arg(long, default_value_t = 20_000)]
    callgrind_records: u64,
    /// Operations per instruction-counted loop (a buffered redb put is a
    /// commit of about a quarter million instructions, so keep it modest).
    #[arg(long, default_value_t = 5_000)]
    callgrind_operations: usize,
    /// Skip the instruction counts (for machines without valgrind).
    #[arg(long)]
    no_callgrind: bool,
}

#[derive(Args)]
struct MvccArgs {
    /// Output directory for mvcc.json, mvcc.md and mvcc.svg.
    #[arg(long, default_value = "results/mvcc")]
    out: PathBuf,
    /// Engines, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    engines: String,
    /// Where the engines get their temporary directories.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keys loaded, one put each.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Random overwrites after the load.
    #[arg(long, default_value_t = 200_000)]
    updates: u64,
    /// Random point gets.
    #[arg(long, default_value_t = 200_000)]
    reads: u64,
    /// Ranges of --range-len consecutive keys.
    #[arg(long, default_value_t = 20_000)]
    ranges: u64,
    #[arg(long, default_value_t = 100)]
    range_len: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Entries per engine batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Alternating rounds per engine (the best is reported).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

#[derive(Args)]
struct VsEtcdArgs {
    /// metcd's engines, comma separated (each is a system of its own).
    #[arg(long, default_value = "redb")]
    engines: String,
    /// Rounds; the systems alternate within each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured seconds per case.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up seconds per case.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Keys loaded before each case.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Only these cases (comma separated names, e.g. put-1,range-l-64,ycsb-a).
    #[arg(long)]
    cases: Option<String>,
    /// Only rebuild the medians, reports, plots and vs-etcd.md from the
    /// rounds already in --out.
    #[arg(long)]
    report_only: bool,
    #[arg(long, default_value = "results/vs-etcd")]
    out: PathBuf,
    /// Where the clusters' data directories go (on the disk to measure).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct WatchArgs {
    /// The members' gRPC addresses of a running cluster, comma separated.
    #[arg(
        long,
        conflicts_with = "spawn",
        required_unless_present_any = ["spawn", "table_only"]
    )]
    endpoints: Option<String>,
    /// Only rewrite watch.md in --out from the reports already there.
    #[arg(long)]
    table_only: bool,
    /// Start a fresh 3-member cluster for the run and stop it after:
    /// `etcd` (Debian's etcd-server, default settings) or `metcd:ENGINE`
    /// (the metcd binary next to workbench).
    #[arg(long)]
    spawn: Option<String>,
    /// The results' name (e.g. etcd, metcd-redb).
    #[arg(long, required_unless_present = "table_only")]
    name: Option<String>,
    /// Output directory: <name>.json, and watch.md over every run in it.
    #[arg(long, default_value = "results/watch")]
    out: PathBuf,
    /// Where the machine calibration measures fdatasync.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Watcher counts of the fan-out measurement, comma separated.
    #[arg(long, default_value = "1,100,1000")]
    watchers: String,
    /// Puts per fan-out measurement.
    #[arg(long, default_value_t = 2000)]
    events: usize,
    /// Concurrent writers in the fan-out measurement.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Puts per second in the latency measurement.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of the latency and keep-alive measurements.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Leases kept alive concurrently.
    #[arg(long, default_value_t = 16)]
    leases: usize,
    /// Value size in bytes (at least 8).
    #[arg(long, default_value_t = 256)]
    value_size: usize,
}

fn parse_consistency(text: &str) -> std::result::Result<ReadConsistency, String> {
    text.parse()
}

fn parse_durability(text: &str) -> std::result::Result<DurabilityMode, String> {
    text.parse()
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run_suite(*args),
        Command::Plot { run_dir } => {
            write_reports(&run_dir).with_context(|| format!("redrawing {}", run_dir.display()))?;
            println!(
                "redrew plots, summaries and index.md in {}",
                run_dir.display()
            );
            Ok(())
        }
        Command::List => {
            println!("workloads (built in, from workloads/specs/):");
            for s in spec::built_in_specs()? {
                println!("  {:<12} {}", s.name, s.description);
            }
            println!("  {:<12} {}", "default", spec::DEFAULT_SUITE.join(" + "));
            println!(
                "  {:<12} every built-in workload except cluster-* and the memory-limited ones",
                "all"
            );
            println!(
                "  {:<12} the cluster-* workloads (with --target cluster)",
                "cluster"
            );
            println!(
                "  or a path to a .toml spec or a YCSB property file (e.g. workloads/specs/ycsb/workloada)"
            );
            println!("\nengines:");
            for kind in EngineKind::ALL {
                println!("  {:<12} {}", kind.name(), kind.design());
            }
            Ok(())
        }
        Command::Overhead(args) => {
            if !(args.seconds.is_finite() && args.seconds > 0.0)
                || args.rounds == 0
                || args.records == 0
            {
                bail!("--seconds must be positive and --rounds and --records at least 1");
            }
            overhead::run(&OverheadConfig {
                out_dir: args.out,
                data_dir: args.data_dir.unwrap_or_else(std::env::temp_dir),
                harness_seconds: args.seconds,
                records: args.records,
                reads: args.reads.max(1),
                writes: args.writes.max(1),
                rounds: args.rounds,
                value_size: args.value_size,
                seed: 42,
                callgrind: (!args.no_callgrind).then_some(overhead::CallgrindConfig {
                    records: args.callgrind_records.max(1),
                    operations: args.callgrind_operations.max(1),
                }),
            })?;
            Ok(())
        }
        Command::Mvcc(args) => {
            if args.keys == 0 || args.range_len == 0 || args.rounds == 0 || args.batch == 0 {
                bail!("--keys, --range-len, --rounds and --batch must be at least 1");
            }
            workloads::mvcc_cost::run(&workloads::mvcc_cost::MvccCostConfig {
                out_dir: args.out,
                data_dir: args.data_dir.unwrap_or_else(std::env::temp_dir),
                engines: EngineKind::parse_list(&args.engines)?,
                keys: args.keys,
                updates: args.updates,
                reads: args.reads,
                ranges: args.ranges,
                range_len: args.range_len,
                value_size: args.value_size,
                batch: args.batch,
                rounds: args.rounds,
                seed: 42,
            })?;
            Ok(())
        }
        Command::VsEtcd(args) => {
            if args.report_only {
                workloads::vs_etcd::report(&args.out)?;
                return Ok(());
            }
            if args.rounds == 0
                || args.keys == 0
                || !(args.seconds.is_finite() && args.seconds > 0.0)
                || !(args.warmup.is_finite() && args.warmup >= 0.0)
            {
                bail!(
                    "--rounds and --keys must be at least 1, --seconds positive, --warmup not negative"
                );
            }
            let mut cases =
                workloads::vs_etcd::default_cases(args.keys, args.seconds, args.warmup)?;
            if let Some(list) = &args.cases {
                let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
                let known: Vec<String> = cases.iter().map(|c| c.spec.name.clone()).collect();
                if let Some(unknown) = wanted.iter().find(|w| !known.iter().any(|k| k == *w)) {
                    bail!(
                        "unknown case '{unknown}'; the cases are {}",
                        known.join(", ")
                    );
                }
                cases.retain(|c| wanted.contains(&c.spec.name.as_str()));
            }
            workloads::vs_etcd::run(&workloads::vs_etcd::VsEtcdConfig {
                out_dir: args.out,
                data_dir: args.data_dir.unwrap_or_else(std::env::temp_dir),
                engines: EngineKind::parse_list(&args.engines)?,
                metcd: locate_metcd()?,
                rounds: args.rounds,
                cases,
            })?;
            Ok(())
        }
        Command::Watch(args) => {
            let watchers = args
                .watchers
                .split(',')
                .map(|w| w.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--watchers takes counts such as 1,100,1000: {e}"))?;
            if watchers.contains(&0)
                || args.events == 0
                || !(args.rate.is_finite() && args.rate > 0.0)
                || !(args.seconds.is_finite() && args.seconds > 0.0)
                || args.value_size < 8
            {
                bail!(
                    "--watchers counts, --events, --rate and --seconds must be positive, --value-size at least 8"
                );
            }
            if args.table_only {
                workloads::watch_bench::write_table(&args.out)?;
                return Ok(());
            }
            let name = args.name.unwrap_or_default();
            let data_dir = args.data_dir.unwrap_or_else(std::env::temp_dir);
            // The spawned cluster lives until the measurement is done.
            let (endpoints, system, _etcd, _metcd) = match (args.endpoints, args.spawn.as_deref()) {
                (Some(list), None) => (
                    list.split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect::<Vec<_>>(),
                    format!("{name} (running; not started by the harness)"),
                    None,
                    None,
                ),
                (None, Some("etcd")) => {
                    let etcd = workloads::etcd_process::SpawnedEtcd::start(&data_dir, 3)?;
                    eprintln!("watch: {}", etcd.settings());
                    let grpc = etcd.members().iter().map(|m| m.grpc.clone()).collect();
                    (grpc, etcd.settings(), Some(etcd), None)
                }
                (None, Some(spec)) if spec.starts_with("metcd:") => {
                    let engine: EngineKind = spec["metcd:".len()..]
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--spawn {spec}: {e}"))?;
                    let metcd = workloads::cluster_target::SpawnedCluster::start(
                        &locate_metcd()?,
                        engine,
                        &data_dir,
                        3,
                    )?;
                    let grpc = metcd.grpc_endpoints().to_vec();
                    let system = metcd.settings();
                    (grpc, system, None, Some(metcd))
                }
                (None, Some(other)) => {
                    bail!("--spawn takes etcd or metcd:ENGINE (e.g. metcd:redb), not '{other}'")
                }
                _ => bail!("give --endpoints of a running cluster or --spawn etcd|metcd:ENGINE"),
            };
            workloads::watch_bench::run(&workloads::watch_bench::WatchBenchConfig {
                out_dir: args.out,
                data_dir,
                name,
                system,
                endpoints,
                watchers,
                events: args.events,
                writers: args.writers,
                rate: args.rate,
                seconds: args.seconds,
                leases: args.leases,
                value_size: args.value_size,
            })?;
            Ok(())
        }
        Command::RunJob { job } => {
            workloads::suite::run_job(&job).with_context(|| format!("job {}", job.display()))
        }
        Command::OverheadLoops {
            engine,
            data_dir,
            records,
            operations,
            value_size,
        } => {
            let kind: EngineKind = engine.parse()?;
            overhead::counted_loops(kind, &data_dir, records, operations, value_size)?;
            Ok(())
        }
    }
}

fn run_suite(args: RunArgs) -> Result<()> {
    let mut specs = spec::resolve_list(&args.workloads)?;
    let engines = EngineKind::parse_list(&args.engines)?;
    let split = |list: &str| -> Vec<String> {
        list.split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect()
    };
    if args.target != "etcd-v3"
        && (args.metrics_endpoints.is_some() || args.name.is_some() || args.connections.is_some())
    {
        bail!("--metrics-endpoints, --name and --connections need --target etcd-v3");
    }
    let cluster = match (args.target.as_str(), args.endpoints, args.spawn_cluster) {
        ("etcd-v3", Some(endpoints), None) => {
            let grpc = split(&endpoints);
            let metrics = args
                .metrics_endpoints
                .as_deref()
                .map_or(grpc.clone(), split);
            if grpc.is_empty() || metrics.len() != grpc.len() {
                bail!(
                    "--target etcd-v3 needs --endpoints host:port,... and, if given, as many --metrics-endpoints ({} endpoints, {} metrics endpoints)",
                    grpc.len(),
                    metrics.len()
                );
            }
            let members = grpc
                .into_iter()
                .zip(metrics)
                .map(|(grpc, metrics)| workloads::etcd_target::Member { grpc, metrics })
                .collect();
            let name = args.name.unwrap_or_else(|| "etcd-v3".to_string());
            Some(ClusterChoice::EtcdV3 {
                system: name.clone(),
                name,
                members,
                connections: args.connections.unwrap_or(usize::MAX),
            })
        }
        ("etcd-v3", _, _) => {
            bail!("--target etcd-v3 needs --endpoints host:port,... (the members' gRPC addresses)")
        }
        ("cluster", Some(endpoints), None) => Some(ClusterChoice::Endpoints(
            endpoints.split(',').map(|e| e.trim().to_string()).collect(),
        )),
        ("cluster", None, Some(engine)) => Some(ClusterChoice::Spawn {
            engine: engine
                .parse::<EngineKind>()
                .map_err(|e| anyhow::anyhow!("--spawn-cluster: {e}"))?,
            metcd: locate_metcd()?,
        }),
        ("cluster", _, _) => bail!(
            "--target cluster needs --endpoints host:port,... (a running cluster) or --spawn-cluster ENGINE"
        ),
        (_, None, None) => None,
        _ => bail!("--endpoints and --spawn-cluster need --target cluster"),
    };
    let overrides = Overrides {
        record_count: args.records,
        operation_count: args.operations,
        duration_secs: args.duration,
        warmup_secs: args.warmup,
        warmup_operations: args.warmup_ops,
        time_cap_secs: args.time_cap,
        settle_secs: args.settle,
        threads: args.threads,
        rate: args.rate,
        seed: args.seed,
        durability: args.durability,
        batch_ops: args.batch_ops,
        batch_ms: args.batch_ms,
        read_consistency: args.read_consistency,
    };
    for spec in &mut specs {
        overrides.apply(spec)?;
    }
    let mut engine_options = EngineOptions::default();
    if let Some(mib) = args.cache_mib {
        engine_options.cache_bytes = mib << 20;
    }
    let out_dir = args
        .out
        .unwrap_or_else(|| PathBuf::from("results").join(run_directory_name(SystemTime::now())));
    let suite = Suite {
        specs,
        engines,
        out_dir: out_dir.clone(),
        data_dir: args.data_dir.unwrap_or_else(std::env::temp_dir),
        engine_options,
        cluster,
        allow_tmpfs: args.allow_tmpfs,
    };
    let failures = suite.run()?;
    println!("results: {}", out_dir.join("index.md").display());
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("failed: {} on {}: {}", f.workload, f.engine, f.error);
        }
        bail!(
            "{} of the runs failed; the others are in {}",
            failures.len(),
            out_dir.display()
        );
    }
    Ok(())
}
