//! Clients waiting on the Raft thread: writes until their entry is applied,
//! linearizable reads until their read index is applied.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use raft::ReadState;
use raft::StateRole;
use tokio::sync::oneshot;

use super::Node;
use super::handle::{WriteError, WriteReply};
use crate::state_machine::Command;

/// A client waiting for an answer from the Raft thread.
pub(super) struct Waiter<T> {
    pub(super) reply: oneshot::Sender<T>,
    pub(super) since: Instant,
}

/// Waiters older than this are forgotten (their clients timed out long ago).
const FORGET_AFTER: Duration = Duration::from_secs(30);
/// A read index not answered in this time is asked again (a new leader drops
/// read requests until it has committed an entry in its term).
const READ_RETRY: Duration = Duration::from_millis(500);

/// The waiting clients, by the request id their proposal or read carries.
pub(super) struct Pending {
    pub(super) next_request: u64,
    pub(super) writes: HashMap<u64, Waiter<WriteReply>>,
    pub(super) reads: HashMap<u64, Waiter<Result<(), WriteError>>>,
    pub(super) ready_reads: Vec<(u64, oneshot::Sender<Result<(), WriteError>>)>,
}

impl Pending {
    pub(super) fn new(first_request: u64) -> Self {
        Pending {
            next_request: first_request,
            writes: HashMap::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
        }
    }
}

impl Node {
    pub(super) fn new_request_id(&mut self) -> u64 {
        self.pending.next_request = self.pending.next_request.wrapping_add(1);
        self.pending.next_request
    }

    pub(super) fn not_leader(&self) -> WriteError {
        let leader = self.raw.raft.leader_id;
        WriteError::NotLeader {
            leader: (leader != 0).then_some(leader),
        }
    }

    // ANCHOR: propose
    /// Proposes a client write; the client is answered when it is applied.
    pub(super) fn propose(&mut self, command: Command, reply: oneshot::Sender<WriteReply>) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let request = self.new_request_id();
        let command = match command {
            Command::Put { key, value, .. } => Command::Put {
                request,
                key,
                value,
            },
            Command::Delete { key, .. } => Command::Delete { request, key },
        };
        let proposed = self.raw.propose(vec![], command.encode());
        self.wait_for_apply(request, reply, proposed, |err| {
            WriteError::Unavailable(format!("raft dropped the proposal: {err}"))
        });
    }

    /// After a proposal: the client waits for the entry to be applied, or,
    /// if raft refused the proposal, is answered at once with `refused`.
    pub(super) fn wait_for_apply(
        &mut self,
        request: u64,
        reply: oneshot::Sender<WriteReply>,
        proposed: raft::Result<()>,
        refused: impl FnOnce(raft::Error) -> WriteError,
    ) {
        match proposed {
            Ok(()) => {
                self.pending.writes.insert(
                    request,
                    Waiter {
                        reply,
                        since: Instant::now(),
                    },
                );
            }
            Err(err) => {
                let _ = reply.send(Err(refused(err)));
            }
        }
    }
    // ANCHOR_END: propose

    // ANCHOR: read_index
    /// Starts a linearizable read: raft confirms with a quorum that the
    /// leader is still the leader and returns its commit index (the read
    /// index); the read is served once this node has applied that far.
    /// Followers forward the request to the leader, so reads scale out.
    pub(super) fn read_index(&mut self, reply: oneshot::Sender<Result<(), WriteError>>) {
        if self.raw.raft.leader_id == 0 {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let context = self.new_request_id();
        self.pending.reads.insert(
            context,
            Waiter {
                reply,
                since: Instant::now(),
            },
        );
        self.raw.read_index(context.to_le_bytes().to_vec());
    }

    pub(super) fn on_read_state(&mut self, state: ReadState) {
        let Ok(bytes) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else {
            return;
        };
        if let Some(waiter) = self.pending.reads.remove(&u64::from_le_bytes(bytes)) {
            self.pending.ready_reads.push((state.index, waiter.reply));
        }
    }

    pub(super) fn release_reads(&mut self) {
        let applied = self.sm.applied_index();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending.ready_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.pending.ready_reads = waiting;
        for (_, reply) in done {
            let _ = reply.send(Ok(()));
        }
    }
    // ANCHOR_END: read_index

    /// Once a tick: forget waiters whose clients gave up, and ask again for
    /// read indexes that were not answered (a new leader drops them).
    pub(super) fn housekeeping(&mut self) {
        let now = Instant::now();
        self.pending
            .writes
            .retain(|_, w| now.duration_since(w.since) < FORGET_AFTER && !w.reply.is_closed());
        self.pending
            .reads
            .retain(|_, w| now.duration_since(w.since) < FORGET_AFTER && !w.reply.is_closed());
        self.pending
            .ready_reads
            .retain(|(_, reply)| !reply.is_closed());
        if self.raw.raft.leader_id != 0 {
            let retry: Vec<u64> = self
                .pending
                .reads
                .iter()
                .filter(|(_, w)| now.duration_since(w.since) >= READ_RETRY)
                .map(|(context, _)| *context)
                .collect();
            for context in retry {
                self.raw.read_index(context.to_le_bytes().to_vec());
            }
        }
    }

    /// A leader that steps down cannot tell its waiting clients whether
    /// their writes will commit (a new leader may still commit them), so it
    /// says so at once instead of letting them wait for the timeout.
    pub(super) fn fail_pending_writes(&mut self) {
        for (_, waiter) in self.pending.writes.drain() {
            let _ = waiter.reply.send(Err(WriteError::Unavailable(
                "leadership changed before the write was applied; it may or may not be applied, \
                 read the key to find out"
                    .into(),
            )));
        }
    }
}
