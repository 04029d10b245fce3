//! `workbench vs-etcd`: metcd beside a real etcd, one client, one machine.
//!
//! Both systems are measured through [`EtcdTarget`] (the `etcd-client`
//! crate over gRPC), with the same specs, keys, values, connections and
//! closed loop. The harness starts a fresh 3-member etcd (Debian's
//! `etcd-server`, its default settings: [`SpawnedEtcd`]) and a fresh 3-node
//! metcd per engine ([`SpawnedCluster`]) on loopback, **never at the same
//! time**, and alternates them over `rounds` rounds, so a slow minute of
//! the shared machine does not land on one system only. Within a round
//! each system runs every case in order on one cluster.
//!
//! The cases follow etcd's own benchmark tool (`put`, `range` with
//! linearizable and serializable consistency, `txn-put`; 256-byte values
//! over a key space of `keys` keys, loaded first) at 1, 64 and 256 client
//! threads, and YCSB A–F. Keys are the harness's YCSB-format keys of 24
//! bytes (its minimum; etcd's tool uses 8), the same for both systems.
//!
//! Per case and system the result documents carry throughput,
//! p50/p99/p99.9, WAL fsyncs per acknowledged write (each member's
//! `/metrics`) and CPU seconds of the members' processes (`/proc`). The
//! round with the median throughput is the system's document for the case
//! (`<out>/<case>/<system>.json`, plotted and tabled like any run); every
//! round is kept under `<out>/<case>/rounds/`. `vs-etcd.md` puts the
//! systems side by side with the ratio metcd/etcd and the spread over
//! rounds.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use engines::EngineKind;

use crate::cluster_target::SpawnedCluster;
use crate::error::{IoContext, Result, WorkloadError};
use crate::etcd_process::SpawnedEtcd;
use crate::etcd_target::{EtcdTarget, Member};
use crate::machine::Machine;
use crate::report::{MACHINE_FILE, write_reports};
use crate::results::{ResultDocument, RunContext};
use crate::runner;
use crate::spec::{ReadConsistency, WorkloadSpec, resolve_one};
use crate::suite::ensure_writable;

/// One measured case: a spec, and whether writes are one-put transactions.
#[derive(Debug, Clone)]
pub struct Case {
    pub spec: WorkloadSpec,
    pub txn_writes: bool,
}

#[derive(Debug, Clone)]
pub struct VsEtcdConfig {
    pub out_dir: PathBuf,
    pub data_dir: PathBuf,
    /// metcd's engines, each a system of its own.
    pub engines: Vec<EngineKind>,
    pub metcd: PathBuf,
    pub rounds: usize,
    pub cases: Vec<Case>,
}

/// The default cases (see the module essay): `keys` keys, `seconds` of
/// measured run after `warmup` seconds each.
pub fn default_cases(keys: u64, seconds: f64, warmup: f64) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    let base = |name: &str, threads: usize| -> Result<WorkloadSpec> {
        let mut spec = resolve_one("cluster-put-64")?;
        spec.name = name.to_string();
        spec.record_count = keys;
        spec.threads = threads;
        spec.duration_secs = Some(seconds);
        spec.warmup_secs = warmup;
        spec.value_size = 256;
        Ok(spec)
    };
    for threads in [1, 64, 256] {
        let mut put = base(&format!("put-{threads}"), threads)?;
        put.description =
            format!("etcd benchmark put: {threads} clients, 256 B values, {keys} keys");
        cases.push(Case {
            spec: put,
            txn_writes: false,
        });
    }
    for (consistency, short) in [
        (ReadConsistency::Linearizable, "l"),
        (ReadConsistency::Serializable, "s"),
    ] {
        for threads in [1, 64, 256] {
            let mut range = base(&format!("range-{short}-{threads}"), threads)?;
            range.description = format!(
                "etcd benchmark range --consistency {short}: {threads} clients, one key per range"
            );
            range.mix.update = 0.0;
            range.mix.read = 1.0;
            range.read_consistency = consistency;
            cases.push(Case {
                spec: range,
                txn_writes: false,
            });
        }
    }
    let mut txn = base("txn-put-64", 64)?;
    txn.description = "etcd benchmark txn-put: 64 clients, one put per transaction".to_string();
    cases.push(Case {
        spec: txn,
        txn_writes: true,
    });
    for letter in ["a", "b", "c", "d", "e", "f"] {
        let mut ycsb = resolve_one(&format!("ycsb-{letter}"))?;
        ycsb.record_count = keys;
        ycsb.threads = 64;
        ycsb.duration_secs = Some(seconds);
        ycsb.warmup_secs = warmup;
        ycsb.operation_count = None;
        ycsb.warmup_operations = 0;
        ycsb.time_cap_secs = None;
        ycsb.durability = crate::spec::DurabilityMode::None;
        cases.push(Case {
            spec: ycsb,
            txn_writes: false,
        });
    }
    for case in &cases {
        case.spec.validate(&case.spec.name)?;
    }
    Ok(cases)
}

