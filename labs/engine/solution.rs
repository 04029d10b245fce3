//! # The engine lab: one way to pass it
//!
//! A reference answer for `engines/src/student.rs`: copy it over the
//! skeleton (`cp labs/engine/solution.rs engines/src/student.rs`) only after
//! trying your own. It is the smallest design that passes the whole
//! conformance suite and the crash test: an ordered map in memory, rebuilt
//! at open from one append-only log file. (Bitcask, Part I's own engine, is
//! the same idea grown up: many files, a merge, hint files.)
//!
//! ## The file
//!
//! `student.log` starts with an 8-byte magic, then holds frames:
//!
//! ```text
//! frame   = len: u32 LE | crc32(payload): u32 LE | payload (len bytes)
//! payload = op count: u32 LE | op*
//! op      = tag: u8 (1 put, 2 delete) | key len: u32 LE | key | [value len: u32 LE | value]
//! ```
//!
//! A put, a delete and a whole batch are each one frame, written with one
//! `write` call: a batch is atomic across a crash because a frame is
//! either whole (its checksum matches) or torn.
//!
//! ## Invariants
//!
//! * The map holds exactly what the whole frames of the log say.
//! * At open, a bad frame that ends the file is a torn write (the process or
//!   the machine stopped in the middle): it is cut off and writing goes on
//!   after the last whole frame. A bad frame followed by more bytes is
//!   corruption, and opening fails with the offset: data written after it
//!   was acknowledged, so silently dropping it would lose writes.
//! * A file that does not start with the magic is not ours: an error.
//! * `sync` (and every write with `WriteOptions::SYNC`) is one `fdatasync`
//!   of the log; a new file, and the directory entry naming it, are
//!   synced when created.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::RwLock;

use crate::data_dir::sync_dir;
use crate::engine::{
    BatchOp, Engine, EngineStatus, KeyRange, Pair, WriteBatch, WriteOptions, check_batch, check_key,
};
use crate::error::{EngineError, IoContext, Result};
use crate::{DataDir, EngineKind, EngineOptions};

const MAGIC: &[u8; 8] = b"MSTUDNT1";
const LOG: &str = "student.log";
const PUT: u8 = 1;
const DELETE: u8 = 2;

struct State {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    log: File,
}

pub struct StudentEngine {
    dir: DataDir,
    state: RwLock<State>,
}

impl StudentEngine {
    pub fn open(dir: DataDir, _options: &EngineOptions) -> Result<StudentEngine> {
        let path = dir.join(LOG);
        let fresh = !path.exists();
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .context(|| format!("cannot open {}", path.display()))?;
        if fresh {
            log.write_all(MAGIC)
                .and_then(|()| log.sync_all())
                .context(|| format!("cannot create {}", path.display()))?;
            sync_dir(dir.path())?;
        }
        // Appends go to the end whatever the position; reads start here.
        let mut bytes = Vec::new();
        log.seek(SeekFrom::Start(0))
            .and_then(|_| log.read_to_end(&mut bytes))
            .context(|| format!("cannot read {}", path.display()))?;
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(EngineError::Corrupt {
                file: path,
                offset: 0,
                reason: "the file does not start with the student engine's magic".into(),
            });
        }
        let mut map = BTreeMap::new();
        let mut at = MAGIC.len();
        while at < bytes.len() {
            match frame_at(&bytes, at) {
                Some((payload, end)) => {
                    apply(&mut map, payload).ok_or_else(|| EngineError::Corrupt {
                        file: path.clone(),
                        offset: at as u64,
                        reason: "a frame with a valid checksum holds malformed operations".into(),
                    })?;
                    at = end;
                }
                None if torn_tail(&bytes, at) => {
                    // Cut the torn frame off, durably, before appending.
                    log.set_len(at as u64)
                        .and_then(|()| log.sync_all())
                        .context(|| format!("cannot truncate {}", path.display()))?;
                    break;
                }
                None => {
                    return Err(EngineError::Corrupt {
                        file: path,
                        offset: at as u64,
                        reason: "a frame's checksum does not match, and data follows it".into(),
                    });
                }
            }
        }
        Ok(StudentEngine {
            dir,
            state: RwLock::new(State { map, log }),
        })
    }

    fn append(&self, ops: &[BatchOp], options: WriteOptions) -> Result<()> {
        let frame = encode(ops);
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state
            .log
            .write_all(&frame)
            .context(|| "cannot append to the student log".to_string())?;
        if options.sync {
            state
                .log
                .sync_data()
                .context(|| "cannot fdatasync the student log".to_string())?;
        }
        for op in ops {
            match op {
                BatchOp::Put { key, value } => {
                    state.map.insert(key.clone(), value.clone());
                }
                BatchOp::Delete { key } => {
                    state.map.remove(key);
                }
            }
        }
        Ok(())
    }
}

/// The payload of the whole frame at `at`, and where the next one starts.
fn frame_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some((payload, at + 8 + len))
}

/// A frame that cannot be read is a torn write only if it is the last
/// thing in the file: its header is cut short, or its length reaches the
/// end of the file.
fn torn_tail(bytes: &[u8], at: usize) -> bool {
    let Some(header) = bytes.get(at..at + 8) else {
        return true;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    at + 8 + len >= bytes.len()
}

fn encode(ops: &[BatchOp]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        match op {
            BatchOp::Put { key, value } => {
                payload.push(PUT);
                payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
                payload.extend_from_slice(key);
                payload.extend_from_slice(&(value.len() as u32).to_le_bytes());
                payload.extend_from_slice(value);
            }
            BatchOp::Delete { key } => {
                payload.push(DELETE);
                payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
                payload.extend_from_slice(key);
            }
        }
    }
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Applies a frame's operations; `None` if they do not parse.
fn apply(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, payload: &[u8]) -> Option<()> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let slice = payload.get(at..at.checked_add(n)?)?;
        at += n;
        Some(slice)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    for _ in 0..count {
        let tag = take(1)?[0];
        let key_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let key = take(key_len)?.to_vec();
        match tag {
            PUT => {
                let value_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                let value = take(value_len)?.to_vec();
                map.insert(key, value);
            }
            DELETE => {
                map.remove(&key);
            }
            _ => return None,
        }
    }
    Some(())
}

impl Engine for StudentEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Student
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        Ok(state.map.get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        let op = BatchOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.append(&[op], options)
    }

    fn delete(&self, key: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.append(&[BatchOp::Delete { key: key.to_vec() }], options)
    }

    fn write_batch(&self, batch: WriteBatch, options: WriteOptions) -> Result<()> {
        check_batch(&batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        self.append(batch.ops(), options)
    }

    fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>> {
        if range.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        Ok(state
            .map
            .range::<Vec<u8>, _>((range.start.clone(), range.end.clone()))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn sync(&self) -> Result<()> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .log
            .sync_data()
            .context(|| "cannot fdatasync the student log".to_string())
    }

    fn status(&self) -> Result<EngineStatus> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        Ok(EngineStatus {
            kind: EngineKind::Student,
            keys: state.map.len() as u64,
            logical_bytes: state
                .map
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum(),
            disk_bytes: self.dir.disk_usage()?,
            reclaimable_bytes: None,
        })
    }
}
