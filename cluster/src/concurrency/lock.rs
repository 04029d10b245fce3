//! The mutex recipe behind the Lock service (etcd's `v3lock`).
//!
//! `lock(name, lease)` queues `<name>/<lease hex>` and returns once it is
//! first by create revision; `unlock(key)` deletes the key. See the module
//! essay of [`crate::concurrency`] for the queue and its invariants.

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, ResponseHeader, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse,
};

use super::wait::wait_deletes;
use super::{LeaveOnDrop, RecipeError, contender_key, prefix_of, session_lease};

/// A lock held: the key that stands for it and the header of the answer.
#[derive(Debug, Clone)]
pub struct Held {
    pub key: Vec<u8>,
    /// The key's create revision: the fencing token.
    pub revision: i64,
    pub header: Option<ResponseHeader>,
}

/// The first key under `prefix` by create revision.
pub(super) fn first_created() -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
}

// ANCHOR: lock_recipe
/// Blocks until the lease `lease` (0: a fresh 60 s lease, as etcd) holds
/// the lock `name`.
pub async fn lock(client: &mut Client, name: &[u8], lease: i64) -> Result<Held, RecipeError> {
    let lease = session_lease(client, lease).await?;
    let prefix = prefix_of(name);
    let key = contender_key(&prefix, lease);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(
                key.clone(),
                Vec::new(),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::get(prefix.clone(), Some(first_created())),
        ])
        .or_else([
            TxnOp::get(key.clone(), None),
            TxnOp::get(prefix.clone(), Some(first_created())),
        ]);
    let response = client.txn(txn).await?;
    let header = response.header().cloned();
    let responses = response.op_responses();
    let own_revision = if response.succeeded() {
        header
            .as_ref()
            .map(|h| h.revision())
            .ok_or(RecipeError::Unexpected("txn without a header"))?
    } else {
        match responses.first() {
            Some(TxnOpResponse::Get(get)) => get
                .kvs()
                .first()
                .map(|kv| kv.create_revision())
                .ok_or(RecipeError::Unexpected("the contender's key vanished"))?,
            _ => {
                return Err(RecipeError::Unexpected(
                    "txn answer without the key's range",
                ));
            }
        }
    };
    let owner = match responses.get(1) {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| kv.create_revision()),
        _ => {
            return Err(RecipeError::Unexpected(
                "txn answer without the owner's range",
            ));
        }
    };
    if owner.is_none() || owner == Some(own_revision) {
        return Ok(Held {
            key,
            revision: own_revision,
            header,
        });
    }
    // Not first: wait for the contenders ahead, leaving the queue if the
    // wait ends any other way.
    let leave = LeaveOnDrop::new(client, key.clone());
    wait_deletes(client, &prefix, own_revision - 1).await?;
    // Still queued? The lease may have expired while we waited.
    let mine = client.get(key.clone(), None).await?;
    let header = mine.header().cloned();
    match mine.kvs().first() {
        Some(kv) if kv.create_revision() == own_revision => {
            leave.disarm();
            Ok(Held {
                key,
                revision: own_revision,
                header,
            })
        }
        _ => {
            leave.disarm();
            Err(RecipeError::SessionExpired)
        }
    }
}
// ANCHOR_END: lock_recipe

/// Releases a hold by deleting its key (a key that is already gone is not
/// an error, as in etcd).
pub async fn unlock(
    client: &mut Client,
    key: &[u8],
) -> Result<Option<ResponseHeader>, RecipeError> {
    let response = client.delete(key.to_vec(), None).await?;
    Ok(response.header().cloned())
}
