//! Workload specs: what a run does, read from TOML files or YCSB property
//! files, checked before anything runs.
//!
//! A [`WorkloadSpec`] fixes everything that decides the numbers: the
//! operation mix, how keys are chosen, how many records are loaded, how long
//! the run phase lasts, the warm-up, key and value sizes, the number of
//! client threads, closed or open loop, the durability mode, the seed, how
//! long engines may take to settle, and the memory the engine may use. The
//! complete spec is copied into every result document, so a result can
//! always be traced to its settings.
//!
//! ## How long a run phase lasts
//!
//! * **By operation count** (`operation_count`, YCSB's `operationcount`),
//!   the default of every built-in engine spec: every engine executes the
//!   same `warmup_operations + operation_count` operations, so with the same
//!   seed every engine ends holding the same records and latency and space
//!   are compared on the same data set. `time_cap_secs` bounds a slow
//!   engine; a run that hits it is marked *capped* in every table, plot and
//!   log line, because its end state differs from the others'.
//! * **By duration** (`duration_secs`, with `warmup_secs`): faster engines
//!   execute more operations, insert more records and end larger. Still
//!   available (`--duration`) for questions about behaviour over time.
//!
//! Specs enter in three ways:
//!
//! * built-in names (`read-heavy`, `write-heavy`, `ycsb-a` ... `ycsb-f`),
//!   whose TOML files live in `workloads/specs/` and are compiled into the
//!   binary, so `workbench` runs from any directory;
//! * a path to a `.toml` file written by a user, in the same format;
//! * a path to any other file, read as a YCSB property file (`workloada`
//!   style), so YCSB's own workload files run unchanged.
//!
//! Invariant: a spec that left [`WorkloadSpec::validate`] without an error
//! can be run; the runner does not re-check it. Every error names the file,
//! the field and what is accepted.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, WorkloadError};

/// The fraction of operations of each type; they sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mix {
    pub read: f64,
    pub update: f64,
    pub insert: f64,
    pub scan: f64,
    pub read_modify_write: f64,
    pub delete: f64,
}

impl Mix {
    /// The proportions with the names used in specs and errors.
    pub fn named(&self) -> [(&'static str, f64); 6] {
        [
            ("read", self.read),
            ("update", self.update),
            ("insert", self.insert),
            ("scan", self.scan),
            ("read_modify_write", self.read_modify_write),
            ("delete", self.delete),
        ]
    }

    /// "95% read, 5% update": the non-zero parts, for tables and subtitles.
    pub fn describe(&self) -> String {
        self.named()
            .iter()
            .filter(|(_, p)| *p > 0.0)
            .map(|(name, p)| format!("{}% {}", trim_float(p * 100.0), name.replace('_', "-")))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether any operation writes.
    pub fn writes(&self) -> bool {
        self.update + self.insert + self.read_modify_write + self.delete > 0.0
    }
}

/// How the run phase picks the key of each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistributionKind {
    /// Every existing record equally likely.
    Uniform,
    /// Zipfian popularity (item of rank k drawn with weight 1/k^theta);
    /// scrambled by default, so the popular items are spread over the key
    /// space instead of being the first records loaded.
    Zipfian,
    /// Zipfian over recency: the most recently inserted record is the most
    /// popular (YCSB's "latest", for workload D).
    Latest,
    /// A hot set of the loaded records gets a fixed share of the requests
    /// (YCSB's "hotspot").
    Hotspot,
}

impl DistributionKind {
    pub const VALID: &'static str = "uniform, zipfian, latest, hotspot";

    pub fn name(self) -> &'static str {
        match self {
            DistributionKind::Uniform => "uniform",
            DistributionKind::Zipfian => "zipfian",
            DistributionKind::Latest => "latest",
            DistributionKind::Hotspot => "hotspot",
        }
    }
}

/// When a write becomes durable. See [`Durability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    Sync,
    Batched,
    None,
}

impl DurabilityMode {
    pub const VALID: &'static str = "sync, batched, none";
}

/// How a replicated target serves reads. Embedded engines have one copy of
/// the data and ignore it.
///
/// * `linearizable` (default): the read reflects every write acknowledged
///   before it began (metcd confirms leadership with a quorum first);
/// * `serializable`: the member answers from its local copy at once,
///   possibly stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    #[default]
    Linearizable,
    Serializable,
}

impl ReadConsistency {
    pub const VALID: &'static str = "linearizable, serializable";

    pub fn name(self) -> &'static str {
        match self {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Serializable => "serializable",
        }
    }
}

