//! What the hub sends one client stream, and the bound that makes a slow
//! client a victim instead of a weight on everyone else.
//!
//! Each client stream (a gRPC Watch call, an HTTP watch) has one outbox,
//! shared by all its watchers, so the order of the messages of one watcher
//! is the order they were pushed. The channel itself is unbounded; the
//! bound is a count of event messages waiting (`capacity`): the hub only
//! *tries* to push events ([`Outbox::try_events`]), and a refusal tells it
//! to set the watcher aside and catch it up from history later. Control
//! messages (created, canceled, progress) are always accepted: they are
//! few, one per client request or per interval, and must never be lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::event::Event;

/// One message for a client stream. `revision` is the header's revision:
/// the watcher has been sent every event at or below it (for `Created`,
/// the store's revision when the watcher was made).
#[derive(Debug, Clone)]
pub enum Outgoing {
    Created {
        watch_id: i64,
        revision: i64,
        progress_notify: bool,
    },
    /// A create request refused (etcd answers `created` and `canceled`
    /// together, watch id -1, with the reason).
    Refused { revision: i64, reason: String },
    /// The events of whole revisions, in order.
    Events {
        watch_id: i64,
        revision: i64,
        events: Vec<Arc<Event>>,
        prev_kv: bool,
        fragment: bool,
    },
    /// The watcher is gone: canceled by the client (`compact_revision` 0),
    /// or its next revision was compacted away.
    Canceled {
        watch_id: i64,
        revision: i64,
        compact_revision: i64,
    },
    /// Nothing new up to `revision` (watch id -1 for a whole stream's
    /// progress request).
    Progress { watch_id: i64, revision: i64 },
}

/// The hub's side of a client stream.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: UnboundedSender<Outgoing>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// The client stream's side.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: UnboundedReceiver<Outgoing>,
    queued: Arc<AtomicUsize>,
}

/// A new outbox holding at most `capacity` event messages.
pub fn outbox(capacity: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            queued: Arc::clone(&queued),
            capacity: capacity.max(1),
        },
        OutboxReceiver { rx, queued },
    )
}

impl Outbox {
    /// No room for events (or nobody reads any more).
    pub fn is_full(&self) -> bool {
        self.tx.is_closed() || self.queued.load(Ordering::Acquire) >= self.capacity
    }

    /// Pushes an `Events` message if there is room; `false` if not.
    pub fn try_events(&self, message: Outgoing) -> bool {
        if self.is_full() {
            return false;
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(message).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Pushes a control message (never refused for room).
    pub fn control(&self, message: Outgoing) {
        let _ = self.tx.send(message);
    }
}

impl OutboxReceiver {
    /// The next message; `None` once the hub dropped the stream.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let message = self.rx.recv().await?;
        if matches!(message, Outgoing::Events { .. }) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        Some(message)
    }
}
