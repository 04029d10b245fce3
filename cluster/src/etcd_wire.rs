//! etcd's protobuf messages, and their translation to and from the store's
//! own request and response types ([`crate::mvcc::txn`]).
//!
//! The wire types are those of etcd's `etcdserverpb` and `mvccpb` packages,
//! generated from the `.proto` files that the `etcd-client` crate ships
//! (its `build-server` feature also generates the service traits the gRPC
//! API implements). Field numbers and names are etcd's wire contract, so
//! `etcdctl` and every etcd client library understand them.
//!
//! Two directions, one place:
//!
//! * **in**: a request from a client (gRPC, or the JSON gateway) becomes a
//!   store request. Enumerations arrive as plain integers on the wire; an
//!   integer etcd does not define is refused here, with a message that
//!   names the field, the value and the accepted ones.
//! * **out**: the store's responses become etcd's messages; the caller adds
//!   the response header (cluster, member, revision, term).
//!
//! The Raft log stores write requests in the same protobuf form
//! ([`crate::command`]), as etcd stores its `InternalRaftRequest`: one
//! encoding for the wire and the log.

use etcd_client::proto::{
    PbCompactionRequest, PbCompare, PbCompareTarget, PbDeleteRequest, PbDeleteResponse, PbKeyValue,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbResponseHeader, PbResponseOp,
    PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp, PbTxnResponse,
};

use crate::mvcc::KeyValue;
use crate::mvcc::txn::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget,
    TxnRequest, TxnResponse,
};

/// A message whose content etcd's API does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

fn unknown(field: &str, value: i32, accepted: &str) -> WireError {
    WireError(format!(
        "etcdserver: {field} {value} is not defined; accepted: {accepted}"
    ))
}

// ---------------------------------------------------------------- in

pub fn range_in(pb: PbRangeRequest) -> Result<RangeRequest, WireError> {
    let sort_order = match pb.sort_order {
        0 => SortOrder::None,
        1 => SortOrder::Ascend,
        2 => SortOrder::Descend,
        other => {
            return Err(unknown(
                "sort_order",
                other,
                "0 (NONE), 1 (ASCEND), 2 (DESCEND)",
            ));
        }
    };
    let sort_target = match pb.sort_target {
        0 => SortTarget::Key,
        1 => SortTarget::Version,
        2 => SortTarget::Create,
        3 => SortTarget::Mod,
        4 => SortTarget::Value,
        other => {
            return Err(unknown(
                "sort_target",
                other,
                "0 (KEY), 1 (VERSION), 2 (CREATE), 3 (MOD), 4 (VALUE)",
            ));
        }
    };
    Ok(RangeRequest {
        key: pb.key,
        range_end: pb.range_end,
        limit: pb.limit,
        revision: pb.revision,
        sort_order,
        sort_target,
        keys_only: pb.keys_only,
        count_only: pb.count_only,
        min_mod_revision: pb.min_mod_revision,
        max_mod_revision: pb.max_mod_revision,
        min_create_revision: pb.min_create_revision,
        max_create_revision: pb.max_create_revision,
    })
}

pub fn put_in(pb: PbPutRequest) -> PutRequest {
    PutRequest {
        key: pb.key,
        value: pb.value,
        lease: pb.lease,
        prev_kv: pb.prev_kv,
        ignore_value: pb.ignore_value,
        ignore_lease: pb.ignore_lease,
    }
}

pub fn delete_in(pb: PbDeleteRequest) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: pb.key,
        range_end: pb.range_end,
        prev_kv: pb.prev_kv,
    }
}

pub fn compare_in(pb: PbCompare) -> Result<Compare, WireError> {
    let result = match pb.result {
        0 => CompareResult::Equal,
        1 => CompareResult::Greater,
        2 => CompareResult::Less,
        3 => CompareResult::NotEqual,
        other => {
            return Err(unknown(
                "compare result",
                other,
                "0 (EQUAL), 1 (GREATER), 2 (LESS), 3 (NOT_EQUAL)",
            ));
        }
    };
    // etcd reads the operand that matches `target` from the union; a union
    // that holds another field (or none) compares with that field's zero.
    let union = pb.target_union;
    let target = match PbCompareTarget::try_from(pb.target) {
        Ok(PbCompareTarget::Version) => CompareTarget::Version(match union {
            Some(PbTargetUnion::Version(v)) => v,
            _ => 0,
        }),
        Ok(PbCompareTarget::Create) => CompareTarget::Create(match union {
            Some(PbTargetUnion::CreateRevision(v)) => v,
            _ => 0,
        }),
        Ok(PbCompareTarget::Mod) => CompareTarget::Mod(match union {
            Some(PbTargetUnion::ModRevision(v)) => v,
            _ => 0,
        }),
        Ok(PbCompareTarget::Value) => CompareTarget::Value(match union {
            Some(PbTargetUnion::Value(v)) => v,
            _ => Vec::new(),
        }),
        Ok(PbCompareTarget::Lease) => CompareTarget::Lease(match union {
            Some(PbTargetUnion::Lease(v)) => v,
            _ => 0,
        }),
        Err(_) => {
            return Err(unknown(
                "compare target",
                pb.target,
                "0 (VERSION), 1 (CREATE), 2 (MOD), 3 (VALUE), 4 (LEASE)",
            ));
        }
    };
    Ok(Compare {
        key: pb.key,
        range_end: pb.range_end,
        target,
        result,
    })
}

