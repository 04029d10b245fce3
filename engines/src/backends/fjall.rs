//! `fjall`: an LSM tree written in Rust.
//!
//! The same design as rocksdb (journal, memtables, sorted tables in levels,
//! leveled compaction, bloom filters, LZ4 blocks), implemented in safe Rust
//! by the `fjall` and `lsm-tree` crates. We use one database with one
//! keyspace, `kv` (a keyspace is fjall's column family: its own LSM tree
//! sharing the journal).
//!
//! The keyspace is configured like our rocksdb, so that the two LSM trees
//! are compared on their implementations and not on their settings: a bloom
//! filter of 10 bits per key on every level and LZ4 on every data block.
//! fjall's own defaults differ (a 0.01% false-positive target on level 0,
//! 10 bits per key below; no compression on levels 0 and 1, LZ4 from level
//! 2), which would make its upper levels larger and its level-0 filters
//! stronger than rocksdb's.
//!
//! Durability: every write is appended to fjall's journal and handed to the
//! operating system before the call returns (fjall's default), so it
//! survives a process crash. A write with `sync: true` is followed by
//! `Database::persist(PersistMode::SyncAll)`, an `fsync` of the journal, so
//! it survives an OS crash too; [`Engine::sync`] does the same. A batch is
//! one journal entry and is atomic.
//!
//! Scans read through a `Database::snapshot`: fjall's plain
//! `Keyspace::range` reads the newest data item by item and can show a
//! reader half of a batch that is being applied (our conformance suite's
//! `batch_atomicity` case caught exactly that).

use std::time::{Duration, Instant};

use fjall::config::{BloomConstructionPolicy, CompressionPolicy, FilterPolicy, FilterPolicyEntry};
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use crate::EngineOptions;
use crate::data_dir::DataDir;
use crate::engine::{
    BatchOp, Engine, EngineStatus, KeyRange, Pair, WriteBatch, WriteOptions, check_batch,
    check_key, count_by_scan,
};
use crate::error::{EngineError, Result};
use crate::kind::EngineKind;

pub struct FjallEngine {
    db: Database,
    kv: Keyspace,
    dir: DataDir,
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::backend(EngineKind::Fjall, e)
}

impl FjallEngine {
    pub fn open(dir: DataDir, options: &EngineOptions) -> Result<Self> {
        let path = dir.join("fjall");
        let db = Database::builder(&path)
            .cache_size(options.cache_bytes)
            .open()
            .map_err(|e| err(format!("opening {}: {e}", path.display())))?;
        // ANCHOR: fjall_options
        let kv = db
            .keyspace("kv", || {
                KeyspaceCreateOptions::default()
                    .filter_policy(FilterPolicy::all(FilterPolicyEntry::Bloom(
                        BloomConstructionPolicy::BitsPerKey(10.0),
                    )))
                    .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
            })
            .map_err(err)?;
        // ANCHOR_END: fjall_options
        Ok(FjallEngine { db, kv, dir })
    }

    fn durable(&self, options: WriteOptions) -> Result<()> {
        if options.sync {
            self.db.persist(PersistMode::SyncAll).map_err(err)?;
        }
        Ok(())
    }
}

impl Engine for FjallEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Fjall
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        // fjall asserts on keys it cannot store; no such key can exist here.
        if check_key(key).is_err() {
            return Ok(None);
        }
        Ok(self.kv.get(key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        if check_key(key).is_err() {
            visit(None);
            return Ok(());
        }
        // fjall hands out a reference-counted slice: lending it is free.
        let value = self.kv.get(key).map_err(err)?;
        visit(value.as_deref());
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.kv.insert(key, value).map_err(err)?;
        self.durable(options)
    }

    fn delete(&self, key: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.kv.remove(key).map_err(err)?;
        self.durable(options)
    }

    fn write_batch(&self, batch: WriteBatch, options: WriteOptions) -> Result<()> {
        check_batch(&batch)?;
        let mut fjall_batch = self.db.batch();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { key, value } => fjall_batch.insert(&self.kv, key, value),
                BatchOp::Delete { key } => fjall_batch.remove(&self.kv, key),
            }
        }
        fjall_batch.commit().map_err(err)?;
        self.durable(options)
    }

    fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>> {
        if range.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let bounds = (
            super::bound_slice(&range.start),
            super::bound_slice(&range.end),
        );
        // `Keyspace::range` reads at the newest sequence number, so it can
        // meet a batch that is half applied to the memtable; a snapshot pins
        // one sequence number and makes the scan atomic with batches.
        let snapshot = self.db.snapshot();
        let mut out = Vec::new();
        for guard in snapshot.range::<&[u8], _>(&self.kv, bounds) {
            let (k, v) = guard.into_inner().map_err(err)?;
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll).map_err(err)
    }

    /// Seals the active memtable so it is flushed to a table (fjall's
    /// `rotate_memtable`, public though hidden from its docs), then polls
    /// until no flush is queued, no sealed memtable is left and no
    /// compaction is running, on two polls in a row (a compaction a flush
    /// triggers may be scheduled a moment after the flush ends).
    fn settle(&self, budget: Duration) -> Result<bool> {
        const POLL: Duration = Duration::from_millis(50);
        let started = Instant::now();
        self.sync()?;
        self.kv.rotate_memtable().map_err(err)?;
        let mut quiet_polls = 0;
        while started.elapsed() < budget {
            let quiet = self.db.outstanding_flushes() == 0
                && self.kv.sealed_memtable_count() == 0
                && self.db.active_compactions() == 0;
            quiet_polls = if quiet { quiet_polls + 1 } else { 0 };
            if quiet_polls >= 2 {
                self.sync()?;
                return Ok(true);
            }
            std::thread::sleep(POLL);
        }
        Ok(false)
    }

    /// fjall's major compaction: every table of the keyspace rewritten into
    /// the last level, dropping what newer data and tombstones shadow.
    fn defragment(&self) -> Result<bool> {
        self.sync()?;
        self.kv.major_compact().map_err(err)?;
        Ok(true)
    }

    fn status(&self) -> Result<EngineStatus> {
        let (keys, logical_bytes) = count_by_scan(self)?;
        Ok(EngineStatus {
            kind: EngineKind::Fjall,
            keys,
            logical_bytes,
            disk_bytes: self.dir.disk_usage()?,
            // fjall does not report how much of its tables is superseded.
            reclaimable_bytes: None,
        })
    }
}