impl FromStr for ReadConsistency {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "linearizable" => Ok(ReadConsistency::Linearizable),
            "serializable" => Ok(ReadConsistency::Serializable),
            _ => Err(format!(
                "unknown read consistency '{s}'; accepted: {}",
                ReadConsistency::VALID
            )),
        }
    }
}

impl FromStr for DurabilityMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sync" => Ok(DurabilityMode::Sync),
            "batched" => Ok(DurabilityMode::Batched),
            "none" => Ok(DurabilityMode::None),
            _ => Err(format!(
                "unknown durability mode '{s}'; accepted: {}",
                DurabilityMode::VALID
            )),
        }
    }
}

// ANCHOR: durability
/// The durability policy of the run phase, printed in every output.
///
/// * `sync`: every write is issued with `WriteOptions::SYNC`, so it is
///   durable (fsync'd by the engine) when the call returns; its latency
///   includes the engine's sync.
/// * `batched`: every write is issued with `WriteOptions::BUFFERED` (visible
///   to readers at once), and each client thread calls `sync()` on the
///   target right after the write that makes its count of unsynced writes
///   reach `batch_ops`, or after the first write that comes `batch_ms`
///   milliseconds or more after its oldest unsynced write, whichever happens
///   first. That write's measured latency includes the sync, as a client
///   waiting for a group commit would see it. A write is therefore durable
///   at most `batch_ops` writes or `batch_ms` ms (plus the next write) after
///   it returns, per thread.
/// * `none`: every write is buffered and the run phase never syncs; the
///   operating system and the engine's own background flushing decide.
///
/// In all modes the load phase writes buffered batches and syncs once at
/// its end, and the run phase ends with one untimed `sync()` before bytes on
/// disk and bytes written are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durability {
    pub mode: DurabilityMode,
    /// Writes per thread between syncs (mode `batched`).
    pub batch_ops: u64,
    /// Longest time, in milliseconds, a thread leaves a write unsynced
    /// before its next write syncs (mode `batched`).
    pub batch_ms: u64,
}
// ANCHOR_END: durability

impl Durability {
    pub const DEFAULT_BATCH_OPS: u64 = 100;
    pub const DEFAULT_BATCH_MS: u64 = 10;

    pub fn new(mode: DurabilityMode) -> Self {
        Durability {
            mode,
            batch_ops: Self::DEFAULT_BATCH_OPS,
            batch_ms: Self::DEFAULT_BATCH_MS,
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            DurabilityMode::Sync => f.write_str("sync (every write fsync'd before it returns)"),
            DurabilityMode::Batched => write!(
                f,
                "batched (each thread syncs every {} writes or {} ms)",
                self.batch_ops, self.batch_ms
            ),
            DurabilityMode::None => f.write_str("none (buffered, never synced during the run)"),
        }
    }
}

/// A complete, validated workload description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Short name: the directory the results go to.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Where the spec came from: `built-in`, or the file's path.
    #[serde(default)]
    pub source: String,
    pub mix: Mix,
    pub distribution: DistributionKind,
    /// The zipfian constant (YCSB's is 0.99), for `zipfian` and `latest`.
    #[serde(default = "default_theta")]
    pub zipfian_theta: f64,
    /// Whether `zipfian` spreads popular items over the key space.
    #[serde(default = "default_true")]
    pub scrambled: bool,
    /// Records written by the load phase.
    pub record_count: u64,
    /// Measured operations in the run phase (total over all threads)...
    #[serde(default)]
    pub operation_count: Option<u64>,
    /// ...or the measured length of the run phase, in seconds.
    #[serde(default)]
    pub duration_secs: Option<f64>,
    /// Duration-bound runs: seconds at the start of the run phase whose
    /// operations are executed but not measured.
    #[serde(default)]
    pub warmup_secs: f64,
    /// Count-bound runs: operations executed before the measured ones
    /// (total over all threads), the same for every engine.
    #[serde(default)]
    pub warmup_operations: u64,
    /// Count-bound runs: the longest the run phase may take, in seconds; a
    /// run that reaches it stops and is marked capped.
    #[serde(default)]
    pub time_cap_secs: Option<f64>,
    /// The longest each settling wait (after the load, after the run) may
    /// take, in seconds.
    #[serde(default = "default_settle_secs")]
    pub settle_secs: f64,
    /// Runs each engine in a child process whose memory (its own and the
    /// page cache it fills) is limited to this many MiB by a memory cgroup,
    /// so a data set larger than the limit cannot be cached.
    #[serde(default)]
    pub memory_limit_mib: Option<u64>,
    /// `hotspot`: the fraction of the loaded records that is hot.
    #[serde(default = "default_hot_data")]
    pub hotspot_data_fraction: f64,
    /// `hotspot`: the fraction of requests that go to the hot records.
    #[serde(default = "default_hot_ops")]
    pub hotspot_op_fraction: f64,
    /// Key length in bytes: `user` followed by the zero-padded hashed
    /// record number (at least 24, so every 64-bit hash fits).
    #[serde(default = "default_key_size")]
    pub key_size: usize,
    /// Value length in bytes.
    pub value_size: usize,
    /// Longest scan; scan lengths are uniform in `1..=max_scan_length`.
    #[serde(default = "default_max_scan")]
    pub max_scan_length: usize,
    /// Client threads.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Open loop: target operations per second over all threads. Absent:
    /// closed loop, each thread issues its next request when the previous
    /// one returns.
    #[serde(default)]
    pub rate: Option<f64>,
    #[serde(default = "default_durability_mode")]
    pub durability: DurabilityMode,
    #[serde(default = "default_batch_ops")]
    pub batch_ops: u64,
    #[serde(default = "default_batch_ms")]
    pub batch_ms: u64,
    /// Seed of every random choice; thread i uses `seed + i`.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Reads of a replicated target (the metcd cluster); embedded engines
    /// ignore it.
    #[serde(default)]
    pub read_consistency: ReadConsistency,
}

