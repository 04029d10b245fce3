//! # The engine lab: write your own storage engine here
//!
//! This file is the skeleton of the book's engine lab (Part I, "The engine
//! lab"). It compiles and opens, and every operation answers with an error
//! that says it is not written yet. Your job is to replace those errors
//! with an engine that keeps the contract of [`Engine`] (in
//! `engines/src/engine.rs`; the crate's `lib.rs` lists the invariants):
//!
//! * `put`, `delete`, `get`: point operations; keys are 1 to 65,535 bytes
//!   (call [`check_key`]), values any length, empty included.
//! * `write_batch`: all or nothing, for readers and across a crash (call
//!   [`check_batch`]).
//! * `scan`: ascending keys inside a [`KeyRange`], at most `limit`; an
//!   inverted range is empty ([`KeyRange::is_empty`]).
//! * durability: a write with `WriteOptions::SYNC` survives a crash once it
//!   returns, and `sync()` makes every earlier write durable.
//! * reopening the directory gives back everything that was written; a
//!   directory full of garbage is an error at open, never a panic and never
//!   a silently empty store.
//! * `status`: live keys and their bytes, the directory's size on disk.
//!
//! `open` gets a [`DataDir`]: the directory, already created, marked as a
//! `student` engine's and locked against a second process, so you only
//! manage your own files in it (`dir.join("my-file")`).
//!
//! Grade it with `just lab engine`: the conformance suite (the same cases
//! and the same property test against a `BTreeMap` model that grade the
//! project's six engines) and the crash test (a writer killed with SIGKILL
//! over and over; nothing acknowledged may be lost, no batch split). Then
//! measure it beside the others: `just bench write-heavy student,bitcask`.
//! `labs/engine/solution.rs` is one way to pass; read it after trying.

use crate::engine::{Engine, EngineStatus, KeyRange, Pair, WriteBatch, WriteOptions};
#[allow(unused_imports)] // for your code: the contract's input checks
use crate::engine::{check_batch, check_key};
use crate::error::{EngineError, Result};
use crate::{DataDir, EngineKind, EngineOptions};

/// Your engine. Add what it needs: its files, its index, a lock.
pub struct StudentEngine {
    #[allow(dead_code)] // yours to use
    dir: DataDir,
}

impl StudentEngine {
    /// Opens (or creates) the engine in `dir`, rebuilding what was written.
    pub fn open(dir: DataDir, _options: &EngineOptions) -> Result<StudentEngine> {
        Ok(StudentEngine { dir })
    }
}

/// The skeleton's answer to every operation until you write it.
fn not_written(operation: &str) -> EngineError {
    EngineError::Backend {
        engine: EngineKind::Student,
        message: format!(
            "`{operation}` is not written yet: engines/src/student.rs is the engine lab's \
             skeleton; write it, then grade it with `just lab engine`"
        ),
    }
}

impl Engine for StudentEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Student
    }

    fn get(&self, _key: &[u8]) -> Result<Option<Vec<u8>>> {
        Err(not_written("get"))
    }

    fn put(&self, _key: &[u8], _value: &[u8], _options: WriteOptions) -> Result<()> {
        Err(not_written("put"))
    }

    fn delete(&self, _key: &[u8], _options: WriteOptions) -> Result<()> {
        Err(not_written("delete"))
    }

    fn write_batch(&self, _batch: WriteBatch, _options: WriteOptions) -> Result<()> {
        Err(not_written("write_batch"))
    }

    fn scan(&self, _range: &KeyRange, _limit: usize) -> Result<Vec<Pair>> {
        Err(not_written("scan"))
    }

    fn sync(&self) -> Result<()> {
        Err(not_written("sync"))
    }

    fn status(&self) -> Result<EngineStatus> {
        Err(not_written("status"))
    }
}
