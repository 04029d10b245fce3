//! The `Engine` trait: the one contract every storage engine in metcd keeps.
//!
//! Everything above the storage layer (the workload harness, the replicated
//! state machine, backups) talks to an engine through this trait only, and the
//! engine is chosen at run time, so the trait is object-safe: callers hold a
//! `Box<dyn Engine>` or an `Arc<dyn Engine>`.
//!
//! # The data model
//!
//! Keys and values are byte strings. Keys are ordered lexicographically by
//! their bytes (the order of `[u8]`'s `Ord`), which is what every engine here
//! uses natively, so a range scan returns the same pairs in the same order on
//! every engine. An empty value is a value; only `delete` removes a key.
//! A key is 1 to [`MAX_KEY_BYTES`] bytes on every engine: the narrowest
//! library (fjall) refuses empty keys and keys over 64 KiB, and a contract
//! that differed between engines would make comparisons meaningless. Writes
//! of other keys fail with `EngineError::InvalidArgument` ([`check_key`]);
//! reads of them find nothing.
//!
//! # Durability
//!
//! Every write takes [`WriteOptions`]. With `sync: true` the write is durable
//! when the call returns: it survives a crash of the process *and* of the
//! operating system, because the engine has called `fsync`/`fdatasync` (or
//! the library's equivalent) on everything the write depends on. With
//! `sync: false` the write is visible to readers at once and survives a crash
//! of the process only if the engine happens to have handed it to the kernel;
//! it becomes durable at the next `sync()` or synced write. Each engine's
//! module states precisely which system call it uses and when.
//!
//! # Atomicity
//!
//! `write_batch` is all or nothing: after a crash either every operation in
//! the batch is present or none is, and concurrent readers never see half a
//! batch: one `scan` call sees every operation of a batch or none, however
//! many leaves, pages or files the batch and the scan span. (Separate calls
//! are separate moments: two gets, or two pages of a paged scan, may fall
//! on either side of a batch.) The replicated state machine relies on this
//! to store the applied Raft index in the same batch as the data it
//! describes. sled 0.34 does not give this for scans by itself; our wrapper
//! adds a lock for it (see [`crate::backends::sled`]). The conformance case
//! `scans_are_atomic_across_many_leaves` and the crash tests check it for
//! every engine.
//!
//! # Export and import
//!
//! `export` writes the whole key space as a stream in the format of
//! [`crate::export`]; `import` replaces the whole key space with such a
//! stream. Raft snapshots and backups are built on the pair. The default
//! implementations page through the engine with `scan`, so an export is a
//! consistent snapshot only when no writes run concurrently. (metcd's
//! replicated state machine exports while it keeps applying, so it does not
//! use them: it scans through a copy-on-write overlay of its own, and it
//! installs a snapshot in bounded batches, so neither side holds a whole
//! snapshot in memory; see the `cluster` crate's `consistent_export`.)

use std::io::{Read, Write};
use std::ops::Bound;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::export::{ExportReader, ExportWriter};
use crate::kind::EngineKind;

/// How durable a write must be when the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WriteOptions {
    /// `true`: the write survives an OS crash or power loss once the call
    /// returns. `false`: it is buffered and made durable later by `sync()`.
    pub sync: bool,
}

impl WriteOptions {
    /// A write that is durable when the call returns.
    pub const SYNC: WriteOptions = WriteOptions { sync: true };
    /// A write that is buffered until the next `sync()`.
    pub const BUFFERED: WriteOptions = WriteOptions { sync: false };
}

/// One operation of an atomic [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl BatchOp {
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }
}

/// A group of writes applied atomically, in order: a later operation on the
/// same key wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Delete { key: key.into() });
        self
    }

    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key range for [`Engine::scan`]: `start` and `end` bounds over byte keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Keys in `[start, end)`, etcd's convention for a range request.
    pub fn half_open(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Excluded(end.into()),
        }
    }

    /// Keys from `start` (inclusive) to the end of the key space.
    pub fn from(start: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Unbounded,
        }
    }

    /// Keys that begin with `prefix`. The end bound is the smallest key
    /// greater than every key with the prefix: the prefix with its last
    /// non-0xff byte incremented and the rest cut off; a prefix of only 0xff
    /// bytes (or an empty one) has no such key, so the range is unbounded.
    pub fn prefix(prefix: &[u8]) -> Self {
        KeyRange {
            start: Bound::Included(prefix.to_vec()),
            end: match prefix_successor(prefix) {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            },
        }
    }

    /// Whether `key` lies inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let after_start = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let before_end = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        after_start && before_end
    }

    /// Whether no key can lie in the range (start past end), so engines can
    /// answer without asking a backend that would reject such bounds.
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        }
    }
}

