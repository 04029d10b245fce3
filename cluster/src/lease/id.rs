//! Lease ids chosen by the server, when a client asks for id 0.
//!
//! The id is chosen by the member that proposes the grant, before it is
//! proposed, so every member applies the same id. It must be positive and
//! non-zero (0 means "no lease" in a put; etcd's ids are positive int64s)
//! and unique: the low 16 bits of the member id, the start time in
//! milliseconds and a counter make it unlikely to meet another member's or
//! an earlier run's id, and the apply step refuses a duplicate anyway
//! ("lease already exists"), so a clash is an error, never a shared lease.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct IdGenerator {
    base: u64,
    next: AtomicU64,
}

impl IdGenerator {
    pub fn new(member: u64) -> IdGenerator {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // 16 bits of member | 39 bits of milliseconds | 8 bits of counter
        // (the counter carries into the time bits, which only moves the
        // ids further from those of an earlier start).
        let base = ((member & 0xffff) << 47) | ((millis & ((1 << 39) - 1)) << 8);
        IdGenerator {
            base,
            next: AtomicU64::new(0),
        }
    }

    /// A positive, non-zero id.
    pub fn next(&self) -> i64 {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let id = (self.base.wrapping_add(n) & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_and_distinct() {
        let ids = IdGenerator::new(u64::MAX);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next();
            assert!(id > 0);
            assert!(seen.insert(id));
        }
    }
}
