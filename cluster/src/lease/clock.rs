//! The leader-only part of the lessor: when each lease expires.
//!
//! Deadlines exist only while this member leads (it is *primary*). They
//! live in memory and are never replicated: a keep-alive moves a deadline
//! without a Raft round trip, which is why keep-alives must reach the
//! leader. A follower has no deadlines and never expires anything.
//!
//! * promote (this member became leader): every lease's deadline becomes
//!   now + its TTL, as etcd's lessor does. The old leader's deadlines were
//!   lost with it, so a lease lives at most one TTL longer than it would
//!   have (plus the election), never shorter.
//! * demote (it stopped leading): every deadline is dropped and nothing
//!   expires here any more.
//! * expired: the leases whose deadline passed, each handed out once per
//!   `retry` (while its revoke is being proposed), at most `limit` at a
//!   time, so a mass expiry becomes a steady trickle of proposals.
//!
//! Deadlines are also kept ordered, so finding the expired ones reads only
//! those (and the ones being revoked), not every lease.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Deadlines {
    primary: bool,
    at: HashMap<i64, Instant>,
    /// The same deadlines, in time order.
    order: BTreeSet<(Instant, i64)>,
    /// Leases whose revoke was proposed, and when it may be proposed again.
    revoking: HashMap<i64, Instant>,
}

/// A lease's TTL in seconds as a duration (negative TTLs count as 0).
pub fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Deadlines {
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// This member leads: every lease gets a full TTL from now.
    pub fn promote(&mut self, now: Instant, leases: impl Iterator<Item = (i64, i64)>) {
        self.primary = true;
        self.revoking.clear();
        self.at.clear();
        self.order.clear();
        for (id, ttl) in leases {
            self.set(id, now + ttl_duration(ttl));
        }
    }

    fn set(&mut self, id: i64, deadline: Instant) {
        if let Some(old) = self.at.insert(id, deadline) {
            self.order.remove(&(old, id));
        }
        self.order.insert((deadline, id));
    }

    /// This member no longer leads: nothing expires here.
    pub fn demote(&mut self) {
        self.primary = false;
        self.at.clear();
        self.order.clear();
        self.revoking.clear();
    }

    /// A lease was granted (applied): on the leader it runs from now.
    pub fn granted(&mut self, id: i64, ttl: i64, now: Instant) {
        if self.primary {
            self.set(id, now + ttl_duration(ttl));
        }
    }

    /// A lease was revoked (applied).
    pub fn removed(&mut self, id: i64) {
        if let Some(old) = self.at.remove(&id) {
            self.order.remove(&(old, id));
        }
        self.revoking.remove(&id);
    }

    // ANCHOR: lease_renew
    /// A keep-alive: the deadline moves to now + TTL. False if the lease
    /// has no deadline here or it already passed (its revoke is due; a
    /// keep-alive does not bring it back, as in etcd).
    pub fn renew(&mut self, id: i64, ttl: i64, now: Instant) -> bool {
        if !self.primary {
            return false;
        }
        match self.at.get(&id) {
            Some(deadline) if *deadline > now => {
                self.set(id, now + ttl_duration(ttl));
                true
            }
            _ => false,
        }
    }
    // ANCHOR_END: lease_renew

    /// Time left before the lease expires (zero once passed); `None`
    /// without a deadline (not primary, or unknown lease).
    pub fn remaining(&self, id: i64, now: Instant) -> Option<Duration> {
        self.at
            .get(&id)
            .map(|deadline| deadline.saturating_duration_since(now))
    }

    /// Up to `limit` expired leases not being revoked, oldest deadline
    /// first; each is then left alone for `retry`.
    pub fn expired(&mut self, now: Instant, limit: usize, retry: Duration) -> Vec<i64> {
        if !self.primary {
            return Vec::new();
        }
        self.revoking.retain(|_, again| *again > now);
        let due: Vec<i64> = self
            .order
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| *id)
            .filter(|id| !self.revoking.contains_key(id))
            .take(limit)
            .collect();
        for id in &due {
            self.revoking.insert(*id, now + retry);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_primary_expires_and_promote_extends() {
        let t0 = Instant::now();
        let mut clock = Deadlines::default();
        clock.granted(1, 2, t0);
        assert!(
            clock
                .expired(t0 + Duration::from_secs(60), 10, Duration::ZERO)
                .is_empty()
        );
        clock.promote(t0 + Duration::from_secs(10), [(1, 2)].into_iter());
        assert!(
            clock
                .expired(t0 + Duration::from_secs(11), 10, Duration::ZERO)
                .is_empty()
        );
        let later = t0 + Duration::from_secs(12);
        assert_eq!(clock.expired(later, 10, Duration::from_secs(1)), vec![1]);
        assert!(
            clock.expired(later, 10, Duration::from_secs(1)).is_empty(),
            "once per retry"
        );
        assert!(!clock.renew(1, 2, later), "an expired lease is not renewed");
        clock.demote();
        assert!(
            clock
                .expired(later + Duration::from_secs(5), 10, Duration::ZERO)
                .is_empty()
        );
    }

    #[test]
    fn a_renewed_lease_leaves_the_expired_ones_behind() {
        let t0 = Instant::now();
        let mut clock = Deadlines::default();
        clock.promote(t0, [(1, 2), (2, 2), (3, 2)].into_iter());
        assert!(clock.renew(2, 2, t0 + Duration::from_secs(1)));
        clock.removed(3);
        let at = t0 + Duration::from_millis(2500);
        assert_eq!(clock.expired(at, 10, Duration::from_secs(9)), vec![1]);
        assert_eq!(clock.remaining(2, at), Some(Duration::from_millis(500)));
        let later = t0 + Duration::from_secs(3);
        assert_eq!(clock.expired(later, 10, Duration::from_secs(9)), vec![2]);
    }

    #[test]
    fn expiry_is_bounded_per_call() {
        let t0 = Instant::now();
        let mut clock = Deadlines::default();
        clock.promote(t0, (1..=10).map(|id| (id, 1)));
        let late = t0 + Duration::from_secs(5);
        assert_eq!(clock.expired(late, 4, Duration::from_secs(9)).len(), 4);
        assert_eq!(clock.expired(late, 4, Duration::from_secs(9)).len(), 4);
        assert_eq!(clock.expired(late, 4, Duration::from_secs(9)).len(), 2);
    }
}
