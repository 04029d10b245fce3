//! A single-attempt etcd v3 gRPC client that knows when a request was sent.
//!
//! The same contract as [`crate::http`], for etcd's KV service: every
//! operation opens its own HTTP/2 connection (no pool, no retry, no
//! load balancing), sends one unary call, and reads one answer within one
//! deadline. Its errors say which side of the line they fell on:
//!
//! * [`GrpcError::NotSent`]: the connection (TCP and the HTTP/2 handshake)
//!   could not be made: no request left this process.
//! * [`GrpcError::Status`]: the server answered with an error. metcd marks
//!   its answers with `metcd-outcome` (`not-applied` or `unknown`); etcd's
//!   own refusals of a request (invalid argument, out of range...) happen
//!   before anything is proposed.
//! * [`GrpcError::Lost`]: the call was sent and no answer came (deadline,
//!   broken connection): a write may or may not be applied.

use std::net::SocketAddr;
use std::time::Duration;

use etcd_client::proto::{
    PbDeleteRequest, PbDeleteResponse, PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse,
};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("not sent: {0}")]
    NotSent(String),
    #[error("answer lost: {0}")]
    Lost(String),
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
}

/// What a failed call's status proves about a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMeaning {
    /// Certainly not applied.
    NotApplied,
    /// Maybe applied.
    Unknown,
}

/// Reads metcd's outcome marker, and otherwise etcd's codes: the request
/// checks (invalid argument, failed precondition, out of range, not
/// found) refuse before proposing; anything else promises nothing.
pub fn meaning(status: &tonic::Status) -> StatusMeaning {
    use tonic::Code;
    match status
        .metadata()
        .get("metcd-outcome")
        .and_then(|v| v.to_str().ok())
    {
        Some("not-applied") => StatusMeaning::NotApplied,
        Some(_) => StatusMeaning::Unknown,
        None => match status.code() {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::NotFound
            | Code::ResourceExhausted => StatusMeaning::NotApplied,
            _ => StatusMeaning::Unknown,
        },
    }
}

async fn unary<Req, Resp>(
    address: SocketAddr,
    path: &'static str,
    request: Req,
    timeout: Duration,
) -> Result<Resp, GrpcError>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| GrpcError::NotSent(format!("{address}: {e}")))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true);
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(err)) => return Err(GrpcError::NotSent(format!("connect {address}: {err}"))),
        Err(_) => {
            return Err(GrpcError::NotSent(format!(
                "connect {address}: no HTTP/2 handshake within {} ms",
                timeout.as_millis()
            )));
        }
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| GrpcError::NotSent(format!("{address} not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let call = grpc.unary(
        tonic::Request::new(request),
        PathAndQuery::from_static(path),
        codec,
    );
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        // Transport failures after sending surface as statuses without
        // metcd's marker; `meaning` treats those as unknown.
        Ok(Err(status)) => Err(GrpcError::Status(status)),
        Err(_) => Err(GrpcError::Lost(format!(
            "no answer from {address} within {} ms",
            timeout.as_millis()
        ))),
    }
}

pub async fn put(
    address: SocketAddr,
    key: &str,
    value: &str,
    timeout: Duration,
) -> Result<(), GrpcError> {
    let request = PbPutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PbPutRequest::default()
    };
    unary::<_, PbPutResponse>(address, "/etcdserverpb.KV/Put", request, timeout)
        .await
        .map(|_| ())
}

pub async fn delete(address: SocketAddr, key: &str, timeout: Duration) -> Result<(), GrpcError> {
    let request = PbDeleteRequest {
        key: key.as_bytes().to_vec(),
        ..PbDeleteRequest::default()
    };
    unary::<_, PbDeleteResponse>(address, "/etcdserverpb.KV/DeleteRange", request, timeout)
        .await
        .map(|_| ())
}

/// A linearizable read of one key: its value, or `None`.
pub async fn get(
    address: SocketAddr,
    key: &str,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, GrpcError> {
    let request = PbRangeRequest {
        key: key.as_bytes().to_vec(),
        ..PbRangeRequest::default()
    };
    let response: PbRangeResponse =
        unary(address, "/etcdserverpb.KV/Range", request, timeout).await?;
    Ok(response.kvs.into_iter().next().map(|kv| kv.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metcds_marker_decides_and_etcds_refusals_are_not_applied() {
        let mut marked = tonic::Status::unavailable("etcdserver: request timed out");
        marked
            .metadata_mut()
            .insert("metcd-outcome", "not-applied".parse().unwrap());
        assert_eq!(meaning(&marked), StatusMeaning::NotApplied);
        let unmarked = tonic::Status::unavailable("transport error");
        assert_eq!(meaning(&unmarked), StatusMeaning::Unknown);
        let refused = tonic::Status::invalid_argument("etcdserver: key is not provided");
        assert_eq!(meaning(&refused), StatusMeaning::NotApplied);
    }
}
