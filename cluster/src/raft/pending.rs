//! Clients waiting on the Raft thread: writes until their entry is applied,
//! linearizable reads until their read index is applied.
//!
//! # Writes: keyed by (index, term)
//!
//! raft-rs appends a proposal to the leader's log at once, so right after a
//! successful `propose` the leader knows the entry's index (its last index)
//! and term (its current term). That pair names the proposal uniquely in the
//! whole cluster: one leader per term, and a leader never rewrites its own
//! entries. The waiter is parked under the index with the term beside it, and
//! answered when the entry at that index is applied on this node:
//!
//! - same term: it is this proposal; the client gets its result (applied, or
//!   for a membership change that raft refused, the refusal);
//! - another term: a new leader overwrote the proposal, which can therefore
//!   never commit: *not applied*, definite, safe to retry.
//!
//! A leader that steps down keeps its waiters: as a follower it still applies
//! the entry at each waited index and learns the outcome. Only when the log
//! moves past a waited index without applying it (a snapshot from the leader
//! replaced it) is the outcome unknown. A client that gives up first (the
//! HTTP request timeout) is told "unknown" by the HTTP layer, and its waiter
//! is forgotten at the next housekeeping.
//!
//! # Writes a follower received: keyed by proposal id
//!
//! A follower does not send a client's write to the leader as another gRPC
//! call: it proposes it to its own raft, which forwards the entry to the
//! leader in a `MsgProp` (batched with the other Raft messages to that
//! peer), as etcd's members do. The follower cannot know the index the
//! leader will give the entry, so the entry's `context` carries
//! `(proposer member id, proposal id)` ([`proposal_context`]; ids start at
//! the node's boot time in nanoseconds, so a restarted node never reuses
//! one), and the waiter is parked under that id. When this member applies
//! an entry whose context names it, the waiter gets the result its own
//! apply produced, so a read on this member after the answer sees the
//! write. A forwarded proposal the leader drops (it stepped down, or is
//! transferring leadership) is never answered: its client times out with
//! an unknown outcome, as etcd's "request timed out". A snapshot installed
//! over the log answers every forwarded waiter "unknown".
//!
//! # Reads: one ReadIndex round per batch
//!
//! Linearizable reads are queued as they arrive. At most one ReadIndex round
//! is outstanding: when none is, every queued read goes into a new round with
//! one context (so one heartbeat broadcast serves them all); reads arriving
//! while a round is out wait for the next one, as etcd's read loop does. The
//! round's read state releases all its reads together once that index is
//! applied. A round that gets no answer within [`READ_RETRY`] (a new leader
//! drops read requests until it has committed an entry in its term) is
//! re-issued once, with a new context and the reads queued since, so a stuck
//! round costs one broadcast per `READ_RETRY`, not one per read per tick. A
//! new context is needed: an answer to the old one could carry a read index
//! older than the reads that joined.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use raft::ReadState;
use raft::StateRole;
use tokio::sync::oneshot;

use super::Node;
use super::handle::{Proposer, WriteError, WriteReply};
use super::lab_break::LabBreak;
use crate::state_machine::Command;

/// A client waiting for its proposal, parked under the entry's index (or,
/// for a proposal forwarded to the leader, under its proposal id).
pub(super) struct WriteWaiter {
    /// The term raft gave the entry when it was proposed (0 when forwarded:
    /// the leader gives it).
    term: u64,
    reply: oneshot::Sender<WriteReply>,
    since: Instant,
}

/// A client waiting for a linearizable read.
pub(super) struct ReadWaiter {
    reply: oneshot::Sender<Result<(), WriteError>>,
    since: Instant,
}

/// One ReadIndex round in flight: its context and the reads it serves.
struct ReadRound {
    context: u64,
    reads: Vec<ReadWaiter>,
    issued: Instant,
}

/// Waiters older than this are forgotten (their clients timed out long ago).
const FORGET_AFTER: Duration = Duration::from_secs(30);
/// A read round not answered in this time is issued again (a new leader
/// drops read requests until it has committed an entry in its term).
pub(super) const READ_RETRY: Duration = Duration::from_millis(500);

