//! `workbench overhead`: is the harness the bottleneck, and what does the
//! `Engine` trait cost? A benchmark, run on demand, never a timed test.
//!
//! 1. Harness: the runner drives [`NoopTarget`] on one thread (the read-heavy
//!    mix, once with uniform and once with scrambled zipfian keys) and
//!    reports operations per second. Everything but the target is measured:
//!    choosing the operation and key, formatting the key, two clock reads
//!    and two histogram records per operation.
//! 2. Engine trait: the same operations on the same data, once through the
//!    library's own API and once through `engines::open(..)` (a
//!    `Box<dyn Engine>`), for redb and rocksdb, with the options the engines
//!    crate uses (redb: table `kv`, the cache size of `EngineOptions`,
//!    `Durability::None` for buffered writes; rocksdb: the crate's own
//!    `rocksdb_options`, default write options). The direct loops do what a
//!    user of the library would: a read looks at the value in place
//!    (`get_pinned`, redb's `AccessGuard`) where the trait must return an
//!    owned `Vec`, so the copy is part of the measured cost; a second get
//!    row copies on the direct side too, leaving only dispatch and error
//!    mapping. Rounds
//!    alternate direct and trait loops over identical key sequences; the
//!    fastest round of each is reported, as the least disturbed.
//! 3. Instructions: timings on a shared 2-core machine move by ±10% between
//!    rounds, too much to tell whether the trait costs 3% or nothing. So the
//!    same six loops (direct and trait: get with the value lent, get with it
//!    copied, buffered put) also run under valgrind's callgrind, which counts
//!    the instructions each executes: a count that repeats to a fraction of
//!    a percent from run to run and machine to machine. `workbench
//!    overhead` starts `valgrind --tool=callgrind` on its own hidden
//!    `overhead-loops` subcommand once per engine; each loop is a function
//!    with a fixed symbol name (`metcd_counted_*`, unmangled), callgrind
//!    zeroes its counters when one is entered and dumps them when it returns
//!    (`--zero-before`, `--dump-after`), and each loop runs twice, the
//!    second (warm) run counted. Instructions per operation are the dump's
//!    total over the loop's operations, every thread included (the engines'
//!    background threads stay idle during these short loops: the puts fit
//!    in one memtable).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use engines::{Engine, EngineKind, EngineOptions, WriteBatch, WriteOptions};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::distribution::KeyFormat;
use crate::error::{IoContext, Result, WorkloadError};
use crate::machine::Machine;
use crate::results::SCHEMA_VERSION;
use crate::runner;
use crate::spec::{DistributionKind, DurabilityMode, resolve_one};
use crate::suite::ensure_writable;
use crate::target::NoopTarget;

/// What to measure.
#[derive(Debug, Clone)]
pub struct OverheadConfig {
    pub out_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Seconds of each no-op harness run.
    pub harness_seconds: f64,
    /// Records loaded into redb and rocksdb.
    pub records: u64,
    /// Reads per round.
    pub reads: usize,
    /// Buffered writes per round.
    pub writes: usize,
    /// Rounds of (direct, trait) per engine.
    pub rounds: usize,
    pub value_size: usize,
    pub seed: u64,
    /// Instruction counts under callgrind; `None` skips them.
    pub callgrind: Option<CallgrindConfig>,
}

