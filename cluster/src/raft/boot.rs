//! Start and recovery: from the files in a data directory to a running
//! Raft thread.
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
//! Before any raft state is written, the node's identity is settled
//! (`identity::establish`): a new cluster's id is derived and stored, a
//! joiner stores the id it learned, a restart reads it back; an empty data
//! directory given neither `--initial-cluster` nor `--join` is refused here.
//! The transport is then started with that identity and the state machine's
//! list of removed members, and opens a connection (a handshake) to every
//! known peer at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use raft::prelude::{Entry, HardState};
use raft::{RawNode, Storage};
use tokio::sync::watch;

use super::Node;
use super::handle::{NodeConfig, NodeError, NodeExit, NodeHandle, RaftView};
use super::identity;
use super::membership::bootstrap_entries;
use super::pending::Pending;
use super::snapshot_file::SnapshotDir;
use super::storage::RaftStorage;
use super::transport::{self, Transport};
use super::wal::{Wal, WalRecord};
use crate::state_machine::{Members, StateMachine};

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
    let mut sm = StateMachine::open(engine, members.clone())?;

    let fresh = wal_state.entries.is_empty()
        && wal_state.hard_state == HardState::default()
        && wal_state.snapshot.is_none()
        && latest.is_none();
    if fresh
        && !config.join
        && !config.members.is_empty()
        && !config.members.iter().any(|m| m.id == config.id)
    {
        return Err(NodeError::Invalid(format!(
            "node {} is not in the initial cluster {:?}; add it to --initial-cluster or start it with --join",
            config.id,
            config.members.iter().map(|m| m.id).collect::<Vec<_>>()
        )));
    }
    // Before any raft state is written: an empty directory without
    // --initial-cluster or --join stops here, and the id is on disk before
    // the bootstrap entries that carry it.
    let identity = identity::establish(&identity::Claims {
        data_dir: &config.data_dir,
        id: config.id,
        fresh,
        join: config.join,
        members: &config.members,
        token: &config.cluster_token,
        learned: config.cluster_id,
        in_state_machine: sm.cluster_id(),
    })?;
    if fresh && !config.join {
        let entries = bootstrap_entries(&config.members, identity.cluster)?;
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
            cluster = %identity.cluster,
            members = config.members.len(),
            "bootstrapped a new cluster"
        );
    }

    let storage = RaftStorage::new();
    let mut snapshot_index = 0;
    // ANCHOR: boot_snapshot
    // A crash in the middle of an install leaves the marker: the engine is
    // neither the old state nor the snapshot's, whatever `m/applied` says.
    let interrupted = sm.interrupted_install()?;
    if let Some((index, term)) = interrupted
        && latest.as_ref().is_none_or(|s| s.metadata.index < index)
    {
        return Err(NodeError::Invalid(format!(
            "the engine was interrupted installing the snapshot at index {index} term {term}, \
             but the snapshot directory does not hold it"
        )));
    }
    if let Some(info) = latest {
        snapshot_index = info.metadata.index;
        if interrupted.is_some() || sm.applied_index() < snapshot_index {
            tracing::info!(
                snapshot_index,
                applied = sm.applied_index(),
                interrupted_install = interrupted.is_some(),
                "restoring the state machine from the snapshot file"
            );
            sm.install(snapshot_index, info.metadata.term, &mut info.data()?)?;
        }
        let snapshot = info.snapshot();
        storage.log.wl().apply_snapshot(snapshot.clone())?;
        storage.set_snapshot(snapshot);
    }
    // ANCHOR_END: boot_snapshot
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
    let mut transport = Transport::new(
        runtime.clone(),
        members.clone(),
        requests_tx.clone(),
        identity,
        snapshots.path().to_path_buf(),
    );
    runtime.spawn(transport::serve(
        peer_listener,
        requests_tx.clone(),
        identity,
        sm.removed(),
        snapshots.incoming(),
    ));
    // Handshake with every known peer now: a member removed while it was
    // down learns it at once, even a learner, which never campaigns.
    transport.connect_all();
    // Client reads pass the install gate.
    let reader = sm.reader();
    let kv = sm.kv_reader();
    let watch = sm.watch_hub();
    let removed = sm.removed();
    let lessor = Arc::clone(sm.lessor());
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
        pending: Pending::new(start_request),
        snapshot_every: config.snapshot_every.max(1),
        keep_entries: config.keep_entries,
        last_snapshot: snapshot_index.max(applied),
        applied_writes: 0,
        tick: config.tick,
        removed: false,
        snapshot_build: None,
        snapshot_waiters: Vec::new(),
        lab_break: config.lab_break,
        publisher: super::publish::Publisher {
            wanted: config.publish.clone(),
            last: None,
        },
        sm,
    };
    if let Some(broken) = config.lab_break {
        tracing::warn!(lab_break = %broken, rule = broken.rule(), "this node is deliberately broken for a lab; never use it for data");
    }
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
    // Expiry: checked every tick (at least every half second); a revoke
    // not applied is proposed again after an election timeout.
    let election = config.tick * config.election_ticks as u32;
    crate::lease::expiry::spawn(
        Arc::clone(&lessor),
        requests_tx.clone(),
        exit.clone(),
        config
            .tick
            .clamp(Duration::from_millis(10), Duration::from_millis(500)),
        election.max(Duration::from_secs(1)),
    )
    .map_err(NodeError::Thread)?;
    Ok(NodeHandle {
        id: config.id,
        identity,
        requests: requests_tx,
        members,
        engine: reader,
        kv,
        watch,
        removed,
        data_dir: config.data_dir.clone(),
        view,
        exit,
        leases: crate::lease::Leases {
            lessor,
            ids: Arc::new(crate::lease::IdGenerator::new(config.id)),
            min_ttl: crate::lease::min_ttl(config.tick, config.election_ticks),
        },
    })
}

/// Where the engine keeps its files inside the data directory.
pub fn engine_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("engine")
}