fn default_theta() -> f64 {
    0.99
}
fn default_true() -> bool {
    true
}
fn default_key_size() -> usize {
    MIN_KEY_SIZE
}
fn default_max_scan() -> usize {
    100
}
fn default_threads() -> usize {
    1
}
fn default_durability_mode() -> DurabilityMode {
    DurabilityMode::Batched
}
fn default_batch_ops() -> u64 {
    Durability::DEFAULT_BATCH_OPS
}
fn default_batch_ms() -> u64 {
    Durability::DEFAULT_BATCH_MS
}
fn default_seed() -> u64 {
    42
}
fn default_settle_secs() -> f64 {
    60.0
}
fn default_hot_data() -> f64 {
    0.2
}
fn default_hot_ops() -> f64 {
    0.8
}

/// `user` plus the 20 decimal digits of the largest 64-bit hash.
pub const MIN_KEY_SIZE: usize = 24;
const MAX_KEY_SIZE: usize = 4096;
const MAX_VALUE_SIZE: usize = 16 << 20;
const MAX_THREADS: usize = 1024;

/// The built-in specs, compiled in from `workloads/specs/`.
const BUILT_IN: [(&str, &str); 12] = [
    ("read-heavy", include_str!("../specs/read-heavy.toml")),
    (
        "read-heavy-large",
        include_str!("../specs/read-heavy-large.toml"),
    ),
    ("write-heavy", include_str!("../specs/write-heavy.toml")),
    ("ycsb-a", include_str!("../specs/ycsb-a.toml")),
    ("ycsb-b", include_str!("../specs/ycsb-b.toml")),
    ("ycsb-c", include_str!("../specs/ycsb-c.toml")),
    ("ycsb-d", include_str!("../specs/ycsb-d.toml")),
    ("ycsb-e", include_str!("../specs/ycsb-e.toml")),
    ("ycsb-f", include_str!("../specs/ycsb-f.toml")),
    ("cluster-put-1", include_str!("../specs/cluster-put-1.toml")),
    (
        "cluster-put-64",
        include_str!("../specs/cluster-put-64.toml"),
    ),
    ("cluster-get", include_str!("../specs/cluster-get.toml")),
];

/// Built-in workloads written for the metcd cluster (`--target cluster`):
/// `cluster` stands for them, and `all` (the engines' suite) leaves them out,
/// as it leaves out the memory-limited `read-heavy-large` (which needs a
/// memory cgroup and several minutes).
pub const CLUSTER_PREFIX: &str = "cluster-";

/// The workloads `default` stands for.
pub const DEFAULT_SUITE: [&str; 2] = ["read-heavy", "write-heavy"];

/// Names of the built-in specs.
pub fn built_in_names() -> Vec<&'static str> {
    BUILT_IN.iter().map(|(name, _)| *name).collect()
}

/// Every built-in spec, parsed.
pub fn built_in_specs() -> Result<Vec<WorkloadSpec>> {
    BUILT_IN
        .iter()
        .map(|(name, text)| WorkloadSpec::from_toml(text, &format!("specs/{name}.toml"), name))
        .map(|spec| {
            spec.map(|mut s| {
                s.source = "built-in".to_string();
                s
            })
        })
        .collect()
}

fn valid_workload_names() -> String {
    let mut names = built_in_names();
    names.extend(["default", "all", "cluster"]);
    names.join(", ")
}

