//! The results schema: one JSON document per (workload, target), versioned.
//!
//! A [`ResultDocument`] holds everything needed to trust, compare and redraw
//! a result without rerunning it: the complete spec (so every parameter and
//! the durability policy), the target's description and sync primitive, the
//! machine calibration and the memory the target could use, the load phase
//! and the two settling waits, the throughput of the run phase (and whether
//! it was capped), latency percentiles per operation type and overall, the
//! open loop's start lag, the serialized histograms (HdrHistogram V2 format,
//! base64) from which every percentile and plot can be recomputed, the
//! per-second time series, the records at the end, bytes on disk (apparent
//! and allocated: space amplification), bytes written to the device (write
//! amplification) and bytes read from it per get.
//!
//! The layout of a run directory is fixed (the book and the README link into
//! it) and documented with the schema in `results/README.md`:
//!
//! ```text
//! results/<run>/index.md  machine.json  <workload>/<target>.json  <workload>/summary.md  <workload>/*.svg
//! ```
//!
//! [`SCHEMA_VERSION`] changes whenever a field changes meaning or goes away;
//! readers refuse documents of another version instead of misreading them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, WorkloadError};
use crate::machine::Machine;
use crate::memory_limit::MemoryLimitInfo;
use crate::runner::{LoadSummary, Measurement, SettleSummary, new_histogram};
use crate::spec::{Durability, WorkloadSpec};

/// Version of the document layout below.
pub const SCHEMA_VERSION: u32 = 2;

/// What `io.note` says in every document.
pub const WRITE_AMPLIFICATION_NOTE: &str = "device_write_bytes is the growth of write_bytes in /proc/self/io over the run phase and its final sync: \
     bytes this process sent to the storage layer, counted when pages are dirtied, including every \
     background thread of the engine (flushes, compactions, possibly left over from the load phase). \
     logical_write_bytes is key + value bytes of the run phase's writes, warm-up included. \
     The settles' writes (after the load, after the run) are counted apart; write_amplification_with_settle adds \
     the second one, the compaction debt the run left. device_read_bytes is the growth of read_bytes over the \
     run phase: bytes read from the device, page-cache hits excluded.";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultDocument {
    pub schema_version: u32,
    /// The workload's name (the directory the document lives in).
    pub workload: String,
    /// What ran: `target.name` is the file name and the plots' legend.
    pub target: TargetInfo,
    /// Every parameter of the run, overrides applied.
    pub spec: WorkloadSpec,
    pub durability: DurabilityInfo,
    /// UTC start of the load phase, ISO 8601.
    pub started_at: String,
    pub harness: HarnessInfo,
    pub machine: Machine,
    /// The memory the target could use, and the data set against it.
    pub memory: MemoryInfo,
    pub load: LoadSummary,
    /// The settling waits after the load and after the run phase.
    pub settle: SettleInfo,
    pub run: RunSummary,
    /// All operation types together.
    pub overall: LatencySummary,
    /// Per operation type (`read`, `update`, `insert`, `scan`,
    /// `read-modify-write`, `delete`), only those that ran.
    pub operations: BTreeMap<String, LatencySummary>,
    /// Open loop only: actual minus intended start of each recorded
    /// operation (the harness's own lag, already inside every latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lag: Option<LatencySummary>,
    /// One point per second after the warm-up.
    pub timeline: Vec<TimelinePoint>,
    pub storage: StorageSummary,
    pub io: IoSummary,
    /// Replicated targets only (the metcd cluster): WAL fsyncs per
    /// acknowledged write over the run phase. Absent for embedded engines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationSummary>,
}

