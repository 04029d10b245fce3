//! The Raft node: one thread that owns `RawNode`, the WAL, the state machine
//! and the outbound transport, and runs the Ready loop.
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
//! 2. A snapshot from the leader is written to its file and marked in the WAL.
//! 3. New entries and the hard state are appended to the WAL and fsynced.
//! 4. The in-memory log (`RaftStorage`) takes the snapshot and the entries;
//!    the state machine imports the snapshot.
//! 5. `ready.persisted_messages()` (votes, append responses: promises about
//!    what is on disk) go out only now, after the fsync.
//! 6. Read states are matched to waiting linearizable reads.
//! 7. Committed entries are applied (one engine batch), waiting writers are
//!    answered.
//! 8. `advance`, then the `LightReady`: its commit index, messages and
//!    committed entries, then `advance_apply`.
//!
//! Finally reads whose read index is now applied are released, and a
//! snapshot is taken if `--snapshot-every` entries were applied since the
//! last one.
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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use engines::{Engine, EngineKind, EngineOptions};
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Message, Snapshot,
};
use raft::{RawNode, ReadState, SnapshotStatus, StateRole, Storage};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::raft_storage::RaftStorage;
use crate::snapshot::{SnapshotDir, SnapshotError};
use crate::state_machine::{Applied, Command, Member, Members, StateMachine, StateMachineError};
use crate::transport::Transport;
use crate::wal::{Wal, WalError, WalRecord};

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
}

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
}

/// Why a write was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// This node is not the leader; `leader` is the one it knows of.
    NotLeader { leader: Option<u64> },
    /// Refused before proposing (bad membership change, change in flight).
    Rejected(String),
    /// Raft could not take the proposal now (leadership in transfer);
    /// retrying shortly is expected to work.
    Unavailable(String),
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

