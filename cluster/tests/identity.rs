//! Cluster identity with real `metcd` processes: a node that is started
//! the wrong way does not become a cluster of its own, and two clusters
//! whose peer addresses are mixed up do not exchange raft messages.

mod common;

use std::time::Duration;

use common::{Cluster, Node, eventually, free_port, put_retrying, wait_value};

const FAST: &[&str] = &["--tick-ms", "50"];

/// The flags that bootstrap `members` (id, peer, client) as a cluster.
fn initial(members: &[(u64, &str, &str)]) -> Vec<String> {
    let list = |f: &dyn Fn(&(u64, &str, &str)) -> String| {
        members.iter().map(f).collect::<Vec<_>>().join(",")
    };
    vec![
        "--initial-cluster".into(),
        list(&|(id, peer, _)| format!("{id}={peer}")),
        "--initial-cluster-clients".into(),
        list(&|(id, _, client)| format!("{id}={client}")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_without_join_does_not_become_a_cluster_of_its_own() {
    let mut cluster = Cluster::start(3, "memory", FAST).await;
    let client = cluster.client();
    client.put(b"k", b"v").await.unwrap();
    let (peer, client_address) = cluster.add_joiner(4);
    client
        .member_add(4, &peer, &client_address, None, false)
        .await
        .unwrap();
    let index = cluster.nodes.len() - 1;

    // Neither --join nor --initial-cluster, on an empty data directory: it
    // stops at once and says what to pass.
    cluster.spawn_with(index, &[]);
    let status = cluster
        .wait_exit(4, 100)
        .await
        .expect("node 4 kept running without --join or --initial-cluster");
    assert!(!status.success());
    let log = cluster.log(4);
    assert!(
        log.contains("--join") && log.contains("--initial-cluster") && log.contains("is empty"),
        "{log}"
    );
    assert!(
        !cluster.node(4).dir.join("cluster-id").exists(),
        "node 4 must not have bootstrapped a cluster"
    );

    // With the initial cluster's list plus itself (a copy-paste mistake):
    // that is another cluster (other members, so another id); the members
    // refuse it, and it never acknowledges a write.
    let flags = initial(
        &cluster
            .nodes
            .iter()
            .map(|n| (n.id, n.peer.as_str(), n.client.as_str()))
            .collect::<Vec<_>>(),
    );
    cluster.spawn_with(index, &flags);
    for _ in 0..100 {
        if cluster.status(4).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cluster.status(4).await.is_some(),
        "node 4 does not serve its status:\n{}",
        cluster.log(4)
    );
    eventually("a member to refuse node 4's connections", 100, || async {
        let mut refused = 0.0;
        for id in 1..=3 {
            refused += cluster
                .metric(
                    id,
                    "metcd_network_peer_handshakes_refused_total{reason=\"other_cluster\"}",
                )
                .await
                .unwrap_or(0.0);
        }
        (refused > 0.0).then_some(())
    })
    .await;
    let alone = cluster.probe_of(4);
    for i in 0..10 {
        assert!(
            alone
                .put(format!("mine{i}").as_bytes(), b"x")
                .await
                .is_err(),
            "node 4 acknowledged a write as a cluster of its own"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = cluster.status(4).await.unwrap();
    assert_eq!(status.leader, 0, "node 4 found a leader: {status:?}");
    assert!(
        cluster.log(4).contains("refused the connection"),
        "{}",
        cluster.log(4)
    );
    // The real cluster is unharmed.
    put_retrying(&cluster.client(), "after", "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_on_each_others_peer_ports_do_not_exchange_messages() {
    let a = Cluster::start(3, "memory", FAST).await;
    let a3 = a.node(3);

    // Cluster B: members 11 and 12 of its own, and a member 3 whose peer
    // address is node 3 of cluster A.
    let tmp = tempfile::tempdir().unwrap();
    let node = |id: u64| Node {
        id,
        client: format!("127.0.0.1:{}", free_port()),
        peer: format!("127.0.0.1:{}", free_port()),
        grpc: format!("127.0.0.1:{}", free_port()),
        dir: tmp.path().join(format!("b{id}")),
        child: None,
        joined: false,
    };
    let mut b = Cluster {
        engine: "memory".into(),
        nodes: vec![node(11), node(12)],
        extra: FAST.iter().map(|s| s.to_string()).collect(),
        tmp,
    };
    let members: Vec<(u64, &str, &str)> = vec![
        (11, b.nodes[0].peer.as_str(), b.nodes[0].client.as_str()),
        (12, b.nodes[1].peer.as_str(), b.nodes[1].client.as_str()),
        (3, a3.peer.as_str(), a3.client.as_str()),
    ];
    let flags = initial(&members);
    b.spawn_with(0, &flags);
    b.spawn_with(1, &flags);
    let b_leader = b.wait_leader().await;
    put_retrying(&b.client_of(b_leader), "b-only", "b").await;
    put_retrying(&a.client(), "a-only", "a").await;

    // B's leader keeps trying to replicate to "member 3"; A's node 3
    // refuses every connection, so not one byte of B's reaches its raft.
    eventually("node 3 of A to refuse cluster B", 100, || async {
        let refused = a
            .metric(
                3,
                "metcd_network_peer_handshakes_refused_total{reason=\"other_cluster\"}",
            )
            .await?;
        (refused > 0.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for from in [11, 12] {
        let series = format!("etcd_network_peer_received_bytes_total{{From=\"{from}\"}}");
        assert_eq!(
            a.metric(3, &series).await,
            None,
            "node 3 of A received raft messages from member {from} of B"
        );
    }
    assert!(
        a.metric(3, "etcd_network_peer_received_bytes_total{From=\"1\"}")
            .await
            .is_some()
            || a.metric(3, "etcd_network_peer_received_bytes_total{From=\"2\"}")
                .await
                .is_some(),
        "node 3 of A hears from its own cluster"
    );
    wait_value(&a, 3, "a-only", "a").await;
    assert_eq!(
        a.probe_of(3).get_serializable(b"b-only").await.unwrap(),
        None
    );
    let status = a.status(3).await.unwrap();
    assert!([1, 2, 3].contains(&status.leader), "{status:?}");
    // B's nodes say plainly why "member 3" is unreachable.
    let log = b.log(b_leader);
    assert!(
        log.contains("refused the connection") && log.contains("mixed up"),
        "{log}"
    );
}
