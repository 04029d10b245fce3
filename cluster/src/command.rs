//! The client write a Raft entry carries, and what applying it answered.
//!
//! Every write of etcd's KV API is a transaction to the store: a Put is a
//! transaction with one put, a DeleteRange one with one delete, a Txn is
//! itself. So a normal Raft entry carries one of two commands:
//!
//! * [`Command::Txn`]: a write transaction (compares, then one branch);
//! * [`Command::Compact`]: compaction of the history at a revision;
//! * [`Command::LeaseGrant`]: a lease with the id and TTL the proposing
//!   member chose (see [`crate::lease`]);
//! * [`Command::LeaseRevoke`]: a lease and its keys deleted, by a client
//!   or by the leader's expiry.
//!
//! # Encoding
//!
//! ```text
//! tag u8 (3 = txn, 4 = compact, 5 = lease grant, 6 = lease revoke)
//! | proposer member id u64 LE | protobuf message
//! ```
//!
//! The message is etcd's own (`etcdserverpb.TxnRequest`,
//! `etcdserverpb.CompactionRequest`, `LeaseGrantRequest` with the chosen
//! id, `LeaseRevokeRequest`; see [`crate::etcd_wire`]), as etcd
//! logs its requests, so the log has one encoding with the API. The
//! proposer id is informational (logs, tools): a waiting client is found by
//! the entry's (index, term), never by it. Tags 1 and 2 were the plain put
//! and delete of the key-value layout before MVCC; they are not decoded.
//!
//! Decoding must be total and deterministic: every node applies the same
//! entries, so an entry that cannot be decoded is skipped by every node in
//! the same way (the apply loop logs it and answers its client with an
//! error), never a panic.

use prost::Message as _;

use crate::etcd_wire;
use crate::mvcc::txn::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, TxnResponse};

const TAG_TXN: u8 = 3;
const TAG_COMPACT: u8 = 4;
const TAG_LEASE_GRANT: u8 = 5;
const TAG_LEASE_REVOKE: u8 = 6;
const TAG_PUBLISH: u8 = 7;
const HEADER: usize = 1 + 8;

/// A client write, as carried in a Raft entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Txn(TxnRequest),
    Compact {
        revision: i64,
    },
    /// A lease `id` (never 0) of `ttl` seconds, both chosen before proposing.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// A member's client addresses, published by the member itself once it
    /// runs (as etcd's members publish their attributes through Raft), so
    /// that one added by address of its peer only (etcd's MemberAdd) is
    /// listed with the addresses clients reach it on.
    PublishMember {
        id: u64,
        client: String,
        grpc: Option<String>,
    },
}

/// What applying a command produced, for the waiting client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResponse {
    Txn(TxnResponse),
    Compacted,
    LeaseGranted { id: i64, ttl: i64 },
    LeaseRevoked,
    Published,
}

/// The answer to an applied entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The store's revision after the entry.
    pub revision: u64,
    /// The command's result; `None` for membership changes.
    pub response: Option<CommandResponse>,
}

