//! `workbench mvcc`: what etcd's data model costs the state machine.
//!
//! metcd's state machine keeps every change of every key (the MVCC history,
//! `cluster::mvcc`) where it used to keep one record per key. This
//! benchmark answers the three questions that change raises, per engine:
//!
//! 1. **Writes**: how many puts per second the state machine applies with
//!    MVCC, against the plain layout it replaced. Each put is applied the
//!    way the Raft apply loop applies a committed entry: staged, then
//!    written in one engine batch together with the applied index
//!    (`StateMachine::stage_command` + `commit`). Two phases: loading fresh
//!    keys, then overwriting random existing ones.
//! 2. **Reads**: point gets and ranges of consecutive keys (a range of
//!    `range_len` keys, `[first, last]` bounded so etcd's `count` covers only
//!    those keys) through the state machine's reader (`KvReader`, the path
//!    serializable gRPC reads take), against a get or a scan of the plain
//!    layout.
//! 3. **Space**: the history after all the writes, then after compacting
//!    it at the current revision (through the same command the Raft log
//!    carries), and once more after the engine's own space reclamation
//!    (`Engine::defragment`, what etcd's Defragment runs). Each time the
//!    engine is settled (flushes and compactions done), closed and measured
//!    (an engine trims its journal and deletes obsolete tables when it
//!    closes), then opened again. Also the time to rebuild the in-memory
//!    key index when the state machine opens on the reopened engine, before
//!    and after compaction: the restart cost of keeping the index in memory.
//!
//! # The plain layout, re-created here
//!
//! The state machine before MVCC (up to commit 337b569) kept `k/<key>` ->
//! `create_revision | mod_revision | version | value`, a cluster revision
//! under `m/revision` and the applied index under `m/applied`; a put read
//! the key's record (for its create revision and version) and wrote the
//! three keys in one buffered batch. That code is gone from the tree, so
//! [`PlainLayout`] does the same engine operations here: the baseline is its
//! write pattern, not the old binary (whose Raft, WAL and HTTP also differ).
//!
//! # What is and is not measured
//!
//! No Raft, no WAL, no network: both sides apply entries in-process, one
//! thread, one entry per engine batch (`batch` raises it), writes buffered
//! (`WriteOptions::BUFFERED`, exactly what the state machine uses: the
//! WAL's fsync makes an entry durable, and it is the same with or without
//! MVCC, so it is left out to show the part that changed). So these are
//! upper bounds of the apply loop, not cluster throughput. Each side runs
//! `rounds` times alternately on fresh directories; the best round is
//! reported, as the least disturbed by the shared machine.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::command::Command;
use cluster::mvcc::txn::RangeRequest;
use cluster::state_machine::{Members, StateMachine};
use engines::{Engine, EngineKind, EngineOptions, KeyRange, WriteBatch, WriteOptions};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, WorkloadError};
use crate::machine::Machine;
use crate::results::SCHEMA_VERSION;
use crate::space::disk_space;
use crate::suite::ensure_writable;

/// How long an engine may take to become quiet before space is measured.
const SETTLE_BUDGET: Duration = Duration::from_secs(120);

/// What to measure.
#[derive(Debug, Clone)]
pub struct MvccCostConfig {
    pub out_dir: PathBuf,
    /// Where the engines' directories are made (fresh ones per round).
    pub data_dir: PathBuf,
    pub engines: Vec<EngineKind>,
    /// Keys loaded first, one put each.
    pub keys: u64,
    /// Random overwrites after the load (the history then holds
    /// `keys + updates` records).
    pub updates: u64,
    pub reads: u64,
    pub ranges: u64,
    pub range_len: u64,
    pub value_size: usize,
    /// Entries per engine batch (the apply loop batches the entries of one
    /// Raft `Ready`: 1 at one client, more under load).
    pub batch: usize,
    pub rounds: usize,
    pub seed: u64,
}

