//! How the rest of the process talks to the Raft thread.
//!
//! The Raft thread owns all consensus state; the HTTP API, the transport and
//! the binary reach it only through a [`NodeHandle`]: a channel of
//! [`Request`]s, each carrying a `oneshot` for its answer, plus a few shared
//! read-only views (the role and leader for redirects, the member table for
//! addresses, the engine for serializable reads).
//!
//! # Outcomes
//!
//! A write's answer says whether it was applied, and when it was not, whether
//! that is *known*: [`WriteError::NotLeader`], [`WriteError::Rejected`] and
//! [`WriteError::NotApplied`] are definite (the entry was never proposed, raft
//! dropped it, or another entry took its place in the log), so the client may
//! safely retry; [`WriteError::Unknown`] is not (the entry may still commit).
//!
//! # Admission
//!
//! Client requests (writes, reads, membership changes) carry a [`Queued`]
//! ticket taken from an [`Admission`] counter before they are sent; the
//! Raft thread drops the ticket when it takes the request off the channel.
//! The number of client requests waiting for the Raft thread is therefore
//! bounded, and a request over the bound is refused before it is sent.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use engines::{Engine, EngineKind, EngineOptions};
use raft::prelude::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use super::identity::{ClusterId, Identity};
use super::snapshot_file::SnapshotError;
use super::wal::WalError;
use crate::state_machine::{
    Applied, Command, KvReader, Member, Members, Removed, StateMachineError,
};

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("state machine: {0}")]
    StateMachine(#[from] StateMachineError),
    #[error("storage engine: {0}")]
    Engine(#[from] engines::EngineError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("could not start the raft thread: {0}")]
    Thread(std::io::Error),
    #[error("the raft thread panicked: {0}")]
    Panicked(String),
}

/// Applied entries between two snapshots unless `--snapshot-every` says
/// otherwise: etcd's `--snapshot-count` default. A snapshot exports the
/// whole engine, so at 10,000 (raftexample's figure, metcd's earlier
/// default) the export thread took 9-11% of a member's CPU under 256-client
/// puts (`results/vs-etcd/profile`); the cost is up to this many entries in
/// memory and in the WAL, and their replay at a restart.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;

/// Entries kept behind a snapshot for a follower a little behind, unless
/// `--keep-entries` says otherwise: etcd's snapshot catch-up entries.
pub const DEFAULT_KEEP_ENTRIES: u64 = 5_000;

/// How a node is run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub engine: EngineKind,
    pub engine_options: EngineOptions,
    /// Take a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, for followers to catch up
    /// without a snapshot.
    pub keep_entries: u64,
    pub tick: Duration,
    /// Ticks without a leader before an election (randomised up to twice).
    pub election_ticks: usize,
    /// The members this node knows of at start: the initial cluster, or the
    /// cluster it joins. Their addresses seed the transport.
    pub members: Vec<Member>,
    /// Join an existing cluster (start with an empty log) instead of
    /// bootstrapping `members` as a new one.
    pub join: bool,
    /// `--initial-cluster-token`: part of the cluster id at bootstrap.
    pub cluster_token: String,
    /// The cluster id learned from the cluster at `--join`, if asked.
    pub cluster_id: Option<ClusterId>,
    /// A deliberate bug for the book's "break it" labs; `None` otherwise.
    pub lab_break: Option<super::lab_break::LabBreak>,
    /// The addresses this member listens on, published through Raft where
    /// its member record lacks them (see `publish`).
    pub publish: Option<super::publish::Publication>,
}

/// Why a write was not applied, or why its outcome is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// This node is not the leader; `leader` is the one it knows of.
    /// Nothing was proposed.
    NotLeader { leader: Option<u64> },
    /// Refused, definitely not applied: a membership change that makes no
    /// sense, one while another is in flight, or one raft refused to apply.
    Rejected(String),
    /// Definitely not applied, and retrying is expected to work: raft
    /// dropped the proposal (leadership in transfer), or the entry was
    /// overwritten by a new leader's entry at its index.
    NotApplied(String),
    /// The entry was proposed and this node cannot tell whether it will be
    /// applied (a snapshot replaced the log past it); read to find out.
    Unknown(String),
}

impl WriteError {
    /// True when the write certainly was not applied (and never will be).
    pub fn is_definite(&self) -> bool {
        !matches!(self, WriteError::Unknown(_))
    }
}

pub type WriteReply = Result<Applied, WriteError>;

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberChange {
    AddVoter(Member),
    AddLearner(Member),
    Promote(u64),
    Remove(u64),
}

