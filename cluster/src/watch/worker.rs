//! The hub's thread: batches from the apply loop, catch-up rounds.
//!
//! The apply loop only sends (an unbounded channel never blocks it); this
//! thread dispatches each batch to the synced watchers, in order, and runs
//! a catch-up round every [`catch_up::INTERVAL`] while any watcher is
//! unsynced, at once when one is added, and back to back while rounds make
//! progress. A round is bounded ([`catch_up::PAGE`]) and batches are
//! drained at most [`DRAIN`] at a time, so neither starves the other.
//! The thread ends when the hub is dropped.

use std::sync::Weak;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::catch_up;
use super::hub::{Feed, Shared};

/// Batches handled before the next catch-up round is considered.
const DRAIN: usize = 256;

pub(super) fn spawn(shared: Weak<Shared>, feed: Receiver<Feed>) {
    let spawned = std::thread::Builder::new()
        .name("watch-hub".into())
        .spawn(move || run(shared, feed));
    if let Err(err) = spawned {
        tracing::error!(%err, "could not start the watch hub's thread: watches will not be served");
    }
}

fn run(shared: Weak<Shared>, feed: Receiver<Feed>) {
    let mut last_round = Instant::now();
    let mut again = false;
    loop {
        let wait = if again {
            Duration::ZERO
        } else {
            catch_up::INTERVAL.saturating_sub(last_round.elapsed())
        };
        let first = match feed.recv_timeout(wait) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut woken = false;
        for message in first.into_iter().chain(feed.try_iter().take(DRAIN)) {
            match message {
                Feed::Batch { revision, changes } => shared.dispatch(revision, changes),
                Feed::Reset { revision } => {
                    shared.reset(revision);
                    woken = true;
                }
                Feed::Wake => woken = true,
            }
        }
        if woken || again || last_round.elapsed() >= catch_up::INTERVAL {
            again = catch_up::round(&shared);
            last_round = Instant::now();
        }
    }
}
