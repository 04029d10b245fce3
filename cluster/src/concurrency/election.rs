//! The leader-election recipe behind the Election service (etcd's
//! `v3election`).
//!
//! Candidates queue like lock contenders (see [`crate::concurrency`]); the
//! leader is the first key under `<name>/` by create revision and its value
//! is the leader's announcement. Proclaim and Resign are transactions
//! guarded by the leader key's create revision, so a former leader whose key
//! was deleted (lease expired) and re-created cannot act on the new key.

use etcd_client::{
    Client, Compare, CompareOp, EventType, KeyValue, PutOptions, ResponseHeader, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use super::lock::first_created;
use super::wait::wait_deletes;
use super::{LeaveOnDrop, RecipeError, contender_key, prefix_of, session_lease};

/// Proof of leadership (the Election service's `LeaderKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    pub name: Vec<u8>,
    pub key: Vec<u8>,
    /// The key's create revision.
    pub rev: i64,
    pub lease: i64,
}

/// The leader's key-value and the header of the read that found it.
#[derive(Debug, Clone)]
pub struct Leader {
    pub kv: KeyValue,
    pub header: Option<ResponseHeader>,
}

/// Blocks until the candidate with `lease` (0: a fresh 60 s lease) leads
/// the election `name`, announcing `value`.
pub async fn campaign(
    client: &mut Client,
    name: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<(LeaderKey, Option<ResponseHeader>), RecipeError> {
    let lease = session_lease(client, lease).await?;
    let prefix = prefix_of(name);
    let key = contender_key(&prefix, lease);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            value.to_vec(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key.clone(), None)]);
    let response = client.txn(txn).await?;
    // The answer carries the header of the campaign's transaction, as
    // etcd's does.
    let header = response.header().cloned();
    let mut leader = LeaderKey {
        name: name.to_vec(),
        key: key.clone(),
        rev: header.as_ref().map(|h| h.revision()).unwrap_or_default(),
        lease,
    };
    if !response.succeeded() {
        let existing = match response.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().cloned(),
            _ => None,
        }
        .ok_or(RecipeError::Unexpected("the candidate's key vanished"))?;
        leader.rev = existing.create_revision();
        if existing.value() != value {
            proclaim(client, &leader, value).await?;
        }
    }
    let leave = LeaveOnDrop::new(client, key.clone());
    wait_deletes(client, &prefix, leader.rev - 1).await?;
    leave.disarm();
    // Leading only if our key outlived the wait (its lease may have expired).
    let mine = client.get(key, None).await?;
    match mine.kvs().first() {
        Some(kv) if kv.create_revision() == leader.rev => Ok((leader, header)),
        _ => Err(RecipeError::SessionExpired),
    }
}

// ANCHOR: proclaim
/// The leader publishes `value`; refused with "election: not leader" if
/// `leader` no longer leads (its key is gone or was re-created).
pub async fn proclaim(
    client: &mut Client,
    leader: &LeaderKey,
    value: &[u8],
) -> Result<Option<ResponseHeader>, RecipeError> {
    let txn = Txn::new()
        .when([Compare::create_revision(
            leader.key.clone(),
            CompareOp::Equal,
            leader.rev,
        )])
        .and_then([TxnOp::put(
            leader.key.clone(),
            value.to_vec(),
            Some(PutOptions::new().with_lease(leader.lease)),
        )]);
    let response = client.txn(txn).await?;
    if !response.succeeded() {
        return Err(RecipeError::NotLeader);
    }
    Ok(response.header().cloned())
}
// ANCHOR_END: proclaim

/// The leader steps down: its key is deleted if it still leads (resigning
/// twice, or after losing the lease, is not an error).
pub async fn resign(
    client: &mut Client,
    leader: &LeaderKey,
) -> Result<Option<ResponseHeader>, RecipeError> {
    let txn = Txn::new()
        .when([Compare::create_revision(
            leader.key.clone(),
            CompareOp::Equal,
            leader.rev,
        )])
        .and_then([TxnOp::delete(leader.key.clone(), None)]);
    let response = client.txn(txn).await?;
    Ok(response.header().cloned())
}

/// The current leader of `name`: "election: no leader" if nobody campaigns.
pub async fn leader(client: &mut Client, name: &[u8]) -> Result<Leader, RecipeError> {
    let found = client.get(prefix_of(name), Some(first_created())).await?;
    let header = found.header().cloned();
    let kv = found.kvs().first().cloned().ok_or(RecipeError::NoLeader)?;
    Ok(Leader { kv, header })
}

/// Calls `emit` with the leader of `name` now (once there is one) and again
/// at every change of its value or of who leads, until `emit` answers false
/// or the watch fails. `emit` is awaited, so a slow observer slows only its
/// own watch, which buffers.
pub async fn observe<F, Fut>(
    client: &mut Client,
    name: &[u8],
    mut emit: F,
) -> Result<(), RecipeError>
where
    F: FnMut(Leader) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let prefix = prefix_of(name);
    loop {
        // Who leads now, or, if nobody does, the first candidate to come.
        let found = client.get(prefix.clone(), Some(first_created())).await?;
        let header = found.header().cloned();
        let read_at = header.as_ref().map(|h| h.revision()).unwrap_or_default();
        let (kv, header) = match found.kvs().first().cloned() {
            Some(kv) => (kv, header),
            None => {
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(read_at + 1);
                let mut stream = client.watch(prefix.clone(), Some(options)).await?;
                let mut first = None;
                while let Some(response) = stream.message().await? {
                    if let Some(event) = response
                        .events()
                        .iter()
                        .find(|e| e.event_type() == EventType::Put)
                        && let Some(kv) = event.kv()
                    {
                        first = Some((kv.clone(), response.header().cloned()));
                        break;
                    }
                    if response.canceled() {
                        break;
                    }
                }
                match first {
                    Some(found) => found,
                    None => continue,
                }
            }
        };
        let from = kv.mod_revision();
        let key = kv.key().to_vec();
        if !emit(Leader { kv, header }).await {
            return Ok(());
        }
        // Follow the leader's key until it is deleted.
        let options = WatchOptions::new().with_start_revision(from + 1);
        let mut stream = client.watch(key, Some(options)).await?;
        'follow: while let Some(response) = stream.message().await? {
            for event in response.events() {
                match (event.event_type(), event.kv()) {
                    (EventType::Delete, _) => break 'follow,
                    (EventType::Put, Some(kv)) => {
                        let leader = Leader {
                            kv: kv.clone(),
                            header: response.header().cloned(),
                        };
                        if !emit(leader).await {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
            if response.canceled() {
                break;
            }
        }
    }
}
