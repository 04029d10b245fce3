//! The export stream: the whole key space of an engine as bytes, the unit of
//! Raft snapshots and backups.
//!
//! The format is engine-neutral, so a backup taken from rocksdb restores into
//! bitcask. It is a header followed by records and a trailer:
//!
//! ```text
//! header:  b"METCDEXP" | version u8 (=1) | source kind length u8 | source kind name
//! pair:    0x01 | key length u32 LE | value length u32 LE | key | value | crc32 u32 LE
//! trailer: 0xFF | pair count u64 LE | crc32 u32 LE
//! ```
//!
//! Each record's CRC-32 (Castagnoli is not needed here; `crc32fast`'s IEEE
//! polynomial) covers every byte of the record before it, tag included. The
//! trailer carries the number of pairs, so a stream cut exactly at a record
//! boundary is still detected as truncated. Pairs are written in ascending
//! key order; the reader checks that too, since a snapshot that is not sorted
//! was not written by us.

use std::io::{Read, Write};

use crate::error::{EngineError, IoContext, Result};
use crate::kind::EngineKind;

const MAGIC: &[u8; 8] = b"METCDEXP";
const VERSION: u8 = 1;
const TAG_PAIR: u8 = 0x01;
const TAG_END: u8 = 0xFF;
/// Keys and values above this are refused on read: no engine here accepts
/// anything near it, so a larger length means a corrupt stream, and refusing
/// it keeps a corrupt length from allocating gigabytes.
const MAX_FIELD: u32 = 1 << 30;

/// Writes an export stream.
pub struct ExportWriter<'a> {
    out: &'a mut dyn Write,
    pairs: u64,
}

impl<'a> ExportWriter<'a> {
    pub fn new(out: &'a mut dyn Write, source: EngineKind) -> Result<Self> {
        let name = source.name().as_bytes();
        let mut header = Vec::with_capacity(MAGIC.len() + 2 + name.len());
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.push(name.len() as u8);
        header.extend_from_slice(name);
        out.write_all(&header)
            .context(|| "writing export header".to_string())?;
        Ok(ExportWriter { out, pairs: 0 })
    }

    pub fn write_pair(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let too_big = |what: &str, len: usize| {
            EngineError::InvalidArgument(format!(
                "{what} of {len} bytes cannot be exported; the limit is {MAX_FIELD} bytes"
            ))
        };
        let key_len = u32::try_from(key.len())
            .ok()
            .filter(|l| *l <= MAX_FIELD)
            .ok_or_else(|| too_big("key", key.len()))?;
        let value_len = u32::try_from(value.len())
            .ok()
            .filter(|l| *l <= MAX_FIELD)
            .ok_or_else(|| too_big("value", value.len()))?;
        let mut head = [0u8; 9];
        head[0] = TAG_PAIR;
        head[1..5].copy_from_slice(&key_len.to_le_bytes());
        head[5..9].copy_from_slice(&value_len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(key);
        crc.update(value);
        let write = |out: &mut dyn Write| -> std::io::Result<()> {
            out.write_all(&head)?;
            out.write_all(key)?;
            out.write_all(value)?;
            out.write_all(&crc.clone().finalize().to_le_bytes())
        };
        write(self.out).context(|| "writing export record".to_string())?;
        self.pairs += 1;
        Ok(())
    }

    /// Writes the trailer and returns the number of pairs written.
    pub fn finish(self) -> Result<u64> {
        let mut trailer = [0u8; 13];
        trailer[0] = TAG_END;
        trailer[1..9].copy_from_slice(&self.pairs.to_le_bytes());
        let crc = crc32fast::hash(&trailer[..9]);
        trailer[9..13].copy_from_slice(&crc.to_le_bytes());
        self.out
            .write_all(&trailer)
            .and_then(|_| self.out.flush())
            .context(|| "writing export trailer".to_string())?;
        Ok(self.pairs)
    }
}

/// Reads and verifies an export stream.
pub struct ExportReader<'a> {
    input: &'a mut dyn Read,
    source: String,
    offset: u64,
}

impl<'a> ExportReader<'a> {
    pub fn new(input: &'a mut dyn Read) -> Result<Self> {
        let mut reader = ExportReader {
            input,
            source: String::new(),
            offset: 0,
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic, "header")?;
        if &magic != MAGIC {
            return Err(reader.corrupt("not a metcd export stream (bad magic bytes)"));
        }
        let mut version_and_len = [0u8; 2];
        reader.read_exact(&mut version_and_len, "header")?;
        if version_and_len[0] != VERSION {
            return Err(reader.corrupt(&format!(
                "export format version {} is not supported; this build reads version {VERSION}",
                version_and_len[0]
            )));
        }
        let mut name = vec![0u8; version_and_len[1] as usize];
        reader.read_exact(&mut name, "header")?;
        reader.source = String::from_utf8_lossy(&name).into_owned();
        Ok(reader)
    }

