//! The write-ahead log: the durable Raft log of one node.
//!
//! Raft may only send a message that depends on an entry or a vote after
//! that entry or vote is on stable storage. The WAL is that storage: the
//! Ready loop appends a batch of records (entries, the hard state, a
//! snapshot marker) with [`Wal::append`] and then calls [`Wal::sync`] once,
//! so every client write that shared the Ready shares one `fdatasync`.
//!
//! # Files and records
//!
//! The log is a directory of segment files named `<sequence>.wal`
//! (16 hexadecimal digits, so names sort in log order). Every record is
//!
//! ```text
//! length u32 LE | length check u32 LE (= !length) | crc32 u32 LE | kind u8 | payload
//! ```
//!
//! where `length` counts `kind` and `payload`, and the CRC-32 covers `kind`
//! and `payload`. The length check lets the reader tell a garbled header
//! (corruption) from a header that is merely cut short (a torn write).
//! Payloads are the protobuf encodings of raft's `Entry` and `HardState`, and
//! for a snapshot marker, the snapshot's index and term.
//!
//! # Recovery rules
//!
//! The rule for telling a torn write from corruption is etcd's. A crash
//! during an append can leave, at the end of the **last** segment, only
//! two kinds of damage: a record the file ends inside of (the size reached
//! the disk, or only a prefix of the bytes did), and a record whose
//! unwritten sectors read back as zeros (a *zero-filled tail*: from a
//! 512-byte sector boundary inside the record to the end of the file,
//! every byte is zero). Such a record was never acknowledged (its fsync
//! did not return), so [`Wal::open`] truncates it, and everything after
//! it, and carries on.
//!
//! * A zero-filled tail, or a record cut short, at the end of the last
//!   segment: a torn write, truncated.
//! * A **complete** record whose checksum fails, with non-zero bytes in
//!   its last sector (a flipped bit, a garbage sector): corruption, even
//!   when it is the very last record. Cutting it would silently drop a
//!   record that may have been acknowledged.
//! * A garbled header (the length and its check disagree) that is not in
//!   a zero-filled tail, a bad record followed by more data, and any damage
//!   in an earlier segment (segments are fsynced before the next one is
//!   created, so they are never torn): corruption.
//!
//! Corruption fails the open with [`WalError::Corrupt`] naming the file
//! and offset, and the node refuses to start rather than serve a log with
//! a hole in it.
//!
//! The rule assumes what Linux's journaling file systems (ext4 in its
//! default `data=ordered` mode, XFS, btrfs) guarantee: blocks that were
//! never written read back as zeros, not as stale data. On a file system
//! that may expose stale blocks after a crash, a torn last record can look
//! like corruption, and the node refuses to start: a loud failure, never a
//! silent loss.
//!
//! # Testing against power loss
//!
//! All file operations go through an [`engines::durable_io::DurableIo`]
//! ([`Wal::open_with`]); the tests below run random appends, syncs,
//! rotations and releases against the simulated file system, cut the power
//! at random operations, and check that every synced record and the hard
//! state survive, that a record cut short is truncated, and that recovery
//! opens every state such a crash can leave.
//!
//! # Replay
//!
//! [`Wal::open`] replays every record into a [`WalState`]: the last hard
//! state and the log entries, where a later entry with an index already
//! present truncates the log there (Raft overwrote a conflicting suffix), and
//! a snapshot marker (written when a snapshot from the leader is installed)
//! discards everything before it.
//!
//! # Compaction
//!
//! Segments rotate at [`SEGMENT_BYTES`]. Each new segment starts with the
//! current hard state, so once a snapshot covers every entry of the oldest
//! segments, [`Wal::release_up_to`] deletes them without losing the vote.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use engines::durable_io::{Appender, DurableIo, OpenMode, RealIo};
use protobuf::Message as _;
use raft::prelude::{Entry, HardState};

/// A segment is closed and a new one started beyond this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Records larger than this are refused on read as corrupt lengths: a Raft
/// entry holds one client request (at most a few MiB).
const MAX_RECORD: u32 = 256 << 20;
const HEADER: usize = 13;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;

