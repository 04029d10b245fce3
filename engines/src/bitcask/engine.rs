//! The engine: recovery at open, the write path, the read path, rotation
//! and the automatic merge trigger. The module docs of [`crate::bitcask`]
//! explain the design; this file puts the pieces together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use super::hint::{hint_path, read_hint};
use super::keydir::{KeyDir, Location};
use super::log::{
    self, ActiveLog, DataFile, LogEntry, data_path, list_data_files, scan_data_file, sync_dir,
    truncate_torn_tail,
};
use super::merge::{self, MergeOutcome};
use super::record::{self, Decoded, MAX_FIELD_LEN, Record, RecordKind};
use crate::backends::bound_slice;
use crate::durable_io::{DurableIo, LockGuard, RealIo};
use crate::engine::{
    BatchOp, Engine, EngineStatus, KeyRange, Pair, WriteBatch, WriteOptions, check_key,
};
use crate::error::{EngineError, IoContext, Result};
use crate::{DataDir, EngineKind, EngineOptions, disk_usage};

/// The subdirectory of a [`DataDir`] that holds bitcask's files.
const SUBDIR: &str = "bitcask";
/// Bitcask's own lock file, inside its directory.
const LOCK: &str = "LOCK";
/// A merge starts on its own, after a rotation, once dead records make up
/// at least this share of the immutable files' bytes.
const MERGE_TRIGGER_DEAD_SHARE: f64 = 0.5;

/// Bitcask: an append-only log with an in-memory ordered key directory.
pub struct BitcaskEngine {
    shared: Arc<Shared>,
    background_merge: Mutex<Option<JoinHandle<()>>>,
}

/// Everything the engine and its background merge share.
pub(super) struct Shared {
    pub(super) dir: PathBuf,
    /// Every file operation goes through this: the real file system, or a
    /// simulated one in the power-loss tests.
    pub(super) io: Arc<dyn DurableIo>,
    max_file_bytes: u64,
    writer: Mutex<Writer>,
    keydir: RwLock<KeyDir>,
    /// Every data file, active one included, by id.
    files: RwLock<BTreeMap<u64, Arc<DataFile>>>,
    pub(super) merge_lock: Mutex<()>,
    merge_running: AtomicBool,
    /// Whether a rotation may start a background merge.
    auto_merge: AtomicBool,
    /// Set when the engine is dropped, so a background merge stops early.
    pub(super) closing: AtomicBool,
    /// The directory `status().disk_bytes` measures.
    usage_root: PathBuf,
    _lock: LockGuard,
    _data_dir: Option<DataDir>,
}

pub(super) struct Writer {
    pub(super) active: ActiveLog,
    next_seq: u64,
    /// Set when a write or fsync failed: the file may hold bytes the key
    /// directory does not know about, and after a failed fsync the kernel
    /// may have dropped dirty pages, so the only safe way on is to reopen
    /// (recovery then decides from what is really on disk).
    failed: Option<String>,
}

