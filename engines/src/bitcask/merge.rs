//! Merge: rewriting immutable data files without their dead records.
//!
//! A log only grows: every overwrite and delete leaves the old record behind.
//! Merge gives that space back. It takes every immutable data file (every
//! file older than the active one when the merge starts), oldest first, and
//! for each file that holds dead bytes writes a new version holding only its
//! live records, under the same id, plus a hint file listing them.
//!
//! # Why per file, under the same id
//!
//! Recovery replays files in id order and within a file in offset order, and
//! the last record of a key wins. A merged file keeps its id and the order of
//! the records it keeps, so that replay order is still the order in which the
//! records were written: no sequence-number comparisons are needed at
//! start-up, and a merged file can never shadow a newer write.
//!
//! # Why tombstones can be dropped
//!
//! A tombstone exists to hide older puts of its key. Files are merged oldest
//! first, and a merged file keeps only records the key directory points at;
//! a deleted key has no entry. So by the time file `i` is merged, no older
//! file holds a put of any key deleted in `i`, and `i`'s tombstones hide
//! nothing. Each file's swap is durable before the next file starts, so a
//! crash in the middle of the pass also leaves no tombstone dropped while a
//! put it hid survives.
//!
//! # Crash safety
//!
//! For each file: the new data and hint are written under temporary names
//! (`.tmp`) and fsynced; the active file is fdatasync'ed, so that the newer
//! records that made the left-out ones dead are durable before the old
//! copies go; the data file is renamed over the old one (an atomic
//! replace), then the hint; then the directory is fsynced. A crash before the
//! first rename leaves the old file (start-up deletes `.tmp` leftovers); after
//! it, the new file, which holds every live record. A crash between the two
//! renames leaves an old hint next to the new data file: the hint records
//! the length of the data file it describes, the merged file is always
//! shorter than the one it replaces, so the stale hint is ignored and the
//! data file scanned. A file with no live record at all is deleted (hint
//! first, then data), which is equally safe by the tombstone argument above.
//!
//! # Running alongside readers and writers
//!
//! The merge holds no lock while it copies. It checks each record against
//! the key directory (a read lock per record), and swaps the key directory
//! entries in one short write lock at the end, and only for keys whose entry
//! still names the copied version (same file, same sequence number): a key
//! that a writer changed meanwhile keeps its new location, and its copy in
//! the merged file is counted as dead. Readers that looked up a location
//! before the swap hold the old file's handle and read from it.

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::engine::Shared;
use super::hint::{self, hint_path};
use super::log::{DataFile, LogEntry, data_path, sync_dir};
use super::record::{self, Decoded, Record, RecordKind};
use crate::durable_io::{Appender, DurableIo, OpenMode};
use crate::error::{IoContext, Result};

/// What one merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Immutable files looked at.
    pub files_examined: u64,
    /// Files rewritten with only their live records.
    pub files_rewritten: u64,
    /// Files deleted because nothing in them was live.
    pub files_removed: u64,
    /// Bytes of the rewritten and removed files before the merge...
    pub bytes_before: u64,
    /// ...and after it.
    pub bytes_after: u64,
}

// ANCHOR: merge
/// Merges every immutable data file of `engine`; see the module docs.
pub(super) fn merge(engine: &Shared) -> Result<MergeOutcome> {
    let _one_merge_at_a_time = engine.merge_lock.lock().unwrap_or_else(|e| e.into_inner());
    let active_id = engine.writer().active.id();
    let inputs: Vec<Arc<DataFile>> = engine
        .files()
        .range(..active_id)
        .map(|(_, f)| Arc::clone(f))
        .collect();
    let mut outcome = MergeOutcome::default();
    for file in inputs {
        if engine.closing.load(Ordering::Acquire) {
            break;
        }
        outcome.files_examined += 1;
        if engine.keydir().dead_bytes_in(file.id) == 0 {
            continue;
        }
        merge_file(engine, &file, &mut outcome)?;
    }
    Ok(outcome)
}