/// Sizes of the instruction-counted runs.
#[derive(Debug, Clone, Copy)]
pub struct CallgrindConfig {
    /// Records loaded into both sides.
    pub records: u64,
    /// Operations per counted loop.
    pub operations: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverheadReport {
    pub schema_version: u32,
    pub machine: Machine,
    pub harness: Vec<HarnessRow>,
    pub engine_trait: Vec<TraitRow>,
    /// Instructions per operation, direct and through the trait (empty
    /// when skipped).
    #[serde(default)]
    pub instructions: Vec<InstructionRow>,
    pub settings: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstructionRow {
    pub engine: String,
    pub operation: String,
    pub operations: usize,
    pub direct_instructions_per_op: f64,
    pub trait_instructions_per_op: f64,
    /// `(trait - direct) / direct * 100`.
    pub overhead_percent: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HarnessRow {
    pub distribution: String,
    pub operations: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraitRow {
    pub engine: String,
    pub operation: String,
    pub operations: usize,
    pub direct_ns_per_op: f64,
    pub trait_ns_per_op: f64,
    /// `(trait - direct) / direct * 100`.
    pub overhead_percent: f64,
}

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// Records per load transaction, on both sides.
const LOAD_CHUNK: usize = 1000;

fn backend_error(engine: &str, e: impl std::fmt::Display) -> WorkloadError {
    WorkloadError::Target {
        target: engine.to_string(),
        operation: "direct API".to_string(),
        message: e.to_string(),
    }
}

/// Runs both measurements, prints the tables, writes `overhead.json` and
/// `overhead.md` into the output directory.
pub fn run(config: &OverheadConfig) -> Result<OverheadReport> {
    ensure_writable(&config.out_dir)?;
    let machine = Machine::calibrate(&config.data_dir)?;
    let harness = harness_rows(config)?;
    let mut engine_trait = Vec::new();
    engine_trait.extend(measure_engine(config, EngineKind::Redb)?);
    engine_trait.extend(measure_engine(config, EngineKind::Rocksdb)?);
    let mut instructions = Vec::new();
    if let Some(callgrind) = config.callgrind {
        for kind in [EngineKind::Redb, EngineKind::Rocksdb] {
            instructions.extend(count_instructions(config, callgrind, kind)?);
        }
    }
    let counted = config.callgrind.map_or(
        "instructions: not counted (--no-callgrind)".to_string(),
        |c| {
            format!(
                "instructions: valgrind --tool=callgrind, {} records, {} operations per loop, second run of each loop counted",
                c.records, c.operations
            )
        },
    );
    let report = OverheadReport {
        schema_version: SCHEMA_VERSION,
        machine,
        harness,
        engine_trait,
        instructions,
        settings: format!(
            "harness: read-heavy mix on NoopTarget, 1 thread, {} s per run; engine trait: {} records of {} B values, \
             {} reads and {} buffered writes per round, {} rounds, best round reported, seed {}; {counted}",
            config.harness_seconds,
            config.records,
            config.value_size,
            config.reads,
            config.writes,
            config.rounds,
            config.seed
        ),
    };
    let markdown = report.markdown();
    println!("{markdown}");
    let json = serde_json::to_string_pretty(&report).map_err(|e| WorkloadError::Results {
        context: "serializing overhead.json".into(),
        message: e.to_string(),
    })?;
    let json_path = config.out_dir.join("overhead.json");
    fs::write(&json_path, json + "\n")
        .context(|| format!("cannot write {}", json_path.display()))?;
    let md_path = config.out_dir.join("overhead.md");
    fs::write(&md_path, markdown).context(|| format!("cannot write {}", md_path.display()))?;
    Ok(report)
}

fn harness_rows(config: &OverheadConfig) -> Result<Vec<HarnessRow>> {
    let mut rows = Vec::new();
    for distribution in [DistributionKind::Uniform, DistributionKind::Zipfian] {
        let mut spec = resolve_one("read-heavy")?;
        spec.distribution = distribution;
        spec.threads = 1;
        spec.duration_secs = Some(config.harness_seconds);
        spec.operation_count = None;
        spec.warmup_secs = 0.5;
        spec.warmup_operations = 0;
        spec.time_cap_secs = None;
        spec.durability = DurabilityMode::None;
        spec.seed = config.seed;
        let label = format!("overhead noop {}", distribution.name());
        let m = runner::run(&spec, &NoopTarget, &label)?;
        rows.push(HarnessRow {
            distribution: if distribution == DistributionKind::Zipfian {
                "scrambled zipfian".to_string()
            } else {
                distribution.name().to_string()
            },
            operations: m.operations,
            seconds: m.seconds,
            ops_per_sec: m.operations as f64 / m.seconds.max(1e-9),
        });
    }
    Ok(rows)
}

/// The data and request sequences shared by the direct and trait loops.
struct Workload {
    records: Vec<(Vec<u8>, Vec<u8>)>,
    reads: Vec<Vec<u8>>,
    writes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Workload {
    fn new(config: &OverheadConfig) -> Workload {
        let format = KeyFormat { key_size: 24 };
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let mut value = || {
            let mut v = vec![0u8; config.value_size];
            rng.fill_bytes(&mut v);
            v
        };
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..config.records)
            .map(|n| (format.key(n), value()))
            .collect();
        let mut rng = SmallRng::seed_from_u64(config.seed + 1);
        let reads = (0..config.reads)
            .map(|_| format.key(rng.random_range(0..config.records.max(1))))
            .collect();
        let writes = (0..config.writes)
            .map(|i| {
                let (key, value) = &records[(i * 7919) % records.len().max(1)];
                (key.clone(), value.clone())
            })
            .collect();
        Workload {
            records,
            reads,
            writes,
        }
    }
}

/// Nanoseconds per item of `f` over `items`.
fn time_per_op<T>(items: &[T], mut f: impl FnMut(&T) -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    for item in items {
        f(item)?;
    }
    Ok(start.elapsed().as_nanos() as f64 / items.len().max(1) as f64)
}

/// The library's own API, set up as the engines crate sets it up.
enum Direct {
    Redb(redb::Database),
    Rocksdb(rocksdb::DB),
}

impl Direct {
    fn open(kind: EngineKind, dir: &Path, options: &EngineOptions) -> Result<Direct> {
        let name = kind.name();
        match kind {
            EngineKind::Redb => {
                let db = redb::Database::builder()
                    .set_cache_size(options.cache_bytes as usize)
                    .create(dir.join("data.redb"))
                    .map_err(|e| backend_error(name, e))?;
                // As `RedbEngine::open` does: the table is created by a
                // durable commit before any buffered one. Without it, redb's
                // first (buffered) commit stays on its list of unprocessed
                // buffered commits and every later buffered commit scans
                // the freed-page table from it, which made direct writes
                // 10x slower than the trait's.
                let tx = db.begin_write().map_err(|e| backend_error(name, e))?;
                tx.open_table(TABLE).map_err(|e| backend_error(name, e))?;
                tx.commit().map_err(|e| backend_error(name, e))?;
                Ok(Direct::Redb(db))
            }
            _ => {
                let db = rocksdb::DB::open(
                    &engines::backends::rocksdb::rocksdb_options(options),
                    dir.join("rocksdb"),
                )
                .map_err(|e| backend_error(name, e))?;
                Ok(Direct::Rocksdb(db))
            }
        }
    }

    fn load(&self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        match self {
            Direct::Redb(db) => {
                let e = |e: &dyn std::fmt::Display| backend_error("redb", e);
                // In chunks with buffered commits and one durable commit at
                // the end, as the trait side loads through `write_batch`.
                for chunk in records.chunks(LOAD_CHUNK) {
                    let mut tx = db.begin_write().map_err(|x| e(&x))?;
                    tx.set_durability(redb::Durability::None)
                        .map_err(|x| e(&x))?;
                    {
                        let mut table = tx.open_table(TABLE).map_err(|x| e(&x))?;
                        for (k, v) in chunk {
                            table
                                .insert(k.as_slice(), v.as_slice())
                                .map_err(|x| e(&x))?;
                        }
                    }
                    tx.commit().map_err(|x| e(&x))?;
                }
                Ok(())
            }
            Direct::Rocksdb(db) => {
                for chunk in records.chunks(LOAD_CHUNK) {
                    let mut batch = rocksdb::WriteBatch::default();
                    for (k, v) in chunk {
                        batch.put(k, v);
                    }
                    db.write(batch).map_err(|e| backend_error("rocksdb", e))?;
                }
                Ok(())
            }
        }
    }

    /// Makes every write durable, as `Engine::sync` does.
    fn sync(&self) -> Result<()> {
        match self {
            Direct::Redb(db) => {
                let e = |e: &dyn std::fmt::Display| backend_error("redb", e);
                let mut tx = db.begin_write().map_err(|x| e(&x))?;
                tx.set_durability(redb::Durability::Immediate)
                    .map_err(|x| e(&x))?;
                tx.commit().map_err(|x| e(&x))
            }
            Direct::Rocksdb(db) => db.flush_wal(true).map_err(|e| backend_error("rocksdb", e)),
        }
    }

    /// Reads `key` in place, or copied into an owned `Vec` as the trait
    /// must return it; returns the value's length (0 if missing).
    fn get(&self, key: &[u8], copy: bool) -> Result<usize> {
        let seen = |value: &[u8]| {
            if copy {
                std::hint::black_box(value.to_vec()).len()
            } else {
                std::hint::black_box(value).len()
            }
        };
        match self {
            Direct::Redb(db) => {
                let e = |e: &dyn std::fmt::Display| backend_error("redb", e);
                let tx = db.begin_read().map_err(|x| e(&x))?;
                let table = tx.open_table(TABLE).map_err(|x| e(&x))?;
                let value = table.get(key).map_err(|x| e(&x))?;
                Ok(value.map_or(0, |v| seen(v.value())))
            }
            Direct::Rocksdb(db) => Ok(db
                .get_pinned(key)
                .map_err(|e| backend_error("rocksdb", e))?
                .map_or(0, |v| seen(&v))),
        }
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Direct::Redb(db) => {
                let e = |e: &dyn std::fmt::Display| backend_error("redb", e);
                let mut tx = db.begin_write().map_err(|x| e(&x))?;
                tx.set_durability(redb::Durability::None)
                    .map_err(|x| e(&x))?;
                {
                    let mut table = tx.open_table(TABLE).map_err(|x| e(&x))?;
                    table.insert(key, value).map_err(|x| e(&x))?;
                }
                tx.commit().map_err(|x| e(&x))
            }
            Direct::Rocksdb(db) => db
                .put_opt(key, value, &rocksdb::WriteOptions::default())
                .map_err(|e| backend_error("rocksdb", e)),
        }
    }
}

/// Both sides of one engine, loaded with the same records: the workload,
/// the direct handle, the trait object, and their directories (removed on
/// drop, after the handles).
type Prepared = (Workload, Direct, Box<dyn Engine>, [tempfile::TempDir; 2]);

fn prepare(config: &OverheadConfig, kind: EngineKind) -> Result<Prepared> {
    let options = EngineOptions::default();
    let workload = Workload::new(config);
    let dir = |side: &str| {
        tempfile::Builder::new()
            .prefix(&format!("metcd-overhead-{side}-{}-", kind.name()))
            .tempdir_in(&config.data_dir)
            .context(|| format!("cannot create a directory in {}", config.data_dir.display()))
    };
    let (direct_dir, trait_dir) = (dir("direct")?, dir("trait")?);
    let direct = Direct::open(kind, direct_dir.path(), &options)?;
    let engine: Box<dyn Engine> = engines::open(kind, trait_dir.path(), &options)?;
    direct.load(&workload.records)?;
    direct.sync()?;
    for chunk in workload.records.chunks(LOAD_CHUNK) {
        let mut batch = WriteBatch::new();
        for (k, v) in chunk {
            batch.put(k.as_slice(), v.as_slice());
        }
        engine.write_batch(batch, WriteOptions::BUFFERED)?;
    }
    engine.sync()?;
    Ok((workload, direct, engine, [direct_dir, trait_dir]))
}

fn measure_engine(config: &OverheadConfig, kind: EngineKind) -> Result<Vec<TraitRow>> {
    let (workload, direct, engine, _dirs) = prepare(config, kind)?;
    let (mut best_direct_get, mut best_trait_get) = (f64::INFINITY, f64::INFINITY);
    let mut best_trait_get_with = f64::INFINITY;
    let mut best_direct_get_copy = f64::INFINITY;
    let (mut best_direct_put, mut best_trait_put) = (f64::INFINITY, f64::INFINITY);
    let mut found = (0usize, 0usize);
    for round in 0..config.rounds {
        eprintln!(
            "overhead {}: round {}/{}",
            kind.name(),
            round + 1,
            config.rounds
        );
        // Alternate which side goes first, so neither always runs on a
        // cache or device that the other has just warmed or dirtied.
        for direct_side in [round % 2 == 0, round % 2 == 1] {
            if direct_side {
                best_direct_get = best_direct_get.min(time_per_op(&workload.reads, |k| {
                    found.0 += usize::from(direct.get(k, false)? > 0);
                    Ok(())
                })?);
                best_direct_get_copy = best_direct_get_copy
                    .min(time_per_op(&workload.reads, |k| {
                        direct.get(k, true).map(|_| ())
                    })?);
                best_direct_put =
                    best_direct_put.min(time_per_op(&workload.writes, |(k, v)| direct.put(k, v))?);
                // Untimed durable sync after each write loop: redb's buffered
                // commits keep a list of freed pages that only a durable
                // commit clears, and it grows with every buffered commit, so
                // without it each round would be slower than the last.
                direct.sync()?;
            } else {
                best_trait_get = best_trait_get.min(time_per_op(&workload.reads, |k| {
                    found.1 += usize::from(engine.get(k)?.is_some());
                    Ok(())
                })?);
                best_trait_get_with = best_trait_get_with.min(time_per_op(&workload.reads, |k| {
                    engine
                        .get_with(k, &mut |v| {
                            std::hint::black_box(v.map_or(0, <[u8]>::len));
                        })
                        .map_err(Into::into)
                })?);
                best_trait_put = best_trait_put.min(time_per_op(&workload.writes, |(k, v)| {
                    engine.put(k, v, WriteOptions::BUFFERED).map_err(Into::into)
                })?);
                engine.sync()?;
            }
        }
    }
    // The handles go before their directories.
    drop(engine);
    drop(direct);
    if found.0 != found.1 {
        return Err(WorkloadError::Results {
            context: format!("overhead {}", kind.name()),
            message: format!(
                "the direct loop found {} keys and the trait loop {}: they did not read the same data",
                found.0, found.1
            ),
        });
    }
    let row = |operation: &str, operations: usize, direct: f64, via_trait: f64| TraitRow {
        engine: kind.name().to_string(),
        operation: operation.to_string(),
        operations,
        direct_ns_per_op: direct,
        trait_ns_per_op: via_trait,
        overhead_percent: (via_trait - direct) / direct * 100.0,
    };
    Ok(vec![
        row(
            "get, value lent (direct in place; trait `get_with`)",
            workload.reads.len(),
            best_direct_get,
            best_trait_get_with,
        ),
        row(
            "get, value copied (direct `to_vec`; trait `get`)",
            workload.reads.len(),
            best_direct_get_copy,
            best_trait_get,
        ),
        row(
            "put (buffered)",
            workload.writes.len(),
            best_direct_put,
            best_trait_put,
        ),
    ])
}

/// The counted loops, by symbol name: (symbol, operation, direct side).
const COUNTED: [(&str, &str, bool); 6] = [
    (
        "metcd_counted_direct_get_lent",
        "get, value lent (direct in place; trait `get_with`)",
        true,
    ),
    (
        "metcd_counted_trait_get_lent",
        "get, value lent (direct in place; trait `get_with`)",
        false,
    ),
    (
        "metcd_counted_direct_get_copied",
        "get, value copied (direct `to_vec`; trait `get`)",
        true,
    ),
    (
        "metcd_counted_trait_get_copied",
        "get, value copied (direct `to_vec`; trait `get`)",
        false,
    ),
    ("metcd_counted_direct_put", "put (buffered)", true),
    ("metcd_counted_trait_put", "put (buffered)", false),
];

#[unsafe(no_mangle)]
#[inline(never)]
fn metcd_counted_direct_get_lent(direct: &Direct, keys: &[Vec<u8>]) -> Result<usize> {
    let mut found = 0;
    for key in keys {
        found += usize::from(direct.get(key, false)? > 0);
    }
    Ok(found)
}

#[unsafe(no_mangle)]
#[inline(never)]
fn metcd_counted_trait_get_lent(engine: &dyn Engine, keys: &[Vec<u8>]) -> Result<usize> {
    let mut found = 0;
    for key in keys {
        engine.get_with(key, &mut |v| {
            found += usize::from(std::hint::black_box(v).is_some());
        })?;
    }
    Ok(found)
}

#[unsafe(no_mangle)]
#[inline(never)]
fn metcd_counted_direct_get_copied(direct: &Direct, keys: &[Vec<u8>]) -> Result<usize> {
    let mut found = 0;
    for key in keys {
        found += usize::from(direct.get(key, true)? > 0);
    }
    Ok(found)
}

#[unsafe(no_mangle)]
#[inline(never)]
fn metcd_counted_trait_get_copied(engine: &dyn Engine, keys: &[Vec<u8>]) -> Result<usize> {
    let mut found = 0;
    for key in keys {
        found += usize::from(std::hint::black_box(engine.get(key)?).is_some());
    }
    Ok(found)
}

#[unsafe(no_mangle)]
#[inline(never)]
fn metcd_counted_direct_put(direct: &Direct, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<usize> {
    for (key, value) in pairs {
        direct.put(key, value)?;
    }
    Ok(pairs.len())
}

#[unsafe(no_mangle)]
#[inline(never)]
fn metcd_counted_trait_put(engine: &dyn Engine, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<usize> {
    for (key, value) in pairs {
        engine.put(key, value, WriteOptions::BUFFERED)?;
    }
    Ok(pairs.len())
}

/// The hidden `overhead-loops` subcommand: loads both sides and runs each
/// counted loop twice (callgrind counts every call; the second is kept).
pub fn counted_loops(
    kind: EngineKind,
    data_dir: &Path,
    records: u64,
    operations: usize,
    value_size: usize,
) -> Result<()> {
    if !matches!(kind, EngineKind::Redb | EngineKind::Rocksdb) {
        return Err(WorkloadError::Refused(format!(
            "overhead loops compare the trait with redb's and rocksdb's own APIs; '{}' has none here",
            kind.name()
        )));
    }
    let config = OverheadConfig {
        out_dir: PathBuf::new(),
        data_dir: data_dir.to_path_buf(),
        harness_seconds: 1.0,
        records,
        reads: operations,
        writes: operations,
        rounds: 1,
        value_size,
        seed: 42,
        callgrind: None,
    };
    let (workload, direct, engine, _dirs) = prepare(&config, kind)?;
    for _ in 0..2 {
        let lent = metcd_counted_direct_get_lent(&direct, &workload.reads)?;
        let lent_trait = metcd_counted_trait_get_lent(engine.as_ref(), &workload.reads)?;
        let copied = metcd_counted_direct_get_copied(&direct, &workload.reads)?;
        let copied_trait = metcd_counted_trait_get_copied(engine.as_ref(), &workload.reads)?;
        if lent != lent_trait || copied != copied_trait || lent != copied {
            return Err(WorkloadError::Results {
                context: format!("overhead loops {}", kind.name()),
                message: format!(
                    "the loops found different keys ({lent}, {lent_trait}, {copied}, {copied_trait})"
                ),
            });
        }
        metcd_counted_direct_put(&direct, &workload.writes)?;
        metcd_counted_trait_put(engine.as_ref(), &workload.writes)?;
        // Untimed and uncounted, as in the timed rounds.
        direct.sync()?;
        engine.sync()?;
    }
    // The handles go before their directories.
    drop(engine);
    drop(direct);
    Ok(())
}

/// Runs [`counted_loops`] under callgrind and reads the instruction count
/// of each loop's last call.
fn count_instructions(
    config: &OverheadConfig,
    callgrind: CallgrindConfig,
    kind: EngineKind,
) -> Result<Vec<InstructionRow>> {
    let exe = std::env::current_exe()
        .context(|| "cannot find the workbench executable for callgrind".to_string())?;
    let out = tempfile::Builder::new()
        .prefix("metcd-callgrind-")
        .tempdir_in(&config.data_dir)
        .context(|| format!("cannot create a directory in {}", config.data_dir.display()))?;
    eprintln!(
        "overhead {}: counting instructions under callgrind ({} records, {} operations per loop)",
        kind.name(),
        callgrind.records,
        callgrind.operations
    );
    let mut valgrind = Command::new("valgrind");
    valgrind.arg("--tool=callgrind").arg(format!(
        "--callgrind-out-file={}",
        out.path().join("callgrind.out").display()
    ));
    // One option per function (callgrind takes no wildcards here). No name
    // may be a prefix of another: callgrind then loses one of the dumps.
    for (symbol, _, _) in COUNTED {
        valgrind
            .arg(format!("--zero-before={symbol}"))
            .arg(format!("--dump-after={symbol}"));
    }
    let output = valgrind
        .arg(&exe)
        .arg("overhead-loops")
        .arg(kind.name())
        .arg("--data-dir")
        .arg(out.path())
        .arg("--records")
        .arg(callgrind.records.to_string())
        .arg("--operations")
        .arg(callgrind.operations.to_string())
        .arg("--value-size")
        .arg(config.value_size.to_string())
        .output()
        .map_err(|e| {
            WorkloadError::io(
                "cannot run valgrind (install it, e.g. `apt-get install valgrind`, or pass --no-callgrind)",
                e,
            )
        })?;
    if !output.status.success() {
        return Err(WorkloadError::Results {
            context: format!("callgrind on {}", kind.name()),
            message: format!(
                "valgrind exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        });
    }
    let counts = read_dumps(out.path())?;
    let per_op = |symbol: &str| -> Result<f64> {
        counts
            .get(symbol)
            .map(|ir| *ir as f64 / callgrind.operations as f64)
            .ok_or_else(|| WorkloadError::Results {
                context: format!("callgrind on {}", kind.name()),
                message: format!(
                    "no dump for {symbol}; callgrind's output format may have changed"
                ),
            })
    };
    let mut rows = Vec::new();
    for pair in COUNTED.chunks(2) {
        let (direct, trait_side) = (pair[0], pair[1]);
        let d = per_op(direct.0)?;
        let t = per_op(trait_side.0)?;
        rows.push(InstructionRow {
            engine: kind.name().to_string(),
            operation: direct.1.to_string(),
            operations: callgrind.operations,
            direct_instructions_per_op: d,
            trait_instructions_per_op: t,
            overhead_percent: (t - d) / d * 100.0,
        });
    }
    Ok(rows)
}

/// The instruction count (`Ir`) of the last dump of each counted function
/// in callgrind's output files in `dir`. Each dump names its trigger in a
/// `desc: Trigger: --dump-after=<function>` line (older callgrinds wrote
/// `Dump after <function>`) and its cost in a `summary:` (or `totals:`)
/// line whose first number is `Ir`.
fn read_dumps(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let mut dumps: Vec<(u64, String, u64)> = Vec::new();
    for entry in fs::read_dir(dir).context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .context(|| format!("cannot list {}", dir.display()))?
            .path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.starts_with("callgrind.out") {
            continue;
        }
        let text =
            fs::read_to_string(&path).context(|| format!("cannot read {}", path.display()))?;
        let sequence = name
            .rsplit('.')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let trigger = text.lines().find_map(|l| {
            l.strip_prefix("desc: Trigger: ")
                .and_then(|t| t.trim().rsplit(['=', ' ']).next())
                .map(str::to_string)
        });
        let first_number = |prefix: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(prefix)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            })
        };
        let total = first_number("summary:").or_else(|| first_number("totals:"));
        if let (Some(function), Some(total)) = (trigger, total) {
            dumps.push((sequence, function, total));
        }
    }
    dumps.sort();
    let mut last = BTreeMap::new();
    for (_, function, total) in dumps {
        if COUNTED.iter().any(|(symbol, _, _)| *symbol == function) {
            last.insert(function, total);
        }
    }
    Ok(last)
}

impl OverheadReport {
    pub fn markdown(&self) -> String {
        let mut out = String::from("# Harness and Engine-trait overhead\n\n");
        let _ = writeln!(
            out,
            "Machine: {}\n\nSettings: {}\n",
            self.machine.summary(),
            self.settings
        );
        out.push_str("## Harness against a no-op target (1 thread)\n\n| keys | operations | seconds | ops/s |\n|---|---:|---:|---:|\n");
        for r in &self.harness {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.0} |",
                r.distribution, r.operations, r.seconds, r.ops_per_sec
            );
        }
        out.push_str(
            "\n## Engine trait vs the library's own API (same run, same data)\n\n\
             | engine | operation | operations | direct (ns/op) | through `Engine` (ns/op) | difference |\n\
             |---|---|---:|---:|---:|---:|\n",
        );
        for r in &self.engine_trait {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.0} | {:+.1}% |",
                r.engine,
                r.operation,
                r.operations,
                r.direct_ns_per_op,
                r.trait_ns_per_op,
                r.overhead_percent
            );
        }
        if !self.instructions.is_empty() {
            out.push_str(
                "\n## Engine trait vs the library's own API, in instructions (callgrind)\n\n\
                 Instructions executed per operation, every thread included; repeatable where the timings above are not.\n\n\
                 | engine | operation | operations | direct (instr./op) | through `Engine` (instr./op) | difference |\n\
                 |---|---|---:|---:|---:|---:|\n",
            );
            for r in &self.instructions {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.0} | {:.0} | {:+.2}% |",
                    r.engine,
                    r.operation,
                    r.operations,
                    r.direct_instructions_per_op,
                    r.trait_instructions_per_op,
                    r.overhead_percent
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callgrind_dumps_are_read_per_function_last_call_wins() {
        let dir = tempfile::tempdir().unwrap();
        let dump = |n: u32, function: &str, ir: u64| {
            fs::write(
                dir.path().join(format!("callgrind.out.{n}")),
                format!(
                    "# callgrind format\nversion: 1\ndesc: Trigger: --dump-after={function}\n\
                     events: Ir\nsummary: {ir}\n\nfn=(1) x\n0 5\ntotals: {}\n",
                    ir + 7
                ),
            )
            .unwrap();
        };
        dump(1, "metcd_counted_trait_get_lent", 100);
        dump(2, "metcd_counted_trait_get_copied", 200);
        dump(3, "metcd_counted_trait_get_lent", 300);
        fs::write(
            dir.path().join("callgrind.out"),
            "desc: Trigger: Program termination\nsummary: 9\n",
        )
        .unwrap();
        let counts = read_dumps(dir.path()).unwrap();
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert_eq!(counts["metcd_counted_trait_get_lent"], 300);
        assert_eq!(counts["metcd_counted_trait_get_copied"], 200);
    }
}
