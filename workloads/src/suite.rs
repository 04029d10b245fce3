//! A suite: every chosen workload on every chosen engine, into one run
//! directory.
//!
//! Order of events, so that failures come early and results stay clean:
//!
//! 1. the results directory is created and proven writable (a probe file is
//!    written and removed) before anything is measured;
//! 2. the machine is calibrated against the data directory and
//!    `machine.json` is written; a data directory on tmpfs (or ramfs) is
//!    refused for workloads whose writes sync, since `fsync` costs nothing
//!    there and the results would say nothing about durability, unless the
//!    caller allows it (`--allow-tmpfs`);
//! 3. for each workload and engine: a fresh temporary directory under the
//!    data directory, the engine opened in it, load phase, settle, run
//!    phase, settle, the result document written to
//!    `<workload>/<engine>.json`, the engine closed and its directory
//!    removed. A workload with `memory_limit_mib` runs each engine in a
//!    child process inside a memory cgroup of that size (see
//!    [`crate::memory_limit`]); the memory engine, which holds the data set
//!    in RAM, is skipped there;
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
use std::process::Command;
use std::time::SystemTime;

use engines::{EngineKind, EngineOptions};
use serde::{Deserialize, Serialize};

use crate::cluster_target::ClusterTarget;
use crate::error::{IoContext, Result, WorkloadError};
use crate::etcd_target::{EtcdTarget, Member as EtcdMember};
use crate::machine::{Machine, format_nanos, is_memory_filesystem};
use crate::memory_limit::{self, LimitFiles, MemoryCgroup, MemoryLimitInfo};
use crate::report::{MACHINE_FILE, write_reports};
use crate::results::{ResultDocument, RunContext};
use crate::runner;
use crate::spec::{DurabilityMode, WorkloadSpec};
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
    /// Run workloads whose writes sync even on tmpfs.
    pub allow_tmpfs: bool,
}

/// Which metcd cluster a suite runs against.
#[derive(Debug, Clone)]
pub enum ClusterChoice {
    /// A running cluster's client endpoints (`host:port`); its results are
    /// named `metcd`.
    Endpoints(Vec<String>),
    /// Three `metcd` processes of `engine` started for each workload.
    Spawn { engine: EngineKind, metcd: PathBuf },
    /// A running server of etcd's v3 gRPC API (real etcd or metcd), named
    /// `name` in the results and described as `system`, driven through
    /// `connections` gRPC connections.
    EtcdV3 {
        name: String,
        system: String,
        members: Vec<EtcdMember>,
        connections: usize,
    },
}