/// Rewrites one immutable file with only its live records.
fn merge_file(engine: &Shared, file: &DataFile, outcome: &mut MergeOutcome) -> Result<()> {
    let bytes = file.read_all()?;
    let tmp_data = engine.dir.join(format!("{:010}.data.tmp", file.id));
    let tmp_hint = engine.dir.join(format!("{:010}.hint.tmp", file.id));
    let io = &*engine.io;
    // A fresh file written front to back by this handle alone, so appends
    // land at the end.
    let mut out = BufWriter::new(Appender(
        io.open(&tmp_data, OpenMode::Truncate)
            .context(|| format!("cannot create {}", tmp_data.display()))?,
    ));
    let mut copied: Vec<LogEntry> = Vec::new();
    let mut encoded = Vec::new();
    let mut new_len = 0u64;
    let mut offset = 0usize;
    while offset < bytes.len() {
        if engine.closing.load(Ordering::Acquire) {
            drop(out);
            let _ = io.remove(&tmp_data);
            return Ok(());
        }
        let (record, len) = match record::decode(&bytes[offset..]) {
            Decoded::Record(record, len) => (record, len),
            Decoded::Incomplete => {
                return Err(file.corrupt(offset as u64, "record cut short in an immutable file"));
            }
            Decoded::Invalid(reason) => return Err(file.corrupt(offset as u64, reason)),
        };
        offset += len;
        let live = record.kind == RecordKind::Put
            && engine
                .keydir()
                .get(record.key)
                .is_some_and(|loc| loc.file.id == file.id && loc.seq == record.seq);
        if !live {
            continue;
        }
        encoded.clear();
        // A copied record stands alone: its batch was committed long ago,
        // and the commit record is not copied.
        record::encode(
            &Record {
                in_batch: false,
                ..record
            },
            &mut encoded,
        );
        out.write_all(&encoded)
            .context(|| format!("cannot write {}", tmp_data.display()))?;
        copied.push(LogEntry {
            offset: new_len,
            seq: record.seq,
            kind: RecordKind::Put,
            key: record.key.to_vec(),
            value_len: record.value.len() as u32,
        });
        new_len += encoded.len() as u64;
    }
    let out = out
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.0.fsync().map(|()| f))
        .context(|| format!("cannot write {}", tmp_data.display()))?;
    drop(out);
    outcome.bytes_before += bytes.len() as u64;
    outcome.bytes_after += new_len;

    // The records left out are dead because of newer writes (overwrites,
    // tombstones) that may still sit unsynced in the active file. Once the
    // old file is replaced, those newer records are the only thing that
    // says what the key holds, so they must be durable first: otherwise a
    // power loss takes the new write and the merge has already dropped the
    // old one, losing a write that was acknowledged as durable. (Found by
    // the power-loss test.) Every write that made a record dead returned
    // before that record was checked, so this sync covers them all.
    engine.sync_active()?;
    let final_data = data_path(&engine.dir, file.id);
    let final_hint = hint_path(&engine.dir, file.id);
    if copied.is_empty() {
        remove_if_present(io, &final_hint)?;
        remove_if_present(io, &tmp_data)?;
        io.remove(&final_data)
            .context(|| format!("cannot remove merged file {}", final_data.display()))?;
        sync_dir(io, &engine.dir)?;
        engine.keydir_mut().relocate(file.id, None, &copied);
        engine.files_mut().remove(&file.id);
        outcome.files_removed += 1;
        return Ok(());
    }
    hint::write_hint(io, &tmp_hint, new_len, &copied)?;
    io.rename(&tmp_data, &final_data)
        .context(|| format!("cannot rename {} into place", tmp_data.display()))?;
    io.rename(&tmp_hint, &final_hint)
        .context(|| format!("cannot rename {} into place", tmp_hint.display()))?;
    sync_dir(io, &engine.dir)?;
    let merged = DataFile::open(io, file.id, final_data)?;
    engine
        .keydir_mut()
        .relocate(file.id, Some(&merged), &copied);
    engine.files_mut().insert(file.id, merged);
    outcome.files_rewritten += 1;
    Ok(())
}
// ANCHOR_END: merge

fn remove_if_present(io: &dyn DurableIo, path: &std::path::Path) -> Result<()> {
    match io.remove(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(crate::EngineError::io(
            format!("cannot remove {}", path.display()),
            e,
        )),
        _ => Ok(()),
    }
}
