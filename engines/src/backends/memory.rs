//! `memory`: a `BTreeMap` behind a reader-writer lock.
//!
//! The baseline every other engine is measured against: no I/O at all, so
//! its latencies show the cost of the harness, the trait and the map itself.
//! Readers share the lock and run in parallel; a writer takes it alone. A
//! write batch is applied under one write lock, so readers never see half of
//! it. Nothing is durable: `WriteOptions::sync` and `sync()` do nothing, and
//! the data is gone when the process ends.
//!
//! Why not a concurrent skip list? A `BTreeMap` under an uncontended
//! `RwLock` reads in tens of nanoseconds, and on the two-core machines this
//! workbench targets, lock contention is not what limits a benchmark; the
//! simpler structure is also the clearer lesson.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::engine::{
    BatchOp, Engine, EngineStatus, KeyRange, Pair, WriteBatch, WriteOptions, check_batch, check_key,
};
use crate::error::Result;
use crate::kind::EngineKind;

#[derive(Default)]
pub struct MemoryEngine {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryEngine {
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave the map half-written
    // (BTreeMap operations complete or unwind before mutating), so a
    // poisoned lock is safe to keep using.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine for MemoryEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Memory
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read().get(key).cloned())
    }

    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        visit(self.read().get(key).map(Vec::as_slice));
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8], _options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.write().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &[u8], _options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.write().remove(key);
        Ok(())
    }

    fn write_batch(&self, batch: WriteBatch, _options: WriteOptions) -> Result<()> {
        check_batch(&batch)?;
        let mut map = self.write();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { key, value } => {
                    map.insert(key, value);
                }
                BatchOp::Delete { key } => {
                    map.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let map = self.read();
        Ok(map
            .range::<[u8], _>((
                super::bound_slice(&range.start),
                super::bound_slice(&range.end),
            ))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn status(&self) -> Result<EngineStatus> {
        let map = self.read();
        Ok(EngineStatus {
            kind: EngineKind::Memory,
            keys: map.len() as u64,
            logical_bytes: map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
            disk_bytes: 0,
            reclaimable_bytes: Some(0),
        })
    }
}
