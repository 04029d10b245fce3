//! A data file: the append-only log of records, its readers, and the scan
//! that recovers it at start-up.
//!
//! Every data file is named `NNNNNNNNNN.data` after its id. The file with the
//! highest id is the *active* file, the only one ever appended to; all the
//! others are immutable until a merge rewrites them. Readers never share the
//! writer's handle: each file has one read-only [`DataFile`] handle used with
//! positional reads (`pread(2)` through `FileExt::read_at`), which need no
//! seek position and no lock, so any number of readers run at the same time
//! as the writer.
//!
//! The scan in [`scan_data_file`] is where torn writes are told apart from
//! corruption; see the rules on that function.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::record::{self, Decoded, HEADER_LEN, RecordKind};
use crate::durable_io::{DurableFile, DurableIo, OpenMode};
use crate::error::{EngineError, IoContext, Result};

pub const DATA_SUFFIX: &str = ".data";

/// The path of data file `id` in `dir`.
pub fn data_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:010}{DATA_SUFFIX}"))
}

/// The id of a data file name, or `None` for any other name.
pub fn parse_data_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(DATA_SUFFIX)?;
    if digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Ids of the data files in `dir`, ascending.
pub fn list_data_files(io: &dyn DurableIo, dir: &Path) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = io
        .list(dir)
        .context(|| format!("cannot list {}", dir.display()))?
        .iter()
        .filter_map(|name| parse_data_name(name))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// fsync of the bitcask directory: what makes a created, renamed or removed
/// file name durable.
pub fn sync_dir(io: &dyn DurableIo, dir: &Path) -> Result<()> {
    io.sync_dir(dir)
        .context(|| format!("cannot fsync directory {}", dir.display()))
}

/// A read-only handle on one data file, shared by every reader.
#[derive(Debug)]
pub struct DataFile {
    pub id: u64,
    pub path: PathBuf,
    file: Box<dyn DurableFile>,
    /// Bytes in the file: fixed for an immutable file, growing for the
    /// active one (the writer updates it after each append).
    len: AtomicU64,
}

impl DataFile {
    pub fn open(io: &dyn DurableIo, id: u64, path: PathBuf) -> Result<Arc<DataFile>> {
        let file = io
            .open(&path, OpenMode::Read)
            .context(|| format!("cannot open {}", path.display()))?;
        let len = file
            .len()
            .context(|| format!("cannot stat {}", path.display()))?;
        Ok(Arc::new(DataFile {
            id,
            path,
            file,
            len: AtomicU64::new(len),
        }))
    }

    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Reads exactly `len` bytes at `offset`.
    pub fn read_exact_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        match self.file.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            // The key directory only points at records that were written,
            // so a file that ends too soon was cut behind our back.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.corrupt(offset, format!("the file ends inside a {len}-byte record")))
            }
            Err(e) => Err(EngineError::io(
                format!("cannot read {} at offset {offset}", self.path.display()),
                e,
            )),
        }
    }

    /// The whole file, for recovery and merge.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        let len = self
            .file
            .len()
            .context(|| format!("cannot stat {}", self.path.display()))?;
        self.read_exact_at(0, len as usize)
    }

    pub fn corrupt(&self, offset: u64, reason: impl Into<String>) -> EngineError {
        EngineError::Corrupt {
            file: self.path.clone(),
            offset,
            reason: reason.into(),
        }
    }
}

/// The active file as the writer sees it: the append handle and the shared
/// read handle of the same file.
#[derive(Debug)]
pub struct ActiveLog {
    writer: Box<dyn DurableFile>,
    pub reader: Arc<DataFile>,
    len: u64,
}

