//! Code generated from metcd's own .proto files (`cluster/proto/`, see
//! `cluster/build.rs`): the Lock and Election services, and the conversions
//! from the `etcd-client` types the recipes return.

#[allow(clippy::all, clippy::pedantic)]
pub mod v3lock {
    tonic::include_proto!("v3lockpb");
}

#[allow(clippy::all, clippy::pedantic)]
pub mod v3election {
    tonic::include_proto!("v3electionpb");
}

pub fn lock_header(h: &etcd_client::ResponseHeader) -> v3lock::ResponseHeader {
    v3lock::ResponseHeader {
        cluster_id: h.cluster_id(),
        member_id: h.member_id(),
        revision: h.revision(),
        raft_term: h.raft_term(),
    }
}

pub fn election_header(h: &etcd_client::ResponseHeader) -> v3election::ResponseHeader {
    v3election::ResponseHeader {
        cluster_id: h.cluster_id(),
        member_id: h.member_id(),
        revision: h.revision(),
        raft_term: h.raft_term(),
    }
}

pub fn election_kv(kv: &etcd_client::KeyValue) -> v3election::KeyValue {
    v3election::KeyValue {
        key: kv.key().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        value: kv.value().to_vec(),
        lease: kv.lease(),
    }
}
