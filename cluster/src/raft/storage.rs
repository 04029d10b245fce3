//! The log raft reads: an in-memory copy of the WAL plus the latest snapshot.
//!
//! raft-rs asks its `Storage` for entries, terms and snapshots. Like etcd's
//! raftexample, a node keeps the log it needs in raft's `MemStorage` and
//! rebuilds it at start from the latest snapshot file and the WAL; the WAL is
//! the durable copy, this is the indexed one. [`RaftStorage`] answers a
//! snapshot request with the metadata (index, term, `ConfState`) of the
//! newest snapshot file the node holds, and no data: the data stays in the
//! file, and the transport streams it to the follower on its own connection
//! when raft sends the `MsgSnapshot` (see `super::snapshot_stream`). So
//! raft never holds a snapshot's data in memory, on either side.
//!
//! A stored snapshot taken before a member was added does not list that
//! member, and raft on the new member refuses it. Such a request (or one
//! made before any snapshot exists) is answered "temporarily unavailable"
//! and flagged; the Ready loop sees the flag
//! ([`RaftStorage::take_snapshot_request`]) and starts building a fresh
//! snapshot in the background (`super::snapshot_policy`). Until the build
//! is done, raft's further attempts get the same answer; once it is done
//! and set here, raft's next attempt sends it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use raft::prelude::{Entry, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// `MemStorage` plus the metadata of the node's newest snapshot file.
/// Cloning shares both.
#[derive(Clone, Default)]
pub struct RaftStorage {
    pub log: MemStorage,
    snapshot: Arc<RwLock<Snapshot>>,
    wanted: Arc<AtomicBool>,
}

impl RaftStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the snapshot (metadata only) that later snapshot requests are
    /// answered with.
    pub fn set_snapshot(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }

    /// Whether raft asked for a snapshot the stored one cannot serve (none
    /// yet, or one that predates the requesting member); clears the flag.
    pub fn take_snapshot_request(&self) -> bool {
        self.wanted.swap(false, Ordering::Relaxed)
    }

    /// Index of the newest snapshot (0 if none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get_metadata()
            .index
    }
}

impl Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.log.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.log.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.log.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.log.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.log.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let meta = snapshot.get_metadata();
        let conf = meta.get_conf_state();
        let lists_peer = [
            &conf.voters,
            &conf.learners,
            &conf.voters_outgoing,
            &conf.learners_next,
        ]
        .iter()
        .any(|ids| ids.contains(&to));
        if meta.index == 0 || meta.index < request_index || !lists_peer {
            // The node starts a fresh one in the background; raft asks
            // again on its next attempts to replicate to `to`.
            self.wanted.store(true, Ordering::Relaxed);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(snapshot.clone())
    }
}