impl ActiveLog {
    /// Opens data file `id` for appending, creating it (empty) if needed.
    /// The caller fsyncs the directory when the file is new.
    pub fn open(io: &dyn DurableIo, dir: &Path, id: u64) -> Result<ActiveLog> {
        let path = data_path(dir, id);
        let writer = io
            .open(&path, OpenMode::Append)
            .context(|| format!("cannot open {} for appending", path.display()))?;
        let reader = DataFile::open(io, id, path)?;
        let len = reader.len();
        Ok(ActiveLog {
            writer,
            reader,
            len,
        })
    }

    pub fn id(&self) -> u64 {
        self.reader.id
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    // ANCHOR: append
    /// Appends already encoded records in one `write(2)` sequence and returns
    /// the offset they start at. On failure the file is cut back to where it
    /// was, so a half-written batch never stays behind a live engine; if even
    /// that fails the error says so and the engine stops writing.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        let offset = self.len;
        if let Err(error) = self.writer.append(bytes) {
            let path = &self.reader.path;
            return Err(match self.writer.set_len(offset) {
                Ok(()) => EngineError::io(format!("cannot append to {}", path.display()), error),
                Err(undo) => EngineError::io(
                    format!(
                        "cannot append to {} ({error}), nor cut it back to {offset} bytes",
                        path.display()
                    ),
                    undo,
                ),
            });
        }
        self.len += bytes.len() as u64;
        self.reader.len.store(self.len, Ordering::Release);
        Ok(offset)
    }
    // ANCHOR_END: append

    /// `fdatasync(2)`: the appended bytes (and the file size) are on disk.
    pub fn sync(&self) -> Result<()> {
        self.writer
            .fdatasync()
            .context(|| format!("cannot fdatasync {}", self.reader.path.display()))
    }
}

/// One record found by a scan or listed in a hint file: everything the key
/// directory needs, without the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub offset: u64,
    pub seq: u64,
    pub kind: RecordKind,
    pub key: Vec<u8>,
    pub value_len: u32,
}

impl LogEntry {
    pub fn record_len(&self) -> u64 {
        record::encoded_len(self.key.len(), self.value_len as usize)
    }
}

/// What a scan of one data file found.
#[derive(Debug)]
pub struct ScannedFile {
    /// Committed records in file order, commit records included (the key
    /// directory counts them as dead bytes).
    pub entries: Vec<LogEntry>,
    /// Bytes of valid records: where the file ends, or must be cut.
    pub valid_len: u64,
    /// Why the file must be cut back to `valid_len`, when it must.
    pub torn: Option<&'static str>,
}

