//! The replicated state machine: committed Raft entries applied to an engine.
//!
//! Every node applies the same committed entries in the same order to its
//! own engine (memory, redb, sled, rocksdb, fjall or bitcask), so every node
//! ends up with the same keys. This module owns the key layout inside the
//! engine and the rule that makes replay safe.
//!
//! # Exactly-once application
//!
//! The applied index (and its term), the membership (`ConfState` and the
//! address of every member) and the data an entry changes are written in the
//! **same** `write_batch`. After a crash the engine therefore holds some
//! prefix of the log, and knows exactly which: the node replays the WAL from
//! the stored applied index + 1, and no entry is ever applied twice or
//! skipped. Engine writes are buffered (not fsynced): durability comes from
//! the WAL, which is fsynced before any write is acknowledged, and the
//! engine is synced before WAL segments it depends on are deleted.
//!
//! # Snapshots: export and install
//!
//! A snapshot is taken off the Raft thread: [`StateMachine::begin_export`]
//! freezes a copy-on-write view of the engine between two batches (see
//! `crate::consistent_export`), and every later batch records the originals
//! of the keys it changes before it is written, so the background exporter
//! writes exactly the state at the applied index where the export began.
//!
//! Installing a snapshot from the leader ([`StateMachine::install`]) is
//! isolated and crash-atomic:
//!
//! * isolated: it holds the install gate (`crate::install_gate`)
//!   exclusively, and client reads go through the gate, so no read sees the
//!   engine half-replaced;
//! * crash-atomic: `m/installing` (the snapshot's index and term) is
//!   written and synced before the first key is touched; the data is then
//!   streamed in from the snapshot file in bounded batches, the metadata
//!   keys (`m/...`) held back; the last batch writes the metadata and
//!   deletes the marker together. A node that finds the marker at start
//!   knows its engine is neither the old state nor the new one, and imports
//!   the snapshot file again (it was saved before the install began).
//!
//! # Key layout
//!
//! ```text
//! h/<main u64 BE><sub u64 BE> -> one change of a user key (crate::mvcc): etcd's history
//! m/mvcc-current        -> the store's revision; m/mvcc-compacted -> its compaction point
//! m/format              -> "mvcc/1": the layout of this engine's keys
//! m/applied             -> applied index u64 BE | term of that entry u64 BE
//! m/confstate           -> raft ConfState (protobuf)
//! m/members/<id, 16 hex> -> member JSON {"id","peer","client","grpc","learner"}
//! m/cluster             -> the cluster id u64 BE (from the bootstrap conf changes)
//! m/removed/<id, 16 hex> -> empty: a member removed by a conf change
//! m/installing          -> index u64 BE | term u64 BE of a snapshot being installed (absent otherwise)
//! m/lease/<id, 16 hex>  -> a lease's TTL i64 BE (crate::lease::record)
//! ```
//!
//! User keys live only in the MVCC history ([`crate::mvcc`]): every change
//! is a record keyed by its revision, and the key index that finds a key's
//! records is in memory, rebuilt from the history when the state machine
//! opens (and after a snapshot is installed). The store's staged changes
//! and this module's metadata go into the same engine batch as the applied
//! index, so the exactly-once rule above covers the history too.
//!
//! An engine written by metcd before MVCC (user keys under `k/`) has an
//! applied index and no `m/format`; it is refused at start with a message
//! that says so, rather than served as an empty store.
//!
//! The removed ids are kept (and shared with the transport through
//! [`StateMachine::removed`]) so that a removed node that restarts with its
//! old data is told "removed" by its peers instead of being served. Adding a
//! removed id is refused when proposed (ids are not reused, as in etcd); were
//! one applied anyway, it would be taken off the list.
//!
//! # Commands
//!
//! A normal Raft entry carries one [`Command`] (see [`crate::command`]): a
//! write transaction or a compaction. Applying one stages it in the MVCC
//! store; an MVCC refusal (compacting a compacted or future revision) is
//! the command's answer, the same on every node, and the entry still
//! counts as applied. An empty entry is the no-op a new leader appends; it
//! only advances the applied index.
//!
//! Lease commands change the lessor ([`crate::lease`]) and its records
//! under `m/lease/`, in the same batch. A revoke deletes the lease's keys
//! as one MVCC transaction (one revision). After every transaction the
//! keys it wrote are handed to the lessor, which keeps each lease's
//! attached keys; a put naming an unknown lease is refused here, at apply
//! time, so every member answers the same. The lease table is rebuilt
//! from the records and the live keys' `lease` at open and after an
//! install.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Bound;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use engines::export::ExportReader;
use engines::{BatchOp, Engine, KeyRange, WriteBatch, WriteOptions};
use protobuf::Message as _;
use raft::prelude::ConfState;
use serde::{Deserialize, Serialize};

pub use crate::command::{Applied, Command, CommandResponse};
use crate::consistent_export::{self, ExportError, ExportOverlay};
use crate::install_gate::{GatedEngine, InstallGate};
use crate::lease::{LeaseTable, Lessor, record as lease_record};
use crate::mvcc::kv::Record;
use crate::mvcc::txn::{DeleteRangeRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest};
use crate::mvcc::{KeyValue, MvccError, MvccStore, OpenStats, Revision, Staging};
use crate::raft::identity::ClusterId;
use crate::watch::WatchHub;

const APPLIED_KEY: &[u8] = b"m/applied";
/// The layout of the engine's keys; absent in engines written before MVCC.
const FORMAT_KEY: &[u8] = b"m/format";
const FORMAT: &[u8] = b"mvcc/1";
const CONF_STATE_KEY: &[u8] = b"m/confstate";
const MEMBERS_PREFIX: &[u8] = b"m/members/";
const CLUSTER_KEY: &[u8] = b"m/cluster";
const REMOVED_PREFIX: &[u8] = b"m/removed/";

