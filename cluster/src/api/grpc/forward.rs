//! A follower's leader-only calls, sent on to the leader.
//!
//! gRPC clients do not follow redirects, and etcd's clients send requests
//! to whichever member they are connected to. KV writes reach the leader
//! inside Raft (`crate::raft::pending`); the calls that stay leader-only (a
//! membership change, a compaction, a lease grant or revoke, a leader
//! transfer) are forwarded by a follower to the leader's gRPC address, as
//! the same call with the same message, and the answer or the error is
//! relayed unchanged. One HTTP/2 channel per leader address is kept and
//! reused.
//!
//! What a lost answer means: if the call fails before the leader could
//! have received it (connecting failed), the write was certainly not
//! applied (`Unavailable`, "no leader"); if it fails later (timeout, broken
//! connection), the outcome is unknown and is reported as etcd reports a
//! timed-out request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Status;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use super::status;
use crate::api::raft_call::Outcome;

#[derive(Clone)]
pub struct Forwarder {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    timeout: Duration,
}

impl Forwarder {
    pub fn new(timeout: Duration) -> Forwarder {
        Forwarder {
            channels: Arc::default(),
            timeout,
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| {
                Status::internal(format!(
                    "the leader's gRPC address {address:?} is not usable: {e}"
                ))
            })?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// A client of the leader at `address` whose connection is up: until it
    /// is, nothing was sent, so a failure here is a definite "not applied".
    async fn ready(&self, address: &str) -> Result<tonic::client::Grpc<Channel>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel(address)?);
        if let Err(err) = grpc.ready().await {
            return Err(status::with_detail(
                tonic::Code::Unavailable,
                status::NO_LEADER,
                &format!("the leader at {address} cannot be reached: {err}; nothing was sent"),
                Outcome::NotApplied,
            ));
        }
        Ok(grpc)
    }

    /// Calls `path` on the leader at `address` with `request`.
    pub async fn unary<Req, Resp>(
        &self,
        address: &str,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.ready(address).await?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        match grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
        {
            Ok(response) => Ok(response.into_inner()),
            // The leader's own answer (ours carry an outcome; etcd's
            // refusals have their own codes): relay it as it is.
            Err(err) if from_leader(&err) => Err(err),
            Err(err) => Err(status::with_detail(
                tonic::Code::Unavailable,
                status::TIMEOUT,
                &format!(
                    "forwarding to the leader at {address} failed after sending: {err}; the \
                     request may or may not have been applied"
                ),
                Outcome::Unknown,
            )),
        }
    }
}

impl Forwarder {
    /// Sends `request` as the only message of the bidirectional stream
    /// `path` on the leader at `address` and returns the first answer (a
    /// follower's lease keep-alive, which only the leader can serve).
    pub async fn stream_once<Req, Resp>(
        &self,
        address: &str,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.ready(address).await?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let outbound = tokio_stream::iter([request]);
        let lost = |err: String| {
            status::with_detail(
                tonic::Code::Unavailable,
                status::TIMEOUT,
                &format!("forwarding to the leader at {address} failed: {err}"),
                Outcome::Unknown,
            )
        };
        let call = async {
            let mut answers = grpc
                .streaming(
                    tonic::Request::new(outbound),
                    PathAndQuery::from_static(path),
                    codec,
                )
                .await?
                .into_inner();
            answers.message().await
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(Some(answer))) => Ok(answer),
            Ok(Ok(None)) => Err(lost(
                "the leader closed the stream without an answer".into(),
            )),
            Ok(Err(err)) if from_leader(&err) => Err(err),
            Ok(Err(err)) => Err(lost(err.to_string())),
            Err(_) => Err(lost(format!("no answer within {:?}", self.timeout))),
        }
    }
}

/// Whether a failed call was answered by the leader (rather than lost in
/// transport, which gRPC reports as unavailable, unknown, cancelled or
/// deadline exceeded, without our outcome metadata).
fn from_leader(err: &Status) -> bool {
    use tonic::Code;
    err.metadata().contains_key("metcd-outcome")
        || !matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
        )
}
