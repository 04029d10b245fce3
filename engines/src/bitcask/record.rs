//! The record: the one unit every bitcask data file is made of.
//!
//! A record is a fixed 25-byte header followed by the key and the value. Two
//! checksums guard it. The *header checksum* covers the fixed fields, so the
//! lengths can be trusted before the body is read: a corrupt length can never
//! send recovery off the end of the file or make it allocate gigabytes, and a
//! header can be recognised at any offset, which is how recovery tells a torn
//! tail from a corrupt record that has valid records after it. The *record
//! checksum* covers everything after itself (header checksum, fields, key and
//! value), so a single flipped bit anywhere in the record is caught.
//!
//! Decoding never trusts its input: every failure is a [`Decoded`] variant
//! that says whether more bytes could help (`Incomplete`) or the bytes are
//! wrong (`Invalid`), and the caller decides whether that is a torn tail or
//! corruption.

/// Bytes before the key.
pub const HEADER_LEN: usize = 25;

/// Values larger than this are refused on write (keys are held to the
/// engine contract's much smaller limit), and a header that
/// claims more is corrupt. A gibibyte is far beyond anything metcd stores,
/// and the bound keeps a corrupt length from turning into a huge allocation.
pub const MAX_FIELD_LEN: u32 = 1 << 30;

/// Set in `flags` on every put or tombstone written by a `write_batch`: such
/// records count only once the batch's commit record follows them.
const BATCH_BIT: u8 = 0x80;
const KIND_MASK: u8 = 0x03;

/// What a record says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// The key now has this value.
    Put,
    /// The key is deleted (a tombstone; the value is empty).
    Tombstone,
    /// The batch records just before this one are committed. The key is
    /// empty and the value is the number of records in the batch (u32 LE).
    Commit,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            RecordKind::Put => 1,
            RecordKind::Tombstone => 2,
            RecordKind::Commit => 3,
        }
    }

    fn from_code(code: u8) -> Option<RecordKind> {
        match code {
            1 => Some(RecordKind::Put),
            2 => Some(RecordKind::Tombstone),
            3 => Some(RecordKind::Commit),
            _ => None,
        }
    }
}

/// A record borrowed from a buffer (decoding) or from the caller (encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Global write sequence number: strictly increasing in file order.
    pub seq: u64,
    pub kind: RecordKind,
    /// Written by `write_batch`: only valid once a commit record follows.
    pub in_batch: bool,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Bytes a record with these key and value lengths takes on disk.
pub fn encoded_len(key_len: usize, value_len: usize) -> u64 {
    (HEADER_LEN + key_len + value_len) as u64
}