/// Ids of removed members, shared with the transport's handshake.
pub type Removed = Arc<RwLock<BTreeSet<u64>>>;

const METADATA_PREFIX: &[u8] = b"m/";
const INSTALLING_KEY: &[u8] = b"m/installing";
/// Pairs per engine batch when a snapshot is installed.
const INSTALL_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error("storage engine: {0}")]
    Engine(#[from] engines::EngineError),
    #[error("state machine metadata {key} is malformed: {reason}")]
    Metadata { key: String, reason: String },
    #[error("snapshot data is invalid: {0}")]
    Snapshot(String),
    #[error("snapshot export: {0}")]
    Export(#[from] ExportError),
    #[error("MVCC store: {0}")]
    Mvcc(#[from] MvccError),
    #[error(
        "this data directory was written by a metcd without MVCC (user keys under k/, no m/format); \
         this metcd keeps etcd's revision history and cannot read it: start the member with an \
         empty data directory (it catches up from the leader) or restore a snapshot"
    )]
    OldLayout,
}

/// One member of the cluster: where its peers and its clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    /// `host:port` of the Raft peer listener.
    pub peer: String,
    /// `host:port` of the client HTTP listener.
    pub client: String,
    /// `host:port` of the etcd v3 gRPC listener, if the member serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    #[serde(default)]
    pub learner: bool,
}

/// Every known member by id, shared by the node, the transport (peer
/// addresses) and the HTTP API (redirects, `/-/members`).
pub type Members = Arc<RwLock<BTreeMap<u64, Member>>>;

fn member_key(id: u64) -> Vec<u8> {
    let mut key = MEMBERS_PREFIX.to_vec();
    key.extend_from_slice(format!("{id:016x}").as_bytes());
    key
}

/// The state machine over one engine. Only the node's Raft thread writes.
pub struct StateMachine {
    engine: Arc<dyn Engine>,
    applied_index: u64,
    applied_term: u64,
    /// etcd's data: the history of every user key and its index.
    mvcc: Arc<MvccStore>,
    /// The MVCC changes of the entries being applied, not yet written.
    mvcc_staging: Staging,
    /// What rebuilding the key index cost at the last open or install.
    open_stats: OpenStats,
    /// Whether the engine already holds `m/format` (written once, with
    /// the first batch, not with every one).
    format_written: bool,
    conf_state: ConfState,
    members: Members,
    cluster_id: Option<ClusterId>,
    removed: Removed,
    staged: Staged,
    /// The copy-on-write view of a running background export.
    overlay: Arc<ExportOverlay>,
    /// Held exclusively while a snapshot is installed.
    gate: Arc<InstallGate>,
    /// etcd's leases: the table this state machine applies to, shared with
    /// the expiry thread and the API.
    lessor: Arc<Lessor>,
    /// Where every committed batch's changes go for the watchers.
    watch: WatchHub,
}

/// Test-only hook: a pause in the middle of a snapshot install (after the
/// first data batch), so an integration test can kill a node there. Read
/// once, at start, from `METCD_TEST_ONLY_INSTALL_PAUSE_MS`; never set it in
/// production.
fn test_only_install_pause() -> Option<Duration> {
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    *PAUSE.get_or_init(|| {
        std::env::var("METCD_TEST_ONLY_INSTALL_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    })
}

/// What a background export needs: the frozen view and the metadata of
/// the index it is taken at.
pub struct ExportStart {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
    engine: Arc<dyn Engine>,
    overlay: Arc<ExportOverlay>,
}

impl ExportStart {
    /// Writes the state at `index` to `out` as an export stream; runs on
    /// any thread while the state machine keeps applying.
    pub fn write_to(
        &self,
        out: &mut dyn std::io::Write,
        cancel: &AtomicBool,
    ) -> Result<u64, StateMachineError> {
        Ok(consistent_export::export(
            self.engine.as_ref(),
            &self.overlay,
            out,
            &[INSTALLING_KEY],
            cancel,
        )?)
    }
}

/// Metadata changes of the entries being applied (membership, identity),
/// written with the MVCC changes and the applied index in one batch.
#[derive(Default)]
struct Staged {
    batch: WriteBatch,
    dirty: bool,
}

/// Client reads of the key-value data: the MVCC store seen through the
/// install gate, so that no read sees a snapshot half installed (the gate
/// is held across the whole read: the index lookup and the record reads).
#[derive(Clone)]
pub struct KvReader {
    mvcc: Arc<MvccStore>,
    gate: Arc<InstallGate>,
}

impl KvReader {
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let _shared = self.gate.read()?;
        self.mvcc.range(request)
    }

    /// One key at the current revision.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        let request = RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        };
        Ok(self.range(&request)?.kvs.pop())
    }

    /// The newest revision readers see.
    pub fn revision(&self) -> i64 {
        self.mvcc.current_revision()
    }

    /// etcd's `HashKV`: (hash of the history up to `revision`, current
    /// revision, compaction point).
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), MvccError> {
        let _shared = self.gate.read()?;
        self.mvcc.hash_kv(revision)
    }

    /// etcd's `Hash`: a CRC-32 of every pair in the engine (the marker of
    /// an install in progress excepted).
    pub fn hash_all(&self) -> Result<u32, MvccError> {
        let _shared = self.gate.read()?;
        let engine = self.mvcc.engine();
        let mut hasher = crc32fast::Hasher::new();
        let mut range = KeyRange::all();
        loop {
            let page = engine.scan(&range, INSTALL_BATCH)?;
            for (key, value) in &page {
                if key != INSTALLING_KEY {
                    hasher.update(key);
                    hasher.update(value);
                }
            }
            match page.last() {
                Some((last, _)) if page.len() == INSTALL_BATCH => {
                    range.start = Bound::Excluded(last.clone());
                }
                _ => return Ok(hasher.finalize()),
            }
        }
    }

    pub fn compacted_revision(&self) -> i64 {
        self.mvcc.compacted_revision()
    }

    /// History records of revisions `from..=through`, whole revisions, about
    /// `limit` records (see [`MvccStore::history`]); for watchers catching up.
    pub fn history(
        &self,
        from: i64,
        through: i64,
        limit: usize,
    ) -> Result<(Vec<(Revision, Record)>, i64), MvccError> {
        let _shared = self.gate.read()?;
        self.mvcc.history(from, through, limit)
    }
}