/// What can go wrong with the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "WAL corrupt in {file} at byte {offset}: {reason}; acknowledged data cannot be recovered \
         from this log, so the node will not start (restore the node from a peer: remove its \
         data directory and add it to the cluster again)"
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WalError {
    let context = context.into();
    move |source| WalError::Io { context, source }
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq)]
pub enum WalRecord {
    Entry(Entry),
    HardState(HardState),
    /// A snapshot at (index, term) was installed: the log restarts after it.
    Snapshot {
        index: u64,
        term: u64,
    },
}

impl WalRecord {
    fn encode(&self) -> Result<(u8, Vec<u8>), WalError> {
        let protobuf_error = |e: protobuf::ProtobufError| WalError::Io {
            context: "encoding a WAL record".into(),
            source: std::io::Error::other(e.to_string()),
        };
        Ok(match self {
            WalRecord::Entry(e) => (KIND_ENTRY, e.write_to_bytes().map_err(protobuf_error)?),
            WalRecord::HardState(hs) => (
                KIND_HARD_STATE,
                hs.write_to_bytes().map_err(protobuf_error)?,
            ),
            WalRecord::Snapshot { index, term } => {
                let mut payload = index.to_le_bytes().to_vec();
                payload.extend_from_slice(&term.to_le_bytes());
                (KIND_SNAPSHOT, payload)
            }
        })
    }

    fn decode(kind: u8, payload: &[u8]) -> Result<WalRecord, String> {
        match kind {
            KIND_ENTRY => Entry::parse_from_bytes(payload)
                .map(WalRecord::Entry)
                .map_err(|e| format!("entry does not decode: {e}")),
            KIND_HARD_STATE => HardState::parse_from_bytes(payload)
                .map(WalRecord::HardState)
                .map_err(|e| format!("hard state does not decode: {e}")),
            KIND_SNAPSHOT if payload.len() == 16 => {
                let mut index = [0u8; 8];
                let mut term = [0u8; 8];
                index.copy_from_slice(&payload[..8]);
                term.copy_from_slice(&payload[8..]);
                Ok(WalRecord::Snapshot {
                    index: u64::from_le_bytes(index),
                    term: u64::from_le_bytes(term),
                })
            }
            other => Err(format!(
                "unknown record kind {other} (length {})",
                payload.len()
            )),
        }
    }
}

/// Encodes one record in the on-disk format.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() + 1) as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(payload);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&(!length).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// How reading one segment ended.
enum SegmentEnd {
    /// Every byte verified.
    Clean,
    /// A torn tail starts at this offset.
    Torn(u64),
}

/// The sector size torn writes are judged by: a disk writes whole sectors,
/// so a write cut short by a power loss leaves whole sectors unwritten,
/// which read back as zeros.
const SECTOR: usize = 512;

/// Whether the bad record that starts at `pos` and ends at `end` lies in a
/// zero-filled tail: from some sector boundary inside it (or its start) to
/// the end of the file, every byte is zero. That is what a crash in the
/// middle of writing it leaves; a flipped bit or a garbage byte is not.
fn in_zero_filled_tail(bytes: &[u8], pos: usize, end: usize) -> bool {
    let zeros_from = bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |last| last + 1);
    let boundary = zeros_from.max(pos).div_ceil(SECTOR) * SECTOR;
    boundary < end.min(bytes.len()) || zeros_from <= pos
}

