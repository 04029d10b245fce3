//! The lessor: the lease table and the leader's deadlines behind one lock,
//! shared by the apply loop, the Raft thread, the expiry thread and the
//! API.
//!
//! Who calls what:
//!
//! * the apply loop (Raft thread) changes the table, one committed entry at
//!   a time: [`Lessor::grant`], [`Lessor::revoke_keys`] then
//!   [`Lessor::remove`], [`Lessor::attach`] for every key a transaction
//!   wrote, [`Lessor::replace`] after the state machine was opened or a
//!   snapshot installed;
//! * the Raft thread reports leadership: [`Lessor::promote`],
//!   [`Lessor::demote`];
//! * the expiry thread asks for [`Lessor::expired`] leases and proposes
//!   their revokes;
//! * the API answers keep-alives ([`Lessor::renew`]), time-to-live and
//!   the list of leases from it.
//!
//! The lock is held only for in-memory work, never across I/O or an await,
//! so the Raft thread never waits on a client. Lock order: the MVCC
//! store's state may be held while this lock is taken (the lease check of
//! a transaction), never the other way round.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::clock::Deadlines;
use super::table::LeaseTable;

#[derive(Debug, Default)]
struct Inner {
    table: LeaseTable,
    clock: Deadlines,
}

/// What a keep-alive found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The deadline moved; the lease's TTL in seconds.
    Renewed(i64),
    /// No such lease (or it expired and is being revoked): etcd answers
    /// TTL 0.
    NotFound,
    /// This member does not lead: the keep-alive belongs to the leader.
    NotPrimary,
}

/// A lease as TimeToLive reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub granted_ttl: i64,
    /// Seconds left (rounded down); `None` on a member that does not lead.
    pub remaining: Option<i64>,
    pub keys: Vec<Vec<u8>>,
}

#[derive(Debug, Default)]
pub struct Lessor {
    inner: Mutex<Inner>,
}

impl Lessor {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a grant; false if the lease already exists.
    pub fn grant(&self, id: i64, ttl: i64, now: Instant) -> bool {
        let mut inner = self.lock();
        if !inner.table.grant(id, ttl) {
            return false;
        }
        inner.clock.granted(id, ttl, now);
        true
    }

    pub fn exists(&self, id: i64) -> bool {
        self.lock().table.contains(id)
    }

    /// The keys a revoke must delete, or `None` if the lease is unknown.
    pub fn revoke_keys(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.lock()
            .table
            .get(id)
            .map(|entry| entry.keys.iter().cloned().collect())
    }

    /// Removes a revoked lease (its keys were deleted first).
    pub fn remove(&self, id: i64) {
        let mut inner = self.lock();
        inner.table.remove(id);
        inner.clock.removed(id);
    }

    /// Records the leases of keys a transaction wrote: (key, lease), lease
    /// 0 for a put without one or a delete, in the order they were written.
    pub fn attach(&self, changes: impl IntoIterator<Item = (Vec<u8>, i64)>) {
        let mut inner = self.lock();
        for (key, lease) in changes {
            inner.table.attach(&key, lease);
        }
    }

    /// Replaces the table (rebuilt from the engine); a leader restarts
    /// every deadline.
    pub fn replace(&self, table: LeaseTable, now: Instant) {
        let mut inner = self.lock();
        inner.table = table;
        if inner.clock.is_primary() {
            let Inner { table, clock } = &mut *inner;
            clock.promote(now, table.iter().map(|(id, e)| (id, e.ttl)));
        } else {
            inner.clock.demote();
        }
    }

    /// This member became leader: every lease runs a full TTL from now.
    pub fn promote(&self, now: Instant) {
        let mut inner = self.lock();
        let Inner { table, clock } = &mut *inner;
        clock.promote(now, table.iter().map(|(id, e)| (id, e.ttl)));
    }

    /// This member stopped leading.
    pub fn demote(&self) {
        self.lock().clock.demote();
    }

    pub fn is_primary(&self) -> bool {
        self.lock().clock.is_primary()
    }

    /// A keep-alive for `id`.
    pub fn renew(&self, id: i64, now: Instant) -> Renewal {
        let mut inner = self.lock();
        if !inner.clock.is_primary() {
            return Renewal::NotPrimary;
        }
        let Some(ttl) = inner.table.get(id).map(|e| e.ttl) else {
            return Renewal::NotFound;
        };
        if inner.clock.renew(id, ttl, now) {
            Renewal::Renewed(ttl)
        } else {
            Renewal::NotFound
        }
    }

    /// TimeToLive of `id` (its keys if asked), `None` if unknown.
    pub fn info(&self, id: i64, keys: bool, now: Instant) -> Option<LeaseInfo> {
        let inner = self.lock();
        let entry = inner.table.get(id)?;
        Some(LeaseInfo {
            granted_ttl: entry.ttl,
            remaining: inner
                .clock
                .remaining(id, now)
                .map(|left| left.as_secs() as i64),
            keys: if keys {
                entry.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Every lease id, ascending.
    pub fn ids(&self) -> Vec<i64> {
        self.lock().table.iter().map(|(id, _)| id).collect()
    }

    /// Expired leases to revoke now (leader only), see
    /// [`Deadlines::expired`].
    pub fn expired(&self, now: Instant, limit: usize, retry: Duration) -> Vec<i64> {
        self.lock().clock.expired(now, limit, retry)
    }
}
