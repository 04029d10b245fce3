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

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverheadReport {
    pub schema_version: u32,
    pub machine: Machine,
    pub harness: Vec<HarnessRow>,
    pub engine_trait: Vec<TraitRow>,
    pub settings: String,
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
    let report = OverheadReport {
        schema_version: SCHEMA_VERSION,
        machine,
        harness,
        engine_trait,
        settings: format!(
            "harness: read-heavy mix on NoopTarget, 1 thread, {} s per run; engine trait: {} records of {} B values, \
             {} reads and {} buffered writes per round, {} rounds, best round reported, seed {}",
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

fn measure_engine(config: &OverheadConfig, kind: EngineKind) -> Result<Vec<TraitRow>> {
    let options = EngineOptions::default();
    let workload = Workload::new(config);
    let direct_dir = tempfile::Builder::new()
        .prefix(&format!("metcd-overhead-direct-{}-", kind.name()))
        .tempdir_in(&config.data_dir)
        .context(|| format!("cannot create a directory in {}", config.data_dir.display()))?;
    let trait_dir = tempfile::Builder::new()
        .prefix(&format!("metcd-overhead-trait-{}-", kind.name()))
        .tempdir_in(&config.data_dir)
        .context(|| format!("cannot create a directory in {}", config.data_dir.display()))?;
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
        out
    }
}
