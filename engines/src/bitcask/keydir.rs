//! The key directory: where the newest value of every live key is on disk.
//!
//! Bitcask keeps every live key in memory with the location of its newest
//! record, so a read is one lookup and one positional read. The paper uses a
//! hash table; ours is a `BTreeMap`, because metcd serves range queries and
//! an ordered map answers a scan by walking its range.
//!
//! A [`Location`] holds an `Arc` of the data file it points into rather than
//! a file id. A merge replaces a data file while readers run: a reader that
//! looked up a location before the swap still holds the old file's handle
//! (the old inode lives on until the last handle is dropped), so it reads
//! the bytes it was promised, without a second lookup under a lock.
//!
//! The directory also keeps the engine's exact counters: live keys, logical
//! bytes (keys plus values), and the *dead* bytes of every data file, i.e.
//! records a merge may drop: overwritten or deleted puts, tombstones and
//! batch commit records.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::log::{DataFile, LogEntry};
use super::record::{self, RecordKind};

/// Where the newest record of a key lives.
#[derive(Debug, Clone)]
pub struct Location {
    pub file: Arc<DataFile>,
    pub offset: u64,
    pub value_len: u32,
    /// The record's sequence number: identifies this version of the key, so
    /// a merge can tell whether the record it copied is still the newest.
    pub seq: u64,
}

impl Location {
    pub fn record_len(&self, key: &[u8]) -> u64 {
        record::encoded_len(key.len(), self.value_len as usize)
    }
}

#[derive(Debug, Default)]
pub struct KeyDir {
    map: BTreeMap<Vec<u8>, Location>,
    logical_bytes: u64,
    dead_bytes: BTreeMap<u64, u64>,
}

impl KeyDir {
    pub fn get(&self, key: &[u8]) -> Option<Location> {
        self.map.get(key).cloned()
    }