/// The waiting clients.
pub(super) struct Pending {
    next_context: u64,
    /// Write and membership waiters by the index of their entry.
    writes: BTreeMap<u64, Vec<WriteWaiter>>,
    /// Writes this follower forwarded to the leader, by proposal id.
    forwarded: HashMap<u64, WriteWaiter>,
    /// Reads that arrived since the current round was issued.
    queued_reads: Vec<ReadWaiter>,
    round: Option<ReadRound>,
    /// Reads whose read index is known, waiting for it to be applied.
    ready_reads: Vec<(u64, Vec<ReadWaiter>)>,
    /// ReadIndex rounds issued (new and re-issued), for the status.
    pub(super) read_index_rounds: u64,
    /// Reads released by those rounds.
    pub(super) read_index_reads: u64,
}

impl Pending {
    pub(super) fn new(first_context: u64) -> Self {
        Pending {
            next_context: first_context,
            writes: BTreeMap::new(),
            forwarded: HashMap::new(),
            queued_reads: Vec::new(),
            round: None,
            ready_reads: Vec::new(),
            read_index_rounds: 0,
            read_index_reads: 0,
        }
    }

    fn new_context(&mut self) -> u64 {
        self.next_context = self.next_context.wrapping_add(1);
        self.next_context
    }

    /// Parks a client until the entry at `index` is applied. Several
    /// waiters may share an index, each with its own term: this node may
    /// propose at an index again after a new leader truncated its log, while
    /// the older entry survives on another node and may still commit there.
    fn park(&mut self, index: u64, term: u64, reply: oneshot::Sender<WriteReply>) {
        self.writes.entry(index).or_default().push(WriteWaiter {
            term,
            reply,
            since: Instant::now(),
        });
    }

    /// Answers the waiters of the entry at `index`, applied with `term`:
    /// `reply` to the one whose entry it is, "not applied" to the others
    /// (a committed entry is final, so theirs can never commit).
    pub(super) fn settle(&mut self, index: u64, term: u64, reply: WriteReply) {
        for waiter in self.writes.remove(&index).unwrap_or_default() {
            let answer = if waiter.term == term {
                reply.clone()
            } else {
                Err(overwritten(index, waiter.term, term))
            };
            let _ = waiter.reply.send(answer);
        }
    }

    /// Answers the waiter of the forwarded proposal `id`, if it still waits.
    pub(super) fn settle_forwarded(&mut self, id: u64, reply: WriteReply) {
        if let Some(waiter) = self.forwarded.remove(&id) {
            let _ = waiter.reply.send(reply);
        }
    }

    /// A snapshot replaced this node's log: a forwarded proposal may be in
    /// it or not, and no entry will name it any more.
    pub(super) fn forwarded_replaced_by_snapshot(&mut self) {
        for (_, waiter) in self.forwarded.drain() {
            let _ = waiter.reply.send(Err(WriteError::Unknown(
                "this member installed a snapshot from the leader before it applied the write it \
                 forwarded; the write may or may not be applied, read the key to find out"
                    .into(),
            )));
        }
    }

    /// Waiters at or below `applied` that were not answered when their index
    /// was applied: the log was replaced past them by a snapshot, so this
    /// node cannot tell which entry was there.
    pub(super) fn settle_skipped(&mut self, applied: u64) {
        let above = self.writes.split_off(&(applied + 1));
        let skipped = std::mem::replace(&mut self.writes, above);
        for (index, waiter) in skipped
            .into_iter()
            .flat_map(|(i, ws)| ws.into_iter().map(move |w| (i, w)))
        {
            let _ = waiter.reply.send(Err(WriteError::Unknown(format!(
                "entry {index} was replaced by a snapshot from the leader before this node \
                 applied it; the write may or may not be applied, read the key to find out"
            ))));
        }
    }
}

/// The context of an entry a follower forwards: `proposer` member id and
/// proposal id, both u64 little-endian.
pub(super) fn proposal_context(proposer: u64, id: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16);
    context.extend_from_slice(&proposer.to_le_bytes());
    context.extend_from_slice(&id.to_le_bytes());
    context
}