// ANCHOR: scan
/// Reads every record of a data file and decides what its end means.
///
/// The rules:
/// * a record that decodes is taken; batch records are held back until their
///   commit record arrives;
/// * when decoding fails at offset `x` and the bytes from `x` on look like
///   the remains of the last append (a prefix of a record, possibly followed
///   by zeros to the end of the file; see [`torn_tail`]), they are a torn
///   tail. In the newest file that is expected after a crash and the caller
///   cuts the file back; in an older file it cannot happen (files are
///   fsynced before the next one is created), so it is corruption;
/// * otherwise non-zero data follows the damage: valid records (the damage
///   is in the middle of acknowledged data) or garbage. Either way it is
///   corruption, reported with the file and offset, never skipped;
/// * batch records with no commit record at the end of the file are a batch
///   the crash interrupted: the tail is cut back to the batch's first record,
///   so the batch is all-or-nothing.
pub fn scan_data_file(file: &DataFile, newest: bool) -> Result<ScannedFile> {
    let bytes = file.read_all()?;
    let mut entries = Vec::new();
    let mut batch: Vec<LogEntry> = Vec::new();
    let mut batch_start = 0u64;
    let mut offset = 0usize;
    let mut torn = None;
    while offset < bytes.len() {
        let (record, len) = match record::decode(&bytes[offset..]) {
            Decoded::Record(record, len) => (record, len),
            Decoded::Incomplete | Decoded::Invalid(_) => match torn_tail(&bytes, offset) {
                Ok(kind) => {
                    torn = Some(kind);
                    break;
                }
                Err(reason) => return Err(file.corrupt(offset as u64, reason)),
            },
        };
        let entry = LogEntry {
            offset: offset as u64,
            seq: record.seq,
            kind: record.kind,
            key: record.key.to_vec(),
            value_len: record.value.len() as u32,
        };
        match (record.kind, record.in_batch) {
            (RecordKind::Commit, _) => {
                let expected = <[u8; 4]>::try_from(record.value)
                    .ok()
                    .map(u32::from_le_bytes);
                if expected != Some(batch.len() as u32) || batch.is_empty() {
                    return Err(file.corrupt(
                        offset as u64,
                        format!(
                            "commit record for a batch of {:?} records follows {} batch records",
                            expected,
                            batch.len()
                        ),
                    ));
                }
                entries.append(&mut batch);
                entries.push(entry);
            }
            (_, true) => {
                if batch.is_empty() {
                    batch_start = offset as u64;
                }
                batch.push(entry);
            }
            (_, false) => {
                if !batch.is_empty() {
                    return Err(
                        file.corrupt(offset as u64, "a single write inside an uncommitted batch")
                    );
                }
                entries.push(entry);
            }
        }
        offset += len;
    }
    let mut valid_len = offset as u64;
    if !batch.is_empty() {
        valid_len = batch_start;
        torn = torn.or(Some(
            "batch without its commit record at the end of the file",
        ));
    }
    if let Some(reason) = torn
        && !newest
    {
        return Err(file.corrupt(
            valid_len,
            format!("{reason} in a file that is not the newest"),
        ));
    }
    Ok(ScannedFile {
        entries,
        valid_len,
        torn,
    })
}
// ANCHOR_END: scan

/// Decides whether the undecodable bytes from `at` to the end of the file
/// are what a crash leaves of the last append, and says why not if not.
///
/// A write cut short by a crash leaves a prefix of the bytes we wrote,
/// possibly followed by zeros up to the end of the file (when the file's new
/// size reached the disk before its data). So, with `zeros_from` the start
/// of the run of zeros that ends the file:
/// * fewer bytes than a header remain: cut inside the header;
/// * the header is valid but the record runs past the end of the file, or
///   everything after some point inside the record is zeros: cut inside
///   the body (a bit flip inside the very last record looks the same, and
///   is treated the same);
/// * the header fails its checks but everything after some point inside it
///   is zeros: cut inside the header, then zero-filled.
///
/// Anything else (non-zero bytes after a broken record) is corruption:
/// valid records, or garbage, follow the damage.
fn torn_tail(bytes: &[u8], at: usize) -> std::result::Result<&'static str, String> {
    let rest = &bytes[at..];
    let zeros_from = at
        + rest
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |last| last + 1);
    if zeros_from == at {
        return Ok("zeroed tail after the last complete record");
    }
    if rest.len() < HEADER_LEN {
        return Ok("partial record header at the end of the file");
    }
    let (end, reason) = match record::declared_len(rest) {
        Some(len) => (at + len, "record checksum mismatch"),
        None => match record::decode(rest) {
            Decoded::Invalid(reason) => (at + HEADER_LEN, reason),
            _ => (at + HEADER_LEN, "invalid record header"),
        },
    };
    if end >= bytes.len() || zeros_from <= end {
        return Ok("partial record at the end of the file");
    }
    Err(format!(
        "{reason}; non-zero bytes follow the damaged record up to byte {zeros_from}, \
         so this is not a torn last write"
    ))
}