/// Operations per second of one phase, plain and MVCC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseRow {
    pub engine: String,
    pub phase: String,
    pub plain_ops_per_sec: f64,
    pub mvcc_ops_per_sec: f64,
    /// `mvcc / plain`: below 1 is what MVCC costs.
    pub ratio: f64,
}

/// The space a layout takes after all the writes, at rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpaceRow {
    pub engine: String,
    /// Engine keys of the plain layout (one per user key, plus metadata).
    pub plain_records: u64,
    /// Allocated bytes of the plain layout's files (None: memory engine).
    pub plain_bytes: Option<u64>,
    /// Engine keys of the MVCC layout before compaction (one per change).
    pub mvcc_records: u64,
    pub mvcc_bytes: Option<u64>,
    /// After `Compact` at the current revision and the engine settled.
    pub compacted_records: u64,
    pub compacted_bytes: Option<u64>,
    /// After the engine's `defragment` (what etcd's Defragment runs), if the
    /// engine has one (`None`: it has nothing to run).
    pub defragmented_bytes: Option<u64>,
    /// Time to rebuild the key index when the state machine opens.
    pub index_rebuild_ms: f64,
    pub index_rebuild_after_compaction_ms: f64,
    /// Whether every settle finished within its budget.
    pub settled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MvccCostReport {
    pub schema_version: u32,
    pub machine: Machine,
    pub settings: String,
    pub phases: Vec<PhaseRow>,
    pub space: Vec<SpaceRow>,
}

fn failed(engine: EngineKind, operation: &str, e: impl std::fmt::Display) -> WorkloadError {
    WorkloadError::Target {
        target: engine.name().to_string(),
        operation: operation.to_string(),
        message: e.to_string(),
    }
}

/// The keys: fixed-width and consecutive, so a range of `n` keys is a
/// half-open interval whose bounds the benchmark can compute.
fn key(i: u64) -> Vec<u8> {
    format!("bench/{i:012}").into_bytes()
}

/// The operations both layouts run, drawn once so both get the same.
struct Plan {
    updates: Vec<u64>,
    reads: Vec<u64>,
    ranges: Vec<u64>,
    /// Random (incompressible) values, used in turn: a constant value
    /// would let rocksdb's and fjall's block compression hide the space
    /// that history costs.
    values: Vec<Vec<u8>>,
}

/// Distinct values in [`Plan::values`]: 4096 × 256 B is far larger than a
/// compression block, so blocks find no repeats to squeeze.
const VALUE_POOL: usize = 4096;

impl Plan {
    fn new(config: &MvccCostConfig) -> Plan {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let mut draw = |n: u64, below: u64| -> Vec<u64> {
            (0..n).map(|_| rng.random_range(0..below)).collect()
        };
        let range_starts = config.keys.saturating_sub(config.range_len).max(1);
        let updates = draw(config.updates, config.keys);
        let reads = draw(config.reads, config.keys);
        let ranges = draw(config.ranges, range_starts);
        let values = (0..VALUE_POOL)
            .map(|_| {
                let mut value = vec![0u8; config.value_size];
                rng.fill_bytes(&mut value);
                value
            })
            .collect();
        Plan {
            updates,
            reads,
            ranges,
            values,
        }
    }
}

/// One side of the comparison: apply puts, read, measure.
trait Layout {
    fn put(&mut self, key: Vec<u8>, value: &[u8]) -> Result<()>;
    /// Ends the current engine batch.
    fn commit(&mut self) -> Result<()>;
    fn get(&self, key: &[u8]) -> Result<bool>;
    /// Keys returned by the range `[start, end)`.
    fn range(&self, start: &[u8], end: &[u8]) -> Result<usize>;
}

/// The state machine before MVCC, re-created (see the module essay).
struct PlainLayout {
    engine: Arc<dyn Engine>,
    kind: EngineKind,
    batch: WriteBatch,
    revision: u64,
    applied: u64,
}

impl PlainLayout {
    const PREFIX: &'static [u8] = b"k/";

