//! Targets: what a workload runs against.
//!
//! The runner knows nothing about engines, files or networks. It asks a
//! [`Target`] for one [`Client`] per worker thread and drives that client with
//! the operations of the mix; the target says what it is (name and
//! description, copied into the results), makes writes durable on request
//! and reports what it holds ([`TargetStatus`]).
//!
//! Why two traits: a client is owned by exactly one thread and takes
//! `&mut self`, so it can keep per-thread state without locks: reusable
//! buffers here, and later an HTTP connection. The target itself is shared.
//!
//! # Targets in this crate
//!
//! * [`EngineTarget`]: an embedded engine (`Arc<dyn engines::Engine>`) opened
//!   in a fresh directory for each run, so no run sees another's files.
//! * [`NoopTarget`]: does nothing, to measure the harness itself
//!   (`workbench overhead`).
//! * [`crate::cluster_target::ClusterTarget`]: a running 3-node metcd
//!   cluster over HTTP, or one the harness starts itself.
//!
//! # Designed for remote targets
//!
//! A replicated metcd cluster, or an external peer such as a real etcd, fits
//! the same two traits without changing the runner:
//!
//! * `connect(thread)` opens that thread's connection (it may pick a
//!   different member per thread); connection errors surface before the run
//!   phase starts.
//! * each `Client` method maps to one request (`GET`, `PUT`, range, ...),
//!   and its latency is the round trip the runner measures;
//! * `durable` on a write becomes the request's durability flag, and
//!   `sync()` may do nothing where every acknowledged write is already
//!   committed by the cluster: the spec's durability policy is still printed;
//! * `status()` returns bytes on disk if the target can tell (a cluster can
//!   sum its members' status endpoints) and `None` otherwise, and the
//!   results then leave space amplification out instead of guessing;
//! * `settle()` brings the target to a quiet state before the run and
//!   before space is measured (an engine flushes and waits for its
//!   compactions; the default only syncs);
//! * `sync_primitive()` names the system call behind a durable write, which
//!   the reports print next to the durability policy;
//! * `is_local()` tells the runner whether `/proc/self/io` of this process
//!   measures the target's device writes (true only for embedded targets);
//!   otherwise write amplification is reported as unknown.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use engines::{Engine, EngineKind, EngineOptions, KeyRange, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Result, WorkloadError};
use crate::results::{MemberFsyncs, ReplicationSummary};
use crate::space::{DiskSpace, disk_space};
use crate::spec::WorkloadSpec;

/// What a target holds after a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub keys: u64,
    /// Sum of live key and value lengths.
    pub logical_bytes: u64,
    /// The target's files, apparent and allocated, if it can tell.
    pub disk: Option<DiskSpace>,
}

/// A system under test, shared by the worker threads.
pub trait Target: Send + Sync {
    /// Short name for file names and legends (`redb`, `noop`).
    fn name(&self) -> String;
    /// One line saying what this target is and how writes become durable.
    fn description(&self) -> String;
    /// The client for worker `thread`.
    fn connect(&self, thread: usize) -> Result<Box<dyn Client>>;
    /// Makes every write that has returned so far durable.
    fn sync(&self) -> Result<()>;
    /// Brings the target to a quiet state within about `budget` (see
    /// `engines::Engine::settle`); returns whether it got there.
    fn settle(&self, budget: Duration) -> Result<bool> {
        let _ = budget;
        self.sync()?;
        Ok(true)
    }
    /// The system call that makes a durable write durable, in words.
    fn sync_primitive(&self) -> String;
    /// What the target holds.
    fn status(&self) -> Result<TargetStatus>;
    /// Whether the target runs inside this process (so this process's I/O
    /// counters include its device writes).
    fn is_local(&self) -> bool;
    /// Refuses a spec the target cannot run honestly (e.g. scans on a
    /// target without a range API), before anything is loaded.
    fn check(&self, _spec: &WorkloadSpec) -> Result<()> {
        Ok(())
    }
    /// How writes become durable when the spec's durability policy does not
    /// apply (a cluster fsyncs its WAL before every acknowledgement);
    /// `None` for targets that follow the policy.
    fn durability_override(&self) -> Option<String> {
        None
    }
    /// A replicated target's WAL counters per member, read just before the
    /// run phase; empty for other targets.
    fn counters_before_run(&self) -> Result<Vec<MemberFsyncs>> {
        Ok(Vec::new())
    }
    /// WAL fsyncs since `before` per `acknowledged_writes`; `None` for
    /// targets that are not replicated.
    fn replication_since(
        &self,
        _before: Vec<MemberFsyncs>,
        _acknowledged_writes: u64,
    ) -> Result<Option<ReplicationSummary>> {
        Ok(None)
    }
}