impl StateMachine {
    /// Loads the applied index, revision, membership from `engine`.
    pub fn open(engine: Arc<dyn Engine>, members: Members) -> Result<Self, StateMachineError> {
        if engine.get(APPLIED_KEY)?.is_some() && engine.get(FORMAT_KEY)?.is_none() {
            return Err(StateMachineError::OldLayout);
        }
        let (mvcc, open_stats) = MvccStore::open(Arc::clone(&engine))?;
        tracing::info!(
            records = open_stats.records,
            keys = open_stats.keys,
            elapsed_ms = open_stats.elapsed.as_millis() as u64,
            "rebuilt the MVCC key index from the history"
        );
        let mvcc = Arc::new(mvcc);
        let gate = Arc::new(InstallGate::new(
            crate::api::http::ApiConfig::default().request_timeout,
        ));
        let watch = WatchHub::start(KvReader {
            mvcc: Arc::clone(&mvcc),
            gate: Arc::clone(&gate),
        });
        let mut sm = StateMachine {
            engine,
            applied_index: 0,
            applied_term: 0,
            mvcc,
            mvcc_staging: Staging::new(),
            open_stats,
            format_written: false,
            conf_state: ConfState::default(),
            members,
            cluster_id: None,
            removed: Removed::default(),
            staged: Staged::default(),
            overlay: Arc::default(),
            gate,
            lessor: Arc::default(),
            watch,
        };
        // Test-only hooks are read once, here, at start.
        let _ = test_only_install_pause();
        let _ = consistent_export::test_only_page_delay();
        sm.reload_metadata()?;
        sm.rebuild_leases()?;
        Ok(sm)
    }

    /// The lessor this state machine keeps current.
    pub fn lessor(&self) -> &Arc<Lessor> {
        &self.lessor
    }

    /// Rebuilds the lease table: the leases from their records, the
    /// attachments from the live keys' `lease` (found by the MVCC rebuild).
    fn rebuild_leases(&mut self) -> Result<(), StateMachineError> {
        let mut table = LeaseTable::default();
        for (key, value) in self
            .engine
            .scan_prefix(lease_record::LEASE_PREFIX, usize::MAX)?
        {
            let (id, ttl) = lease_record::decode(&key, &value).map_err(|reason| {
                StateMachineError::Metadata {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason,
                }
            })?;
            table.grant(id, ttl);
        }
        for (key, lease) in self.mvcc.take_leased_at_open() {
            table.attach(&key, lease);
        }
        self.lessor.replace(table, std::time::Instant::now());
        Ok(())
    }

    /// Client reads of the key-value data (see [`KvReader`]).
    pub fn kv_reader(&self) -> KvReader {
        KvReader {
            mvcc: Arc::clone(&self.mvcc),
            gate: Arc::clone(&self.gate),
        }
    }

    /// The watchers of this member's store (see [`crate::watch`]).
    pub fn watch_hub(&self) -> WatchHub {
        self.watch.clone()
    }

    /// What rebuilding the MVCC key index cost when it was last rebuilt.
    pub fn open_stats(&self) -> OpenStats {
        self.open_stats
    }

    /// The engine as client reads must see it: through the install gate.
    pub fn reader(&self) -> Arc<dyn Engine> {
        Arc::new(GatedEngine::new(
            Arc::clone(&self.engine),
            Arc::clone(&self.gate),
        ))
    }

    /// The snapshot (index, term) whose install was interrupted by a crash,
    /// if the engine holds the marker.
    pub fn interrupted_install(&self) -> Result<Option<(u64, u64)>, StateMachineError> {
        match self.engine.get(INSTALLING_KEY)? {
            Some(v) if v.len() == 16 => {
                let word =
                    |at: usize| u64::from_be_bytes(v[at..at + 8].try_into().unwrap_or_default());
                Ok(Some((word(0), word(8))))
            }
            Some(_) => Err(StateMachineError::Metadata {
                key: "m/installing".into(),
                reason: "expected 16 bytes".into(),
            }),
            None => Ok(None),
        }
    }

    /// Writes `batch`, first recording for a running export the originals
    /// of the keys it changes. Every engine write of the state machine
    /// outside an install goes through here.
    fn write(&self, batch: WriteBatch) -> Result<(), StateMachineError> {
        self.overlay.record(self.engine.as_ref(), &batch)?;
        self.engine.write_batch(batch, WriteOptions::BUFFERED)?;
        Ok(())
    }

    /// Re-reads the metadata and rebuilds the MVCC key index after the
    /// engine's content was replaced.
    pub fn reload(&mut self) -> Result<(), StateMachineError> {
        self.open_stats = self.mvcc.reload()?;
        self.mvcc_staging = Staging::new();
        // The revisions the new content skipped over are in its history:
        // every watcher catches up from there.
        self.watch.reset(self.mvcc.current_revision());
        self.reload_metadata()?;
        self.rebuild_leases()
    }

