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
//! b"METCDSN2" | metadata length u32 LE | metadata (protobuf) | data | data length u64 LE | crc32 u32 LE
//! ```
//!
//! The data's length comes *after* the data because the file is written as
//! the export runs ([`SnapshotWriter`], a `Write`): nothing knows the length
//! before the last pair, and nothing ever holds the whole snapshot in
//! memory. The CRC covers everything before it and is computed as the bytes
//! go out. Reading is the same in reverse: [`SnapshotInfo::open`] checks the
//! CRC in one buffered pass, and [`SnapshotInfo::data`] is a `Read` over the
//! data that the state machine imports from. Files of the first format
//! (`METCDSNP`, the data length before the data) are still read.
//!
//! A file is written under a temporary name, fsynced, renamed into place and
//! the directory fsynced, so a crash leaves either the old set of snapshots
//! or the new one, never half a file. The newest [`KEEP_FILES`] are kept.
//! Only the Raft thread renames into or removes from the directory; the
//! background export writes its temporary file, and the snapshot stream
//! (`super::snapshot_stream`) writes into the `incoming/` subdirectory, from
//! which the Raft thread adopts a snapshot once raft has accepted it
//! ([`SnapshotDir::save`]).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{Snapshot, SnapshotMetadata};

const MAGIC: &[u8; 8] = b"METCDSN2";
/// The first format: `MAGIC_V1 | meta len u32 | meta | data len u64 | data | crc32`.
const MAGIC_V1: &[u8; 8] = b"METCDSNP";
/// How many snapshot files survive a new one.
pub const KEEP_FILES: usize = 2;
/// Metadata above this is refused on read: it is a `ConfState` and a few
/// numbers, so a larger length means a corrupt file.
const MAX_METADATA: u32 = 16 << 20;
/// Subdirectory where streamed snapshots wait for raft to accept them.
const INCOMING: &str = "incoming";

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
    #[error(
        "raft accepted the snapshot at index {index} term {term}, but its file was neither \
         received nor taken here"
    )]
    Missing { index: u64, term: u64 },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let context = context.into();
    move |source| SnapshotError::Io { context, source }
}

/// `<index>-<term>.snap`, 16 hex digits each.
pub fn file_name(index: u64, term: u64) -> String {
    format!("{index:016x}-{term:016x}.snap")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let (index, term) = name.strip_suffix(".snap")?.split_once('-')?;
    Some((
        u64::from_str_radix(index, 16).ok()?,
        u64::from_str_radix(term, 16).ok()?,
    ))
}