/// Resolves a comma-separated workload list: built-in names, `default`,
/// `all`, and paths to spec files.
pub fn resolve_list(list: &str) -> Result<Vec<WorkloadSpec>> {
    let mut specs: Vec<WorkloadSpec> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let found = match item {
            "all" => built_in_specs()?
                .into_iter()
                .filter(|s| !s.name.starts_with(CLUSTER_PREFIX) && s.memory_limit_mib.is_none())
                .collect(),
            "cluster" => built_in_specs()?
                .into_iter()
                .filter(|s| s.name.starts_with(CLUSTER_PREFIX))
                .collect(),
            "default" => built_in_specs()?
                .into_iter()
                .filter(|s| DEFAULT_SUITE.contains(&s.name.as_str()))
                .collect(),
            _ => vec![resolve_one(item)?],
        };
        for spec in found {
            if !specs.iter().any(|s| s.name == spec.name) {
                specs.push(spec);
            }
        }
    }
    if specs.is_empty() {
        return Err(WorkloadError::UnknownWorkload {
            given: list.to_string(),
            valid: valid_workload_names(),
        });
    }
    Ok(specs)
}

/// One workload: a built-in name or a path.
pub fn resolve_one(item: &str) -> Result<WorkloadSpec> {
    if let Some(spec) = built_in_specs()?.into_iter().find(|s| s.name == item) {
        return Ok(spec);
    }
    let path = Path::new(item);
    if path.is_file() {
        return WorkloadSpec::from_file(path);
    }
    Err(WorkloadError::UnknownWorkload {
        given: item.to_string(),
        valid: valid_workload_names(),
    })
}