/// What the Raft thread is asked to do.
pub enum Request {
    /// A raft message from a peer.
    Raft(Message),
    /// A client write.
    Propose {
        command: Command,
        reply: oneshot::Sender<WriteReply>,
    },
    /// A linearizable read: answered once the read index is applied.
    ReadIndex {
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    ChangeMembership {
        change: MemberChange,
        reply: oneshot::Sender<WriteReply>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
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
    pub requests: Sender<Request>,
    pub members: Members,
    pub engine: Arc<dyn Engine>,
    pub view: Arc<RwLock<RaftView>>,
    pub exit: watch::Receiver<Option<NodeExit>>,
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

/// Context carried in a conf change entry: who asked, and the member's
/// addresses, so every node learns them when it applies the change.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ChangeContext {
    request: u64,
    member: Option<Member>,
}

struct Waiter<T> {
    reply: oneshot::Sender<T>,
    since: Instant,
}

/// Waiters older than this are forgotten (their clients timed out long ago).
const FORGET_AFTER: Duration = Duration::from_secs(30);
/// A read index not answered in this time is asked again (a new leader drops
/// read requests until it has committed an entry in its term).
const READ_RETRY: Duration = Duration::from_millis(500);

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
    next_request: u64,
    writes: HashMap<u64, Waiter<WriteReply>>,
    reads: HashMap<u64, Waiter<Result<(), WriteError>>>,
    ready_reads: Vec<(u64, oneshot::Sender<Result<(), WriteError>>)>,
    snapshot_every: u64,
    keep_entries: u64,
    last_snapshot: u64,
    applied_writes: u64,
    tick: Duration,
    removed: bool,
}

fn bootstrap_entries(members: &[Member]) -> Result<Vec<Entry>, NodeError> {
    let mut entries = Vec::new();
    for (i, member) in members.iter().enumerate() {
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = member.id;
        let context = ChangeContext {
            request: 0,
            member: Some(member.clone()),
        };
        cc.set_context(serde_json::to_vec(&context).unwrap_or_default().into());
        let mut entry = Entry::default();
        entry.set_entry_type(EntryType::EntryConfChange);
        entry.term = 1;
        entry.index = i as u64 + 1;
        entry.set_data(
            cc.write_to_bytes()
                .map_err(|e| NodeError::Invalid(format!("encoding a bootstrap entry: {e}")))?
                .into(),
        );
        entries.push(entry);
    }
    Ok(entries)
}

/// Opens the node's storage, rebuilds raft's state and starts the Raft
/// thread. The peer listener must already be bound; it is served on
/// `runtime`, as is the outbound transport.
pub fn start(
    config: NodeConfig,
    runtime: tokio::runtime::Handle,
    peer_listener: tokio::net::TcpListener,
) -> Result<NodeHandle, NodeError> {
    if config.id == 0 {
        return Err(NodeError::Invalid("node id must be 1 or more".into()));
    }
    let (wal, mut wal_state) = Wal::open(&config.data_dir.join("wal"))?;
    let mut wal = wal;
    let snapshots = SnapshotDir::open(&config.data_dir.join("snap"))?;
    let latest = snapshots.load_latest()?;
    let engine = engines::open_shared(
        config.engine,
        &engine_dir(&config.data_dir),
        &config.engine_options,
    )?;
    let members: Members = Arc::new(RwLock::new(
        config
            .members
            .iter()
            .map(|m| (m.id, m.clone()))
            .collect::<BTreeMap<_, _>>(),
    ));
    let mut sm = StateMachine::open(Arc::clone(&engine), members.clone())?;

    let fresh = wal_state.entries.is_empty()
        && wal_state.hard_state == HardState::default()
        && wal_state.snapshot.is_none()
        && latest.is_none();
    if fresh && !config.join {
        if !config.members.iter().any(|m| m.id == config.id) {
            return Err(NodeError::Invalid(format!(
                "node {} is not in the initial cluster {:?}; add it to --initial-cluster or start it with --join",
                config.id,
                config.members.iter().map(|m| m.id).collect::<Vec<_>>()
            )));
        }
        let entries = bootstrap_entries(&config.members)?;
        let hs = HardState {
            term: 1,
            commit: entries.len() as u64,
            ..Default::default()
        };
        let mut records: Vec<WalRecord> = entries.iter().cloned().map(WalRecord::Entry).collect();
        records.push(WalRecord::HardState(hs.clone()));
        wal.append(&records)?;
        wal.sync()?;
        wal_state.entries = entries;
        wal_state.hard_state = hs;
        tracing::info!(
            id = config.id,
            members = config.members.len(),
            "bootstrapped a new cluster"
        );
    }

    let storage = RaftStorage::new();
    let mut snapshot_index = 0;
    if let Some(snapshot) = latest {
        snapshot_index = snapshot.get_metadata().index;
        if sm.applied_index() < snapshot_index {
            tracing::info!(
                snapshot_index,
                applied = sm.applied_index(),
                "restoring the state machine from the snapshot file"
            );
            sm.import(snapshot.get_data())?;
        }
        storage.log.wl().apply_snapshot(snapshot.clone())?;
        storage.set_snapshot(snapshot);
    }
    let entries: Vec<Entry> = wal_state
        .entries
        .into_iter()
        .filter(|e| e.index > snapshot_index)
        .collect();
    if let Some(first) = entries.first()
        && first.index > snapshot_index + 1
    {
        return Err(NodeError::Invalid(format!(
            "the WAL starts at entry {} but the newest snapshot ends at {snapshot_index}: entries are missing",
            first.index
        )));
    }
    storage.log.wl().append(&entries)?;
    let last_index = storage.log.last_index()?;
    let applied = sm.applied_index();
    if applied > last_index {
        return Err(NodeError::Invalid(format!(
            "the engine has applied entry {applied} but the log ends at {last_index}; \
             the engine directory does not belong with this WAL"
        )));
    }
    let mut hs = wal_state.hard_state;
    hs.commit = hs
        .commit
        .max(applied)
        .max(snapshot_index)
        .min(last_index.max(snapshot_index));
    {
        let mut log = storage.log.wl();
        log.set_hardstate(hs);
        log.set_conf_state(sm.conf_state().clone());
    }

    let raft_config = raft::Config {
        id: config.id,
        election_tick: config.election_ticks,
        heartbeat_tick: 1,
        applied,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    raft_config.validate()?;
    let raw = RawNode::new(
        &raft_config,
        storage.clone(),
        &crate::logger::raft_logger(config.id),
    )?;

    let (requests_tx, requests) = std::sync::mpsc::channel();
    let (exit_tx, exit) = watch::channel(None);
    let view = Arc::new(RwLock::new(RaftView::default()));
    let transport = Transport::new(runtime.clone(), members.clone(), requests_tx.clone());
    runtime.spawn(crate::transport::serve(peer_listener, requests_tx.clone()));
    let fsyncs = wal.fsync_counter();
    let fsync_micros = wal.fsync_micros();
    let start_request = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let node = Node {
        id: config.id,
        raw,
        storage,
        wal,
        snapshots,
        transport,
        requests,
        view: Arc::clone(&view),
        members: members.clone(),
        fsyncs,
        fsync_micros,
        next_request: start_request,
        writes: HashMap::new(),
        reads: HashMap::new(),
        ready_reads: Vec::new(),
        snapshot_every: config.snapshot_every.max(1),
        keep_entries: config.keep_entries,
        last_snapshot: snapshot_index.max(applied),
        applied_writes: 0,
        tick: config.tick,
        removed: false,
        sm,
    };
    std::thread::Builder::new()
        .name(format!("raft-{}", config.id))
        .spawn(move || {
            let outcome = node.run();
            if let Err(err) = &outcome {
                tracing::error!(%err, "raft node stopped");
            }
            let exit = match outcome {
                Ok(()) => NodeExit::Removed,
                Err(err) => NodeExit::Failed(err.to_string()),
            };
            let _ = exit_tx.send(Some(exit));
        })
        .map_err(NodeError::Thread)?;
    Ok(NodeHandle {
        id: config.id,
        requests: requests_tx,
        members,
        engine,
        view,
        exit,
    })
}

/// Where the engine keeps its files inside the data directory.
pub fn engine_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("engine")
}

impl Node {
    fn run(mut self) -> Result<(), NodeError> {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.requests.recv_timeout(wait) {
                Ok(request) => self.handle(request),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Group commit: everything that queued up during the last fsync
            // goes into the next Ready.
            while let Ok(request) = self.requests.try_recv() {
                self.handle(request);
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                next_tick += self.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.tick;
                }
                self.housekeeping();
            }
            self.on_ready()?;
            if self.storage.take_snapshot_request() {
                self.snapshot_now()?;
            }
            self.publish_view();
            if self.removed {
                tracing::warn!(
                    id = self.id,
                    "this node was removed from the cluster; shutting down"
                );
                return Ok(());
            }
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Raft(message) => {
                if let Err(err) = self.raw.step(message) {
                    tracing::debug!(%err, "raft refused a message");
                }
            }
            Request::Propose { command, reply } => self.propose(command, reply),
            Request::ReadIndex { reply } => self.read_index(reply),
            Request::ChangeMembership { change, reply } => self.change_membership(change, reply),
            Request::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Request::SnapshotReport { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
        }
    }

