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
//! * A record cut short at the end of the **last** segment, a last record
//!   whose checksum fails, or a zero-filled tail is what a crash during an
//!   append leaves: it was never acknowledged (its fsync did not return), so
//!   [`Wal::open`] truncates it and carries on.
//! * Anything else that fails to verify (a bad record followed by more data,
//!   or any bad record in an earlier segment) is corruption of data that was
//!   acknowledged: opening fails with [`WalError::Corrupt`] naming the file
//!   and offset, and the node refuses to start rather than serve a log with
//!   a hole in it.
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

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Parses a segment's bytes into records. `last` says whether this is the
/// newest segment, the only one where a torn tail is expected.
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
            let after = &rest[end..];
            if after.iter().all(|b| *b == 0) {
                return torn_or("checksum mismatch in the last record".into());
            }
            return Err(corrupt(pos, "checksum mismatch".into()));
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
    segments: Vec<Segment>,
    writer: BufWriter<File>,
    written: u64,
    hard_state: HardState,
    dirty: bool,
    fsyncs: Arc<AtomicU64>,
    fsync_micros: Arc<AtomicU64>,
}

fn segment_name(sequence: u64) -> String {
    format!("{sequence:016x}.wal")
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing directory {}", dir.display())))
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, replays it, truncates a
    /// torn tail, and returns the log with the state it holds.
    pub fn open(dir: &Path) -> Result<(Wal, WalState), WalError> {
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let mut sequences = Vec::new();
        for item in fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))? {
            let item = item.map_err(io(format!("listing {}", dir.display())))?;
            let name = item.file_name().to_string_lossy().into_owned();
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
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
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
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(format!("opening {} to truncate it", path.display())))?;
                file.set_len(offset)
                    .and_then(|_| file.sync_all())
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
                let file = OpenOptions::new()
                    .append(true)
                    .open(&segment.path)
                    .map_err(io(format!("opening {}", segment.path.display())))?;
                let written = file
                    .metadata()
                    .map_err(io(format!(
                        "reading the size of {}",
                        segment.path.display()
                    )))?
                    .len();
                (BufWriter::new(file), written)
            }
            None => {
                let (segment, file) = Self::create_segment(dir, 0)?;
                segments.push(segment);
                (BufWriter::new(file), 0)
            }
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
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

    fn create_segment(dir: &Path, sequence: u64) -> Result<(Segment, File), WalError> {
        let path = dir.join(segment_name(sequence));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("creating {}", path.display())))?;
        sync_dir(dir)?;
        Ok((
            Segment {
                sequence,
                path,
                max_index: 0,
            },
            file,
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
            if self.written >= SEGMENT_BYTES {
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
            .sync_data()
            .map_err(io("fdatasync of the WAL"))?;
        crate::metrics::WAL_FSYNC.observe(started.elapsed());
        self.fsync_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.dirty = false;
        Ok(())
    }
    // ANCHOR_END: wal_append

    /// Closes the current segment (durably) and starts the next one with the
    /// current hard state, so older segments never hold the only copy of it.
    fn rotate(&mut self) -> Result<(), WalError> {
        self.dirty = true;
        self.sync()?;
        let sequence = self.segments.last().map_or(0, |s| s.sequence + 1);
        let (segment, file) = Self::create_segment(&self.dir, sequence)?;
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
            fs::remove_file(&segment.path)
                .map_err(io(format!("removing {}", segment.path.display())))?;
            released += 1;
        }
        if released > 0 {
            sync_dir(&self.dir)?;
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

    #[test]
    fn a_flipped_bit_in_the_last_record_is_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&[
                WalRecord::Entry(entry(1, 1, b"first")),
                WalRecord::Entry(entry(2, 1, b"second")),
            ])
            .unwrap();
            wal.sync().unwrap();
        }
        let path = only_segment(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let (_, state) = Wal::open(dir.path()).unwrap();
        assert_eq!(state.entries.len(), 1);
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
}