impl WorkloadSpec {
    /// Reads a spec file: TOML when the name ends in `.toml`, a YCSB property
    /// file otherwise.
    pub fn from_file(path: &Path) -> Result<WorkloadSpec> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| WorkloadError::io(format!("cannot read spec {file}"), e))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("workload")
            .to_string();
        let mut spec = if path.extension().is_some_and(|e| e == "toml") {
            WorkloadSpec::from_toml(&text, &file, &stem)?
        } else {
            WorkloadSpec::from_ycsb_properties(&text, &file, &stem)?
        };
        spec.source = file;
        Ok(spec)
    }

    /// Parses a TOML spec; `file` names it in errors, `default_name` is used
    /// when the spec has no `name`.
    pub fn from_toml(text: &str, file: &str, default_name: &str) -> Result<WorkloadSpec> {
        let mut spec: WorkloadSpec =
            toml::from_str(text).map_err(|e| WorkloadError::SpecSyntax {
                file: file.to_string(),
                message: format!(
                    "{}\naccepted fields: {}; distribution: {}; durability: {}",
                    e.to_string().trim_end(),
                    TOML_FIELDS,
                    DistributionKind::VALID,
                    DurabilityMode::VALID
                ),
            })?;
        if spec.name.is_empty() {
            spec.name = default_name.to_string();
        }
        spec.validate(file)?;
        Ok(spec)
    }

    // ANCHOR: ycsb
    /// Parses a YCSB property file (`key=value` lines, `#` comments).
    ///
    /// Mapped: `recordcount`, `operationcount`, the five proportions,
    /// `requestdistribution` (uniform, zipfian, latest), `fieldcount` times
    /// `fieldlength` as the value size (one value holds all fields),
    /// `maxscanlength`, `scanlengthdistribution` (uniform only),
    /// `insertorder` (hashed only), `zipfianconstant`, `threadcount`,
    /// `target` (open loop), `hotspotdatafraction`, `hotspotopnfraction`,
    /// `maxexecutiontime` (the time cap). YCSB's defaults apply to missing keys. Other
    /// keys (the `workload` class, `readallfields`, ...) do not change what
    /// this harness measures and are listed in the description as ignored.
    pub fn from_ycsb_properties(text: &str, file: &str, name: &str) -> Result<WorkloadSpec> {
        let mut props = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(WorkloadError::SpecSyntax {
                    file: file.to_string(),
                    message: format!("line '{line}' is not a `key=value` property"),
                });
            };
            props.insert(key.trim().to_string(), value.trim().to_string());
        }
        let get = |key: &str| props.get(key).map(String::as_str);
        let number = |key: &str, default: f64| -> Result<f64> {
            match get(key) {
                None => Ok(default),
                Some(v) => v.parse::<f64>().map_err(|_| {
                    WorkloadError::spec(
                        file,
                        key,
                        format!("'{v}' is not a number; accepted: a number"),
                    )
                }),
            }
        };
        let integer = |key: &str, default: u64| -> Result<u64> {
            match get(key) {
                None => Ok(default),
                Some(v) => v.parse::<u64>().map_err(|_| {
                    WorkloadError::spec(
                        file,
                        key,
                        format!("'{v}' is not a whole number; accepted: an integer >= 0"),
                    )
                }),
            }
        };
        let distribution = match get("requestdistribution").unwrap_or("uniform") {
            "uniform" => DistributionKind::Uniform,
            "zipfian" => DistributionKind::Zipfian,
            "latest" => DistributionKind::Latest,
            "hotspot" => DistributionKind::Hotspot,
            other => {
                return Err(WorkloadError::spec(
                    file,
                    "requestdistribution",
                    format!(
                        "'{other}' is not supported; accepted: {}",
                        DistributionKind::VALID
                    ),
                ));
            }
        };
        if let Some(other) = get("scanlengthdistribution").filter(|d| *d != "uniform") {
            return Err(WorkloadError::spec(
                file,
                "scanlengthdistribution",
                format!("'{other}' is not supported; accepted: uniform"),
            ));
        }
        if let Some(other) = get("insertorder").filter(|d| *d != "hashed") {
            return Err(WorkloadError::spec(
                file,
                "insertorder",
                format!("'{other}' is not supported; accepted: hashed"),
            ));
        }
        let field_count = integer("fieldcount", 10)?;
        let field_length = integer("fieldlength", 100)?;
        let value_size =
            usize::try_from(field_count.saturating_mul(field_length)).unwrap_or(usize::MAX);
        let target = number("target", 0.0)?;
        let max_execution = integer("maxexecutiontime", 0)?;
        let ignored: Vec<&str> = props
            .keys()
            .map(String::as_str)
            .filter(|k| !YCSB_KEYS.contains(k))
            .collect();
        let mut description = format!("YCSB property file {file}");
        if !ignored.is_empty() {
            description.push_str(&format!(" (ignored: {})", ignored.join(", ")));
        }
        let spec = WorkloadSpec {
            name: name.to_string(),
            description,
            source: file.to_string(),
            mix: Mix {
                read: number("readproportion", 0.95)?,
                update: number("updateproportion", 0.05)?,
                insert: number("insertproportion", 0.0)?,
                scan: number("scanproportion", 0.0)?,
                read_modify_write: number("readmodifywriteproportion", 0.0)?,
                delete: 0.0,
            },
            distribution,
            zipfian_theta: number("zipfianconstant", default_theta())?,
            scrambled: true,
            record_count: integer("recordcount", 1000)?,
            operation_count: Some(integer("operationcount", 1000)?),
            duration_secs: None,
            warmup_secs: 0.0,
            warmup_operations: 0,
            time_cap_secs: (max_execution > 0).then_some(max_execution as f64),
            settle_secs: default_settle_secs(),
            memory_limit_mib: None,
            hotspot_data_fraction: number("hotspotdatafraction", default_hot_data())?,
            hotspot_op_fraction: number("hotspotopnfraction", default_hot_ops())?,
            key_size: MIN_KEY_SIZE,
            value_size,
            max_scan_length: usize::try_from(integer("maxscanlength", 1000)?).unwrap_or(usize::MAX),
            threads: usize::try_from(integer("threadcount", 1)?).unwrap_or(usize::MAX),
            rate: (target > 0.0).then_some(target),
            durability: default_durability_mode(),
            batch_ops: default_batch_ops(),
            batch_ms: default_batch_ms(),
            seed: default_seed(),
            read_consistency: ReadConsistency::default(),
        };
        spec.validate(file)?;
        Ok(spec)
    }
    // ANCHOR_END: ycsb

    /// Checks every field; `file` names the spec in errors.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |field: &str, message: String| Err(WorkloadError::spec(file, field, message));
        for (name, p) in self.mix.named() {
            if !(0.0..=1.0).contains(&p) {
                return err(
                    &format!("mix.{name}"),
                    format!("{p} is out of range; accepted: a proportion from 0 to 1"),
                );
            }
        }
        let sum: f64 = self.mix.named().iter().map(|(_, p)| p).sum();
        if (sum - 1.0).abs() > 1e-6 {
            return err(
                "mix",
                format!(
                    "the proportions (read, update, insert, scan, read_modify_write, delete) sum to {sum}; accepted: proportions that sum to 1"
                ),
            );
        }
        if self.record_count == 0 {
            return err("record_count", "0 records; accepted: at least 1".into());
        }
        match (self.operation_count, self.duration_secs) {
            (Some(_), Some(_)) | (None, None) => {
                return err(
                    "operation_count",
                    "set exactly one of operation_count or duration_secs".into(),
                );
            }
            (Some(0), None) => {
                return err(
                    "operation_count",
                    "0 operations; accepted: at least 1".into(),
                );
            }
            (None, Some(d)) if !(d.is_finite() && d > 0.0 && d <= 86_400.0) => {
                return err(
                    "duration_secs",
                    format!("{d} is out of range; accepted: more than 0 and at most 86400 seconds"),
                );
            }
            _ => {}
        }
        if self.operation_count.is_some() && self.warmup_secs > 0.0 {
            return err(
                "warmup_secs",
                "a run bounded by operation_count warms up by operations, so every engine executes the same ones; \
                 accepted: warmup_operations (--warmup-ops) instead, or duration_secs (--duration) for a timed run"
                    .into(),
            );
        }
        if self.duration_secs.is_some()
            && (self.warmup_operations > 0 || self.time_cap_secs.is_some())
        {
            return err(
                "warmup_operations",
                "warmup_operations and time_cap_secs belong to runs bounded by operation_count; \
                 accepted: warmup_secs (--warmup) with duration_secs"
                    .into(),
            );
        }
        if let Some(cap) = self.time_cap_secs
            && !(cap.is_finite() && cap > 0.0 && cap <= 86_400.0)
        {
            return err(
                "time_cap_secs",
                format!("{cap} is out of range; accepted: more than 0 and at most 86400 seconds"),
            );
        }
        if !(self.settle_secs.is_finite() && (0.0..=3600.0).contains(&self.settle_secs)) {
            return err(
                "settle_secs",
                format!(
                    "{} is out of range; accepted: 0 to 3600 seconds",
                    self.settle_secs
                ),
            );
        }
        if self.memory_limit_mib == Some(0) {
            return err(
                "memory_limit_mib",
                "0 MiB; accepted: at least 1 (or leave it out for no limit)".into(),
            );
        }
        for (field, p) in [
            ("hotspot_data_fraction", self.hotspot_data_fraction),
            ("hotspot_op_fraction", self.hotspot_op_fraction),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return err(
                    field,
                    format!("{p} is out of range; accepted: a fraction from 0 to 1"),
                );
            }
        }
        if !(self.warmup_secs.is_finite() && (0.0..=3600.0).contains(&self.warmup_secs)) {
            return err(
                "warmup_secs",
                format!(
                    "{} is out of range; accepted: 0 to 3600 seconds",
                    self.warmup_secs
                ),
            );
        }
        if !(MIN_KEY_SIZE..=MAX_KEY_SIZE).contains(&self.key_size) {
            return err(
                "key_size",
                format!(
                    "{} bytes; accepted: {MIN_KEY_SIZE} to {MAX_KEY_SIZE} bytes (keys are `user` + a zero-padded 64-bit hash)",
                    self.key_size
                ),
            );
        }
        if self.value_size > MAX_VALUE_SIZE {
            return err(
                "value_size",
                format!(
                    "{} bytes; accepted: 0 to {MAX_VALUE_SIZE} bytes",
                    self.value_size
                ),
            );
        }
        if self.mix.scan > 0.0 && self.max_scan_length == 0 {
            return err(
                "max_scan_length",
                "0 with scans in the mix; accepted: at least 1".into(),
            );
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return err(
                "threads",
                format!("{}; accepted: 1 to {MAX_THREADS}", self.threads),
            );
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return err(
                "rate",
                format!("{rate}; accepted: a positive number of operations per second"),
            );
        }
        if matches!(
            self.distribution,
            DistributionKind::Zipfian | DistributionKind::Latest
        ) && !(self.zipfian_theta > 0.0 && self.zipfian_theta < 1.0)
        {
            return err(
                "zipfian_theta",
                format!(
                    "{}; accepted: a number strictly between 0 and 1 (YCSB uses 0.99)",
                    self.zipfian_theta
                ),
            );
        }
        if self.durability == DurabilityMode::Batched && (self.batch_ops == 0 || self.batch_ms == 0)
        {
            return err(
                "batch_ops",
                "batch_ops and batch_ms must both be at least 1 in batched mode".into(),
            );
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return err(
                "name",
                format!(
                    "'{}'; accepted: letters, digits, '-', '_' and '.' (it names a results directory)",
                    self.name
                ),
            );
        }
        Ok(())
    }

    /// The durability policy as one value.
    pub fn durability(&self) -> Durability {
        Durability {
            mode: self.durability,
            batch_ops: self.batch_ops,
            batch_ms: self.batch_ms,
        }
    }

    /// One line with every setting that matters, for subtitles and tables.
    pub fn settings_line(&self) -> String {
        self.settings_line_with(&self.durability().to_string())
    }

    /// [`Spec::settings_line`] with the durability a run actually had, for
    /// targets that impose their own (a Raft cluster acknowledges after its
    /// WAL fsync, whatever the spec's policy says).
    pub fn settings_line_with(&self, durability: &str) -> String {
        let length = match (self.operation_count, self.duration_secs) {
            (Some(ops), _) => format!(
                "{ops} ops after {} warm-up ops{}",
                self.warmup_operations,
                self.time_cap_secs.map_or(String::new(), |c| format!(
                    " (capped at {} s)",
                    trim_float(c)
                ))
            ),
            (_, Some(d)) => format!(
                "{} s after {} s warm-up",
                trim_float(d),
                trim_float(self.warmup_secs)
            ),
            _ => String::new(),
        };
        let loop_kind = match self.rate {
            Some(rate) => format!("open loop at {} ops/s", trim_float(rate)),
            None => "closed loop".to_string(),
        };
        let distribution = match self.distribution {
            DistributionKind::Zipfian => format!(
                "{}zipfian θ={}",
                if self.scrambled { "scrambled " } else { "" },
                self.zipfian_theta
            ),
            DistributionKind::Latest => format!("latest θ={}", self.zipfian_theta),
            DistributionKind::Uniform => "uniform".to_string(),
            DistributionKind::Hotspot => format!(
                "hotspot ({}% of requests to {}% of records)",
                trim_float(self.hotspot_op_fraction * 100.0),
                trim_float(self.hotspot_data_fraction * 100.0)
            ),
        };
        let memory = self
            .memory_limit_mib
            .map_or(String::new(), |m| format!("; memory limited to {m} MiB"));
        format!(
            "{}; {distribution}; {} records, {} B keys, {} B values; {} threads, {loop_kind}; {length}; durability {}; seed {}{memory}",
            self.mix.describe(),
            self.record_count,
            self.key_size,
            self.value_size,
            self.threads,
            durability,
            self.seed
        )
    }
}