// ANCHOR: record_format
// On-disk layout of one record (all integers little-endian):
//
//   offset  size  field
//   0       4     crc         CRC-32 of bytes 4..end (everything below)
//   4       4     header_crc  CRC-32 of bytes 8..25 (the fixed fields)
//   8       8     seq         write sequence number
//   16      1     flags       bits 0-1 kind (1 put, 2 tombstone, 3 commit),
//                             bit 7 "part of a batch"
//   17      4     key_len
//   21      4     value_len
//   25      key_len    key
//   ..      value_len  value
/// Appends the encoding of `record` to `out`. The caller has checked the
/// lengths against [`MAX_FIELD_LEN`].
pub fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    let mut flags = record.kind.code();
    if record.in_batch {
        flags |= BATCH_BIT;
    }
    out.extend_from_slice(&[0u8; 8]); // both checksums, filled in below
    out.extend_from_slice(&record.seq.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(&(record.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
    out.extend_from_slice(record.key);
    out.extend_from_slice(record.value);
    let header_crc = crc32fast::hash(&out[start + 8..start + HEADER_LEN]);
    out[start + 4..start + 8].copy_from_slice(&header_crc.to_le_bytes());
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}
// ANCHOR_END: record_format

/// The outcome of decoding the bytes at one offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, verified record and the bytes it took.
    Record(Record<'a>, usize),
    /// The buffer ends before the record does (its header, if complete, is
    /// valid): a torn write if this is the end of the file.
    Incomplete,
    /// The bytes are not a valid record; the reason says which check failed.
    Invalid(&'static str),
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// The fixed fields of a header whose checksum holds.
struct Header {
    kind: RecordKind,
    in_batch: bool,
    key_len: usize,
    value_len: usize,
}

/// Checks the header at the start of `buf` (which holds at least
/// [`HEADER_LEN`] bytes): its checksum first, then that its fields make sense.
fn parse_header(buf: &[u8]) -> Result<Header, &'static str> {
    if crc32fast::hash(&buf[8..HEADER_LEN]) != u32_at(buf, 4) {
        return Err("header checksum mismatch");
    }
    let flags = buf[16];
    let kind = RecordKind::from_code(flags & KIND_MASK).ok_or("unknown record kind")?;
    if flags & !(KIND_MASK | BATCH_BIT) != 0 {
        return Err("unknown record flags");
    }
    let key_len = u32_at(buf, 17);
    let value_len = u32_at(buf, 21);
    if key_len > MAX_FIELD_LEN || value_len > MAX_FIELD_LEN {
        return Err("key or value length beyond the limit");
    }
    Ok(Header {
        kind,
        in_batch: flags & BATCH_BIT != 0,
        key_len: key_len as usize,
        value_len: value_len as usize,
    })
}

// ANCHOR: decode
/// Decodes the record at the start of `buf`, verifying both checksums.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER_LEN {
        return Decoded::Incomplete;
    }
    let header = match parse_header(buf) {
        Ok(header) => header,
        Err(reason) => return Decoded::Invalid(reason),
    };
    let key_end = HEADER_LEN + header.key_len;
    let end = key_end + header.value_len;
    if buf.len() < end {
        return Decoded::Incomplete;
    }
    if crc32fast::hash(&buf[4..end]) != u32_at(buf, 0) {
        return Decoded::Invalid("record checksum mismatch");
    }
    Decoded::Record(
        Record {
            seq: u64_at(buf, 8),
            kind: header.kind,
            in_batch: header.in_batch,
            key: &buf[HEADER_LEN..key_end],
            value: &buf[key_end..end],
        },
        end,
    )
}
// ANCHOR_END: decode

/// The length of the record whose header starts `buf`, if that header is
/// complete and valid (the body is not checked).
pub fn declared_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let header = parse_header(buf).ok()?;
    Some(HEADER_LEN + header.key_len + header.value_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(record: &Record<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(record, &mut out);
        out
    }

    #[test]
    fn round_trip_every_kind() {
        let value = vec![7u8; 5 << 20];
        for (kind, in_batch, key, value) in [
            (RecordKind::Put, false, &b"key"[..], &b"value"[..]),
            (RecordKind::Put, true, &b""[..], &b""[..]),
            (RecordKind::Tombstone, true, &b"\x00\xff"[..], &b""[..]),
            (RecordKind::Commit, false, &b""[..], &3u32.to_le_bytes()[..]),
            (RecordKind::Put, false, &b"big"[..], &value[..]),
        ] {
            let record = Record {
                seq: 42,
                kind,
                in_batch,
                key,
                value,
            };
            let bytes = encoded(&record);
            assert_eq!(bytes.len() as u64, encoded_len(key.len(), value.len()));
            assert_eq!(decode(&bytes), Decoded::Record(record, bytes.len()));
            assert_eq!(declared_len(&bytes), Some(bytes.len()));
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encoded(&Record {
            seq: 1,
            kind: RecordKind::Put,
            in_batch: false,
            key: b"k",
            value: b"v",
        });
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&damaged), Decoded::Record(..)),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = encoded(&Record {
            seq: 9,
            kind: RecordKind::Put,
            in_batch: false,
            key: b"key",
            value: b"value",
        });
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn zeros_are_never_a_record() {
        let zeros = [0u8; 64];
        assert!(matches!(decode(&zeros), Decoded::Invalid(_)));
        assert_eq!(declared_len(&zeros), None);
    }
}