/// The (proposer, proposal id) of a forwarded entry's context; `None` for
/// any other context (a leader's own proposals carry none).
pub(super) fn forwarded_by(context: &[u8]) -> Option<(u64, u64)> {
    let bytes = <[u8; 16]>::try_from(context).ok()?;
    let (proposer, id) = bytes.split_at(8);
    Some((
        u64::from_le_bytes(proposer.try_into().ok()?),
        u64::from_le_bytes(id.try_into().ok()?),
    ))
}

fn overwritten(index: u64, proposed: u64, applied: u64) -> WriteError {
    WriteError::NotApplied(format!(
        "the proposal at index {index} (term {proposed}) was overwritten by an entry of term \
         {applied} after a leader change; it was not applied, retry"
    ))
}

impl Node {
    pub(super) fn not_leader(&self) -> WriteError {
        let leader = self.raw.raft.leader_id;
        WriteError::NotLeader {
            leader: (leader != 0).then_some(leader),
        }
    }

    // ANCHOR: propose
    /// Proposes a client write; the client is answered when it is applied.
    pub(super) fn propose(
        &mut self,
        command: Command,
        reply: oneshot::Sender<WriteReply>,
        proposer: Proposer,
    ) {
        if self.raw.raft.state != StateRole::Leader {
            if proposer == Proposer::AnyMember && self.raw.raft.leader_id != 0 {
                self.propose_through_leader(command, reply);
            } else {
                let _ = reply.send(Err(self.not_leader()));
            }
            return;
        }
        // The proposer id in the entry is informational only (logs, tools):
        // waiters are matched by (index, term), never by it.
        let proposed = self.raw.propose(vec![], command.encode(self.id));
        self.wait_for_apply(reply, proposed, |err| {
            WriteError::NotApplied(format!("raft dropped the proposal: {err}"))
        });
    }

    /// On a follower: raft sends the entry to the leader (`MsgProp`); the
    /// client waits under a proposal id the entry carries in its context.
    fn propose_through_leader(&mut self, command: Command, reply: oneshot::Sender<WriteReply>) {
        let id = self.pending.new_context();
        let context = proposal_context(self.id, id);
        match self.raw.propose(context, command.encode(self.id)) {
            Ok(()) => {
                self.pending.forwarded.insert(
                    id,
                    WriteWaiter {
                        term: 0,
                        reply,
                        since: Instant::now(),
                    },
                );
            }
            Err(err) => {
                let _ = reply.send(Err(WriteError::NotApplied(format!(
                    "raft could not forward the proposal to the leader: {err}"
                ))));
            }
        }
    }

