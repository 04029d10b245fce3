//! The Ready loop: the one thread that drives raft.
//!
//! The loop wakes on a request or on the next tick (every
//! [`NodeConfig::tick`](super::NodeConfig), 100 ms by default), drains
//! **every** request waiting in the channel, and then handles one `Ready`.
//! That drain is the group commit: all writes that arrived while the
//! previous fsync ran are proposed together, land in the same `Ready`, and
//! share one WAL fsync. The linearizable reads drained in that iteration go
//! into one ReadIndex round (see `pending`).
//!
//! # Leadership and leases
//!
//! Each iteration publishes the role and term ([`RaftView`]); when they
//! show that this node became leader (or leads in a new term) the lessor is
//! promoted, every lease getting a full TTL, and when it stopped leading it
//! is demoted and expires nothing (see `crate::lease`). Only memory is
//! touched; the expiry thread proposes the revokes.
//!
//! # Step-down
//!
//! A leader that loses its leadership does not answer its waiting writers:
//! it keeps them, because as a follower it still applies the entry at each
//! waited index and then knows whether it was theirs (same term: applied)
//! or a new leader's (other term: not applied, safe to retry). Clients that
//! cannot wait that long get "outcome unknown" from the HTTP timeout.
//!
//! # Failure
//!
//! Every error the loop cannot continue after (disk, corruption) ends it
//! with `Err`; so does a panic, caught here and turned into
//! [`NodeError::Panicked`] with its message, so that the process reports
//! `NodeExit::Failed` and exits non-zero instead of looking like a clean
//! stop. `METCD_TEST_PANIC_AT_INDEX=<index>` (read once at start; for tests
//! only, never set it in production) panics when that entry is applied, so
//! that a test can check this path.

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Instant;

use raft::prelude::{Entry, EntryType, Message};
use raft::{SnapshotStatus, StateRole, Storage};

use super::Node;
use super::handle::{NodeError, NodeStatus, RaftView, Request, WriteError, WriteReply};
use super::lab_break::LabBreak;
use super::pending::forwarded_by;
use super::wal::WalRecord;
use crate::state_machine::Command;

/// The environment variable of the test-only panic trigger.
pub const TEST_PANIC_ENV: &str = "METCD_TEST_PANIC_AT_INDEX";

