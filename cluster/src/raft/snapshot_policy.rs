//! Snapshot policy: when this node takes a snapshot of its state machine,
//! how the snapshot is built without stopping the Ready loop, and how a
//! snapshot received from the leader is installed.
//!
//! # Taking a snapshot
//!
//! Every `--snapshot-every` applied entries (or when raft asks for a
//! snapshot the stored one cannot serve, see `super::storage`), the Raft
//! thread, between two engine batches, freezes the state at the applied
//! index (`StateMachine::begin_export`, a copy-on-write view described in
//! `crate::consistent_export`) and starts a background thread that writes
//! the export stream into a new snapshot file as it scans
//! (`super::snapshot_file::SnapshotWriter`). The Ready loop keeps ticking,
//! sending heartbeats and applying entries meanwhile; nothing holds the
//! whole snapshot in memory. At most one build runs at a time.
//!
//! Each loop iteration [`Node::poll_snapshots`] looks whether the build is
//! done. When it is, the Raft thread publishes the file (rename, directory
//! fsync, older files removed), syncs the engine (its buffered writes must
//! be durable before the WAL entries that could rebuild them go away),
//! compacts the in-memory log (keeping `--keep-entries` for followers only
//! a little behind), releases the WAL segments the snapshot covers, and
//! hands the snapshot's metadata to `RaftStorage` for raft to send.
//!
//! # Installing one from the leader
//!
//! The file arrived through `super::snapshot_stream` and was moved into the
//! snapshot directory (and recorded in the WAL) before
//! [`Node::install_snapshot`] runs. A build in progress is cancelled first
//! (its view would be of a state about to vanish); the state machine then
//! installs from the file, isolated from client reads and crash-atomic
//! (`StateMachine::install`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use raft::Storage;
use raft::prelude::{Snapshot, SnapshotMetadata};

use super::Node;
use super::handle::NodeError;
use super::snapshot_file::{SnapshotError, SnapshotInfo, WrittenSnapshot};

/// A client waiting for a snapshot file (its path, or why there is none).
pub(super) type SnapshotWaiter = tokio::sync::oneshot::Sender<Result<PathBuf, String>>;

/// A snapshot being written by a background thread.
pub(super) struct SnapshotBuild {
    metadata: SnapshotMetadata,
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<Result<WrittenSnapshot, String>>,
    started: Instant,
}