    /// After a proposal: the client waits for the entry raft just appended
    /// to the leader's log (its index and term are the leader's last), or,
    /// if raft refused the proposal, is answered at once with `refused`.
    pub(super) fn wait_for_apply(
        &mut self,
        reply: oneshot::Sender<WriteReply>,
        proposed: raft::Result<()>,
        refused: impl FnOnce(raft::Error) -> WriteError,
    ) {
        match proposed {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.pending.park(index, term, reply);
            }
            Err(err) => {
                let _ = reply.send(Err(refused(err)));
            }
        }
    }
    // ANCHOR_END: propose

    // ANCHOR: read_index
    /// Queues a linearizable read. Raft will confirm with a quorum that the
    /// leader is still the leader and return its commit index (the read
    /// index); the read is served once this node has applied that far.
    /// Followers forward the request to the leader, so reads scale out.
    pub(super) fn read_index(&mut self, reply: oneshot::Sender<Result<(), WriteError>>) {
        if self.raw.raft.leader_id == 0 {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.lab_break == Some(LabBreak::StaleReads) {
            let _ = reply.send(Ok(()));
            return;
        }
        self.pending.queued_reads.push(ReadWaiter {
            reply,
            since: Instant::now(),
        });
    }

    /// Called once per loop iteration, after the requests are drained:
    /// starts a round for the queued reads if none is outstanding, or
    /// re-issues a stuck round (with the reads queued since) once it is
    /// [`READ_RETRY`] old.
    pub(super) fn issue_reads(&mut self) {
        if self.raw.raft.leader_id == 0 {
            return;
        }
        let now = Instant::now();
        let mut reads = match self.pending.round.take() {
            Some(round) if now.duration_since(round.issued) < READ_RETRY => {
                self.pending.round = Some(round);
                return;
            }
            Some(round) => round.reads,
            None => Vec::new(),
        };
        reads.append(&mut self.pending.queued_reads);
        reads.retain(|r| !r.reply.is_closed());
        if reads.is_empty() {
            return;
        }
        let context = self.pending.new_context();
        self.pending.read_index_rounds += 1;
        crate::metrics::READ_INDEX_BATCHES.inc();
        self.raw.read_index(context.to_le_bytes().to_vec());
        self.pending.round = Some(ReadRound {
            context,
            reads,
            issued: now,
        });
    }

    /// True when reads are queued and no round is out: the loop issues a
    /// round at once instead of waiting for the next wake-up.
    pub(super) fn reads_to_issue(&self) -> bool {
        self.pending.round.is_none()
            && !self.pending.queued_reads.is_empty()
            && self.raw.raft.leader_id != 0
    }

    pub(super) fn on_read_state(&mut self, state: ReadState) {
        let Ok(bytes) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else {
            return;
        };
        let context = u64::from_le_bytes(bytes);
        if self.pending.round.as_ref().map(|r| r.context) != Some(context) {
            // The answer to a round that was re-issued under a new context.
            return;
        }
        if let Some(round) = self.pending.round.take() {
            self.pending.read_index_reads += round.reads.len() as u64;
            self.pending.ready_reads.push((state.index, round.reads));
        }
    }

    pub(super) fn release_reads(&mut self) {
        let applied = self.sm.applied_index();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending.ready_reads)
            .into_iter()
            .partition(|(index, _)| {
                *index <= applied || self.lab_break == Some(LabBreak::EarlyReads)
            });
        self.pending.ready_reads = waiting;
        for read in done.into_iter().flat_map(|(_, reads)| reads) {
            let _ = read.reply.send(Ok(()));
        }
    }
    // ANCHOR_END: read_index

    /// Once a tick: forget waiters whose clients gave up.
    pub(super) fn housekeeping(&mut self) {
        let now = Instant::now();
        let live =
            |since: Instant, closed: bool| now.duration_since(since) < FORGET_AFTER && !closed;
        for waiters in self.pending.writes.values_mut() {
            waiters.retain(|w| live(w.since, w.reply.is_closed()));
        }
        self.pending
            .forwarded
            .retain(|_, w| live(w.since, w.reply.is_closed()));
        self.pending.writes.retain(|_, waiters| !waiters.is_empty());
        self.pending
            .queued_reads
            .retain(|r| live(r.since, r.reply.is_closed()));
        if let Some(round) = &mut self.pending.round {
            round.reads.retain(|r| live(r.since, r.reply.is_closed()));
        }
        for (_, reads) in &mut self.pending.ready_reads {
            reads.retain(|r| !r.reply.is_closed());
        }
        self.pending
            .ready_reads
            .retain(|(_, reads)| !reads.is_empty());
    }
}

