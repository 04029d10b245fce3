//! # engines: one storage trait, six engines
//!
//! metcd compares storage engines, and replicates any of them with Raft, so
//! everything above this crate sees storage through one object-safe trait,
//! [`Engine`], and picks the implementation at run time with [`open`]:
//!
//! | kind      | design                               | durable write means                       |
//! |-----------|--------------------------------------|-------------------------------------------|
//! | `memory`  | `BTreeMap` behind a reader-writer lock | nothing: the data lives in the process  |
//! | `redb`    | copy-on-write B+tree (like boltdb)   | commit with one `fdatasync` (1-phase + checksum) |
//! | `sled`    | lock-free B+tree over a log (0.34)   | `Db::flush`: `sync_file_range`, not fsync  |
//! | `rocksdb` | LSM tree in C++, bloom filters       | WAL write with `sync = true` (fdatasync)   |
//! | `fjall`   | LSM tree in Rust                     | journal persisted with `SyncAll` (fsync)   |
//! | `bitcask` | our own append-only log + key directory | `fdatasync` of the active data file    |
//!
//! ## Invariants every engine keeps
//!
//! * Keys are ordered by their bytes; `scan` returns ascending keys within
//!   its [`KeyRange`], at most `limit` of them.
//! * A write with [`WriteOptions::SYNC`] is durable when the call returns;
//!   [`Engine::sync`] makes all earlier writes durable.
//! * [`Engine::write_batch`] is atomic, for readers and across crashes.
//! * An engine's directory records its kind in a file named `ENGINE` and is
//!   held under an exclusive lock (`LOCK`) while open: a second process, or
//!   a different kind, cannot open it (see [`open`]).
//!
//! ## How data enters and leaves
//!
//! Point operations and batches go in; point reads, scans and the export
//! stream ([`export`]) come out. The export stream is engine-neutral, so a
//! snapshot taken from one engine can be imported into another.
//!
//! The conformance suite in `tests/conformance.rs` holds every engine to
//! these rules with the same cases, a property test against a `BTreeMap`
//! model, and `tests/crash.rs` kills writers with SIGKILL to check that
//! nothing acknowledged is lost and no batch is split. A SIGKILL leaves the
//! page cache intact, so it cannot see a missing fsync; for our own durable
//! code (bitcask here, the WAL in the cluster crate) [`durable_io`] puts
//! every file operation behind a trait whose simulated implementation
//! loses unsynced data at a crash, and `tests/power_loss.rs` checks bitcask
//! against that.

pub mod backends;
pub mod bitcask;
mod data_dir;
pub mod durable_io;
pub mod engine;
pub mod error;
pub mod export;
pub mod kind;
pub mod student;

use std::path::Path;
use std::sync::Arc;

pub use data_dir::{DataDir, disk_usage};
pub use engine::{
    BatchOp, Engine, EngineStatus, KeyRange, MAX_KEY_BYTES, Pair, WriteBatch, WriteOptions,
    check_batch, check_key, prefix_successor,
};
pub use error::{EngineError, Result};
pub use kind::EngineKind;
use serde::{Deserialize, Serialize};

/// Tuning shared by the engines, with defaults sized for a small machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineOptions {
    /// Page or block cache for redb, sled, rocksdb and fjall, in bytes.
    pub cache_bytes: u64,
    /// Size at which bitcask closes its active data file and starts a new one.
    pub bitcask_max_file_bytes: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_bytes: 64 << 20,
            bitcask_max_file_bytes: 64 << 20,
        }
    }
}

// ANCHOR: open
/// Opens (creating if needed) an engine of `kind` in `dir`.
///
/// `dir` is created if it does not exist. For durable engines it must be
/// empty or hold an engine of the same kind: the kind is recorded in
/// `dir/ENGINE` on first open, and `dir/LOCK` is locked exclusively for as
/// long as the engine lives, so a second process gets [`EngineError::Locked`]
/// instead of corrupting the files. The memory engine ignores `dir`.
pub fn open(kind: EngineKind, dir: &Path, options: &EngineOptions) -> Result<Box<dyn Engine>> {
    if kind == EngineKind::Memory {
        return Ok(Box::new(backends::memory::MemoryEngine::new()));
    }
    let data_dir = DataDir::prepare(dir, kind)?;
    Ok(match kind {
        EngineKind::Memory => unreachable!("handled above"),
        EngineKind::Redb => Box::new(backends::redb::RedbEngine::open(data_dir, options)?),
        EngineKind::Sled => Box::new(backends::sled::SledEngine::open(data_dir, options)?),
        EngineKind::Rocksdb => Box::new(backends::rocksdb::RocksdbEngine::open(data_dir, options)?),
        EngineKind::Fjall => Box::new(backends::fjall::FjallEngine::open(data_dir, options)?),
        EngineKind::Bitcask => Box::new(bitcask::BitcaskEngine::open(data_dir, options)?),
        EngineKind::Student => Box::new(student::StudentEngine::open(data_dir, options)?),
    })
}
// ANCHOR_END: open

/// [`open`], shared: the form the harness and the state machine hold.
pub fn open_shared(
    kind: EngineKind,
    dir: &Path,
    options: &EngineOptions,
) -> Result<Arc<dyn Engine>> {
    open(kind, dir, options).map(Arc::from)
}