/// The index at which a test asked the Raft thread to panic, read once.
fn test_panic_index() -> Option<u64> {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    *AT.get_or_init(|| {
        std::env::var(TEST_PANIC_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

impl Node {
    /// Runs the loop until the node is removed or fails; a panic is caught
    /// and returned as [`NodeError::Panicked`].
    pub(super) fn run(self) -> Result<(), NodeError> {
        let id = self.id;
        if let Some(index) = test_panic_index() {
            tracing::warn!(
                id,
                index,
                "{TEST_PANIC_ENV} is set: this node will panic when it applies that entry (test only)"
            );
        }
        match std::panic::catch_unwind(AssertUnwindSafe(move || self.run_loop())) {
            Ok(outcome) => outcome,
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(id, %message, "the raft thread panicked");
                Err(NodeError::Panicked(message))
            }
        }
    }

    fn run_loop(mut self) -> Result<(), NodeError> {
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
                self.publish_if_needed();
            }
            // One ReadIndex round for the reads drained above.
            self.issue_reads();
            self.on_ready()?;
            if self.reads_to_issue() {
                // A round completed in that Ready and reads are queued:
                // start the next round now, not at the next wake-up.
                self.issue_reads();
                self.on_ready()?;
            }
            self.poll_snapshots()?;
            self.publish_view();
            if self.removed || self.transport.told_removed() {
                tracing::warn!(
                    id = self.id,
                    "this node was removed from the cluster; shutting down"
                );
                return Ok(());
            }
        }
    }

    pub(super) fn handle(&mut self, request: Request) {
        match request {
            Request::Raft(message) => {
                if let Err(err) = self.raw.step(message) {
                    tracing::debug!(%err, "raft refused a message");
                }
            }
            // The admission ticket (`queued`) is dropped once the request
            // is handled: it counts only requests waiting for this thread.
            Request::Propose {
                command,
                reply,
                proposer,
                ..
            } => self.propose(command, reply, proposer),
            Request::ReadIndex { reply, .. } => self.read_index(reply),
            Request::ChangeMembership { change, reply, .. } => {
                self.change_membership(change, reply)
            }
            Request::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Request::Snapshot { reply } => self.snapshot_for_client(reply),
            Request::TransferLeader { to, reply } => {
                let _ = reply.send(self.transfer_leader(to));
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

    // ANCHOR: ready_loop
    pub(super) fn on_ready(&mut self) -> Result<(), NodeError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        // A step-down answers no waiter: they learn their outcome when
        // their index is applied (see `pending`).
        let mut ready = self.raw.ready();

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
        // ANCHOR: wal_sync_step
        if ready.must_sync() || snapshot.is_some() {
            match self.lab_break {
                Some(LabBreak::SkipFsync) => self.wal.write_unsynced()?,
                Some(LabBreak::SkipFlush) => {}
                _ => self.wal.sync()?,
            }
        }
        // ANCHOR_END: wal_sync_step

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
        // Waiters the log moved past without applying their index (a
        // snapshot was installed): their outcome is unknown.
        self.pending.settle_skipped(self.sm.applied_index());

        self.release_reads();
        self.maybe_snapshot()
    }
    // ANCHOR_END: ready_loop

    pub(super) fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.transport.send(message);
        }
    }

    // ANCHOR: apply
    /// Applies committed entries in one engine batch, then answers the
    /// clients that wait for them, matched by each entry's index and term
    /// (or, for a write this member forwarded, by the proposal id in the
    /// entry's context).
    pub(super) fn apply(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut answered: Vec<(u64, u64, WriteReply)> = Vec::new();
        let mut forwarded: Vec<(u64, WriteReply)> = Vec::new();
        for entry in &entries {
            if entry.index <= self.sm.applied_index() {
                continue;
            }
            if test_panic_index() == Some(entry.index) {
                panic!(
                    "{TEST_PANIC_ENV}={} reached (a test asked for this panic)",
                    entry.index
                );
            }
            let reply = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.get_data().is_empty() => {
                    // A new leader's no-op, or a conf change raft replaced
                    // with an empty entry because another was unapplied.
                    self.sm.stage_noop(entry.index, entry.term);
                    Err(WriteError::Rejected(
                        "raft replaced the membership change with an empty entry: another \
                         change was not yet applied; retry in a moment"
                            .into(),
                    ))
                }
                EntryType::EntryNormal => match Command::decode(entry.get_data()) {
                    Ok((command, _proposer)) => {
                        self.applied_writes += 1;
                        self.sm
                            .stage_command(entry.index, entry.term, &command)?
                            .map_err(WriteError::Rejected)
                    }
                    Err(reason) => {
                        tracing::error!(index = entry.index, reason, "undecodable entry skipped");
                        self.sm.stage_noop(entry.index, entry.term);
                        Err(WriteError::Rejected(format!(
                            "entry {} could not be decoded: {reason}",
                            entry.index
                        )))
                    }
                },
                EntryType::EntryConfChange => self.apply_conf_change(entry)?,
                EntryType::EntryConfChangeV2 => {
                    self.sm.stage_noop(entry.index, entry.term);
                    Err(WriteError::Rejected(
                        "joint membership changes (ConfChangeV2) are not supported".into(),
                    ))
                }
            };
            match forwarded_by(&entry.context) {
                Some((proposer, id)) if proposer == self.id => forwarded.push((id, reply.clone())),
                _ => {}
            }
            answered.push((entry.index, entry.term, reply));
        }
        self.sm.commit()?;
        for (index, term, reply) in answered {
            self.pending.settle(index, term, reply);
        }
        for (id, reply) in forwarded {
            self.pending.settle_forwarded(id, reply);
        }
        Ok(())
    }
    // ANCHOR_END: apply

    pub(super) fn publish_view(&self) {
        crate::metrics::observe_raft(
            self.raw.raft.leader_id,
            self.raw.raft.raft_log.committed,
            self.sm.applied_index(),
        );
        let view = RaftView {
            leader: self.raw.raft.leader_id,
            is_leader: self.raw.raft.state == StateRole::Leader,
            term: self.raw.raft.term,
        };
        let was = std::mem::replace(
            &mut *self.view.write().unwrap_or_else(|p| p.into_inner()),
            view,
        );
        // Leases expire only on the leader (`crate::lease`): a new leader
        // gives every lease a full TTL, a former one stops expiring.
        if view.is_leader && !(was.is_leader && was.term == view.term) {
            self.sm.lessor().promote(Instant::now());
        } else if was.is_leader && !view.is_leader {
            self.sm.lessor().demote();
        }
    }

    pub(super) fn status(&self) -> NodeStatus {
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
            read_index_rounds: self.pending.read_index_rounds,
            read_index_reads: self.pending.read_index_reads,
        }
    }
}
