//! `GET /-/cluster`: which cluster this node belongs to, and its member id.
//!
//! A node started with `--join` asks this of the cluster it joins before it
//! starts ([`cluster_id_from`]), and keeps the answer as its own cluster id
//! (see `raft::identity`); operators can compare it with the id a node logs
//! when it refuses a peer.
//!
//! ```text
//! GET /-/cluster  -> {"cluster_id":"5bd7c8d2a3f1e0c4","member_id":1}
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError};
use crate::raft::NodeHandle;
use crate::raft::identity::ClusterId;

/// The body of `GET /-/cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: ClusterId,
    pub member_id: u64,
}

/// The `/-/cluster` route of one node.
pub fn router(node: NodeHandle) -> Router {
    Router::new()
        .route("/-/cluster", get(cluster))
        .with_state(node)
}

async fn cluster(State(node): State<NodeHandle>) -> Response {
    axum::Json(ClusterInfo {
        cluster_id: node.identity.cluster,
        member_id: node.id,
    })
    .into_response()
}

/// Asks the cluster at `endpoints` (comma separated client addresses) for
/// its id, retrying for a few seconds while it elects a leader or starts.
pub async fn cluster_id_from(endpoints: &str) -> Result<ClusterId, ClientError> {
    let client = Client::new(&[endpoints])?.with_timeout(Duration::from_secs(3));
    let response = client
        .request(Method::GET, "/-/cluster", Bytes::new())
        .await?;
    if response.status != StatusCode::OK {
        return Err(ClientError::Status {
            status: response.status.as_u16(),
            message: format!(
                "{} (does the node at {endpoints} run a metcd that serves /-/cluster?)",
                response.message()
            ),
        });
    }
    let info: ClusterInfo = serde_json::from_slice(&response.body)
        .map_err(|e| ClientError::Body(format!("/-/cluster: {e}")))?;
    Ok(info.cluster_id)
}
