//! The MVCC store: history in the engine, the key index in memory.
//!
//! # Data in, data out
//!
//! Writes arrive from the Raft apply loop only, one committed entry at a
//! time, as a transaction ([`MvccStore::txn`]; a plain put or delete is a
//! one-operation transaction) or a compaction ([`MvccStore::compact`]). Each
//! is **staged**: its history records go into a [`Staging`] (an engine write
//! batch plus the records it holds, so a later entry of the same batch reads
//! them), and the key index learns the new revisions at once. The caller
//! writes the staged batch to the engine, together with its own metadata
//! (the Raft applied index), in one atomic `write_batch`, and then calls
//! [`MvccStore::publish`], which makes the new revision visible to readers.
//! Reads ([`MvccStore::range`]) may come from any thread at any time.
//!
//! The batch's changes also leave, in revision order, through
//! [`Written::take_changes`]: the state machine hands them to the watch
//! hub (`crate::watch`) once they are published. Watchers that fell behind
//! read the same changes back from the engine with [`MvccStore::history`],
//! in pages of whole revisions.
//!
//! # Invariants
//!
//! * A reader never sees a revision that is not in the engine: readers read
//!   at or below the **published** revision, and the index's staged
//!   revisions above it are invisible to them, since every index lookup is
//!   "the newest revision at or below `at`".
//! * History records are immutable once written; only compaction deletes
//!   them, and only those no read at or after the compaction point needs.
//!   The compaction point becomes visible to readers when it is staged, so a
//!   read below it fails with "required revision has been compacted" instead
//!   of finding holes.
//! * The current and compacted revisions are stored (`m/mvcc-current`,
//!   `m/mvcc-compacted`) in the same batch as the records, so after a crash
//!   the engine holds some prefix of the applied entries and knows which.
//!
//! # Start-up cost
//!
//! The key index lives in memory and is rebuilt at open by scanning every
//! history record (`h/`) in revision order: one sequential pass over the
//! retained history, values included, so its cost grows with the history
//! kept since the last compaction. [`OpenStats`] reports the records read and
//! the time taken; the benchmark measures it per engine.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use engines::{Engine, EngineError, KeyRange, WriteBatch, WriteOptions};

use super::key_index::{KeyAt, RangeEnd, TreeIndex};
use super::kv::{KeyValue, Record};
use super::revision::{HISTORY_PREFIX, Revision};
use super::txn::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
    compare_all,
};

const CURRENT_KEY: &[u8] = b"m/mvcc-current";
const COMPACTED_KEY: &[u8] = b"m/mvcc-compacted";
/// History records read per engine scan while rebuilding the index.
const REBUILD_PAGE: usize = 4096;

/// Why a store operation failed. The messages of the first three are etcd's
/// (the API adds its `etcdserver: ` prefix where etcd's does).
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put on the transaction's path names a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("storage engine: {0}")]
    Engine(#[from] EngineError),
    #[error("MVCC data is damaged: {0}")]
    Corrupt(String),
}

/// What opening the store cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenStats {
    pub records: u64,
    pub keys: u64,
    pub elapsed: Duration,
}

struct State {
    index: TreeIndex,
    /// The newest revision readers may see (written to the engine).
    published: i64,
    /// The newest revision staged (published or not).
    staged: i64,
    compacted: i64,
    /// The live keys with a lease found by the last rebuild, until the
    /// lessor takes them ([`MvccStore::take_leased_at_open`]).
    leased_at_open: HashMap<Vec<u8>, i64>,
}

/// Writes of the entries being applied, not yet in the engine.
#[derive(Default)]
pub struct Staging {
    batch: WriteBatch,
    records: HashMap<Revision, Record>,
    /// Every change staged, in revision order, for the watchers: unlike
    /// `records`, a compaction staged later in the batch removes nothing
    /// here, so a watcher sees each change the batch made.
    changes: Vec<(Revision, Record)>,
    dirty: bool,
    /// Every key written since the lessor last took them, with the lease
    /// it carries now (0: none, or deleted), in revision order.
    lease_changes: Vec<(Vec<u8>, i64)>,
}