/// Which members may propose a write (see [`Request::Propose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proposer {
    /// Only the leader: a follower answers [`WriteError::NotLeader`].
    LeaderOnly,
    /// Any member: a follower hands the entry to raft, which forwards it to
    /// the leader in a `MsgProp`, as etcd's members do.
    AnyMember,
}

/// What the Raft thread is asked to do.
pub enum Request {
    /// A raft message from a peer.
    Raft(Message),
    /// A client write.
    Propose {
        command: Command,
        reply: oneshot::Sender<WriteReply>,
        queued: Queued,
        /// Who may propose it: on a follower, [`Proposer::AnyMember`] sends
        /// the proposal to the leader inside Raft, while
        /// [`Proposer::LeaderOnly`] answers `NotLeader` (the HTTP API
        /// redirects; the lease expiry must not revoke from a former leader).
        proposer: Proposer,
    },
    /// A linearizable read: answered once the read index is applied.
    ReadIndex {
        reply: oneshot::Sender<Result<(), WriteError>>,
        queued: Queued,
    },
    ChangeMembership {
        change: MemberChange,
        reply: oneshot::Sender<WriteReply>,
        queued: Queued,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    /// A snapshot file of the state machine, at least as new as the
    /// applied index when asked (the Maintenance API's Snapshot).
    Snapshot {
        reply: oneshot::Sender<Result<PathBuf, String>>,
    },
    /// Hand leadership to another voter (the Maintenance API's
    /// MoveLeader); answered once raft has started the transfer.
    TransferLeader {
        to: u64,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// The transport's report on a snapshot message.
    SnapshotReport {
        to: u64,
        ok: bool,
    },
}

/// What `/-/status` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    pub role: String,
    pub leader: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub snapshot_index: u64,
    pub first_log_index: u64,
    pub last_log_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub members: Vec<Member>,
    pub engine: String,
    pub wal_fsyncs: u64,
    /// Total time spent in WAL `fdatasync`, in microseconds.
    pub wal_fsync_micros: u64,
    pub applied_writes: u64,
    /// ReadIndex rounds started (one per batch of linearizable reads, and
    /// one per re-issue of a stuck batch).
    #[serde(default)]
    pub read_index_rounds: u64,
    /// Linearizable reads served by those rounds.
    #[serde(default)]
    pub read_index_reads: u64,
}

/// Role and leader as last seen by the Raft thread, for the HTTP layer's
/// fast path (redirects without a round trip to the Raft thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct RaftView {
    pub leader: u64,
    pub is_leader: bool,
    pub term: u64,
}

/// How the node stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeExit {
    /// A membership change removed this node.
    Removed,
    /// An error the node cannot continue after (disk, corruption).
    Failed(String),
}

/// The handle the rest of the process uses to reach the node.
#[derive(Clone)]
pub struct NodeHandle {
    pub id: u64,
    /// This node's cluster and member id (see `identity`).
    pub identity: Identity,
    pub requests: Sender<Request>,
    pub members: Members,
    /// The engine, through the install gate (its kind, maintenance).
    pub engine: Arc<dyn Engine>,
    /// Reads of the key-value data (etcd's MVCC store).
    pub kv: KvReader,
    /// The watchers of this member's store.
    pub watch: crate::watch::WatchHub,
    /// Ids of removed members (never reused).
    pub removed: Removed,
    /// The member's data directory (its size is reported by Status).
    pub data_dir: PathBuf,
    pub view: Arc<RwLock<RaftView>>,
    pub exit: watch::Receiver<Option<NodeExit>>,
    /// etcd's leases (`crate::lease`): the lessor the state machine keeps
    /// current, the id generator and the minimum TTL.
    pub leases: crate::lease::Leases,
}

/// Bounds the client requests waiting for the Raft thread: one counter per
/// node, shared by every HTTP connection.
#[derive(Debug, Clone)]
pub struct Admission {
    waiting: Arc<AtomicUsize>,
    limit: usize,
}

/// One admitted request, counted until the Raft thread takes it (drops it).
#[derive(Debug)]
pub struct Queued(Arc<AtomicUsize>);

impl Admission {
    /// At most `limit` requests waiting; `limit` is at least 1.
    pub fn new(limit: usize) -> Admission {
        Admission {
            waiting: Arc::new(AtomicUsize::new(0)),
            limit: limit.max(1),
        }
    }

    /// A ticket, or `None` when `limit` requests are already waiting.
    pub fn admit(&self) -> Option<Queued> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Queued(Arc::clone(&self.waiting)))
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl NodeHandle {
    pub fn view(&self) -> RaftView {
        *self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn member(&self, id: u64) -> Option<Member> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }
}
