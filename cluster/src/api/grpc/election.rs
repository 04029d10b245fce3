//! The Election service (etcd's `v3electionpb.Election`): Campaign,
//! Proclaim, Leader, Observe and Resign, served by the election recipe
//! ([`crate::concurrency::election`]) over this member's own API
//! ([`super::loopback`]).

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::loopback::{Loopback, recipe_status};
use super::proto::v3election::election_server::Election;
use super::proto::v3election::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use super::proto::{election_header, election_kv};
use crate::concurrency::election::{self, Leader};

/// etcd's answer to Proclaim or Resign without a leader key.
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

pub struct ElectionService {
    loopback: Loopback,
}

impl ElectionService {
    pub fn new(loopback: Loopback) -> ElectionService {
        ElectionService { loopback }
    }
}

fn recipe_key(key: LeaderKey) -> election::LeaderKey {
    election::LeaderKey {
        name: key.name,
        key: key.key,
        rev: key.rev,
        lease: key.lease,
    }
}

fn leader_response(leader: &Leader) -> LeaderResponse {
    LeaderResponse {
        header: leader.header.as_ref().map(election_header),
        kv: Some(election_kv(&leader.kv)),
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let request = request.into_inner();
        let mut client = self.loopback.client().await?;
        let (leader, header) =
            election::campaign(&mut client, &request.name, request.lease, &request.value)
                .await
                .map_err(recipe_status)?;
        Ok(Response::new(CampaignResponse {
            header: header.as_ref().map(election_header),
            leader: Some(LeaderKey {
                name: leader.name,
                key: leader.key,
                rev: leader.rev,
                lease: leader.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let request = request.into_inner();
        let leader = request
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let mut client = self.loopback.client().await?;
        let header = election::proclaim(&mut client, &recipe_key(leader), &request.value)
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(ProclaimResponse {
            header: header.as_ref().map(election_header),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let request = request.into_inner();
        let mut client = self.loopback.client().await?;
        let leader = election::leader(&mut client, &request.name)
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(leader_response(&leader)))
    }

    type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let request = request.into_inner();
        let mut client = self.loopback.client().await?;
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let forward = sender.clone();
            let observing = election::observe(&mut client, &request.name, move |leader| {
                let forward = forward.clone();
                async move { forward.send(Ok(leader_response(&leader))).await.is_ok() }
            });
            // The observer may leave while nothing changes: stop watching then.
            tokio::select! {
                _ = sender.closed() => {}
                result = observing => {
                    if let Err(e) = result {
                        let _ = sender.send(Err(recipe_status(e))).await;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let request = request.into_inner();
        let leader = request
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let mut client = self.loopback.client().await?;
        let header = election::resign(&mut client, &recipe_key(leader))
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(ResignResponse {
            header: header.as_ref().map(election_header),
        }))
    }
}