/// Cuts a torn tail off the newest data file and makes the cut durable.
pub fn truncate_torn_tail(io: &dyn DurableIo, path: &Path, len: u64) -> Result<()> {
    let file = io
        .open(path, OpenMode::Write)
        .context(|| format!("cannot open {} to cut its torn tail", path.display()))?;
    file.set_len(len)
        .and_then(|()| file.fsync())
        .context(|| format!("cannot cut {} back to {len} bytes", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcask::record::Record;
    use crate::durable_io::RealIo;
    use std::fs;

    fn put(seq: u64, key: &[u8], value: &[u8], in_batch: bool) -> Vec<u8> {
        let mut out = Vec::new();
        record::encode(
            &Record {
                seq,
                kind: RecordKind::Put,
                in_batch,
                key,
                value,
            },
            &mut out,
        );
        out
    }

    fn write_file(dir: &Path, bytes: &[u8]) -> Arc<DataFile> {
        let path = data_path(dir, 1);
        fs::write(&path, bytes).unwrap();
        DataFile::open(&RealIo, 1, path).unwrap()
    }

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(parse_data_name("0000000007.data"), Some(7));
        assert_eq!(parse_data_name("0000000007.hint"), None);
        assert_eq!(parse_data_name("7.data"), None);
        assert_eq!(parse_data_name("000000000x.data"), None);
        let dir = Path::new("/x");
        assert_eq!(data_path(dir, 12), Path::new("/x/0000000012.data"));
    }

    #[test]
    fn append_then_read_back_at_offsets() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = ActiveLog::open(&RealIo, tmp.path(), 3).unwrap();
        let a = log.append(b"hello").unwrap();
        let b = log.append(b"world!").unwrap();
        assert_eq!((a, b, log.len(), log.reader.len()), (0, 5, 11, 11));
        assert_eq!(log.reader.read_exact_at(5, 6).unwrap(), b"world!");
        assert!(matches!(
            log.reader.read_exact_at(8, 6),
            Err(EngineError::Corrupt { offset: 8, .. })
        ));
    }

    #[test]
    fn uncommitted_batch_tail_is_cut_to_its_start() {
        let tmp = tempfile::tempdir().unwrap();
        let mut bytes = put(1, b"a", b"1", false);
        let single = bytes.len() as u64;
        bytes.extend(put(2, b"b", b"2", true));
        bytes.extend(put(3, b"c", b"3", true));
        let file = write_file(tmp.path(), &bytes);
        let scanned = scan_data_file(&file, true).unwrap();
        assert_eq!(scanned.entries.len(), 1);
        assert_eq!(scanned.valid_len, single);
        assert!(scanned.torn.is_some());
        assert!(matches!(
            scan_data_file(&file, false),
            Err(EngineError::Corrupt { .. })
        ));
    }

    #[test]
    fn garbage_is_corruption_but_a_cut_and_zero_filled_header_is_torn() {
        let tmp = tempfile::tempdir().unwrap();
        let first = put(1, b"a", b"1", false);
        let mut garbage = first.clone();
        garbage.extend((0..64u8).map(|i| i.wrapping_mul(37) | 1));
        let file = write_file(tmp.path(), &garbage);
        match scan_data_file(&file, true) {
            Err(EngineError::Corrupt { offset, .. }) => assert_eq!(offset, first.len() as u64),
            other => panic!("expected corruption, got {other:?}"),
        }

        let second = put(2, b"b", b"2", false);
        let mut torn = first.clone();
        torn.extend_from_slice(&second[..10]);
        torn.extend_from_slice(&[0u8; 100]);
        let file = write_file(tmp.path(), &torn);
        let scanned = scan_data_file(&file, true).unwrap();
        assert_eq!(scanned.valid_len, first.len() as u64);
        assert_eq!(scanned.entries.len(), 1);
    }

    #[test]
    fn damage_before_valid_records_is_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let mut bytes = put(1, b"a", b"1", false);
        let second = bytes.len();
        bytes.extend(put(2, b"b", b"2", false));
        bytes.extend(put(3, b"c", b"3", false));
        bytes[second + HEADER_LEN] ^= 0x40; // the key of the second record
        let file = write_file(tmp.path(), &bytes);
        match scan_data_file(&file, true) {
            Err(EngineError::Corrupt { offset, .. }) => assert_eq!(offset, second as u64),
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}