/// What a replicated target's members did during the run phase (warm-up
/// included), from each member's status before and after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationSummary {
    /// Writes of the run phase that the cluster acknowledged (warm-up
    /// included, as the members' counters cannot separate them).
    pub acknowledged_writes: u64,
    /// The member that led at the end of the run phase.
    pub leader_id: u64,
    pub leader_wal_fsyncs: u64,
    /// Every member's WAL fsyncs added up.
    pub cluster_wal_fsyncs: u64,
    /// `leader_wal_fsyncs / acknowledged_writes`: below 1 when the leader
    /// batches several writes into one fdatasync.
    pub leader_fsyncs_per_write: Option<f64>,
    /// `cluster_wal_fsyncs / acknowledged_writes`.
    pub cluster_fsyncs_per_write: Option<f64>,
    /// Mean time of one WAL fdatasync on the leader during the run phase.
    pub leader_mean_wal_fdatasync_ns: Option<f64>,
    pub members: Vec<MemberFsyncs>,
    /// CPU seconds (user + system) all members' processes used during the
    /// run phase, when the harness knows their pids (it started them).
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// CPU seconds the harness itself (the load generator: its client
    /// threads and their gRPC or HTTP stack) used over the same phase, on
    /// the same machine: what the members could not have.
    #[serde(default)]
    pub client_cpu_seconds: Option<f64>,
}

impl ReplicationSummary {
    /// The run phase's replication from every member's WAL counters before
    /// it and after it (`after` says who led at the end).
    pub fn between(
        leader_id: u64,
        before: &[MemberFsyncs],
        after: Vec<MemberFsyncs>,
        acknowledged_writes: u64,
    ) -> ReplicationSummary {
        let members: Vec<MemberFsyncs> = after
            .into_iter()
            .map(|mut m| {
                if let Some(b) = before.iter().find(|b| b.id == m.id) {
                    m.wal_fsyncs = m.wal_fsyncs.saturating_sub(b.wal_fsyncs);
                    m.wal_fsync_micros = m.wal_fsync_micros.saturating_sub(b.wal_fsync_micros);
                    m.cpu_seconds = m
                        .cpu_seconds
                        .zip(b.cpu_seconds)
                        .map(|(a, b)| (a - b).max(0.0));
                } else {
                    m.cpu_seconds = None;
                }
                m
            })
            .collect();
        let per_write = |fsyncs: u64| {
            (acknowledged_writes > 0).then(|| fsyncs as f64 / acknowledged_writes as f64)
        };
        let leader = members.iter().find(|m| m.id == leader_id);
        let leader_wal_fsyncs = leader.map_or(0, |m| m.wal_fsyncs);
        let cluster_wal_fsyncs = members.iter().map(|m| m.wal_fsyncs).sum();
        ReplicationSummary {
            acknowledged_writes,
            leader_id,
            leader_wal_fsyncs,
            cluster_wal_fsyncs,
            leader_fsyncs_per_write: per_write(leader_wal_fsyncs),
            cluster_fsyncs_per_write: per_write(cluster_wal_fsyncs),
            leader_mean_wal_fdatasync_ns: leader
                .filter(|m| m.wal_fsyncs > 0)
                .map(|m| m.wal_fsync_micros as f64 * 1e3 / m.wal_fsyncs as f64),
            cpu_seconds: members.iter().map(|m| m.cpu_seconds).sum::<Option<f64>>(),
            client_cpu_seconds: None,
            members,
        }
    }
}

/// One member's WAL counters over the run phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberFsyncs {
    pub id: u64,
    /// `leader` or `follower` at the end of the run phase.
    pub role: String,
    pub endpoint: String,
    pub wal_fsyncs: u64,
    /// Microseconds spent in WAL fdatasync.
    pub wal_fsync_micros: u64,
    /// The member process's CPU seconds (user + system), when its pid is
    /// known: a running total in the counters, the run phase's share in a
    /// summary.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
}

/// CPU seconds (user + system) process `pid` has used, from
/// `/proc/<pid>/stat`; `None` if it cannot be read.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DurabilityInfo {
    #[serde(flatten)]
    pub policy: Durability,
    /// The policy in words, as printed in tables and plots.
    pub description: String,
    /// The system call behind a durable write of this target.
    pub sync_primitive: String,
}

/// Both settling waits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettleInfo {
    pub after_load: SettleSummary,
    pub after_run: SettleSummary,
}