    fn reload_metadata(&mut self) -> Result<(), StateMachineError> {
        self.format_written = self.engine.get(FORMAT_KEY)?.is_some();
        let malformed = |key: &[u8], reason: &str| StateMachineError::Metadata {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
        };
        (self.applied_index, self.applied_term) = match self.engine.get(APPLIED_KEY)? {
            Some(v) if v.len() == 16 => (
                u64::from_be_bytes(
                    v[..8]
                        .try_into()
                        .map_err(|_| malformed(APPLIED_KEY, "length"))?,
                ),
                u64::from_be_bytes(
                    v[8..]
                        .try_into()
                        .map_err(|_| malformed(APPLIED_KEY, "length"))?,
                ),
            ),
            Some(_) => return Err(malformed(APPLIED_KEY, "expected 16 bytes")),
            None => (0, 0),
        };
        self.conf_state = match self.engine.get(CONF_STATE_KEY)? {
            Some(v) => ConfState::parse_from_bytes(&v)
                .map_err(|e| malformed(CONF_STATE_KEY, &e.to_string()))?,
            None => ConfState::default(),
        };
        let mut loaded = BTreeMap::new();
        for (key, value) in self.engine.scan_prefix(MEMBERS_PREFIX, usize::MAX)? {
            let member: Member =
                serde_json::from_slice(&value).map_err(|e| malformed(&key, &e.to_string()))?;
            loaded.insert(member.id, member);
        }
        if !loaded.is_empty() {
            let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
            *members = loaded;
        }
        self.reload_identity()
    }