// A panic while holding one of these locks cannot leave the structure half
// updated in a way later calls could misread (each update is a few map
// operations), so a poisoned lock is used as is.
impl Shared {
    pub(super) fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(super) fn keydir(&self) -> RwLockReadGuard<'_, KeyDir> {
        self.keydir.read().unwrap_or_else(|e| e.into_inner())
    }
    pub(super) fn keydir_mut(&self) -> RwLockWriteGuard<'_, KeyDir> {
        self.keydir.write().unwrap_or_else(|e| e.into_inner())
    }
    pub(super) fn files(&self) -> RwLockReadGuard<'_, BTreeMap<u64, Arc<DataFile>>> {
        self.files.read().unwrap_or_else(|e| e.into_inner())
    }
    pub(super) fn files_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, Arc<DataFile>>> {
        self.files.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl BitcaskEngine {
    /// Opens the engine in the `bitcask` subdirectory of `dir`, recovering
    /// whatever is there. The `DataDir` (and its lock) lives as long as the
    /// engine.
    pub fn open(dir: DataDir, options: &EngineOptions) -> Result<BitcaskEngine> {
        let path = dir.join(SUBDIR);
        let root = dir.path().to_path_buf();
        Self::open_inner(&path, root, options, Some(dir), RealIo::shared())
    }

    /// Opens a bitcask directory directly, without the factory's `ENGINE`
    /// marker and lock; bitcask's own lock still keeps a second opener out.
    pub fn open_standalone(path: &Path, options: &EngineOptions) -> Result<BitcaskEngine> {
        Self::open_inner(path, path.to_path_buf(), options, None, RealIo::shared())
    }

    /// [`BitcaskEngine::open_standalone`] with every file operation going
    /// through `io`: the power-loss tests pass a
    /// [`SimIo`](crate::durable_io::SimIo) here.
    pub fn open_with_io(
        path: &Path,
        options: &EngineOptions,
        io: Arc<dyn DurableIo>,
    ) -> Result<BitcaskEngine> {
        Self::open_inner(path, path.to_path_buf(), options, None, io)
    }

    fn open_inner(
        dir: &Path,
        usage_root: PathBuf,
        options: &EngineOptions,
        data_dir: Option<DataDir>,
        io: Arc<dyn DurableIo>,
    ) -> Result<BitcaskEngine> {
        if options.bitcask_max_file_bytes == 0 {
            return Err(EngineError::InvalidArgument(
                "bitcask_max_file_bytes is 0; give the data file size limit in bytes (at least 1)"
                    .to_string(),
            ));
        }
        io.create_dir_all(dir)
            .context(|| format!("cannot create {}", dir.display()))?;
        let lock = lock_directory(&*io, dir)?;
        let recovered = recover(&*io, dir)?;
        let shared = Shared {
            dir: dir.to_path_buf(),
            io,
            max_file_bytes: options.bitcask_max_file_bytes,
            writer: Mutex::new(Writer {
                active: recovered.active,
                next_seq: recovered.next_seq,
                failed: None,
            }),
            keydir: RwLock::new(recovered.keydir),
            files: RwLock::new(recovered.files),
            merge_lock: Mutex::new(()),
            merge_running: AtomicBool::new(false),
            auto_merge: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            usage_root,
            _lock: lock,
            _data_dir: data_dir,
        };
        Ok(BitcaskEngine {
            shared: Arc::new(shared),
            background_merge: Mutex::new(None),
        })
    }

    /// Merges the immutable data files now (see [`crate::bitcask`]), waiting
    /// for a background merge that is already running.
    pub fn merge(&self) -> Result<MergeOutcome> {
        merge::merge(&self.shared)
    }

    /// Turns the automatic background merge on (the default) or off. With
    /// it off, space is given back only by [`BitcaskEngine::merge`]; tests
    /// and benchmarks that must not race with a merge use this.
    pub fn set_auto_merge(&self, enabled: bool) {
        self.shared.auto_merge.store(enabled, Ordering::Release);
    }

    /// Waits for the background merge, if one was started.
    #[cfg(test)]
    fn wait_for_background_merge(&self) {
        let handle = self.background_merge.lock().unwrap().take();
        if let Some(handle) = handle {
            handle.join().unwrap();
        }
    }

    /// Closes the active file and starts a new one, so that everything
    /// written so far becomes mergeable.
    pub fn rotate(&self) -> Result<()> {
        let mut writer = self.shared.writer();
        check_writable(&writer)?;
        if writer.active.len() > 0 {
            self.shared.rotate(&mut writer)?;
        }
        Ok(())
    }

    /// Ids of the data files, oldest first (for tests and tools).
    pub fn data_file_ids(&self) -> Vec<u64> {
        self.shared.files().keys().copied().collect()
    }

    /// Starts a merge in a background thread when dead records make up
    /// enough of the immutable files and no merge is running.
    fn maybe_merge_in_background(&self) {
        if !self.shared.auto_merge.load(Ordering::Acquire)
            || !self.shared.wants_merge()
            || self.shared.merge_running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let mut slot = self
            .background_merge
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(finished) = slot.take() {
            // merge_running was false, so that thread is done or finishing.
            let _ = finished.join();
        }
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("bitcask-merge".to_string())
            .spawn(move || {
                // Cleared on the way out even if the merge panics, so a
                // later rotation can start the next one.
                struct Running<'a>(&'a AtomicBool);
                impl Drop for Running<'_> {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::Release);
                    }
                }
                let _running = Running(&shared.merge_running);
                match merge::merge(&shared) {
                    Ok(outcome) => tracing::debug!(?outcome, "bitcask background merge finished"),
                    Err(error) => tracing::error!(%error, "bitcask background merge failed"),
                }
            });
        match spawned {
            Ok(handle) => *slot = Some(handle),
            Err(error) => {
                tracing::warn!(%error, "cannot start a bitcask merge thread; merge skipped");
                self.shared.merge_running.store(false, Ordering::Release);
            }
        }
    }

    /// The one write path: `ops` become records (a batch of several gets a
    /// commit record), are appended with one write, optionally fdatasync'ed,
    /// and only then published in the key directory.
    fn write(&self, ops: &[(RecordKind, &[u8], &[u8])], options: WriteOptions) -> Result<()> {
        if u32::try_from(ops.len()).is_err() {
            return Err(EngineError::InvalidArgument(format!(
                "a bitcask batch of {} operations is too large; the limit is {}",
                ops.len(),
                u32::MAX
            )));
        }
        for (_, key, value) in ops {
            check_key(key)?;
            check_len("value", value.len())?;
        }
        let rotated = {
            let mut writer = self.shared.writer();
            check_writable(&writer)?;
            self.shared.append_and_publish(&mut writer, ops, options)?
        };
        if rotated {
            self.maybe_merge_in_background();
        }
        Ok(())
    }
}