/// A running system: its members, pids and description, kept alive while
/// its cases run.
enum Running {
    Etcd(SpawnedEtcd),
    Metcd(SpawnedCluster, EngineKind),
}

impl Running {
    fn name(&self) -> String {
        match self {
            Running::Etcd(_) => "etcd".to_string(),
            Running::Metcd(_, engine) => format!("metcd-{}", engine.name()),
        }
    }

    fn system(&self) -> String {
        match self {
            Running::Etcd(etcd) => etcd.settings(),
            Running::Metcd(metcd, _) => metcd.settings(),
        }
    }

    fn members(&self) -> Vec<Member> {
        match self {
            Running::Etcd(etcd) => etcd.members().to_vec(),
            Running::Metcd(metcd, _) => metcd
                .grpc_endpoints()
                .iter()
                .zip(metcd.endpoints())
                .map(|(grpc, http)| Member {
                    grpc: grpc.clone(),
                    metrics: http.clone(),
                })
                .collect(),
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Running::Etcd(etcd) => etcd.pids(),
            Running::Metcd(metcd, _) => metcd.pids(),
        }
    }
}

fn start(config: &VsEtcdConfig, which: Option<EngineKind>) -> Result<Running> {
    Ok(match which {
        None => Running::Etcd(SpawnedEtcd::start(&config.data_dir, 3)?),
        Some(engine) => Running::Metcd(
            SpawnedCluster::start(&config.metcd, engine, &config.data_dir, 3)?,
            engine,
        ),
    })
}

/// Runs every round, then writes the median documents, the reports and
/// `vs-etcd.md`.
pub fn run(config: &VsEtcdConfig) -> Result<()> {
    ensure_writable(&config.out_dir)?;
    let machine = Machine::calibrate(&config.data_dir)?;
    let machine_json =
        serde_json::to_string_pretty(&machine).map_err(|e| WorkloadError::Results {
            context: "serializing the machine".into(),
            message: e.to_string(),
        })?;
    let machine_path = config.out_dir.join(MACHINE_FILE);
    fs::write(&machine_path, machine_json + "\n")
        .context(|| format!("cannot write {}", machine_path.display()))?;
    let mut systems: Vec<Option<EngineKind>> = vec![None];
    systems.extend(config.engines.iter().copied().map(Some));
    for round in 1..=config.rounds.max(1) {
        // Alternate the order from round to round.
        let order: Vec<Option<EngineKind>> = if round % 2 == 1 {
            systems.clone()
        } else {
            systems.iter().rev().copied().collect()
        };
        for which in order {
            let mut running = start(config, which)?;
            let name = running.name();
            eprintln!("vs-etcd: round {round}: {}", running.system());
            for case in &config.cases {
                match run_case(config, &machine, &running, case, round) {
                    Ok(ops) => {
                        eprintln!("  {:<14} {:<12} {:>9.0} ops/s", case.spec.name, name, ops)
                    }
                    Err(err) => {
                        // A failed case is a result too (a leader lost under
                        // load, a member that died): recorded beside the
                        // rounds and listed in the report, and the system is
                        // started afresh so the next case is measured on a
                        // healthy cluster, not on the wreck of this one.
                        eprintln!("  {:<14} {:<12} FAILED: {err}", case.spec.name, name);
                        record_failure(&config.out_dir, &case.spec.name, &name, round, &err)?;
                        drop(running);
                        running = start(config, which)?;
                    }
                }
            }
        }
    }
    report(&config.out_dir)
}