/// The directory of snapshot files of one node.
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    /// Opens (creating) the directory and removes what a previous run left
    /// behind: temporary files, and every file in `incoming/` (a received
    /// snapshot that raft had not accepted before the restart is not needed:
    /// the acceptance was not recorded in the WAL either).
    pub fn open(dir: &Path) -> Result<Self, SnapshotError> {
        let incoming = dir.join(INCOMING);
        fs::create_dir_all(&incoming).map_err(io(format!("creating {}", incoming.display())))?;
        for d in [dir, incoming.as_path()] {
            for item in fs::read_dir(d).map_err(io(format!("listing {}", d.display())))? {
                let item = item.map_err(io(format!("listing {}", d.display())))?;
                let temporary = item.file_name().to_string_lossy().ends_with(".tmp");
                if (temporary || d == incoming.as_path()) && item.path().is_file() {
                    fs::remove_file(item.path())
                        .map_err(io(format!("removing {}", item.path().display())))?;
                }
            }
        }
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the snapshot stream puts files it received.
    pub fn incoming(&self) -> PathBuf {
        self.dir.join(INCOMING)
    }

    fn files_in(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        let mut files = Vec::new();
        for item in fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))? {
            let item = item.map_err(io(format!("listing {}", dir.display())))?;
            if let Some((index, _)) = parse_name(&item.file_name().to_string_lossy()) {
                files.push((index, item.path()));
            }
        }
        files.sort();
        Ok(files)
    }

    fn files(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        Self::files_in(&self.dir)
    }

    /// Starts a new snapshot file for `metadata`; the caller writes the
    /// export stream into it and calls [`SnapshotWriter::finish`], then
    /// (on the Raft thread) [`SnapshotDir::publish`].
    pub fn create(&self, metadata: &SnapshotMetadata) -> Result<SnapshotWriter, SnapshotError> {
        let name = file_name(metadata.index, metadata.term);
        SnapshotWriter::create(
            self.dir.join(format!("{name}.tmp")),
            self.dir.join(name),
            metadata,
        )
    }

    // ANCHOR: snapshot_save
    /// Moves a finished snapshot file into place durably and removes all but
    /// the newest files.
    pub fn publish(&self, written: WrittenSnapshot) -> Result<PathBuf, SnapshotError> {
        fs::rename(&written.temporary, &written.path)
            .map_err(io(format!("renaming {}", written.temporary.display())))?;
        self.sync_and_prune()?;
        Ok(written.path)
    }

    fn sync_and_prune(&self) -> Result<(), SnapshotError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing {}", self.dir.display())))?;
        let files = self.files()?;
        if files.len() > KEEP_FILES {
            for (_, old) in &files[..files.len() - KEEP_FILES] {
                fs::remove_file(old).map_err(io(format!("removing {}", old.display())))?;
            }
        }
        Ok(())
    }
    // ANCHOR_END: snapshot_save

    /// Makes the file of a snapshot raft accepted from the leader durable
    /// in this directory: the snapshot stream left it, verified, in
    /// `incoming/`; it is moved here, and older received files are removed.
    /// A snapshot this node took itself is already here.
    pub fn save(&self, snapshot: &Snapshot) -> Result<PathBuf, SnapshotError> {
        let meta = snapshot.get_metadata();
        let name = file_name(meta.index, meta.term);
        let path = self.dir.join(&name);
        let received = self.incoming().join(&name);
        if received.exists() {
            fs::rename(&received, &path)
                .map_err(io(format!("moving {} into place", received.display())))?;
            self.sync_and_prune()?;
        } else if !path.exists() {
            return Err(SnapshotError::Missing {
                index: meta.index,
                term: meta.term,
            });
        }
        for (index, stale) in Self::files_in(&self.incoming())? {
            if index <= meta.index {
                let _ = fs::remove_file(stale);
            }
        }
        Ok(path)
    }

    /// The newest snapshot, verified, if there is one.
    pub fn load_latest(&self) -> Result<Option<SnapshotInfo>, SnapshotError> {
        match self.files()?.pop() {
            Some((_, path)) => SnapshotInfo::open(&path).map(Some),
            None => Ok(None),
        }
    }

    /// The file of the snapshot at (`index`, `term`), if this node has it.
    pub fn find(&self, index: u64, term: u64) -> Option<PathBuf> {
        let path = self.dir.join(file_name(index, term));
        path.exists().then_some(path)
    }
}

/// A snapshot file written and fsynced under its temporary name.
#[derive(Debug)]
pub struct WrittenSnapshot {
    temporary: PathBuf,
    path: PathBuf,
    /// Bytes of the export stream.
    pub data_bytes: u64,
}

impl WrittenSnapshot {
    /// Removes a finished file that will not be published (an install
    /// overtook it).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.temporary);
    }
}

/// Writes one snapshot file as its data arrives; `Write` takes the data.
pub struct SnapshotWriter {
    file: BufWriter<File>,
    temporary: PathBuf,
    path: PathBuf,
    crc: crc32fast::Hasher,
    data_bytes: u64,
}

impl SnapshotWriter {
    /// Creates `temporary` and writes the header. `path` is where the file
    /// goes once published.
    pub fn create(
        temporary: PathBuf,
        path: PathBuf,
        metadata: &SnapshotMetadata,
    ) -> Result<Self, SnapshotError> {
        let metadata = metadata.write_to_bytes().map_err(|e| SnapshotError::Io {
            context: "encoding snapshot metadata".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let file =
            File::create(&temporary).map_err(io(format!("creating {}", temporary.display())))?;
        let mut writer = SnapshotWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            temporary,
            path,
            crc: crc32fast::Hasher::new(),
            data_bytes: 0,
        };
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
        header.extend_from_slice(&metadata);
        writer
            .raw_write(&header)
            .map_err(io(format!("writing {}", writer.temporary.display())))?;
        Ok(writer)
    }

    fn raw_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.file.write_all(bytes)
    }