impl Staging {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        !self.dirty
    }

    /// The keys written since the last call and their leases now (see
    /// `crate::lease`), for the lessor's attachments.
    pub fn take_lease_changes(&mut self) -> Vec<(Vec<u8>, i64)> {
        std::mem::take(&mut self.lease_changes)
    }
}

/// A revision staged and written, ready to be shown to readers.
#[must_use = "publish it once the batch is written"]
pub struct Written {
    revision: i64,
    changes: Vec<(Revision, Record)>,
}

impl Written {
    /// The newest revision the batch holds.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The batch's changes in revision order (for the watch hub); taken
    /// once, before the batch is published.
    pub fn take_changes(&mut self) -> Vec<(Revision, Record)> {
        std::mem::take(&mut self.changes)
    }
}

/// History plus index over one engine. Cheap to share (`Arc`).
pub struct MvccStore {
    engine: Arc<dyn Engine>,
    state: RwLock<State>,
}

fn read_i64(engine: &dyn Engine, key: &[u8]) -> Result<Option<i64>, MvccError> {
    match engine.get(key)? {
        None => Ok(None),
        Some(bytes) => {
            let array: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                MvccError::Corrupt(format!(
                    "{} holds {} bytes, expected 8",
                    String::from_utf8_lossy(key),
                    bytes.len()
                ))
            })?;
            Ok(Some(i64::from_be_bytes(array)))
        }
    }
}

impl MvccStore {
    /// Opens the store over `engine`, rebuilding the key index from history.
    pub fn open(engine: Arc<dyn Engine>) -> Result<(Self, OpenStats), MvccError> {
        let (state, stats) = Self::rebuild(engine.as_ref())?;
        let store = MvccStore {
            engine,
            state: RwLock::new(state),
        };
        Ok((store, stats))
    }

    /// Rebuilds the key index after the engine's content was replaced (a
    /// snapshot installed under it). Anything staged is forgotten. The
    /// caller keeps readers away while the engine and the index disagree.
    pub fn reload(&self) -> Result<OpenStats, MvccError> {
        let (state, stats) = Self::rebuild(self.engine.as_ref())?;
        *self.write_state() = state;
        Ok(stats)
    }

