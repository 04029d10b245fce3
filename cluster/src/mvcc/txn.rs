//! Requests and responses of the key-value API, with etcd's rules for
//! checking them before they are proposed.
//!
//! These are the store's own types, one for each message of etcd's `KV`
//! service (`RangeRequest`, `PutRequest`, `DeleteRangeRequest`,
//! `TxnRequest`, `Compare` and their responses), with the same fields and
//! meanings; the API layers convert to and from their wire forms. Keeping
//! them independent of any wire format lets the store be tested alone.
//!
//! [`validate_txn`] applies the checks etcd makes in its gRPC layer before a
//! request reaches Raft, with etcd's exact error messages (clients match on
//! them): a missing key, `ignore_value`/`ignore_lease` with a value or lease
//! given, more than [`MAX_TXN_OPS`] operations in a branch, and the same key
//! written twice on one path through a transaction.

use super::key_index::RangeEnd;
use super::kv::KeyValue;

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// etcd's `RangeRequest.SortOrder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

/// etcd's `RangeRequest.SortTarget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    /// Empty: just `key`; `"\0"`: every key from `key` on; else `[key, range_end)`.
    pub range_end: Vec<u8>,
    /// 0: no limit.
    pub limit: i64,
    /// 0 or less: the current revision.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` returned.
    pub more: bool,
    /// Keys in the range at the revision read, before `limit` and filters.
    pub count: i64,
    /// The store's current revision when the range was served (etcd's
    /// response header reports this, not the revision read at).
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
    pub revision: i64,
}

/// What a compare looks at, with the value it is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    /// As in a range: empty for one key.
    pub range_end: Vec<u8>,
    pub target: CompareTarget,
    pub result: CompareResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
    pub revision: i64,
}

/// A request etcd refuses before proposing it, with etcd's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
}

pub fn validate_range(r: &RangeRequest) -> Result<(), RequestError> {
    if r.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    Ok(())
}

pub fn validate_put(r: &PutRequest) -> Result<(), RequestError> {
    if r.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(RequestError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(RequestError::LeaseProvided);
    }
    Ok(())
}

pub fn validate_delete(r: &DeleteRangeRequest) -> Result<(), RequestError> {
    if r.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    Ok(())
}

/// All of etcd's checks on a transaction, nested ones included.
pub fn validate_txn(txn: &TxnRequest) -> Result<(), RequestError> {
    validate_ops(txn)?;
    write_set(&txn.success)?;
    write_set(&txn.failure)?;
    Ok(())
}

fn validate_ops(txn: &TxnRequest) -> Result<(), RequestError> {
    if txn.compare.len() > MAX_TXN_OPS
        || txn.success.len() > MAX_TXN_OPS
        || txn.failure.len() > MAX_TXN_OPS
    {
        return Err(RequestError::TooManyOps);
    }
    if txn.compare.iter().any(|c| c.key.is_empty()) {
        return Err(RequestError::EmptyKey);
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(r) => validate_range(r)?,
            RequestOp::Put(r) => validate_put(r)?,
            RequestOp::DeleteRange(r) => validate_delete(r)?,
            RequestOp::Txn(t) => validate_ops(t)?,
        }
    }
    Ok(())
}

/// A deleted range, for the duplicate-key check.
#[derive(Debug, Clone)]
struct Deleted {
    start: Vec<u8>,
    end: RangeEnd,
}

impl Deleted {
    fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => key == self.start.as_slice(),
            RangeEnd::Unbounded => key >= self.start.as_slice(),
            RangeEnd::Before(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
}

/// The keys put and the ranges deleted by one branch (nested transactions
/// included), refusing a key written twice on one path. The two branches
/// of a nested transaction exclude each other, so they may put the same key.
fn write_set(ops: &[RequestOp]) -> Result<(Vec<Vec<u8>>, Vec<Deleted>), RequestError> {
    let mut deleted: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(Deleted {
                start: d.key.clone(),
                end: RangeEnd::from_request(&d.range_end),
            }),
            _ => None,
        })
        .collect();
    let mut puts: Vec<Vec<u8>> = Vec::new();
    let clashes = |key: &[u8], puts: &[Vec<u8>], deleted: &[Deleted]| {
        puts.iter().any(|p| p.as_slice() == key) || deleted.iter().any(|d| d.contains(key))
    };
    for op in ops {
        let RequestOp::Txn(nested) = op else { continue };
        let (puts_then, dels_then) = write_set(&nested.success)?;
        let (puts_else, dels_else) = write_set(&nested.failure)?;
        for key in &puts_then {
            if clashes(key, &puts, &deleted) {
                return Err(RequestError::DuplicateKey);
            }
        }
        let before = puts.len();
        puts.extend(puts_then.iter().cloned());
        for key in &puts_else {
            let from_then = puts_then.contains(key);
            let in_earlier = puts[..before].contains(key);
            if in_earlier
                || (!from_then && puts.contains(key))
                || deleted.iter().any(|d| d.contains(key))
            {
                return Err(RequestError::DuplicateKey);
            }
            if !from_then {
                puts.push(key.clone());
            }
        }
        deleted.extend(dels_then);
        deleted.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(put) = op else { continue };
        if clashes(&put.key, &puts, &deleted) {
            return Err(RequestError::DuplicateKey);
        }
        puts.push(put.key.clone());
    }
    Ok((puts, deleted))
}