    /// The engine kind that wrote the stream, as recorded in its header.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The next pair, or `None` after a valid trailer.
    pub fn next_pair(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut tag = [0u8; 1];
        self.read_exact(&mut tag, "record tag")?;
        match tag[0] {
            TAG_PAIR => {
                let mut lens = [0u8; 8];
                self.read_exact(&mut lens, "record header")?;
                let key_len = u32::from_le_bytes([lens[0], lens[1], lens[2], lens[3]]);
                let value_len = u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]);
                if key_len > MAX_FIELD || value_len > MAX_FIELD {
                    return Err(self.corrupt("record length beyond the 1 GiB limit"));
                }
                let mut key = vec![0u8; key_len as usize];
                let mut value = vec![0u8; value_len as usize];
                self.read_exact(&mut key, "key")?;
                self.read_exact(&mut value, "value")?;
                let mut crc_bytes = [0u8; 4];
                self.read_exact(&mut crc_bytes, "checksum")?;
                let mut crc = crc32fast::Hasher::new();
                crc.update(&tag);
                crc.update(&lens);
                crc.update(&key);
                crc.update(&value);
                if crc.finalize() != u32::from_le_bytes(crc_bytes) {
                    return Err(self.corrupt("record checksum mismatch"));
                }
                Ok(Some((key, value)))
            }
            TAG_END => Ok(None),
            other => Err(self.corrupt(&format!("unknown record tag {other:#04x}"))),
        }
    }

    /// Reads every pair and verifies order, checksums and the trailer.
    pub fn read_all(mut self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        while let Some((key, value)) = self.next_pair()? {
            if let Some((previous, _)) = pairs.last()
                && previous >= &key
            {
                return Err(self.corrupt("keys are not in ascending order"));
            }
            pairs.push((key, value));
        }
        let mut rest = [0u8; 12];
        self.read_exact(&mut rest, "trailer")?;
        let count = u64::from_le_bytes(rest[0..8].try_into().unwrap_or_default());
        let mut trailer = [0u8; 9];
        trailer[0] = TAG_END;
        trailer[1..9].copy_from_slice(&rest[0..8]);
        let crc = u32::from_le_bytes(rest[8..12].try_into().unwrap_or_default());
        if crc32fast::hash(&trailer) != crc {
            return Err(self.corrupt("trailer checksum mismatch"));
        }
        if count != pairs.len() as u64 {
            return Err(self.corrupt(&format!(
                "trailer says {count} pairs but the stream holds {}",
                pairs.len()
            )));
        }
        Ok(pairs)
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.corrupt(&format!("stream ends inside the {what} (truncated)")))
            }
            Err(e) => Err(EngineError::io(
                format!("reading export stream at byte {}", self.offset),
                e,
            )),
        }
    }

    fn corrupt(&self, reason: &str) -> EngineError {
        EngineError::Corrupt {
            file: "<export stream>".into(),
            offset: self.offset,
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = ExportWriter::new(&mut out, EngineKind::Redb).unwrap();
        w.write_pair(b"a", b"1").unwrap();
        w.write_pair(b"b", b"").unwrap();
        w.write_pair(b"c\xff", &[0u8; 300]).unwrap();
        assert_eq!(w.finish().unwrap(), 3);
        out
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let mut input = bytes.as_slice();
        let reader = ExportReader::new(&mut input).unwrap();
        assert_eq!(reader.source(), "redb");
        let pairs = reader.read_all().unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[1], (b"b".to_vec(), vec![]));
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let mut input = &bytes[..cut];
            let result = ExportReader::new(&mut input).and_then(|r| r.read_all());
            assert!(result.is_err(), "cut at {cut} was accepted");
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = sample();
        for at in 0..bytes.len() {
            let mut copy = bytes.clone();
            copy[at] ^= 0x40;
            let mut input = copy.as_slice();
            let result = ExportReader::new(&mut input).and_then(|r| r.read_all());
            // A flip in the recorded source name changes only the label.
            if (10..10 + "redb".len()).contains(&at) {
                continue;
            }
            assert!(result.is_err(), "flip at {at} was accepted");
        }
    }
}
