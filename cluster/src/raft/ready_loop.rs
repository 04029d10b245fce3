//! The Ready loop: the one thread that drives raft.
//!
//! The loop wakes on a request or on the next tick (every
//! [`NodeConfig::tick`](super::NodeConfig), 100 ms by default), drains
//! **every** request waiting in the channel, and then handles one `Ready`.
//! That drain is the group commit: all writes that arrived while the
//! previous fsync ran are proposed together, land in the same `Ready`, and
//! share one WAL fsync.

use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Instant;

use raft::prelude::{Entry, EntryType, Message};
use raft::{SnapshotStatus, StateRole, Storage};

use super::Node;
use super::handle::{NodeError, NodeStatus, RaftView, Request, WriteReply};
use super::wal::WalRecord;
use crate::state_machine::{Applied, Command};

impl Node {
    pub(super) fn run(mut self) -> Result<(), NodeError> {
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

    // ANCHOR: ready_loop
    pub(super) fn on_ready(&mut self) -> Result<(), NodeError> {
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

    pub(super) fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.transport.send(message);
        }
    }

    // ANCHOR: apply
    /// Applies committed entries in one engine batch, then answers the
    /// clients that wait for them.
    pub(super) fn apply(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
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
            if let Some(waiter) = self.pending.writes.remove(&request) {
                let _ = waiter.reply.send(reply);
            }
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
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
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
        }
    }
}