    /// Re-reads the cluster id and the removed members.
    fn reload_identity(&mut self) -> Result<(), StateMachineError> {
        self.cluster_id = match self.engine.get(CLUSTER_KEY)? {
            Some(v) => Some(ClusterId(u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StateMachineError::Metadata {
                        key: "m/cluster".into(),
                        reason: "expected 8 bytes".into(),
                    })?,
            ))),
            None => None,
        };
        let mut removed = BTreeSet::new();
        for (key, _) in self.engine.scan_prefix(REMOVED_PREFIX, usize::MAX)? {
            let id = std::str::from_utf8(&key[REMOVED_PREFIX.len()..])
                .ok()
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .ok_or_else(|| StateMachineError::Metadata {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "expected 16 hex digits after m/removed/".into(),
                })?;
            removed.insert(id);
        }
        *self.removed.write().unwrap_or_else(|p| p.into_inner()) = removed;
        Ok(())
    }

    /// The cluster id the applied bootstrap entries carried, if any.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.cluster_id
    }

    /// The ids of removed members, kept current as conf changes apply.
    pub fn removed(&self) -> Removed {
        Arc::clone(&self.removed)
    }

    /// Stages the cluster id (carried by the bootstrap conf changes) in the
    /// batch of the entry being applied.
    pub fn stage_cluster_id(&mut self, id: ClusterId) {
        if self.cluster_id != Some(id) {
            self.staged
                .batch
                .put(CLUSTER_KEY, id.0.to_be_bytes().to_vec());
            self.cluster_id = Some(id);
        }
    }

    /// Marks `id` removed (or no longer removed) after a conf change.
    fn stage_removed(&mut self, id: u64, conf_state: &ConfState) {
        let key = |id: u64| {
            let mut key = REMOVED_PREFIX.to_vec();
            key.extend_from_slice(format!("{id:016x}").as_bytes());
            key
        };
        let gone = !conf_state.voters.contains(&id) && !conf_state.learners.contains(&id);
        let mut removed = self.removed.write().unwrap_or_else(|p| p.into_inner());
        if gone {
            self.staged.batch.put(key(id), Vec::new());
            removed.insert(id);
        } else if removed.remove(&id) {
            self.staged.batch.delete(key(id));
        }
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn applied_term(&self) -> u64 {
        self.applied_term
    }

    /// The store's revision as readers see it (written and published).
    pub fn revision(&self) -> u64 {
        self.mvcc.current_revision().max(0) as u64
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    fn advance(&mut self, index: u64, term: u64) {
        self.applied_index = index;
        self.applied_term = term;
        self.staged.dirty = true;
    }

    // ANCHOR: state_machine_apply
    /// Stages one command of entry (`index`, `term`). The outer error is a
    /// failure of the node (engine, damaged data); the inner one is the
    /// command's own answer (etcd's message), identical on every node, and
    /// the entry counts as applied either way.
    pub fn stage_command(
        &mut self,
        index: u64,
        term: u64,
        command: &Command,
    ) -> Result<Result<Applied, String>, StateMachineError> {
        let result = match command {
            Command::Txn(txn) => {
                let lessor = Arc::clone(&self.lessor);
                let result = self
                    .mvcc
                    .txn_with_leases(&mut self.mvcc_staging, txn, &|id| lessor.exists(id))
                    .map(|response| Applied {
                        revision: response.revision.max(0) as u64,
                        response: Some(CommandResponse::Txn(response)),
                    });
                self.lessor.attach(self.mvcc_staging.take_lease_changes());
                result
            }
            Command::LeaseGrant { id, ttl } => {
                let answer = if *id == 0 {
                    // Never proposed by metcd (0 means "no lease" in a put).
                    Err("etcdserver: lease id 0 is not allowed".to_string())
                } else if self.lessor.grant(*id, *ttl, std::time::Instant::now()) {
                    self.staged
                        .batch
                        .put(lease_record::lease_key(*id), lease_record::encode_ttl(*ttl));
                    Ok(Applied {
                        revision: self.mvcc.staged_revision().max(0) as u64,
                        response: Some(CommandResponse::LeaseGranted { id: *id, ttl: *ttl }),
                    })
                } else {
                    Err(crate::lease::LEASE_EXISTS.to_string())
                };
                self.advance(index, term);
                return Ok(answer);
            }
            Command::LeaseRevoke { id } => {
                let answer = self.stage_revoke(*id)?;
                self.advance(index, term);
                return Ok(answer);
            }
            Command::PublishMember { id, client, grpc } => {
                let answer = self.stage_publication(*id, client, grpc.as_deref());
                self.advance(index, term);
                return Ok(answer);
            }
            Command::Compact { revision } => self
                .mvcc
                .compact(&mut self.mvcc_staging, *revision)
                .map(|_| Applied {
                    revision: self.mvcc.staged_revision().max(0) as u64,
                    response: Some(CommandResponse::Compacted),
                }),
        };
        self.advance(index, term);
        match result {
            Ok(applied) => Ok(Ok(applied)),
            Err(refused @ (MvccError::Compacted | MvccError::FutureRevision)) => {
                Ok(Err(format!("etcdserver: {refused}")))
            }
            Err(refused @ (MvccError::KeyNotFound | MvccError::LeaseNotFound)) => {
                Ok(Err(refused.to_string()))
            }
            Err(failure) => Err(failure.into()),
        }
    }

    /// Stages a member's own client addresses; a member that is no longer
    /// in the cluster (removed meanwhile) is refused, the same on every
    /// node.
    fn stage_publication(
        &mut self,
        id: u64,
        client: &str,
        grpc: Option<&str>,
    ) -> Result<Applied, String> {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        let Some(member) = members.get_mut(&id) else {
            return Err(format!(
                "member {id} is not in the cluster; nothing published"
            ));
        };
        member.client = client.to_string();
        member.grpc = grpc.map(str::to_string);
        let json = serde_json::to_vec(&*member).unwrap_or_default();
        self.staged.batch.put(member_key(id), json);
        Ok(Applied {
            revision: self.mvcc.staged_revision().max(0) as u64,
            response: Some(CommandResponse::Published),
        })
    }

    /// Stages the revoke of lease `id`: its keys deleted in one transaction
    /// (one revision), then the lease and its record.
    fn stage_revoke(&mut self, id: i64) -> Result<Result<Applied, String>, StateMachineError> {
        let Some(keys) = self.lessor.revoke_keys(id) else {
            return Ok(Err(crate::lease::LEASE_NOT_FOUND.to_string()));
        };
        let txn = TxnRequest {
            compare: vec![],
            success: keys
                .into_iter()
                .map(|key| {
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        key,
                        ..DeleteRangeRequest::default()
                    })
                })
                .collect(),
            failure: vec![],
        };
        let response = self.mvcc.txn(&mut self.mvcc_staging, &txn)?;
        self.lessor.attach(self.mvcc_staging.take_lease_changes());
        self.lessor.remove(id);
        self.staged.batch.delete(lease_record::lease_key(id));
        Ok(Ok(Applied {
            revision: response.revision.max(0) as u64,
            response: Some(CommandResponse::LeaseRevoked),
        }))
    }

    /// Stages an entry without a command (a new leader's no-op, or one that
    /// could not be decoded and is skipped identically on every node).
    pub fn stage_noop(&mut self, index: u64, term: u64) {
        self.advance(index, term);
    }

    /// Writes everything staged (the MVCC changes, the metadata), the
    /// applied index and the layout marker in one atomic batch, then shows
    /// the new revision to readers.
    pub fn commit(&mut self) -> Result<(), StateMachineError> {
        if !self.staged.dirty && self.mvcc_staging.is_empty() {
            return Ok(());
        }
        let _timer = crate::metrics::BACKEND_COMMIT.start_timer();
        let staged = std::mem::take(&mut self.staged);
        let (mut batch, mut written) = self.mvcc.take_batch(&mut self.mvcc_staging);
        let changes = written.take_changes();
        let revision = written.revision();
        for op in staged.batch.into_ops() {
            match op {
                BatchOp::Put { key, value } => batch.put(key, value),
                BatchOp::Delete { key } => batch.delete(key),
            };
        }
        let mut applied = self.applied_index.to_be_bytes().to_vec();
        applied.extend_from_slice(&self.applied_term.to_be_bytes());
        batch.put(APPLIED_KEY, applied);
        if !self.format_written {
            batch.put(FORMAT_KEY, FORMAT.to_vec());
        }
        self.write(batch)?;
        self.format_written = true;
        self.mvcc.publish(written);
        // Handed off, never waited for: the watchers are served by the
        // hub's own thread.
        self.watch.publish(revision, changes);
        Ok(())
    }
    // ANCHOR_END: state_machine_apply

    /// Stages a membership change: the new `ConfState` and the member's
    /// addresses (`Some` for add/promote, `None` for removal).
    pub fn stage_conf_change(
        &mut self,
        index: u64,
        term: u64,
        conf_state: ConfState,
        id: u64,
        member: Option<Member>,
    ) -> Result<(), StateMachineError> {
        let encoded = conf_state
            .write_to_bytes()
            .map_err(|e| StateMachineError::Metadata {
                key: "m/confstate".into(),
                reason: e.to_string(),
            })?;
        self.staged.batch.put(CONF_STATE_KEY, encoded);
        {
            let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
            match member {
                Some(member) => {
                    let json = serde_json::to_vec(&member).unwrap_or_default();
                    self.staged.batch.put(member_key(id), json);
                    members.insert(id, member);
                }
                None => {
                    self.staged.batch.delete(member_key(id));
                    members.remove(&id);
                }
            }
        }
        self.stage_removed(id, &conf_state);
        self.conf_state = conf_state;
        self.advance(index, term);
        Ok(())
    }

    /// Writes the initial members at bootstrap, before any entry is applied.
    pub fn record_members(&mut self, list: &[Member]) -> Result<(), StateMachineError> {
        let mut batch = WriteBatch::new();
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        for member in list {
            batch.put(
                member_key(member.id),
                serde_json::to_vec(member).unwrap_or_default(),
            );
            members.insert(member.id, member.clone());
        }
        drop(members);
        self.write(batch)
    }

    // ANCHOR: begin_export
    /// Freezes the state at the applied index for a background export.
    /// Call on the Raft thread between two batches; [`Self::end_export`]
    /// when the export is over (done, failed or cancelled).
    pub fn begin_export(&mut self) -> Result<ExportStart, StateMachineError> {
        self.commit()?;
        self.overlay.begin();
        Ok(ExportStart {
            index: self.applied_index,
            term: self.applied_term,
            conf_state: self.conf_state.clone(),
            engine: Arc::clone(&self.engine),
            overlay: Arc::clone(&self.overlay),
        })
    }
    // ANCHOR_END: begin_export

    pub fn end_export(&self) {
        self.overlay.end();
    }

    // ANCHOR: install
    /// Replaces the engine's content with the export stream `data` of the
    /// snapshot at (`index`, `term`), isolated from reads and crash-atomic
    /// (see the module documentation), and reloads the metadata. No export
    /// may be running. Returns the number of pairs.
    pub fn install(
        &mut self,
        index: u64,
        term: u64,
        data: &mut dyn Read,
    ) -> Result<u64, StateMachineError> {
        let gate = Arc::clone(&self.gate);
        let _exclusive = gate.install();
        self.staged = Staged::default();
        self.overlay.end();
        let mut marker = index.to_be_bytes().to_vec();
        marker.extend_from_slice(&term.to_be_bytes());
        self.engine
            .put(INSTALLING_KEY, &marker, WriteOptions::SYNC)?;
        self.clear_all_but_marker()?;
        let pairs = self.stream_in(data)?;
        self.reload()?;
        if self.applied_index != index {
            return Err(StateMachineError::Snapshot(format!(
                "the snapshot at index {index} holds a state machine applied to {}",
                self.applied_index
            )));
        }
        Ok(pairs)
    }
    // ANCHOR_END: install

    fn clear_all_but_marker(&self) -> Result<(), StateMachineError> {
        let mut range = KeyRange::all();
        loop {
            let page = self.engine.scan(&range, INSTALL_BATCH)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            let next = Bound::Excluded(last.clone());
            let full = page.len() == INSTALL_BATCH;
            let mut batch = WriteBatch::new();
            for (key, _) in page {
                if key != INSTALLING_KEY {
                    batch.delete(key);
                }
            }
            if !batch.is_empty() {
                self.engine.write_batch(batch, WriteOptions::BUFFERED)?;
            }
            if !full {
                return Ok(());
            }
            range.start = next;
        }
    }

    /// Writes the pairs of `data` in batches, the metadata last together
    /// with the marker's removal, and syncs.
    fn stream_in(&self, data: &mut dyn Read) -> Result<u64, StateMachineError> {
        let mut reader = ExportReader::new(&mut *data)?;
        let mut metadata = WriteBatch::new();
        let mut batch = WriteBatch::new();
        let mut previous: Option<Vec<u8>> = None;
        let mut pairs = 0u64;
        let mut paused = false;
        while let Some((key, value)) = reader.next_pair()? {
            if previous.as_ref().is_some_and(|p| p >= &key) {
                return Err(StateMachineError::Snapshot(
                    "keys are not in ascending order".into(),
                ));
            }
            pairs += 1;
            previous = Some(key.clone());
            if key == INSTALLING_KEY {
                continue;
            }
            if key.starts_with(METADATA_PREFIX) {
                metadata.put(key, value);
                continue;
            }
            batch.put(key, value);
            if batch.len() >= INSTALL_BATCH {
                self.engine
                    .write_batch(std::mem::take(&mut batch), WriteOptions::BUFFERED)?;
                if let Some(pause) = test_only_install_pause().filter(|_| !paused) {
                    paused = true;
                    tracing::warn!(
                        ?pause,
                        "test-only pause in the middle of a snapshot install"
                    );
                    std::thread::sleep(pause);
                }
            }
        }
        drop(reader);
        // The trailer after the end tag: pair count u64 LE | crc32 of the
        // end tag and the count.
        let mut trailer = [0u8; 12];
        data.read_exact(&mut trailer)
            .map_err(|e| StateMachineError::Snapshot(format!("reading the trailer: {e}")))?;
        let mut counted = vec![0xFF];
        counted.extend_from_slice(&trailer[..8]);
        let count = u64::from_le_bytes(trailer[..8].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(trailer[8..].try_into().unwrap_or_default());
        if crc32fast::hash(&counted) != crc || count != pairs {
            return Err(StateMachineError::Snapshot(format!(
                "the trailer does not match: it counts {count} pairs, {pairs} were read"
            )));
        }
        if !batch.is_empty() {
            self.engine.write_batch(batch, WriteOptions::BUFFERED)?;
        }
        metadata.delete(INSTALLING_KEY);
        self.engine.write_batch(metadata, WriteOptions::BUFFERED)?;
        self.engine.sync()?;
        Ok(pairs)
    }

    pub fn sync(&self) -> Result<(), StateMachineError> {
        Ok(self.engine.sync()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Arc<dyn Engine> {
        engines::open_shared(
            engines::EngineKind::Memory,
            std::path::Path::new("/nonexistent"),
            &Default::default(),
        )
        .unwrap()
    }

    #[test]
    fn applied_index_is_stored_with_the_data() {
        let engine = memory();
        let members = Members::default();
        let mut sm = StateMachine::open(Arc::clone(&engine), members.clone()).unwrap();
        let put = |value: &str| Command::put("a", value);
        sm.stage_command(1, 1, &put("one")).unwrap().unwrap();
        let second = sm.stage_command(2, 1, &put("two")).unwrap().unwrap();
        // etcd's numbering: a fresh store is at 1, the first write gets 2.
        assert_eq!(second.revision, 3);
        assert_eq!(sm.revision(), 1, "not visible before the batch is written");
        sm.commit().unwrap();
        assert_eq!(sm.revision(), 3);
        let reopened = StateMachine::open(Arc::clone(&engine), members).unwrap();
        assert_eq!(reopened.applied_index(), 2);
        assert_eq!(reopened.revision(), 3);
        let record = reopened.kv_reader().get(b"a").unwrap().unwrap();
        assert_eq!(record.value, b"two");
        assert_eq!(
            (record.create_revision, record.mod_revision, record.version),
            (2, 3, 2)
        );
    }

    #[test]
    fn removed_members_and_the_cluster_id_are_kept_with_the_data() {
        let engine = memory();
        let mut sm = StateMachine::open(Arc::clone(&engine), Members::default()).unwrap();
        sm.stage_cluster_id(ClusterId(9));
        let two = ConfState {
            voters: vec![1, 2],
            ..Default::default()
        };
        sm.stage_conf_change(1, 1, two.clone(), 2, None).unwrap();
        let one = ConfState {
            voters: vec![1],
            ..Default::default()
        };
        sm.stage_conf_change(2, 1, one, 2, None).unwrap();
        sm.commit().unwrap();
        assert!(sm.removed().read().unwrap().contains(&2));
        let reopened = StateMachine::open(Arc::clone(&engine), Members::default()).unwrap();
        assert_eq!(reopened.cluster_id(), Some(ClusterId(9)));
        assert_eq!(
            reopened
                .removed()
                .read()
                .unwrap()
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![2]
        );
        // Snapshots carry both.
        let mut other = StateMachine::open(memory(), Members::default()).unwrap();
        let start = sm.begin_export().unwrap();
        let mut data = Vec::new();
        start.write_to(&mut data, &AtomicBool::new(false)).unwrap();
        sm.end_export();
        let index = sm.applied_index();
        other.install(index, 1, &mut data.as_slice()).unwrap();
        assert_eq!(other.cluster_id(), Some(ClusterId(9)));
        assert!(other.removed().read().unwrap().contains(&2));
        // Added again: no longer removed.
        sm.stage_conf_change(3, 1, two, 2, None).unwrap();
        sm.commit().unwrap();
        assert!(sm.removed().read().unwrap().is_empty());
        let reopened = StateMachine::open(engine, Members::default()).unwrap();
        assert!(reopened.removed().read().unwrap().is_empty());
    }

    #[test]
    fn snapshot_round_trip_restores_metadata_and_members() {
        let members = Members::default();
        let mut sm = StateMachine::open(memory(), members.clone()).unwrap();
        let cs = ConfState {
            voters: vec![1, 2],
            ..Default::default()
        };
        let member = Member {
            id: 2,
            peer: "127.0.0.1:2".into(),
            client: "127.0.0.1:3".into(),
            grpc: None,
            learner: false,
        };
        sm.stage_conf_change(1, 1, cs.clone(), 2, Some(member.clone()))
            .unwrap();
        sm.stage_command(2, 1, &Command::put("x", "y"))
            .unwrap()
            .unwrap();
        sm.commit().unwrap();
        let start = sm.begin_export().unwrap();
        let mut data = Vec::new();
        start.write_to(&mut data, &AtomicBool::new(false)).unwrap();
        sm.end_export();
        let other_members = Members::default();
        let mut other = StateMachine::open(memory(), other_members.clone()).unwrap();
        other.install(2, 1, &mut data.as_slice()).unwrap();
        assert_eq!(other.applied_index(), 2);
        assert_eq!(other.conf_state(), &cs);
        assert_eq!(other_members.read().unwrap().get(&2), Some(&member));
        let x = other.kv_reader().get(b"x").unwrap().unwrap();
        assert_eq!((x.value.as_slice(), x.mod_revision), (&b"y"[..], 2));
    }

    #[test]
    fn leases_are_applied_persisted_and_rebuilt() {
        use crate::mvcc::txn::PutRequest;
        let engine = memory();
        let mut sm = StateMachine::open(Arc::clone(&engine), Members::default()).unwrap();
        let leased = |key: &str, lease: i64| {
            Command::Txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Put(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: b"v".to_vec(),
                    lease,
                    ..PutRequest::default()
                })],
                failure: vec![],
            })
        };
        let grant = |id| Command::LeaseGrant { id, ttl: 60 };
        sm.stage_command(1, 1, &grant(7)).unwrap().unwrap();
        assert_eq!(
            sm.stage_command(2, 1, &grant(7)).unwrap(),
            Err(crate::lease::LEASE_EXISTS.to_string())
        );
        assert_eq!(
            sm.stage_command(3, 1, &leased("x", 8)).unwrap(),
            Err(crate::lease::LEASE_NOT_FOUND.to_string()),
            "a put naming an unknown lease is refused when applied"
        );
        sm.stage_command(4, 1, &leased("a", 7)).unwrap().unwrap();
        sm.stage_command(5, 1, &leased("b", 7)).unwrap().unwrap();
        sm.stage_command(6, 1, &grant(9)).unwrap().unwrap();
        sm.stage_command(7, 1, &leased("b", 9)).unwrap().unwrap();
        sm.commit().unwrap();
        let keys = |sm: &StateMachine, id| sm.lessor().info(id, true, std::time::Instant::now());
        assert_eq!(keys(&sm, 7).unwrap().keys, vec![b"a".to_vec()]);
        // Reopened: the leases from their records, the keys from history.
        let reopened = StateMachine::open(Arc::clone(&engine), Members::default()).unwrap();
        assert_eq!(reopened.lessor().ids(), vec![7, 9]);
        assert_eq!(keys(&reopened, 9).unwrap().keys, vec![b"b".to_vec()]);
        // And through a snapshot.
        let start = sm.begin_export().unwrap();
        let mut data = Vec::new();
        start.write_to(&mut data, &AtomicBool::new(false)).unwrap();
        sm.end_export();
        let mut other = StateMachine::open(memory(), Members::default()).unwrap();
        other.install(7, 1, &mut data.as_slice()).unwrap();
        assert_eq!(keys(&other, 7).unwrap().keys, vec![b"a".to_vec()]);
        // A revoke deletes the keys at one revision, then the lease.
        let before = sm.revision();
        let revoked = sm
            .stage_command(8, 1, &Command::LeaseRevoke { id: 9 })
            .unwrap()
            .unwrap();
        assert_eq!(revoked.revision, before + 1);
        sm.commit().unwrap();
        assert!(sm.kv_reader().get(b"b").unwrap().is_none());
        assert!(sm.kv_reader().get(b"a").unwrap().is_some());
        let reopened = StateMachine::open(engine, Members::default()).unwrap();
        assert_eq!(reopened.lessor().ids(), vec![7]);
    }

    fn put(_index: u64, key: &str, value: &str) -> Command {
        Command::put(key, value)
    }

    /// A state machine at index `n` with `n` keys, and its export.
    fn exported(n: u64) -> (StateMachine, Vec<u8>) {
        let mut sm = StateMachine::open(memory(), Members::default()).unwrap();
        for i in 1..=n {
            sm.stage_command(i, 1, &put(i, &format!("key{i:05}"), "v"))
                .unwrap()
                .unwrap();
        }
        sm.commit().unwrap();
        let start = sm.begin_export().unwrap();
        let mut data = Vec::new();
        start.write_to(&mut data, &AtomicBool::new(false)).unwrap();
        sm.end_export();
        (sm, data)
    }

    #[test]
    fn writes_during_an_export_do_not_reach_it() {
        let mut sm = StateMachine::open(memory(), Members::default()).unwrap();
        sm.stage_command(1, 1, &put(1, "a", "old"))
            .unwrap()
            .unwrap();
        sm.commit().unwrap();
        let start = sm.begin_export().unwrap();
        sm.stage_command(2, 1, &put(2, "a", "new"))
            .unwrap()
            .unwrap();
        sm.stage_command(3, 1, &put(3, "b", "new"))
            .unwrap()
            .unwrap();
        sm.commit().unwrap();
        let mut data = Vec::new();
        start.write_to(&mut data, &AtomicBool::new(false)).unwrap();
        sm.end_export();
        let mut other = StateMachine::open(memory(), Members::default()).unwrap();
        other.install(1, 1, &mut data.as_slice()).unwrap();
        assert_eq!(other.applied_index(), 1);
        let a = other.kv_reader().get(b"a").unwrap();
        assert_eq!(a.unwrap().value, b"old");
        assert!(other.kv_reader().get(b"b").unwrap().is_none());
        assert_eq!(other.revision(), 2);
    }

    #[test]
    fn install_replaces_everything_and_removes_the_marker() {
        let (_, data) = exported(3000);
        let engine = memory();
        let mut sm = StateMachine::open(Arc::clone(&engine), Members::default()).unwrap();
        sm.stage_command(1, 1, &put(1, "stale", "x"))
            .unwrap()
            .unwrap();
        sm.commit().unwrap();
        // 3000 history records, m/applied, m/format, m/mvcc-current and
        // m/mvcc-compacted.
        assert_eq!(sm.install(3000, 1, &mut data.as_slice()).unwrap(), 3004);
        assert_eq!(sm.applied_index(), 3000);
        assert_eq!(sm.revision(), 3001);
        assert!(sm.interrupted_install().unwrap().is_none());
        let kv = sm.kv_reader();
        assert!(kv.get(b"stale").unwrap().is_none());
        assert!(kv.get(b"key03000").unwrap().is_some());
        assert_eq!(sm.open_stats().keys, 3000, "the key index was rebuilt");
    }

    #[test]
    fn an_interrupted_install_leaves_the_marker_and_no_new_applied_index() {
        let (_, data) = exported(3000);
        let engine = memory();
        let mut sm = StateMachine::open(Arc::clone(&engine), Members::default()).unwrap();
        sm.stage_command(1, 1, &put(1, "stale", "x"))
            .unwrap()
            .unwrap();
        sm.commit().unwrap();
        // The stream breaks off in the middle: what a crash leaves behind.
        let cut = &data[..data.len() / 2];
        assert!(sm.install(3000, 1, &mut &cut[..]).is_err());
        let reopened = StateMachine::open(Arc::clone(&engine), Members::default()).unwrap();
        assert_eq!(reopened.interrupted_install().unwrap(), Some((3000, 1)));
        assert_ne!(reopened.applied_index(), 3000);
        // Installing again from the whole stream completes it.
        let mut again = reopened;
        again.install(3000, 1, &mut data.as_slice()).unwrap();
        assert!(again.interrupted_install().unwrap().is_none());
        assert_eq!(again.applied_index(), 3000);
    }

    #[test]
    fn reads_through_the_gate_wait_for_an_install() {
        let (mut sm, data) = exported(5000);
        let reader = sm.kv_reader();
        let stop = Arc::new(AtomicBool::new(false));
        let reads = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // The last key exists before and after the install, but
                    // not in between (cleared, rewritten last).
                    let record = reader.get(b"key05000").unwrap();
                    assert!(record.is_some(), "a read saw the engine half-installed");
                    seen += 1;
                }
                seen
            })
        };
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(5));
            sm.install(5000, 1, &mut data.as_slice()).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reads.join().unwrap() > 0);
    }
}
