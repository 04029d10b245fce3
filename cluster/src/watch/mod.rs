//! # watch: etcd's Watch over the MVCC history
//!
//! A watcher asks for every change of a key range from a start revision
//! on, and gets them in revision order, each exactly once, the changes of
//! one revision (one transaction) in one message. This module keeps every
//! watcher of one member and feeds it; the gRPC Watch service
//! (`crate::api::grpc::watch`) and the HTTP watch (`crate::api::http_watch`)
//! are two faces on it.
//!
//! | file | one concept |
//! |---|---|
//! | [`event`] | a history record as a watcher sees it (put, delete) |
//! | [`key_range`] | the keys one watcher watches, etcd's range rules |
//! | [`outbox`] | one client stream's queue, and the bound that makes a slow client a victim |
//! | [`hub`] | the watchers, synced and unsynced, and the streams they answer on |
//! | [`catch_up`] | unsynced watchers fed from the engine's history |
//! | [`worker`] | the hub's thread: batches in, catch-up rounds |
//!
//! # How events enter
//!
//! Only one way: the state machine commits a batch of applied entries
//! (`StateMachine::commit`), publishes its revision to readers, and then
//! hands the batch's changes, as the MVCC store staged them (every put and
//! tombstone of every transaction, in revision order), to
//! [`WatchHub::publish`]. That is a send on an unbounded channel: the
//! apply loop never waits for a watcher. Whatever writes through the store
//! (puts, deletes, transactions, anything later built on them) produces
//! events with no special case, and every member's own apply loop feeds
//! its own hub, so watches work on followers as on the leader.
//!
//! The hub's thread dispatches each batch to the **synced** watchers. A
//! watcher whose stream has too many messages waiting is set aside
//! (**unsynced**) instead of being waited for; so is a watcher created
//! with a start revision already dispatched. Unsynced watchers are caught
//! up from the engine's history records (`h/<main><sub>`), which hold
//! every change until a compaction removes it; once one has been sent
//! everything up to the dispatched revision it is synced again. These are
//! etcd's synced and unsynced watcher groups.
//!
//! After a snapshot is installed, the engine's content jumps ahead; the
//! revisions it skipped are in its history, so the hub marks every
//! watcher unsynced and they catch up from there.
//!
//! # How events leave
//!
//! Each client stream has an [`outbox::Outbox`]; the API side turns its
//! messages into etcd's `WatchResponse`s (adding `prev_kv`, read from the
//! store at the event's revision - 1, and fragmenting when asked) or JSON
//! lines.
//!
//! # Invariants
//!
//! * Each watcher has a next revision: every event it wants below it has
//!   been pushed to its stream, in order, and none at or above it.
//!   Dispatch and catch-up both push only events at or above it and move
//!   it past what they pushed; both run on the hub's thread, and moves
//!   between the groups happen under the hub's lock, which also guards the
//!   dispatched revision. So there is no gap and no duplicate, and no race
//!   between replaying history and registering: a new watcher is synced
//!   only if its start revision is above the dispatched revision (every
//!   later batch reaches it), else it is unsynced and history serves it.
//! * Every revision at or below the dispatched one is in the engine: the
//!   state machine publishes before it hands a batch over.
//! * A watcher whose next revision falls below the compaction point is
//!   canceled with the compaction revision (the created message has
//!   already been sent), as etcd does; so is one created below it.
//! * A message's header revision is one the watcher has been sent every
//!   event up to: progress can be trusted.
//!
//! # Costs and limits
//!
//! Dispatch matches each event against every synced watcher (no interval
//! tree yet): cost grows with watchers times events per batch. A watcher
//! on a follower sees a change when that follower applies it.
//! `prev_kv` costs one store read per event.

pub mod catch_up;
pub mod event;
pub mod hub;
pub mod key_range;
pub mod outbox;
mod worker;

pub use event::{Event, EventKind};
pub use hub::{CreateWatch, StreamHandle, StreamReceiver, WatchHub};
pub use outbox::Outgoing;
