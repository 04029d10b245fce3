//! `sled` 0.34: a lock-free B+tree whose pages live in a log-structured
//! store.
//!
//! sled keeps its tree in memory as a page table of lock-free nodes and
//! persists page updates as deltas appended to segments of a log; a
//! background thread flushes on a timer (every 500 ms by default) and a
//! segment cleaner rewrites segments whose pages have moved on. Reads are
//! served from the in-memory tree; writes touch memory and the log buffer.
//!
//! Durability: a write with `sync: true` is followed by `Db::flush`, which
//! writes the log buffer and waits for it to reach the file. On Linux sled
//! 0.34 does that with `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`
//! over the bytes it wrote (`pagecache/iobuf.rs`), not with `fsync` or
//! `fdatasync`: the pages are written back to the device, but neither the
//! file's metadata (its size, when the log grew) nor the drive's volatile
//! write cache is flushed. So sled's "durable" write survives a process
//! crash, and a kernel crash when the file did not grow, but on power loss
//! it is weaker than the other engines' `fdatasync`/`fsync`. The benchmark
//! tables print each engine's primitive next to its durability for this
//! reason. With `sync: false`, writes reach the log within the flush
//! interval. sled offers no way to wait for its segment cleaner, so
//! [`Engine::settle`] is the flush.
//!
//! Batches and scans: `write_batch` uses `Tree::apply_batch`, which is
//! atomic across crashes and for point reads, but sled 0.34's range
//! iterator walks the tree leaf by leaf without a snapshot, so a scan that
//! spans several leaves can see part of a batch (the conformance case
//! `scans_are_atomic_across_many_leaves` showed it on this wrapper). The
//! engine contract promises scans see a batch whole, so this wrapper adds a
//! reader-writer lock: `write_batch` holds it exclusively while it applies
//! the batch, `scan` holds it shared while it iterates. Single puts,
//! deletes and gets do not take it (one key is atomic on its own).
//!
//! The cost, not measured here: scans no longer run during a batch and a
//! batch waits for every scan in progress to finish (a long scan delays
//! batches and, behind a waiting batch, later scans); concurrent scans
//! still run together, and single-key operations are unaffected.

use std::sync::RwLock;

use crate::EngineOptions;
use crate::data_dir::DataDir;
use crate::engine::{
    BatchOp, Engine, EngineStatus, KeyRange, Pair, WriteBatch, WriteOptions, check_batch, check_key,
};
use crate::error::{EngineError, Result};
use crate::kind::EngineKind;

const LOCK_RETRIES: u32 = 100;
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

pub struct SledEngine {
    db: sled::Db,
    /// Batches take it exclusively, scans shared: see the module docs.
    batch_gate: RwLock<()>,
    dir: DataDir,
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::backend(EngineKind::Sled, e)
}

impl SledEngine {
    pub fn open(dir: DataDir, options: &EngineOptions) -> Result<Self> {
        let path = dir.join("sled");
        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(options.cache_bytes);
        // sled 0.34's flusher thread keeps its file (and the file's lock)
        // for a moment after the `Db` is dropped. Our `DataDir` lock already
        // excludes other processes, so a held sled lock can only be our own
        // previous instance shutting down: wait for it, a bounded while.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled wraps the lock failure in an `Other` I/O error whose
                // text is the only thing that identifies it.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && attempts < LOCK_RETRIES =>
                {
                    attempts += 1;
                    std::thread::sleep(LOCK_RETRY_PAUSE);
                }
                Err(e) => return Err(err(format!("opening {}: {e}", path.display()))),
            }
        };
        Ok(SledEngine {
            db,
            batch_gate: RwLock::new(()),
            dir,
        })
    }

    fn durable(&self, options: WriteOptions) -> Result<()> {
        if options.sync {
            self.db.flush().map_err(err)?;
        }
        Ok(())
    }
}

impl Engine for SledEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Sled
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        let value = self.db.get(key).map_err(err)?;
        visit(value.as_deref());
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.db.insert(key, value).map_err(err)?;
        self.durable(options)
    }

    fn delete(&self, key: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.db.remove(key).map_err(err)?;
        self.durable(options)
    }

    fn write_batch(&self, batch: WriteBatch, options: WriteOptions) -> Result<()> {
        check_batch(&batch)?;
        let mut sled_batch = sled::Batch::default();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { key, value } => sled_batch.insert(key, value),
                BatchOp::Delete { key } => sled_batch.remove(key),
            }
        }
        {
            // The lock guards no data, so a panic while it was held left
            // nothing half done: a poisoned lock is used as is.
            let _exclusive = self.batch_gate.write().unwrap_or_else(|e| e.into_inner());
            self.db.apply_batch(sled_batch).map_err(err)?;
        }
        self.durable(options)
    }

    fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let bounds = (
            super::bound_slice(&range.start),
            super::bound_slice(&range.end),
        );
        let mut out = Vec::new();
        let _shared = self.batch_gate.read().unwrap_or_else(|e| e.into_inner());
        for item in self.db.range::<&[u8], _>(bounds).take(limit) {
            let (k, v) = item.map_err(err)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(err)
    }

    fn status(&self) -> Result<EngineStatus> {
        let (keys, logical_bytes) = crate::engine::count_by_scan(self)?;
        Ok(EngineStatus {
            kind: EngineKind::Sled,
            keys,
            logical_bytes,
            disk_bytes: self.dir.disk_usage()?,
            // sled 0.34 does not expose how much of its log is dead.
            reclaimable_bytes: None,
        })
    }
}