/// One worker thread's handle to a target. Every method is one operation of
/// the mix, measured as a whole.
pub trait Client: Send {
    /// Reads `key`; `Ok(false)` when it is missing.
    fn read(&mut self, key: &[u8]) -> Result<bool>;
    /// Replaces the value of an existing record.
    fn update(&mut self, key: &[u8], value: &[u8], durable: bool) -> Result<()>;
    /// Stores a new record.
    fn insert(&mut self, key: &[u8], value: &[u8], durable: bool) -> Result<()>;
    /// Reads up to `count` records from `start` in key order; returns how
    /// many were read.
    fn scan(&mut self, start: &[u8], count: usize) -> Result<usize>;
    /// Reads `key`, then writes `value` to it, as one measured operation.
    fn read_modify_write(&mut self, key: &[u8], value: &[u8], durable: bool) -> Result<()> {
        self.read(key)?;
        self.update(key, value, durable)
    }
    /// Removes `key`.
    fn delete(&mut self, key: &[u8], durable: bool) -> Result<()>;
    /// Stores many new records at once (the load phase); not durable until
    /// [`Target::sync`].
    fn insert_batch(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        for (key, value) in records {
            self.insert(key, value, false)?;
        }
        Ok(())
    }
    /// Makes this thread's writes durable (the `batched` policy's sync).
    fn sync(&mut self) -> Result<()>;
}

/// An embedded engine in a directory of its own.
pub struct EngineTarget {
    engine: Arc<dyn Engine>,
    kind: EngineKind,
    dir: PathBuf,
}

impl EngineTarget {
    /// Opens `kind` in `dir`, which must be empty or missing.
    pub fn open(kind: EngineKind, dir: &Path, options: &EngineOptions) -> Result<EngineTarget> {
        let engine = engines::open_shared(kind, dir, options)?;
        Ok(EngineTarget {
            engine,
            kind,
            dir: dir.to_path_buf(),
        })
    }

    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    fn failed(&self, operation: &str, error: engines::EngineError) -> WorkloadError {
        engine_failure(self.kind, operation, error)
    }
}

fn engine_failure(kind: EngineKind, operation: &str, error: engines::EngineError) -> WorkloadError {
    WorkloadError::Target {
        target: kind.name().to_string(),
        operation: operation.to_string(),
        message: error.to_string(),
    }
}

fn write_options(durable: bool) -> WriteOptions {
    if durable {
        WriteOptions::SYNC
    } else {
        WriteOptions::BUFFERED
    }
}

impl Target for EngineTarget {
    fn name(&self) -> String {
        self.kind.name().to_string()
    }

    fn description(&self) -> String {
        format!(
            "embedded {} ({}) in {}",
            self.kind.name(),
            self.kind.design(),
            self.dir.display()
        )
    }

    fn connect(&self, _thread: usize) -> Result<Box<dyn Client>> {
        Ok(Box::new(EngineClient {
            engine: Arc::clone(&self.engine),
            kind: self.kind,
        }))
    }

    fn sync(&self) -> Result<()> {
        self.engine.sync().map_err(|e| self.failed("sync", e))
    }

    fn settle(&self, budget: Duration) -> Result<bool> {
        self.engine
            .settle(budget)
            .map_err(|e| self.failed("settle", e))
    }

    fn sync_primitive(&self) -> String {
        sync_primitive(self.kind).to_string()
    }

    fn status(&self) -> Result<TargetStatus> {
        let status = self.engine.status().map_err(|e| self.failed("status", e))?;
        Ok(TargetStatus {
            keys: status.keys,
            logical_bytes: status.logical_bytes,
            disk: if self.kind.is_durable() {
                Some(disk_space(&self.dir)?)
            } else {
                None
            },
        })
    }

    fn is_local(&self) -> bool {
        true
    }
}

// ANCHOR: sync_primitive
/// What a durable write (`WriteOptions::SYNC`, or `sync()`) of each engine
/// costs in system calls, as each engine's module documents it. Printed on
/// the durability line of every report, because the engines do not give the
/// same guarantee for the same word.
pub fn sync_primitive(kind: EngineKind) -> &'static str {
    match kind {
        EngineKind::Memory => "none (nothing reaches a disk)",
        EngineKind::Redb => {
            "fdatasync of its file, once per commit (one-phase commit with checksum)"
        }
        EngineKind::Sled => "sync_file_range on its log (no metadata, no drive-cache flush)",
        EngineKind::Rocksdb => "fdatasync of the WAL",
        EngineKind::Fjall => "fsync of the journal",
        EngineKind::Bitcask => "fdatasync of the active data file",
        EngineKind::Student => "whatever the engine lab's sync() does",
    }
}
// ANCHOR_END: sync_primitive