// ANCHOR: compare
/// Whether `kv` (a zero-valued one for a missing key) satisfies `compare`.
pub fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ordering: Ordering = match &compare.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match compare.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

/// etcd's rule for a compare over the keys it names: every key must satisfy
/// it; with no key, a value compare fails and the others compare a
/// zero-valued key (so `create_revision == 0` means "absent").
pub fn compare_all(compare: &Compare, kvs: &[KeyValue]) -> bool {
    if kvs.is_empty() {
        return !matches!(compare.target, CompareTarget::Value(_))
            && compare_kv(compare, &KeyValue::default());
    }
    kvs.iter().all(|kv| compare_kv(compare, kv))
}
// ANCHOR_END: compare

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    }

    fn del(key: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
            prev_kv: false,
        })
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn etcds_request_checks_and_messages() {
        assert_eq!(
            validate_txn(&txn(vec![put("a"), put("a")], vec![])),
            Err(RequestError::DuplicateKey)
        );
        assert_eq!(
            validate_txn(&txn(vec![put("b"), del("a", "c")], vec![])),
            Err(RequestError::DuplicateKey)
        );
        assert_eq!(validate_txn(&txn(vec![put("a")], vec![put("a")])), Ok(()));
        assert_eq!(
            validate_txn(&txn(vec![del("a", "c"), del("b", "")], vec![])),
            Ok(()),
            "deletes may overlap"
        );
        // The branches of a nested transaction exclude each other...
        let nested = RequestOp::Txn(txn(vec![put("x")], vec![put("x")]));
        assert_eq!(validate_txn(&txn(vec![nested.clone()], vec![])), Ok(()));
        // ...but a put beside the nested one clashes with either branch.
        assert_eq!(
            validate_txn(&txn(vec![nested, put("x")], vec![])),
            Err(RequestError::DuplicateKey)
        );
        let too_many = (0..=MAX_TXN_OPS).map(|i| put(&format!("k{i}"))).collect();
        let err = validate_txn(&txn(too_many, vec![])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "etcdserver: too many operations in txn request"
        );
        assert_eq!(
            validate_txn(&txn(vec![put("")], vec![]))
                .unwrap_err()
                .to_string(),
            "etcdserver: key is not provided"
        );
        let ignore = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(validate_put(&ignore), Err(RequestError::ValueProvided));
        assert_eq!(
            RequestError::DuplicateKey.to_string(),
            "etcdserver: duplicate key given in txn request"
        );
    }

    #[test]
    fn compares_follow_etcd_on_missing_keys() {
        let absent = |target| Compare {
            key: b"k".to_vec(),
            range_end: vec![],
            target,
            result: CompareResult::Equal,
        };
        assert!(compare_all(&absent(CompareTarget::Create(0)), &[]));
        assert!(compare_all(&absent(CompareTarget::Version(0)), &[]));
        assert!(!compare_all(&absent(CompareTarget::Value(vec![])), &[]));
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 4,
            version: 3,
            value: b"b".to_vec(),
            lease: 0,
        };
        let check = |target, result| {
            compare_all(
                &Compare {
                    key: b"k".to_vec(),
                    range_end: vec![],
                    target,
                    result,
                },
                std::slice::from_ref(&kv),
            )
        };
        assert!(check(CompareTarget::Mod(4), CompareResult::Equal));
        assert!(check(CompareTarget::Mod(3), CompareResult::Greater));
        assert!(check(CompareTarget::Version(4), CompareResult::Less));
        assert!(check(
            CompareTarget::Value(b"a".to_vec()),
            CompareResult::Greater
        ));
        assert!(check(CompareTarget::Lease(1), CompareResult::NotEqual));
        assert!(!check(CompareTarget::Create(2), CompareResult::NotEqual));
    }
}
