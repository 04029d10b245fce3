//! The hub: every watcher of this member, in two groups, and the client
//! streams they answer on.
//!
//! A watcher is **synced** when every event before its next revision has
//! been pushed to its stream and its next revision is above the hub's
//! `dispatched` revision: new batches reach it directly ([`Shared::dispatch`]).
//! Otherwise it is **unsynced** and the catch-up rounds
//! ([`super::catch_up`]) feed it from history until it is synced again.
//! Both moves happen under the one lock that also guards `dispatched`, so
//! no batch can slip between a watcher's last history read and its first
//! direct event.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use super::event::{Event, EventKind, events_of};
use super::key_range::KeyRange;
use super::outbox::{Outbox, OutboxReceiver, Outgoing, outbox};
use crate::mvcc::Revision;
use crate::mvcc::kv::Record;
use crate::state_machine::KvReader;

/// Event messages one client stream may have waiting before its watchers
/// are set aside (etcd's watch stream buffers 128 responses too).
pub const STREAM_CAPACITY: usize = 128;

/// etcd's refusal of a watch id already used on the stream.
pub const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// What a client asks for when it creates a watcher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateWatch {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// 0 (or less): from the store's current revision + 1.
    pub start_revision: i64,
    /// 0 or -1: the hub chooses one.
    pub watch_id: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub progress_notify: bool,
    pub fragment: bool,
}

/// One watcher.
pub(super) struct Watcher {
    pub range: KeyRange,
    /// The revision of the next event it must be sent.
    pub next_rev: i64,
    pub synced: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub fragment: bool,
}

impl Watcher {
    pub fn wants(&self, event: &Event) -> bool {
        self.range.contains(&event.kv.key)
            && !(self.no_put && event.kind == EventKind::Put)
            && !(self.no_delete && event.kind == EventKind::Delete)
    }
}

/// One client stream.
pub(super) struct StreamState {
    pub outbox: Outbox,
    next_auto_id: i64,
    ids: BTreeSet<i64>,
    /// A progress request waits until all its watchers are synced.
    progress_wanted: bool,
}

/// A watcher's name: its stream and its watch id there.
pub(super) type WatcherKey = (u64, i64);

pub(super) struct HubState {
    /// Every batch up to this revision has been handed to the synced
    /// watchers; every revision up to it is in the engine (published).
    pub dispatched: i64,
    pub watchers: HashMap<WatcherKey, Watcher>,
    pub streams: HashMap<u64, StreamState>,
    next_stream: u64,
}

/// What the apply loop and the API send the hub's thread.
pub(super) enum Feed {
    /// A committed, published batch: its newest revision and its changes.
    Batch {
        revision: i64,
        changes: Vec<(Revision, Record)>,
    },
    /// The store's content was replaced (a snapshot installed): history
    /// now reaches `revision`, and every watcher catches up from it.
    Reset { revision: i64 },
    /// An unsynced watcher was added: run a catch-up round now.
    Wake,
}

pub(super) struct Shared {
    pub state: Mutex<HubState>,
    pub feed: Sender<Feed>,
    pub kv: KvReader,
}

/// The watch hub of one member (cheap to clone).
#[derive(Clone)]
pub struct WatchHub {
    shared: Arc<Shared>,
}

/// The client's handle on one stream: create, cancel, ask for progress.
#[derive(Clone)]
pub struct StreamHandle {
    shared: Arc<Shared>,
    id: u64,
}

/// The stream's messages; dropping it closes the stream and removes its
/// watchers.
pub struct StreamReceiver {
    receiver: OutboxReceiver,
    shared: Arc<Shared>,
    id: u64,
}

