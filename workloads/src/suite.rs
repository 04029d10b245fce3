//! A suite: every chosen workload on every chosen engine, into one run
//! directory.
//!
//! Order of events, so that failures come early and results stay clean:
//!
//! 1. the results directory is created and proven writable (a probe file is
//!    written and removed) before anything is measured;
//! 2. the machine is calibrated against the data directory and
//!    `machine.json` is written;
//! 3. for each workload and engine: a fresh temporary directory under the
//!    data directory, the engine opened in it, load phase, run phase, the
//!    result document written to `<workload>/<engine>.json`, the engine
//!    closed and its directory removed;
//! 4. `summary.md` files, plots and `index.md` are written from the JSON.
//!
//! With a cluster instead of engines, step 3 targets the running cluster
//! at the given endpoints, or starts a fresh 3-node cluster per workload in
//! a temporary directory under the data directory (so the calibration's
//! fdatasync is measured on the cluster's filesystem) and stops it after.
//!
//! An engine that fails (cannot open, or an operation errors) is reported
//! and skipped; the others still run, and the suite reports the failures at
//! the end so the caller can exit non-zero.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use engines::{EngineKind, EngineOptions};

use crate::cluster_target::ClusterTarget;
use crate::error::{IoContext, Result, WorkloadError};
use crate::machine::{Machine, format_nanos};
use crate::report::{MACHINE_FILE, write_reports};
use crate::results::{ResultDocument, RunContext};
use crate::runner;
use crate::spec::WorkloadSpec;
use crate::target::{EngineTarget, Target};

/// What to run and where.
#[derive(Debug, Clone)]
pub struct Suite {
    pub specs: Vec<WorkloadSpec>,
    pub engines: Vec<EngineKind>,
    /// The run directory (`results/<run>`).
    pub out_dir: PathBuf,
    /// Where the per-run engine directories are created (default: the
    /// system's temporary directory).
    pub data_dir: PathBuf,
    pub engine_options: EngineOptions,
    /// Run against a metcd cluster instead of `engines`.
    pub cluster: Option<ClusterChoice>,
}

/// Which metcd cluster a suite runs against.
#[derive(Debug, Clone)]
pub enum ClusterChoice {
    /// A running cluster's client endpoints (`host:port`); its results are
    /// named `metcd`.
    Endpoints(Vec<String>),
    /// Three `metcd` processes of `engine` started for each workload.
    Spawn { engine: EngineKind, metcd: PathBuf },
}

impl ClusterChoice {
    fn name(&self) -> String {
        match self {
            ClusterChoice::Endpoints(_) => "metcd".to_string(),
            ClusterChoice::Spawn { engine, .. } => format!("metcd-{}", engine.name()),
        }
    }
}

/// One (workload, engine) that did not produce a result.
#[derive(Debug, Clone)]
pub struct Failure {
    pub workload: String,
    pub engine: String,
    pub error: String,
}

/// Creates `dir` if needed and proves that files can be created in it.
pub fn ensure_writable(dir: &Path) -> Result<()> {
    let fail = |reason: String| WorkloadError::ResultsNotWritable {
        dir: dir.to_path_buf(),
        reason,
    };
    fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
    let probe = dir.join(".write-probe");
    fs::write(&probe, b"probe").map_err(|e| fail(format!("cannot create a file in it: {e}")))?;
    fs::remove_file(&probe).map_err(|e| fail(format!("cannot remove a file from it: {e}")))
}

