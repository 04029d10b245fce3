//! Membership changes: one at a time, proposed as raft conf changes that
//! carry the member's addresses, applied on every node with the data.
//!
//! The client that asked waits like a writer (see `pending`): under the
//! conf change entry's (index, term). It is answered with success only when
//! raft applied the change. Raft can still refuse a change that passed the
//! checks here: at proposal time it turns a conf change into an empty entry
//! when another change is unapplied, and at apply time it refuses one that
//! would leave no voter. Either way the client gets a 409 with the reason,
//! and the membership is unchanged.
//!
//! The bootstrap conf changes also carry the cluster id (see `identity`),
//! so the state machine holds it; a removal is recorded as such by the
//! state machine, for the transport's handshake.

use protobuf::Message as _;
use raft::StateRole;
use raft::prelude::{ConfChange, ConfChangeType, ConfState, Entry, EntryType};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::Node;
use super::handle::{MemberChange, NodeError, WriteError, WriteReply};
use super::identity::ClusterId;
use crate::state_machine::{Applied, Member};

/// Context carried in a conf change entry: who proposed it, and the
/// member's addresses, so every node learns them when it applies the change.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ChangeContext {
    /// The proposing node's id (informational: the waiting client is found
    /// by the entry's index and term). Named `request` for the entries
    /// written before that.
    request: u64,
    member: Option<Member>,
    /// The cluster id, in the bootstrap entries only (see `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterId>,
}

pub(super) fn bootstrap_entries(
    members: &[Member],
    cluster: ClusterId,
) -> Result<Vec<Entry>, NodeError> {
    let mut entries = Vec::new();
    for (i, member) in members.iter().enumerate() {
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = member.id;
        let context = ChangeContext {
            request: 0,
            member: Some(member.clone()),
            cluster: Some(cluster),
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

/// The share of the leader's log a learner must hold to be promoted.
const LEARNER_READY: f64 = 0.9;
/// Learners allowed at once, as etcd 3.4's `maxLearners`.
const MAX_LEARNERS: usize = 1;
/// etcd's refusal of a second learner (gRPC FailedPrecondition).
pub const TOO_MANY_LEARNERS: &str = "etcdserver: too many learner members in cluster";
/// etcd's message for a learner that is not caught up.
pub const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";

impl Node {
    /// Starts handing leadership to voter `to` (raft's leader transfer:
    /// the leader brings `to` up to date and tells it to campaign at once).
    pub(super) fn transfer_leader(&mut self, to: u64) -> Result<(), WriteError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(self.not_leader());
        }
        if !self.sm.conf_state().voters.contains(&to) {
            return Err(WriteError::Rejected(format!(
                "member {to} is not a voter; leadership can only move to a voter"
            )));
        }
        if to != self.id {
            self.raw.transfer_leader(to);
        }
        Ok(())
    }

    // ANCHOR: conf_change
    /// Proposes one membership change, after checking it makes sense
    /// against the applied membership. Raft allows one change in flight.
    pub(super) fn change_membership(
        &mut self,
        change: MemberChange,
        reply: oneshot::Sender<WriteReply>,
    ) {
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
            MemberChange::AddVoter(m) | MemberChange::AddLearner(m)
                if self
                    .sm
                    .removed()
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&m.id) =>
            {
                let _ = reply.send(Err(WriteError::Rejected(format!(
                    "member {} was removed; ids are not reused (a stale node with that id would be \
                     taken for the new one): add it under a new id",
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
            // etcd 3.4 allows one learner at a time (`maxLearners`): a
            // learner is a member being brought up to date, not a reader.
            MemberChange::AddLearner(_) if conf.learners.len() >= MAX_LEARNERS => {
                let _ = reply.send(Err(WriteError::Rejected(TOO_MANY_LEARNERS.into())));
                return;
            }
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
                // etcd's rule: a learner is promoted only once its log
                // matches at least 90% of the leader's, so that the new
                // voter does not stall commits while it catches up.
                let leader_last = self.raw.raft.raft_log.last_index();
                let learner_match = self.raw.raft.prs().get(id).map_or(0, |p| p.matched);
                if (learner_match as f64) < leader_last as f64 * LEARNER_READY {
                    let _ = reply.send(Err(WriteError::Rejected(LEARNER_NOT_READY.into())));
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
        let request = self.id;
        let mut cc = ConfChange::default();
        cc.set_change_type(change_type);
        cc.node_id = id;
        let context = ChangeContext {
            request,
            member,
            cluster: None,
        };
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
        self.wait_for_apply(reply, proposed, |err| {
            WriteError::Rejected(format!("raft refused the change: {err}"))
        });
    }

    /// Applies a committed conf change to raft and stages it in the state
    /// machine (membership and addresses, with the applied index). Returns
    /// the answer for the client waiting for this entry: success only if
    /// raft applied the change.
    pub(super) fn apply_conf_change(&mut self, entry: &Entry) -> Result<WriteReply, NodeError> {
        let cc = match ConfChange::parse_from_bytes(entry.get_data()) {
            Ok(cc) => cc,
            Err(err) => {
                tracing::error!(index = entry.index, %err, "undecodable conf change skipped");
                self.sm.stage_noop(entry.index, entry.term);
                return Ok(Err(WriteError::Rejected(format!(
                    "the membership change at index {} could not be decoded: {err}",
                    entry.index
                ))));
            }
        };
        let context: ChangeContext = serde_json::from_slice(cc.get_context()).unwrap_or_default();
        let conf_state: ConfState = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(err) => {
                tracing::warn!(index = entry.index, %err, "conf change not applicable; skipped");
                self.sm.stage_noop(entry.index, entry.term);
                return Ok(Err(WriteError::Rejected(format!(
                    "raft refused to apply the membership change ({:?} of node {}): {err}",
                    cc.get_change_type(),
                    cc.node_id
                ))));
            }
        };
        let id = cc.node_id;
        if let Some(cluster) = context.cluster {
            self.sm.stage_cluster_id(cluster);
        }
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
        Ok(Ok(Applied {
            revision: self.sm.revision(),
            response: None,
        }))
    }
    // ANCHOR_END: conf_change
}