/// Parses a segment's bytes into records. `last` says whether this is the
/// newest segment, the only one where a torn tail is expected.
///
/// The torn-write rule is etcd's: in the last segment, a record that is
/// incomplete (the file ends inside it) or that lies in a zero-filled tail
/// (see [`in_zero_filled_tail`]) is what a crash during an append leaves,
/// and is cut. A complete record whose checksum fails, or a garbled header
/// with non-zero bytes after it, is corruption of acknowledged data.
fn parse_segment(
    file: &Path,
    bytes: &[u8],
    last: bool,
    records: &mut Vec<WalRecord>,
) -> Result<SegmentEnd, WalError> {
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        file: file.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let torn_or = |reason: String| -> Result<SegmentEnd, WalError> {
            if last {
                Ok(SegmentEnd::Torn(pos as u64))
            } else {
                Err(corrupt(pos, reason))
            }
        };
        if rest.iter().all(|b| *b == 0) {
            return torn_or("zero-filled tail in a closed segment".into());
        }
        if rest.len() < HEADER {
            return torn_or("record header cut short".into());
        }
        let word =
            |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let (length, check, crc) = (word(0), word(4), word(8));
        if check != !length || length == 0 || length > MAX_RECORD {
            if in_zero_filled_tail(bytes, pos, pos + HEADER) {
                return torn_or("record header in a zero-filled tail".into());
            }
            return Err(corrupt(
                pos,
                format!("garbled record header (length {length})"),
            ));
        }
        let end = HEADER - 1 + length as usize;
        if rest.len() < end {
            return torn_or(format!("record of {length} bytes cut short"));
        }
        let body = &rest[HEADER - 1..end];
        if crc32fast::hash(body) != crc {
            if in_zero_filled_tail(bytes, pos, pos + end) {
                return torn_or("record in a zero-filled tail".into());
            }
            return Err(corrupt(
                pos,
                format!("checksum mismatch in a complete record of {length} bytes"),
            ));
        }
        let record =
            WalRecord::decode(body[0], &body[1..]).map_err(|reason| corrupt(pos, reason))?;
        records.push(record);
        pos += end;
    }
    Ok(SegmentEnd::Clean)
}

/// The Raft state a node rebuilds from its WAL.
#[derive(Debug, Default, Clone)]
pub struct WalState {
    pub hard_state: HardState,
    /// Log entries in index order, without gaps.
    pub entries: Vec<Entry>,
    /// The newest snapshot marker seen, if any: (index, term).
    pub snapshot: Option<(u64, u64)>,
}

impl WalState {
    fn apply(&mut self, record: WalRecord) {
        match record {
            WalRecord::HardState(hs) => self.hard_state = hs,
            WalRecord::Snapshot { index, term } => {
                self.entries.clear();
                self.snapshot = Some((index, term));
            }
            WalRecord::Entry(entry) => {
                let first = self.entries.first().map(|e| e.index);
                match first {
                    Some(first)
                        if entry.index >= first
                            && entry.index <= first + self.entries.len() as u64 =>
                    {
                        self.entries.truncate((entry.index - first) as usize);
                    }
                    // A gap (older segments were released) or an index before
                    // the first entry: the log restarts here.
                    _ => self.entries.clear(),
                }
                self.entries.push(entry);
            }
        }
    }
}

struct Segment {
    sequence: u64,
    path: PathBuf,
    /// Highest entry index the segment holds (0 if none).
    max_index: u64,
}

/// An open write-ahead log. See the module documentation.
pub struct Wal {
    dir: PathBuf,
    /// Every file operation goes through this: the real file system, or a
    /// simulated one in the power-loss tests.
    io: Arc<dyn DurableIo>,
    segment_bytes: u64,
    segments: Vec<Segment>,
    writer: BufWriter<Appender>,
    written: u64,
    hard_state: HardState,
    dirty: bool,
    fsyncs: Arc<AtomicU64>,
    fsync_micros: Arc<AtomicU64>,
}

fn segment_name(sequence: u64) -> String {
    format!("{sequence:016x}.wal")
}

