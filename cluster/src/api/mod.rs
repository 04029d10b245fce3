//! The client APIs of a node:
//!
//! * [`grpc`]: etcd's v3 gRPC API (KV, Cluster, Maintenance), which
//!   `etcdctl` and etcd's client libraries speak, on `--listen-grpc`;
//! * [`http`]: the curl-able HTTP API that `metcdctl`, the tests and the
//!   workload harness speak, with two routes of their own beside it:
//!   [`metrics`] (`GET /metrics`, Prometheus' text format) and [`identity`]
//!   (`GET /-/cluster`, which a joining node asks); GET's query parameters
//!   and its JSON listing are in [`read_query`], its streaming watch in
//!   [`http_watch`];
//! * [`gateway`]: etcd's JSON gateway (`POST /v3/kv/...`) on the same HTTP
//!   port, a JSON face on the very KV service the gRPC API serves.
//!
//! Both reach the Raft thread through [`raft_call`], which bounds the
//! waiting requests, applies the request timeout and says whether a failed
//! request had an effect.

pub mod gateway;
pub mod grpc;
pub mod http;
pub mod http_watch;
pub mod identity;
pub mod metrics;
pub mod raft_call;
pub mod read_query;

/// The routes that need only the node handle: `/metrics` and `/-/cluster`,
/// merged into [`http::router`].
pub fn node_routes(node: crate::raft::NodeHandle) -> axum::Router {
    metrics::router(node.clone()).merge(identity::router(node))
}

pub use http::{ApiConfig, MAX_KEY_BYTES, MAX_VALUE_BYTES, error, router};