fn op_in(pb: PbTxnRequestOp) -> Result<RequestOp, WireError> {
    match pb.request {
        Some(PbTxnOpRequest::RequestRange(r)) => Ok(RequestOp::Range(range_in(r)?)),
        Some(PbTxnOpRequest::RequestPut(r)) => Ok(RequestOp::Put(put_in(r))),
        Some(PbTxnOpRequest::RequestDeleteRange(r)) => Ok(RequestOp::DeleteRange(delete_in(r))),
        Some(PbTxnOpRequest::RequestTxn(t)) => Ok(RequestOp::Txn(txn_in(t)?)),
        None => Err(WireError(
            "etcdserver: a txn operation holds no request; expected one of request_range, \
             request_put, request_delete_range, request_txn"
                .into(),
        )),
    }
}

pub fn txn_in(pb: PbTxnRequest) -> Result<TxnRequest, WireError> {
    Ok(TxnRequest {
        compare: pb
            .compare
            .into_iter()
            .map(compare_in)
            .collect::<Result<_, _>>()?,
        success: pb
            .success
            .into_iter()
            .map(op_in)
            .collect::<Result<_, _>>()?,
        failure: pb
            .failure
            .into_iter()
            .map(op_in)
            .collect::<Result<_, _>>()?,
    })
}

// ------------------------------------------------- requests out (the log)

pub fn range_out(r: &RangeRequest) -> PbRangeRequest {
    PbRangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        sort_order: match r.sort_order {
            SortOrder::None => 0,
            SortOrder::Ascend => 1,
            SortOrder::Descend => 2,
        },
        sort_target: match r.sort_target {
            SortTarget::Key => 0,
            SortTarget::Version => 1,
            SortTarget::Create => 2,
            SortTarget::Mod => 3,
            SortTarget::Value => 4,
        },
        serializable: false,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

fn put_out(r: &PutRequest) -> PbPutRequest {
    PbPutRequest {
        key: r.key.clone(),
        value: r.value.clone(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

fn delete_out(r: &DeleteRangeRequest) -> PbDeleteRequest {
    PbDeleteRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        prev_kv: r.prev_kv,
    }
}

fn compare_out(c: &Compare) -> PbCompare {
    let (target, union) = match &c.target {
        CompareTarget::Version(v) => (PbCompareTarget::Version, PbTargetUnion::Version(*v)),
        CompareTarget::Create(v) => (PbCompareTarget::Create, PbTargetUnion::CreateRevision(*v)),
        CompareTarget::Mod(v) => (PbCompareTarget::Mod, PbTargetUnion::ModRevision(*v)),
        CompareTarget::Value(v) => (PbCompareTarget::Value, PbTargetUnion::Value(v.clone())),
        CompareTarget::Lease(v) => (PbCompareTarget::Lease, PbTargetUnion::Lease(*v)),
    };
    PbCompare {
        result: match c.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        },
        target: target as i32,
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        target_union: Some(union),
    }
}

fn op_out(op: &RequestOp) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(match op {
            RequestOp::Range(r) => PbTxnOpRequest::RequestRange(range_out(r)),
            RequestOp::Put(r) => PbTxnOpRequest::RequestPut(put_out(r)),
            RequestOp::DeleteRange(r) => PbTxnOpRequest::RequestDeleteRange(delete_out(r)),
            RequestOp::Txn(t) => PbTxnOpRequest::RequestTxn(txn_out(t)),
        }),
    }
}

pub fn txn_out(t: &TxnRequest) -> PbTxnRequest {
    PbTxnRequest {
        compare: t.compare.iter().map(compare_out).collect(),
        success: t.success.iter().map(op_out).collect(),
        failure: t.failure.iter().map(op_out).collect(),
    }
}

