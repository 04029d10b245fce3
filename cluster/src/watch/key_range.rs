//! The keys one watcher watches: etcd's `key` and `range_end`.
//!
//! `range_end` empty watches the one key; `"\0"` watches every key at or
//! after `key`; anything else watches `[key, range_end)`, and a range that
//! holds no key (`key >= range_end`) is refused with etcd's message.

use crate::mvcc::key_index::RangeEnd;

/// etcd's refusal of a range without keys.
pub const EMPTY_RANGE: &str = "mvcc: watcher range is empty";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    start: Vec<u8>,
    end: RangeEnd,
}

impl KeyRange {
    pub fn new(key: Vec<u8>, range_end: &[u8]) -> Result<KeyRange, &'static str> {
        let end = RangeEnd::from_request(range_end);
        if let RangeEnd::Before(end) = &end
            && key.as_slice() >= end.as_slice()
        {
            return Err(EMPTY_RANGE);
        }
        Ok(KeyRange { start: key, end })
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => key == self.start.as_slice(),
            RangeEnd::Unbounded => key >= self.start.as_slice(),
            RangeEnd::Before(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_their_keys_and_empty_ones_are_refused() {
        let one = KeyRange::new(b"a".to_vec(), b"").unwrap();
        assert!(one.contains(b"a") && !one.contains(b"ab"));
        let from = KeyRange::new(b"b".to_vec(), b"\0").unwrap();
        assert!(from.contains(b"b") && from.contains(b"zz") && !from.contains(b"a"));
        let prefix = KeyRange::new(b"p/".to_vec(), b"p0").unwrap();
        assert!(prefix.contains(b"p/x") && !prefix.contains(b"p0") && !prefix.contains(b"p"));
        let all = KeyRange::new(Vec::new(), b"\0").unwrap();
        assert!(all.contains(b"") && all.contains(b"\xff"));
        assert_eq!(KeyRange::new(b"b".to_vec(), b"a"), Err(EMPTY_RANGE));
        assert_eq!(KeyRange::new(b"b".to_vec(), b"b"), Err(EMPTY_RANGE));
    }
}
