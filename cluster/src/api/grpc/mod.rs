//! # etcd's v3 gRPC API
//!
//! What `etcdctl`, etcd's client libraries (the Go `clientv3`, the Rust
//! `etcd-client` crate) and Kubernetes speak: gRPC over HTTP/2 cleartext on
//! the `--listen-grpc` address, with etcd's services, messages and errors.
//!
//! | file | one concept |
//! |---|---|
//! | [`kv`] | the KV service: Range, Put, DeleteRange, Txn, Compact |
//! | [`cluster`] | the Cluster service: member list, add, remove, update, promote |
//! | [`maintenance`] | the Maintenance service: status, alarms, hashes, snapshot, move-leader, defragment |
//! | [`lease`] | the Lease service: grant, revoke, keep-alive, time-to-live, list |
//! | [`learner_gate`] | what a learner refuses (all but Status and serializable Range) |
//! | [`lock`] | the Lock service: Lock, Unlock (etcd's mutex recipe, server-side) |
//! | [`election`] | the Election service: Campaign, Proclaim, Leader, Observe, Resign |
//! | [`loopback`] | the member's client of its own API, which those two recipes use |
//! | [`proto`] | code generated from `cluster/proto/` (Lock and Election) |
//! | [`status`] | etcd's errors as gRPC codes and messages |
//! | [`forward`] | a follower's leader-only calls sent on to the leader |
//! | [`watch`] | the Watch service: one stream of watchers per call (`crate::watch`) |
//!
//! The Auth service is not served: a call to it is answered
//! `Unimplemented` by the gRPC router.
//!
//! # One request, end to end
//!
//! A `Put` reaches any member. It is checked first (etcd's rules and
//! messages, [`crate::mvcc::txn`]), becomes a one-put transaction
//! ([`crate::command`]) and is proposed through this member's Raft thread
//! ([`crate::api::raft_call`]); gRPC clients do not follow redirects, so a
//! follower's raft forwards the entry to the leader in a `MsgProp`, as
//! etcd's does. The client is answered once this member has applied it;
//! the answer's header carries the cluster and member ids, the revision of
//! the write and the Raft term. The calls that stay leader-only (membership
//! changes, compaction, lease grants and revokes, leader transfer) are sent
//! to the leader's gRPC address unchanged ([`forward`]).
//!
//! A `Range` is served by the member it reaches: a linearizable one (the
//! default) first obtains a read index through Raft and waits until this
//! member has applied it; a serializable one reads the local store at once.

pub mod cluster;
pub mod election;
pub mod forward;
pub mod kv;
pub mod learner_gate;
pub mod lease;
pub mod lock;
pub mod loopback;
pub mod maintenance;
pub mod proto;
pub mod status;
pub mod watch;

use std::future::Future;
use std::time::Duration;

use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseServer, PbMaintenanceServer, PbResponseHeader,
};
use tokio::sync::oneshot;
use tonic::Status;

use super::raft_call::{self, Effect};
use crate::api::ApiConfig;
use crate::command::{Applied, Command};
use crate::raft::handle::Admission;
use crate::raft::{
    MemberChange, NodeHandle, NodeStatus, Proposer, Request, WriteError, WriteReply,
};
use crate::state_machine::Member;
use forward::Forwarder;

/// etcd's version as this API reports it: the 3.5 API level that clients
/// check for, with metcd's own version as semver build metadata (which
/// version comparisons ignore).
pub fn reported_version() -> String {
    format!("3.5.0+metcd.{}", env!("CARGO_PKG_VERSION"))
}

/// What every service of one member shares.
#[derive(Clone)]
pub struct GrpcApi {
    pub node: NodeHandle,
    pub config: ApiConfig,
    admission: Admission,
    forwarder: Forwarder,
}

/// Who serves a request that only the leader can serve.
pub enum Route {
    /// This member leads: serve it here.
    Here,
    /// Forward it to the leader's gRPC address.
    Leader(String),
}

impl GrpcApi {
    pub fn new(node: NodeHandle, config: ApiConfig) -> GrpcApi {
        GrpcApi {
            admission: Admission::new(config.max_queued_requests),
            forwarder: Forwarder::new(config.request_timeout),
            node,
            config,
        }
    }

