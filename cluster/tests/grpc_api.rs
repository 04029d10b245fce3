//! etcd's v3 gRPC API on a real 3-node metcd cluster, through the
//! `etcd-client` crate (the Rust client etcd's users have): the data model
//! (revisions, versions, history), writes sent to any member (followers
//! forward them to the leader), transactions, compaction and its errors,
//! the Cluster and Maintenance services, and a snapshot restored into a
//! new cluster.

mod common;

use std::time::Duration;

use common::Cluster;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};

async fn connect(endpoint: &str) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(10));
    for _ in 0..50 {
        if let Ok(client) = Client::connect([endpoint], Some(options.clone())).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {endpoint}");
}

fn code(err: &etcd_client::Error) -> (tonic::Code, String) {
    match err {
        etcd_client::Error::GRpcStatus(status) => (status.code(), status.message().to_string()),
        other => panic!("not a gRPC status: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_service_keeps_etcds_data_model_on_every_member() {
    let cluster = Cluster::start(3, "redb", &[]).await;
    let leader = cluster.wait_leader().await;
    let follower = common::followers(&cluster, leader)[0];
    // Writes through a follower: gRPC clients do not follow redirects, so
    // the follower forwards them.
    let mut client = connect(&cluster.node(follower).grpc).await;

    let first = client.put("a", "1", None).await.unwrap();
    let header = first.header().unwrap();
    assert_eq!(
        header.revision(),
        2,
        "a fresh store's first write gets revision 2"
    );
    assert_eq!(header.member_id(), follower, "the member that answered");
    client.put("a", "2", None).await.unwrap();
    let third = client
        .put("b", "x", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert!(third.prev_key().is_none());
    assert_eq!(third.header().unwrap().revision(), 4);

    let a = client.get("a", None).await.unwrap();
    let kv = &a.kvs()[0];
    assert_eq!(
        (
            kv.value(),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version()
        ),
        (&b"2"[..], 2, 3, 2)
    );
    // History: the store as of revision 2.
    let old = client
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(old.kvs()[0].value(), b"1");
    // Prefix and limit, with `more` and `count`.
    let all = client
        .get("", Some(GetOptions::new().with_all_keys().with_limit(1)))
        .await
        .unwrap();
    assert_eq!((all.kvs().len(), all.more(), all.count()), (1, true, 2));

    // Deleting nothing changes no revision.
    let nothing = client.delete("zzz", None).await.unwrap();
    assert_eq!(
        (nothing.deleted(), nothing.header().unwrap().revision()),
        (0, 4)
    );

    // A compare-and-swap on mod_revision, as Kubernetes updates objects.
    let swap = Txn::new()
        .when([Compare::mod_revision("a", CompareOp::Equal, 3)])
        .and_then([TxnOp::put("a", "3", None)])
        .or_else([TxnOp::get("a", None)]);
    let done = client.txn(swap.clone()).await.unwrap();
    assert!(done.succeeded());
    let again = client.txn(swap).await.unwrap();
    assert!(!again.succeeded(), "the second swap sees mod_revision 5");

    // Compaction, then reads below it fail as etcd's do.
    client.compact(4, None).await.unwrap();
    let err = client
        .get("a", Some(GetOptions::new().with_revision(3)))
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".to_string()
        )
    );
    let err = client
        .get("a", Some(GetOptions::new().with_revision(1000)))
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision".to_string()
        )
    );
    let err = client.put("", "v", None).await.unwrap_err();
    assert_eq!(
        code(&err),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided".to_string()
        )
    );
    // etcd's --max-request-bytes (1.5 MiB), on every member, for a put and
    // for a transaction carrying the same put.
    let big = vec![b'x'; 1_600_000];
    for node in &cluster.nodes {
        let mut member = connect(&node.grpc).await;
        let too_large = (
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large".to_string(),
        );
        let err = member.put("big", big.clone(), None).await.unwrap_err();
        assert_eq!(code(&err), too_large, "member {}", node.id);
        let txn =
            etcd_client::Txn::new().and_then([etcd_client::TxnOp::put("big", big.clone(), None)]);
        let err = member.txn(txn).await.unwrap_err();
        assert_eq!(code(&err), too_large, "member {}", node.id);
    }

    // Every member serves the same data at the same revision.
    for node in &cluster.nodes {
        let mut member = connect(&node.grpc).await;
        let a = member.get("a", None).await.unwrap();
        assert_eq!(a.kvs()[0].value(), b"3", "member {}", node.id);
        assert_eq!(a.header().unwrap().revision(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_maintenance_services_answer_as_etcds_do() {
    let cluster = Cluster::start(3, "memory", &[]).await;
    let leader = cluster.wait_leader().await;
    let mut client = connect(&cluster.node(leader).grpc).await;

    let members = client.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);
    for m in members.members() {
        let node = cluster.node(m.id());
        assert_eq!(m.peer_urls(), [format!("http://{}", node.peer)]);
        assert_eq!(m.client_urls(), [format!("http://{}", node.grpc)]);
        assert!(!m.is_learner());
    }

    let status = client.status().await.unwrap();
    assert!(status.version().starts_with("3.5."), "{}", status.version());
    assert_eq!(status.leader(), leader);
    assert!(status.raft_index() >= status.raft_applied_index().min(1));

    // A learner is added, listed, promoted and removed.
    let added = client
        .member_add(
            ["http://127.0.0.1:1"],
            Some(etcd_client::MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap();
    let id = added.member().unwrap().id();
    assert_eq!(id, 4, "the next number after the members");
    assert!(added.member().unwrap().is_learner());
    let err = client
        .member_add(["http://127.0.0.1:1"], None)
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists".to_string()
        )
    );
    client.member_remove(id).await.unwrap();
    let err = client.member_remove(id).await.unwrap_err();
    assert_eq!(
        code(&err),
        (
            tonic::Code::NotFound,
            "etcdserver: member not found".to_string()
        )
    );

    // Leadership moves where it is asked to.
    let target = common::followers(&cluster, leader)[0];
    client.move_leader(target).await.unwrap();
    assert_eq!(cluster.wait_leader().await, target);

    // Replicas agree on the history's hash.
    let mut hashes = Vec::new();
    let mut writer = connect(&cluster.node(target).grpc).await;
    writer.put("k", "v", None).await.unwrap();
    let revision = writer
        .get("k", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    for node in &cluster.nodes {
        let mut member = connect(&node.grpc).await;
        // A serializable read waits for nothing: poll until applied.
        for _ in 0..50 {
            let status = member.status().await.unwrap();
            if status.header().unwrap().revision() >= revision {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let hash = member.hash_kv(revision).await.unwrap();
        hashes.push(hash.hash());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}