    /// Writes the trailer and fsyncs the file.
    pub fn finish(mut self) -> Result<WrittenSnapshot, SnapshotError> {
        let context = format!("writing {}", self.temporary.display());
        let length = self.data_bytes.to_le_bytes();
        self.raw_write(&length).map_err(io(context.clone()))?;
        let crc = self.crc.clone().finalize().to_le_bytes();
        self.file.write_all(&crc).map_err(io(context.clone()))?;
        let file = self.file.into_inner().map_err(|e| SnapshotError::Io {
            context: context.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io(context))?;
        Ok(WrittenSnapshot {
            temporary: self.temporary,
            path: self.path,
            data_bytes: self.data_bytes,
        })
    }

    /// Removes the temporary file of an abandoned snapshot.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.temporary);
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.raw_write(buf)?;
        self.data_bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A verified snapshot file: its metadata and where its data lies.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub metadata: SnapshotMetadata,
    pub path: PathBuf,
    data_offset: u64,
    pub data_bytes: u64,
}

impl SnapshotInfo {
    /// Reads the header and checks the CRC of the whole file, in one
    /// buffered pass (memory does not grow with the file).
    pub fn open(path: &Path) -> Result<SnapshotInfo, SnapshotError> {
        let corrupt = |reason: &str| SnapshotError::Corrupt {
            file: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let context = format!("reading {}", path.display());
        let file = File::open(path).map_err(io(context.clone()))?;
        let size = file.metadata().map_err(io(context.clone()))?.len();
        if size < 8 + 4 + 8 + 4 {
            return Err(corrupt("not a metcd snapshot (too short)"));
        }
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut crc = crc32fast::Hasher::new();
        let mut head = [0u8; 12];
        input.read_exact(&mut head).map_err(io(context.clone()))?;
        crc.update(&head);
        let v1 = match &head[..8] {
            m if m == MAGIC => false,
            m if m == MAGIC_V1 => true,
            _ => return Err(corrupt("not a metcd snapshot (bad magic)")),
        };
        let meta_len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if meta_len > MAX_METADATA || 12 + u64::from(meta_len) + 12 > size {
            return Err(corrupt("metadata length points past the end"));
        }
        let mut meta = vec![0u8; meta_len as usize];
        input.read_exact(&mut meta).map_err(io(context.clone()))?;
        crc.update(&meta);
        let mut data_offset = 12 + u64::from(meta_len);
        let data_bytes = if v1 {
            let mut len = [0u8; 8];
            input.read_exact(&mut len).map_err(io(context.clone()))?;
            crc.update(&len);
            data_offset += 8;
            u64::from_le_bytes(len)
        } else {
            size - data_offset - 12
        };
        if data_offset + data_bytes + if v1 { 4 } else { 12 } != size {
            return Err(corrupt("data length does not match the file size"));
        }
        // Everything up to the CRC, through the hasher, a buffer at a time.
        let mut rest = size - data_offset - 4;
        let mut buffer = vec![0u8; 1 << 16];
        let mut tail = Vec::with_capacity(8);
        while rest > 0 {
            let n = (buffer.len() as u64).min(rest) as usize;
            input
                .read_exact(&mut buffer[..n])
                .map_err(io(context.clone()))?;
            crc.update(&buffer[..n]);
            rest -= n as u64;
            if !v1 && rest < 8 {
                // Keep the last bytes: the trailer's data length.
                tail.extend_from_slice(&buffer[..n]);
                let keep = tail.len().saturating_sub(8);
                tail.drain(..keep);
            }
        }
        let mut stored = [0u8; 4];
        input.read_exact(&mut stored).map_err(io(context))?;
        if crc.finalize() != u32::from_le_bytes(stored) {
            return Err(corrupt("checksum mismatch"));
        }
        if !v1 {
            let trailer: [u8; 8] = tail
                .get(tail.len().saturating_sub(8)..)
                .and_then(|t| t.try_into().ok())
                .ok_or_else(|| corrupt("trailer is missing"))?;
            if u64::from_le_bytes(trailer) != data_bytes {
                return Err(corrupt(
                    "trailer's data length does not match the file size",
                ));
            }
        }
        let metadata = SnapshotMetadata::parse_from_bytes(&meta)
            .map_err(|e| corrupt(&format!("metadata does not decode: {e}")))?;
        Ok(SnapshotInfo {
            metadata,
            path: path.to_path_buf(),
            data_offset,
            data_bytes,
        })
    }

    /// The export stream inside the file, buffered.
    pub fn data(&self) -> Result<impl Read + use<>, SnapshotError> {
        let context = format!("reading {}", self.path.display());
        let mut file = File::open(&self.path).map_err(io(context.clone()))?;
        file.seek(SeekFrom::Start(self.data_offset))
            .map_err(io(context))?;
        Ok(BufReader::with_capacity(1 << 20, file).take(self.data_bytes))
    }

    /// What raft keeps and sends: the metadata, without data (the data
    /// travels from the file, see `super::snapshot_stream`).
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(self.metadata.clone());
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(index: u64) -> SnapshotMetadata {
        let mut m = SnapshotMetadata::default();
        m.set_index(index);
        m.set_term(2);
        m.mut_conf_state().voters = vec![1, 2, 3];
        m
    }

    fn write(snaps: &SnapshotDir, index: u64, data: &[u8]) -> PathBuf {
        let mut writer = snaps.create(&metadata(index)).unwrap();
        // In pieces, as an export writes.
        for piece in data.chunks(7) {
            writer.write_all(piece).unwrap();
        }
        snaps.publish(writer.finish().unwrap()).unwrap()
    }

    fn data_of(info: &SnapshotInfo) -> Vec<u8> {
        let mut out = Vec::new();
        info.data().unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn saves_loads_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        assert!(snaps.load_latest().unwrap().is_none());
        for index in [5, 10, 15] {
            write(&snaps, index, format!("data at {index}").as_bytes());
        }
        let latest = snaps.load_latest().unwrap().unwrap();
        assert_eq!(latest.metadata, metadata(15));
        assert_eq!(data_of(&latest), b"data at 15");
        assert_eq!(snaps.files().unwrap().len(), KEEP_FILES);
    }

    #[test]
    fn empty_and_large_data_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        write(&snaps, 1, b"");
        assert_eq!(data_of(&snaps.load_latest().unwrap().unwrap()), b"");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        write(&snaps, 2, &big);
        assert_eq!(data_of(&snaps.load_latest().unwrap().unwrap()), big);
    }

