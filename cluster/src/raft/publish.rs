//! A member tells the cluster where its clients reach it.
//!
//! etcd's `MemberAdd` carries only the new member's peer addresses; the
//! member publishes its name and client URLs through Raft once it runs,
//! and until then `member list` shows it "unstarted". metcd's members do
//! the same for a gap they can have: a member whose record has no client
//! address, or no gRPC address while it serves one (added with
//! `etcdctl member add`, which knows neither). It proposes a
//! [`Command::PublishMember`] with the addresses it listens on; a follower's
//! proposal goes to the leader inside Raft (raft-rs forwards proposals), and
//! every node applies it to its member table and the member record.
//!
//! Addresses already recorded are never overwritten: they came from the
//! operator (`--initial-cluster-clients`, or the HTTP `member add`) and may
//! name an address this node only listens behind (a wildcard, a NAT). The
//! proposal is retried every [`RETRY`] until the member's record shows it
//! applied, so a proposal lost to a leader change costs one retry.

use std::time::{Duration, Instant};

use super::Node;
use crate::command::Command;

/// Time between two proposals while the record is not yet updated.
const RETRY: Duration = Duration::from_secs(2);

/// What this member listens on, to publish where its record lacks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub client: String,
    pub grpc: Option<String>,
}

/// The publishing state of a node: what to publish and when it last tried.
#[derive(Debug, Default)]
pub(super) struct Publisher {
    pub(super) wanted: Option<Publication>,
    pub(super) last: Option<Instant>,
}

impl Node {
    /// Once a tick: proposes this member's addresses if its record lacks
    /// them, a leader is known, and the last attempt is [`RETRY`] old.
    pub(super) fn publish_if_needed(&mut self) {
        let Some(wanted) = self.publisher.wanted.clone() else {
            return;
        };
        let recorded = self
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.id)
            .cloned();
        // Not (yet) a member in this node's applied state: nothing to fill.
        let Some(recorded) = recorded else {
            return;
        };
        let lacks_client = recorded.client.is_empty() && !wanted.client.is_empty();
        let lacks_grpc = recorded.grpc.is_none() && wanted.grpc.is_some();
        if !lacks_client && !lacks_grpc {
            self.publisher.wanted = None;
            return;
        }
        if self.raw.raft.leader_id == 0
            || self.publisher.last.is_some_and(|at| at.elapsed() < RETRY)
        {
            return;
        }
        let command = Command::PublishMember {
            id: self.id,
            client: if lacks_client {
                wanted.client.clone()
            } else {
                recorded.client.clone()
            },
            grpc: if lacks_grpc {
                wanted.grpc.clone()
            } else {
                recorded.grpc.clone()
            },
        };
        self.publisher.last = Some(Instant::now());
        if let Err(err) = self.raw.propose(vec![], command.encode(self.id)) {
            tracing::debug!(%err, "publishing this member's addresses: proposal dropped; retrying");
        } else {
            tracing::info!(?command, "publishing this member's client addresses");
        }
    }
}