    fn data_key(key: &[u8]) -> Vec<u8> {
        let mut k = Self::PREFIX.to_vec();
        k.extend_from_slice(key);
        k
    }
}

impl Layout for PlainLayout {
    fn put(&mut self, key: Vec<u8>, value: &[u8]) -> Result<()> {
        let data_key = Self::data_key(&key);
        // Read the key's record for its create revision and version, as
        // the old apply did (a read per put, like MVCC's key index lookup).
        let previous = self
            .engine
            .get(&data_key)
            .map_err(|e| failed(self.kind, "get", e))?;
        self.revision += 1;
        self.applied += 1;
        let (create, version) = match previous.as_deref() {
            Some(r) if r.len() >= 24 => {
                let word = |at: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&r[at..at + 8]);
                    u64::from_be_bytes(b)
                };
                (word(0), word(16) + 1)
            }
            _ => (self.revision, 1),
        };
        let mut record = Vec::with_capacity(24 + value.len());
        record.extend_from_slice(&create.to_be_bytes());
        record.extend_from_slice(&self.revision.to_be_bytes());
        record.extend_from_slice(&version.to_be_bytes());
        record.extend_from_slice(value);
        self.batch.put(data_key, record);
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let mut batch = std::mem::take(&mut self.batch);
        batch.put(b"m/revision".to_vec(), self.revision.to_be_bytes().to_vec());
        let mut applied = self.applied.to_be_bytes().to_vec();
        applied.extend_from_slice(&1u64.to_be_bytes());
        batch.put(b"m/applied".to_vec(), applied);
        self.engine
            .write_batch(batch, WriteOptions::BUFFERED)
            .map_err(|e| failed(self.kind, "write_batch", e))
    }

    fn get(&self, key: &[u8]) -> Result<bool> {
        Ok(self
            .engine
            .get(&Self::data_key(key))
            .map_err(|e| failed(self.kind, "get", e))?
            .is_some())
    }

    fn range(&self, start: &[u8], end: &[u8]) -> Result<usize> {
        let range = KeyRange::half_open(Self::data_key(start), Self::data_key(end));
        Ok(self
            .engine
            .scan(&range, usize::MAX)
            .map_err(|e| failed(self.kind, "scan", e))?
            .len())
    }
}

/// metcd's state machine as the Raft apply loop drives it.
struct MvccLayout {
    sm: StateMachine,
    kind: EngineKind,
    index: u64,
}

impl MvccLayout {
    fn open(engine: Arc<dyn Engine>, kind: EngineKind) -> Result<MvccLayout> {
        let sm = StateMachine::open(engine, Members::default())
            .map_err(|e| failed(kind, "open the state machine", e))?;
        let index = sm.applied_index();
        Ok(MvccLayout { sm, kind, index })
    }

    fn apply(&mut self, command: &Command) -> Result<()> {
        self.index += 1;
        self.sm
            .stage_command(self.index, 1, command)
            .map_err(|e| failed(self.kind, "apply", e))?
            .map_err(|refused| failed(self.kind, "apply", refused))?;
        Ok(())
    }
}

impl Layout for MvccLayout {
    fn put(&mut self, key: Vec<u8>, value: &[u8]) -> Result<()> {
        self.apply(&Command::put(key, value.to_vec()))
    }

    fn commit(&mut self) -> Result<()> {
        self.sm.commit().map_err(|e| failed(self.kind, "commit", e))
    }

    fn get(&self, key: &[u8]) -> Result<bool> {
        Ok(self
            .sm
            .kv_reader()
            .get(key)
            .map_err(|e| failed(self.kind, "get", e))?
            .is_some())
    }

    fn range(&self, start: &[u8], end: &[u8]) -> Result<usize> {
        let request = RangeRequest {
            key: start.to_vec(),
            range_end: end.to_vec(),
            ..RangeRequest::default()
        };
        Ok(self
            .sm
            .kv_reader()
            .range(&request)
            .map_err(|e| failed(self.kind, "range", e))?
            .kvs
            .len())
    }
}