    fn new_request_id(&mut self) -> u64 {
        self.next_request = self.next_request.wrapping_add(1);
        self.next_request
    }

    fn not_leader(&self) -> WriteError {
        let leader = self.raw.raft.leader_id;
        WriteError::NotLeader {
            leader: (leader != 0).then_some(leader),
        }
    }

    // ANCHOR: propose
    /// Proposes a client write; the client is answered when it is applied.
    fn propose(&mut self, command: Command, reply: oneshot::Sender<WriteReply>) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let request = self.new_request_id();
        let command = match command {
            Command::Put { key, value, .. } => Command::Put {
                request,
                key,
                value,
            },
            Command::Delete { key, .. } => Command::Delete { request, key },
        };
        let proposed = self.raw.propose(vec![], command.encode());
        self.wait_for_apply(request, reply, proposed, |err| {
            WriteError::Unavailable(format!("raft dropped the proposal: {err}"))
        });
    }

    /// After a proposal: the client waits for the entry to be applied, or,
    /// if raft refused the proposal, is answered at once with `refused`.
    fn wait_for_apply(
        &mut self,
        request: u64,
        reply: oneshot::Sender<WriteReply>,
        proposed: raft::Result<()>,
        refused: impl FnOnce(raft::Error) -> WriteError,
    ) {
        match proposed {
            Ok(()) => {
                self.writes.insert(
                    request,
                    Waiter {
                        reply,
                        since: Instant::now(),
                    },
                );
            }
            Err(err) => {
                let _ = reply.send(Err(refused(err)));
            }
        }
    }
    // ANCHOR_END: propose

