//! Catch-up rounds: unsynced watchers fed from the engine's history.
//!
//! A round (on the hub's thread, every [`INTERVAL`] while some watcher is
//! unsynced, and at once when one is added):
//!
//! 1. under the lock: a watcher whose next revision was compacted away is
//!    canceled with the compaction revision; one whose next revision is
//!    above `dispatched` is synced; the others whose stream has room are
//!    this round's candidates, and `through` = `dispatched`;
//! 2. without the lock: one read of history from the lowest candidate's
//!    next revision up to `through`, at most [`PAGE`] records, whole
//!    revisions only;
//! 3. under the lock: each candidate still there and unchanged gets its
//!    events of that page, in messages of at most [`REVISIONS_PER_MESSAGE`]
//!    revisions, while its stream has room; its next revision moves past
//!    what it was sent, and past the whole page if it was sent all of it;
//!    if that is above `dispatched` it is synced again.
//!
//! Only this thread changes `dispatched` (by dispatching batches), and it
//! does not dispatch during a round, so nothing published between the
//! read and step 3 can be missed: it is above `through` and comes from
//! the next round or, once synced, from dispatch. A compaction that runs
//! during the read is caught by checking the compaction point after it.

use std::sync::Arc;
use std::time::Duration;

use super::event::{Event, events_of};
use super::hub::{Shared, WatcherKey};
use super::outbox::Outgoing;
use crate::mvcc::MvccError;

/// How often unsynced watchers are caught up (etcd: 100 ms).
pub const INTERVAL: Duration = Duration::from_millis(100);
/// History records read per round.
pub const PAGE: usize = 8192;
/// Revisions per event message of a catch-up (etcd sends at most 1,000).
pub const REVISIONS_PER_MESSAGE: usize = 1000;

/// One round; true if it moved some watcher on and more remain unsynced
/// (run the next one without waiting).
pub(super) fn round(shared: &Shared) -> bool {
    let (from, through, candidates) = {
        let mut guard = shared.lock();
        let state = &mut *guard;
        let compacted = shared.kv.compacted_revision();
        let dispatched = state.dispatched;
        let mut doomed = Vec::new();
        let mut candidates: Vec<(WatcherKey, i64)> = Vec::new();
        let streams = &state.streams;
        // ANCHOR: catch_up_compacted
        for (key, watcher) in state.watchers.iter_mut() {
            if watcher.synced {
                continue;
            }
            if watcher.next_rev < compacted {
                doomed.push(*key);
            } else if watcher.next_rev > dispatched {
                watcher.synced = true;
            } else if streams.get(&key.0).is_some_and(|s| !s.outbox.is_full()) {
                candidates.push((*key, watcher.next_rev));
            }
        }
        for key in doomed {
            state.cancel_compacted(key, compacted);
        }
        // ANCHOR_END: catch_up_compacted
        let ids: Vec<u64> = state.streams.keys().copied().collect();
        for id in ids {
            state.answer_progress(id);
        }
        let Some(from) = candidates.iter().map(|(_, next)| *next).min() else {
            return false;
        };
        (from, dispatched, candidates)
    };
    let (records, covered) = match shared.kv.history(from, through, PAGE) {
        Ok(page) => page,
        // The next round cancels the watchers concerned.
        Err(MvccError::Compacted) => return true,
        Err(err) => {
            tracing::warn!(%err, from, through, "reading history for watchers failed; retrying");
            return false;
        }
    };
    let compacted = shared.kv.compacted_revision();
    let events = events_of(records);
    let mut guard = shared.lock();
    let state = &mut *guard;
    let mut moved = false;
    let mut doomed = Vec::new();
    for (key, next_rev) in candidates {
        let Some(watcher) = state.watchers.get_mut(&key) else {
            continue;
        };
        if watcher.synced || watcher.next_rev != next_rev {
            continue;
        }
        if next_rev < compacted {
            doomed.push(key);
            continue;
        }
        let Some(stream) = state.streams.get(&key.0) else {
            continue;
        };
        let mine: Vec<&Arc<Event>> = events
            .iter()
            .filter(|e| e.revision() >= next_rev && e.revision() <= covered && watcher.wants(e))
            .collect();
        let groups = split_by_revisions(&mine, REVISIONS_PER_MESSAGE);
        let mut sent_through = next_rev - 1;
        let mut complete = true;
        let count = groups.len();
        for (index, group) in groups.into_iter().enumerate() {
            let last = group.last().map_or(sent_through, |e| e.revision());
            // The last message covers the whole page read: the watcher has
            // then been sent everything up to `covered`.
            let revision = if index + 1 == count { covered } else { last };
            let pushed = stream.outbox.try_events(Outgoing::Events {
                watch_id: key.1,
                revision,
                events: group.into_iter().cloned().collect(),
                prev_kv: watcher.prev_kv,
                fragment: watcher.fragment,
            });
            if !pushed {
                complete = false;
                break;
            }
            sent_through = last;
        }
        if complete {
            sent_through = covered;
        }
        if sent_through >= next_rev {
            moved = true;
        }
        watcher.next_rev = sent_through + 1;
        if watcher.next_rev > state.dispatched {
            watcher.synced = true;
        }
    }
    for key in doomed {
        state.cancel_compacted(key, compacted);
    }
    let ids: Vec<u64> = state.streams.keys().copied().collect();
    for id in ids {
        state.answer_progress(id);
    }
    moved && state.watchers.values().any(|w| !w.synced)
}

/// Splits events (in revision order) into groups of at most `max`
/// revisions each, never splitting a revision.
fn split_by_revisions<'a>(events: &[&'a Arc<Event>], max: usize) -> Vec<Vec<&'a Arc<Event>>> {
    let mut groups: Vec<Vec<&Arc<Event>>> = Vec::new();
    let mut revisions = 0;
    let mut last = None;
    for event in events {
        if last != Some(event.revision()) {
            if revisions == max || groups.is_empty() {
                groups.push(Vec::new());
                revisions = 0;
            }
            revisions += 1;
            last = Some(event.revision());
        }
        if let Some(group) = groups.last_mut() {
            group.push(event);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::KeyValue;
    use crate::watch::event::EventKind;

    #[test]
    fn groups_never_split_a_revision() {
        let events: Vec<Arc<Event>> = [2, 2, 3, 4, 4, 4, 5]
            .iter()
            .map(|&r| {
                Arc::new(Event {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        mod_revision: r,
                        ..KeyValue::default()
                    },
                })
            })
            .collect();
        let refs: Vec<&Arc<Event>> = events.iter().collect();
        let groups = split_by_revisions(&refs, 2);
        let revs: Vec<Vec<i64>> = groups
            .iter()
            .map(|g| g.iter().map(|e| e.revision()).collect())
            .collect();
        assert_eq!(revs, vec![vec![2, 2, 3], vec![4, 4, 4, 5]]);
        assert!(split_by_revisions(&[], 2).is_empty());
    }
}