/// Memory: the machine's, the limit the target ran under, and the data set
/// against it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryInfo {
    pub machine_bytes: u64,
    /// The memory cgroup the target ran in (`memory_limit_mib`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<MemoryLimitInfo>,
    /// The data set after the run: allocated bytes on disk, or the live key
    /// and value bytes of a target without files.
    pub data_set_bytes: u64,
    /// `data_set_bytes` / (the limit, or else the machine's memory).
    pub data_set_to_memory: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HarnessInfo {
    pub version: String,
    /// `closed` or `open`.
    pub loop_mode: String,
    /// Open loop: latency counted from the intended start time.
    pub coordinated_omission_corrected: bool,
    pub histogram_significant_digits: u8,
    pub latency_unit: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Measured operations (after warm-up).
    pub operations: u64,
    /// Operations executed, warm-up included.
    pub executed_operations: u64,
    /// Whether a count-bound run stopped at its time cap (`time_cap_secs`)
    /// before executing all its operations: its end state then differs
    /// from the other engines'.
    pub capped: bool,
    /// Seconds from the end of warm-up to the last measured operation.
    pub seconds: f64,
    pub throughput_ops_per_sec: f64,
    /// Reads that found no value (e.g. a key being inserted by another thread).
    pub read_misses: u64,
    /// `sync()` calls issued by the durability policy.
    pub syncs: u64,
}

/// Latency of one operation type, in nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ns: f64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub p9999_ns: u64,
    pub max_ns: u64,
    /// HdrHistogram V2 serialization (uncompressed), base64 (standard
    /// alphabet, padded).
    pub histogram: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the end of warm-up at which this second starts.
    pub second: u64,
    pub operations: u64,
    /// Operations divided by the length of the second (the last one may be
    /// partial).
    pub throughput_ops_per_sec: f64,
    pub p99_ns: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageSummary {
    /// Records at the end of the run (after the settle).
    pub keys: u64,
    /// Live key + value bytes (`Engine::status`).
    pub logical_bytes: u64,
    /// Sum of the lengths of the engine's files after the run settled;
    /// `null` for targets without files.
    pub apparent_bytes: Option<u64>,
    /// Blocks allocated to those files (`st_blocks × 512`).
    pub allocated_bytes: Option<u64>,
    /// `allocated_bytes / logical_bytes`.
    pub space_amplification: Option<f64>,
    /// `apparent_bytes / logical_bytes`.
    pub apparent_space_amplification: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IoSummary {
    pub logical_write_bytes: u64,
    pub device_write_bytes: Option<u64>,
    /// `device_write_bytes / logical_write_bytes`; `null` for targets
    /// without files (memory) or when either count is unknown or zero.
    pub write_amplification: Option<f64>,
    /// `(device_write_bytes + settle.after_run.device_write_bytes) /
    /// logical_write_bytes`.
    pub write_amplification_with_settle: Option<f64>,
    /// Point reads of the run phase (read and read-modify-write), warm-up
    /// included, as the device counter cannot separate them.
    pub gets: u64,
    pub device_read_bytes: Option<u64>,
    /// `device_read_bytes / gets`.
    pub device_read_bytes_per_get: Option<f64>,
    pub note: String,
}

impl LatencySummary {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Result<LatencySummary> {
        Ok(LatencySummary {
            count: histogram.len(),
            mean_ns: histogram.mean(),
            min_ns: histogram.min(),
            p50_ns: histogram.value_at_quantile(0.5),
            p90_ns: histogram.value_at_quantile(0.9),
            p99_ns: histogram.value_at_quantile(0.99),
            p999_ns: histogram.value_at_quantile(0.999),
            p9999_ns: histogram.value_at_quantile(0.9999),
            max_ns: histogram.max(),
            histogram: encode_histogram(histogram)?,
        })
    }

    /// The percentiles in order, for monotonicity checks and plots.
    pub fn percentiles(&self) -> [(&'static str, u64); 6] {
        [
            ("p50", self.p50_ns),
            ("p90", self.p90_ns),
            ("p99", self.p99_ns),
            ("p99.9", self.p999_ns),
            ("p99.99", self.p9999_ns),
            ("max", self.max_ns),
        ]
    }

    pub fn decode(&self) -> Result<Histogram<u64>> {
        decode_histogram(&self.histogram)
    }
}

/// HdrHistogram V2 bytes, base64.
pub fn encode_histogram(histogram: &Histogram<u64>) -> Result<String> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .map_err(|e| WorkloadError::Results {
            context: "serializing a histogram".into(),
            message: format!("{e:?}"),
        })?;
    Ok(BASE64.encode(bytes))
}

pub fn decode_histogram(text: &str) -> Result<Histogram<u64>> {
    let failed = |message: String| WorkloadError::Results {
        context: "decoding a histogram".into(),
        message,
    };
    let bytes = BASE64.decode(text).map_err(|e| failed(e.to_string()))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| failed(format!("{e:?}")))
}