    // ANCHOR: read_index
    /// Starts a linearizable read: raft confirms with a quorum that the
    /// leader is still the leader and returns its commit index (the read
    /// index); the read is served once this node has applied that far.
    /// Followers forward the request to the leader, so reads scale out.
    fn read_index(&mut self, reply: oneshot::Sender<Result<(), WriteError>>) {
        if self.raw.raft.leader_id == 0 {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let context = self.new_request_id();
        self.reads.insert(
            context,
            Waiter {
                reply,
                since: Instant::now(),
            },
        );
        self.raw.read_index(context.to_le_bytes().to_vec());
    }

    fn on_read_state(&mut self, state: ReadState) {
        let Ok(bytes) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else {
            return;
        };
        if let Some(waiter) = self.reads.remove(&u64::from_le_bytes(bytes)) {
            self.ready_reads.push((state.index, waiter.reply));
        }
    }

    fn release_reads(&mut self) {
        let applied = self.sm.applied_index();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.ready_reads = waiting;
        for (_, reply) in done {
            let _ = reply.send(Ok(()));
        }
    }
    // ANCHOR_END: read_index

    // ANCHOR: conf_change
    /// Proposes one membership change, after checking it makes sense
    /// against the applied membership. Raft allows one change in flight.
    fn change_membership(&mut self, change: MemberChange, reply: oneshot::Sender<WriteReply>) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.raw.raft.pending_conf_index > self.raw.raft.raft_log.applied {
            let _ = reply.send(Err(WriteError::Rejected(
                "another membership change is still being applied; retry in a moment".into(),
            )));
            return;
        }
        let conf = self.sm.conf_state().clone();
        let is_voter = |id: u64| conf.voters.contains(&id);
        let is_learner = |id: u64| conf.learners.contains(&id);
        let (change_type, id, member) = match change {
            MemberChange::AddVoter(m) | MemberChange::AddLearner(m)
                if is_voter(m.id) || is_learner(m.id) =>
            {
                let _ = reply.send(Err(WriteError::Rejected(format!(
                    "member {} already exists; remove it first or promote it",
                    m.id
                ))));
                return;
            }
            MemberChange::AddVoter(m) => (
                ConfChangeType::AddNode,
                m.id,
                Some(Member {
                    learner: false,
                    ..m
                }),
            ),
            MemberChange::AddLearner(m) => (
                ConfChangeType::AddLearnerNode,
                m.id,
                Some(Member { learner: true, ..m }),
            ),
            MemberChange::Promote(id) => {
                if !is_learner(id) {
                    let _ = reply.send(Err(WriteError::Rejected(format!(
                        "member {id} is not a learner; only learners can be promoted"
                    ))));
                    return;
                }
                let member = self
                    .members
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .cloned();
                (
                    ConfChangeType::AddNode,
                    id,
                    member.map(|m| Member {
                        learner: false,
                        ..m
                    }),
                )
            }
            MemberChange::Remove(id) => {
                if !is_voter(id) && !is_learner(id) {
                    let _ = reply.send(Err(WriteError::Rejected(format!(
                        "member {id} does not exist"
                    ))));
                    return;
                }
                if is_voter(id) && conf.voters.len() == 1 {
                    let _ = reply.send(Err(WriteError::Rejected(
                        "cannot remove the last voter of the cluster".into(),
                    )));
                    return;
                }
                (ConfChangeType::RemoveNode, id, None)
            }
        };
        if id == 0 {
            let _ = reply.send(Err(WriteError::Rejected(
                "member id must be 1 or more".into(),
            )));
            return;
        }
        let request = self.new_request_id();
        let mut cc = ConfChange::default();
        cc.set_change_type(change_type);
        cc.node_id = id;
        let context = ChangeContext { request, member };
        match serde_json::to_vec(&context) {
            Ok(bytes) => cc.set_context(bytes.into()),
            Err(err) => {
                let _ = reply.send(Err(WriteError::Rejected(format!(
                    "cannot encode the membership change: {err}"
                ))));
                return;
            }
        }
        let proposed = self.raw.propose_conf_change(vec![], cc);
        self.wait_for_apply(request, reply, proposed, |err| {
            WriteError::Rejected(format!("raft refused the change: {err}"))
        });
    }