impl ClusterChoice {
    fn name(&self) -> String {
        match self {
            ClusterChoice::Endpoints(_) => "metcd".to_string(),
            ClusterChoice::Spawn { engine, .. } => format!("metcd-{}", engine.name()),
            ClusterChoice::EtcdV3 { name, .. } => name.clone(),
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
        self.refuse_memory_filesystem(&machine)?;
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
                if spec.memory_limit_mib.is_some() && kind == EngineKind::Memory {
                    eprintln!(
                        "  {:<8} skipped: it holds the whole data set in RAM, which the memory limit forbids",
                        kind.name()
                    );
                    continue;
                }
                let outcome = match spec.memory_limit_mib {
                    Some(mib) => self.run_isolated(spec, kind, &machine, mib << 20),
                    None => self.run_one(spec, kind, &machine, None, &mut || Ok(())),
                };
                if let Err(e) = outcome {
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

    /// Refuses durable modes on a memory filesystem unless allowed.
    fn refuse_memory_filesystem(&self, machine: &Machine) -> Result<()> {
        let fs = &machine.filesystem;
        if self.allow_tmpfs || !is_memory_filesystem(&fs.fs_type) {
            return Ok(());
        }
        let syncing: Vec<&str> = self
            .specs
            .iter()
            .filter(|s| self.cluster.is_some() || s.durability != DurabilityMode::None)
            .map(|s| s.name.as_str())
            .collect();
        if syncing.is_empty() {
            return Ok(());
        }
        Err(WorkloadError::Refused(format!(
            "the data directory {} is on {} ({}), where fsync costs nothing, so the durable writes of {} \
             would measure no durability at all; pass --data-dir on a disk (e.g. /var/tmp), \
             --durability none, or --allow-tmpfs to run anyway",
            machine.data_dir.display(),
            fs.fs_type,
            fs.mount_point,
            syncing.join(", ")
        )))
    }

    /// Runs one engine in a child `workbench run-job` process inside a
    /// memory cgroup of `limit_bytes`.
    fn run_isolated(
        &self,
        spec: &WorkloadSpec,
        kind: EngineKind,
        machine: &Machine,
        limit_bytes: u64,
    ) -> Result<()> {
        let cgroup = MemoryCgroup::create(limit_bytes)?;
        let job = Job {
            spec: spec.clone(),
            engine: kind,
            engine_options: self.engine_options.clone(),
            out_dir: self.out_dir.clone(),
            data_dir: self.data_dir.clone(),
            machine: machine.clone(),
            procs_file: cgroup.procs_file(),
            limit_files: cgroup.limit_files(),
            limit: cgroup.info(),
        };
        let job_file = tempfile::Builder::new()
            .prefix("metcd-job-")
            .suffix(".json")
            .tempfile_in(&self.data_dir)
            .context(|| format!("cannot create a job file in {}", self.data_dir.display()))?;
        let text = serde_json::to_string(&job).map_err(|e| WorkloadError::Results {
            context: "serializing a job".into(),
            message: e.to_string(),
        })?;
        fs::write(job_file.path(), text)
            .context(|| format!("cannot write {}", job_file.path().display()))?;
        let exe = std::env::current_exe()
            .context(|| "cannot find the workbench executable to run a job".to_string())?;
        let status = Command::new(&exe)
            .arg("run-job")
            .arg(job_file.path())
            .status()
            .context(|| format!("cannot start {}", exe.display()))?;
        if !status.success() {
            let oom = cgroup.oom_kills().unwrap_or(0);
            let why = if oom > 0 {
                format!(
                    "killed by the kernel's OOM killer: its own memory (caches, memtables, key \
                     directory) needed more than the {} MiB limit, page cache aside",
                    limit_bytes >> 20
                )
            } else {
                format!("the child process failed ({status})")
            };
            return Err(WorkloadError::Target {
                target: kind.name().to_string(),
                operation: format!("{} in a memory cgroup", spec.name),
                message: why,
            });
        }
        // The child wrote the document; add the cgroup's peak usage.
        let path = self
            .out_dir
            .join(&spec.name)
            .join(format!("{}.json", kind.name()));
        let mut document = ResultDocument::read(&path)?;
        document.memory.limit = Some(cgroup.info());
        document.write(&path)
    }

    fn run_one(
        &self,
        spec: &WorkloadSpec,
        kind: EngineKind,
        machine: &Machine,
        memory_limit: Option<MemoryLimitInfo>,
        after_load: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
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
        self.measure(spec, &target, machine, started_at, memory_limit, after_load)?;
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
            ClusterChoice::EtcdV3 {
                name,
                system,
                members,
                connections,
            } => {
                let target = EtcdTarget::connect(
                    name,
                    system,
                    members.clone(),
                    // At most one connection per client thread.
                    (*connections).min(spec.threads.max(1)),
                    spec.read_consistency,
                )?;
                return self.measure(spec, &target, machine, started_at, None, &mut || Ok(()));
            }
        };
        self.measure(spec, &target, machine, started_at, None, &mut || Ok(()))
    }

    /// Load and run phases on `target`, then its result document.
    fn measure(
        &self,
        spec: &WorkloadSpec,
        target: &dyn Target,
        machine: &Machine,
        started_at: SystemTime,
        memory_limit: Option<MemoryLimitInfo>,
        after_load: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let name = target.name();
        let label = format!("{} {}", spec.name, name);
        let measurement = runner::run_with(spec, target, &label, after_load)?;
        let document = ResultDocument::build(
            RunContext {
                spec,
                target_name: name.clone(),
                target_description: target.description(),
                machine,
                started_at,
                durability_override: target.durability_override(),
                sync_primitive: target.sync_primitive(),
                memory_limit,
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
        let capped = if document.run.capped {
            format!(
                "  CAPPED after {} of {} operations",
                document.run.executed_operations,
                spec.operation_count.unwrap_or(0) + spec.warmup_operations
            )
        } else {
            String::new()
        };
        eprintln!(
            "  {:<8} {:>10.0} ops/s  p50 {:>10}  p99 {:>10}  p99.9 {:>10}  records {}  space amp {}  write amp {}  settled {:.1} s{replication}{capped}",
            name,
            document.run.throughput_ops_per_sec,
            format_nanos(document.overall.p50_ns),
            format_nanos(document.overall.p99_ns),
            format_nanos(document.overall.p999_ns),
            document.storage.keys,
            document
                .storage
                .space_amplification
                .map_or("n/a".to_string(), |v| format!("{v:.2}")),
            document
                .io
                .write_amplification
                .map_or("n/a".to_string(), |v| format!("{v:.2}")),
            document.settle.after_load.seconds,
        );
        Ok(())
    }
}

/// What a child `workbench run-job` process runs: one workload on one
/// engine inside a memory cgroup, its result written where the suite
/// expects it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub spec: WorkloadSpec,
    pub engine: EngineKind,
    pub engine_options: EngineOptions,
    pub out_dir: PathBuf,
    pub data_dir: PathBuf,
    pub machine: Machine,
    /// The cgroup to join before anything else.
    pub procs_file: PathBuf,
    /// Where to tighten the limit once the load is done.
    pub limit_files: LimitFiles,
    pub limit: MemoryLimitInfo,
}

/// The child's side of [`Suite`]'s memory-limited runs: joins the cgroup,
/// then loads, runs and writes the result like any other run.
pub fn run_job(job_file: &Path) -> Result<()> {
    let text = fs::read_to_string(job_file)
        .context(|| format!("cannot read job file {}", job_file.display()))?;
    let job: Job = serde_json::from_str(&text).map_err(|e| WorkloadError::Results {
        context: format!("{} is not a job file", job_file.display()),
        message: e.to_string(),
    })?;
    memory_limit::join(&job.procs_file)?;
    let suite = Suite {
        specs: vec![job.spec.clone()],
        engines: vec![job.engine],
        out_dir: job.out_dir,
        data_dir: job.data_dir,
        engine_options: job.engine_options,
        cluster: None,
        allow_tmpfs: true,
    };
    let (files, final_limit) = (job.limit_files.clone(), job.limit.limit_bytes);
    suite.run_one(
        &job.spec,
        job.engine,
        &job.machine,
        Some(job.limit),
        &mut || {
            memory_limit::release_free_heap();
            files.set(final_limit)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Filesystem, FsyncLatency};
    use crate::spec::resolve_one;

    fn machine_on(fs_type: &str) -> Machine {
        Machine {
            cpu_model: "test".into(),
            cores: 2,
            memory_bytes: 1 << 30,
            kernel: "test".into(),
            data_dir: PathBuf::from("/dev/shm/data"),
            filesystem: Filesystem {
                mount_point: "/dev/shm".into(),
                device: "tmpfs".into(),
                fs_type: fs_type.into(),
                options: String::new(),
            },
            fdatasync: FsyncLatency {
                rounds: 0,
                write_bytes: 0,
                p50_ns: 0,
                p99_ns: 0,
                max_ns: 0,
            },
        }
    }

    fn suite(durability: DurabilityMode, allow_tmpfs: bool) -> Suite {
        let mut spec = resolve_one("read-heavy").unwrap();
        spec.durability = durability;
        Suite {
            specs: vec![spec],
            engines: vec![EngineKind::Memory],
            out_dir: PathBuf::from("unused"),
            data_dir: PathBuf::from("unused"),
            engine_options: EngineOptions::default(),
            cluster: None,
            allow_tmpfs,
        }
    }

    #[test]
    fn durable_modes_on_tmpfs_are_refused_unless_allowed() {
        let tmpfs = machine_on("tmpfs");
        let err = suite(DurabilityMode::Batched, false)
            .refuse_memory_filesystem(&tmpfs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tmpfs") && err.contains("--allow-tmpfs") && err.contains("read-heavy"),
            "{err}"
        );
        assert!(
            suite(DurabilityMode::Sync, false)
                .refuse_memory_filesystem(&tmpfs)
                .is_err()
        );
        // Asked for explicitly, or nothing synced, or on a disk: allowed.
        assert!(
            suite(DurabilityMode::Batched, true)
                .refuse_memory_filesystem(&tmpfs)
                .is_ok()
        );
        assert!(
            suite(DurabilityMode::None, false)
                .refuse_memory_filesystem(&tmpfs)
                .is_ok()
        );
        assert!(
            suite(DurabilityMode::Batched, false)
                .refuse_memory_filesystem(&machine_on("ext4"))
                .is_ok()
        );
    }
}
