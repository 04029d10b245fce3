//! etcd's concurrency recipes, run by the server: a mutex (the Lock
//! service) and leader election (the Election service).
//!
//! Neither needs anything from the state machine beyond the public v3 API:
//! a lock is a key under the lock's name, attached to the holder's lease;
//! the holder is whoever's key has the smallest create revision; everyone
//! else waits for the key just before theirs to be deleted. Election is the
//! same queue, with the leader's value stored in its key. So these recipes
//! are written against an etcd v3 client (the `etcd-client` crate)
//! connected to the node's own gRPC port, as etcd's `v3lock` and
//! `v3election` servers use an in-process client. A follower therefore runs
//! them exactly as a remote client would: its writes are forwarded to the
//! leader and its watches are served from its own history.
//!
//! # The queue (ordering by create revision)
//!
//! A contender writes `<name>/<lease in hex>` only if that key does not
//! exist (`create_revision == 0`), in one transaction that also reads the
//! first key under `<name>/` by create revision. If that first key is its
//! own, it holds the lock. If not, it waits ([`wait`]) until every key under
//! the prefix created before its own is deleted: it looks up the newest
//! such key (`max_create_revision` = own − 1, sorted by create revision,
//! descending, limit 1), watches it from the revision of that read until a
//! DELETE arrives, and repeats. Each waiter watches only its predecessor,
//! so a release wakes one waiter, not all of them (no thundering herd).
//!
//! # Invariants
//!
//! * At most one holder: keys under a prefix have distinct create
//!   revisions (one key per revision), and a contender holds the lock only
//!   when no key with a smaller create revision exists; new contenders get
//!   larger revisions.
//! * The holder's key's create revision is a fencing token: it only grows
//!   from one holder to the next, so a resource that remembers the largest
//!   token it has seen can refuse a stale holder (one whose lease expired
//!   while it was paused).
//! * A hold ends with its key: Unlock/Resign delete it, and lease expiry
//!   deletes it through Raft. If a waiter's own key is gone when its
//!   predecessors are (its lease expired while it waited), it does not
//!   hold the lock: it answers etcd's "session expired" error.
//! * A contender that gives up while waiting (its caller disconnects or an
//!   error ends the wait) deletes its key, so it does not block those
//!   behind it until its lease expires.

pub mod election;
pub mod lock;
pub mod wait;

use etcd_client::{Client, LeaseGrantOptions};

/// A failure of a recipe. `Status` errors of the inner requests (for
/// example NotFound "etcdserver: requested lease not found") pass through to
/// the caller with their code and message.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{0}")]
    Client(#[from] etcd_client::Error),
    /// The contender's key disappeared while it waited: its lease expired
    /// or was revoked.
    #[error("session expired")]
    SessionExpired,
    /// Proclaim by a candidate that does not lead (etcd's message).
    #[error("election: not leader")]
    NotLeader,
    /// Leader/Observe on an election nobody leads (etcd's message).
    #[error("election: no leader")]
    NoLeader,
    /// A watch ended before the awaited event.
    #[error("watch ended: {0}")]
    WatchEnded(String),
    /// The answer lacked a part the recipe needs.
    #[error("unexpected response: {0}")]
    Unexpected(&'static str),
}

/// The TTL etcd's server-side recipes give a session when the request
/// names no lease (`concurrency.NewSession`'s default).
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// The key under `prefix` that stands for `lease` (lowercase hex, as etcd's
/// recipes name it, so etcd's and metcd's clients queue together).
pub fn contender_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// `<name>/`: the prefix of an election's or lock's keys.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// The lease a request names, or, for 0, a fresh lease of
/// [`DEFAULT_SESSION_TTL`] seconds that nobody keeps alive: what etcd's
/// server does with a lease-less Lock or Campaign.
pub async fn session_lease(client: &mut Client, lease: i64) -> Result<i64, RecipeError> {
    if lease != 0 {
        return Ok(lease);
    }
    let granted = client
        .lease_grant(DEFAULT_SESSION_TTL, None::<LeaseGrantOptions>)
        .await?;
    Ok(granted.id())
}

/// Deletes `key` in the background when dropped while armed: a contender
/// whose request is abandoned (the caller went away) leaves the queue.
pub struct LeaveOnDrop {
    client: Client,
    key: Option<Vec<u8>>,
}

impl LeaveOnDrop {
    pub fn new(client: &Client, key: Vec<u8>) -> LeaveOnDrop {
        LeaveOnDrop {
            client: client.clone(),
            key: Some(key),
        }
    }

    /// Keeps the key: the contender holds the lock or leads.
    pub fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut client = self.client.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = client.delete(key, None).await {
                        tracing::warn!(error = %e, "could not remove an abandoned contender's key");
                    }
                });
            }
        }
    }
}