fn sync_dir(fs: &dyn DurableIo, dir: &Path) -> Result<(), WalError> {
    fs.sync_dir(dir)
        .map_err(io(format!("syncing directory {}", dir.display())))
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, replays it, truncates a
    /// torn tail, and returns the log with the state it holds.
    pub fn open(dir: &Path) -> Result<(Wal, WalState), WalError> {
        Self::open_with(dir, RealIo::shared(), SEGMENT_BYTES)
    }

    /// [`Wal::open`] with every file operation going through `fs` (the
    /// power-loss tests pass a simulated file system) and segments rotated
    /// at `segment_bytes`.
    pub fn open_with(
        dir: &Path,
        fs: Arc<dyn DurableIo>,
        segment_bytes: u64,
    ) -> Result<(Wal, WalState), WalError> {
        fs.create_dir_all(dir)
            .map_err(io(format!("creating {}", dir.display())))?;
        let mut sequences = Vec::new();
        for name in fs
            .list(dir)
            .map_err(io(format!("listing {}", dir.display())))?
        {
            if let Some(hex) = name.strip_suffix(".wal")
                && let Ok(sequence) = u64::from_str_radix(hex, 16)
            {
                sequences.push(sequence);
            }
        }
        sequences.sort_unstable();
        let mut state = WalState::default();
        let mut segments = Vec::new();
        for (i, sequence) in sequences.iter().enumerate() {
            let path = dir.join(segment_name(*sequence));
            let bytes = fs
                .read(&path)
                .map_err(io(format!("reading {}", path.display())))?;
            let mut records = Vec::new();
            let last = i + 1 == sequences.len();
            if let SegmentEnd::Torn(offset) = parse_segment(&path, &bytes, last, &mut records)? {
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    dropped_bytes = bytes.len() as u64 - offset,
                    "WAL ends with a torn record (a crash during an append); truncating it"
                );
                let file = fs
                    .open(&path, OpenMode::Write)
                    .map_err(io(format!("opening {} to truncate it", path.display())))?;
                file.set_len(offset)
                    .and_then(|_| file.fsync())
                    .map_err(io(format!("truncating {}", path.display())))?;
            }
            let mut max_index = 0;
            for record in records {
                if let WalRecord::Entry(e) = &record {
                    max_index = max_index.max(e.index);
                }
                state.apply(record);
            }
            segments.push(Segment {
                sequence: *sequence,
                path,
                max_index,
            });
        }
        let fsyncs = Arc::new(AtomicU64::new(0));
        let (writer, written) = match segments.last() {
            Some(segment) => {
                let file = fs
                    .open(&segment.path, OpenMode::Append)
                    .map_err(io(format!("opening {}", segment.path.display())))?;
                let written = file.len().map_err(io(format!(
                    "reading the size of {}",
                    segment.path.display()
                )))?;
                (BufWriter::new(Appender(file)), written)
            }
            None => {
                let (segment, file) = Self::create_segment(&*fs, dir, 0)?;
                segments.push(segment);
                (BufWriter::new(file), 0)
            }
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
            io: fs,
            segment_bytes,
            segments,
            writer,
            written,
            hard_state: state.hard_state.clone(),
            dirty: false,
            fsyncs,
            fsync_micros: Arc::new(AtomicU64::new(0)),
        };
        Ok((wal, state))
    }

    fn create_segment(
        fs: &dyn DurableIo,
        dir: &Path,
        sequence: u64,
    ) -> Result<(Segment, Appender), WalError> {
        let path = dir.join(segment_name(sequence));
        let file = fs
            .open(&path, OpenMode::Append)
            .map_err(io(format!("creating {}", path.display())))?;
        sync_dir(fs, dir)?;
        Ok((
            Segment {
                sequence,
                path,
                max_index: 0,
            },
            Appender(file),
        ))
    }

    /// Counter of `fdatasync` calls, shared so `/-/status` can report it.
    pub fn fsync_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.fsyncs)
    }

    /// Total microseconds spent in `fdatasync`, for the average latency.
    pub fn fsync_micros(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.fsync_micros)
    }

    // ANCHOR: wal_append
    /// Buffers records for the next [`Wal::sync`]. Nothing is durable, and
    /// nothing that depends on these records may be sent, until then.
    pub fn append(&mut self, records: &[WalRecord]) -> Result<(), WalError> {
        for record in records {
            if self.written >= self.segment_bytes {
                self.rotate()?;
            }
            let (kind, payload) = record.encode()?;
            let bytes = frame(kind, &payload);
            self.writer
                .write_all(&bytes)
                .map_err(io("appending to the WAL"))?;
            self.written += bytes.len() as u64;
            self.dirty = true;
            match record {
                WalRecord::Entry(e) => {
                    if let Some(segment) = self.segments.last_mut() {
                        segment.max_index = segment.max_index.max(e.index);
                    }
                }
                WalRecord::HardState(hs) => self.hard_state = hs.clone(),
                WalRecord::Snapshot { .. } => {}
            }
        }
        Ok(())
    }

    /// Makes every appended record durable with one `fdatasync`: the group
    /// commit point of the whole node.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if !self.dirty {
            return Ok(());
        }
        self.writer.flush().map_err(io("writing the WAL"))?;
        let started = std::time::Instant::now();
        self.writer
            .get_ref()
            .0
            .fdatasync()
            .map_err(io("fdatasync of the WAL"))?;
        crate::metrics::WAL_FSYNC.observe(started.elapsed());
        self.fsync_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.dirty = false;
        Ok(())
    }
    // ANCHOR_END: wal_append

    /// Hands the buffered records to the kernel without `fdatasync`: only
    /// for the `skip-fsync` lab break, which shows that a process kill
    /// cannot tell this from [`Wal::sync`] (the page cache survives it).
    pub fn write_unsynced(&mut self) -> Result<(), WalError> {
        self.writer.flush().map_err(io("writing the WAL"))
    }

    /// Closes the current segment (durably) and starts the next one with the
    /// current hard state, so older segments never hold the only copy of it.
    fn rotate(&mut self) -> Result<(), WalError> {
        self.dirty = true;
        self.sync()?;
        let sequence = self.segments.last().map_or(0, |s| s.sequence + 1);
        let (segment, file) = Self::create_segment(&*self.io, &self.dir, sequence)?;
        self.segments.push(segment);
        self.writer = BufWriter::new(file);
        self.written = 0;
        let hs = self.hard_state.clone();
        self.append(&[WalRecord::HardState(hs)])
    }

    /// Deletes the oldest segments whose every entry is at or below `index`
    /// (covered by a durable snapshot). Starts a new segment first, so the
    /// live one is never deleted.
    pub fn release_up_to(&mut self, index: u64) -> Result<usize, WalError> {
        self.rotate()?;
        self.sync()?;
        let mut released = 0;
        while self.segments.len() > 1 && self.segments[0].max_index <= index {
            let segment = self.segments.remove(0);
            self.io
                .remove(&segment.path)
                .map_err(io(format!("removing {}", segment.path.display())))?;
            released += 1;
        }
        if released > 0 {
            sync_dir(&*self.io, &self.dir)?;
        }
        Ok(released)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.pop().unwrap()
    }

    #[test]
    fn replays_entries_and_hard_state() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, state) = Wal::open(dir.path()).unwrap();
            assert!(state.entries.is_empty());
            wal.append(&[
                WalRecord::Entry(entry(1, 1, b"a")),
                WalRecord::Entry(entry(2, 1, b"b")),
                WalRecord::HardState(hard_state(1, 1, 2)),
            ])
            .unwrap();
            wal.sync().unwrap();
            assert_eq!(wal.fsync_counter().load(Ordering::Relaxed), 1);
        }
        let (_, state) = Wal::open(dir.path()).unwrap();
        assert_eq!(state.entries.len(), 2);
        assert_eq!(state.entries[1].data.as_ref(), b"b");
        assert_eq!(state.hard_state, hard_state(1, 1, 2));
    }

    #[test]
    fn a_later_entry_truncates_a_conflicting_suffix() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            let records: Vec<_> = (1..=5)
                .map(|i| WalRecord::Entry(entry(i, 1, b"old")))
                .collect();
            wal.append(&records).unwrap();
            wal.append(&[WalRecord::Entry(entry(3, 2, b"new"))])
                .unwrap();
            wal.sync().unwrap();
        }
        let (_, state) = Wal::open(dir.path()).unwrap();
        let indexes: Vec<_> = state.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(indexes, vec![(1, 1), (2, 1), (3, 2)]);
    }

    #[test]
    fn a_snapshot_marker_resets_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&[
                WalRecord::Entry(entry(1, 1, b"x")),
                WalRecord::Snapshot { index: 10, term: 3 },
                WalRecord::Entry(entry(11, 3, b"y")),
            ])
            .unwrap();
            wal.sync().unwrap();
        }
        let (_, state) = Wal::open(dir.path()).unwrap();
        assert_eq!(state.snapshot, Some((10, 3)));
        assert_eq!(state.entries.len(), 1);
        assert_eq!(state.entries[0].index, 11);
    }

    #[test]
    fn truncation_at_every_byte_of_the_last_record_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&[WalRecord::Entry(entry(1, 1, b"first"))])
                .unwrap();
            wal.sync().unwrap();
        }
        let path = only_segment(dir.path());
        let good_len = fs::metadata(&path).unwrap().len();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&[WalRecord::Entry(entry(2, 1, b"second record"))])
                .unwrap();
            wal.sync().unwrap();
        }
        let full = fs::read(&path).unwrap();
        for cut in good_len..full.len() as u64 {
            fs::write(&path, &full[..cut as usize]).unwrap();
            let (_, state) = Wal::open(dir.path()).unwrap();
            assert_eq!(state.entries.len(), 1, "cut at {cut}");
            assert_eq!(fs::metadata(&path).unwrap().len(), good_len, "cut at {cut}");
        }
        // And a torn tail followed by new appends replays cleanly.
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&[WalRecord::Entry(entry(2, 1, b"again"))])
                .unwrap();
            wal.sync().unwrap();
        }
        let (_, state) = Wal::open(dir.path()).unwrap();
        assert_eq!(state.entries.len(), 2);
        assert_eq!(state.entries[1].data.as_ref(), b"again");
    }

    /// etcd's rule: a complete last record whose checksum fails is
    /// corruption, not a torn write (before the fix it was cut silently).
    #[test]
    fn a_flipped_bit_in_the_complete_last_record_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let second_at;
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&[WalRecord::Entry(entry(1, 1, b"first"))])
                .unwrap();
            wal.sync().unwrap();
            second_at = fs::metadata(only_segment(dir.path())).unwrap().len();
            wal.append(&[WalRecord::Entry(entry(2, 1, b"second"))])
                .unwrap();
            wal.sync().unwrap();
        }
        let path = only_segment(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        match Wal::open(dir.path()) {
            Err(WalError::Corrupt { file, offset, .. }) => {
                assert_eq!((file, offset), (path.clone(), second_at));
            }
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok((_, state)) => panic!(
                "expected Corrupt, the WAL opened with {} entries",
                state.entries.len()
            ),
        }
        // Nothing was cut: the operator still has every byte.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    /// A last record whose final sectors never reached the disk (they read
    /// back as zeros) is a torn write, cut like a record cut short, and
    /// so is a record whose header lies in the zero-filled tail.
    #[test]
    fn a_last_record_in_a_zero_filled_tail_is_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        // A first record that ends 6 bytes before a sector boundary, so the
        // first torn sector starts inside the second record's header.
        let first = (400..600)
            .map(|n| WalRecord::Entry(entry(1, 1, &vec![7u8; n])))
            .find(|r| {
                let (kind, payload) = r.encode().unwrap();
                frame(kind, &payload).len() == SECTOR - 6
            })
            .unwrap();
        let good_len;
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&[first]).unwrap();
            wal.sync().unwrap();
            good_len = fs::metadata(only_segment(dir.path())).unwrap().len();
            wal.append(&[WalRecord::Entry(entry(2, 1, &[9u8; 2000]))])
                .unwrap();
            wal.sync().unwrap();
        }
        let path = only_segment(dir.path());
        let full = fs::read(&path).unwrap();
        // Zeros from each sector boundary after the first record (inside
        // the second record's header or body) to the end of the file.
        let first_sector = good_len.div_ceil(SECTOR as u64) as usize * SECTOR;
        assert!(first_sector < good_len as usize + HEADER);
        for from in (first_sector..full.len()).step_by(SECTOR) {
            let mut torn = full.clone();
            torn[from..].fill(0);
            fs::write(&path, &torn).unwrap();
            let (_, state) = Wal::open(dir.path()).unwrap();
            assert_eq!(state.entries.len(), 1, "zeros from {from}");
            assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
        }
        // Garbage instead of zeros in the last sector is not a torn write.
        let mut garbage = full.clone();
        let last_sector = (full.len() - 1) / SECTOR * SECTOR;
        for (i, byte) in garbage[last_sector..].iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(37) | 1;
        }
        fs::write(&path, &garbage).unwrap();
        assert!(matches!(
            Wal::open(dir.path()),
            Err(WalError::Corrupt { .. })
        ));
    }

    #[test]
    fn corruption_in_the_middle_stops_the_node() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            let records: Vec<_> = (1..=3)
                .map(|i| WalRecord::Entry(entry(i, 1, b"payload")))
                .collect();
            wal.append(&records).unwrap();
            wal.sync().unwrap();
        }
        let path = only_segment(dir.path());
        let pristine = fs::read(&path).unwrap();
        // Flip one byte in the first record's payload, then in its header.
        for at in [HEADER + 2, 1] {
            let mut bytes = pristine.clone();
            bytes[at] ^= 0x10;
            fs::write(&path, &bytes).unwrap();
            let err = Wal::open(dir.path())
                .err()
                .expect("corruption must be refused");
            let message = err.to_string();
            assert!(message.contains("corrupt"), "{message}");
            assert!(message.contains("at byte 0"), "{message}");
        }
    }

    #[test]
    fn rotation_and_release_keep_the_hard_state() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&[
                WalRecord::HardState(hard_state(4, 2, 3)),
                WalRecord::Entry(entry(1, 4, b"a")),
                WalRecord::Entry(entry(2, 4, b"b")),
                WalRecord::Entry(entry(3, 4, b"c")),
            ])
            .unwrap();
            wal.sync().unwrap();
            wal.release_up_to(1).unwrap();
            // The first segment holds entry 3 > 1, so it stays.
            assert_eq!(wal.segment_count(), 2);
            wal.append(&[WalRecord::Entry(entry(4, 4, b"d"))]).unwrap();
            wal.sync().unwrap();
            wal.release_up_to(3).unwrap();
            assert_eq!(wal.segment_count(), 2);
        }
        let (_, state) = Wal::open(dir.path()).unwrap();
        assert_eq!(state.hard_state, hard_state(4, 2, 3));
        assert_eq!(state.entries.len(), 1);
        assert_eq!(state.entries[0].index, 4);
    }

    /// Power-loss tests: random appends, syncs, rotations and releases on
    /// the simulated file system of `engines::durable_io`, the power cut at
    /// a random operation, and a crash that keeps only what was synced plus
    /// any prefix of the rest, with a possibly zero-filled last page.
    mod power_loss {
        use super::*;
        use engines::durable_io::{SimIo, TornTail};
        use proptest::prelude::*;

        /// Small segments, so appends rotate and releases delete files.
        const SEGMENT: u64 = 600;

        #[derive(Debug, Clone)]
        enum Step {
            /// Entries from `back` indexes before the next one (a new leader
            /// overwriting a conflicting suffix when `back > 0`), then maybe
            /// a hard state.
            Append {
                back: u64,
                count: u64,
                size: usize,
                hard_state: bool,
            },
            Sync,
            /// Release up to `back` indexes before the last.
            Release {
                back: u64,
            },
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                5 => (0u64..3, 1u64..4, 0usize..300, any::<bool>()).prop_map(
                    |(back, count, size, hard_state)| Step::Append {
                        back,
                        count,
                        size,
                        hard_state,
                    }
                ),
                3 => Just(Step::Sync),
                1 => (0u64..6).prop_map(|back| Step::Release { back }),
            ]
        }

        fn replay(records: &[WalRecord]) -> WalState {
            let mut state = WalState::default();
            for record in records {
                state.apply(record.clone());
            }
            state
        }

        fn same(a: &Entry, b: &Entry) -> bool {
            (a.index, a.term, &a.data) == (b.index, b.term, &b.data)
        }

        /// Whether `got` is what replaying `expected`'s records gives, up
        /// to released entries: its entries are a suffix of the expected
        /// log holding every entry above `floor`.
        fn matches(got: &WalState, expected: &WalState, floor: u64) -> bool {
            let needed = expected.entries.iter().filter(|e| e.index > floor).count();
            got.hard_state == expected.hard_state
                && got.entries.len() >= needed
                && got.entries.len() <= expected.entries.len()
                && got
                    .entries
                    .iter()
                    .zip(&expected.entries[expected.entries.len() - got.entries.len()..])
                    .all(|(a, b)| same(a, b))
        }

        fn run(steps: Vec<Step>, cut: Option<u64>, seed: u64) -> Result<(), TestCaseError> {
            let dir = Path::new("/sim/wal");
            let io = SimIo::new();
            let (mut wal, _) = Wal::open_with(dir, Arc::new(io.clone()), SEGMENT).unwrap();
            if let Some(cut) = cut {
                io.power_off_after(cut);
            }
            let mut records: Vec<WalRecord> = Vec::new();
            let mut synced = 0;
            let (mut last, mut term, mut floor) = (0u64, 1u64, 0u64);
            for step in &steps {
                let result = match step {
                    Step::Append {
                        back,
                        count,
                        size,
                        hard_state: with_hard_state,
                    } => {
                        let first = (last + 1).saturating_sub(*back).max(floor + 1);
                        if first <= last {
                            term += 1;
                        }
                        let mut batch = Vec::new();
                        for index in first..first + count {
                            let data = vec![(index + term) as u8; *size];
                            batch.push(WalRecord::Entry(entry(index, term, &data)));
                        }
                        last = first + count - 1;
                        if *with_hard_state {
                            batch.push(WalRecord::HardState(hard_state(term, 1, last / 2)));
                        }
                        records.extend(batch.iter().cloned());
                        wal.append(&batch)
                    }
                    Step::Sync => wal.sync().map(|()| synced = records.len()),
                    Step::Release { back } => {
                        let index = last.saturating_sub(*back).max(floor);
                        // Even a release the power cut may have removed
                        // segments up to `index`.
                        floor = index;
                        wal.release_up_to(index).map(|_| synced = records.len())
                    }
                };
                if let Err(error) = result {
                    prop_assert!(io.powered_off(), "failed without a power cut: {error}");
                    break;
                }
            }
            drop(wal);

            let after = io.crash(seed, TornTail::Zeros);
            let (mut wal, state) = match Wal::open_with(dir, Arc::new(after.clone()), SEGMENT) {
                Ok(opened) => opened,
                Err(error) => {
                    return Err(TestCaseError::fail(format!(
                        "recovery refused a state a crash can leave: {error}"
                    )));
                }
            };
            let found =
                (synced..=records.len()).find(|k| matches(&state, &replay(&records[..*k]), floor));
            prop_assert!(
                found.is_some(),
                "recovered {} entries (last {:?}), hard state {:?}: no prefix of the {} \
                 appended records from the {} synced ones on replays to that",
                state.entries.len(),
                state.entries.last().map(|e| (e.index, e.term)),
                state.hard_state,
                records.len(),
                synced
            );

            // Recovery's cut is durable, and a record synced after it
            // survives the next crash.
            let next = state.entries.last().map_or(floor, |e| e.index) + 1;
            let marker = entry(next, term + 1, b"after recovery");
            wal.append(&[WalRecord::Entry(marker.clone())]).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let again = after.crash(seed ^ 0x5eed, TornTail::Zeros);
            let (_, state2) = Wal::open_with(dir, Arc::new(again), SEGMENT).unwrap();
            prop_assert!(
                state2.entries.last().is_some_and(|e| same(e, &marker)),
                "the record synced after recovery was lost"
            );
            prop_assert_eq!(state2.entries.len(), state.entries.len() + 1);
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

            #[test]
            fn synced_records_and_the_hard_state_survive_power_loss(
                steps in prop::collection::vec(step(), 1..40),
                cut in prop::option::weighted(0.8, 0u64..200),
                seed in any::<u64>(),
            ) {
                run(steps, cut, seed)?;
            }
        }
    }
}