    fn rebuild(engine: &dyn Engine) -> Result<(State, OpenStats), MvccError> {
        let started = Instant::now();
        let mut index = TreeIndex::new();
        let mut records = 0u64;
        let mut last_main = 1i64;
        let mut leased: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut from = HISTORY_PREFIX.to_vec();
        let end = engines::prefix_successor(HISTORY_PREFIX).unwrap_or_default();
        loop {
            let page = engine.scan(
                &KeyRange::half_open(from.clone(), end.clone()),
                REBUILD_PAGE,
            )?;
            let Some((last_key, _)) = page.last() else {
                break;
            };
            let mut next = last_key.clone();
            next.push(0);
            for (key, value) in &page {
                let revision = Revision::from_history_key(key).ok_or_else(|| {
                    MvccError::Corrupt(format!("history key {key:?} does not name a revision"))
                })?;
                let record = Record::decode(value)
                    .map_err(|e| MvccError::Corrupt(format!("at revision {revision}: {e}")))?;
                let recorded = match &record {
                    Record::Put { key, lease, .. } => {
                        if *lease != 0 {
                            leased.insert(key.clone(), *lease);
                        } else {
                            leased.remove(key);
                        }
                        index.put(key, revision)
                    }
                    Record::Tombstone { key } => {
                        leased.remove(key);
                        index.tombstone(key, revision)
                    }
                };
                if !recorded {
                    return Err(MvccError::Corrupt(format!(
                        "history at revision {revision} does not follow the key's earlier revisions"
                    )));
                }
                last_main = last_main.max(revision.main);
                records += 1;
            }
            if page.len() < REBUILD_PAGE {
                break;
            }
            from = next;
        }
        let current = read_i64(engine, CURRENT_KEY)?.unwrap_or(1).max(last_main);
        let compacted = read_i64(engine, COMPACTED_KEY)?.unwrap_or(0);
        let stats = OpenStats {
            records,
            keys: index.len() as u64,
            elapsed: started.elapsed(),
        };
        let state = State {
            index,
            published: current,
            staged: current,
            compacted,
            leased_at_open: leased,
        };
        Ok((state, stats))
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The live keys that carry a lease, as found by the last open or
    /// reload (once: later calls get nothing until the next rebuild).
    pub fn take_leased_at_open(&self) -> Vec<(Vec<u8>, i64)> {
        std::mem::take(&mut self.write_state().leased_at_open)
            .into_iter()
            .collect()
    }

    /// The newest revision readers see.
    pub fn current_revision(&self) -> i64 {
        self.read_state().published
    }

    pub fn compacted_revision(&self) -> i64 {
        self.read_state().compacted
    }

    /// A CRC-32 of the history up to `revision` (0: the current one), the
    /// current revision and the compaction point: etcd's `HashKV`. Replicas
    /// that applied the same entries have equal hashes at equal revisions.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), MvccError> {
        let (current, compacted) = {
            let state = self.read_state();
            (state.published, state.compacted)
        };
        let at = if revision <= 0 { current } else { revision };
        if at > current {
            return Err(MvccError::FutureRevision);
        }
        if at < compacted {
            return Err(MvccError::Compacted);
        }
        let end = Revision::new(at + 1, 0).history_key();
        let mut hasher = crc32fast::Hasher::new();
        let mut from = HISTORY_PREFIX.to_vec();
        loop {
            let page = self.engine.scan(
                &KeyRange::half_open(from.clone(), end.clone()),
                REBUILD_PAGE,
            )?;
            for (key, value) in &page {
                hasher.update(key);
                hasher.update(value);
            }
            match page.last() {
                Some((last, _)) if page.len() == REBUILD_PAGE => {
                    from = last.clone();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok((hasher.finalize(), current, compacted))
    }

    /// The history records of main revisions `from..=through` (at most
    /// `through` = the published revision), oldest first: at most about
    /// `limit` records, always whole revisions (one revision's changes are
    /// never split, so a page may exceed `limit` by one revision's size).
    /// Returns the records and the newest revision the page covers
    /// completely. Watchers that fell behind catch up from here.
    pub fn history(
        &self,
        from: i64,
        through: i64,
        limit: usize,
    ) -> Result<(Vec<(Revision, Record)>, i64), MvccError> {
        let (published, compacted) = {
            let state = self.read_state();
            (state.published, state.compacted)
        };
        let through = through.min(published);
        if from > through {
            return Ok((Vec::new(), through));
        }
        if from < compacted {
            return Err(MvccError::Compacted);
        }
        let decode = |page: Vec<(Vec<u8>, Vec<u8>)>| {
            page.into_iter()
                .map(|(key, value)| {
                    let revision = Revision::from_history_key(&key).ok_or_else(|| {
                        MvccError::Corrupt(format!("history key {key:?} does not name a revision"))
                    })?;
                    let record = Record::decode(&value)
                        .map_err(|e| MvccError::Corrupt(format!("at revision {revision}: {e}")))?;
                    Ok((revision, record))
                })
                .collect::<Result<Vec<_>, MvccError>>()
        };
        let start = Revision::new(from.max(0), 0).history_key();
        let end = Revision::new(through + 1, 0).history_key();
        let limit = limit.max(1);
        let mut records = decode(
            self.engine
                .scan(&KeyRange::half_open(start, end.clone()), limit)?,
        )?;
        if records.len() < limit {
            return Ok((records, through));
        }
        // The page is full: its last revision may be cut short. Drop it,
        // unless it is the only one, which is then read whole.
        let last = records.last().map_or(from, |(r, _)| r.main);
        if records.first().is_some_and(|(r, _)| r.main < last) {
            records.retain(|(r, _)| r.main < last);
            return Ok((records, last - 1));
        }
        let whole = decode(self.engine.scan(
            &KeyRange::half_open(
                Revision::new(last, 0).history_key(),
                Revision::new(last + 1, 0).history_key(),
            ),
            usize::MAX,
        )?)?;
        Ok((whole, last))
    }

    /// The newest revision staged by the writer (published or not).
    pub fn staged_revision(&self) -> i64 {
        self.read_state().staged
    }

    /// Keys alive at the current revision.
    pub fn live_keys(&self) -> u64 {
        let state = self.read_state();
        state
            .index
            .range(b"\0", &RangeEnd::Unbounded, state.published)
            .count() as u64
    }

    fn fetch(
        &self,
        staging: Option<&Staging>,
        key: &[u8],
        at: &KeyAt,
    ) -> Result<Option<KeyValue>, MvccError> {
        let record = match staging.and_then(|s| s.records.get(&at.modified)) {
            Some(record) => Some(record.clone()),
            None => match self.engine.get(&at.modified.history_key())? {
                Some(bytes) => Some(Record::decode(&bytes).map_err(|e| {
                    MvccError::Corrupt(format!("at revision {}: {e}", at.modified))
                })?),
                None => None,
            },
        };
        let Some(record) = record else {
            return Ok(None);
        };
        if record.key() != key {
            return Err(MvccError::Corrupt(format!(
                "the record at revision {} is for another key",
                at.modified
            )));
        }
        Ok(record.into_key_value(at.modified.main))
    }

    // ANCHOR: range
    /// Serves a range read at the request's revision (0: the current one),
    /// with etcd's limit, count, filter and sort rules.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let (current, at, found) = {
            let state = self.read_state();
            let current = state.published;
            let at = if request.revision <= 0 {
                current
            } else {
                request.revision
            };
            if at > current {
                return Err(MvccError::FutureRevision);
            }
            if at < state.compacted {
                return Err(MvccError::Compacted);
            }
            let end = RangeEnd::from_request(&request.range_end);
            let found: Vec<(Vec<u8>, KeyAt)> = state
                .index
                .range(&request.key, &end, at)
                .map(|(key, at)| (key.to_vec(), at))
                .collect();
            (current, at, found)
        };
        let count = found.len() as i64;
        let mut response = RangeResponse {
            kvs: Vec::new(),
            more: false,
            count,
            revision: current,
        };
        if request.count_only {
            return Ok(response);
        }
        // Without sorting or filters the index order is the answer, so only
        // limit + 1 keys are read (the extra one tells `more`).
        let filtered = request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0;
        let fetch_all = request.sort_order != SortOrder::None || filtered || request.limit <= 0;
        let wanted = if fetch_all {
            found.len()
        } else {
            found.len().min(request.limit as usize + 1)
        };
        let mut kvs = Vec::with_capacity(wanted);
        for (key, key_at) in &found[..wanted] {
            match self.fetch(None, key, key_at)? {
                Some(kv) => kvs.push(kv),
                None if at < self.compacted_revision() => return Err(MvccError::Compacted),
                None => {
                    return Err(MvccError::Corrupt(format!(
                        "the index names revision {} but the engine has no record of it",
                        key_at.modified
                    )));
                }
            }
        }
        finish_range(request, &mut kvs, &mut response);
        response.kvs = kvs;
        Ok(response)
    }
    // ANCHOR_END: range

    /// The keys of a range alive at `at` in the staged view (writer side).
    fn staged_range(
        &self,
        state: &State,
        staging: &Staging,
        key: &[u8],
        range_end: &[u8],
        at: i64,
    ) -> Result<Vec<KeyValue>, MvccError> {
        let end = RangeEnd::from_request(range_end);
        let found: Vec<(Vec<u8>, KeyAt)> = state
            .index
            .range(key, &end, at)
            .map(|(k, a)| (k.to_vec(), a))
            .collect();
        let mut kvs = Vec::with_capacity(found.len());
        for (key, key_at) in &found {
            let kv = self.fetch(Some(staging), key, key_at)?.ok_or_else(|| {
                MvccError::Corrupt(format!("no record for staged revision {}", key_at.modified))
            })?;
            kvs.push(kv);
        }
        Ok(kvs)
    }

    // ANCHOR: txn
    /// Stages a transaction: evaluates the compares against the staged state,
    /// runs the chosen branch, and gives every change one new main revision
    /// (with sub revisions 0, 1, ... in order). A transaction that changes
    /// nothing leaves the revision alone.
    pub fn txn(&self, staging: &mut Staging, txn: &TxnRequest) -> Result<TxnResponse, MvccError> {
        self.txn_with_leases(staging, txn, &|_| true)
    }

    /// [`Self::txn`], refusing it whole ([`MvccError::LeaseNotFound`],
    /// before anything is staged) if a put on the path it takes names a
    /// lease for which `lease_exists` is false, as etcd does.
    pub fn txn_with_leases(
        &self,
        staging: &mut Staging,
        txn: &TxnRequest,
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Result<TxnResponse, MvccError> {
        let mut state = self.write_state();
        let base = state.staged;
        let succeeded = self.choose(&state, staging, txn, base)?;
        self.precheck(&state, staging, txn, succeeded, base, lease_exists)?;
        let mut run = Run {
            main: base + 1,
            sub: 0,
        };
        let responses = self.run_branch(&mut state, staging, txn, succeeded, &mut run)?;
        let revision = if run.sub > 0 {
            state.staged = run.main;
            staging.dirty = true;
            run.main
        } else {
            base
        };
        let mut response = TxnResponse {
            succeeded,
            responses,
            revision,
        };
        set_revisions(&mut response.responses, revision);
        Ok(response)
    }
    // ANCHOR_END: txn

    /// A put as a one-operation transaction.
    pub fn put(&self, staging: &mut Staging, put: PutRequest) -> Result<PutResponse, MvccError> {
        let txn = TxnRequest {
            compare: vec![],
            success: vec![RequestOp::Put(put)],
            failure: vec![],
        };
        match self.txn(staging, &txn)?.responses.pop() {
            Some(ResponseOp::Put(response)) => Ok(response),
            _ => Err(MvccError::Corrupt("a put produced no put response".into())),
        }
    }

    /// A delete as a one-operation transaction.
    pub fn delete_range(
        &self,
        staging: &mut Staging,
        delete: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let txn = TxnRequest {
            compare: vec![],
            success: vec![RequestOp::DeleteRange(delete)],
            failure: vec![],
        };
        match self.txn(staging, &txn)?.responses.pop() {
            Some(ResponseOp::DeleteRange(response)) => Ok(response),
            _ => Err(MvccError::Corrupt(
                "a delete produced no delete response".into(),
            )),
        }
    }

    fn compares_hold(
        &self,
        state: &State,
        staging: &Staging,
        compares: &[Compare],
        at: i64,
    ) -> Result<bool, MvccError> {
        for compare in compares {
            let kvs = self.staged_range(state, staging, &compare.key, &compare.range_end, at)?;
            if !compare_all(compare, &kvs) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn choose(
        &self,
        state: &State,
        staging: &Staging,
        txn: &TxnRequest,
        at: i64,
    ) -> Result<bool, MvccError> {
        self.compares_hold(state, staging, &txn.compare, at)
    }

    /// etcd refuses the whole transaction, before changing anything, if a
    /// put on the path it takes asks to keep the value or lease of a key
    /// that does not exist.
    fn precheck(
        &self,
        state: &State,
        staging: &Staging,
        txn: &TxnRequest,
        succeeded: bool,
        at: i64,
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Result<(), MvccError> {
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in branch {
            match op {
                RequestOp::Put(put)
                    if (put.ignore_value || put.ignore_lease)
                        && state.index.get(&put.key, at).is_none() =>
                {
                    return Err(MvccError::KeyNotFound);
                }
                RequestOp::Put(put) if put.lease != 0 && !lease_exists(put.lease) => {
                    return Err(MvccError::LeaseNotFound);
                }
                // etcd checks a range's revision before the transaction
                // runs: one below the compaction point or above the
                // current revision fails the whole transaction.
                RequestOp::Range(range)
                    if range.revision > 0 && range.revision < state.compacted =>
                {
                    return Err(MvccError::Compacted);
                }
                RequestOp::Range(range) if range.revision > at => {
                    return Err(MvccError::FutureRevision);
                }
                RequestOp::Txn(nested) => {
                    let taken = self.choose(state, staging, nested, at)?;
                    self.precheck(state, staging, nested, taken, at, lease_exists)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn run_branch(
        &self,
        state: &mut State,
        staging: &mut Staging,
        txn: &TxnRequest,
        succeeded: bool,
        run: &mut Run,
    ) -> Result<Vec<ResponseOp>, MvccError> {
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            // Reads inside a transaction see its earlier writes: everything
            // staged is at or below `run.main`.
            let view = run.main;
            let response = match op {
                RequestOp::Range(range) => {
                    let mut kvs =
                        self.staged_range(state, staging, &range.key, &range.range_end, view)?;
                    // etcd's header for a read inside a transaction: the
                    // revision it read at, its own writes so far included.
                    let read_at = if run.sub > 0 { run.main } else { run.main - 1 };
                    let mut response = RangeResponse {
                        count: kvs.len() as i64,
                        revision: read_at,
                        ..Default::default()
                    };
                    if range.count_only {
                        kvs.clear();
                    } else {
                        finish_range(range, &mut kvs, &mut response);
                    }
                    response.kvs = kvs;
                    ResponseOp::Range(response)
                }
                RequestOp::Put(put) => {
                    ResponseOp::Put(self.stage_put(state, staging, put, run, view)?)
                }
                RequestOp::DeleteRange(delete) => {
                    ResponseOp::DeleteRange(self.stage_delete(state, staging, delete, run, view)?)
                }
                RequestOp::Txn(nested) => {
                    let taken = self.compares_hold(state, staging, &nested.compare, view)?;
                    let responses = self.run_branch(state, staging, nested, taken, run)?;
                    ResponseOp::Txn(TxnResponse {
                        succeeded: taken,
                        responses,
                        revision: 0,
                    })
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    fn stage_record(&self, staging: &mut Staging, revision: Revision, record: Record) {
        let lease = match &record {
            Record::Put { lease, .. } => *lease,
            Record::Tombstone { .. } => 0,
        };
        staging.lease_changes.push((record.key().to_vec(), lease));
        staging.batch.put(revision.history_key(), record.encode());
        staging.changes.push((revision, record.clone()));
        staging.records.insert(revision, record);
    }

    fn stage_put(
        &self,
        state: &mut State,
        staging: &mut Staging,
        put: &PutRequest,
        run: &mut Run,
        view: i64,
    ) -> Result<PutResponse, MvccError> {
        let previous = match state.index.get(&put.key, view) {
            Some(at) => self.fetch(Some(staging), &put.key, &at)?,
            None => None,
        };
        if (put.ignore_value || put.ignore_lease) && previous.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        let value = match (&previous, put.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => put.value.clone(),
        };
        let lease = match (&previous, put.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => put.lease,
        };
        let revision = run.next();
        let record = Record::Put {
            key: put.key.clone(),
            create_revision: previous
                .as_ref()
                .map_or(revision.main, |p| p.create_revision),
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            lease,
            value,
        };
        if !state.index.put(&put.key, revision) {
            return Err(MvccError::Corrupt(format!(
                "revision {revision} is not newer than the key's last one"
            )));
        }
        self.stage_record(staging, revision, record);
        Ok(PutResponse {
            prev_kv: if put.prev_kv { previous } else { None },
            revision: revision.main,
        })
    }

    fn stage_delete(
        &self,
        state: &mut State,
        staging: &mut Staging,
        delete: &DeleteRangeRequest,
        run: &mut Run,
        view: i64,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let doomed = self.staged_range(state, staging, &delete.key, &delete.range_end, view)?;
        for kv in &doomed {
            let revision = run.next();
            if !state.index.tombstone(&kv.key, revision) {
                return Err(MvccError::Corrupt(format!(
                    "cannot record the deletion of a live key at revision {revision}"
                )));
            }
            self.stage_record(
                staging,
                revision,
                Record::Tombstone {
                    key: kv.key.clone(),
                },
            );
        }
        Ok(DeleteRangeResponse {
            deleted: doomed.len() as i64,
            prev_kvs: if delete.prev_kv { doomed } else { Vec::new() },
            revision: 0,
        })
    }

    // ANCHOR: compact
    /// Stages a compaction at `revision`: every key keeps its newest change at
    /// or below it and everything after; older history is deleted. Reads
    /// below `revision` fail from now on.
    pub fn compact(&self, staging: &mut Staging, revision: i64) -> Result<u64, MvccError> {
        let mut state = self.write_state();
        if revision <= state.compacted {
            return Err(MvccError::Compacted);
        }
        if revision > state.staged {
            return Err(MvccError::FutureRevision);
        }
        state.compacted = revision;
        let removed = state.index.compact(revision);
        for doomed in &removed {
            staging.records.remove(doomed);
            staging.batch.delete(doomed.history_key());
        }
        staging.dirty = true;
        Ok(removed.len() as u64)
    }
    // ANCHOR_END: compact

    /// Moves the staged batch out, with the store's revisions added, for the
    /// caller to write (with its own metadata) in one atomic batch.
    pub fn take_batch(&self, staging: &mut Staging) -> (WriteBatch, Written) {
        let state = self.read_state();
        let mut batch = std::mem::take(&mut staging.batch);
        let changes = std::mem::take(&mut staging.changes);
        staging.records.clear();
        staging.dirty = false;
        // Not taken by a lessor (a store used alone): not kept either.
        staging.lease_changes.clear();
        batch.put(CURRENT_KEY, state.staged.to_be_bytes().to_vec());
        batch.put(COMPACTED_KEY, state.compacted.to_be_bytes().to_vec());
        (
            batch,
            Written {
                revision: state.staged,
                changes,
            },
        )
    }

    /// Shows readers everything up to the written revision.
    pub fn publish(&self, written: Written) {
        let mut state = self.write_state();
        state.published = state.published.max(written.revision);
    }

    /// Writes the staged batch alone and publishes it (for callers without
    /// metadata of their own, and tests).
    pub fn commit(&self, staging: &mut Staging, options: WriteOptions) -> Result<(), MvccError> {
        let (batch, written) = self.take_batch(staging);
        self.engine.write_batch(batch, options)?;
        self.publish(written);
        Ok(())
    }
}

/// Main and sub revision for the changes of one transaction.
struct Run {
    main: i64,
    sub: i64,
}

impl Run {
    fn next(&mut self) -> Revision {
        let revision = Revision::new(self.main, self.sub);
        self.sub += 1;
        revision
    }
}

/// The revisions etcd puts in the headers of a transaction's inner
/// responses: a write's is the transaction's revision; a read keeps the
/// revision it read at (set when it ran); a nested transaction's own
/// header is left empty (0), its writes get the revision.
fn set_revisions(responses: &mut [ResponseOp], revision: i64) {
    for response in responses {
        match response {
            ResponseOp::Range(_) => {}
            ResponseOp::Put(r) => r.revision = revision,
            ResponseOp::DeleteRange(r) => r.revision = revision,
            ResponseOp::Txn(t) => set_revisions(&mut t.responses, revision),
        }
    }
}

/// Filters, sort and limit, in etcd's order: filters and sorting over every
/// key read, then the cut to `limit` (which sets `more`).
fn finish_range(request: &RangeRequest, kvs: &mut Vec<KeyValue>, response: &mut RangeResponse) {
    if request.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= request.max_mod_revision);
    }
    if request.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= request.min_mod_revision);
    }
    if request.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= request.max_create_revision);
    }
    if request.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= request.min_create_revision);
    }
    // Keys come in ascending key order already: etcd sorts only when asked
    // for another target, or for descending order.
    let order = match (request.sort_target, request.sort_order) {
        (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
        (target, SortOrder::None) if target != SortTarget::Key => SortOrder::Ascend,
        (_, order) => order,
    };
    if order != SortOrder::None {
        kvs.sort_by(|a, b| {
            let ordering = match request.sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    if request.limit > 0 && kvs.len() > request.limit as usize {
        kvs.truncate(request.limit as usize);
        response.more = true;
    }
    if request.keys_only {
        for kv in kvs.iter_mut() {
            kv.value.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        })
    }

    /// History pages hold whole revisions only, and say how far they go;
    /// the batch's changes are handed out once, in order.
    #[test]
    fn history_pages_never_split_a_revision() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engines::open_shared(
            engines::EngineKind::Memory,
            dir.path(),
            &engines::EngineOptions::default(),
        )
        .unwrap();
        let (store, _) = MvccStore::open(engine).unwrap();
        let mut staging = Staging::new();
        let txn = TxnRequest {
            compare: vec![],
            success: vec![put("a"), put("b"), put("c")],
            failure: vec![],
        };
        store.txn(&mut staging, &txn).unwrap(); // 2.0, 2.1, 2.2
        for key in ["d", "e"] {
            store
                .put(
                    &mut staging,
                    PutRequest {
                        key: key.as_bytes().to_vec(),
                        ..PutRequest::default()
                    },
                )
                .unwrap(); // 3, 4
        }
        let (batch, mut written) = store.take_batch(&mut staging);
        let changes: Vec<Revision> = written.take_changes().iter().map(|(r, _)| *r).collect();
        assert_eq!(changes.len(), 5);
        assert!(changes.windows(2).all(|w| w[0] < w[1]));
        assert!(written.take_changes().is_empty());
        store
            .engine()
            .write_batch(batch, WriteOptions::BUFFERED)
            .unwrap();
        store.publish(written);

        let mains =
            |page: &[(Revision, Record)]| page.iter().map(|(r, _)| r.main).collect::<Vec<_>>();
        // A page cut inside revision 2 reads revision 2 whole.
        let (page, covered) = store.history(2, 4, 2).unwrap();
        assert_eq!((mains(&page), covered), (vec![2, 2, 2], 2));
        // A page cut inside revision 3 ends before it.
        let (page, covered) = store.history(2, 4, 4).unwrap();
        assert_eq!((mains(&page), covered), (vec![2, 2, 2], 2));
        let (page, covered) = store.history(3, 9, 100).unwrap();
        assert_eq!((mains(&page), covered), (vec![3, 4], 4));
        let (page, covered) = store.history(5, 4, 100).unwrap();
        assert_eq!((page.len(), covered), (0, 4));
        store.compact(&mut staging, 3).unwrap();
        store.commit(&mut staging, WriteOptions::BUFFERED).unwrap();
        assert!(matches!(
            store.history(2, 4, 100),
            Err(MvccError::Compacted)
        ));
    }
}
