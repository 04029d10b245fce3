//! Backups: a snapshot file in etcd's framing, and restoring one.
//!
//! `etcdctl snapshot save` asks a member's Maintenance service for a
//! snapshot and accepts the stream only if it is framed as etcd frames its
//! own: the content padded with zeros to a multiple of 512 bytes, followed
//! by the SHA-256 of the padded content (so the total is 32 more than a
//! multiple of 512). Inside that frame metcd sends one of its own snapshot
//! files (`crate::raft::snapshot_file`), prefixed with a small header that
//! says how long it is, so that the padding can be told from the file:
//!
//! ```text
//! b"METCDBK1" | file length u64 LE | snapshot file | zeros to a multiple of 512 | SHA-256 of all before it
//! ```
//!
//! A backup is therefore checked twice when it is restored: the SHA-256 of
//! the frame, then the snapshot file's own CRC.
//!
//! # Restoring
//!
//! [`restore`] writes the key-value data of a backup (etcd's revision
//! history, the current and compacted revisions) into a fresh engine in a
//! new member's data directory, and nothing of the old cluster's Raft
//! state: no applied index, no membership, no cluster id. Each member of
//! the new cluster is restored from the same file, and the new cluster is
//! then started as any new cluster is (`--initial-cluster`); its members
//! start from identical data, at the backup's revision, and the new
//! cluster's own log begins at index 1. This is what `etcdutl snapshot
//! restore` does for etcd: a new cluster id, new members, the old data.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use engines::{EngineKind, EngineOptions, WriteBatch, WriteOptions};
use sha2::{Digest, Sha256};

use crate::raft::snapshot_file::SnapshotInfo;

const MAGIC: &[u8; 8] = b"METCDBK1";
const HEADER: u64 = 16;
/// etcd's frame: content padded to this, then a SHA-256.
pub const PAD_TO: u64 = 512;
pub const HASH_BYTES: u64 = 32;
/// Key prefixes of the data a restore keeps: the history and the MVCC
/// store's own metadata, and the layout marker.
const KEPT_PREFIXES: [&[u8]; 4] = [b"h/", b"m/mvcc-current", b"m/mvcc-compacted", b"m/format"];

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} is not a metcd backup: {reason}")]
    Invalid { file: String, reason: String },
    #[error("the snapshot inside {file} is damaged: {reason}")]
    Snapshot { file: String, reason: String },
    #[error("writing the restored data: {0}")]
    Engine(#[from] engines::EngineError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// The bytes before a snapshot file of `file_len` bytes in a backup.
pub fn header(file_len: u64) -> [u8; HEADER as usize] {
    let mut out = [0u8; HEADER as usize];
    out[..8].copy_from_slice(MAGIC);
    out[8..].copy_from_slice(&file_len.to_le_bytes());
    out
}

/// The zeros after `content_len` bytes of header and file.
pub fn padding(content_len: u64) -> usize {
    ((PAD_TO - content_len % PAD_TO) % PAD_TO) as usize
}

/// Writes a backup of the snapshot file at `snapshot` to `out` (the
/// Maintenance service streams the same bytes, chunk by chunk).
pub fn write_backup(snapshot: &Path, out: &mut dyn Write) -> Result<u64, BackupError> {
    let context = format!("reading {}", snapshot.display());
    let file = File::open(snapshot).map_err(io(context.clone()))?;
    let len = file.metadata().map_err(io(context))?.len();
    write_open_file(file, len, out)
}

/// [`write_backup`] of a snapshot file already open, `len` bytes long.
pub fn write_open_file(mut file: File, len: u64, out: &mut dyn Write) -> Result<u64, BackupError> {
    let context = "reading the snapshot file".to_string();
    let mut hash = Sha256::new();
    let mut emit = |bytes: &[u8], out: &mut dyn Write| -> Result<(), BackupError> {
        hash.update(bytes);
        out.write_all(bytes).map_err(io("writing the backup"))
    };
    emit(&header(len), out)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io(context.clone()))?;
        if n == 0 {
            break;
        }
        emit(&buf[..n], out)?;
    }
    emit(&vec![0u8; padding(HEADER + len)], out)?;
    let digest = hash.finalize();
    out.write_all(&digest).map_err(io("writing the backup"))?;
    Ok(HEADER + len + padding(HEADER + len) as u64 + HASH_BYTES)
}

