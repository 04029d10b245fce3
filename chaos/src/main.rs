//! `chaos`: randomized fault-injection runs against real metcd clusters.
//!
//! ```text
//! chaos [ENGINE|all] [--runs N] [--fault KIND[,KIND...]] [--seed S] [--out DIR]
//! ```
//!
//! Run *i* uses engine *i* mod the engines given (round robin, so every
//! engine gets its share) and a fault kind drawn from `--fault` (default:
//! every kind) by the base seed; its own seed is derived from the base seed
//! and *i*, and printed, so a failed run is reproduced with
//! `chaos ENGINE --fault KIND --seed SEED --runs 1`. Each run prints one
//! line; failures print their explanation. At the end the report is written
//! as `report.json` and `report.md` under `--out` (default
//! `results/chaos`). The exit status is 1 if any run found a violation, a
//! broken watch guarantee, a divergence or a node that failed (a harness
//! error within a run), and 2 if the harness could not do its job at all
//! (bad arguments, no metcd binary, the report not written).
//!
//! Ctrl-C kills every metcd process this harness started and removes their
//! files; a harness killed outright is cleaned up by the next start.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use chaos::nemesis::FaultKind;
use chaos::nodes;
use chaos::report::Report;
use chaos::run::{self, RunConfig};
use clap::Parser;
use engines::EngineKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(
    about = "Fault-injection runs against 3-node metcd clusters, checked for linearizability"
)]
struct Args {
    /// Engine: memory, redb, sled, rocksdb, fjall, bitcask, or all.
    #[arg(default_value = "all")]
    engine: String,
    /// Number of runs.
    #[arg(long, default_value_t = 14)]
    runs: usize,
    /// Fault kinds to draw from (comma separated): kill, pause,
    /// isolate-follower, isolate-leader, bridge, delay, loss [default: all].
    #[arg(long)]
    fault: Option<String>,
    /// Base seed [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Client phase of each run, in seconds.
    #[arg(long, default_value_t = 8)]
    duration_s: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Keys the clients share.
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// The clients' API: http (metcd's), grpc (etcd's v3), or both (half
    /// the clients each).
    #[arg(long, value_enum, default_value = "both")]
    api: chaos::workload::Api,
    /// Where the report is written.
    #[arg(long, default_value = "results/chaos")]
    out: PathBuf,
    /// Start every node with one safety rule broken on purpose (metcd's
    /// `--lab-break`: stale-reads, early-reads, skip-fsync,
    /// skip-flush), to see whether
    /// the checks catch it.
    #[arg(long)]
    lab_break: Option<String>,
    /// Stop after the first run that fails a check.
    #[arg(long)]
    until_caught: bool,
}

fn engines_of(name: &str) -> anyhow::Result<Vec<String>> {
    if name == "all" {
        return Ok(EngineKind::ALL
            .iter()
            .map(|k| k.name().to_string())
            .collect());
    }
    let kind: EngineKind = name
        .parse()
        .map_err(|e| anyhow::anyhow!("engine {name:?}: {e} (or use all)"))?;
    Ok(vec![kind.name().to_string()])
}

fn faults_of(list: Option<&str>) -> anyhow::Result<Vec<FaultKind>> {
    match list {
        None => Ok(FaultKind::ALL.to_vec()),
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse::<FaultKind>().map_err(anyhow::Error::msg))
            .collect(),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (civil from days, proleptic
/// Gregorian).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

fn main() -> std::process::ExitCode {
    match start() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn start() -> anyhow::Result<bool> {
    let args = Args::parse();
    let engines = engines_of(&args.engine)?;
    let faults = faults_of(args.fault.as_deref())?;
    if args.runs == 0 {
        bail!("--runs 0: nothing to do; give 1 or more");
    }
    if args.keys == 0 || args.clients == 0 || args.duration_s == 0 {
        bail!("--keys, --clients and --duration-s must be 1 or more");
    }
    let binary = nodes::locate_metcd()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let base_seed = args.seed.unwrap_or(now.as_nanos() as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("chaos: interrupted; killing this harness's metcd processes");
            nodes::remove_own();
            std::process::exit(130);
        }
    });
    println!(
        "chaos: {} runs, engines {engines:?}, faults {:?}, base seed {base_seed}, metcd {}",
        args.runs,
        faults.iter().map(|f| f.name()).collect::<Vec<_>>(),
        binary.display()
    );
    let mut choose = StdRng::seed_from_u64(base_seed);
    let mut outcomes = Vec::new();
    for i in 0..args.runs {
        let engine = &engines[i % engines.len()];
        let fault = if args.runs == 1 || faults.len() == 1 {
            faults[0]
        } else {
            faults[choose.random_range(0..faults.len())]
        };
        let seed = if args.runs == 1 {
            base_seed
        } else {
            choose.random()
        };
        let config = RunConfig {
            engine: engine.clone(),
            fault,
            seed,
            duration: Duration::from_secs(args.duration_s),
            clients: args.clients,
            api: args.api,
            keys: args.keys,
            binary: binary.clone(),
            keep_failed: true,
            lab_break: args.lab_break.clone(),
        };
        let outcome = runtime.block_on(run::run(&config))?;
        println!("{:>4}/{} {}", i + 1, args.runs, outcome.line());
        let failed = outcome.failed();
        if failed {
            println!("{}", outcome.details());
        }
        outcomes.push(outcome);
        if failed && args.until_caught {
            println!("chaos: stopping after the first failed run (--until-caught)");
            break;
        }
    }
    let metcd = match &args.lab_break {
        Some(b) => format!("{} --lab-break {b}", binary.display()),
        None => binary.display().to_string(),
    };
    let report = Report::from_runs(&metcd, &utc(now.as_secs()), outcomes);
    report.write(&args.out)?;
    let t = &report.totals;
    println!(
        "chaos: {} runs, {} operations, {} acknowledged, {} unknown, {} violations, {} divergent, {} gave up, {} errors, {} with a broken watch guarantee, longest unavailability {} ms, {} leader changes; report in {}",
        t.runs,
        t.operations,
        t.acknowledged,
        t.unknown,
        t.violations,
        t.divergent,
        t.gave_up,
        t.errors,
        t.watch_violations,
        t.longest_unavailability_ms,
        t.leader_changes,
        args.out.display()
    );
    Ok(t.violations == 0 && t.divergent == 0 && t.errors == 0 && t.watch_violations == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_times() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn bad_names_are_explained() {
        assert!(engines_of("nope").is_err());
        assert_eq!(engines_of("all").unwrap().len(), 6);
        let err = faults_of(Some("kill,flood")).unwrap_err().to_string();
        assert!(
            err.contains("flood") && err.contains("isolate-leader"),
            "{err}"
        );
    }
}
