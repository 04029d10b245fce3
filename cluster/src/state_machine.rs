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
//! # Key layout
//!
//! ```text
//! k/<user key>          -> create_revision u64 BE | mod_revision u64 BE | version u64 BE | value bytes
//! m/applied             -> applied index u64 BE | term of that entry u64 BE
//! m/revision            -> cluster-wide revision u64 BE (incremented by every put and delete)
//! m/confstate           -> raft ConfState (protobuf)
//! m/members/<id, 16 hex> -> member JSON {"id","peer","client","learner"}
//! m/cluster             -> the cluster id u64 BE (from the bootstrap conf changes)
//! m/removed/<id, 16 hex> -> empty: a member removed by a conf change
//! ```
//!
//! The removed ids are kept (and shared with the transport through
//! [`StateMachine::removed`]) so that a removed node that restarts with its
//! old data is told "removed" by its peers instead of being served. Adding a
//! removed id is refused when proposed (ids are not reused, as in etcd); were
//! one applied anyway, it would be taken off the list.
//!
//! The `k/` records already carry etcd's per-key metadata: the revision at
//! which the key was created, the revision of its last change and the number
//! of changes since creation. Room is left for the rest of etcd's data model
//! without moving anything: history for watch goes under
//! `h/<revision u64 BE><user key>` (every change, removed by compaction
//! below a compacted revision kept at `m/compacted`), leases under
//! `l/<lease id u64 BE>` with the attached keys under
//! `l/<lease id>/k/<user key>`. Because all prefixes are distinct single
//! letters followed by `/`, a scan of `k/` never sees metadata.
//!
//! # Commands
//!
//! A normal Raft entry carries one [`Command`], encoded by
//! [`Command::encode`]: a tag, the proposer's request id (so the proposer
//! can find its waiting client), the key and the value. An empty entry is the
//! no-op a new leader appends; it only advances the applied index.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use engines::{Engine, WriteBatch, WriteOptions};
use protobuf::Message as _;
use raft::prelude::ConfState;
use serde::{Deserialize, Serialize};

use crate::raft::identity::ClusterId;

pub const DATA_PREFIX: &[u8] = b"k/";
const APPLIED_KEY: &[u8] = b"m/applied";
const REVISION_KEY: &[u8] = b"m/revision";
const CONF_STATE_KEY: &[u8] = b"m/confstate";
const MEMBERS_PREFIX: &[u8] = b"m/members/";
const CLUSTER_KEY: &[u8] = b"m/cluster";
const REMOVED_PREFIX: &[u8] = b"m/removed/";

/// Ids of removed members, shared with the transport's handshake.
pub type Removed = Arc<RwLock<BTreeSet<u64>>>;

#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error("storage engine: {0}")]
    Engine(#[from] engines::EngineError),
    #[error("state machine metadata {key} is malformed: {reason}")]
    Metadata { key: String, reason: String },
}

/// A client write, as carried in a Raft entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Put {
        request: u64,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        request: u64,
        key: Vec<u8>,
    },
}

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;

impl Command {
    pub fn request(&self) -> u64 {
        match self {
            Command::Put { request, .. } | Command::Delete { request, .. } => *request,
        }
    }

    /// `tag u8 | request u64 LE | key length u32 LE | key | value`.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, request, key, value): (u8, u64, &[u8], &[u8]) = match self {
            Command::Put {
                request,
                key,
                value,
            } => (TAG_PUT, *request, key, value),
            Command::Delete { request, key } => (TAG_DELETE, *request, key, &[]),
        };
        let mut out = Vec::with_capacity(13 + key.len() + value.len());
        out.push(tag);
        out.extend_from_slice(&request.to_le_bytes());
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, String> {
        if bytes.len() < 13 {
            return Err(format!("command of {} bytes is too short", bytes.len()));
        }
        let request = u64::from_le_bytes(bytes[1..9].try_into().map_err(|_| "request id")?);
        let key_len =
            u32::from_le_bytes(bytes[9..13].try_into().map_err(|_| "key length")?) as usize;
        let key = bytes
            .get(13..13 + key_len)
            .ok_or("key length points past the end")?
            .to_vec();
        let value = bytes[13 + key_len..].to_vec();
        match bytes[0] {
            TAG_PUT => Ok(Command::Put {
                request,
                key,
                value,
            }),
            TAG_DELETE => Ok(Command::Delete { request, key }),
            other => Err(format!("unknown command tag {other}")),
        }
    }
}

