//! # cluster: metcd, a micro etcd
//!
//! metcd is a key-value service replicated with Raft over any of the storage
//! engines of the `engines` crate. It has the architecture of etcd, in four
//! layers, each in its own module:
//!
//! | layer          | module            | job                                                        |
//! |----------------|-------------------|------------------------------------------------------------|
//! | API            | [`api`]           | etcd's v3 gRPC API (`etcdctl`), HTTP for curl and `metcdctl` |
//! | consensus      | [`raft`]          | `raft::RawNode` and the Ready loop on one thread           |
//! | log            | [`raft::wal`], [`raft::snapshot_file`] | the durable Raft log (our own WAL) and snapshot files |
//! | state machine  | [`state_machine`], [`mvcc`] | committed entries applied exactly once, as etcd's revision history |
//! | leases         | [`lease`]         | etcd's leases: replicated table, leader-only expiry        |
//!
//! The state machine's snapshots use two helpers of their own:
//! [`consistent_export`] (the state at one index, exported while applying
//! goes on) and [`install_gate`] (client reads never see a snapshot half
//! installed).
//!
//! Above the API, [`concurrency`] runs etcd's lock and election recipes for
//! the Lock and Election services, through a client of the member's own
//! gRPC API.
//!
//! plus the peer [`raft::transport`] (raft messages over TCP), the log view
//! raft reads ([`raft::storage`]), and the [`client`] used by `metcdctl`,
//! the tests and the workload harness. [`raft`]'s module essay lists its
//! files, one concept each.
//!
//! ## The write path
//!
//! 1. `PUT /hello` reaches a node. A follower answers `307` with the
//!    leader's address; `curl -L` follows it.
//! 2. The leader's handler sends a proposal to the Raft thread and waits.
//! 3. The Raft thread drains every waiting proposal into raft, so one
//!    `Ready` carries many client writes; it sends the appends to the
//!    followers and appends the entries to its WAL with **one fsync**.
//! 4. Followers append to their WALs (one fsync each) and only then answer.
//! 5. With a quorum of answers the entry is committed; the next `Ready`
//!    hands it to the state machine, which writes it to the engine together
//!    with the new applied index, in one atomic batch.
//! 6. The handler is told, and only now answers `204`: an acknowledged write
//!    is on disk on a majority and visible to reads on the leader.
//!
//! ## The read path
//!
//! A linearizable `GET` (the default) asks raft for a read index: the
//! leader confirms with a heartbeat round that it still leads and returns
//! its commit index; the node serving the read (follower or leader) waits
//! until it has applied that index and reads its MVCC store. A serializable
//! read (`?consistency=serializable`, or etcd's `serializable` flag) reads
//! the local store at once.
//!
//! ## Durability
//!
//! Nothing is acknowledged before the WAL fsync on a quorum returns. The
//! engines are written without fsync: after a crash a node finds the
//! applied index in its engine (stored atomically with the data), replays
//! its WAL from there, and catches up the rest from the leader. Every
//! `--snapshot-every` entries the engine is exported to a snapshot file by a
//! background thread (from a copy-on-write view, [`consistent_export`]),
//! then the engine is synced and the WAL before the snapshot is deleted.
//!
//! ## Failure
//!
//! A torn last WAL record (a crash mid-append) is truncated at start;
//! corruption inside the log stops the node with an error naming the file
//! and offset. A dead peer fills its bounded send queue and its messages are
//! dropped; raft retransmits when it returns. Without a quorum, writes and
//! linearizable reads fail with `503` and `Retry-After` after the request
//! timeout instead of hanging.

pub mod api;
pub mod backup;
pub mod client;
pub mod command;
pub mod concurrency;
pub mod consistent_export;
pub mod etcd_wire;
pub mod install_gate;
pub mod lease;
mod logger;
pub mod metrics;
pub mod mvcc;
pub mod raft;
pub mod state_machine;
pub mod watch;

pub use client::Client;
pub use raft::{NodeConfig, NodeHandle, NodeStatus};
pub use state_machine::Member;

/// Parses `1=127.0.0.1:13380,2=127.0.0.1:23380` into (id, address) pairs.
pub fn parse_id_list(list: &str) -> Result<Vec<(u64, String)>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not id=host:port (e.g. 1=127.0.0.1:13380)"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| format!("{id:?} in {item:?} is not a positive node id"))?;
        let address = address
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/');
        address
            .parse::<std::net::SocketAddr>()
            .map_err(|_| format!("{address:?} in {item:?} is not host:port with a numeric IP"))?;
        if out.iter().any(|(seen, _)| *seen == id) {
            return Err(format!("node id {id} appears twice"));
        }
        out.push((id, address.to_string()));
    }
    if out.is_empty() {
        return Err("the list is empty; expected id=host:port[,id=host:port...]".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_parse_and_explain_errors() {
        let parsed = parse_id_list("1=127.0.0.1:1, 2=http://127.0.0.1:2/").unwrap();
        assert_eq!(
            parsed,
            vec![(1, "127.0.0.1:1".into()), (2, "127.0.0.1:2".into())]
        );
        assert!(parse_id_list("").is_err());
        assert!(
            parse_id_list("0=127.0.0.1:1")
                .unwrap_err()
                .contains("positive")
        );
        assert!(
            parse_id_list("1=localhost")
                .unwrap_err()
                .contains("host:port")
        );
        assert!(
            parse_id_list("1=127.0.0.1:1,1=127.0.0.1:2")
                .unwrap_err()
                .contains("twice")
        );
    }
}