/// Operations per second of each phase of one round.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    load: f64,
    update: f64,
    get: f64,
    range: f64,
}

impl Rates {
    fn best(self, other: Rates) -> Rates {
        Rates {
            load: self.load.max(other.load),
            update: self.update.max(other.update),
            get: self.get.max(other.get),
            range: self.range.max(other.range),
        }
    }
}

fn per_sec(ops: usize, since: Instant) -> f64 {
    ops as f64 / since.elapsed().as_secs_f64().max(1e-9)
}

/// Runs the four phases on `layout`.
fn drive(layout: &mut dyn Layout, config: &MvccCostConfig, plan: &Plan) -> Result<Rates> {
    let batch = config.batch.max(1);
    let puts = |layout: &mut dyn Layout, keys: &mut dyn Iterator<Item = u64>| -> Result<usize> {
        let mut n = 0;
        for k in keys {
            layout.put(key(k), &plan.values[n % plan.values.len()])?;
            n += 1;
            if n % batch == 0 {
                layout.commit()?;
            }
        }
        layout.commit()?;
        Ok(n)
    };
    let start = Instant::now();
    let loaded = puts(layout, &mut (0..config.keys))?;
    let load = per_sec(loaded, start);
    let start = Instant::now();
    let updated = puts(layout, &mut plan.updates.iter().copied())?;
    let update = per_sec(updated, start);
    let start = Instant::now();
    for &k in &plan.reads {
        if !layout.get(&key(k))? {
            return Err(WorkloadError::Target {
                target: "mvcc benchmark".into(),
                operation: "get".into(),
                message: format!("key {k} was written but is not found"),
            });
        }
    }
    let get = per_sec(plan.reads.len(), start);
    let start = Instant::now();
    for &k in &plan.ranges {
        let n = layout.range(&key(k), &key(k + config.range_len))?;
        if n as u64 != config.range_len.min(config.keys) {
            return Err(WorkloadError::Target {
                target: "mvcc benchmark".into(),
                operation: "range".into(),
                message: format!(
                    "a range of {} keys from key {k} returned {n}",
                    config.range_len
                ),
            });
        }
    }
    let range = per_sec(plan.ranges.len(), start);
    Ok(Rates {
        load,
        update,
        get,
        range,
    })
}

fn open_engine(kind: EngineKind, dir: &Path) -> Result<Arc<dyn Engine>> {
    engines::open_shared(kind, dir, &EngineOptions::default()).map_err(|e| failed(kind, "open", e))
}

/// What [`rest`] found.
struct AtRest {
    engine: Arc<dyn Engine>,
    keys: u64,
    bytes: Option<u64>,
    settled: bool,
}

/// Settles the engine, counts its keys, closes it and measures its files at
/// rest, then opens it again. Closing matters: an engine deletes obsolete
/// tables and trims its journal when its last handle goes, and bytes
/// measured while it is open count files it no longer needs. `engine` must
/// be the last handle. The memory engine stays open (closing it would lose
/// the data) and has no files.
fn rest(engine: Arc<dyn Engine>, kind: EngineKind, dir: &Path) -> Result<AtRest> {
    let settled = engine
        .settle(SETTLE_BUDGET)
        .map_err(|e| failed(kind, "settle", e))?;
    let keys = engine.status().map_err(|e| failed(kind, "status", e))?.keys;
    if !kind.is_durable() {
        return Ok(AtRest {
            engine,
            keys,
            bytes: None,
            settled,
        });
    }
    if Arc::strong_count(&engine) != 1 {
        return Err(failed(kind, "close", "the engine is still open elsewhere"));
    }
    drop(engine);
    let bytes = Some(disk_space(dir)?.allocated);
    Ok(AtRest {
        engine: open_engine(kind, dir)?,
        keys,
        bytes,
        settled,
    })
}

