//! etcd's KV service: Range, Put, DeleteRange, Txn and Compact.
//!
//! Every write is checked here with etcd's rules before anything is sent
//! (so a bad request gets etcd's `InvalidArgument` from any member), then
//! proposed on the member that received it: on a follower, raft forwards
//! the entry to the leader in a `MsgProp` and the client is answered when
//! this member has applied it (see `crate::raft::pending`), as etcd does.
//! Compact is leader-only and forwarded as a gRPC call
//! ([`super::GrpcApi::route`]).
//! Put and DeleteRange are proposed as one-operation transactions, so the
//! store has one write path; the answer is unpacked back into the call's
//! own response type.
//!
//! A transaction goes through Raft even when it only reads (etcd serves
//! those from a read index instead): the answer is the same, it changes
//! no revision, and the store keeps one transaction path.
//!
//! A put naming a lease (also inside a transaction) is checked when it is
//! applied, as etcd does: a lease that does not exist then refuses the
//! whole request with `NotFound`, "etcdserver: requested lease not found",
//! the same answer on every member (see [`crate::lease`]).

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbTxnRequest, PbTxnResponse,
};
use tonic::{Request, Response, Status};

use super::{GrpcApi, Route, learner_gate, status};
use crate::command::{Command, CommandResponse};
use crate::etcd_wire;
use crate::mvcc::txn::{
    RequestOp, ResponseOp, TxnRequest, TxnResponse, validate_delete, validate_put, validate_range,
    validate_txn,
};
use crate::raft::Proposer;

pub struct KvService {
    api: GrpcApi,
}

impl KvService {
    pub fn new(api: GrpcApi) -> KvService {
        KvService { api }
    }

    /// Proposes a write transaction from this member; the revision it was
    /// applied at and the store's answer.
    async fn apply(&self, txn: TxnRequest) -> Result<(i64, TxnResponse), Status> {
        let applied = self
            .api
            .propose(Command::Txn(txn), Proposer::AnyMember)
            .await?;
        match applied.response {
            Some(CommandResponse::Txn(response)) => Ok((applied.revision as i64, response)),
            _ => Err(Status::internal(
                "a transaction was applied without a transaction response",
            )),
        }
    }
}

fn single(op: RequestOp) -> TxnRequest {
    TxnRequest {
        compare: vec![],
        success: vec![op],
        failure: vec![],
    }
}

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let pb = request.into_inner();
        let serializable = pb.serializable;
        if !serializable {
            // A learner serves local reads only (see `learner_gate`).
            learner_gate::refuse_unless_voting(&self.api.node)?;
        }
        let range = etcd_wire::range_in(pb).map_err(status::wire)?;
        validate_range(&range).map_err(status::request)?;
        if !serializable {
            self.api.read_index().await?;
        }
        let answer = self.api.node.kv.range(&range).map_err(status::mvcc)?;
        let header = self.api.header(answer.revision);
        Ok(Response::new(etcd_wire::range_response_out(answer, header)))
    }

    async fn put(&self, request: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let pb = request.into_inner();
        let put = etcd_wire::put_in(pb.clone());
        validate_put(&put).map_err(status::request)?;
        status::check_request_size(prost::Message::encoded_len(&pb))?;
        let op = RequestOp::Put(put);
        let (revision, mut answer) = self.apply(single(op)).await?;
        match answer.responses.pop() {
            Some(ResponseOp::Put(put)) => Ok(Response::new(etcd_wire::put_response_out(
                put,
                self.api.header(revision),
            ))),
            _ => Err(Status::internal("a put was applied without a put response")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let pb = request.into_inner();
        let delete = etcd_wire::delete_in(pb.clone());
        validate_delete(&delete).map_err(status::request)?;
        let (revision, mut answer) = self.apply(single(RequestOp::DeleteRange(delete))).await?;
        match answer.responses.pop() {
            Some(ResponseOp::DeleteRange(deleted)) => Ok(Response::new(
                etcd_wire::delete_response_out(deleted, self.api.header(revision)),
            )),
            _ => Err(Status::internal(
                "a delete was applied without a delete response",
            )),
        }
    }

    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let pb = request.into_inner();
        let txn = etcd_wire::txn_in(pb.clone()).map_err(status::wire)?;
        validate_txn(&txn).map_err(status::request)?;
        status::check_request_size(prost::Message::encoded_len(&pb))?;
        let (revision, answer) = self.apply(txn).await?;
        Ok(Response::new(etcd_wire::txn_response_out(
            answer,
            self.api.header(revision),
        )))
    }

    async fn compact(
        &self,
        request: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let pb = request.into_inner();
        if let Route::Leader(leader) = self.api.route()? {
            return self
                .api
                .forward(
                    &leader,
                    "/etcdserverpb.KV/Compact",
                    pb,
                    |r: &mut PbCompactionResponse| r.header.as_mut(),
                )
                .await;
        }
        let applied = self
            .api
            .propose(
                Command::Compact {
                    revision: pb.revision,
                },
                Proposer::LeaderOnly,
            )
            .await?;
        Ok(Response::new(PbCompactionResponse {
            header: self.api.header(applied.revision as i64),
        }))
    }
}