/// Tests of the waiter logic on a real `Node` (WAL, memory engine, raft),
/// driven by hand on the test thread: the other members are played by
/// messages built here, so a leader change can be staged exactly.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, RwLock};

    use raft::RawNode;
    use raft::prelude::{ConfChange, ConfChangeType, Entry, HardState, Message, MessageType};
    use tokio::sync::oneshot;

    use super::super::Node;
    use super::super::handle::{Proposer, RaftView, WriteError, WriteReply};
    use super::super::membership::bootstrap_entries;
    use super::super::snapshot_file::SnapshotDir;
    use super::super::storage::RaftStorage;
    use super::super::transport::Transport;
    use super::super::wal::Wal;
    use super::Pending;
    use crate::state_machine::{Command, Member, Members, StateMachine};

    struct Harness {
        node: Node,
        _runtime: tokio::runtime::Runtime,
        _dir: tempfile::TempDir,
    }

    /// Node 1 of a new cluster of `voters`, as `raft::start` builds it, but
    /// not running: the test calls its methods.
    fn harness(voters: &[u64]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let members: Vec<Member> = voters
            .iter()
            .map(|&id| Member {
                id,
                peer: "127.0.0.1:1".into(),
                client: "127.0.0.1:1".into(),
                grpc: None,
                learner: false,
            })
            .collect();
        let table: Members = Arc::new(RwLock::new(
            members
                .iter()
                .map(|m| (m.id, m.clone()))
                .collect::<BTreeMap<_, _>>(),
        ));
        let (wal, _) = Wal::open(&dir.path().join("wal")).unwrap();
        let snapshots = SnapshotDir::open(&dir.path().join("snap")).unwrap();
        let engine = engines::open_shared(
            engines::EngineKind::Memory,
            &dir.path().join("engine"),
            &engines::EngineOptions::default(),
        )
        .unwrap();
        let sm = StateMachine::open(engine, table.clone()).unwrap();
        let cluster = crate::raft::identity::ClusterId(7);
        let entries = bootstrap_entries(&members, cluster).unwrap();
        let storage = RaftStorage::new();
        {
            let mut log = storage.log.wl();
            log.append(&entries).unwrap();
            log.set_hardstate(HardState {
                term: 1,
                commit: entries.len() as u64,
                ..Default::default()
            });
        }
        let config = raft::Config {
            id: 1,
            election_tick: 10,
            heartbeat_tick: 1,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let raw = RawNode::new(&config, storage.clone(), &crate::logger::raft_logger(1)).unwrap();
        let (requests_tx, requests) = std::sync::mpsc::channel();
        let transport = Transport::new(
            runtime.handle().clone(),
            table.clone(),
            requests_tx,
            crate::raft::identity::Identity { cluster, member: 1 },
            dir.path().join("snap"),
        );
        let node = Node {
            id: 1,
            raw,
            storage,
            wal,
            snapshots,
            sm,
            transport,
            requests,
            view: Arc::new(RwLock::new(RaftView::default())),
            members: table,
            fsyncs: Arc::new(AtomicU64::new(0)),
            fsync_micros: Arc::new(AtomicU64::new(0)),
            pending: Pending::new(1),
            snapshot_every: 1_000_000,
            keep_entries: 1_000,
            last_snapshot: 0,
            applied_writes: 0,
            tick: std::time::Duration::from_millis(100),
            removed: false,
            snapshot_build: None,
            snapshot_waiters: Vec::new(),
            lab_break: None,
            publisher: Default::default(),
        };
        let mut harness = Harness {
            node,
            _runtime: runtime,
            _dir: dir,
        };
        harness.settle();
        harness
    }

    impl Harness {
        /// Handles every Ready there is.
        fn settle(&mut self) {
            for _ in 0..20 {
                if !self.node.raw.has_ready() {
                    return;
                }
                self.node.on_ready().unwrap();
            }
        }

        /// Makes node 1 the leader of a new term without an election (the
        /// other voters are played by the test).
        fn lead(&mut self) {
            self.node.raw.raft.become_candidate();
            self.node.raw.raft.become_leader();
            self.settle();
        }

        fn put(&mut self, key: &str, value: &str) -> oneshot::Receiver<WriteReply> {
            let (reply, answer) = oneshot::channel();
            self.node
                .propose(Command::put(key, value), reply, Proposer::LeaderOnly);
            self.settle();
            answer
        }

        fn last(&self) -> (u64, u64) {
            let log = &self.node.raw.raft.raft_log;
            (log.last_index(), log.last_term())
        }

        fn entry(&self, index: u64) -> Entry {
            self.node
                .raw
                .raft
                .raft_log
                .entries(index, 1, raft::GetEntriesContext::empty(false))
                .unwrap()
                .remove(0)
        }

        /// Node 2, leader of `term`, appends `entries` after (index, term)
        /// `prev` and commits up to `commit`.
        fn append_from_2(&mut self, term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) {
            let mut message = Message::default();
            message.set_msg_type(MessageType::MsgAppend);
            message.from = 2;
            message.to = 1;
            message.term = term;
            message.index = prev.0;
            message.log_term = prev.1;
            message.commit = commit;
            message.set_entries(entries.into());
            self.node.raw.step(message).unwrap();
            self.settle();
        }
    }

    fn normal(index: u64, term: u64, data: Vec<u8>) -> Entry {
        let mut entry = Entry {
            index,
            term,
            ..Default::default()
        };
        entry.set_data(data.into());
        entry
    }

    /// A follower's write goes to the leader in raft's `MsgProp`, with this
    /// member's proposal id in the entry's context, and its client is
    /// answered when this member applies the entry the leader appended; an
    /// entry another member forwarded under the same proposal id is not it.
    /// With no leader known, nothing is proposed.
    #[test]
    fn a_write_forwarded_by_a_follower_is_answered_when_this_member_applies_it() {
        let mut h = harness(&[1, 2]);
        let (reply, mut answer) = oneshot::channel();
        h.node
            .propose(Command::put("k", "v"), reply, Proposer::AnyMember);
        match answer.try_recv() {
            Ok(Err(WriteError::NotLeader { leader: None })) => {}
            other => panic!("expected not-leader with no leader known, got {other:?}"),
        }

        // Node 2 leads term 2: its (empty) append makes node 1 its follower.
        let (index, term) = h.last();
        h.append_from_2(term + 1, (index, term), vec![], index);
        assert_eq!(h.node.raw.raft.leader_id, 2);
        let (reply, mut answer) = oneshot::channel();
        h.node
            .propose(Command::put("k", "v"), reply, Proposer::AnyMember);
        let id = *h
            .node
            .pending
            .forwarded
            .keys()
            .next()
            .expect("the write waits under its proposal id");
        let sent = h
            .node
            .raw
            .raft
            .msgs
            .iter()
            .find(|m| m.get_msg_type() == MessageType::MsgPropose)
            .expect("raft forwards the proposal to the leader");
        assert_eq!(sent.to, 2);
        assert_eq!(sent.entries[0].context, super::proposal_context(1, id));
        h.settle();
        assert!(answer.try_recv().is_err(), "not applied yet: must wait");

        // Member 3's proposal under the same id is applied first: not ours.
        let mut other = normal(index + 1, term + 1, Command::put("k", "x").encode(3));
        other.context = super::proposal_context(3, id).into();
        h.append_from_2(term + 1, (index, term), vec![other], index + 1);
        assert_eq!(h.node.sm.applied_index(), index + 1);
        assert!(
            answer.try_recv().is_err(),
            "another member's entry answered us"
        );

        let mut ours = normal(index + 2, term + 1, Command::put("k", "v").encode(1));
        ours.context = super::proposal_context(1, id).into();
        h.append_from_2(term + 1, (index + 1, term + 1), vec![ours], index + 2);
        match answer.try_recv() {
            Ok(Ok(_)) => {}
            other => panic!("expected the applied answer, got {other:?}"),
        }
        assert!(h.node.pending.forwarded.is_empty());
    }

    /// Issue 9 item 1: a new leader's entry at the index of this node's
    /// proposal (here with the very same request id in it, as a clock-seeded
    /// per-node counter could give) must not answer the waiting client as
    /// applied: the proposal was overwritten and is definitely not applied.
    #[test]
    fn an_overwritten_proposal_is_answered_not_applied_even_with_a_colliding_id() {
        let mut h = harness(&[1, 2]);
        h.lead();
        let mut answer = h.put("k", "mine");
        let (index, term) = h.last();
        assert!(answer.try_recv().is_err(), "no quorum yet: must still wait");
        // The new leader's entry carries the very same proposer id.
        let (_, proposer) = Command::decode(h.entry(index).get_data()).unwrap();
        let theirs = Command::put("k", "theirs");
        let prev = (index - 1, h.entry(index - 1).term);
        h.append_from_2(
            term + 1,
            prev,
            vec![normal(index, term + 1, theirs.encode(proposer))],
            index,
        );
        assert_eq!(h.node.sm.applied_index(), index);
        match answer.try_recv() {
            Ok(Err(WriteError::NotApplied(_))) => {}
            other => panic!("expected a definite not-applied, got {other:?}"),
        }
    }

    /// Issue 9 item 1: a leader that steps down keeps its waiters, and
    /// answers "applied" when the new leader commits the proposal.
    #[test]
    fn a_proposal_committed_by_the_next_leader_is_answered_applied() {
        let mut h = harness(&[1, 2]);
        h.lead();
        let mut answer = h.put("k", "mine");
        let (index, term) = h.last();
        let mut vote = Message::default();
        vote.set_msg_type(MessageType::MsgHeartbeat);
        vote.from = 2;
        vote.to = 1;
        vote.term = term + 1;
        h.node.raw.step(vote).unwrap();
        h.settle();
        assert!(!h.node.raw.raft.state.eq(&raft::StateRole::Leader));
        assert!(
            answer.try_recv().is_err(),
            "the step-down must not answer a client whose outcome can still be learned"
        );
        // The new leader has the proposal and commits it with its no-op.
        h.append_from_2(
            term + 1,
            (index, term),
            vec![normal(index + 1, term + 1, vec![])],
            index + 1,
        );
        match answer.try_recv() {
            Ok(Ok(_)) => {}
            other => panic!("expected applied, got {other:?}"),
        }
        let record = h.node.sm.kv_reader().get(b"k").unwrap();
        assert_eq!(record.unwrap().value, b"mine");
    }

    /// Issue 9 item 8: a membership change raft refuses is answered with
    /// the refusal, not success, whether raft refuses it when proposed (it
    /// becomes an empty entry) or when applied.
    #[test]
    fn a_membership_change_raft_refuses_is_not_answered_success() {
        let mut h = harness(&[1]);
        h.lead();
        let change = |kind, id| {
            let mut cc = ConfChange::default();
            cc.set_change_type(kind);
            cc.node_id = id;
            cc
        };
        // Past our own checks, as a forwarded proposal would be: raft
        // cannot remove the last voter and refuses when applying it.
        let (reply, mut removed) = oneshot::channel();
        let proposed = h
            .node
            .raw
            .propose_conf_change(vec![], change(ConfChangeType::RemoveNode, 1));
        h.node
            .wait_for_apply(reply, proposed, |e| WriteError::Rejected(e.to_string()));
        h.settle();
        match removed.try_recv() {
            Ok(Err(WriteError::Rejected(reason))) => {
                assert!(reason.contains("refused"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(h.node.sm.conf_state().voters, vec![1]);

        // Two changes at once: raft replaces the second with an empty entry.
        let (first_reply, mut first) = oneshot::channel();
        let (second_reply, mut second) = oneshot::channel();
        let proposed = h
            .node
            .raw
            .propose_conf_change(vec![], change(ConfChangeType::AddLearnerNode, 3));
        h.node.wait_for_apply(first_reply, proposed, |e| {
            WriteError::Rejected(e.to_string())
        });
        let proposed = h
            .node
            .raw
            .propose_conf_change(vec![], change(ConfChangeType::AddLearnerNode, 4));
        h.node.wait_for_apply(second_reply, proposed, |e| {
            WriteError::Rejected(e.to_string())
        });
        h.settle();
        assert!(matches!(first.try_recv(), Ok(Ok(_))));
        assert!(matches!(
            second.try_recv(),
            Ok(Err(WriteError::Rejected(_)))
        ));
        assert_eq!(h.node.sm.conf_state().learners, vec![3]);
    }

    /// Issue 9 item 6: reads arriving together share one ReadIndex round.
    #[test]
    fn reads_queued_together_share_one_read_index_round() {
        let mut h = harness(&[1]);
        h.lead();
        let mut answers = Vec::new();
        for _ in 0..50 {
            let (reply, answer) = oneshot::channel();
            h.node.read_index(reply);
            answers.push(answer);
        }
        h.node.issue_reads();
        h.settle();
        assert_eq!(h.node.pending.read_index_rounds, 1);
        for mut answer in answers {
            assert!(matches!(answer.try_recv(), Ok(Ok(()))));
        }
    }
}