    #[test]
    fn a_damaged_or_cut_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        let path = write(&snaps, 7, b"some snapshot data");
        let bytes = fs::read(&path).unwrap();
        for at in 0..bytes.len() {
            let mut copy = bytes.clone();
            copy[at] ^= 1;
            fs::write(&path, &copy).unwrap();
            let err = SnapshotInfo::open(&path).err().unwrap().to_string();
            assert!(err.contains("corrupt"), "flip at {at}: {err}");
        }
        for cut in 0..bytes.len() {
            fs::write(&path, &bytes[..cut]).unwrap();
            assert!(SnapshotInfo::open(&path).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn first_format_files_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let meta = metadata(9).write_to_bytes().unwrap();
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&meta);
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(b"hello");
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        fs::write(dir.path().join(file_name(9, 2)), &bytes).unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        let info = snaps.load_latest().unwrap().unwrap();
        assert_eq!(info.metadata, metadata(9));
        assert_eq!(data_of(&info), b"hello");
    }

    #[test]
    fn a_received_file_is_adopted_once_raft_accepts_it() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        let meta = metadata(30);
        let mut writer = SnapshotWriter::create(
            snaps.incoming().join("x.tmp"),
            snaps.incoming().join(file_name(30, 2)),
            &meta,
        )
        .unwrap();
        writer.write_all(b"streamed").unwrap();
        let written = writer.finish().unwrap();
        fs::rename(&written.temporary, &written.path).unwrap();
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta.clone());
        snaps.save(&snapshot).unwrap();
        let info = snaps.load_latest().unwrap().unwrap();
        assert_eq!(data_of(&info), b"streamed");
        assert!(SnapshotDir::files_in(&snaps.incoming()).unwrap().is_empty());
        // Saving again (a restart) finds it in place; an unknown one is an error.
        snaps.save(&snapshot).unwrap();
        snapshot.mut_metadata().index = 31;
        assert!(snaps.save(&snapshot).is_err());
    }
}
