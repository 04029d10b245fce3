//! # raft: the consensus layer of a metcd node
//!
//! One thread owns `RawNode`, the WAL, the state machine and the outbound
//! transport, and runs the Ready loop.
//!
//! Everything else talks to it through a channel of [`Request`]s: raft
//! messages from peers, client writes, read-index requests, membership
//! changes, status queries. The loop wakes on a request or on the next tick
//! (every [`NodeConfig::tick`], 100 ms by default), drains **every** request
//! waiting in the channel, and then handles one `Ready`. That drain is the
//! group commit: all writes that arrived while the previous fsync ran are
//! proposed together, land in the same `Ready`, and share one WAL fsync.
//!
//! # The Ready loop (raft-rs 0.7 order)
//!
//! 1. `ready.messages()`: on the leader, appends to followers may go out at
//!    once, before the leader's own fsync (Raft thesis §10.2.1).
//! 2. A snapshot from the leader (its file already streamed in, see
//!    [`snapshot_stream`]) is moved into place and marked in the WAL.
//! 3. New entries and the hard state are appended to the WAL and fsynced.
//! 4. The in-memory log (`RaftStorage`) takes the snapshot and the entries;
//!    the state machine installs the snapshot from its file.
//! 5. `ready.persisted_messages()` (votes, append responses: promises about
//!    what is on disk) go out only now, after the fsync.
//! 6. Read states are matched to waiting linearizable reads.
//! 7. Committed entries are applied (one engine batch), waiting writers are
//!    answered.
//! 8. `advance`, then the `LightReady`: its commit index, messages and
//!    committed entries, then `advance_apply`.
//!
//! Finally reads whose read index is now applied are released, and a
//! snapshot is started in the background if `--snapshot-every` entries were
//! applied since the last one; each loop iteration publishes a finished one
//! ([`snapshot_policy`]).
//!
//! # Starting
//!
//! A node rebuilds its raft log from the newest snapshot file and the WAL.
//! The engine knows its applied index (stored with the data); raft is told
//! (`Config::applied`) and resumes applying right after it. A memory engine
//! starts empty, so it imports the snapshot and replays the rest of the log.
//! A brand-new member of the initial cluster writes the bootstrap entries
//! (one `AddNode` conf change per initial member, term 1, committed), the
//! same on every node, as etcd does; a node started with `--join` starts
//! with an empty log and learns everything from the leader.

//!
//! # Files
//!
//! | file | one concept |
//! |---|---|
//! | [`handle`] | how the rest of the process talks to the Raft thread: requests, replies, status |
//! | [`boot`] | start and recovery: WAL + snapshot file + engine -> raft's state, bootstrap |
//! | [`identity`] | the cluster id: derived at bootstrap, learned at join, stored, checked |
//! | [`ready_loop`] | the loop itself: wake, drain requests, tick, handle one `Ready`, apply |
//! | [`pending`] | clients waiting for their proposals to apply and their reads to be released |
//! | [`membership`] | proposing and applying membership changes |
//! | [`snapshot_policy`] | when a snapshot is taken, and installing one from the leader |
//! | [`storage`] | the in-memory log raft reads (`raft::Storage`) |
//! | [`wal`] | the write-ahead log on disk |
//! | [`snapshot_file`] | snapshot files on disk |
//! | [`snapshot_stream`] | a snapshot file streamed to a follower over its own connection |
//! | [`transport`] | raft messages between peers over TCP, after a handshake that names cluster and members |
//!
//! A PUT enters in `api::http` or `api::grpc::kv`, becomes a
//! [`Request::Propose`] (handle), is proposed in `pending` (on a follower,
//! raft forwards it to the leader in a `MsgProp`), made durable and applied
//! in `ready_loop`, written to the engine by `crate::state_machine`, and
//! answered from `pending` on the member that received it.

pub mod boot;
pub mod handle;
pub mod identity;
pub mod lab_break;
mod membership;
mod pending;
pub mod publish;
mod ready_loop;
pub mod snapshot_file;
mod snapshot_policy;
pub mod snapshot_stream;
pub mod storage;
pub mod transport;
pub mod wal;

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use raft::RawNode;

pub use boot::{engine_dir, start};
pub use handle::{
    DEFAULT_KEEP_ENTRIES, DEFAULT_SNAPSHOT_EVERY, MemberChange, NodeConfig, NodeError, NodeExit,
    NodeHandle, NodeStatus, Proposer, RaftView, Request, WriteError, WriteReply,
};

use crate::state_machine::{Members, StateMachine};
use pending::Pending;
use snapshot_file::SnapshotDir;
use storage::RaftStorage;
use transport::Transport;
use wal::Wal;

/// Everything the Raft thread owns. Defined here so that every file of this
/// module, each holding one part of the loop, can reach its fields.
struct Node {
    id: u64,
    raw: RawNode<RaftStorage>,
    storage: RaftStorage,
    wal: Wal,
    snapshots: SnapshotDir,
    sm: StateMachine,
    transport: Transport,
    requests: Receiver<Request>,
    view: Arc<RwLock<RaftView>>,
    members: Members,
    fsyncs: Arc<AtomicU64>,
    fsync_micros: Arc<AtomicU64>,
    pending: Pending,
    snapshot_every: u64,
    keep_entries: u64,
    last_snapshot: u64,
    applied_writes: u64,
    tick: Duration,
    removed: bool,
    /// The snapshot being built in the background, if any.
    snapshot_build: Option<snapshot_policy::SnapshotBuild>,
    /// Clients waiting for the snapshot being built.
    snapshot_waiters: Vec<snapshot_policy::SnapshotWaiter>,
    /// A deliberate bug for the book's labs (`--lab-break`); `None` always
    /// but in a lab.
    lab_break: Option<lab_break::LabBreak>,
    /// This member's addresses, to publish where its record lacks them.
    publisher: publish::Publisher,
}
