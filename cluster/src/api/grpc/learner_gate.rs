//! What a learner answers: almost nothing, as etcd's learners do.
//!
//! A learner replicates the log but does not vote, and etcd 3.4 keeps
//! clients off it: its gRPC interceptors refuse every call with
//! `Unavailable` "etcdserver: rpc not supported for learner", except
//! Maintenance.Status (so `etcdctl endpoint status` can show it catching
//! up) and a serializable Range (a local read, which is all a learner can
//! honestly serve). Every stream (Watch, LeaseKeepAlive, Snapshot,
//! Observe) is refused too. The client balancer treats `Unavailable` as
//! "try another member", which is why a learner in a client's endpoint
//! list does no harm.
//!
//! [`LearnerGate`] wraps the whole gRPC router and refuses by path before
//! any service sees the call; the Range case, which depends on the
//! message, is refused in [`super::kv`] with [`refuse_unless_voting`].
//! A member that has just been promoted serves everything from its next
//! call on: the gate reads the member table on every call.

use std::task::{Context, Poll};

use tonic::Status;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Service};

use crate::raft::NodeHandle;

/// etcd's message for a call a learner does not serve.
pub const NOT_SUPPORTED_FOR_LEARNER: &str = "etcdserver: rpc not supported for learner";

/// The calls a learner serves whatever their message: Status, and Range,
/// whose linearizable form [`super::kv`] refuses itself.
const SERVED_BY_LEARNERS: [&str; 2] =
    ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

/// True when this member is a learner in its own member table (a member
/// not yet in the table, still joining, is not refused: etcd checks that
/// the member exists first).
pub fn is_learner(node: &NodeHandle) -> bool {
    // Every gRPC call asks: look, do not clone the member.
    node.members
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&node.id)
        .is_some_and(|m| m.learner)
}

/// The refusal for a call that needs a voting member.
pub fn refuse_unless_voting(node: &NodeHandle) -> Result<(), Status> {
    if is_learner(node) {
        return Err(Status::unavailable(NOT_SUPPORTED_FOR_LEARNER));
    }
    Ok(())
}

/// The gRPC router wrapped so that a learner refuses what etcd's refuses.
#[derive(Clone)]
pub struct LearnerGate<S> {
    inner: S,
    node: NodeHandle,
}

/// The `tower` layer that puts [`LearnerGate`] around the router.
#[derive(Clone)]
pub struct LearnerGateLayer {
    pub node: NodeHandle,
}

impl<S> tower_layer::Layer<S> for LearnerGateLayer {
    type Service = LearnerGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LearnerGate {
            inner,
            node: self.node.clone(),
        }
    }
}

impl<S, B> Service<http::Request<B>> for LearnerGate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if !SERVED_BY_LEARNERS.contains(&path) && is_learner(&self.node) {
            let refusal = Status::unavailable(NOT_SUPPORTED_FOR_LEARNER).into_http();
            return Box::pin(async move { Ok(refusal) });
        }
        // The clone took `poll_ready`'s place, so call the ready one and
        // keep the clone for the next call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}