impl Drop for BitcaskEngine {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        let handle = self
            .background_merge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn check_len(what: &str, len: usize) -> Result<()> {
    if len > MAX_FIELD_LEN as usize {
        return Err(EngineError::InvalidArgument(format!(
            "bitcask {what} of {len} bytes is too large; the limit is {MAX_FIELD_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_writable(writer: &Writer) -> Result<()> {
    match &writer.failed {
        None => Ok(()),
        Some(reason) => Err(EngineError::backend(
            EngineKind::Bitcask,
            format!("an earlier write failed ({reason}); reopen the engine to recover"),
        )),
    }
}

fn lock_directory(io: &dyn DurableIo, dir: &Path) -> Result<LockGuard> {
    let path = dir.join(LOCK);
    match io.lock(&path) {
        Ok(Some(guard)) => Ok(guard),
        Ok(None) => Err(EngineError::Locked {
            dir: dir.to_path_buf(),
            lock: path,
        }),
        Err(e) => Err(EngineError::io(
            format!("cannot lock {}", path.display()),
            e,
        )),
    }
}

impl Shared {
    // ANCHOR: write
    /// Appends `ops` to the active file and publishes them. Returns whether
    /// the active file was rotated first.
    fn append_and_publish(
        &self,
        writer: &mut Writer,
        ops: &[(RecordKind, &[u8], &[u8])],
        options: WriteOptions,
    ) -> Result<bool> {
        let in_batch = ops.len() > 1;
        let mut encoded = Vec::new();
        let mut entries = Vec::with_capacity(ops.len() + 1);
        let mut seq = writer.next_seq;
        for (kind, key, value) in ops {
            entries.push(LogEntry {
                offset: encoded.len() as u64,
                seq,
                kind: *kind,
                key: key.to_vec(),
                value_len: value.len() as u32,
            });
            record::encode(
                &Record {
                    seq,
                    kind: *kind,
                    in_batch,
                    key,
                    value,
                },
                &mut encoded,
            );
            seq += 1;
        }
        if in_batch {
            let count = (ops.len() as u32).to_le_bytes();
            entries.push(LogEntry {
                offset: encoded.len() as u64,
                seq,
                kind: RecordKind::Commit,
                key: Vec::new(),
                value_len: count.len() as u32,
            });
            let commit = Record {
                seq,
                kind: RecordKind::Commit,
                in_batch: false,
                key: &[],
                value: &count,
            };
            record::encode(&commit, &mut encoded);
            seq += 1;
        }

        let active_len = writer.active.len();
        let rotated = active_len > 0 && active_len + encoded.len() as u64 > self.max_file_bytes;
        if rotated {
            self.rotate(writer)?;
        }
        let base = match writer.active.append(&encoded) {
            Ok(base) => base,
            Err(error) => {
                writer.failed = Some(error.to_string());
                return Err(error);
            }
        };
        writer.next_seq = seq;
        if options.sync
            && let Err(error) = writer.active.sync()
        {
            writer.failed = Some(error.to_string());
            return Err(error);
        }
        let file = Arc::clone(&writer.active.reader);
        let mut keydir = self.keydir_mut();
        for mut entry in entries {
            entry.offset += base;
            keydir.apply(&file, &entry);
        }
        Ok(rotated)
    }
    // ANCHOR_END: write

    /// Seals the active file and starts the next one. The old file is
    /// fdatasync'ed first, so an immutable file never has a torn tail, and
    /// the directory is fsynced so the new file's name is durable.
    fn rotate(&self, writer: &mut Writer) -> Result<()> {
        let step = (|| -> Result<ActiveLog> {
            writer.active.sync()?;
            let next = ActiveLog::open(&*self.io, &self.dir, writer.active.id() + 1)?;
            sync_dir(&*self.io, &self.dir)?;
            Ok(next)
        })();
        match step {
            Ok(next) => {
                self.files_mut().insert(next.id(), Arc::clone(&next.reader));
                writer.active = next;
                Ok(())
            }
            Err(error) => {
                writer.failed = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// `fdatasync` of the active file: every write that has returned is
    /// durable (earlier files were synced when they were rotated out).
    pub(super) fn sync_active(&self) -> Result<()> {
        let mut writer = self.writer();
        check_writable(&writer)?;
        if let Err(error) = writer.active.sync() {
            writer.failed = Some(error.to_string());
            return Err(error);
        }
        Ok(())
    }

    /// Whether dead records fill enough of the immutable files to merge.
    fn wants_merge(&self) -> bool {
        let active_id = self.writer().active.id();
        let immutable: Vec<(u64, u64)> = self
            .files()
            .range(..active_id)
            .map(|(id, file)| (*id, file.len()))
            .collect();
        let total: u64 = immutable.iter().map(|(_, len)| len).sum();
        let keydir = self.keydir();
        let dead: u64 = immutable
            .iter()
            .map(|(id, _)| keydir.dead_bytes_in(*id))
            .sum();
        dead > 0 && dead as f64 >= total as f64 * MERGE_TRIGGER_DEAD_SHARE
    }

    // ANCHOR: read
    /// Reads the value a key directory entry points at, verifying the whole
    /// record: checksum, key and sequence number.
    fn read_value(&self, key: &[u8], location: &Location) -> Result<Vec<u8>> {
        let file = &location.file;
        let len = location.record_len(key) as usize;
        let bytes = file.read_exact_at(location.offset, len)?;
        match record::decode(&bytes) {
            Decoded::Record(record, _) if record.key == key && record.seq == location.seq => {
                Ok(record.value.to_vec())
            }
            Decoded::Record(..) => Err(file.corrupt(
                location.offset,
                "the record there is not the one the key directory expects",
            )),
            Decoded::Incomplete => Err(file.corrupt(location.offset, "record cut short")),
            Decoded::Invalid(reason) => Err(file.corrupt(location.offset, reason)),
        }
    }
    // ANCHOR_END: read
}

/// The state rebuilt from the files at start-up.
struct Recovered {
    active: ActiveLog,
    next_seq: u64,
    keydir: KeyDir,
    files: BTreeMap<u64, Arc<DataFile>>,
}

// ANCHOR: recover
/// Rebuilds the key directory from the data files, oldest first: from a
/// merged file's hint when it has a valid one, else by scanning the file.
/// The newest file's torn tail (or uncommitted batch) is cut off and the
/// cut fsynced; damage anywhere else is an error.
fn recover(io: &dyn DurableIo, dir: &Path) -> Result<Recovered> {
    remove_merge_leftovers(io, dir)?;
    let mut ids = list_data_files(io, dir)?;
    if ids.is_empty() {
        ActiveLog::open(io, dir, 1)?;
        sync_dir(io, dir)?;
        ids.push(1);
    }
    let newest = ids[ids.len() - 1];
    let mut keydir = KeyDir::default();
    let mut files = BTreeMap::new();
    let mut next_seq = 1;
    let mut active = None;
    for id in ids {
        let path = data_path(dir, id);
        let file = DataFile::open(io, id, path.clone())?;
        let hinted = if id == newest {
            None
        } else {
            read_hint(io, &hint_path(dir, id), file.len())?
        };
        let (file, entries) = match hinted {
            Some(entries) => (file, entries),
            None => {
                let scanned = scan_data_file(&file, id == newest)?;
                if let Some(reason) = scanned.torn {
                    tracing::warn!(
                        file = %path.display(),
                        from = scanned.valid_len,
                        to = file.len(),
                        reason,
                        "bitcask: cutting the torn tail of the newest data file"
                    );
                    truncate_torn_tail(io, &path, scanned.valid_len)?;
                }
                if id == newest {
                    let log = ActiveLog::open(io, dir, id)?;
                    let reader = Arc::clone(&log.reader);
                    active = Some(log);
                    (reader, scanned.entries)
                } else {
                    (file, scanned.entries)
                }
            }
        };
        for entry in &entries {
            next_seq = next_seq.max(entry.seq + 1);
            keydir.apply(&file, entry);
        }
        files.insert(id, file);
    }
    let active = match active {
        Some(active) => active,
        None => ActiveLog::open(io, dir, newest)?,
    };
    Ok(Recovered {
        active,
        next_seq,
        keydir,
        files,
    })
}
// ANCHOR_END: recover

/// Deletes the `.tmp` files an interrupted merge left behind, and hints
/// whose data file is gone.
fn remove_merge_leftovers(io: &dyn DurableIo, dir: &Path) -> Result<()> {
    let names = io
        .list(dir)
        .context(|| format!("cannot list {}", dir.display()))?;
    for name in names {
        let orphan_hint = match name.strip_suffix(".hint") {
            Some(stem) => {
                let data = dir.join(format!("{stem}{}", log::DATA_SUFFIX));
                !io.exists(&data)
                    .context(|| format!("cannot stat {}", data.display()))?
            }
            None => false,
        };
        if name.ends_with(".tmp") || orphan_hint {
            let path = dir.join(&name);
            io.remove(&path)
                .context(|| format!("cannot remove leftover {}", path.display()))?;
        }
    }
    Ok(())
}

impl Engine for BitcaskEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Bitcask
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let location = self.shared.keydir().get(key);
        match location {
            Some(location) => self.shared.read_value(key, &location).map(Some),
            None => Ok(None),
        }
    }

    fn put(&self, key: &[u8], value: &[u8], options: WriteOptions) -> Result<()> {
        self.write(&[(RecordKind::Put, key, value)], options)
    }

    fn delete(&self, key: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        // A key the directory does not hold has no record a replay could
        // bring back, so no tombstone is needed.
        if self.shared.keydir().get(key).is_none() {
            return if options.sync { self.sync() } else { Ok(()) };
        }
        self.write(&[(RecordKind::Tombstone, key, &[])], options)
    }

    fn write_batch(&self, batch: WriteBatch, options: WriteOptions) -> Result<()> {
        let ops: Vec<(RecordKind, &[u8], &[u8])> = batch
            .ops()
            .iter()
            .map(|op| match op {
                BatchOp::Put { key, value } => (RecordKind::Put, key.as_slice(), value.as_slice()),
                BatchOp::Delete { key } => (RecordKind::Tombstone, key.as_slice(), &[][..]),
            })
            .collect();
        if ops.is_empty() {
            return if options.sync { self.sync() } else { Ok(()) };
        }
        self.write(&ops, options)
    }

    fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>> {
        if range.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // The locations are taken under one read lock, so the scan sees one
        // moment of the key directory; the values are read after it is
        // released, from the files the locations hold.
        let found =
            self.shared
                .keydir()
                .range(bound_slice(&range.start), bound_slice(&range.end), limit);
        found
            .into_iter()
            .map(|(key, location)| {
                let value = self.shared.read_value(&key, &location)?;
                Ok((key, value))
            })
            .collect()
    }

    fn sync(&self) -> Result<()> {
        self.shared.sync_active()
    }

    /// A merge of the immutable data files now (the active file is left
    /// as it is: records still being appended are never rewritten).
    fn defragment(&self) -> Result<bool> {
        self.merge()?;
        Ok(true)
    }

    fn status(&self) -> Result<EngineStatus> {
        let (keys, logical_bytes, dead) = {
            let keydir = self.shared.keydir();
            (keydir.len(), keydir.logical_bytes(), keydir.dead_bytes())
        };
        Ok(EngineStatus {
            kind: EngineKind::Bitcask,
            keys,
            logical_bytes,
            disk_bytes: disk_usage(&self.shared.usage_root)?,
            reclaimable_bytes: Some(dead),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcask::log::DATA_SUFFIX;
    use std::fs::{self, OpenOptions};

    fn options(max_file_bytes: u64) -> EngineOptions {
        EngineOptions {
            bitcask_max_file_bytes: max_file_bytes,
            ..EngineOptions::default()
        }
    }

    fn open(dir: &Path, max_file_bytes: u64) -> BitcaskEngine {
        let data_dir = DataDir::prepare(dir, EngineKind::Bitcask).unwrap();
        BitcaskEngine::open(data_dir, &options(max_file_bytes)).unwrap()
    }

    fn everything(engine: &BitcaskEngine) -> Vec<Pair> {
        engine.scan(&KeyRange::all(), usize::MAX).unwrap()
    }

    fn key(i: usize) -> Vec<u8> {
        format!("key{i:05}").into_bytes()
    }

    /// Writes keys 0..n, overwrites every other one and deletes every
    /// third, so files hold a mix of live and dead records.
    fn churn(engine: &BitcaskEngine, n: usize) {
        for i in 0..n {
            engine
                .put(&key(i), &[b'a'; 40], WriteOptions::BUFFERED)
                .unwrap();
        }
        for i in (0..n).step_by(2) {
            engine
                .put(
                    &key(i),
                    format!("v2-{i}").as_bytes(),
                    WriteOptions::BUFFERED,
                )
                .unwrap();
        }
        let mut batch = WriteBatch::new();
        for i in (0..n).step_by(3) {
            batch.delete(key(i));
        }
        engine.write_batch(batch, WriteOptions::BUFFERED).unwrap();
    }

    fn bitcask_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(dir.join(SUBDIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn point_operations_scans_and_exact_counters() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = open(tmp.path(), 1 << 20);
        engine.put(b"b", b"22", WriteOptions::SYNC).unwrap();
        engine.put(b"a", b"1", WriteOptions::BUFFERED).unwrap();
        engine.put(b"c", b"", WriteOptions::BUFFERED).unwrap();
        assert_eq!(engine.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(b"c").unwrap(), Some(Vec::new()));
        assert_eq!(engine.get(b"zz").unwrap(), None);
        let status = engine.status().unwrap();
        assert_eq!((status.keys, status.logical_bytes), (3, 6));
        assert_eq!(status.reclaimable_bytes, Some(0));

        engine.put(b"b", b"333", WriteOptions::BUFFERED).unwrap();
        engine.delete(b"a", WriteOptions::SYNC).unwrap();
        engine.delete(b"missing", WriteOptions::SYNC).unwrap();
        let status = engine.status().unwrap();
        assert_eq!((status.keys, status.logical_bytes), (2, 5));
        let dead =
            record::encoded_len(1, 2) + record::encoded_len(1, 1) + record::encoded_len(1, 0);
        assert_eq!(status.reclaimable_bytes, Some(dead));
        assert!(status.disk_bytes > dead);
        assert_eq!(
            engine.scan(&KeyRange::from(b"b".to_vec()), 10).unwrap(),
            vec![
                (b"b".to_vec(), b"333".to_vec()),
                (b"c".to_vec(), Vec::new())
            ]
        );
        assert_eq!(engine.scan(&KeyRange::all(), 1).unwrap().len(), 1);

        drop(engine);
        let engine = open(tmp.path(), 1 << 20);
        let reopened = engine.status().unwrap();
        assert_eq!(
            reopened.reclaimable_bytes,
            Some(dead),
            "counters rebuilt exactly"
        );
        assert_eq!(engine.get(b"b").unwrap(), Some(b"333".to_vec()));
        assert_eq!(engine.get(b"a").unwrap(), None);
    }

    #[test]
    fn values_of_several_mebibytes_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(5 << 20)).map(|i| (i % 251) as u8).collect();
        {
            let engine = open(tmp.path(), 1 << 20);
            engine.put(b"big", &big, WriteOptions::SYNC).unwrap();
            engine.put(b"small", b"s", WriteOptions::SYNC).unwrap();
            assert_eq!(engine.get(b"big").unwrap().as_deref(), Some(&big[..]));
        }
        let engine = open(tmp.path(), 1 << 20);
        assert_eq!(engine.get(b"big").unwrap().as_deref(), Some(&big[..]));
        assert_eq!(engine.get(b"small").unwrap(), Some(b"s".to_vec()));
    }

    #[test]
    fn rotation_splits_the_log_at_the_size_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = open(tmp.path(), 1024);
        for i in 0..200 {
            engine
                .put(&key(i), &[b'x'; 50], WriteOptions::BUFFERED)
                .unwrap();
        }
        let files = bitcask_files(tmp.path(), DATA_SUFFIX);
        assert!(files.len() >= 10, "{} files", files.len());
        for file in &files {
            assert!(
                fs::metadata(file).unwrap().len() <= 1024,
                "{}",
                file.display()
            );
        }
        let before = everything(&engine);
        drop(engine);
        let engine = open(tmp.path(), 1024);
        assert_eq!(everything(&engine), before);
        assert_eq!(before.len(), 200);
    }

    #[test]
    fn merge_keeps_exactly_the_live_data_and_shrinks_the_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = open(tmp.path(), 2048);
        engine.set_auto_merge(false);
        churn(&engine, 300);
        engine.rotate().unwrap();
        let before = everything(&engine);
        let status_before = engine.status().unwrap();
        assert!(status_before.reclaimable_bytes.unwrap() > 0);

        let outcome = engine.merge().unwrap();
        assert!(
            outcome.files_rewritten + outcome.files_removed > 0,
            "{outcome:?}"
        );
        let status_after = engine.status().unwrap();
        assert_eq!(everything(&engine), before);
        assert_eq!(status_after.keys, status_before.keys);
        assert_eq!(status_after.logical_bytes, status_before.logical_bytes);
        assert_eq!(status_after.reclaimable_bytes, Some(0));
        assert_eq!(
            status_before.disk_bytes - status_after.disk_bytes + bitcask_hint_bytes(tmp.path()),
            status_before.reclaimable_bytes.unwrap(),
            "the data files shrank by exactly the reclaimable bytes"
        );
        assert!(!bitcask_files(tmp.path(), ".hint").is_empty());

        drop(engine);
        let engine = open(tmp.path(), 2048);
        assert_eq!(everything(&engine), before);
        assert_eq!(engine.status().unwrap().reclaimable_bytes, Some(0));
    }

    fn bitcask_hint_bytes(dir: &Path) -> u64 {
        bitcask_files(dir, ".hint")
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    }

    #[test]
    fn start_up_from_hints_equals_start_up_from_a_log_scan() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let engine = open(tmp.path(), 2048);
            engine.set_auto_merge(false);
            churn(&engine, 300);
            engine.rotate().unwrap();
            engine.merge().unwrap();
            // Writes after the merge, some of them shadowing merged keys.
            churn(&engine, 50);
        }
        let state = |engine: &BitcaskEngine| {
            let mut status = engine.status().unwrap();
            status.disk_bytes = 0;
            (everything(engine), status)
        };
        let from_hints = state(&open(tmp.path(), 2048));
        let hints = bitcask_files(tmp.path(), ".hint");
        assert!(!hints.is_empty());
        for hint in hints {
            fs::remove_file(hint).unwrap();
        }
        let from_scan = state(&open(tmp.path(), 2048));
        assert_eq!(from_hints, from_scan);
    }

    #[test]
    fn a_stale_hint_after_a_crash_between_renames_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = open(tmp.path(), 4096);
        engine.set_auto_merge(false);
        churn(&engine, 100);
        engine.rotate().unwrap();
        engine.merge().unwrap();
        let old_hints: Vec<(PathBuf, Vec<u8>)> = bitcask_files(tmp.path(), ".hint")
            .into_iter()
            .map(|p| {
                let bytes = fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        churn(&engine, 100);
        engine.rotate().unwrap();
        engine.merge().unwrap();
        let expected = everything(&engine);
        drop(engine);
        // As if the second merge died after renaming data but before hints.
        for (path, bytes) in old_hints {
            fs::write(path, bytes).unwrap();
        }
        let engine = open(tmp.path(), 4096);
        assert_eq!(everything(&engine), expected);
    }

    #[test]
    fn the_automatic_merge_reclaims_space_while_writes_go_on() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = open(tmp.path(), 4096);
        // The same 20 keys again and again: almost everything is dead.
        for round in 0..200 {
            for i in 0..20 {
                engine
                    .put(
                        &key(i),
                        format!("round {round}").as_bytes(),
                        WriteOptions::BUFFERED,
                    )
                    .unwrap();
            }
        }
        engine.wait_for_background_merge();
        // Every merge starts with the oldest file, and by the second
        // rotation every record in file 1 is overwritten, so the first
        // background merge removed it, however the threads were scheduled.
        assert!(
            engine.data_file_ids()[0] > 1,
            "{:?}",
            engine.data_file_ids()
        );
        let status = engine.status().unwrap();
        let written = 200 * 20 * record::encoded_len(8, 9);
        assert!(
            status.disk_bytes < written,
            "{status:?} vs {written} written"
        );
        for i in 0..20 {
            assert_eq!(engine.get(&key(i)).unwrap(), Some(b"round 199".to_vec()));
        }
    }

    #[test]
    fn readers_writers_and_merges_run_together() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = Arc::new(open(tmp.path(), 4096));
        for i in 0..100 {
            engine.put(&key(i), b"0", WriteOptions::BUFFERED).unwrap();
        }
        std::thread::scope(|s| {
            let writer = Arc::clone(&engine);
            s.spawn(move || {
                for round in 1..=50u32 {
                    let mut batch = WriteBatch::new();
                    for i in 0..100 {
                        batch.put(key(i), round.to_string());
                    }
                    writer.write_batch(batch, WriteOptions::BUFFERED).unwrap();
                }
            });
            let merger = Arc::clone(&engine);
            s.spawn(move || {
                for _ in 0..20 {
                    merger.merge().unwrap();
                }
            });
            for _ in 0..50 {
                // A batch is atomic for readers: a scan sees one round.
                let page = engine.scan(&KeyRange::all(), 1000).unwrap();
                assert_eq!(page.len(), 100);
                assert!(page.iter().all(|(_, v)| *v == page[0].1), "{page:?}");
            }
        });
        engine.rotate().unwrap();
        engine.merge().unwrap();
        assert_eq!(engine.status().unwrap().reclaimable_bytes, Some(0));
        assert!(everything(&engine).iter().all(|(_, v)| v == b"50"));
    }

    #[test]
    fn a_batch_cut_before_its_commit_record_disappears_entirely() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let engine = open(tmp.path(), 1 << 20);
            engine.put(b"before", b"1", WriteOptions::SYNC).unwrap();
            let mut batch = WriteBatch::new();
            batch
                .put(b"x".to_vec(), b"1".to_vec())
                .put(b"y".to_vec(), b"2".to_vec());
            engine.write_batch(batch, WriteOptions::SYNC).unwrap();
        }
        let data = bitcask_files(tmp.path(), DATA_SUFFIX).pop().unwrap();
        let len = fs::metadata(&data).unwrap().len();
        let commit_len = record::encoded_len(0, 4);
        OpenOptions::new()
            .write(true)
            .open(&data)
            .unwrap()
            .set_len(len - commit_len)
            .unwrap();
        let engine = open(tmp.path(), 1 << 20);
        assert_eq!(
            everything(&engine),
            vec![(b"before".to_vec(), b"1".to_vec())]
        );
        // The cut is durable and the engine writes on after it.
        engine.put(b"after", b"2", WriteOptions::SYNC).unwrap();
        drop(engine);
        let engine = open(tmp.path(), 1 << 20);
        assert_eq!(everything(&engine).len(), 2);
    }

    #[test]
    fn damage_in_an_immutable_file_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let engine = open(tmp.path(), 1 << 20);
            engine.put(b"a", b"1", WriteOptions::SYNC).unwrap();
            engine.rotate().unwrap();
            engine.put(b"b", b"2", WriteOptions::SYNC).unwrap();
        }
        let first = bitcask_files(tmp.path(), DATA_SUFFIX).remove(0);
        let mut bytes = fs::read(&first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // the only record's value
        fs::write(&first, bytes).unwrap();
        let data_dir = DataDir::prepare(tmp.path(), EngineKind::Bitcask).unwrap();
        match BitcaskEngine::open(data_dir, &options(1 << 20)) {
            Err(EngineError::Corrupt { file, offset, .. }) => {
                assert_eq!((file, offset), (first, 0));
            }
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("expected Corrupt, the engine opened"),
        }
    }