impl Node {
    // ANCHOR: install_snapshot
    pub(super) fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), NodeError> {
        let (index, term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
        self.cancel_snapshot_build();
        let path = self
            .snapshots
            .find(index, term)
            .ok_or(SnapshotError::Missing { index, term })?;
        let info = SnapshotInfo::open(&path)?;
        tracing::info!(
            index,
            bytes = info.data_bytes,
            "installing a snapshot from the leader"
        );
        let started = Instant::now();
        self.storage.log.wl().apply_snapshot(snapshot)?;
        let pairs = self.sm.install(index, term, &mut info.data()?)?;
        self.storage.set_snapshot(info.snapshot());
        self.pending.forwarded_replaced_by_snapshot();
        self.last_snapshot = index;
        tracing::info!(
            index,
            pairs,
            millis = started.elapsed().as_millis() as u64,
            "snapshot installed"
        );
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
    // ANCHOR_END: install_snapshot

    // ANCHOR: snapshot
    /// Every `snapshot_every` applied entries: start a background build.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        if self.sm.applied_index() < self.last_snapshot + self.snapshot_every {
            return Ok(());
        }
        self.snapshot_now()
    }

    /// Starts building a snapshot at the applied index, unless one is being
    /// built or the newest one is already there.
    pub(super) fn snapshot_now(&mut self) -> Result<(), NodeError> {
        let applied = self.sm.applied_index();
        if self.snapshot_build.is_some() || applied == 0 || applied <= self.storage.snapshot_index()
        {
            return Ok(());
        }
        let start = self.sm.begin_export()?;
        let mut metadata = SnapshotMetadata::default();
        metadata.set_index(start.index);
        metadata.set_term(start.term);
        metadata.set_conf_state(start.conf_state.clone());
        let mut writer = match self.snapshots.create(&metadata) {
            Ok(writer) => writer,
            Err(err) => {
                self.sm.end_export();
                return Err(err.into());
            }
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        let thread = std::thread::Builder::new()
            .name(format!("snapshot-{}", self.id))
            .spawn(move || match start.write_to(&mut writer, &stop) {
                Ok(_) => writer.finish().map_err(|e| e.to_string()),
                Err(err) => {
                    writer.abandon();
                    Err(err.to_string())
                }
            })
            .map_err(NodeError::Thread)?;
        self.snapshot_build = Some(SnapshotBuild {
            metadata,
            cancel,
            thread,
            started: Instant::now(),
        });
        // The next one is due `snapshot_every` entries after this one.
        self.last_snapshot = applied;
        Ok(())
    }

    /// A client asks for a snapshot file of the current state: the newest
    /// file if it already holds the applied index, else the one a build
    /// (started now, or running) produces.
    pub(super) fn snapshot_for_client(&mut self, reply: SnapshotWaiter) {
        let applied = self.sm.applied_index();
        if self.snapshot_build.is_none() && applied <= self.storage.snapshot_index() {
            let newest = self
                .snapshots
                .load_latest()
                .map_err(|e| e.to_string())
                .and_then(|info| {
                    info.map(|i| i.path)
                        .ok_or_else(|| "this member has applied nothing yet".to_string())
                });
            let _ = reply.send(newest);
            return;
        }
        if let Err(err) = self.snapshot_now() {
            let _ = reply.send(Err(format!("starting a snapshot failed: {err}")));
            return;
        }
        self.snapshot_waiters.push(reply);
    }

    fn answer_snapshot_waiters(&mut self, answer: Result<PathBuf, String>) {
        for waiter in self.snapshot_waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
    }

    /// Called every loop iteration: starts a build raft asked for, and
    /// finishes a build that is done.
    pub(super) fn poll_snapshots(&mut self) -> Result<(), NodeError> {
        if self.storage.take_snapshot_request() {
            self.snapshot_now()?;
        }
        if self
            .snapshot_build
            .as_ref()
            .is_some_and(|b| b.thread.is_finished())
            && let Some(build) = self.snapshot_build.take()
        {
            self.finish_snapshot(build)?;
        }
        Ok(())
    }

    fn finish_snapshot(&mut self, build: SnapshotBuild) -> Result<(), NodeError> {
        self.sm.end_export();
        let index = build.metadata.index;
        let written = match build.thread.join() {
            Ok(Ok(written)) => written,
            Ok(Err(err)) => {
                tracing::error!(index, %err, "building a snapshot failed; the next one is tried later");
                self.answer_snapshot_waiters(Err(format!("building the snapshot failed: {err}")));
                return Ok(());
            }
            Err(_) => {
                return Err(NodeError::Invalid(format!(
                    "the thread building the snapshot at index {index} panicked"
                )));
            }
        };
        let bytes = written.data_bytes;
        let path = self.snapshots.publish(written)?;
        // The engine's buffered writes must be durable before the WAL
        // entries that could rebuild them go away.
        self.sm.sync()?;
        let compact_to = index.saturating_sub(self.keep_entries);
        if compact_to > self.storage.log.first_index()? {
            self.storage.log.wl().compact(compact_to)?;
        }
        let released = self.wal.release_up_to(compact_to)?;
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(build.metadata);
        self.storage.set_snapshot(snapshot);
        self.answer_snapshot_waiters(Ok(path));
        crate::metrics::snapshot_taken(bytes as usize, build.started.elapsed());
        tracing::info!(
            index,
            bytes,
            released_segments = released,
            millis = build.started.elapsed().as_millis() as u64,
            "snapshot taken"
        );
        Ok(())
    }
    // ANCHOR_END: snapshot

    /// Stops a build in progress and waits for its thread (it checks the
    /// flag between pages).
    pub(super) fn cancel_snapshot_build(&mut self) {
        if let Some(build) = self.snapshot_build.take() {
            build.cancel.store(true, Ordering::Relaxed);
            if let Ok(Ok(written)) = build.thread.join() {
                written.discard();
            }
            self.sm.end_export();
            self.answer_snapshot_waiters(Err(
                "a snapshot from the leader replaced this member's state while the snapshot \
                 was built; ask again"
                    .into(),
            ));
            tracing::info!(
                index = build.metadata.index,
                "snapshot build cancelled by an install"
            );
        }
    }
}
