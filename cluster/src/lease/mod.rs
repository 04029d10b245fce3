//! # lease: etcd's leases
//!
//! A lease is a TTL that clients keep alive; keys written with it are
//! deleted when it is revoked, by a client or because it expired. Service
//! discovery (a route that disappears when its server dies), locks and
//! elections are built on it.
//!
//! | file | one concept |
//! |---|---|
//! | [`table`] | the replicated lease table: leases, TTLs, attached keys |
//! | [`clock`] | the leader-only deadlines: promote, demote, renew, expired |
//! | [`lessor`] | both behind one lock, shared by apply loop, Raft thread, expiry thread and API |
//! | [`expiry`] | the thread that turns the leader's expired leases into revoke proposals |
//! | [`record`] | how a lease is stored in the engine (`m/lease/<id>`) |
//! | [`id`] | server-chosen lease ids |
//!
//! # What is replicated, what is leader-only
//!
//! Replicated (through Raft, the same on every member): the existence of a
//! lease and its TTL, and which keys are attached to it. A lease enters
//! with a committed grant ([`crate::command::Command::LeaseGrant`], its id
//! and TTL fixed by the member that proposed it, so every member applies
//! the same ones) and leaves with a committed revoke
//! ([`crate::command::Command::LeaseRevoke`]), proposed by a client or by
//! the leader's expiry. A key is attached by a put that names the lease
//! and detached by a put with another lease (or none), a delete, or the
//! revoke.
//!
//! Leader-only (in memory, never replicated): when each lease expires.
//! Keep-alives move that deadline on the leader without a Raft round trip
//! (a follower forwards them), and only the leader expires leases, by
//! proposing a revoke. On becoming leader a member gives every lease a
//! full TTL from that moment (etcd's promote); on losing leadership it
//! drops its deadlines (demote) and expires nothing. Remaining TTLs are
//! not checkpointed, so a leader change extends a lease by at most its
//! TTL plus the election time.
//!
//! # Invariants
//!
//! * A revoke deletes every attached key and the lease in one committed
//!   entry, the keys in one transaction: one revision, one delete event per
//!   key, visible to watchers as ordinary deletes.
//! * A put (also inside a transaction, on the branch taken) naming a lease
//!   that does not exist when it is applied is refused as etcd refuses it
//!   ("etcdserver: requested lease not found"); this is decided at apply
//!   time, so every member gives the same answer.
//! * The lease records (`m/lease/<id>`) change in the same engine batch as
//!   the applied index, so a restart finds exactly the leases of the
//!   applied prefix of the log. The attachments are not stored: they are
//!   the `lease` field of live keys, rebuilt from the MVCC history when the
//!   state machine opens and after a snapshot is installed.
//! * A follower never expires a lease.
//!
//! # Limits (etcd's)
//!
//! The TTL asked for is raised to the minimum, ceil(1.5 × the election
//! timeout) seconds, and one above [`MAX_TTL`] is refused ("etcdserver:
//! too large lease TTL"). Both checks happen before proposing.

pub mod clock;
pub mod expiry;
pub mod id;
pub mod lessor;
pub mod record;
pub mod table;

use std::sync::Arc;
use std::time::Duration;

pub use id::IdGenerator;
pub use lessor::{LeaseInfo, Lessor, Renewal};
pub use table::LeaseTable;

/// etcd's largest lease TTL, in seconds.
pub const MAX_TTL: i64 = 9_000_000_000;

pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
pub const LEASE_EXISTS: &str = "etcdserver: lease already exists";
pub const TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";

/// The smallest TTL a lease gets, in seconds: ceil(1.5 × election
/// timeout), as etcd computes it, so that a lease cannot expire during an
/// election a keep-alive had no chance to reach.
pub fn min_ttl(tick: Duration, election_ticks: usize) -> i64 {
    let election_ms = tick.as_millis() as u64 * election_ticks as u64;
    (election_ms * 3).div_ceil(2000).max(1) as i64
}

/// What the API needs of a member's leases.
#[derive(Clone, Debug)]
pub struct Leases {
    pub lessor: Arc<Lessor>,
    pub ids: Arc<IdGenerator>,
    /// [`min_ttl`] of this member's configuration.
    pub min_ttl: i64,
}

impl Leases {
    /// The TTL a grant of `asked` seconds gets, or etcd's refusal.
    pub fn clamp_ttl(&self, asked: i64) -> Result<i64, &'static str> {
        if asked > MAX_TTL {
            return Err(TTL_TOO_LARGE);
        }
        Ok(asked.max(self.min_ttl))
    }

    /// The id a grant asking for `asked` gets (0: one chosen here).
    pub fn choose_id(&self, asked: i64) -> i64 {
        if asked != 0 {
            return asked;
        }
        loop {
            let id = self.ids.next();
            if !self.lessor.exists(id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(min_ttl(Duration::from_millis(100), 10), 2);
        assert_eq!(min_ttl(Duration::from_millis(100), 20), 3);
        assert_eq!(min_ttl(Duration::from_millis(50), 10), 1);
        assert_eq!(min_ttl(Duration::from_millis(1), 2), 1);
    }
}
