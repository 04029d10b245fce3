//! The key index: for every user key, the revisions at which it changed.
//!
//! History records are stored by revision, so finding "the value of `k` at
//! revision 42" needs a map from a key to its revisions. This is that map,
//! kept in memory as etcd's `treeIndex` is, and rebuilt at start by replaying
//! the history records in revision order (the store's essay states the cost).
//!
//! A key's revisions are grouped in **generations**. A generation begins when
//! the key is created and ends with the tombstone that deletes it; creating
//! the key again begins a new generation. So a key put at 2 and 4, deleted at
//! 6 and put again at 8 has
//!
//! ```text
//! generation 0: created 2, revisions [2, 4, 6(tombstone)]   (closed)
//! generation 1: created 8, revisions [8]                    (open)
//! ```
//!
//! and its `version` at a revision is the position of that revision in its
//! generation, counted from 1 (so `version` 1 means "just created"): after
//! compaction has cut the start of a generation, the generation remembers how
//! many revisions it has had (`ver`), and the version is computed back from
//! the end.
//!
//! # Invariants
//!
//! * Revisions grow within a key: a put or a tombstone at a revision lower
//!   than the key's last one is refused (it would be a bug in the caller).
//! * Only the last generation is open; every earlier one ends with its
//!   tombstone. The last generation is empty right after a tombstone.
//! * A tombstone needs a live key: deleting a key that does not exist adds
//!   nothing.
//! * Compaction at `c` keeps, in the generation alive at `c`, the newest
//!   revision at or below `c` and everything after it; it drops every
//!   generation that ended at or before `c`, so a key deleted before `c`
//!   disappears from the index entirely once nothing newer exists.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::revision::Revision;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Generation {
    /// How many revisions this generation has had, compaction included.
    ver: i64,
    /// The revision that created the key.
    created: Revision,
    revs: Vec<Revision>,
}

/// The revisions of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    generations: Vec<Generation>,
}

/// What the index knows of a key at a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAt {
    /// The revision of the change that is visible (its history record).
    pub modified: Revision,
    pub created: Revision,
    pub version: i64,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            generations: vec![Generation::default()],
        }
    }
}

impl KeyIndex {
    fn last_revision(&self) -> Option<Revision> {
        self.generations
            .iter()
            .rev()
            .find_map(|g| g.revs.last().copied())
    }

    /// Whether the key is alive at the newest revision recorded.
    pub fn is_live(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.revs.is_empty())
    }

    /// Nothing recorded at all (a key compacted away).
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].revs.is_empty()
    }

    /// Records a put at `rev`. Returns false (and records nothing) if `rev`
    /// is not newer than the key's last revision.
    pub fn put(&mut self, rev: Revision) -> bool {
        if self.last_revision().is_some_and(|last| rev <= last) {
            return false;
        }
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let generation = self
            .generations
            .last_mut()
            .expect("a generation was just ensured");
        if generation.revs.is_empty() {
            generation.created = rev;
        }
        generation.revs.push(rev);
        generation.ver += 1;
        true
    }

    /// Records a tombstone at `rev`, closing the live generation. Returns
    /// false if the key is not live or `rev` is not newer.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if !self.is_live() || !self.put(rev) {
            return false;
        }
        self.generations.push(Generation::default());
        true
    }

    /// The generation alive at main revision `at`, if the key was alive then.
    fn generation_at(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, generation) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(tomb)) = (generation.revs.first(), generation.revs.last())
            else {
                continue;
            };
            // A closed generation whose tombstone is at or before `at`
            // means the key was deleted then; nothing older can be alive.
            if i != last && tomb.main <= at {
                return None;
            }
            if first.main <= at {
                return Some(generation);
            }
        }
        None
    }

    /// The key as of main revision `at`: its visible change, creation and
    /// version, or `None` if it did not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let generation = self.generation_at(at)?;
        let n = generation.revs.iter().rposition(|r| r.main <= at)?;
        Some(KeyAt {
            modified: generation.revs[n],
            created: generation.created,
            version: generation.ver - (generation.revs.len() - n - 1) as i64,
        })
    }

    /// Compacts at main revision `at` (see the module essay) and returns the
    /// revisions no longer reachable, whose history records can be deleted.
    pub fn compact(&mut self, at: i64) -> Vec<Revision> {
        let mut removed = Vec::new();
        // The first generation that was still alive at `at`, or created after.
        let mut first_kept = 0;
        while first_kept + 1 < self.generations.len() {
            let generation = &self.generations[first_kept];
            match generation.revs.last() {
                Some(tomb) if tomb.main < at => {
                    removed.extend_from_slice(&generation.revs);
                    first_kept += 1;
                }
                _ => break,
            }
        }
        self.generations.drain(..first_kept);
        let is_last = self.generations.len() == 1;
        let generation = &mut self.generations[0];
        if let Some(keep_from) = generation.revs.iter().rposition(|r| r.main <= at) {
            removed.extend(generation.revs.drain(..keep_from));
            // The newest revision at or below `at` is this generation's
            // tombstone: the key was dead at `at`, drop the generation too.
            if generation.revs.len() == 1 && !is_last {
                removed.push(generation.revs[0]);
                self.generations.remove(0);
            }
        }
        removed
    }

    /// Every revision recorded, oldest first (for checks and the hash).
    pub fn revisions(&self) -> impl Iterator<Item = Revision> + '_ {
        self.generations.iter().flat_map(|g| g.revs.iter().copied())
    }
}

