//! Snapshot policy: when this node takes a snapshot of its state machine,
//! and how it installs one received from the leader.

use std::time::Instant;

use raft::Storage;
use raft::prelude::Snapshot;

use super::Node;
use super::handle::NodeError;

impl Node {
    pub(super) fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), NodeError> {
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

    // ANCHOR: snapshot
    /// Every `snapshot_every` applied entries: export the engine, save the
    /// snapshot file, compact the in-memory log (keeping `keep_entries` for
    /// followers that are only a little behind) and release WAL segments
    /// the snapshot covers.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        if self.sm.applied_index() < self.last_snapshot + self.snapshot_every {
            return Ok(());
        }
        self.snapshot_now()
    }

    /// Takes a snapshot at the applied index, unless the newest one is
    /// already there.
    pub(super) fn snapshot_now(&mut self) -> Result<(), NodeError> {
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
        crate::metrics::snapshot_taken(snapshot.get_data().len(), started.elapsed());
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
}