fn fresh_dir(config: &MvccCostConfig, kind: EngineKind, side: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("metcd-mvcc-{}-{side}-", kind.name()))
        .tempdir_in(&config.data_dir)
        .context(|| format!("cannot create a directory in {}", config.data_dir.display()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Both layouts on one engine: phases (best of the rounds) and space (the
/// last round's).
fn measure_engine(
    config: &MvccCostConfig,
    kind: EngineKind,
    plan: &Plan,
) -> Result<(Vec<PhaseRow>, SpaceRow)> {
    let (mut plain_best, mut mvcc_best) = (Rates::default(), Rates::default());
    let mut space = None;
    for round in 0..config.rounds.max(1) {
        let last = round + 1 == config.rounds.max(1);
        eprintln!("mvcc: {} round {}: plain layout", kind.name(), round + 1);
        let dir = fresh_dir(config, kind, "plain")?;
        let engine = open_engine(kind, dir.path())?;
        let mut plain = PlainLayout {
            engine: Arc::clone(&engine),
            kind,
            batch: WriteBatch::new(),
            revision: 1,
            applied: 0,
        };
        plain_best = plain_best.best(drive(&mut plain, config, plan)?);
        drop(plain);
        let plain_rest = if last {
            Some(rest(engine, kind, dir.path())?)
        } else {
            drop(engine);
            None
        };
        let plain_rest = plain_rest.map(|r| (r.keys, r.bytes, r.settled));
        drop(dir);

        eprintln!(
            "mvcc: {} round {}: MVCC state machine",
            kind.name(),
            round + 1
        );
        let dir = fresh_dir(config, kind, "mvcc")?;
        let engine = open_engine(kind, dir.path())?;
        let mut mvcc = MvccLayout::open(Arc::clone(&engine), kind)?;
        mvcc_best = mvcc_best.best(drive(&mut mvcc, config, plan)?);
        drop(mvcc);
        if let (true, Some((plain_records, plain_bytes, plain_settled))) = (last, plain_rest) {
            eprintln!("mvcc: {}: space, compaction, index rebuild", kind.name());
            let before = rest(engine, kind, dir.path())?;
            // Opening the state machine on the reopened engine rebuilds the
            // key index from the history: the restart cost.
            let mut mvcc = MvccLayout::open(Arc::clone(&before.engine), kind)?;
            let rebuild = mvcc.sm.open_stats().elapsed;
            let revision = mvcc.sm.revision() as i64;
            mvcc.apply(&Command::Compact { revision })?;
            mvcc.commit()?;
            drop(mvcc);
            let compacted = rest(before.engine, kind, dir.path())?;
            let defragmented = compacted
                .engine
                .defragment()
                .map_err(|e| failed(kind, "defragment", e))?;
            let after = rest(compacted.engine, kind, dir.path())?;
            let rebuild_after = reopen_stats(&after.engine, kind)?;
            space = Some(SpaceRow {
                engine: kind.name().to_string(),
                plain_records,
                plain_bytes,
                mvcc_records: before.keys,
                mvcc_bytes: before.bytes,
                compacted_records: compacted.keys,
                compacted_bytes: compacted.bytes,
                defragmented_bytes: if defragmented { after.bytes } else { None },
                index_rebuild_ms: ms(rebuild),
                index_rebuild_after_compaction_ms: ms(rebuild_after),
                settled: plain_settled && before.settled && compacted.settled && after.settled,
            });
        } else {
            drop(engine);
        }
    }
    let row = |phase: &str, plain: f64, mvcc: f64| PhaseRow {
        engine: kind.name().to_string(),
        phase: phase.to_string(),
        plain_ops_per_sec: plain,
        mvcc_ops_per_sec: mvcc,
        ratio: mvcc / plain.max(1e-9),
    };
    let phases = vec![
        row("load (put, new key)", plain_best.load, mvcc_best.load),
        row(
            "update (put, existing key)",
            plain_best.update,
            mvcc_best.update,
        ),
        row("get", plain_best.get, mvcc_best.get),
        row(
            &format!("range ({} keys)", config.range_len),
            plain_best.range,
            mvcc_best.range,
        ),
    ];
    let space = space.ok_or_else(|| failed(kind, "space", "no round measured space"))?;
    Ok((phases, space))
}

/// Opens a second state machine on the same engine, which rebuilds the key
/// index from the history, and returns how long that took.
fn reopen_stats(engine: &Arc<dyn Engine>, kind: EngineKind) -> Result<Duration> {
    let sm = StateMachine::open(Arc::clone(engine), Members::default())
        .map_err(|e| failed(kind, "reopen the state machine", e))?;
    Ok(sm.open_stats().elapsed)
}

/// Runs every engine, prints the tables, writes `mvcc.json`, `mvcc.md`
/// and `mvcc.svg` into the output directory.
pub fn run(config: &MvccCostConfig) -> Result<MvccCostReport> {
    ensure_writable(&config.out_dir)?;
    fs::create_dir_all(&config.data_dir)
        .context(|| format!("cannot create {}", config.data_dir.display()))?;
    let machine = Machine::calibrate(&config.data_dir)?;
    let plan = Plan::new(config);
    let (mut phases, mut space) = (Vec::new(), Vec::new());
    for &kind in &config.engines {
        let (rows, row) = measure_engine(config, kind, &plan)?;
        phases.extend(rows);
        space.push(row);
    }
    let report = MvccCostReport {
        schema_version: SCHEMA_VERSION,
        machine,
        settings: format!(
            "in-process apply, no Raft/WAL/network; {} keys loaded then {} random overwrites, random values of {} B, \
             {} entr{} per engine batch, writes buffered (WriteOptions::BUFFERED, as the state machine writes; \
             the WAL's fsync is outside this measurement); {} random gets, {} ranges of {} consecutive keys; \
             best of {} alternating rounds; space of the engine's files after settle (flushes and compactions \
             done) and close, compaction at the current revision through the Compact command; seed {}",
            config.keys,
            config.updates,
            config.value_size,
            config.batch,
            if config.batch == 1 { "y" } else { "ies" },
            config.reads,
            config.ranges,
            config.range_len,
            config.rounds,
            config.seed
        ),
        phases,
        space,
    };
    let markdown = report.markdown();
    println!("{markdown}");
    let json = serde_json::to_string_pretty(&report).map_err(|e| WorkloadError::Results {
        context: "serializing mvcc.json".into(),
        message: e.to_string(),
    })?;
    let json_path = config.out_dir.join("mvcc.json");
    fs::write(&json_path, json + "\n")
        .context(|| format!("cannot write {}", json_path.display()))?;
    let md_path = config.out_dir.join("mvcc.md");
    fs::write(&md_path, markdown).context(|| format!("cannot write {}", md_path.display()))?;
    report.draw(&config.out_dir.join("mvcc.svg"))?;
    Ok(report)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".to_string(), |b| {
        format!("{:.1}", b as f64 / (1024.0 * 1024.0))
    })
}

fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl MvccCostReport {
    /// The tables of `mvcc.md` (the book includes this file).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# MVCC against the plain state machine\n");
        let _ = writeln!(out, "Machine: {}\n", self.machine.summary());
        let _ = writeln!(out, "Settings: {}\n", self.settings);
        let _ = writeln!(out, "## Operations per second\n");
        let _ = writeln!(out, "| engine | phase | plain | MVCC | MVCC / plain |");
        let _ = writeln!(out, "|---|---|---:|---:|---:|");
        for r in &self.phases {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} |",
                r.engine,
                r.phase,
                thousands(r.plain_ops_per_sec),
                thousands(r.mvcc_ops_per_sec),
                r.ratio
            );
        }
        let _ = writeln!(out, "\n## Space at rest\n");
        let _ = writeln!(
            out,
            "| engine | plain: records | plain: MiB | MVCC: records | MVCC: MiB | compacted: records | compacted: MiB | defragmented: MiB | index rebuild before / after compaction (ms) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for s in &self.space {
            let _ = writeln!(
                out,
                "| {}{} | {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} |",
                s.engine,
                if s.settled { "" } else { " (not settled)" },
                thousands(s.plain_records as f64),
                mib(s.plain_bytes),
                thousands(s.mvcc_records as f64),
                mib(s.mvcc_bytes),
                thousands(s.compacted_records as f64),
                mib(s.compacted_bytes),
                mib(s.defragmented_bytes),
                s.index_rebuild_ms,
                s.index_rebuild_after_compaction_ms
            );
        }
        let _ = writeln!(
            out,
            "\nRecords are the engine's keys (user data plus a handful of metadata keys). MiB are allocated \
             bytes of the engine's files; the memory engine has none. \"compacted\" is after metcd's \
             Compact (old revisions deleted) with the engine settled; \"defragmented\" after the engine's \
             own space reclamation, which etcd's Defragment runs (a full compaction of rocksdb and fjall, a \
             merge of Bitcask's files; \"-\": the engine has none it can run while serving: redb keeps freed \
             pages in its file for reuse, sled reclaims segments in the background)."
        );
        out
    }

    /// `mvcc.svg`: MVCC's throughput as a share of the plain layout's, per
    /// engine and phase.
    fn draw(&self, path: &Path) -> Result<()> {
        let engines: Vec<String> = self.space.iter().map(|s| s.engine.clone()).collect();
        let mut phases: Vec<String> = Vec::new();
        for r in &self.phases {
            if !phases.contains(&r.phase) {
                phases.push(r.phase.clone());
            }
        }
        let series: Vec<(String, Vec<f64>)> = phases
            .iter()
            .map(|phase| {
                let values = engines
                    .iter()
                    .map(|engine| {
                        self.phases
                            .iter()
                            .find(|r| &r.engine == engine && &r.phase == phase)
                            .map_or(0.0, |r| r.ratio)
                    })
                    .collect();
                (phase.clone(), values)
            })
            .collect();
        crate::plots::grouped_bars(
            path,
            "MVCC state machine: throughput as a share of the plain layout's",
            &format!("{} | {}", self.settings, self.machine.summary()),
            &engines,
            &series,
            "MVCC ops/s ÷ plain ops/s",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(out: &Path, data: &Path) -> MvccCostConfig {
        MvccCostConfig {
            out_dir: out.to_path_buf(),
            data_dir: data.to_path_buf(),
            engines: vec![EngineKind::Memory, EngineKind::Redb],
            keys: 300,
            updates: 600,
            reads: 200,
            ranges: 20,
            range_len: 10,
            value_size: 32,
            batch: 4,
            rounds: 1,
            seed: 7,
        }
    }

    /// The history holds one record per put until compaction, which leaves
    /// one per key; both layouts serve every key; the files are written.
    #[test]
    fn history_grows_with_every_put_and_compaction_keeps_one_per_key() {
        let out = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let config = tiny(out.path(), data.path());
        let report = run(&config).unwrap();
        assert_eq!(report.phases.len(), 8);
        assert!(
            report
                .phases
                .iter()
                .all(|r| r.plain_ops_per_sec > 0.0 && r.mvcc_ops_per_sec > 0.0)
        );
        for row in &report.space {
            // User records plus a few metadata keys (m/...).
            let metadata = row.plain_records - config.keys;
            assert!(metadata <= 4, "{row:?}");
            let history = row.mvcc_records - row.compacted_records;
            assert_eq!(history, config.updates, "{row:?}");
            assert!(
                row.compacted_records >= config.keys && row.compacted_records <= config.keys + 8
            );
        }
        assert!(report.space[1].plain_bytes.is_some() && report.space[0].plain_bytes.is_none());
        for file in ["mvcc.json", "mvcc.md", "mvcc.svg"] {
            assert!(out.path().join(file).is_file(), "{file} missing");
        }
    }
}
