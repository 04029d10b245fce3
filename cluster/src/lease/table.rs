//! The replicated part of the lessor: which leases exist, their TTLs, and
//! which live keys each one holds.
//!
//! Every member holds the same table, because it changes only when a
//! committed entry is applied (a grant, a revoke, or a write transaction
//! that puts or deletes keys). It is pure bookkeeping, without clocks, so
//! it can be tested alone (see the property test below).
//!
//! # Invariant
//!
//! `attached[k] == l` exactly when lease `l` exists and `k` is in
//! `leases[l].keys`. A key is attached to at most one lease; attaching it
//! to another (a put with another lease, or with none) detaches it from
//! the old one; deleting it detaches it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One lease: its TTL as granted (seconds) and its attached keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseEntry {
    pub ttl: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTable {
    leases: BTreeMap<i64, LeaseEntry>,
    attached: HashMap<Vec<u8>, i64>,
}

impl LeaseTable {
    /// Adds lease `id`; false (and nothing changes) if it already exists.
    pub fn grant(&mut self, id: i64, ttl: i64) -> bool {
        if self.leases.contains_key(&id) {
            return false;
        }
        self.leases.insert(
            id,
            LeaseEntry {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        true
    }

    /// Removes lease `id` and forgets its attachments (the caller has
    /// deleted its keys first); its keys, or `None` if it did not exist.
    pub fn remove(&mut self, id: i64) -> Option<BTreeSet<Vec<u8>>> {
        let entry = self.leases.remove(&id)?;
        for key in &entry.keys {
            self.attached.remove(key);
        }
        Some(entry.keys)
    }

    /// Records that `key` now carries `lease` (0: none, or the key was
    /// deleted). A lease that does not exist attaches nothing.
    pub fn attach(&mut self, key: &[u8], lease: i64) {
        if let Some(old) = self.attached.get(key).copied() {
            if old == lease {
                return;
            }
            self.attached.remove(key);
            if let Some(entry) = self.leases.get_mut(&old) {
                entry.keys.remove(key);
            }
        }
        if lease == 0 {
            return;
        }
        if let Some(entry) = self.leases.get_mut(&lease) {
            entry.keys.insert(key.to_vec());
            self.attached.insert(key.to_vec(), lease);
        }
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn get(&self, id: i64) -> Option<&LeaseEntry> {
        self.leases.get(&id)
    }

    /// The lease `key` is attached to, if any.
    pub fn lease_of(&self, key: &[u8]) -> Option<i64> {
        self.attached.get(key).copied()
    }

    /// Every lease, in id order, with its TTL.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &LeaseEntry)> {
        self.leases.iter().map(|(id, entry)| (*id, entry))
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Grant(i64),
        Revoke(i64),
        Put(u8, i64),
        Delete(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1i64..5).prop_map(Op::Grant),
            (1i64..5).prop_map(Op::Revoke),
            (0u8..6, 0i64..5).prop_map(|(k, l)| Op::Put(k, l)),
            (0u8..6).prop_map(Op::Delete),
        ]
    }

    proptest! {
        /// The table against a model that recomputes everything from the
        /// live keys: after any sequence of grants, revokes, puts (with a
        /// lease, another lease or none) and deletes, each lease holds
        /// exactly the live keys whose last put named it.
        #[test]
        fn attachments_follow_the_last_write_of_each_key(ops in proptest::collection::vec(op(), 0..60)) {
            let mut table = LeaseTable::default();
            let mut leases: BTreeMap<i64, i64> = BTreeMap::new();
            let mut live: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Grant(id) => {
                        prop_assert_eq!(table.grant(id, 10), !leases.contains_key(&id));
                        leases.entry(id).or_insert(10);
                    }
                    Op::Revoke(id) => {
                        // A revoke deletes the keys first, then the lease.
                        let doomed: Vec<Vec<u8>> = table
                            .get(id)
                            .map(|e| e.keys.iter().cloned().collect())
                            .unwrap_or_default();
                        for key in &doomed {
                            table.attach(key, 0);
                            live.remove(key);
                        }
                        let removed = table.remove(id);
                        prop_assert_eq!(removed.is_some(), leases.remove(&id).is_some());
                        prop_assert!(removed.unwrap_or_default().is_empty());
                    }
                    Op::Put(k, lease) => {
                        // The apply loop refuses a put whose lease is unknown.
                        if lease != 0 && !leases.contains_key(&lease) {
                            continue;
                        }
                        table.attach(&[k], lease);
                        live.insert(vec![k], lease);
                    }
                    Op::Delete(k) => {
                        table.attach(&[k], 0);
                        live.remove(&vec![k]);
                    }
                }
                for id in leases.keys() {
                    let expected: BTreeSet<Vec<u8>> = live
                        .iter()
                        .filter(|(_, l)| *l == id)
                        .map(|(k, _)| k.clone())
                        .collect();
                    prop_assert_eq!(&table.get(*id).unwrap().keys, &expected);
                }
                for (key, lease) in &live {
                    let want = (*lease != 0).then_some(*lease);
                    prop_assert_eq!(table.lease_of(key), want);
                }
                prop_assert_eq!(table.len(), leases.len());
            }
        }
    }

    #[test]
    fn a_put_with_another_lease_moves_the_key() {
        let mut table = LeaseTable::default();
        assert!(table.grant(1, 10));
        assert!(table.grant(2, 10));
        assert!(!table.grant(2, 99), "a duplicate grant changes nothing");
        assert_eq!(table.get(2).unwrap().ttl, 10);
        table.attach(b"k", 1);
        table.attach(b"k", 2);
        assert!(table.get(1).unwrap().keys.is_empty());
        assert_eq!(table.lease_of(b"k"), Some(2));
        table.attach(b"k", 0);
        assert!(table.get(2).unwrap().keys.is_empty());
        assert_eq!(table.lease_of(b"k"), None);
        table.attach(b"k", 7);
        assert_eq!(table.lease_of(b"k"), None, "an unknown lease holds nothing");
    }
}