pub fn compaction_out(revision: i64) -> PbCompactionRequest {
    PbCompactionRequest {
        revision,
        physical: false,
    }
}

// ---------------------------------------------------------- responses out

pub fn kv_out(kv: KeyValue) -> PbKeyValue {
    PbKeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// Headers of responses nested in a txn carry the txn's revision only,
/// as etcd's do.
fn nested_header(revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..PbResponseHeader::default()
    })
}

pub fn range_response_out(r: RangeResponse, header: Option<PbResponseHeader>) -> PbRangeResponse {
    PbRangeResponse {
        header,
        kvs: r.kvs.into_iter().map(kv_out).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_response_out(r: PutResponse, header: Option<PbResponseHeader>) -> PbPutResponse {
    PbPutResponse {
        header,
        prev_kv: r.prev_kv.map(kv_out),
    }
}

pub fn delete_response_out(
    r: DeleteRangeResponse,
    header: Option<PbResponseHeader>,
) -> PbDeleteResponse {
    PbDeleteResponse {
        header,
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_out).collect(),
    }
}

fn response_op_out(op: ResponseOp) -> PbResponseOp {
    PbResponseOp {
        response: Some(match op {
            ResponseOp::Range(r) => {
                let header = nested_header(r.revision);
                PbTxnOpResponse::ResponseRange(range_response_out(r, header))
            }
            ResponseOp::Put(r) => {
                let header = nested_header(r.revision);
                PbTxnOpResponse::ResponsePut(put_response_out(r, header))
            }
            ResponseOp::DeleteRange(r) => {
                let header = nested_header(r.revision);
                PbTxnOpResponse::ResponseDeleteRange(delete_response_out(r, header))
            }
            ResponseOp::Txn(t) => {
                let header = nested_header(t.revision);
                PbTxnOpResponse::ResponseTxn(txn_response_out(t, header))
            }
        }),
    }
}

pub fn txn_response_out(t: TxnResponse, header: Option<PbResponseHeader>) -> PbTxnResponse {
    PbTxnResponse {
        header,
        succeeded: t.succeeded,
        responses: t.responses.into_iter().map(response_op_out).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_txn() -> TxnRequest {
        TxnRequest {
            compare: vec![
                Compare {
                    key: b"a".to_vec(),
                    range_end: vec![],
                    target: CompareTarget::Mod(7),
                    result: CompareResult::Less,
                },
                Compare {
                    key: b"b".to_vec(),
                    range_end: b"c".to_vec(),
                    target: CompareTarget::Value(b"v".to_vec()),
                    result: CompareResult::NotEqual,
                },
            ],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: b"a".to_vec(),
                    value: b"1".to_vec(),
                    prev_kv: true,
                    ..PutRequest::default()
                }),
                RequestOp::Txn(TxnRequest {
                    compare: vec![],
                    success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                        key: b"x".to_vec(),
                        range_end: b"y".to_vec(),
                        prev_kv: true,
                    })],
                    failure: vec![],
                }),
            ],
            failure: vec![RequestOp::Range(RangeRequest {
                key: b"a".to_vec(),
                range_end: b"\0".to_vec(),
                limit: 3,
                revision: 9,
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Mod,
                keys_only: true,
                count_only: false,
                min_mod_revision: 1,
                max_mod_revision: 2,
                min_create_revision: 3,
                max_create_revision: 4,
            })],
        }
    }

    #[test]
    fn a_txn_survives_the_round_trip_through_the_wire_form() {
        let txn = sample_txn();
        assert_eq!(txn_in(txn_out(&txn)).unwrap(), txn);
    }

    #[test]
    fn undefined_enumerations_are_refused_with_the_accepted_values() {
        let pb = PbRangeRequest {
            key: b"a".to_vec(),
            sort_order: 7,
            ..PbRangeRequest::default()
        };
        let err = range_in(pb).unwrap_err();
        assert!(err.0.contains("sort_order 7"), "{err}");
        assert!(err.0.contains("DESCEND"), "{err}");
        let pb = PbCompare {
            target: 9,
            ..PbCompare::default()
        };
        assert!(compare_in(pb).unwrap_err().0.contains("compare target 9"));
    }

    #[test]
    fn a_compare_reads_the_operand_its_target_names() {
        // etcdctl always sets the union field that matches the target; a
        // mismatched one compares with zero, as etcd's does.
        let pb = PbCompare {
            target: PbCompareTarget::Version as i32,
            target_union: Some(PbTargetUnion::ModRevision(5)),
            key: b"k".to_vec(),
            ..PbCompare::default()
        };
        assert_eq!(compare_in(pb).unwrap().target, CompareTarget::Version(0));
    }
}