/// Measures one case on `running` and writes its round document; returns
/// its throughput.
fn run_case(
    config: &VsEtcdConfig,
    machine: &Machine,
    running: &Running,
    case: &Case,
    round: usize,
) -> Result<f64> {
    let name = running.name();
    let started_at = SystemTime::now();
    let target = EtcdTarget::connect(
        &name,
        &running.system(),
        running.members(),
        case.spec.threads.max(1),
        case.spec.read_consistency,
    )?
    .with_pids(running.pids())
    .with_txn_writes(case.txn_writes);
    let label = format!("r{round} {} {name}", case.spec.name);
    let measurement = runner::run_with(&case.spec, &target, &label, &mut || Ok(()))?;
    let document = ResultDocument::build(
        RunContext {
            spec: &case.spec,
            target_name: name.clone(),
            target_description: crate::target::Target::description(&target),
            machine,
            started_at,
            durability_override: crate::target::Target::durability_override(&target),
            sync_primitive: crate::target::Target::sync_primitive(&target),
            memory_limit: None,
        },
        &measurement,
    )?;
    let path = config
        .out_dir
        .join(&case.spec.name)
        .join("rounds")
        .join(format!("{name}-r{round}.json"));
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    }
    document.write(&path)?;
    Ok(document.run.throughput_ops_per_sec)
}

/// Name of the file, in a case's `rounds/`, that records a failed round.
const FAILED_SUFFIX: &str = ".failed.txt";

/// Records that `system` failed `case` in `round`, and why.
fn record_failure(
    out: &Path,
    case: &str,
    system: &str,
    round: usize,
    err: &WorkloadError,
) -> Result<()> {
    let dir = out.join(case).join("rounds");
    fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{system}-r{round}{FAILED_SUFFIX}"));
    fs::write(&path, format!("{err}\n")).context(|| format!("cannot write {}", path.display()))
}

/// Every failed round under `out`: (case, file stem, reason).
fn failures(out: &Path) -> Result<Vec<(String, String, String)>> {
    let mut found = Vec::new();
    for case_dir in case_dirs(out)? {
        let case = case_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = case_dir.join("rounds");
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(FAILED_SUFFIX))
            .collect();
        files.sort();
        for file in files {
            let stem = file
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .trim_end_matches(FAILED_SUFFIX)
                        .to_string()
                })
                .unwrap_or_default();
            let reason = fs::read_to_string(&file).unwrap_or_default();
            found.push((case.clone(), stem, reason.trim().to_string()));
        }
    }
    Ok(found)
}

/// Chooses each system's median round per case, then writes the reports,
/// the plots and `vs-etcd.md` from the documents under `out` (also on its
/// own: `workbench vs-etcd --report-only`).
pub fn report(out: &Path) -> Result<()> {
    choose_medians(out)?;
    write_reports(out)?;
    let table = comparison(out)?;
    let path = out.join("vs-etcd.md");
    fs::write(&path, table).context(|| format!("cannot write {}", path.display()))
}

/// Each round's documents of one case, by system.
fn rounds_of(case_dir: &Path) -> Result<Vec<(String, Vec<ResultDocument>)>> {
    let mut by_system: Vec<(String, Vec<ResultDocument>)> = Vec::new();
    let dir = case_dir.join("rounds");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let document = ResultDocument::read(&file)?;
        let name = document.target.name.clone();
        match by_system.iter_mut().find(|(n, _)| *n == name) {
            Some((_, docs)) => docs.push(document),
            None => by_system.push((name, vec![document])),
        }
    }
    Ok(by_system)
}

/// Copies, per case and system, the round with the median throughput to
/// `<case>/<system>.json`.
fn choose_medians(out: &Path) -> Result<()> {
    for case_dir in case_dirs(out)? {
        for (name, mut docs) in rounds_of(&case_dir)? {
            docs.sort_by(|a, b| {
                a.run
                    .throughput_ops_per_sec
                    .total_cmp(&b.run.throughput_ops_per_sec)
            });
            let median = &docs[docs.len() / 2];
            median.write(&case_dir.join(format!("{name}.json")))?;
        }
    }
    Ok(())
}