/// Checks a backup's frame and hash and extracts its snapshot file to
/// `into`; returns the snapshot's verified metadata.
pub fn extract(backup: &Path, into: &Path) -> Result<SnapshotInfo, BackupError> {
    let name = backup.display().to_string();
    let invalid = |reason: String| BackupError::Invalid {
        file: name.clone(),
        reason,
    };
    let context = format!("reading {name}");
    let mut file = File::open(backup).map_err(io(context.clone()))?;
    let total = file.metadata().map_err(io(context.clone()))?.len();
    if total < HEADER + HASH_BYTES || !(total - HASH_BYTES).is_multiple_of(PAD_TO) {
        return Err(invalid(format!(
            "its size ({total} bytes) is not a multiple of {PAD_TO} plus a {HASH_BYTES}-byte \
             SHA-256, as `etcdctl snapshot save` writes"
        )));
    }
    // The hash covers everything before it.
    let mut hash = Sha256::new();
    let mut reader = BufReader::with_capacity(1 << 20, &mut file);
    let mut left = total - HASH_BYTES;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let n = reader
            .read(&mut buf[..left.min(1 << 16) as usize])
            .map_err(io(context.clone()))?;
        if n == 0 {
            return Err(invalid("it ends early".into()));
        }
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    let mut stored = [0u8; HASH_BYTES as usize];
    reader
        .read_exact(&mut stored)
        .map_err(io(context.clone()))?;
    if hash.finalize().as_slice() != stored {
        return Err(invalid(
            "its SHA-256 does not match its content (damaged or cut)".into(),
        ));
    }
    drop(reader);
    file.seek(SeekFrom::Start(0)).map_err(io(context.clone()))?;
    let mut head = [0u8; HEADER as usize];
    file.read_exact(&mut head).map_err(io(context.clone()))?;
    if &head[..8] != MAGIC {
        return Err(invalid(
            "it does not start with METCDBK1 (an etcd backup cannot be restored into metcd: \
             etcd's bbolt database is not metcd's format)"
                .into(),
        ));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[8..]);
    let len = u64::from_le_bytes(len);
    if HEADER + len > total - HASH_BYTES {
        return Err(invalid(format!(
            "its header claims a {len}-byte snapshot, longer than the file"
        )));
    }
    let mut out = File::create(into).map_err(io(format!("creating {}", into.display())))?;
    std::io::copy(&mut (&mut file).take(len), &mut out)
        .map_err(io(format!("writing {}", into.display())))?;
    out.sync_all()
        .map_err(io(format!("syncing {}", into.display())))?;
    SnapshotInfo::open(into).map_err(|e| BackupError::Snapshot {
        file: name.clone(),
        reason: e.to_string(),
    })
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Raft index of the snapshot in the old cluster.
    pub index: u64,
    /// Pairs written (history records and MVCC metadata).
    pub pairs: u64,
}

// ANCHOR: restore
/// Restores the key-value data of `backup` into a new, empty engine of
/// kind `engine` in the data directory `data_dir` (see the module docs).
pub fn restore(
    backup: &Path,
    data_dir: &Path,
    engine: EngineKind,
) -> Result<Restored, BackupError> {
    let engine_dir = crate::raft::engine_dir(data_dir);
    if data_dir.exists()
        && std::fs::read_dir(data_dir)
            .map_err(io(format!("reading {}", data_dir.display())))?
            .next()
            .is_some()
    {
        return Err(BackupError::Invalid {
            file: backup.display().to_string(),
            reason: format!(
                "the data directory {} is not empty; restore into a new directory for each \
                 member of the new cluster",
                data_dir.display()
            ),
        });
    }
    std::fs::create_dir_all(&engine_dir)
        .map_err(io(format!("creating {}", engine_dir.display())))?;
    let extracted = data_dir.join("restore.snap");
    let info = extract(backup, &extracted)?;
    let store = engines::open(engine, &engine_dir, &EngineOptions::default())?;
    let mut data = info.data().map_err(|e| BackupError::Snapshot {
        file: backup.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut reader =
        engines::export::ExportReader::new(&mut data).map_err(|e| BackupError::Snapshot {
            file: backup.display().to_string(),
            reason: e.to_string(),
        })?;
    let mut batch = WriteBatch::new();
    let mut pairs = 0u64;
    while let Some((key, value)) = reader.next_pair().map_err(|e| BackupError::Snapshot {
        file: backup.display().to_string(),
        reason: e.to_string(),
    })? {
        if !KEPT_PREFIXES.iter().any(|p| key.starts_with(p)) {
            continue;
        }
        batch.put(key, value);
        pairs += 1;
        if batch.len() >= 1024 {
            store.write_batch(std::mem::take(&mut batch), WriteOptions::BUFFERED)?;
        }
    }
    if !batch.is_empty() {
        store.write_batch(batch, WriteOptions::BUFFERED)?;
    }
    store.sync()?;
    drop(store);
    std::fs::remove_file(&extracted).map_err(io(format!("removing {}", extracted.display())))?;
    Ok(Restored {
        index: info.metadata.index,
        pairs,
    })
}
// ANCHOR_END: restore

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_a_multiple_of_512_plus_a_hash() {
        for len in [0u64, 1, 495, 496, 497, 10_000] {
            let total = HEADER + len + padding(HEADER + len) as u64 + HASH_BYTES;
            assert_eq!((total - HASH_BYTES) % PAD_TO, 0, "{len}");
        }
    }

    #[test]
    fn a_damaged_backup_is_refused_by_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("x.snap");
        std::fs::write(&snap, b"not really a snapshot").unwrap();
        let mut framed = Vec::new();
        write_backup(&snap, &mut framed).unwrap();
        assert_eq!((framed.len() as u64 - HASH_BYTES) % PAD_TO, 0);
        framed[20] ^= 1;
        let backup = dir.path().join("b.db");
        std::fs::write(&backup, &framed).unwrap();
        let err = extract(&backup, &dir.path().join("out")).unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");
    }
}
