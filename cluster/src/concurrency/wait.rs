//! Waiting for the contenders ahead to leave the queue.
//!
//! [`wait_deletes`] returns once no key under the prefix has a create
//! revision at or below `max_create_revision`. It never waits on more than
//! one key at a time: the newest key ahead (the immediate predecessor),
//! watched from the revision of the read that found it, so a delete that
//! lands between the read and the watch is still seen (the watch replays
//! history from that revision).

use etcd_client::{Client, EventType, GetOptions, SortOrder, SortTarget, WatchOptions};

use super::RecipeError;

// ANCHOR: wait_deletes
/// Waits until every key under `prefix` with a create revision up to
/// `max_create_revision` is deleted; answers the revision at which that was
/// observed.
pub async fn wait_deletes(
    client: &mut Client,
    prefix: &[u8],
    max_create_revision: i64,
) -> Result<i64, RecipeError> {
    loop {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1)
            .with_max_create_revision(max_create_revision);
        let found = client.get(prefix.to_vec(), Some(options)).await?;
        let revision = found
            .header()
            .map(|h| h.revision())
            .ok_or(RecipeError::Unexpected("range without a header"))?;
        let Some(predecessor) = found.kvs().first() else {
            return Ok(revision);
        };
        wait_delete(client, predecessor.key(), revision).await?;
    }
}
// ANCHOR_END: wait_deletes

/// Waits for a DELETE of `key` at a revision after `after`.
pub async fn wait_delete(client: &mut Client, key: &[u8], after: i64) -> Result<(), RecipeError> {
    let options = WatchOptions::new().with_start_revision(after + 1);
    let mut stream = client.watch(key.to_vec(), Some(options)).await?;
    while let Some(response) = stream.message().await? {
        if response
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            return Ok(());
        }
        if response.canceled() {
            // Compacted past `after`: the key may be gone already; the
            // caller's loop looks again.
            if response.compact_revision() > 0 {
                return Ok(());
            }
            return Err(RecipeError::WatchEnded(
                response.cancel_reason().to_string(),
            ));
        }
    }
    Err(RecipeError::WatchEnded("the watch stream closed".into()))
}