impl WatchHub {
    /// A hub over `kv`'s store, with its thread started; everything at or
    /// below the store's current revision is history.
    pub fn start(kv: KvReader) -> WatchHub {
        let (feed, rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(HubState {
                dispatched: kv.revision(),
                watchers: HashMap::new(),
                streams: HashMap::new(),
                next_stream: 1,
            }),
            feed,
            kv,
        });
        super::worker::spawn(Arc::downgrade(&shared), rx);
        WatchHub { shared }
    }

    /// Hands a committed, published batch to the hub's thread; never waits.
    pub fn publish(&self, revision: i64, changes: Vec<(Revision, Record)>) {
        if !changes.is_empty() {
            let _ = self.shared.feed.send(Feed::Batch { revision, changes });
        }
    }

    /// The store's content was replaced; history now reaches `revision`.
    pub fn reset(&self, revision: i64) {
        let _ = self.shared.feed.send(Feed::Reset { revision });
    }

    /// A new client stream.
    pub fn open_stream(&self) -> (StreamHandle, StreamReceiver) {
        let (sender, receiver) = outbox(STREAM_CAPACITY);
        let mut state = self.shared.lock();
        let id = state.next_stream;
        state.next_stream += 1;
        state.streams.insert(
            id,
            StreamState {
                outbox: sender,
                next_auto_id: 0,
                ids: BTreeSet::new(),
                progress_wanted: false,
            },
        );
        drop(state);
        let handle = StreamHandle {
            shared: Arc::clone(&self.shared),
            id,
        };
        let receiver = StreamReceiver {
            receiver,
            shared: Arc::clone(&self.shared),
            id,
        };
        (handle, receiver)
    }

    /// Watchers (synced, unsynced) and streams, for tests and metrics.
    pub fn counts(&self) -> (usize, usize, usize) {
        let state = self.shared.lock();
        let synced = state.watchers.values().filter(|w| w.synced).count();
        (synced, state.watchers.len() - synced, state.streams.len())
    }

    /// The store reader the hub reads history with (for prev_kv).
    pub fn kv(&self) -> &KvReader {
        &self.shared.kv
    }
}

impl StreamHandle {
    /// Creates a watcher; its `Created` (or `Refused`) message is pushed
    /// before any of its events.
    pub fn create(&self, request: CreateWatch) {
        let published = self.shared.kv.revision();
        let mut state = self.shared.lock();
        let dispatched = state.dispatched;
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return;
        };
        let refuse = |stream: &StreamState, reason: &str| {
            stream.outbox.control(Outgoing::Refused {
                revision: published,
                reason: reason.to_string(),
            })
        };
        let range = match KeyRange::new(request.key, &request.range_end) {
            Ok(range) => range,
            Err(reason) => return refuse(stream, reason),
        };
        let watch_id = if request.watch_id == 0 || request.watch_id == -1 {
            while stream.ids.contains(&stream.next_auto_id) {
                stream.next_auto_id += 1;
            }
            stream.next_auto_id
        } else if stream.ids.contains(&request.watch_id) {
            return refuse(stream, DUPLICATE_ID);
        } else {
            request.watch_id
        };
        let next_rev = if request.start_revision <= 0 {
            published + 1
        } else {
            request.start_revision
        };
        let synced = next_rev > dispatched;
        stream.ids.insert(watch_id);
        stream.outbox.control(Outgoing::Created {
            watch_id,
            revision: published,
            progress_notify: request.progress_notify,
        });
        state.watchers.insert(
            (self.id, watch_id),
            Watcher {
                range,
                next_rev,
                synced,
                no_put: request.no_put,
                no_delete: request.no_delete,
                prev_kv: request.prev_kv,
                fragment: request.fragment,
            },
        );
        drop(state);
        if !synced {
            let _ = self.shared.feed.send(Feed::Wake);
        }
    }

    /// Cancels a watcher; an unknown id is ignored, as etcd does.
    pub fn cancel(&self, watch_id: i64) {
        let mut state = self.shared.lock();
        if state.watchers.remove(&(self.id, watch_id)).is_none() {
            return;
        }
        let revision = state.dispatched;
        if let Some(stream) = state.streams.get_mut(&self.id) {
            stream.ids.remove(&watch_id);
            stream.outbox.control(Outgoing::Canceled {
                watch_id,
                revision,
                compact_revision: 0,
            });
        }
        state.answer_progress(self.id);
    }

    /// A progress request: answered (watch id -1) once every watcher of
    /// the stream is synced, with the revision they are all synced to.
    pub fn request_progress(&self) {
        let mut state = self.shared.lock();
        if let Some(stream) = state.streams.get_mut(&self.id) {
            stream.progress_wanted = true;
        }
        state.answer_progress(self.id);
    }

    /// Periodic progress notifications for these watchers: each synced one
    /// is told the revision it has seen everything up to.
    pub fn notify_progress(&self, watch_ids: &[i64]) {
        let state = self.shared.lock();
        let Some(stream) = state.streams.get(&self.id) else {
            return;
        };
        for &watch_id in watch_ids {
            if state
                .watchers
                .get(&(self.id, watch_id))
                .is_some_and(|w| w.synced)
            {
                stream.outbox.control(Outgoing::Progress {
                    watch_id,
                    revision: state.dispatched,
                });
            }
        }
    }
}

