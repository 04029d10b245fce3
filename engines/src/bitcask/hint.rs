//! Hint files: a merged data file's key directory, so start-up need not read
//! its values.
//!
//! A merge writes `NNNNNNNNNN.hint` next to each data file it rewrites. The
//! hint lists every record of the data file in order, without values:
//!
//! ```text
//! header:  b"BCHINT01" | data file length u64 | entry count u64
//! entry:   seq u64 | tombstone u8 (0 or 1) | offset u64 | value length u32
//!          | key length u32 | key
//! trailer: CRC-32 of every byte before it, u32
//! ```
//!
//! (integers little-endian). A hint is derived data: when it is missing,
//! damaged, or was written for another version of its data file (the data
//! file's length differs from the one recorded), start-up ignores it and
//! scans the data file instead, which is always correct, only slower.

use std::path::{Path, PathBuf};

use super::log::LogEntry;
use super::record::{MAX_FIELD_LEN, RecordKind};
use crate::durable_io::{DurableIo, OpenMode};
use crate::error::{IoContext, Result};

const MAGIC: &[u8; 8] = b"BCHINT01";
const HEADER_LEN: usize = 8 + 8 + 8;
const ENTRY_FIXED_LEN: usize = 8 + 1 + 8 + 4 + 4;

/// The hint file of data file `id`.
pub fn hint_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:010}.hint"))
}

// ANCHOR: hint
/// Writes the hint for a data file of `data_len` bytes holding `entries`
/// (puts and tombstones, in file order) to `path`, and fsyncs it.
pub fn write_hint(
    io: &dyn DurableIo,
    path: &Path,
    data_len: u64,
    entries: &[LogEntry],
) -> Result<()> {
    // Hints hold keys but no values, so building one in memory is cheap.
    let mut bytes = Vec::with_capacity(HEADER_LEN + entries.len() * (ENTRY_FIXED_LEN + 16) + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&data_len.to_le_bytes());
    bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for entry in entries {
        bytes.extend_from_slice(&entry.seq.to_le_bytes());
        bytes.push(u8::from(entry.kind == RecordKind::Tombstone));
        bytes.extend_from_slice(&entry.offset.to_le_bytes());
        bytes.extend_from_slice(&entry.value_len.to_le_bytes());
        bytes.extend_from_slice(&(entry.key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&entry.key);
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    io.open(path, OpenMode::Truncate)
        .and_then(|file| {
            file.write_at(0, &bytes)?;
            file.fsync()
        })
        .context(|| format!("cannot write {}", path.display()))
}
// ANCHOR_END: hint

/// The entries of the hint at `path` if it exists, is intact and describes
/// a data file of `data_len` bytes; `None` otherwise (the caller scans the
/// data file). Only an I/O error other than "not found" is an error.
pub fn read_hint(io: &dyn DurableIo, path: &Path, data_len: u64) -> Result<Option<Vec<LogEntry>>> {
    let bytes = match io.read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(crate::EngineError::io(
                format!("cannot read {}", path.display()),
                e,
            ));
        }
    };
    let entries = parse(&bytes, data_len);
    if entries.is_none() {
        tracing::warn!(
            hint = %path.display(),
            "bitcask hint file is damaged or stale; scanning its data file instead"
        );
    }
    Ok(entries)
}

/// A cursor that fails (returns `None`) instead of reading past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
}

fn parse(bytes: &[u8], data_len: u64) -> Option<Vec<LogEntry>> {
    let body_len = bytes.len().checked_sub(4)?;
    let (body, trailer) = bytes.split_at(body_len);
    if body.len() < HEADER_LEN
        || crc32fast::hash(body) != u32::from_le_bytes(trailer.try_into().ok()?)
    {
        return None;
    }
    let mut cursor = Cursor { bytes: body, at: 0 };
    if cursor.take(8)? != MAGIC || cursor.u64()? != data_len {
        return None;
    }
    let count = cursor.u64()?;
    // Each entry takes at least its fixed part, which bounds a corrupt count.
    if count > (body.len() / ENTRY_FIXED_LEN) as u64 {
        return None;
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let seq = cursor.u64()?;
        let kind = match cursor.u8()? {
            0 => RecordKind::Put,
            1 => RecordKind::Tombstone,
            _ => return None,
        };
        let offset = cursor.u64()?;
        let value_len = cursor.u32()?;
        let key_len = cursor.u32()?;
        if key_len > MAX_FIELD_LEN || value_len > MAX_FIELD_LEN {
            return None;
        }
        let key = cursor.take(key_len as usize)?.to_vec();
        let entry = LogEntry {
            offset,
            seq,
            kind,
            key,
            value_len,
        };
        if entry.offset + entry.record_len() > data_len {
            return None;
        }
        entries.push(entry);
    }
    (cursor.at == body.len()).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable_io::RealIo;

    fn sample() -> Vec<LogEntry> {
        vec![
            LogEntry {
                offset: 0,
                seq: 5,
                kind: RecordKind::Put,
                key: b"alpha".to_vec(),
                value_len: 3,
            },
            LogEntry {
                offset: 33,
                seq: 9,
                kind: RecordKind::Tombstone,
                key: b"\x00\xff".to_vec(),
                value_len: 0,
            },
        ]
    }

    #[test]
    fn round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let path = hint_path(tmp.path(), 4);
        write_hint(&RealIo, &path, 100, &sample()).unwrap();
        assert_eq!(read_hint(&RealIo, &path, 100).unwrap(), Some(sample()));
    }

    #[test]
    fn stale_damaged_or_missing_hints_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let path = hint_path(tmp.path(), 4);
        assert_eq!(read_hint(&RealIo, &path, 100).unwrap(), None);
        write_hint(&RealIo, &path, 100, &sample()).unwrap();
        assert_eq!(
            read_hint(&RealIo, &path, 99).unwrap(),
            None,
            "written for another length"
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_hint(&RealIo, &path, 100).unwrap(), None, "damaged");
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(read_hint(&RealIo, &path, 100).unwrap(), None, "truncated");
    }
}