fn case_dirs(out: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(out)
        .context(|| format!("cannot list {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("rounds").is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

/// The side-by-side table: per case, each system's median round, the
/// throughput range over rounds, and metcd/etcd.
fn comparison(out: &Path) -> Result<String> {
    let mut md = String::new();
    let _ = writeln!(md, "# metcd beside etcd\n");
    if let Some(machine) = fs::read_to_string(out.join(MACHINE_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<Machine>(&text).ok())
    {
        let _ = writeln!(md, "Machine: {}\n", machine.summary());
    }
    let _ = writeln!(
        md,
        "Each row: the round with the median throughput (min–max over rounds in brackets). \
         fsyncs/write: WAL fdatasyncs of all members per acknowledged write; CPU: seconds of all \
         members' processes per 1,000 operations; client CPU: the same for the harness (the load \
         generator, on the same two cores); both counted over the warm-up and the measured \
         seconds and divided by the measured operations, so both read high by the same factor. ×etcd: throughput ratio to etcd's (above 1: metcd \
         faster) and p99 ratio (below 1: metcd's tail shorter).\n"
    );
    let _ = writeln!(
        md,
        "| case | system | ops/s | p50 ms | p99 ms | p99.9 ms | fsyncs/write | CPU s/1k ops | client CPU s/1k ops | ×etcd ops/s | ×etcd p99 |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for case_dir in case_dirs(out)? {
        let case = case_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rounds = rounds_of(&case_dir)?;
        let medians: Vec<(String, ResultDocument)> = rounds
            .iter()
            .filter_map(|(name, _)| {
                ResultDocument::read(&case_dir.join(format!("{name}.json")))
                    .ok()
                    .map(|d| (name.clone(), d))
            })
            .collect();
        let etcd = medians.iter().find(|(n, _)| n == "etcd").map(|(_, d)| d);
        for (name, doc) in &medians {
            let spread = rounds
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, docs)| {
                    let v: Vec<f64> = docs.iter().map(|d| d.run.throughput_ops_per_sec).collect();
                    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().fold(0.0, f64::max);
                    format!("{lo:.0}–{hi:.0}")
                })
                .unwrap_or_default();
            let replication = doc.replication.as_ref();
            let fsyncs = replication
                .and_then(|r| r.cluster_fsyncs_per_write)
                .map_or("-".to_string(), |v| format!("{v:.3}"));
            let per_1k = |seconds: Option<f64>| {
                seconds
                    .filter(|_| doc.run.operations > 0)
                    .map_or("-".to_string(), |c| {
                        format!("{:.3}", c * 1000.0 / doc.run.operations as f64)
                    })
            };
            let cpu = per_1k(replication.and_then(|r| r.cpu_seconds));
            let client_cpu = per_1k(replication.and_then(|r| r.client_cpu_seconds));
            let (ratio, tail) = match etcd {
                Some(e) if name != "etcd" => (
                    format!(
                        "{:.2}",
                        doc.run.throughput_ops_per_sec / e.run.throughput_ops_per_sec.max(1e-9)
                    ),
                    format!(
                        "{:.2}",
                        doc.overall.p99_ns as f64 / (e.overall.p99_ns as f64).max(1.0)
                    ),
                ),
                _ => ("-".to_string(), "-".to_string()),
            };
            let _ = writeln!(
                md,
                "| {case} | {name} | {:.0} ({spread}) | {} | {} | {} | {fsyncs} | {cpu} | {client_cpu} | {ratio} | {tail} |",
                doc.run.throughput_ops_per_sec,
                ms(doc.overall.p50_ns),
                ms(doc.overall.p99_ns),
                ms(doc.overall.p999_ns),
            );
        }
    }
    let systems: Vec<String> = case_dirs(out)?
        .first()
        .map(|d| {
            rounds_of(d)
                .map(|r| {
                    r.into_iter()
                        .filter_map(|(_, docs)| {
                            docs.first().map(|d| {
                                format!("- **{}**: {}", d.target.name, d.target.description)
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let _ = writeln!(md, "\n## Systems\n\n{}", systems.join("\n"));
    let failed = failures(out)?;
    if !failed.is_empty() {
        let _ = writeln!(
            md,
            "\n## Failed rounds\n\nA failed round has no document; its case's median is over the \
             rounds that completed, and the system was restarted for the next case.\n"
        );
        for (case, stem, reason) in failed {
            let _ = writeln!(md, "- {case}, {stem}: {reason}");
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_round_is_recorded_and_reported() {
        let out = tempfile::tempdir().unwrap();
        let err = WorkloadError::Results {
            context: "ycsb-e".into(),
            message: "no leader within 10 s".into(),
        };
        record_failure(out.path(), "ycsb-e", "metcd-bitcask", 3, &err).unwrap();
        let found = failures(out.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "ycsb-e");
        assert_eq!(found[0].1, "metcd-bitcask-r3");
        assert!(found[0].2.contains("no leader within 10 s"), "{found:?}");
        let md = comparison(out.path()).unwrap();
        assert!(md.contains("## Failed rounds"), "{md}");
        assert!(
            md.contains("- ycsb-e, metcd-bitcask-r3: ") && md.contains("no leader"),
            "{md}"
        );
    }
}