impl Command {
    /// etcd's Put of one key, as the transaction the store applies.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Command {
        Command::Txn(TxnRequest {
            compare: vec![],
            success: vec![RequestOp::Put(PutRequest {
                key: key.into(),
                value: value.into(),
                ..PutRequest::default()
            })],
            failure: vec![],
        })
    }

    /// etcd's DeleteRange of one key.
    pub fn delete(key: impl Into<Vec<u8>>) -> Command {
        Command::Txn(TxnRequest {
            compare: vec![],
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                key: key.into(),
                ..DeleteRangeRequest::default()
            })],
            failure: vec![],
        })
    }

    pub fn encode(&self, proposer: u64) -> Vec<u8> {
        let (tag, body) = match self {
            Command::Txn(txn) => (TAG_TXN, etcd_wire::txn_out(txn).encode_to_vec()),
            Command::Compact { revision } => (
                TAG_COMPACT,
                etcd_wire::compaction_out(*revision).encode_to_vec(),
            ),
            Command::LeaseGrant { id, ttl } => (
                TAG_LEASE_GRANT,
                etcd_client::proto::PbLeaseGrantRequest { ttl: *ttl, id: *id }.encode_to_vec(),
            ),
            Command::LeaseRevoke { id } => (
                TAG_LEASE_REVOKE,
                etcd_client::proto::PbLeaseRevokeRequest { id: *id }.encode_to_vec(),
            ),
            Command::PublishMember { id, client, grpc } => (
                TAG_PUBLISH,
                serde_json::json!({ "id": id, "client": client, "grpc": grpc })
                    .to_string()
                    .into_bytes(),
            ),
        };
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.push(tag);
        out.extend_from_slice(&proposer.to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The command and its proposer's id.
    pub fn decode(bytes: &[u8]) -> Result<(Command, u64), String> {
        let (head, body) = bytes
            .split_at_checked(HEADER)
            .ok_or_else(|| format!("command of {} bytes is too short", bytes.len()))?;
        let mut proposer = [0u8; 8];
        proposer.copy_from_slice(&head[1..]);
        let proposer = u64::from_le_bytes(proposer);
        let command = match head[0] {
            TAG_TXN => {
                let pb = etcd_client::proto::PbTxnRequest::decode(body)
                    .map_err(|e| format!("txn protobuf: {e}"))?;
                Command::Txn(etcd_wire::txn_in(pb).map_err(|e| e.0)?)
            }
            TAG_COMPACT => {
                let pb = etcd_client::proto::PbCompactionRequest::decode(body)
                    .map_err(|e| format!("compaction protobuf: {e}"))?;
                Command::Compact {
                    revision: pb.revision,
                }
            }
            TAG_LEASE_GRANT => {
                let pb = etcd_client::proto::PbLeaseGrantRequest::decode(body)
                    .map_err(|e| format!("lease grant protobuf: {e}"))?;
                Command::LeaseGrant {
                    id: pb.id,
                    ttl: pb.ttl,
                }
            }
            TAG_LEASE_REVOKE => {
                let pb = etcd_client::proto::PbLeaseRevokeRequest::decode(body)
                    .map_err(|e| format!("lease revoke protobuf: {e}"))?;
                Command::LeaseRevoke { id: pb.id }
            }
            TAG_PUBLISH => {
                #[derive(serde::Deserialize)]
                struct Published {
                    id: u64,
                    client: String,
                    grpc: Option<String>,
                }
                let p: Published =
                    serde_json::from_slice(body).map_err(|e| format!("member publication: {e}"))?;
                Command::PublishMember {
                    id: p.id,
                    client: p.client,
                    grpc: p.grpc,
                }
            }
            other => return Err(format!("unknown command tag {other}")),
        };
        Ok((command, proposer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_decode_to_what_was_encoded() {
        let put = Command::put(b"k".to_vec(), vec![0, 1, 2, 255]);
        for command in [
            put,
            Command::delete("k"),
            Command::Compact { revision: 42 },
            Command::LeaseGrant { id: 7, ttl: 60 },
            Command::LeaseRevoke { id: i64::MAX },
            Command::PublishMember {
                id: 4,
                client: "127.0.0.1:43379".into(),
                grpc: Some("127.0.0.1:42379".into()),
            },
            Command::PublishMember {
                id: 5,
                client: String::new(),
                grpc: None,
            },
        ] {
            assert_eq!(
                Command::decode(&command.encode(7)).unwrap(),
                (command.clone(), 7)
            );
        }
    }

    #[test]
    fn damaged_entries_are_errors_not_panics() {
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[3, 0, 0]).is_err());
        assert!(Command::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // A txn tag with bytes that are not a protobuf message.
        let mut bad = vec![TAG_TXN];
        bad.extend_from_slice(&1u64.to_le_bytes());
        bad.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(Command::decode(&bad).is_err());
    }
}