/// A worker's handle to an embedded engine: the engine itself, shared.
struct EngineClient {
    engine: Arc<dyn Engine>,
    kind: EngineKind,
}

impl Client for EngineClient {
    fn read(&mut self, key: &[u8]) -> Result<bool> {
        // Read through the lending form: a read costs what the engine
        // costs, not an allocation and copy of the value on top.
        let mut found = false;
        self.engine
            .get_with(key, &mut |v| found = v.is_some())
            .map_err(|e| engine_failure(self.kind, "read", e))?;
        Ok(found)
    }

    fn update(&mut self, key: &[u8], value: &[u8], durable: bool) -> Result<()> {
        self.engine
            .put(key, value, write_options(durable))
            .map_err(|e| engine_failure(self.kind, "update", e))
    }

    fn insert(&mut self, key: &[u8], value: &[u8], durable: bool) -> Result<()> {
        self.engine
            .put(key, value, write_options(durable))
            .map_err(|e| engine_failure(self.kind, "insert", e))
    }

    fn scan(&mut self, start: &[u8], count: usize) -> Result<usize> {
        self.engine
            .scan(&KeyRange::from(start), count)
            .map(|pairs| pairs.len())
            .map_err(|e| engine_failure(self.kind, "scan", e))
    }

    fn delete(&mut self, key: &[u8], durable: bool) -> Result<()> {
        self.engine
            .delete(key, write_options(durable))
            .map_err(|e| engine_failure(self.kind, "delete", e))
    }

    fn insert_batch(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut batch = WriteBatch::new();
        for (key, value) in records {
            batch.put(key.as_slice(), value.as_slice());
        }
        self.engine
            .write_batch(batch, WriteOptions::BUFFERED)
            .map_err(|e| engine_failure(self.kind, "load batch", e))
    }

    fn sync(&mut self) -> Result<()> {
        self.engine
            .sync()
            .map_err(|e| engine_failure(self.kind, "sync", e))
    }
}

/// A target that does nothing and answers at once: what is left of a run's
/// cost is the harness's own.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopTarget;

impl Target for NoopTarget {
    fn name(&self) -> String {
        "noop".to_string()
    }

    fn description(&self) -> String {
        "no-op target: every operation returns at once (measures the harness)".to_string()
    }

    fn connect(&self, _thread: usize) -> Result<Box<dyn Client>> {
        Ok(Box::new(NoopClient))
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn sync_primitive(&self) -> String {
        "none".to_string()
    }

    fn status(&self) -> Result<TargetStatus> {
        Ok(TargetStatus {
            keys: 0,
            logical_bytes: 0,
            disk: None,
        })
    }

    fn is_local(&self) -> bool {
        true
    }
}

struct NoopClient;

impl Client for NoopClient {
    fn read(&mut self, key: &[u8]) -> Result<bool> {
        Ok(!key.is_empty())
    }
    fn update(&mut self, _key: &[u8], _value: &[u8], _durable: bool) -> Result<()> {
        Ok(())
    }
    fn insert(&mut self, _key: &[u8], _value: &[u8], _durable: bool) -> Result<()> {
        Ok(())
    }
    fn scan(&mut self, _start: &[u8], count: usize) -> Result<usize> {
        Ok(count)
    }
    fn delete(&mut self, _key: &[u8], _durable: bool) -> Result<()> {
        Ok(())
    }
    fn insert_batch(&mut self, _records: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        Ok(())
    }
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_engine_target_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let target =
            EngineTarget::open(EngineKind::Memory, dir.path(), &EngineOptions::default()).unwrap();
        let mut client = target.connect(0).unwrap();
        client.insert(b"user1", b"v", false).unwrap();
        assert!(client.read(b"user1").unwrap());
        assert!(!client.read(b"user2").unwrap());
        client
            .insert_batch(&[(b"user2".to_vec(), b"w".to_vec())])
            .unwrap();
        assert_eq!(client.scan(b"user", 10).unwrap(), 2);
        client.delete(b"user1", true).unwrap();
        assert!(!client.read(b"user1").unwrap());
        let status = target.status().unwrap();
        assert_eq!(status.keys, 1);
        assert_eq!(status.disk, None);
    }
}
