//! One change as a watcher sees it.
//!
//! The store's history record of a change ([`Record`]) becomes an [`Event`]:
//! a put carries the key's new state, with `mod_revision` the record's main
//! revision; a delete carries only the key and the revision of the
//! tombstone (etcd's delete events have the other fields zero). Events are
//! shared (`Arc`) because one change fans out to every watcher that matches
//! it, and a value may be large.

use std::sync::Arc;

use crate::mvcc::kv::Record;
use crate::mvcc::txn::RangeRequest;
use crate::mvcc::{KeyValue, Revision};
use crate::state_machine::KvReader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

impl Event {
    /// The event of the change stored at `revision`.
    pub fn from_record(revision: Revision, record: Record) -> Event {
        match record {
            Record::Tombstone { key } => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key,
                    mod_revision: revision.main,
                    ..KeyValue::default()
                },
            },
            put => Event {
                kind: EventKind::Put,
                kv: put.into_key_value(revision.main).unwrap_or_default(),
            },
        }
    }

    /// The main revision of the change.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }

    /// The key as it was just before this change (etcd's `prev_kv`): read
    /// from the store at the revision before; `None` if the key did not
    /// exist then, or that revision was compacted away meanwhile.
    pub fn previous(&self, kv: &KvReader) -> Option<KeyValue> {
        let request = RangeRequest {
            key: self.kv.key.clone(),
            revision: self.revision() - 1,
            ..RangeRequest::default()
        };
        kv.range(&request).ok()?.kvs.pop()
    }
}

/// The events of history records, in revision order, ready to share.
pub fn events_of(records: Vec<(Revision, Record)>) -> Vec<Arc<Event>> {
    let mut records = records;
    // Staged in order already; sorting (stable) makes it a rule, not luck.
    records.sort_by_key(|(revision, _)| *revision);
    records
        .into_iter()
        .map(|(revision, record)| Arc::new(Event::from_record(revision, record)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_and_tombstones_become_events() {
        let put = Record::Put {
            key: b"k".to_vec(),
            create_revision: 3,
            version: 2,
            lease: 0,
            value: b"v".to_vec(),
        };
        let events = events_of(vec![
            (
                Revision::new(7, 0),
                Record::Tombstone { key: b"k".to_vec() },
            ),
            (Revision::new(5, 0), put),
        ]);
        assert_eq!(events[0].kind, EventKind::Put);
        assert_eq!(events[0].kv.mod_revision, 5);
        assert_eq!(events[0].kv.version, 2);
        assert_eq!(events[1].kind, EventKind::Delete);
        assert_eq!(
            events[1].kv,
            KeyValue {
                key: b"k".to_vec(),
                mod_revision: 7,
                ..KeyValue::default()
            }
        );
    }
}