/// One member of the cluster: where its peers and its clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    /// `host:port` of the Raft peer listener.
    pub peer: String,
    /// `host:port` of the client HTTP listener.
    pub client: String,
    #[serde(default)]
    pub learner: bool,
}

/// Every known member by id, shared by the node, the transport (peer
/// addresses) and the HTTP API (redirects, `/-/members`).
pub type Members = Arc<RwLock<BTreeMap<u64, Member>>>;

/// What applying one command did, reported to the waiting client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The cluster revision after the command.
    pub revision: u64,
    /// For a delete: whether the key existed.
    pub existed: bool,
}

/// The per-key record stored under `k/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    pub value: Vec<u8>,
}

impl KeyRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.value.len());
        out.extend_from_slice(&self.create_revision.to_be_bytes());
        out.extend_from_slice(&self.mod_revision.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    fn decode(bytes: &[u8]) -> Option<KeyRecord> {
        if bytes.len() < 24 {
            return None;
        }
        let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        Some(KeyRecord {
            create_revision: word(0),
            mod_revision: word(8),
            version: word(16),
            value: bytes[24..].to_vec(),
        })
    }
}

pub fn data_key(user_key: &[u8]) -> Vec<u8> {
    let mut key = DATA_PREFIX.to_vec();
    key.extend_from_slice(user_key);
    key
}

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
    revision: u64,
    conf_state: ConfState,
    members: Members,
    cluster_id: Option<ClusterId>,
    removed: Removed,
    staged: Staged,
}

/// Changes of the entries being applied, not yet written: one batch per
/// Ready, with reads of keys changed earlier in the batch served from here.
#[derive(Default)]
struct Staged {
    batch: WriteBatch,
    overlay: HashMap<Vec<u8>, Option<KeyRecord>>,
    dirty: bool,
}

impl StateMachine {
    /// Loads the applied index, revision, membership from `engine`.
    pub fn open(engine: Arc<dyn Engine>, members: Members) -> Result<Self, StateMachineError> {
        let mut sm = StateMachine {
            engine,
            applied_index: 0,
            applied_term: 0,
            revision: 0,
            conf_state: ConfState::default(),
            members,
            cluster_id: None,
            removed: Removed::default(),
            staged: Staged::default(),
        };
        sm.reload()?;
        Ok(sm)
    }

