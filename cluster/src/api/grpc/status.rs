//! etcd's errors as gRPC statuses.
//!
//! etcd's clients recognise errors by gRPC code and exact message (the Go
//! client compares messages with its `rpctypes` table; `etcdctl` prints
//! them), so every failure of the gRPC API is mapped here, in one place, to
//! the code and the message etcd sends for the same situation. Where our
//! own explanation says more than etcd's terse message, it travels beside
//! it in the `metcd-detail` metadata, and whether the request may have
//! taken effect in `metcd-outcome` (`not-applied` or `unknown`), as the
//! HTTP API's `X-Metcd-Outcome` header does.

use tonic::{Code, Status};

use crate::api::raft_call::{CallError, Outcome};
use crate::etcd_wire::WireError;
use crate::mvcc::MvccError;
use crate::mvcc::txn::RequestError;
use crate::raft::WriteError;

pub const NO_LEADER: &str = "etcdserver: no leader";
pub const LEADER_CHANGED: &str = "etcdserver: leader changed";
pub const TIMEOUT: &str = "etcdserver: request timed out";
pub const TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";
pub const STOPPED: &str = "etcdserver: server stopped";
pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
pub const LEASE_NOT_FOUND: &str = crate::lease::LEASE_NOT_FOUND;
pub const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
pub const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
pub const NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
pub const BAD_LEADER_TRANSFEREE: &str = "etcdserver: bad leader transferee";
pub const NOT_LEADER: &str = "etcdserver: not leader";
pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";

/// etcd's `--max-request-bytes` default: the largest request it proposes
/// (1.5 MiB; the same bound as metcd's HTTP API body).
pub const MAX_REQUEST_BYTES: usize = crate::api::http::MAX_VALUE_BYTES;

/// etcd refuses, before proposing, a request whose encoding is larger than
/// `--max-request-bytes`: InvalidArgument "request is too large".
pub fn check_request_size(encoded_len: usize) -> Result<(), Status> {
    if encoded_len > MAX_REQUEST_BYTES {
        return Err(Status::invalid_argument(REQUEST_TOO_LARGE));
    }
    Ok(())
}

/// A status with etcd's code and message, our detail and the outcome.
pub fn with_detail(code: Code, message: &str, detail: &str, outcome: Outcome) -> Status {
    let mut status = Status::new(code, message);
    let metadata = status.metadata_mut();
    if let Ok(value) = detail.replace(['\r', '\n'], " ").parse() {
        metadata.insert("metcd-detail", value);
    }
    metadata.insert(
        "metcd-outcome",
        tonic::metadata::MetadataValue::from_static(outcome.as_str()),
    );
    status
}

pub fn wire(err: WireError) -> Status {
    Status::invalid_argument(err.0)
}

pub fn request(err: RequestError) -> Status {
    Status::invalid_argument(err.to_string())
}

/// A read that failed in the store.
pub fn mvcc(err: MvccError) -> Status {
    match err {
        MvccError::Compacted => Status::out_of_range(COMPACTED),
        MvccError::FutureRevision => Status::out_of_range(FUTURE_REV),
        MvccError::KeyNotFound => Status::invalid_argument(err.to_string()),
        MvccError::LeaseNotFound => Status::not_found(LEASE_NOT_FOUND),
        MvccError::Engine(_) | MvccError::Corrupt(_) => Status::internal(err.to_string()),
    }
}

/// The Raft thread gave no answer.
pub fn call(err: CallError) -> Status {
    let detail = err.to_string();
    let outcome = err.outcome();
    match err {
        CallError::Overloaded { .. } => {
            with_detail(Code::ResourceExhausted, TOO_MANY_REQUESTS, &detail, outcome)
        }
        CallError::ShuttingDown | CallError::StoppedBeforeAnswer | CallError::StoppedAfterWrite => {
            with_detail(Code::Unavailable, STOPPED, &detail, outcome)
        }
        CallError::TimedOut { .. } | CallError::WriteTimedOut { .. } => {
            with_detail(Code::Unavailable, TIMEOUT, &detail, outcome)
        }
    }
}

/// A write the Raft thread answered with a failure.
pub fn write(err: WriteError) -> Status {
    match err {
        WriteError::NotLeader { leader: None } => with_detail(
            Code::Unavailable,
            NO_LEADER,
            "no leader is known (election in progress or quorum lost); nothing was proposed",
            Outcome::NotApplied,
        ),
        WriteError::NotLeader { leader: Some(_) } => with_detail(
            Code::Unavailable,
            LEADER_CHANGED,
            "this member stopped leading before the write was proposed; nothing was proposed",
            Outcome::NotApplied,
        ),
        WriteError::NotApplied(detail) => with_detail(
            Code::Unavailable,
            LEADER_CHANGED,
            &detail,
            Outcome::NotApplied,
        ),
        WriteError::Unknown(detail) => {
            with_detail(Code::Unavailable, TIMEOUT, &detail, Outcome::Unknown)
        }
        WriteError::Rejected(message) => rejected(&message),
    }
}

/// A command applied with a refusal (the same on every member), or a
/// membership change refused: etcd's messages pass through with their
/// codes; ours are a failed precondition.
fn rejected(message: &str) -> Status {
    if message == COMPACTED || message == FUTURE_REV || message == crate::lease::TTL_TOO_LARGE {
        Status::out_of_range(message)
    } else if message == LEASE_NOT_FOUND {
        Status::not_found(message)
    } else {
        with_detail(
            Code::FailedPrecondition,
            message,
            message,
            Outcome::NotApplied,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_refusals_carry_etcds_codes_and_messages() {
        let s = mvcc(MvccError::Compacted);
        assert_eq!((s.code(), s.message()), (Code::OutOfRange, COMPACTED));
        let s = mvcc(MvccError::FutureRevision);
        assert_eq!((s.code(), s.message()), (Code::OutOfRange, FUTURE_REV));
        // As answered by the apply loop (the state machine adds the prefix).
        let s = write(WriteError::Rejected(COMPACTED.into()));
        assert_eq!((s.code(), s.message()), (Code::OutOfRange, COMPACTED));
        let s = request(RequestError::TooManyOps);
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request"
            )
        );
    }

    #[test]
    fn an_unknown_outcome_says_so_beside_etcds_timeout() {
        let s = write(WriteError::Unknown(
            "the leader changed after proposing".into(),
        ));
        assert_eq!((s.code(), s.message()), (Code::Unavailable, TIMEOUT));
        assert_eq!(s.metadata().get("metcd-outcome").unwrap(), "unknown");
        let s = call(CallError::Overloaded { limit: 3 });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get("metcd-outcome").unwrap(), "not-applied");
    }
}
