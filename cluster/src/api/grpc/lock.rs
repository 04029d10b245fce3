//! The Lock service (etcd's `v3lockpb.Lock`): Lock and Unlock, served by
//! the mutex recipe ([`crate::concurrency::lock`]) over this member's own
//! API ([`super::loopback`]).

use tonic::{Request, Response, Status};

use super::loopback::{Loopback, recipe_status};
use super::proto::lock_header;
use super::proto::v3lock::lock_server::Lock;
use super::proto::v3lock::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::concurrency::lock;

pub struct LockService {
    loopback: Loopback,
}

impl LockService {
    pub fn new(loopback: Loopback) -> LockService {
        LockService { loopback }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    // ANCHOR: lock_service
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let request = request.into_inner();
        let mut client = self.loopback.client().await?;
        let held = lock::lock(&mut client, &request.name, request.lease)
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(LockResponse {
            header: held.header.as_ref().map(lock_header),
            key: held.key,
        }))
    }
    // ANCHOR_END: lock_service

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let request = request.into_inner();
        let mut client = self.loopback.client().await?;
        let header = lock::unlock(&mut client, &request.key)
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(UnlockResponse {
            header: header.as_ref().map(lock_header),
        }))
    }
}