/// What the runner cannot know: who ran, where and when.
pub struct RunContext<'a> {
    pub spec: &'a WorkloadSpec,
    pub target_name: String,
    pub target_description: String,
    pub machine: &'a Machine,
    pub started_at: SystemTime,
    /// How the target makes writes durable, when the harness's policy does
    /// not apply to it (a cluster acknowledges only after a WAL fsync).
    pub durability_override: Option<String>,
    /// The system call behind a durable write (`Target::sync_primitive`).
    pub sync_primitive: String,
    /// The memory cgroup the target ran in, if any.
    pub memory_limit: Option<MemoryLimitInfo>,
}

impl ResultDocument {
    pub fn build(context: RunContext<'_>, measurement: &Measurement) -> Result<ResultDocument> {
        let spec = context.spec;
        let mut overall = new_histogram();
        let mut operations = BTreeMap::new();
        for (kind, histogram) in &measurement.by_operation {
            let _ = overall.add(histogram);
            operations.insert(
                kind.name().to_string(),
                LatencySummary::from_histogram(histogram)?,
            );
        }
        let timeline = measurement
            .timeline
            .iter()
            .enumerate()
            .map(|(i, second)| {
                let length = (measurement.seconds - i as f64).clamp(1e-3, 1.0);
                TimelinePoint {
                    second: i as u64,
                    operations: second.operations,
                    throughput_ops_per_sec: second.operations as f64 / length,
                    p99_ns: second.latency.value_at_quantile(0.99),
                }
            })
            .collect();
        let status = &measurement.status;
        let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        let durability = spec.durability();
        let start_lag = measurement
            .start_lag
            .as_ref()
            .map(LatencySummary::from_histogram)
            .transpose()?;
        let allocated = status.disk.map(|d| d.allocated);
        let data_set_bytes = allocated.unwrap_or(status.logical_bytes);
        let memory_bytes = context
            .memory_limit
            .as_ref()
            .map_or(context.machine.memory_bytes, |l| l.limit_bytes);
        let with_settle = measurement
            .device_write_bytes
            .map(|run| run + measurement.settle_after_run.device_write_bytes.unwrap_or(0));
        Ok(ResultDocument {
            schema_version: SCHEMA_VERSION,
            workload: spec.name.clone(),
            target: TargetInfo {
                name: context.target_name,
                description: context.target_description,
            },
            spec: spec.clone(),
            durability: DurabilityInfo {
                policy: durability,
                description: context
                    .durability_override
                    .unwrap_or_else(|| durability.to_string()),
                sync_primitive: context.sync_primitive,
            },
            started_at: iso_timestamp(context.started_at),
            harness: HarnessInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                loop_mode: if spec.rate.is_some() {
                    "open"
                } else {
                    "closed"
                }
                .to_string(),
                coordinated_omission_corrected: spec.rate.is_some(),
                histogram_significant_digits: crate::runner::SIGNIFICANT_DIGITS,
                latency_unit: "ns".to_string(),
            },
            machine: context.machine.clone(),
            memory: MemoryInfo {
                machine_bytes: context.machine.memory_bytes,
                limit: context.memory_limit,
                data_set_bytes,
                data_set_to_memory: ratio(data_set_bytes, memory_bytes),
            },
            load: measurement.load.clone(),
            settle: SettleInfo {
                after_load: measurement.settle_after_load.clone(),
                after_run: measurement.settle_after_run.clone(),
            },
            run: RunSummary {
                operations: measurement.operations,
                executed_operations: measurement.executed,
                capped: measurement.capped,
                seconds: measurement.seconds,
                throughput_ops_per_sec: measurement.operations as f64
                    / measurement.seconds.max(1e-9),
                read_misses: measurement.read_misses,
                syncs: measurement.syncs,
            },
            overall: LatencySummary::from_histogram(&overall)?,
            operations,
            start_lag,
            timeline,
            storage: StorageSummary {
                keys: status.keys,
                logical_bytes: status.logical_bytes,
                apparent_bytes: status.disk.map(|d| d.apparent),
                allocated_bytes: allocated,
                space_amplification: allocated.and_then(|d| ratio(d, status.logical_bytes)),
                apparent_space_amplification: status
                    .disk
                    .and_then(|d| ratio(d.apparent, status.logical_bytes)),
            },
            io: IoSummary {
                logical_write_bytes: measurement.logical_write_bytes,
                device_write_bytes: measurement.device_write_bytes,
                // A target without files writes nothing of its own to a
                // device; a ratio would only measure the harness.
                write_amplification: measurement
                    .device_write_bytes
                    .filter(|_| status.disk.is_some())
                    .and_then(|d| ratio(d, measurement.logical_write_bytes)),
                write_amplification_with_settle: with_settle
                    .filter(|_| status.disk.is_some())
                    .and_then(|d| ratio(d, measurement.logical_write_bytes)),
                gets: measurement.gets,
                device_read_bytes: measurement.device_read_bytes,
                device_read_bytes_per_get: measurement
                    .device_read_bytes
                    .and_then(|d| ratio(d, measurement.gets)),
                note: WRITE_AMPLIFICATION_NOTE.to_string(),
            },
            replication: measurement.replication.clone(),
        })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| WorkloadError::Results {
            context: format!("serializing {}", path.display()),
            message: e.to_string(),
        })?;
        fs::write(path, json + "\n").context(|| format!("cannot write {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<ResultDocument> {
        let text =
            fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
        let invalid = |message: String| WorkloadError::Results {
            context: format!("{} is not a result document", path.display()),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let version = value.get("schema_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(SCHEMA_VERSION)) {
            return Err(invalid(format!(
                "schema_version is {version:?}; this build reads version {SCHEMA_VERSION}"
            )));
        }
        serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
    }
}

/// Every result document of a run directory, grouped by workload, in
/// directory-name order.
pub fn read_run(run_dir: &Path) -> Result<BTreeMap<String, Vec<ResultDocument>>> {
    let mut workloads = BTreeMap::new();
    let entries = fs::read_dir(run_dir).context(|| format!("cannot list {}", run_dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let mut documents = Vec::new();
        for file in files {
            documents.push(ResultDocument::read(&file)?);
        }
        if let (false, Some(name)) = (
            documents.is_empty(),
            dir.file_name().and_then(|n| n.to_str()),
        ) {
            documents.sort_by_key(|d| engine_order(&d.target.name));
            workloads.insert(name.to_string(), documents);
        }
    }
    Ok(workloads)
}

/// Engines in the order the docs list them, other targets after.
fn engine_order(name: &str) -> (usize, String) {
    let position = engines::EngineKind::ALL
        .iter()
        .position(|k| k.name() == name)
        .unwrap_or(usize::MAX);
    (position, name.to_string())
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn utc_parts(time: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rest = secs % 86_400;
    (year, month, day, rest / 3600, rest / 60 % 60, rest % 60)
}

/// `2026-11-24T09:30:00Z`.
pub fn iso_timestamp(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(time);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `2026-11-24T09-30-00`: the default name of a run directory (UTC).
pub fn run_directory_name(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(time);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}-{mi:02}-{s:02}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn histograms_survive_base64_round_trips() {
        let mut h = new_histogram();
        for v in [1u64, 10, 1000, 123_456, 9_999_999] {
            h.record(v).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h).unwrap()).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert!(decode_histogram("not base64!").is_err());
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_512_600); // 2026-11-24 09:30:00 UTC
        assert_eq!(iso_timestamp(t), "2026-11-24T09:30:00Z");
        assert_eq!(run_directory_name(t), "2026-11-24T09-30-00");
        assert_eq!(iso_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&iso_timestamp(leap)[..10], "2000-02-29");
    }
}
