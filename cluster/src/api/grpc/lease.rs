//! etcd's Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive,
//! LeaseTimeToLive and LeaseLeases, over the lessor of [`crate::lease`].
//!
//! * Grant and Revoke are writes: served on the leader (a follower
//!   forwards them), proposed through Raft. A grant's TTL is raised to the
//!   minimum and one above the maximum is refused (`OutOfRange`, "etcdserver:
//!   too large lease TTL") before anything is proposed; its id is the
//!   client's, or chosen here when the client sends 0. A duplicate id is
//!   refused when applied (`FailedPrecondition`, "etcdserver: lease already
//!   exists"), an unknown lease in a revoke too (`NotFound`, "etcdserver:
//!   requested lease not found").
//! * KeepAlive is a stream; each request moves the lease's deadline on the
//!   leader, without Raft, and is answered with the lease's TTL, or TTL 0
//!   for a lease that does not exist (or has expired), as etcd answers. A
//!   follower forwards each keep-alive to the leader, one at a time.
//! * TimeToLive needs the leader's deadline: a follower forwards it. An
//!   unknown lease is answered TTL -1 (etcd's answer, which `etcdctl` prints
//!   as "already expired").
//! * Leases lists the leases this member has applied after a read index,
//!   so it includes every lease granted before the call.

use std::time::Instant;

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{GrpcApi, Route};
use crate::command::{Command, CommandResponse};
use crate::lease::Renewal;
use crate::raft::Proposer;

/// Keep-alive answers buffered per stream before the reader waits.
const KEEP_ALIVE_BUFFER: usize = 16;

pub struct LeaseService {
    api: GrpcApi,
}

impl LeaseService {
    pub fn new(api: GrpcApi) -> LeaseService {
        LeaseService { api }
    }

    /// One keep-alive outside a stream (the JSON gateway's
    /// `/v3/lease/keepalive`), answered as the stream answers it.
    pub async fn keep_alive_once(
        &self,
        request: PbLeaseKeepAliveRequest,
    ) -> Result<PbLeaseKeepAliveResponse, Status> {
        keep_alive(&self.api, request).await
    }
}

/// One keep-alive, served here on the leader or forwarded to it.
async fn keep_alive(
    api: &GrpcApi,
    request: PbLeaseKeepAliveRequest,
) -> Result<PbLeaseKeepAliveResponse, Status> {
    let id = request.id;
    let answer = |ttl| PbLeaseKeepAliveResponse {
        header: api.header(api.node.kv.revision()),
        id,
        ttl,
    };
    match api.node.leases.lessor.renew(id, Instant::now()) {
        Renewal::Renewed(ttl) => return Ok(answer(ttl)),
        Renewal::NotFound => return Ok(answer(0)),
        Renewal::NotPrimary => {}
    }
    match api.route()? {
        // Leading but not yet promoted (the Raft thread publishes both at
        // once; this is the moment between): the deadlines start now.
        Route::Here => Err(super::status::write(crate::raft::WriteError::NotLeader {
            leader: None,
        })),
        Route::Leader(leader) => {
            let mut response: PbLeaseKeepAliveResponse = api
                .forwarder
                .stream_once(&leader, "/etcdserverpb.Lease/LeaseKeepAlive", request)
                .await?;
            if let Some(header) = response.header.as_mut() {
                header.member_id = api.node.id;
            }
            Ok(response)
        }
    }
}

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let pb = request.into_inner();
        let leases = &self.api.node.leases;
        let ttl = leases.clamp_ttl(pb.ttl).map_err(Status::out_of_range)?;
        if let Route::Leader(leader) = self.api.route()? {
            return self
                .api
                .forward(
                    &leader,
                    "/etcdserverpb.Lease/LeaseGrant",
                    pb,
                    |r: &mut PbLeaseGrantResponse| r.header.as_mut(),
                )
                .await;
        }
        let id = leases.choose_id(pb.id);
        let applied = self
            .api
            .propose(Command::LeaseGrant { id, ttl }, Proposer::LeaderOnly)
            .await?;
        match applied.response {
            Some(CommandResponse::LeaseGranted { id, ttl }) => {
                Ok(Response::new(PbLeaseGrantResponse {
                    header: self.api.header(applied.revision as i64),
                    id,
                    ttl,
                    error: String::new(),
                }))
            }
            _ => Err(Status::internal(
                "a lease grant was applied without its answer",
            )),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        let pb = request.into_inner();
        if let Route::Leader(leader) = self.api.route()? {
            return self
                .api
                .forward(
                    &leader,
                    "/etcdserverpb.Lease/LeaseRevoke",
                    pb,
                    |r: &mut PbLeaseRevokeResponse| r.header.as_mut(),
                )
                .await;
        }
        let applied = self
            .api
            .propose(Command::LeaseRevoke { id: pb.id }, Proposer::LeaderOnly)
            .await?;
        Ok(Response::new(PbLeaseRevokeResponse {
            header: self.api.header(applied.revision as i64),
        }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<PbLeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, answers) = tokio::sync::mpsc::channel(KEEP_ALIVE_BUFFER);
        let api = self.api.clone();
        tokio::spawn(async move {
            loop {
                let next = match inbound.message().await {
                    Ok(Some(next)) => next,
                    // The client closed its side, or the stream broke.
                    Ok(None) | Err(_) => return,
                };
                let answer = keep_alive(&api, next).await;
                let failed = answer.is_err();
                if out.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(answers)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let pb = request.into_inner();
        if let Route::Leader(leader) = self.api.route()? {
            return self
                .api
                .forward(
                    &leader,
                    "/etcdserverpb.Lease/LeaseTimeToLive",
                    pb,
                    |r: &mut PbLeaseTimeToLiveResponse| r.header.as_mut(),
                )
                .await;
        }
        let header = self.api.header(self.api.node.kv.revision());
        let answer = match self
            .api
            .node
            .leases
            .lessor
            .info(pb.id, pb.keys, Instant::now())
        {
            Some(info) => PbLeaseTimeToLiveResponse {
                header,
                id: pb.id,
                ttl: info.remaining.unwrap_or(info.granted_ttl),
                granted_ttl: info.granted_ttl,
                keys: info.keys,
            },
            None => PbLeaseTimeToLiveResponse {
                header,
                id: pb.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(answer))
    }

    async fn lease_leases(
        &self,
        _request: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        self.api.read_index().await?;
        let leases = self
            .api
            .node
            .leases
            .lessor
            .ids()
            .into_iter()
            .map(|id| PbLeaseStatus { id })
            .collect();
        Ok(Response::new(PbLeaseLeasesResponse {
            header: self.api.header(self.api.node.kv.revision()),
            leases,
        }))
    }
}
