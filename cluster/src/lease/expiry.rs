//! The expiry thread: the leader's expired leases become revoke proposals.
//!
//! One thread per member wakes every `interval`, asks the lessor for
//! expired leases (none unless this member leads, see
//! [`super::clock::Deadlines`]) and proposes a [`Command::LeaseRevoke`]
//! for each through the Raft thread's request channel, like any client
//! write. It never waits for an answer on the Raft thread: replies are
//! collected without blocking on the next wake-up. At most
//! [`MAX_IN_FLIGHT`] revokes are outstanding, so a mass expiry is a steady
//! stream of proposals, not a flood; a revoke that was not applied (the
//! leader changed, the proposal was dropped) is proposed again after
//! `retry` if this member still leads and the lease still exists.
//!
//! A revoke of a lease that is already gone is harmless: it applies as
//! "lease not found" on every member and changes nothing.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::Lessor;
use crate::command::Command;
use crate::raft::handle::{Admission, NodeExit, Proposer, Request, WriteReply};

/// Revokes proposed and not yet answered, at most.
pub const MAX_IN_FLIGHT: usize = 16;

/// Starts the expiry thread of a member; it ends when the node exits.
pub fn spawn(
    lessor: Arc<Lessor>,
    requests: Sender<Request>,
    exit: watch::Receiver<Option<NodeExit>>,
    interval: Duration,
    retry: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("lease-expiry".into())
        .spawn(move || run(&lessor, &requests, &exit, interval, retry))
        .map(|_| ())
}

fn run(
    lessor: &Lessor,
    requests: &Sender<Request>,
    exit: &watch::Receiver<Option<NodeExit>>,
    interval: Duration,
    retry: Duration,
) {
    let admission = Admission::new(MAX_IN_FLIGHT);
    let mut waiting: Vec<(i64, oneshot::Receiver<WriteReply>)> = Vec::new();
    loop {
        std::thread::sleep(interval);
        if exit.borrow().is_some() {
            return;
        }
        waiting.retain_mut(|(id, answer)| match answer.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => true,
            Ok(Ok(_)) => false,
            Ok(Err(err)) => {
                tracing::debug!(lease = id, ?err, "a lease revoke was not applied");
                false
            }
            Err(oneshot::error::TryRecvError::Closed) => false,
        });
        let room = MAX_IN_FLIGHT.saturating_sub(waiting.len());
        if room == 0 {
            continue;
        }
        for id in lessor.expired(Instant::now(), room, retry) {
            let Some(queued) = admission.admit() else {
                break;
            };
            let (reply, answer) = oneshot::channel();
            let request = Request::Propose {
                command: Command::LeaseRevoke { id },
                reply,
                queued,
                proposer: Proposer::LeaderOnly,
            };
            if requests.send(request).is_err() {
                return;
            }
            tracing::info!(lease = %format!("{id:016x}"), "lease expired; revoking it");
            waiting.push((id, answer));
        }
    }
}