    /// The power-loss test's first find, kept as a named case: a merge
    /// dropped file 1's record of `k` because a newer, still unsynced put in
    /// the active file made it dead; a power loss then lost the newer put
    /// too, and with it a write that a rotation had made durable.
    #[test]
    fn a_merge_does_not_outlive_the_unsynced_writes_that_killed_its_records() {
        use crate::durable_io::{SimIo, TornTail};
        let io = SimIo::new();
        let path = Path::new("/sim/bitcask");
        let open_sim = |io: &SimIo| {
            let engine =
                BitcaskEngine::open_with_io(path, &options(1 << 20), Arc::new(io.clone())).unwrap();
            engine.set_auto_merge(false);
            engine
        };
        let engine = open_sim(&io);
        engine
            .put(b"k", b"durable", WriteOptions::BUFFERED)
            .unwrap();
        engine.rotate().unwrap(); // fdatasyncs file 1: "durable" is durable
        engine.put(b"k", b"newer", WriteOptions::BUFFERED).unwrap();
        let outcome = engine.merge().unwrap();
        assert_eq!(outcome.files_removed, 1, "{outcome:?}");
        drop(engine);
        for seed in 0..64 {
            let engine = open_sim(&io.crash(seed, TornTail::Zeros));
            let value = engine.get(b"k").unwrap();
            assert!(
                value.as_deref() == Some(b"durable") || value.as_deref() == Some(b"newer"),
                "seed {seed}: k holds {value:?}"
            );
        }
    }

