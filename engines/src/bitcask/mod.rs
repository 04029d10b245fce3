//! # bitcask: our own log-structured hash table
//!
//! Bitcask (Sheehy and Smith, Basho, 2010) is the simplest storage engine
//! that is still a real one: every write is appended to a log, and an
//! in-memory directory remembers, for every key, where its newest value
//! sits in that log. A read is one lookup and one positional read, a write is
//! one append, and recovery is replaying the log. The price is memory (every
//! key lives in RAM) and garbage (old values stay in the log until a merge
//! copies the live ones out). This module is that design, written to be
//! read; the files are named after its concepts:
//!
//! | file        | concept                                                      |
//! |-------------|--------------------------------------------------------------|
//! | `record.rs` | the record format, its encoding, decoding and checksums     |
//! | `log.rs`    | a data file: append, positional reads, the recovery scan    |
//! | `keydir.rs` | the ordered key directory and the exact counters            |
//! | `hint.rs`   | hint files, a merged file's key directory                   |
//! | `merge.rs`  | merge: rewriting immutable files without dead records       |
//! | `engine.rs` | the engine: open and recover, write path, read path         |
//!
//! ## On disk
//!
//! The engine's files live in the `bitcask/` subdirectory of its data
//! directory:
//!
//! ```text
//! <data dir>/ENGINE, LOCK          the factory's kind marker and lock
//! <data dir>/bitcask/LOCK          bitcask's own lock (flock, exclusive)
//! <data dir>/bitcask/0000000001.data   immutable (may be merged)
//! <data dir>/bitcask/0000000001.hint   written by the merge of file 1
//! <data dir>/bitcask/0000000002.data   immutable
//! <data dir>/bitcask/0000000003.data   active: the only file appended to
//! ```
//!
//! A data file is a sequence of records, nothing else (no file header):
//!
//! ```text
//! +-------+------------+-------+-------+---------+-----------+-----+-------+
//! | crc   | header_crc | seq   | flags | key_len | value_len | key | value |
//! | u32   | u32        | u64   | u8    | u32     | u32       |     |       |
//! +-------+------------+-------+-------+---------+-----------+-----+-------+
//!   crc covers everything after itself; header_crc covers seq..value_len
//!   flags: kind in bits 0-1 (1 put, 2 tombstone, 3 commit), bit 7 "in a batch"
//!   integers little-endian; 25 header bytes; keys up to 64 KiB (the
//!   engine contract), values up to 1 GiB
//! ```
//!
//! The paper's record has one CRC and a timestamp. We add a header checksum
//! so that lengths are verified before they are used (a flipped bit in a
//! length can neither run recovery off the end of the file nor be taken for
//! a torn write), and a sequence number instead of a wall-clock timestamp,
//! because clocks go backwards and sequence numbers do not.
//!
//! ## Write path
//!
//! A writer takes the writer mutex, encodes its records, appends them to the
//! active file with one `write(2)`, optionally `fdatasync`s, and only then
//! publishes the new locations in the key directory under its write lock.
//! There is no user-space buffer: a returned write is in the kernel's page
//! cache, so it survives the death of the process even without `sync`.
//! When appending would take the active file past
//! `EngineOptions::bitcask_max_file_bytes` (and it is not empty), the file is
//! *rotated*: fdatasync'ed, a new file with the next id is created, and the
//! directory is fsynced. A single write larger than the limit gets a file to
//! itself. Deletes append a *tombstone*; deleting a key that does not exist
//! writes nothing.
//!
//! ## Atomic batches: the commit record
//!
//! `write_batch` with more than one operation writes each operation as a
//! record with the "in a batch" flag, followed by a *commit record* that
//! holds the number of records in the batch, all in one append to one file
//! (a batch is never split by rotation). Recovery holds batch records back
//! until it reads their commit record; a batch without one at the end of the
//! newest file was interrupted by a crash and is cut off with the torn tail.
//! So a batch is all or nothing across crashes, and for readers too, since
//! its locations are published under one key directory write lock. The paper
//! has no batches at all. The alternative, one record
//! that holds a whole batch, would have made every key directory entry point
//! into the middle of a record and every merge parse batches.
//!
//! ## Read path
//!
//! A read looks the key up under the key directory's read lock, clones the
//! location (which holds an `Arc` of its data file), releases the lock, and
//! reads the whole record with `pread(2)` on the file's shared read-only
//! handle. The record's checksums, key and sequence number are verified on
//! every read, so a bit flipped on disk is an error, not a wrong value.
//! Readers never wait for disk I/O of writers or of each other. A scan takes
//! the locations of up to `limit` keys of its range under one read lock (a
//! consistent cut) and reads the values after releasing it.
//!
//! The paper's key directory is a hash table. Ours is a `BTreeMap` behind a
//! `RwLock`, because metcd serves range queries: ordered scans cost a
//! `log n` descent per scan rather than a sort of the whole key space.
//!
//! ## Recovery
//!
//! Open takes the lock, deletes leftovers of an interrupted merge, and
//! replays the data files oldest first: a merged file from its hint file
//! when the hint is intact and matches the data file's length, every other
//! file by reading its records. The last record of a key wins; counters of
//! live keys, logical bytes and dead bytes are rebuilt on the way. When a
//! record fails to decode at offset `x`:
//!
//! * if the bytes from `x` on are what a crash leaves of an append (a
//!   prefix of a record, possibly followed by zeros to the end of the file
//!   where the file's size reached the disk before its data), they are a
//!   torn last write. In the newest file the tail is cut back to `x` and the
//!   cut fsynced; in any older file this is corruption, since files are
//!   fsynced before their successor is created. The header checksum is what
//!   makes the "prefix of a record" test possible: a valid header tells
//!   where its record ends, and a header that fails must be followed by
//!   zeros from inside itself on;
//! * otherwise non-zero data follows the damage (valid records, or garbage),
//!   and open fails with [`EngineError::Corrupt`](crate::EngineError) naming
//!   the file and the offset. Nothing is skipped silently; deciding what to
//!   throw away is left to a person.
//!
//! One consequence: after a power failure, if the disk kept a later page of
//! an unsynced append but lost an earlier one, non-zero data follows the
//! hole and open refuses with `Corrupt` although only unsynced data was
//! lost. We prefer a loud refusal to guessing which records were acked. A
//! bit flipped inside the very last record of the newest file cannot be
//! told from a torn write, and is cut off like one.
//!
//! ## Merge
//!
//! See [`merge`] for the full argument. Merge rewrites each
//! immutable file that holds dead bytes, oldest first and under the same id,
//! keeping only the records the key directory points at; it drops dead puts,
//! tombstones and commit records, writes a hint file per rewritten data
//! file, and swaps both in with temporary names, renames and a directory
//! fsync, so a crash at any step leaves either the old file or the new one.
//! A file with nothing live is deleted. It runs when [`BitcaskEngine::merge`]
//! is called, and by itself in a background thread after a rotation once dead
//! records fill half of the immutable files' bytes. Readers and writers carry
//! on during a merge; dropping the engine stops a background merge at the
//! next record and waits for it.
//!
//! The paper merges many files into fewer new ones. Rewriting each file in
//! place keeps recovery's rule "file order is write order" true without
//! comparing sequence numbers, at the cost of leaving many small files after
//! heavy overwriting.
//!
//! ## Status
//!
//! `status()` is exact and cheap: the key directory counts live keys and
//! logical bytes (key plus value lengths) as writes are published, and the
//! dead bytes of every data file as records are overwritten or deleted
//! (the old record), deleted (the tombstone itself) or committed (the
//! commit record). `reclaimable_bytes` is the sum of dead bytes in all
//! files; those in the active file become mergeable at its next rotation.
//! After `rotate()` and `merge()` it is exactly zero, and the data files
//! shrink by exactly the number it showed (hint files are extra).
//!
//! ## Durability, exactly
//!
//! * `WriteOptions { sync: true }` (put, delete, write_batch): the records
//!   are appended and the active file is `fdatasync`ed (`File::sync_data`)
//!   before the call returns and before the write is visible to readers.
//! * `sync()`: `fdatasync` of the active file; earlier files were
//!   fdatasync'ed when they were rotated out.
//! * A new data file (rotation, or the first file) is followed by an fsync
//!   of the directory, after the previous active file's `fdatasync`.
//! * `sync: false`: the records are in the page cache when the call
//!   returns: they survive a crash of the process, not of the machine, until
//!   the next synced write, `sync()` or rotation.
//! * Recovery's cut of a torn tail is fsynced (`File::sync_all`) before the
//!   engine accepts writes. Merge fsyncs each new data and hint file before
//!   renaming it into place and fsyncs the directory after; before it
//!   replaces or deletes a file it fdatasyncs the active file, because the
//!   newer records that made the dropped ones dead may not be durable yet
//!   (without that sync a power loss lost acknowledged writes; see
//!   [`merge`]).
//! * Every file operation goes through [`crate::durable_io`]: the real file
//!   system by default, a simulated one that loses unsynced data at a crash
//!   in the power-loss tests (`tests/power_loss.rs`), which check all of the
//!   above.
//! * If an append or fsync fails, the engine refuses further writes until it
//!   is reopened: after a failed fsync the kernel may have dropped the dirty
//!   pages, so only recovery from what is really on disk can be trusted.
//!
//! ## Locking
//!
//! Besides the factory's lock on the data directory, bitcask takes its own
//! exclusive `flock` on `bitcask/LOCK`, so that a directory opened with
//! [`BitcaskEngine::open_standalone`] is equally protected; a second opener
//! gets [`EngineError::Locked`](crate::EngineError::Locked).

mod engine;
mod hint;
mod keydir;
mod log;
pub mod merge;
mod record;

pub use engine::BitcaskEngine;
pub use merge::MergeOutcome;