    /// Up to `limit` keys in the bounds, ascending, with their locations.
    pub fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Location)> {
        self.map
            .range::<[u8], _>((start, end))
            .take(limit)
            .map(|(k, loc)| (k.clone(), loc.clone()))
            .collect()
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn logical_bytes(&self) -> u64 {
        self.logical_bytes
    }

    pub fn dead_bytes(&self) -> u64 {
        self.dead_bytes.values().sum()
    }

    pub fn dead_bytes_in(&self, file_id: u64) -> u64 {
        self.dead_bytes.get(&file_id).copied().unwrap_or(0)
    }

    fn add_dead(&mut self, file_id: u64, bytes: u64) {
        *self.dead_bytes.entry(file_id).or_default() += bytes;
    }

    /// Applies one record of `file` in log order: the last record of a key
    /// wins, and whatever it replaces becomes dead.
    pub fn apply(&mut self, file: &Arc<DataFile>, entry: &LogEntry) {
        match entry.kind {
            RecordKind::Put => self.put(
                entry.key.clone(),
                Location {
                    file: Arc::clone(file),
                    offset: entry.offset,
                    value_len: entry.value_len,
                    seq: entry.seq,
                },
            ),
            RecordKind::Tombstone => {
                self.add_dead(file.id, entry.record_len());
                self.remove(&entry.key);
            }
            RecordKind::Commit => self.add_dead(file.id, entry.record_len()),
        }
    }

    fn put(&mut self, key: Vec<u8>, location: Location) {
        let key_len = key.len();
        self.logical_bytes += (key_len + location.value_len as usize) as u64;
        if let Some(old) = self.map.insert(key, location) {
            self.retire(key_len, &old);
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.retire(key.len(), &old);
        }
    }

    /// Accounts for a record that is no longer the newest of its key.
    fn retire(&mut self, key_len: usize, old: &Location) {
        self.logical_bytes -= (key_len + old.value_len as usize) as u64;
        self.add_dead(
            old.file.id,
            record::encoded_len(key_len, old.value_len as usize),
        );
    }

    /// After a merge rewrote `file_id`: points every key whose newest record
    /// was copied at its new place, unless a writer replaced it meanwhile,
    /// and sets the file's dead bytes to what was copied but is dead now.
    /// `copied` holds each copied record's key, sequence number and new
    /// offset; `file` is the rewritten file (`None` when nothing was live).
    pub fn relocate(&mut self, file_id: u64, file: Option<&Arc<DataFile>>, copied: &[LogEntry]) {
        let mut dead = 0;
        for entry in copied {
            match (self.map.get_mut(entry.key.as_slice()), file) {
                (Some(loc), Some(file)) if loc.file.id == file_id && loc.seq == entry.seq => {
                    loc.file = Arc::clone(file);
                    loc.offset = entry.offset;
                }
                _ => dead += entry.record_len(),
            }
        }
        self.dead_bytes.remove(&file_id);
        if dead > 0 {
            self.dead_bytes.insert(file_id, dead);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcask::log::data_path;

    fn entry(offset: u64, seq: u64, kind: RecordKind, key: &[u8], value_len: u32) -> LogEntry {
        LogEntry {
            offset,
            seq,
            kind,
            key: key.to_vec(),
            value_len,
        }
    }

    #[test]
    fn counters_follow_puts_overwrites_and_deletes() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(data_path(tmp.path(), 1), b"").unwrap();
        let file = DataFile::open(&crate::durable_io::RealIo, 1, data_path(tmp.path(), 1)).unwrap();
        let mut dir = KeyDir::default();
        dir.apply(&file, &entry(0, 1, RecordKind::Put, b"a", 10));
        dir.apply(&file, &entry(100, 2, RecordKind::Put, b"bb", 3));
        assert_eq!(
            (dir.len(), dir.logical_bytes(), dir.dead_bytes()),
            (2, 16, 0)
        );

        dir.apply(&file, &entry(200, 3, RecordKind::Put, b"a", 1));
        assert_eq!((dir.len(), dir.logical_bytes()), (2, 7));
        assert_eq!(dir.dead_bytes(), record::encoded_len(1, 10));

        let tombstone = entry(300, 4, RecordKind::Tombstone, b"bb", 0);
        dir.apply(&file, &tombstone);
        assert_eq!((dir.len(), dir.logical_bytes()), (1, 2));
        assert_eq!(
            dir.dead_bytes(),
            record::encoded_len(1, 10) + record::encoded_len(2, 3) + tombstone.record_len()
        );
        assert_eq!(dir.get(b"a").unwrap().offset, 200);
        assert!(dir.get(b"bb").is_none());
        let keys: Vec<_> = dir
            .range(Bound::Unbounded, Bound::Unbounded, 10)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"a".to_vec()]);
    }

    #[test]
    fn relocate_skips_keys_rewritten_during_a_merge() {
        let tmp = tempfile::tempdir().unwrap();
        for id in [1, 2] {
            std::fs::write(data_path(tmp.path(), id), b"").unwrap();
        }
        let old = DataFile::open(&crate::durable_io::RealIo, 1, data_path(tmp.path(), 1)).unwrap();
        let newer =
            DataFile::open(&crate::durable_io::RealIo, 2, data_path(tmp.path(), 2)).unwrap();
        let mut dir = KeyDir::default();
        dir.apply(&old, &entry(0, 1, RecordKind::Put, b"a", 1));
        dir.apply(&old, &entry(50, 2, RecordKind::Put, b"b", 1));
        // While the merge copies both, a writer replaces `b`.
        dir.apply(&newer, &entry(0, 3, RecordKind::Put, b"b", 2));
        let merged =
            DataFile::open(&crate::durable_io::RealIo, 1, data_path(tmp.path(), 1)).unwrap();
        let copied = [
            entry(0, 1, RecordKind::Put, b"a", 1),
            entry(27, 2, RecordKind::Put, b"b", 1),
        ];
        dir.relocate(1, Some(&merged), &copied);
        assert!(Arc::ptr_eq(&dir.get(b"a").unwrap().file, &merged));
        assert_eq!(dir.get(b"b").unwrap().file.id, 2);
        assert_eq!(dir.dead_bytes_in(1), record::encoded_len(1, 1));
    }
}