    #[test]
    fn a_second_opener_is_refused_by_bitcasks_own_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = open(tmp.path(), 1 << 20);
        let err = BitcaskEngine::open_standalone(&tmp.path().join(SUBDIR), &options(1 << 20))
            .err()
            .expect("second open must fail");
        assert!(matches!(err, EngineError::Locked { .. }), "{err}");
        drop(engine);

        let alone = tmp.path().join("alone");
        let first = BitcaskEngine::open_standalone(&alone, &options(1 << 20)).unwrap();
        let err = BitcaskEngine::open_standalone(&alone, &options(1 << 20))
            .err()
            .expect("second open must fail");
        assert!(matches!(err, EngineError::Locked { .. }), "{err}");
        drop(first);
        BitcaskEngine::open_standalone(&alone, &options(1 << 20)).unwrap();
    }

    /// Random puts, deletes, batches, rotations, merges (explicit and
    /// automatic) and reopens against a `BTreeMap`, with tiny files so
    /// every path runs many times. Seeds are fixed: a failure reproduces.
    #[test]
    fn random_operations_match_a_model_across_merges_and_reopens() {
        use rand::{Rng, SeedableRng};
        for seed in 0..2u64 {
            let tmp = tempfile::tempdir().unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut model = std::collections::BTreeMap::new();
            let mut engine = open(tmp.path(), 1024);
            for step in 0..1000 {
                let k = key(rng.random_range(0..40));
                match rng.random_range(0..100) {
                    0..45 => {
                        let v = vec![rng.random::<u8>(); rng.random_range(0..60)];
                        engine.put(&k, &v, WriteOptions::BUFFERED).unwrap();
                        model.insert(k, v);
                    }
                    45..65 => {
                        engine.delete(&k, WriteOptions::BUFFERED).unwrap();
                        model.remove(&k);
                    }
                    65..85 => {
                        let mut batch = WriteBatch::new();
                        for _ in 0..rng.random_range(1..6) {
                            let k = key(rng.random_range(0..40));
                            if rng.random_bool(0.3) {
                                batch.delete(k.clone());
                                model.remove(&k);
                            } else {
                                let v = vec![rng.random::<u8>(); rng.random_range(0..30)];
                                batch.put(k.clone(), v.clone());
                                model.insert(k, v);
                            }
                        }
                        engine.write_batch(batch, WriteOptions::BUFFERED).unwrap();
                    }
                    85..90 => engine.rotate().unwrap(),
                    90..95 => {
                        engine.merge().unwrap();
                    }
                    _ => {
                        drop(engine);
                        engine = open(tmp.path(), 1024);
                    }
                }
                let expected: Vec<Pair> = model.clone().into_iter().collect();
                if step % 50 == 0 {
                    assert_eq!(everything(&engine), expected, "seed {seed} step {step}");
                }
                let status = engine.status().unwrap();
                let logical: usize = model.iter().map(|(k, v)| k.len() + v.len()).sum();
                assert_eq!(
                    (status.keys, status.logical_bytes),
                    (model.len() as u64, logical as u64),
                    "seed {seed} step {step}"
                );
            }
            engine.set_auto_merge(false);
            engine.wait_for_background_merge();
            engine.rotate().unwrap();
            engine.merge().unwrap();
            assert_eq!(engine.status().unwrap().reclaimable_bytes, Some(0));
            drop(engine);
            let engine = open(tmp.path(), 1024);
            let expected: Vec<Pair> = model.into_iter().collect();
            assert_eq!(everything(&engine), expected, "seed {seed} at the end");
            assert_eq!(engine.status().unwrap().reclaimable_bytes, Some(0));
        }
    }

    #[test]
    fn leftovers_of_an_interrupted_merge_are_removed_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let engine = open(tmp.path(), 1 << 20);
            engine.put(b"a", b"1", WriteOptions::SYNC).unwrap();
        }
        let dir = tmp.path().join(SUBDIR);
        let leftovers = [
            dir.join("0000000001.data.tmp"),
            dir.join("0000000001.hint.tmp"),
            dir.join("0000000007.hint"), // its data file is gone
        ];
        for path in &leftovers {
            fs::write(path, b"half a merge").unwrap();
        }
        let engine = open(tmp.path(), 1 << 20);
        assert_eq!(everything(&engine), vec![(b"a".to_vec(), b"1".to_vec())]);
        for path in &leftovers {
            assert!(!path.exists(), "{} survived", path.display());
        }
    }

    #[test]
    fn bad_options_and_oversized_fields_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::prepare(tmp.path(), EngineKind::Bitcask).unwrap();
        let err = BitcaskEngine::open(data_dir, &options(0))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bitcask_max_file_bytes"), "{err}");
        assert!(check_len("value", MAX_FIELD_LEN as usize + 1).is_err());
        assert!(check_len("value", MAX_FIELD_LEN as usize).is_ok());
        let engine = open(&tmp.path().join("db"), 1 << 20);
        for bad in [&b""[..], &[b'k'; crate::MAX_KEY_BYTES + 1][..]] {
            assert!(engine.put(bad, b"v", WriteOptions::SYNC).is_err());
            assert!(engine.delete(bad, WriteOptions::SYNC).is_err());
        }
    }
}
