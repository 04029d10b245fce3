//! `GET /metrics`: the node's metrics in Prometheus' text format, on the
//! client port, as etcd serves them.
//!
//! The counters and histograms live in [`crate::metrics`], recorded where
//! things happen; this handler adds what is read from the node at scrape
//! time (is a leader known, is it this node, which engine, which cluster,
//! the engine's size on disk, the store's revisions, the watchers) and
//! writes the exposition. It never waits for the Raft thread, so a
//! stuck node can still be scraped.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::{NodeFacts, render};
use crate::raft::NodeHandle;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` route of one node.
pub fn router(node: NodeHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(node)
}

async fn metrics(State(node): State<NodeHandle>) -> Response {
    let view = node.view();
    let (synced_watchers, unsynced_watchers, watch_streams) = node.watch.counts();
    let db_bytes = node
        .engine
        .kind()
        .is_durable()
        .then(|| engines::disk_usage(&crate::raft::engine_dir(&node.data_dir)).ok())
        .flatten();
    let facts = NodeFacts {
        member: node.id,
        cluster: node.identity.cluster.to_string(),
        engine: node.engine.kind().to_string(),
        has_leader: view.leader != 0,
        is_leader: view.is_leader,
        db_bytes,
        revision: node.kv.revision(),
        compact_revision: node.kv.compacted_revision(),
        synced_watchers,
        unsynced_watchers,
        watch_streams,
    };
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&facts)).into_response()
}
