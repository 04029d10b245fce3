//! etcd's Cluster service: list, add, remove, promote (and update) members.
//!
//! Members are metcd's own (`crate::state_machine::Member`), shown in
//! etcd's form: the id, a name (`m<id>`: metcd members have no names of
//! their own), the peer URL and, as the client URL, the member's gRPC
//! address, which is what `etcdctl --cluster` and client libraries connect
//! to. A member added through this API has no client addresses until it
//! is started and they are given to it (its `--listen-grpc`); etcd shows
//! such a member the same way, with an empty name.
//!
//! etcd picks a random 64-bit id for a new member; metcd members are
//! numbered, so a new member gets the next number after every current and
//! removed member (ids are never reused), and the operator starts it with
//! `metcd --id <that number> --join ...`.
//!
//! Every precondition etcd checks with a message of its own (an unknown
//! member, a peer URL already in use, promoting a voter) is checked here
//! first, so the answer carries etcd's code and message.

use etcd_client::proto::{
    PbClusterService, PbMember, PbMemberAddRequest, PbMemberAddResponse, PbMemberListRequest,
    PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse, PbMemberRemoveRequest,
    PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::{GrpcApi, Route, status};
use crate::raft::MemberChange;
use crate::state_machine::Member;

pub struct ClusterService {
    api: GrpcApi,
}

impl ClusterService {
    pub fn new(api: GrpcApi) -> ClusterService {
        ClusterService { api }
    }

    fn members_pb(&self) -> Vec<PbMember> {
        self.api.members().iter().map(member_pb).collect()
    }

    /// etcd's Cluster service headers carry no revision (membership is not
    /// part of the key-value history).
    fn header(&self) -> Option<etcd_client::proto::PbResponseHeader> {
        self.api.header(0)
    }

    fn known(&self, id: u64) -> Result<Member, Status> {
        self.api
            .node
            .member(id)
            .ok_or_else(|| Status::not_found(status::MEMBER_NOT_FOUND))
    }
}

/// A member in etcd's form.
pub fn member_pb(member: &Member) -> PbMember {
    PbMember {
        id: member.id,
        name: if member.grpc.is_some() || !member.client.is_empty() {
            format!("m{}", member.id)
        } else {
            String::new()
        },
        peer_ur_ls: vec![format!("http://{}", member.peer)],
        client_ur_ls: member
            .grpc
            .iter()
            .map(|address| format!("http://{address}"))
            .collect(),
        is_learner: member.learner,
    }
}

/// `host:port` from a peer URL as etcdctl sends it (`http://host:port`).
fn peer_address(url: &str) -> Result<String, Status> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Status::invalid_argument(format!(
            "etcdserver: peer URL {url:?} is not usable: metcd speaks plain http between \
             members (no TLS yet); give http://host:port"
        ))
    })?;
    let address = rest.trim_end_matches('/');
    if address.is_empty() || address.contains('/') || !address.contains(':') {
        return Err(Status::invalid_argument(format!(
            "etcdserver: peer URL {url:?} is not http://host:port"
        )));
    }
    Ok(address.to_string())
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        request: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        let pb = request.into_inner();
        let [url] = pb.peer_ur_ls.as_slice() else {
            return Err(Status::invalid_argument(format!(
                "etcdserver: metcd members have exactly one peer URL; {} were given",
                pb.peer_ur_ls.len()
            )));
        };
        let peer = peer_address(url)?;
        if self.api.members().iter().any(|m| m.peer == peer) {
            return Err(Status::failed_precondition(status::PEER_URL_EXISTS));
        }
        if let Route::Leader(leader) = self.api.route()? {
            return self
                .api
                .forward(
                    &leader,
                    "/etcdserverpb.Cluster/MemberAdd",
                    pb,
                    |r: &mut PbMemberAddResponse| r.header.as_mut(),
                )
                .await;
        }
        let removed = self
            .api
            .node
            .removed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        let id = self
            .api
            .members()
            .iter()
            .map(|m| m.id)
            .max()
            .unwrap_or(0)
            .max(removed)
            + 1;
        let member = Member {
            id,
            peer,
            client: String::new(),
            grpc: None,
            learner: pb.is_learner,
        };
        let change = if pb.is_learner {
            MemberChange::AddLearner(member.clone())
        } else {
            MemberChange::AddVoter(member.clone())
        };
        self.api.change_membership(change).await?;
        Ok(Response::new(PbMemberAddResponse {
            header: self.header(),
            member: Some(member_pb(&member)),
            members: self.members_pb(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        let pb = request.into_inner();
        self.known(pb.id)?;
        if let Route::Leader(leader) = self.api.route()? {
            return self
                .api
                .forward(
                    &leader,
                    "/etcdserverpb.Cluster/MemberRemove",
                    pb,
                    |r: &mut PbMemberRemoveResponse| r.header.as_mut(),
                )
                .await;
        }
        self.api
            .change_membership(MemberChange::Remove(pb.id))
            .await?;
        Ok(Response::new(PbMemberRemoveResponse {
            header: self.header(),
            members: self.members_pb(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        let pb = request.into_inner();
        let member = self.known(pb.id)?;
        if pb.peer_ur_ls.len() == 1 && peer_address(&pb.peer_ur_ls[0])? == member.peer {
            // Nothing changes: etcd answers such an update with success.
            return Ok(Response::new(PbMemberUpdateResponse {
                header: self.header(),
                members: self.members_pb(),
            }));
        }
        Err(Status::unimplemented(format!(
            "metcd cannot change the peer URL of member {} yet; remove the member and add it \
             again with the new URL",
            pb.id
        )))
    }

    async fn member_list(
        &self,
        _request: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        Ok(Response::new(PbMemberListResponse {
            header: self.header(),
            members: self.members_pb(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        let pb = request.into_inner();
        let member = self.known(pb.id)?;
        if !member.learner {
            return Err(Status::failed_precondition(status::NOT_LEARNER));
        }
        if let Route::Leader(leader) = self.api.route()? {
            return self
                .api
                .forward(
                    &leader,
                    "/etcdserverpb.Cluster/MemberPromote",
                    pb,
                    |r: &mut PbMemberPromoteResponse| r.header.as_mut(),
                )
                .await;
        }
        self.api
            .change_membership(MemberChange::Promote(pb.id))
            .await?;
        Ok(Response::new(PbMemberPromoteResponse {
            header: self.header(),
            members: self.members_pb(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_plain_http_host_and_port() {
        assert_eq!(
            peer_address("http://127.0.0.1:2380").unwrap(),
            "127.0.0.1:2380"
        );
        assert_eq!(
            peer_address("http://127.0.0.1:2380/").unwrap(),
            "127.0.0.1:2380"
        );
        for bad in [
            "https://127.0.0.1:2380",
            "127.0.0.1:2380",
            "http://",
            "http://host",
        ] {
            let err = peer_address(bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }
}