/// Command-line overrides of spec fields; `None` keeps the spec's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub record_count: Option<u64>,
    pub operation_count: Option<u64>,
    pub duration_secs: Option<f64>,
    pub warmup_secs: Option<f64>,
    pub warmup_operations: Option<u64>,
    pub time_cap_secs: Option<f64>,
    pub settle_secs: Option<f64>,
    pub threads: Option<usize>,
    pub rate: Option<f64>,
    pub seed: Option<u64>,
    pub durability: Option<DurabilityMode>,
    pub batch_ops: Option<u64>,
    pub batch_ms: Option<u64>,
    pub read_consistency: Option<ReadConsistency>,
}

impl Overrides {
    /// Applies the overrides and validates the result. A count replaces a
    /// duration and the other way round, and takes the other kind's warm-up
    /// (and time cap) with it.
    pub fn apply(&self, spec: &mut WorkloadSpec) -> Result<()> {
        if let Some(v) = self.record_count {
            spec.record_count = v;
        }
        if let Some(v) = self.operation_count {
            if spec.duration_secs.is_some() {
                spec.warmup_secs = 0.0;
            }
            spec.operation_count = Some(v);
            spec.duration_secs = None;
        }
        if let Some(v) = self.duration_secs {
            if spec.operation_count.is_some() {
                spec.warmup_operations = 0;
                spec.time_cap_secs = None;
            }
            spec.duration_secs = Some(v);
            spec.operation_count = None;
        }
        if let Some(v) = self.warmup_secs {
            spec.warmup_secs = v;
        }
        if let Some(v) = self.warmup_operations {
            spec.warmup_operations = v;
        }
        if let Some(v) = self.time_cap_secs {
            spec.time_cap_secs = Some(v);
        }
        if let Some(v) = self.settle_secs {
            spec.settle_secs = v;
        }
        if let Some(v) = self.threads {
            spec.threads = v;
        }
        if let Some(v) = self.rate {
            spec.rate = Some(v);
        }
        if let Some(v) = self.seed {
            spec.seed = v;
        }
        if let Some(v) = self.durability {
            spec.durability = v;
        }
        if let Some(v) = self.batch_ops {
            spec.batch_ops = v;
        }
        if let Some(v) = self.batch_ms {
            spec.batch_ms = v;
        }
        if let Some(v) = self.read_consistency {
            spec.read_consistency = v;
        }
        let context = format!("{} (after command-line overrides)", spec.source);
        spec.validate(&context)
    }
}