    /// Applies a committed conf change to raft and stages it in the state
    /// machine (membership and addresses, with the applied index).
    fn apply_conf_change(&mut self, entry: &Entry) -> Result<Option<u64>, NodeError> {
        let cc = match ConfChange::parse_from_bytes(entry.get_data()) {
            Ok(cc) => cc,
            Err(err) => {
                tracing::error!(index = entry.index, %err, "undecodable conf change skipped");
                self.sm.stage_noop(entry.index, entry.term);
                return Ok(None);
            }
        };
        let context: ChangeContext = serde_json::from_slice(cc.get_context()).unwrap_or_default();
        let conf_state: ConfState = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(err) => {
                tracing::warn!(index = entry.index, %err, "conf change not applicable; skipped");
                self.sm.stage_noop(entry.index, entry.term);
                return Ok(Some(context.request));
            }
        };
        let id = cc.node_id;
        let member = match cc.get_change_type() {
            ConfChangeType::RemoveNode => None,
            kind => {
                let learner = kind == ConfChangeType::AddLearnerNode;
                let known = self
                    .members
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .cloned();
                context
                    .member
                    .or(known)
                    .map(|m| Member { id, learner, ..m })
            }
        };
        tracing::info!(index = entry.index, node = id, change = ?cc.get_change_type(), voters = ?conf_state.voters, learners = ?conf_state.learners, "membership changed");
        if cc.get_change_type() == ConfChangeType::RemoveNode {
            self.transport.remove(id);
            if id == self.id {
                self.removed = true;
            }
        }
        self.storage.log.wl().set_conf_state(conf_state.clone());
        self.sm
            .stage_conf_change(entry.index, entry.term, conf_state, id, member)?;
        Ok(Some(context.request))
    }
    // ANCHOR_END: conf_change

    // ANCHOR: ready_loop
    fn on_ready(&mut self) -> Result<(), NodeError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(soft) = ready.ss()
            && soft.raft_state != StateRole::Leader
        {
            self.fail_pending_writes();
        }

        // 1. The leader may replicate before its own fsync.
        self.send(ready.take_messages());

        // 2-3. Snapshot, entries and hard state: durable before anything
        // that depends on them leaves this node.
        let snapshot = (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone());
        let mut records = Vec::with_capacity(ready.entries().len() + 2);
        if let Some(snapshot) = &snapshot {
            self.snapshots.save(snapshot)?;
            let meta = snapshot.get_metadata();
            records.push(WalRecord::Snapshot {
                index: meta.index,
                term: meta.term,
            });
        }
        records.extend(ready.entries().iter().cloned().map(WalRecord::Entry));
        if let Some(hs) = ready.hs() {
            records.push(WalRecord::HardState(hs.clone()));
        }
        self.wal.append(&records)?;
        if ready.must_sync() || snapshot.is_some() {
            self.wal.sync()?;
        }

        // 4. The in-memory log, and the state machine for a snapshot.
        if let Some(snapshot) = snapshot {
            self.install_snapshot(snapshot)?;
        }
        if !ready.entries().is_empty() {
            self.storage.log.wl().append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.storage.log.wl().set_hardstate(hs.clone());
        }

        // 5. Votes and append responses promise persisted state: only now.
        self.send(ready.take_persisted_messages());

        // 6-7. Reads and committed entries.
        for state in ready.take_read_states() {
            self.on_read_state(state);
        }
        self.apply(ready.take_committed_entries())?;

        // 8. Advance, and what became possible after this persist.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.log.wl().mut_hard_state().commit = commit;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();

        self.release_reads();
        self.maybe_snapshot()
    }
    // ANCHOR_END: ready_loop

    /// A leader that steps down cannot tell its waiting clients whether
    /// their writes will commit (a new leader may still commit them), so it
    /// says so at once instead of letting them wait for the timeout.
    fn fail_pending_writes(&mut self) {
        for (_, waiter) in self.writes.drain() {
            let _ = waiter.reply.send(Err(WriteError::Unavailable(
                "leadership changed before the write was applied; it may or may not be applied, \
                 read the key to find out"
                    .into(),
            )));
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.transport.send(message);
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), NodeError> {
        let index = snapshot.get_metadata().index;
        tracing::info!(
            index,
            bytes = snapshot.get_data().len(),
            "installing a snapshot from the leader"
        );
        self.storage.log.wl().apply_snapshot(snapshot.clone())?;
        self.sm.import(snapshot.get_data())?;
        if self.sm.applied_index() != index {
            return Err(NodeError::Invalid(format!(
                "snapshot at index {index} holds a state machine applied to {}",
                self.sm.applied_index()
            )));
        }
        self.storage.set_snapshot(snapshot);
        self.last_snapshot = index;
        if !self.sm.conf_state().voters.contains(&self.id)
            && !self.sm.conf_state().learners.contains(&self.id)
        {
            tracing::warn!(
                id = self.id,
                "the snapshot's membership does not include this node"
            );
        }
        Ok(())
    }

    // ANCHOR: apply
    /// Applies committed entries in one engine batch, then answers the
    /// clients that wait for them.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut answered: Vec<(u64, WriteReply)> = Vec::new();
        for entry in &entries {
            if entry.index <= self.sm.applied_index() {
                continue;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.get_data().is_empty() => {
                    self.sm.stage_noop(entry.index, entry.term);
                }
                EntryType::EntryNormal => match Command::decode(entry.get_data()) {
                    Ok(command) => {
                        let applied = self.sm.stage_command(entry.index, entry.term, &command)?;
                        self.applied_writes += 1;
                        answered.push((command.request(), Ok(applied)));
                    }
                    Err(reason) => {
                        tracing::error!(index = entry.index, reason, "undecodable entry skipped");
                        self.sm.stage_noop(entry.index, entry.term);
                    }
                },
                EntryType::EntryConfChange => {
                    if let Some(request) = self.apply_conf_change(entry)? {
                        let applied = Applied {
                            revision: self.sm.revision(),
                            existed: true,
                        };
                        answered.push((request, Ok(applied)));
                    }
                }
                EntryType::EntryConfChangeV2 => self.sm.stage_noop(entry.index, entry.term),
            }
        }
        self.sm.commit()?;
        for (request, reply) in answered {
            if let Some(waiter) = self.writes.remove(&request) {
                let _ = waiter.reply.send(reply);
            }
        }
        Ok(())
    }
    // ANCHOR_END: apply

    // ANCHOR: snapshot
    /// Every `snapshot_every` applied entries: export the engine, save the
    /// snapshot file, compact the in-memory log (keeping `keep_entries` for
    /// followers that are only a little behind) and release WAL segments
    /// the snapshot covers.
    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        if self.sm.applied_index() < self.last_snapshot + self.snapshot_every {
            return Ok(());
        }
        self.snapshot_now()
    }

    /// Takes a snapshot at the applied index, unless the newest one is
    /// already there.
    fn snapshot_now(&mut self) -> Result<(), NodeError> {
        let applied = self.sm.applied_index();
        if applied == 0 || applied <= self.storage.snapshot_index() {
            return Ok(());
        }
        let started = Instant::now();
        let mut snapshot = Snapshot::default();
        snapshot.set_data(self.sm.export()?.into());
        let meta = snapshot.mut_metadata();
        meta.index = applied;
        meta.term = self.sm.applied_term();
        meta.set_conf_state(self.sm.conf_state().clone());
        self.snapshots.save(&snapshot)?;
        // The engine's buffered writes must be durable before the WAL
        // entries that could rebuild them go away.
        self.sm.sync()?;
        let compact_to = applied.saturating_sub(self.keep_entries);
        if compact_to > self.storage.log.first_index()? {
            self.storage.log.wl().compact(compact_to)?;
        }
        let released = self
            .wal
            .release_up_to(applied.saturating_sub(self.keep_entries))?;
        tracing::info!(
            index = applied,
            bytes = snapshot.get_data().len(),
            released_segments = released,
            millis = started.elapsed().as_millis() as u64,
            "snapshot taken"
        );
        self.storage.set_snapshot(snapshot);
        self.last_snapshot = applied;
        Ok(())
    }
    // ANCHOR_END: snapshot

    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.writes
            .retain(|_, w| now.duration_since(w.since) < FORGET_AFTER && !w.reply.is_closed());
        self.reads
            .retain(|_, w| now.duration_since(w.since) < FORGET_AFTER && !w.reply.is_closed());
        self.ready_reads.retain(|(_, reply)| !reply.is_closed());
        if self.raw.raft.leader_id != 0 {
            let retry: Vec<u64> = self
                .reads
                .iter()
                .filter(|(_, w)| now.duration_since(w.since) >= READ_RETRY)
                .map(|(context, _)| *context)
                .collect();
            for context in retry {
                self.raw.read_index(context.to_le_bytes().to_vec());
            }
        }
    }

    fn publish_view(&self) {
        let view = RaftView {
            leader: self.raw.raft.leader_id,
            is_leader: self.raw.raft.state == StateRole::Leader,
            term: self.raw.raft.term,
        };
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
    }

    fn status(&self) -> NodeStatus {
        let raft = &self.raw.raft;
        let role = match raft.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        };
        let conf = self.sm.conf_state();
        let role = if conf.learners.contains(&self.id) && raft.state == StateRole::Follower {
            "learner"
        } else {
            role
        };
        let mut voters = conf.voters.clone();
        voters.sort_unstable();
        let mut learners = conf.learners.clone();
        learners.sort_unstable();
        NodeStatus {
            id: self.id,
            role: role.to_string(),
            leader: raft.leader_id,
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.sm.applied_index(),
            revision: self.sm.revision(),
            snapshot_index: self.storage.snapshot_index(),
            first_log_index: self.storage.log.first_index().unwrap_or_default(),
            last_log_index: raft.raft_log.last_index(),
            voters,
            learners,
            members: self
                .members
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect(),
            engine: self.sm.engine().kind().to_string(),
            wal_fsyncs: self.fsyncs.load(Ordering::Relaxed),
            wal_fsync_micros: self.fsync_micros.load(Ordering::Relaxed),
            applied_writes: self.applied_writes,
        }
    }
}
