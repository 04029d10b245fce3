//! Snapshot files: the state machine at one applied index, on disk.
//!
//! A snapshot is the engine's export stream (see `engines::export`), which
//! already holds the applied index, the membership and every user key,
//! together with raft's `SnapshotMetadata` (index, term, `ConfState`). It is
//! what a lagging or new follower receives instead of log entries the leader
//! has compacted away, and what a restarting node starts from before it
//! replays the WAL.
//!
//! Each snapshot is one file `<index>-<term>.snap` (16 hexadecimal digits
//! each, so names sort by index):
//!
//! ```text
//! b"METCDSNP" | metadata length u32 LE | metadata (protobuf) | data length u64 LE | data | crc32 u32 LE
//! ```
//!
//! The CRC covers everything before it. A file is written under a temporary
//! name, fsynced, renamed into place and the directory fsynced, so a crash
//! leaves either the old set of snapshots or the new one, never half a file.
//! The newest [`KEEP_FILES`] are kept.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{Snapshot, SnapshotMetadata};

const MAGIC: &[u8; 8] = b"METCDSNP";
/// How many snapshot files survive a new one.
pub const KEEP_FILES: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot file {file} is corrupt: {reason}")]
    Corrupt { file: PathBuf, reason: String },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let context = context.into();
    move |source| SnapshotError::Io { context, source }
}

/// The directory of snapshot files of one node.
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn open(dir: &Path) -> Result<Self, SnapshotError> {
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
        })
    }

    fn files(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        let mut files = Vec::new();
        for item in
            fs::read_dir(&self.dir).map_err(io(format!("listing {}", self.dir.display())))?
        {
            let item = item.map_err(io(format!("listing {}", self.dir.display())))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".snap")
                && let Some((index, _term)) = stem.split_once('-')
                && let Ok(index) = u64::from_str_radix(index, 16)
            {
                files.push((index, item.path()));
            }
        }
        files.sort();
        Ok(files)
    }

    // ANCHOR: snapshot_save
    /// Writes `snapshot` durably and removes all but the newest files.
    pub fn save(&self, snapshot: &Snapshot) -> Result<PathBuf, SnapshotError> {
        let meta = snapshot.get_metadata();
        let name = format!("{:016x}-{:016x}.snap", meta.index, meta.term);
        let path = self.dir.join(&name);
        let temporary = self.dir.join(format!("{name}.tmp"));
        let metadata = meta.write_to_bytes().map_err(|e| SnapshotError::Io {
            context: "encoding snapshot metadata".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let data = snapshot.get_data();
        let mut bytes = Vec::with_capacity(32 + metadata.len() + data.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&metadata);
        bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
        bytes.extend_from_slice(data);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let mut file =
            File::create(&temporary).map_err(io(format!("creating {}", temporary.display())))?;
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .map_err(io(format!("writing {}", temporary.display())))?;
        fs::rename(&temporary, &path).map_err(io(format!("renaming {}", temporary.display())))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing {}", self.dir.display())))?;
        let files = self.files()?;
        if files.len() > KEEP_FILES {
            for (_, old) in &files[..files.len() - KEEP_FILES] {
                fs::remove_file(old).map_err(io(format!("removing {}", old.display())))?;
            }
        }
        Ok(path)
    }
    // ANCHOR_END: snapshot_save

    /// The newest snapshot, verified, if there is one.
    pub fn load_latest(&self) -> Result<Option<Snapshot>, SnapshotError> {
        let Some((_, path)) = self.files()?.pop() else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(format!("reading {}", path.display())))?;
        decode(&bytes)
            .map(Some)
            .map_err(|reason| SnapshotError::Corrupt { file: path, reason })
    }
}

fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.len() < MAGIC.len() + 4 + 8 + 4 || &bytes[..8] != MAGIC {
        return Err("not a metcd snapshot (bad magic or too short)".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    let mut at = 8;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let slice = body
            .get(*at..*at + n)
            .ok_or("length field points past the end")?;
        *at += n;
        Ok(slice)
    };
    let meta_len = u32::from_le_bytes(take(&mut at, 4)?.try_into().map_err(|_| "bad length")?);
    let metadata = SnapshotMetadata::parse_from_bytes(take(&mut at, meta_len as usize)?)
        .map_err(|e| format!("metadata does not decode: {e}"))?;
    let data_len = u64::from_le_bytes(take(&mut at, 8)?.try_into().map_err(|_| "bad length")?);
    let data = take(&mut at, data_len as usize)?.to_vec();
    let mut snapshot = Snapshot::default();
    snapshot.set_metadata(metadata);
    snapshot.set_data(data.into());
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(index: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = 2;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s.set_data(format!("data at {index}").into_bytes().into());
        s
    }

    #[test]
    fn saves_loads_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        assert!(snaps.load_latest().unwrap().is_none());
        for index in [5, 10, 15] {
            snaps.save(&snapshot(index)).unwrap();
        }
        let latest = snaps.load_latest().unwrap().unwrap();
        assert_eq!(latest, snapshot(15));
        assert_eq!(snaps.files().unwrap().len(), KEEP_FILES);
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        let path = snaps.save(&snapshot(7)).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = snaps.load_latest().err().unwrap().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