    /// Re-reads the metadata after the engine's content was replaced.
    pub fn reload(&mut self) -> Result<(), StateMachineError> {
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
        self.revision = match self.engine.get(REVISION_KEY)? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| malformed(REVISION_KEY, "expected 8 bytes"))?,
            ),
            None => 0,
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

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The value of a user key, as of the last written batch.
    pub fn get(engine: &dyn Engine, key: &[u8]) -> Result<Option<KeyRecord>, StateMachineError> {
        Ok(engine
            .get(&data_key(key))?
            .as_deref()
            .and_then(KeyRecord::decode))
    }

    fn read(&self, key: &[u8]) -> Result<Option<KeyRecord>, StateMachineError> {
        match self.staged.overlay.get(key) {
            Some(record) => Ok(record.clone()),
            None => Self::get(self.engine.as_ref(), key),
        }
    }

    fn advance(&mut self, index: u64, term: u64) {
        self.applied_index = index;
        self.applied_term = term;
        self.staged.dirty = true;
    }

    // ANCHOR: state_machine_apply
    /// Stages one command of entry (`index`, `term`).
    pub fn stage_command(
        &mut self,
        index: u64,
        term: u64,
        command: &Command,
    ) -> Result<Applied, StateMachineError> {
        self.revision += 1;
        let revision = self.revision;
        let applied = match command {
            Command::Put { key, value, .. } => {
                let previous = self.read(key)?;
                let record = KeyRecord {
                    create_revision: previous.as_ref().map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                    version: previous.as_ref().map_or(1, |p| p.version + 1),
                    value: value.clone(),
                };
                self.staged.batch.put(data_key(key), record.encode());
                self.staged.overlay.insert(key.clone(), Some(record));
                Applied {
                    revision,
                    existed: previous.is_some(),
                }
            }
            Command::Delete { key, .. } => {
                let existed = self.read(key)?.is_some();
                self.staged.batch.delete(data_key(key));
                self.staged.overlay.insert(key.clone(), None);
                Applied { revision, existed }
            }
        };
        self.advance(index, term);
        Ok(applied)
    }

    /// Stages an entry without a command (a new leader's no-op, or one that
    /// could not be decoded and is skipped identically on every node).
    pub fn stage_noop(&mut self, index: u64, term: u64) {
        self.advance(index, term);
    }

    /// Writes everything staged, the applied index, the revision and the
    /// membership in one atomic batch.
    pub fn commit(&mut self) -> Result<(), StateMachineError> {
        if !self.staged.dirty {
            return Ok(());
        }
        let _timer = crate::metrics::BACKEND_COMMIT.start_timer();
        let mut staged = std::mem::take(&mut self.staged);
        let mut applied = self.applied_index.to_be_bytes().to_vec();
        applied.extend_from_slice(&self.applied_term.to_be_bytes());
        staged.batch.put(APPLIED_KEY, applied);
        staged
            .batch
            .put(REVISION_KEY, self.revision.to_be_bytes().to_vec());
        self.engine
            .write_batch(staged.batch, WriteOptions::BUFFERED)?;
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
        self.engine.write_batch(batch, WriteOptions::BUFFERED)?;
        Ok(())
    }

    /// The whole engine as an export stream: the snapshot's data.
    pub fn export(&self) -> Result<Vec<u8>, StateMachineError> {
        let mut out = Vec::new();
        self.engine.export(&mut out)?;
        Ok(out)
    }

    /// Replaces the engine's content with a snapshot's data and reloads.
    pub fn import(&mut self, data: &[u8]) -> Result<(), StateMachineError> {
        self.staged = Staged::default();
        let mut input = data;
        self.engine.import(&mut input)?;
        self.reload()
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
    fn commands_round_trip() {
        let put = Command::Put {
            request: 7,
            key: b"k".to_vec(),
            value: b"v\x00".to_vec(),
        };
        assert_eq!(Command::decode(&put.encode()).unwrap(), put);
        let del = Command::Delete {
            request: 9,
            key: vec![],
        };
        assert_eq!(Command::decode(&del.encode()).unwrap(), del);
        assert!(Command::decode(b"\x01short").is_err());
    }

    #[test]
    fn applied_index_is_stored_with_the_data() {
        let engine = memory();
        let members = Members::default();
        let mut sm = StateMachine::open(Arc::clone(&engine), members.clone()).unwrap();
        let put = |request, value: &str| Command::Put {
            request,
            key: b"a".to_vec(),
            value: value.as_bytes().to_vec(),
        };
        sm.stage_command(1, 1, &put(1, "one")).unwrap();
        let second = sm.stage_command(2, 1, &put(2, "two")).unwrap();
        assert!(second.existed);
        sm.commit().unwrap();
        let reopened = StateMachine::open(Arc::clone(&engine), members).unwrap();
        assert_eq!(reopened.applied_index(), 2);
        assert_eq!(reopened.revision(), 2);
        let record = StateMachine::get(engine.as_ref(), b"a").unwrap().unwrap();
        assert_eq!(record.value, b"two");
        assert_eq!(
            (record.create_revision, record.mod_revision, record.version),
            (1, 2, 2)
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
        other.import(&sm.export().unwrap()).unwrap();
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
            learner: false,
        };
        sm.stage_conf_change(1, 1, cs.clone(), 2, Some(member.clone()))
            .unwrap();
        sm.stage_command(
            2,
            1,
            &Command::Put {
                request: 1,
                key: b"x".to_vec(),
                value: b"y".to_vec(),
            },
        )
        .unwrap();
        sm.commit().unwrap();
        let data = sm.export().unwrap();
        let other_members = Members::default();
        let mut other = StateMachine::open(memory(), other_members.clone()).unwrap();
        other.import(&data).unwrap();
        assert_eq!(other.applied_index(), 2);
        assert_eq!(other.conf_state(), &cs);
        assert_eq!(other_members.read().unwrap().get(&2), Some(&member));
    }
}