const TOML_FIELDS: &str = "name, description, mix (read, update, insert, scan, read_modify_write, delete), \
     distribution, zipfian_theta, scrambled, hotspot_data_fraction, hotspot_op_fraction, record_count, \
     operation_count, warmup_operations, time_cap_secs, duration_secs, warmup_secs, settle_secs, memory_limit_mib, \
     key_size, value_size, max_scan_length, threads, rate, durability, batch_ops, batch_ms, seed, read_consistency";

const YCSB_KEYS: [&str; 17] = [
    "hotspotdatafraction",
    "hotspotopnfraction",
    "maxexecutiontime",
    "recordcount",
    "operationcount",
    "readproportion",
    "updateproportion",
    "scanproportion",
    "insertproportion",
    "readmodifywriteproportion",
    "requestdistribution",
    "fieldcount",
    "fieldlength",
    "maxscanlength",
    "scanlengthdistribution",
    "zipfianconstant",
    "threadcount",
];

/// `0.95` -> "0.95", `5.0` -> "5": numbers as people write them.
pub fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_spec_parses() {
        let specs = built_in_specs().unwrap();
        assert_eq!(specs.len(), BUILT_IN.len());
        for spec in &specs {
            assert!(
                !spec.description.is_empty(),
                "{} has no description",
                spec.name
            );
        }
    }

    #[test]
    fn default_and_all_expand() {
        let names: Vec<String> = resolve_list("default")
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, DEFAULT_SUITE);
        assert_eq!(
            resolve_list("all,ycsb-a").unwrap().len(),
            BUILT_IN.len() - 4
        );
        assert_eq!(resolve_list("cluster").unwrap().len(), 3);
    }

    #[test]
    fn unknown_workload_names_the_valid_ones() {
        let err = resolve_list("ycsb-z").unwrap_err().to_string();
        assert!(err.contains("ycsb-z"), "{err}");
        for name in built_in_names() {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn mix_that_does_not_sum_to_one_is_refused() {
        let text = "distribution = \"uniform\"\nrecord_count = 10\noperation_count = 10\nvalue_size = 10\n[mix]\nread = 0.5\n";
        let err = WorkloadSpec::from_toml(text, "mine.toml", "mine")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mine.toml") && err.contains("mix") && err.contains("sum to 1"),
            "{err}"
        );
    }

    #[test]
    fn overrides_switch_between_count_and_duration() {
        let mut spec = resolve_one("ycsb-a").unwrap();
        Overrides {
            operation_count: Some(5),
            threads: Some(1),
            ..Overrides::default()
        }
        .apply(&mut spec)
        .unwrap();
        assert_eq!((spec.operation_count, spec.duration_secs), (Some(5), None));
        let bad = Overrides {
            threads: Some(0),
            ..Overrides::default()
        };
        assert!(
            bad.apply(&mut spec)
                .unwrap_err()
                .to_string()
                .contains("threads")
        );
    }

    #[test]
    fn built_in_engine_specs_are_count_bound_and_the_large_one_exceeds_its_memory() {
        for spec in built_in_specs().unwrap() {
            if spec.name.starts_with(CLUSTER_PREFIX) {
                continue;
            }
            assert!(
                spec.operation_count.is_some() && spec.time_cap_secs.is_some(),
                "{} should run a fixed operation count with a time cap",
                spec.name
            );
        }
        let large = resolve_one("read-heavy-large").unwrap();
        let limit = large.memory_limit_mib.unwrap() << 20;
        let data = large.record_count * (large.key_size + large.value_size) as u64;
        assert!(
            data >= 4 * limit,
            "{data} bytes of data under a {limit}-byte limit"
        );
        assert!(
            !resolve_list("all")
                .unwrap()
                .iter()
                .any(|s| s.name == "read-heavy-large")
        );
    }

    #[test]
    fn warm_ups_match_how_the_run_is_bounded() {
        let mut spec = resolve_one("ycsb-a").unwrap();
        spec.warmup_secs = 2.0;
        let err = spec.validate("x").unwrap_err().to_string();
        assert!(err.contains("warmup_operations"), "{err}");
        // Switching to a duration takes the count's warm-up and cap away.
        let mut spec = resolve_one("ycsb-a").unwrap();
        Overrides {
            duration_secs: Some(1.0),
            warmup_secs: Some(0.5),
            ..Overrides::default()
        }
        .apply(&mut spec)
        .unwrap();
        assert_eq!((spec.warmup_operations, spec.time_cap_secs), (0, None));
    }

    #[test]
    fn trim_float_drops_trailing_zeros() {
        assert_eq!(trim_float(5.0), "5");
        assert_eq!(trim_float(0.95), "0.95");
    }
}