impl StreamReceiver {
    pub async fn recv(&mut self) -> Option<Outgoing> {
        self.receiver.recv().await
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(stream) = state.streams.remove(&self.id) {
            for watch_id in stream.ids {
                state.watchers.remove(&(self.id, watch_id));
            }
        }
    }
}

impl HubState {
    /// Answers the stream's pending progress request if all its watchers
    /// are synced.
    pub fn answer_progress(&mut self, stream_id: u64) {
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return;
        };
        if !stream.progress_wanted {
            return;
        }
        let all_synced = stream.ids.iter().all(|id| {
            self.watchers
                .get(&(stream_id, *id))
                .is_none_or(|w| w.synced)
        });
        if all_synced {
            stream.progress_wanted = false;
            stream.outbox.control(Outgoing::Progress {
                watch_id: -1,
                revision: self.dispatched,
            });
        }
    }

    /// Removes a watcher whose next revision was compacted away and tells
    /// its stream so (etcd: `canceled` with `compact_revision`).
    pub fn cancel_compacted(&mut self, key: WatcherKey, compacted: i64) {
        if self.watchers.remove(&key).is_none() {
            return;
        }
        let revision = self.dispatched;
        if let Some(stream) = self.streams.get_mut(&key.0) {
            stream.ids.remove(&key.1);
            stream.outbox.control(Outgoing::Canceled {
                watch_id: key.1,
                revision,
                compact_revision: compacted,
            });
        }
        self.answer_progress(key.0);
    }
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a batch to every synced watcher it concerns. A watcher whose
    /// stream has no room is set aside (unsynced) with its next revision
    /// unchanged: the catch-up rounds send it this batch from history.
    pub fn dispatch(&self, revision: i64, changes: Vec<(Revision, Record)>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if !state.watchers.values().any(|w| w.synced) {
            state.dispatched = state.dispatched.max(revision);
            return;
        }
        let events = events_of(changes);
        let first = state.dispatched + 1;
        for (&(stream_id, watch_id), watcher) in state.watchers.iter_mut() {
            if !watcher.synced {
                continue;
            }
            let mine: Vec<Arc<Event>> = events
                .iter()
                .filter(|e| e.revision() >= watcher.next_rev && watcher.wants(e))
                .cloned()
                .collect();
            if mine.is_empty() {
                watcher.next_rev = watcher.next_rev.max(revision + 1);
                continue;
            }
            let Some(stream) = state.streams.get(&stream_id) else {
                continue;
            };
            let pushed = stream.outbox.try_events(Outgoing::Events {
                watch_id,
                revision,
                events: mine,
                prev_kv: watcher.prev_kv,
                fragment: watcher.fragment,
            });
            if pushed {
                watcher.next_rev = revision + 1;
            } else {
                watcher.synced = false;
                watcher.next_rev = watcher.next_rev.max(first);
            }
        }
        state.dispatched = state.dispatched.max(revision);
    }

    /// The store's content was replaced: what it skipped is in its
    /// history, so every watcher catches up from there.
    pub fn reset(&self, revision: i64) {
        let mut state = self.lock();
        let first = state.dispatched + 1;
        for watcher in state.watchers.values_mut() {
            if watcher.synced {
                watcher.synced = false;
                watcher.next_rev = watcher.next_rev.max(first);
            }
        }
        state.dispatched = revision;
    }
}