    /// etcd's response header: cluster, member, revision, term.
    pub fn header(&self, revision: i64) -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            cluster_id: self.node.identity.cluster.0,
            member_id: self.node.id,
            revision,
            raft_term: self.node.view().term,
        })
    }

    /// Where a leader-only call (membership, compaction, lease grant and
    /// revoke, leader transfer) goes: here on the leader, else to the leader.
    pub fn route(&self) -> Result<Route, Status> {
        let view = self.node.view();
        if view.is_leader {
            return Ok(Route::Here);
        }
        if view.leader == 0 {
            return Err(status::write(WriteError::NotLeader { leader: None }));
        }
        match self.node.member(view.leader).and_then(|m| m.grpc) {
            Some(address) => Ok(Route::Leader(address)),
            None => Err(status::with_detail(
                tonic::Code::Unavailable,
                status::NO_LEADER,
                &format!(
                    "the leader (member {}) has no gRPC address: start every member with \
                     --listen-grpc (and list them in --initial-cluster-grpc)",
                    view.leader
                ),
                raft_call::Outcome::NotApplied,
            )),
        }
    }

    /// Forwards a leader-only call; the answer's header names this member,
    /// as etcd's do when a follower forwards internally.
    pub async fn forward<Req, Resp>(
        &self,
        leader: &str,
        path: &'static str,
        request: Req,
        header: impl FnOnce(&mut Resp) -> Option<&mut PbResponseHeader>,
    ) -> Result<tonic::Response<Resp>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut response = self.forwarder.unary(leader, path, request).await?;
        if let Some(h) = header(&mut response) {
            h.member_id = self.node.id;
        }
        Ok(tonic::Response::new(response))
    }

    /// Asks the Raft thread and waits within the request timeout.
    async fn ask<T>(
        &self,
        request: Request,
        answer: oneshot::Receiver<T>,
        effect: Effect,
    ) -> Result<T, Status> {
        raft_call::call(
            &self.node,
            self.config.request_timeout,
            request,
            answer,
            effect,
        )
        .await
        .map_err(status::call)
    }

    /// Waits until this member has applied everything committed when the
    /// read began (a ReadIndex round through the leader).
    pub async fn read_index(&self) -> Result<(), Status> {
        let queued = raft_call::admit(&self.admission).map_err(status::call)?;
        let (reply, answer) = oneshot::channel();
        self.ask(Request::ReadIndex { reply, queued }, answer, Effect::None)
            .await?
            .map_err(|_| {
                status::with_detail(
                    tonic::Code::Unavailable,
                    status::NO_LEADER,
                    "no leader confirmed the read index; retry, or read with serializable",
                    raft_call::Outcome::NotApplied,
                )
            })
    }

    /// Proposes `command` and waits until this member has applied it. With
    /// [`Proposer::AnyMember`] a follower hands it to the leader inside Raft;
    /// with [`Proposer::LeaderOnly`] it must be the leader.
    pub async fn propose(&self, command: Command, proposer: Proposer) -> Result<Applied, Status> {
        let queued = raft_call::admit(&self.admission).map_err(status::call)?;
        let proposal = crate::metrics::Proposal::start();
        let (reply, answer) = oneshot::channel();
        let request = Request::Propose {
            command,
            reply,
            queued,
            proposer,
        };
        let outcome: WriteReply = self.ask(request, answer, Effect::Write).await?;
        proposal.finish(outcome).map_err(status::write)
    }

    /// Proposes a membership change on this member (the leader).
    pub async fn change_membership(&self, change: MemberChange) -> Result<Applied, Status> {
        let queued = raft_call::admit(&self.admission).map_err(status::call)?;
        let (reply, answer) = oneshot::channel();
        let request = Request::ChangeMembership {
            change,
            reply,
            queued,
        };
        let outcome: WriteReply = self.ask(request, answer, Effect::Write).await?;
        outcome.map_err(status::write)
    }

    /// The node's status from the Raft thread.
    pub async fn node_status(&self) -> Result<NodeStatus, Status> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Status { reply }, answer, Effect::None)
            .await
    }

    pub fn members(&self) -> Vec<Member> {
        self.node
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Serves the gRPC API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: NodeHandle,
    config: ApiConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let api = GrpcApi::new(node, config);
    let loopback = listener.local_addr().map(loopback::Loopback::new);
    if let Err(e) = &loopback {
        tracing::error!(error = %e, "Lock and Election are not served: the gRPC listener has no local address");
    }
    // The builder's `tcp_nodelay` applies only to listeners it binds
    // itself; connections from our own listener get it here. Without it,
    // a small response waits for the client's delayed ACK (Nagle): a
    // serializable range took about 40 ms at 64 clients.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |stream| {
            if let Ok(stream) = &stream {
                let _ = stream.set_nodelay(true);
            }
            stream
        },
    );
    let gate = learner_gate::LearnerGateLayer {
        node: api.node.clone(),
    };
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(gate)
        .add_service(PbKvServer::new(kv::KvService::new(api.clone())))
        .add_service(PbLeaseServer::new(lease::LeaseService::new(api.clone())))
        .add_service(PbClusterServer::new(cluster::ClusterService::new(
            api.clone(),
        )))
        .add_service(etcd_client::proto::PbWatchServer::new(
            watch::WatchService::new(api.clone()),
        ))
        .add_service(PbMaintenanceServer::new(
            maintenance::MaintenanceService::new(api),
        ))
        .add_optional_service(loopback.as_ref().ok().map(|l| {
            proto::v3lock::lock_server::LockServer::new(lock::LockService::new(l.clone()))
        }))
        .add_optional_service(loopback.as_ref().ok().map(|l| {
            proto::v3election::election_server::ElectionServer::new(election::ElectionService::new(
                l.clone(),
            ))
        }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
