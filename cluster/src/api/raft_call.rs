//! Asking the Raft thread from an API handler, for every client API.
//!
//! HTTP and gRPC handlers reach the node the same way: admit the request
//! (a bounded number may wait for the Raft thread), send it over the node's
//! channel, and wait for the answer within the request timeout. What a
//! failure means depends on what the request could change: a read or a
//! status query that fails had no effect, while a write whose answer is
//! lost after it was handed over may or may not be applied. [`CallError`]
//! carries that distinction as an [`Outcome`], and each API turns it into
//! its own form (an HTTP status and `X-Metcd-Outcome`; a gRPC code).

use std::time::Duration;

use tokio::sync::oneshot;

use crate::raft::NodeHandle;
use crate::raft::Request;
use crate::raft::handle::{Admission, Queued};

/// Whether a failed request had an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Certainly not applied: safe to retry.
    NotApplied,
    /// Maybe applied, maybe not.
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NotApplied => "not-applied",
            Outcome::Unknown => "unknown",
        }
    }
}

/// What a request can change, and so what a lost answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A read or a status query: nothing, always safe to retry.
    None,
    /// A write or a membership change: once sent, a lost answer leaves the
    /// outcome unknown.
    Write,
}

/// Why the Raft thread gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(
        "too many requests are waiting for the raft thread (limit {limit}, --max-queued-requests); \
         not applied, retry shortly"
    )]
    Overloaded { limit: usize },
    #[error("this node is shutting down; nothing was proposed")]
    ShuttingDown,
    #[error("the raft thread stopped before answering; retry on another node")]
    StoppedBeforeAnswer,
    #[error(
        "the raft thread stopped after the write was handed to it; it may or may not be \
         applied, read the key to find out"
    )]
    StoppedAfterWrite,
    #[error("the cluster did not answer within {timeout_ms} ms (quorum lost?); retry")]
    TimedOut { timeout_ms: u128 },
    #[error(
        "the cluster did not answer within {timeout_ms} ms (quorum lost or leader changed?); \
         the write may or may not be applied, read the key to find out"
    )]
    WriteTimedOut { timeout_ms: u128 },
}

impl CallError {
    pub fn outcome(&self) -> Outcome {
        match self {
            CallError::StoppedAfterWrite | CallError::WriteTimedOut { .. } => Outcome::Unknown,
            _ => Outcome::NotApplied,
        }
    }
}

/// A ticket for one request that will wait for the Raft thread.
pub fn admit(admission: &Admission) -> Result<Queued, CallError> {
    admission.admit().ok_or(CallError::Overloaded {
        limit: admission.limit(),
    })
}

/// Sends `request` to the Raft thread and waits for its answer within
/// `timeout`.
pub async fn call<T>(
    node: &NodeHandle,
    timeout: Duration,
    request: Request,
    answer: oneshot::Receiver<T>,
    effect: Effect,
) -> Result<T, CallError> {
    if node.requests.send(request).is_err() {
        return Err(CallError::ShuttingDown);
    }
    let timeout_ms = timeout.as_millis();
    match (tokio::time::timeout(timeout, answer).await, effect) {
        (Ok(Ok(value)), _) => Ok(value),
        (Ok(Err(_)), Effect::None) => Err(CallError::StoppedBeforeAnswer),
        (Ok(Err(_)), Effect::Write) => Err(CallError::StoppedAfterWrite),
        (Err(_), Effect::None) => Err(CallError::TimedOut { timeout_ms }),
        (Err(_), Effect::Write) => Err(CallError::WriteTimedOut { timeout_ms }),
    }
}
