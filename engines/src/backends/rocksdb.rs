//! `rocksdb`: the LSM tree, through the `rocksdb` crate's bindings to the C++
//! library.
//!
//! A write goes to the write-ahead log and the memtable; full memtables are
//! flushed to sorted SSTable files in level 0, and background compaction
//! merges them down the levels. A read checks the memtables, then each level
//! newest first; a bloom filter per table (10 bits per key: about 1% of the
//! lookups for absent keys get a false "maybe") lets a point read skip tables
//! that cannot hold the key. Data blocks are compressed with LZ4 on every
//! level; our fjall engine is configured the same way (fjall's defaults are
//! not), so the two LSM engines are compared on equal terms.
//!
//! Durability: a write with `sync: true` uses rocksdb's `WriteOptions` with
//! `sync = true`: the WAL record is written and `fdatasync`ed before the call
//! returns. With `sync: false` (rocksdb's own default) the record is written
//! to the WAL file, so it survives a process crash but not an OS crash,
//! until [`Engine::sync`], which calls `FlushWAL(sync = true)`. A
//! `WriteBatch` is one WAL record, hence atomic.

use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, Direction, IteratorMode, Options,
    WaitForCompactOptions,
};

use crate::EngineOptions;
use crate::data_dir::DataDir;
use crate::engine::{
    BatchOp, Engine, EngineStatus, KeyRange, Pair, WriteBatch, WriteOptions, check_batch,
    check_key, count_by_scan,
};
use crate::error::{EngineError, Result};
use crate::kind::EngineKind;
use std::ops::Bound;
use std::time::{Duration, Instant};

pub struct RocksdbEngine {
    db: rocksdb::DB,
    sync_writes: rocksdb::WriteOptions,
    buffered_writes: rocksdb::WriteOptions,
    dir: DataDir,
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::backend(EngineKind::Rocksdb, e)
}

// ANCHOR: rocksdb_options
/// The options metcd opens rocksdb with; public so that the harness's
/// overhead benchmark opens the library directly with the same settings.
pub fn rocksdb_options(options: &EngineOptions) -> Options {
    let mut block = BlockBasedOptions::default();
    block.set_bloom_filter(10.0, false);
    block.set_block_cache(&Cache::new_lru_cache(options.cache_bytes as usize));
    block.set_cache_index_and_filter_blocks(true);
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_block_based_table_factory(&block);
    // Two cores: one flush and one compaction thread in the background.
    opts.increase_parallelism(2);
    opts
}
// ANCHOR_END: rocksdb_options

impl RocksdbEngine {
    pub fn open(dir: DataDir, options: &EngineOptions) -> Result<Self> {
        let path = dir.join("rocksdb");
        let db = rocksdb::DB::open(&rocksdb_options(options), &path)
            .map_err(|e| err(format!("opening {}: {e}", path.display())))?;
        let mut sync_writes = rocksdb::WriteOptions::default();
        sync_writes.set_sync(true);
        Ok(RocksdbEngine {
            db,
            sync_writes,
            buffered_writes: rocksdb::WriteOptions::default(),
            dir,
        })
    }

    fn write_options(&self, options: WriteOptions) -> &rocksdb::WriteOptions {
        if options.sync {
            &self.sync_writes
        } else {
            &self.buffered_writes
        }
    }
}

impl Engine for RocksdbEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Rocksdb
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_pinned(key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        let pinned = self.db.get_pinned(key).map_err(err)?;
        visit(pinned.as_deref());
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.db
            .put_opt(key, value, self.write_options(options))
            .map_err(err)
    }

    fn delete(&self, key: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.db
            .delete_opt(key, self.write_options(options))
            .map_err(err)
    }

    fn write_batch(&self, batch: WriteBatch, options: WriteOptions) -> Result<()> {
        check_batch(&batch)?;
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                BatchOp::Put { key, value } => rocks_batch.put(key, value),
                BatchOp::Delete { key } => rocks_batch.delete(key),
            }
        }
        self.db
            .write_opt(rocks_batch, self.write_options(options))
            .map_err(err)
    }

    fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>> {
        if range.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut read = rocksdb::ReadOptions::default();
        // rocksdb's upper bound is exclusive; an inclusive end is checked
        // per key below instead.
        if let Bound::Excluded(end) = &range.end {
            read.set_iterate_upper_bound(end.clone());
        }
        let mode = match &range.start {
            Bound::Included(start) | Bound::Excluded(start) => {
                IteratorMode::From(start, Direction::Forward)
            }
            Bound::Unbounded => IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_opt(mode, read) {
            let (k, v) = item.map_err(err)?;
            if let Bound::Excluded(start) = &range.start
                && k.as_ref() == start.as_slice()
            {
                continue;
            }
            if !range.contains(&k) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(err)
    }

    /// Flushes the memtables to level-0 tables (which makes the WAL
    /// obsolete), then waits for every flush and compaction rocksdb has
    /// queued (`WaitForCompact`, with the budget as its timeout).
    fn settle(&self, budget: Duration) -> Result<bool> {
        let started = Instant::now();
        self.sync()?;
        self.db.flush().map_err(err)?;
        let left = budget.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok(false);
        }
        let mut wait = WaitForCompactOptions::default();
        wait.set_flush(true);
        // 0 would mean "no timeout"; at least 1 µs keeps the bound.
        wait.set_timeout((left.as_micros() as u64).max(1));
        match self.db.wait_for_compact(&wait) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == rocksdb::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// `CompactRange` over every key, forcing the bottommost level too, so
    /// tombstones and overwritten versions are dropped from every table.
    fn defragment(&self) -> Result<bool> {
        self.sync()?;
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db
            .compact_range_opt(None::<&[u8]>, None::<&[u8]>, &options);
        Ok(true)
    }

    fn status(&self) -> Result<EngineStatus> {
        let (keys, logical_bytes) = count_by_scan(self)?;
        let property = |name: &str| self.db.property_int_value(name).map_err(err);
        // rocksdb's own estimate of the live data in its tables; the rest
        // of the table bytes is garbage that compaction would drop.
        let reclaimable = match (
            property("rocksdb.total-sst-files-size")?,
            property("rocksdb.estimate-live-data-size")?,
        ) {
            (Some(total), Some(live)) => Some(total.saturating_sub(live)),
            _ => None,
        };
        Ok(EngineStatus {
            kind: EngineKind::Rocksdb,
            keys,
            logical_bytes,
            disk_bytes: self.dir.disk_usage()?,
            reclaimable_bytes: reclaimable,
        })
    }
}