impl Suite {
    /// Runs everything; returns the failures (empty when all succeeded).
    pub fn run(&self) -> Result<Vec<Failure>> {
        ensure_writable(&self.out_dir)?;
        for spec in &self.specs {
            ensure_writable(&self.out_dir.join(&spec.name))?;
        }
        fs::create_dir_all(&self.data_dir)
            .context(|| format!("cannot create data directory {}", self.data_dir.display()))?;
        let machine = Machine::calibrate(&self.data_dir)?;
        eprintln!("machine: {}", machine.summary());
        let machine_json =
            serde_json::to_string_pretty(&machine).map_err(|e| WorkloadError::Results {
                context: "serializing machine.json".into(),
                message: e.to_string(),
            })?;
        let machine_path = self.out_dir.join(MACHINE_FILE);
        fs::write(&machine_path, machine_json + "\n")
            .context(|| format!("cannot write {}", machine_path.display()))?;

        let mut failures = Vec::new();
        for spec in &self.specs {
            eprintln!("workload {}: {}", spec.name, spec.settings_line());
            if let Some(cluster) = &self.cluster {
                if let Err(e) = self.run_cluster(spec, cluster, &machine) {
                    eprintln!("  {:<8} FAILED: {e}", cluster.name());
                    failures.push(Failure {
                        workload: spec.name.clone(),
                        engine: cluster.name(),
                        error: e.to_string(),
                    });
                }
                continue;
            }
            for &kind in &self.engines {
                if let Err(e) = self.run_one(spec, kind, &machine) {
                    eprintln!("  {:<8} FAILED: {e}", kind.name());
                    failures.push(Failure {
                        workload: spec.name.clone(),
                        engine: kind.name().to_string(),
                        error: e.to_string(),
                    });
                }
            }
        }
        write_reports(&self.out_dir)?;
        Ok(failures)
    }

    fn run_one(&self, spec: &WorkloadSpec, kind: EngineKind, machine: &Machine) -> Result<()> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("metcd-{}-{}-", spec.name, kind.name()))
            .tempdir_in(&self.data_dir)
            .context(|| {
                format!(
                    "cannot create a temporary directory in {}",
                    self.data_dir.display()
                )
            })?;
        let started_at = SystemTime::now();
        let target = EngineTarget::open(kind, dir.path(), &self.engine_options)?;
        self.measure(spec, &target, machine, started_at)?;
        drop(target);
        dir.close().context(|| {
            format!(
                "cannot remove the engine's temporary directory for {}",
                kind.name()
            )
        })
    }

    fn run_cluster(
        &self,
        spec: &WorkloadSpec,
        cluster: &ClusterChoice,
        machine: &Machine,
    ) -> Result<()> {
        let started_at = SystemTime::now();
        let target = match cluster {
            ClusterChoice::Endpoints(endpoints) => {
                ClusterTarget::connect_to(endpoints, &cluster.name(), spec.read_consistency)?
            }
            ClusterChoice::Spawn { engine, metcd } => {
                ClusterTarget::spawn(metcd, *engine, &self.data_dir, spec.read_consistency)?
            }
        };
        self.measure(spec, &target, machine, started_at)
    }

    /// Load and run phases on `target`, then its result document.
    fn measure(
        &self,
        spec: &WorkloadSpec,
        target: &dyn Target,
        machine: &Machine,
        started_at: SystemTime,
    ) -> Result<()> {
        let name = target.name();
        let label = format!("{} {}", spec.name, name);
        let measurement = runner::run(spec, target, &label)?;
        let document = ResultDocument::build(
            RunContext {
                spec,
                target_name: name.clone(),
                target_description: target.description(),
                machine,
                started_at,
                durability_override: target.durability_override(),
            },
            &measurement,
        )?;
        let path = self.out_dir.join(&spec.name).join(format!("{name}.json"));
        document.write(&path)?;
        let replication = document.replication.as_ref().map_or(String::new(), |r| {
            format!(
                "  WAL fsyncs/write leader {} cluster {}",
                r.leader_fsyncs_per_write
                    .map_or("n/a".to_string(), |v| format!("{v:.3}")),
                r.cluster_fsyncs_per_write
                    .map_or("n/a".to_string(), |v| format!("{v:.3}")),
            )
        });
        eprintln!(
            "  {:<8} {:>10.0} ops/s  p50 {:>10}  p99 {:>10}  p99.9 {:>10}  space amp {}  write amp {}{replication}",
            name,
            document.run.throughput_ops_per_sec,
            format_nanos(document.overall.p50_ns),
            format_nanos(document.overall.p99_ns),
            format_nanos(document.overall.p999_ns),
            document
                .storage
                .space_amplification
                .map_or("n/a".to_string(), |v| format!("{v:.2}")),
            document
                .io
                .write_amplification
                .map_or("n/a".to_string(), |v| format!("{v:.2}")),
        );
        Ok(())
    }
}