/// Every key's index, in key order.
#[derive(Debug, Clone, Default)]
pub struct TreeIndex {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

/// The end of a key range, as etcd's `range_end` encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeEnd {
    /// Just the one key (`range_end` empty).
    Single,
    /// Every key at or after the start (`range_end` = `"\0"`).
    Unbounded,
    /// Keys below this one.
    Before(Vec<u8>),
}

impl RangeEnd {
    /// Decodes a request's `range_end`.
    pub fn from_request(range_end: &[u8]) -> RangeEnd {
        match range_end {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            end => RangeEnd::Before(end.to_vec()),
        }
    }
}

impl TreeIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn put(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.entry(key.to_vec()).or_default().put(rev)
    }

    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys
            .get_mut(key)
            .is_some_and(|index| index.tombstone(rev))
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at)
    }

    /// The keys of `[start, end)` alive at `at`, in key order, with what the
    /// index knows of each.
    pub fn range<'a>(
        &'a self,
        start: &'a [u8],
        end: &RangeEnd,
        at: i64,
    ) -> Box<dyn Iterator<Item = (&'a [u8], KeyAt)> + 'a> {
        let alive = move |(key, index): (&'a Vec<u8>, &'a KeyIndex)| {
            index.get(at).map(|found| (key.as_slice(), found))
        };
        match end {
            RangeEnd::Single => {
                Box::new(self.keys.get_key_value(start).into_iter().filter_map(alive))
            }
            RangeEnd::Unbounded => Box::new(
                self.keys
                    .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
                    .filter_map(alive),
            ),
            RangeEnd::Before(end) if end.as_slice() <= start => Box::new(std::iter::empty()),
            RangeEnd::Before(end) => Box::new(
                self.keys
                    .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end.as_slice())))
                    .filter_map(alive),
            ),
        }
    }

    /// Compacts every key at `at`; returns the revisions to delete.
    pub fn compact(&mut self, at: i64) -> Vec<Revision> {
        let mut removed = Vec::new();
        self.keys.retain(|_, index| {
            removed.extend(index.compact(at));
            !index.is_empty()
        });
        removed
    }

    /// Every key with its index (for the hash and checks).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &KeyIndex)> {
        self.keys.iter().map(|(k, v)| (k.as_slice(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// Put at 2 and 4, delete at 6, put at 8, 10: the essay's example.
    fn example() -> KeyIndex {
        let mut index = KeyIndex::default();
        assert!(index.put(r(2)));
        assert!(index.put(r(4)));
        assert!(index.tombstone(r(6)));
        assert!(index.put(r(8)));
        assert!(index.put(r(10)));
        index
    }

    #[test]
    fn versions_and_generations() {
        let index = example();
        assert_eq!(index.get(1), None);
        let at3 = index.get(3).unwrap();
        assert_eq!((at3.modified, at3.created, at3.version), (r(2), r(2), 1));
        let at5 = index.get(5).unwrap();
        assert_eq!((at5.modified, at5.created, at5.version), (r(4), r(2), 2));
        assert_eq!(index.get(6), None, "deleted at 6");
        assert_eq!(index.get(7), None);
        let at9 = index.get(9).unwrap();
        assert_eq!((at9.modified, at9.created, at9.version), (r(8), r(8), 1));
        let at99 = index.get(99).unwrap();
        assert_eq!((at99.modified, at99.version), (r(10), 2));
    }

    #[test]
    fn puts_must_move_forward_and_tombstones_need_a_live_key() {
        let mut index = example();
        assert!(!index.put(r(10)));
        assert!(!index.put(r(9)));
        assert!(index.tombstone(r(11)));
        assert!(!index.tombstone(r(12)), "already deleted");
        assert!(!KeyIndex::default().tombstone(r(1)));
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_need() {
        // Inside the open generation: keep 8 (newest <= 9) and 10.
        let mut index = example();
        let removed = index.compact(9);
        assert_eq!(removed, vec![r(2), r(4), r(6)]);
        assert_eq!(index.get(9).unwrap().modified, r(8));
        assert_eq!(
            index.get(10).unwrap().version,
            2,
            "version survives compaction"
        );

        // Inside the closed generation: keep 4 and the tombstone.
        let mut index = example();
        assert_eq!(index.compact(5), vec![r(2)]);
        assert_eq!(index.get(5).unwrap().modified, r(4));
        assert_eq!(index.get(5).unwrap().version, 2);
        assert_eq!(index.get(6), None);

        // At the tombstone: the whole first generation goes.
        let mut index = example();
        assert_eq!(index.compact(6), vec![r(2), r(4), r(6)]);
        assert_eq!(index.get(6), None);
        assert_eq!(index.get(8).unwrap().created, r(8));

        // A key deleted before the compaction point vanishes.
        let mut index = KeyIndex::default();
        index.put(r(2));
        index.tombstone(r(3));
        assert_eq!(index.compact(5), vec![r(2), r(3)]);
        assert!(index.is_empty());
    }

    #[test]
    fn ranges_follow_etcds_range_end() {
        let mut tree = TreeIndex::new();
        for (i, key) in ["a", "b", "b1", "c"].iter().enumerate() {
            tree.put(key.as_bytes(), r(i as i64 + 2));
        }
        tree.tombstone(b"b1", r(6));
        let keys = |start: &str, end: RangeEnd, at: i64| -> Vec<String> {
            tree.range(start.as_bytes(), &end, at)
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        assert_eq!(keys("b", RangeEnd::Single, 9), vec!["b"]);
        assert_eq!(keys("b", RangeEnd::Before(b"c".to_vec()), 9), vec!["b"]);
        assert_eq!(
            keys("b", RangeEnd::Before(b"c".to_vec()), 5),
            vec!["b", "b1"]
        );
        assert_eq!(keys("b", RangeEnd::Unbounded, 9), vec!["b", "c"]);
        assert_eq!(keys("\0", RangeEnd::Unbounded, 3), vec!["a", "b"]);
        assert!(keys("c", RangeEnd::Before(b"a".to_vec()), 9).is_empty());
        let removed = tree.compact(7);
        assert_eq!(removed, vec![r(4), r(6)]);
        assert_eq!(tree.len(), 3);
    }
}