/// The smallest byte string greater than every string that starts with
/// `prefix`, or `None` when there is none (empty or all-0xff prefix).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// What an engine holds and what it costs on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    pub kind: EngineKind,
    /// Live keys.
    pub keys: u64,
    /// Sum of the lengths of live keys and values: what a user stored.
    pub logical_bytes: u64,
    /// Bytes of every file in the engine's directory (0 for memory).
    pub disk_bytes: u64,
    /// Bytes on disk that hold overwritten or deleted data and that a merge
    /// or compaction could give back, where the engine can tell; `None`
    /// where it cannot (the number is then not guessed).
    pub reclaimable_bytes: Option<u64>,
}

/// The longest key any engine accepts.
pub const MAX_KEY_BYTES: usize = u16::MAX as usize;

/// Refuses keys outside the contract's 1..=[`MAX_KEY_BYTES`] bytes. Every
/// engine calls it on every key it is asked to write.
pub fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(EngineError::InvalidArgument(
            "empty key; keys are 1 to 65535 bytes".to_string(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(EngineError::InvalidArgument(format!(
            "key of {} bytes; keys are 1 to {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// [`check_key`] for every key of a batch.
pub fn check_batch(batch: &WriteBatch) -> Result<()> {
    batch.ops().iter().try_for_each(|op| check_key(op.key()))
}

/// A key-value pair as returned by scans.
pub type Pair = (Vec<u8>, Vec<u8>);

/// How many pairs the default export reads per scan call.
const EXPORT_PAGE: usize = 1024;
/// How many pairs the default import writes per batch.
const IMPORT_BATCH: usize = 1024;

// ANCHOR: trait
/// A key-value storage engine. See the module documentation for the data
/// model, durability and atomicity rules every implementation keeps.
pub trait Engine: Send + Sync {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;

    /// The value stored under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Stores `value` under `key`, replacing any previous value.
    fn put(&self, key: &[u8], value: &[u8], options: WriteOptions) -> Result<()>;

    /// Removes `key`; removing a missing key is not an error.
    fn delete(&self, key: &[u8], options: WriteOptions) -> Result<()>;

    /// Applies every operation of `batch` atomically, in order.
    fn write_batch(&self, batch: WriteBatch, options: WriteOptions) -> Result<()>;

    /// Up to `limit` pairs whose keys lie in `range`, in ascending key order.
    fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>>;

    /// Makes every write that has returned so far durable.
    fn sync(&self) -> Result<()>;

    /// Key count, logical size, size on disk and reclaimable bytes.
    fn status(&self) -> Result<EngineStatus>;

    /// Brings the engine to a quiet state, waiting at most about `budget`:
    /// every write durable, buffered data flushed to its final files
    /// (memtables written out) and the background work those writes caused
    /// (flushes, compactions) finished. Returns whether the engine became
    /// quiet (`false`: the budget ran out first). Benchmarks call it after
    /// loading, so one engine's backlog is not charged to the measured run,
    /// and before measuring space. The default only calls [`Engine::sync`]:
    /// right for engines with no background work, and the best available
    /// for engines that do not say whether theirs is running.
    fn settle(&self, budget: Duration) -> Result<bool> {
        let _ = budget;
        self.sync()?;
        Ok(true)
    }

    /// Gives back the space that overwritten and deleted data still holds,
    /// where the engine can while it keeps serving: a full compaction of an
    /// LSM tree (rocksdb `CompactRange` over every key, bottommost level
    /// included; fjall's major compaction), a merge of Bitcask's immutable
    /// files. Returns whether the engine did anything. The default does
    /// nothing and says so: memory has nothing on disk; sled reclaims its
    /// segments in the background and has no call to force it; redb's
    /// `Database::compact` needs the database exclusively (`&mut`), which a
    /// shared engine cannot have without stopping every reader and writer.
    /// etcd's `Defragment` (metcd's Maintenance service) and the MVCC
    /// benchmark, after a compaction, call it.
    fn defragment(&self) -> Result<bool> {
        Ok(false)
    }

    /// Calls `visit` with the value stored under `key` (or `None`), lending
    /// it where the engine can instead of copying it into a new `Vec`: a
    /// pinned block for rocksdb, a page guard for redb, the map's own bytes
    /// for memory. Callers that only inspect a value (the workload harness,
    /// a checksum, a comparison) read through this to measure the engine,
    /// not the allocator; the default copies through [`Engine::get`].
    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        let value = self.get(key)?;
        visit(value.as_deref());
        Ok(())
    }

    /// Up to `limit` pairs whose keys start with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<Pair>> {
        self.scan(&KeyRange::prefix(prefix), limit)
    }

    /// Writes every pair, in key order, to `out` in the export format and
    /// returns how many pairs were written.
    fn export(&self, out: &mut dyn Write) -> Result<u64> {
        let mut writer = ExportWriter::new(out, self.kind())?;
        let mut range = KeyRange::all();
        loop {
            let page = self.scan(&range, EXPORT_PAGE)?;
            for (key, value) in &page {
                writer.write_pair(key, value)?;
            }
            match page.last() {
                Some((last, _)) if page.len() == EXPORT_PAGE => {
                    range.start = Bound::Excluded(last.clone());
                }
                _ => break,
            }
        }
        writer.finish()
    }

    /// Replaces the whole key space with the pairs read from `input` (a
    /// stream written by `export` of any engine kind) and makes the result
    /// durable. Returns how many pairs were imported. The stream is verified
    /// completely before anything is replaced: a truncated or corrupt stream
    /// leaves the engine as it was.
    fn import(&self, input: &mut dyn Read) -> Result<u64> {
        // Verifying first costs memory for the whole stream, but it is the
        // only way a generic implementation can promise "all or nothing"
        // without engine-specific staging.
        let pairs = ExportReader::new(input)?.read_all()?;
        clear(self)?;
        let mut batch = WriteBatch::new();
        for (key, value) in &pairs {
            batch.put(key.clone(), value.clone());
            if batch.len() >= IMPORT_BATCH {
                self.write_batch(std::mem::take(&mut batch), WriteOptions::BUFFERED)?;
            }
        }
        if !batch.is_empty() {
            self.write_batch(batch, WriteOptions::BUFFERED)?;
        }
        self.sync()?;
        Ok(pairs.len() as u64)
    }
}
// ANCHOR_END: trait

/// Deletes every key of `engine`, a page at a time.
pub fn clear(engine: &(impl Engine + ?Sized)) -> Result<()> {
    loop {
        let page = engine.scan(&KeyRange::all(), IMPORT_BATCH)?;
        if page.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for (key, _) in page {
            batch.delete(key);
        }
        engine.write_batch(batch, WriteOptions::BUFFERED)?;
    }
}

/// Counts keys and logical bytes by scanning, for engines that keep no
/// counters of their own.
pub fn count_by_scan(engine: &(impl Engine + ?Sized)) -> Result<(u64, u64)> {
    let (mut keys, mut bytes) = (0u64, 0u64);
    let mut range = KeyRange::all();
    loop {
        let page = engine.scan(&range, EXPORT_PAGE)?;
        for (key, value) in &page {
            keys += 1;
            bytes += (key.len() + value.len()) as u64;
        }
        match page.last() {
            Some((last, _)) if page.len() == EXPORT_PAGE => {
                range.start = Bound::Excluded(last.clone());
            }
            _ => return Ok((keys, bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_increments_last_non_ff_byte() {
        assert_eq!(prefix_successor(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(b""), None);
    }

    #[test]
    fn prefix_range_contains_exactly_the_prefixed_keys() {
        let range = KeyRange::prefix(b"ab");
        assert!(range.contains(b"ab"));
        assert!(range.contains(b"ab\xff\xff"));
        assert!(!range.contains(b"ac"));
        assert!(!range.contains(b"aa\xff"));
    }

    #[test]
    fn inverted_ranges_are_empty() {
        assert!(KeyRange::half_open(b"b".to_vec(), b"a".to_vec()).is_empty());
        assert!(KeyRange::half_open(b"a".to_vec(), b"a".to_vec()).is_empty());
        assert!(!KeyRange::half_open(b"a".to_vec(), b"b".to_vec()).is_empty());
    }
}
