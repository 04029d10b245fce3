//! A node removed from the cluster while it was down: when it restarts
//! with its old data it does not carry on as a member; its peers answer its
//! handshake with "removed" and it stops with its own exit status.

mod common;

use common::{Cluster, eventually, put_retrying};

const FAST: &[&str] = &["--tick-ms", "50"];
/// `cluster::raft::identity::REMOVED_EXIT_STATUS`.
const REMOVED_EXIT_STATUS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_while_down_stops_after_restart() {
    let mut cluster = Cluster::start(3, "redb", FAST).await;
    put_retrying(&cluster.client(), "before", "removal").await;
    let leader = cluster.wait_leader().await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(victim);

    // The two others are a quorum of the new configuration too.
    let client = cluster.client();
    eventually("the removal of the stopped node", 100, || async {
        client.member_remove(victim).await.ok()
    })
    .await;
    put_retrying(&client, "after", "removal").await;

    cluster.restart(victim);
    let status = cluster.wait_exit(victim, 150).await.unwrap_or_else(|| {
        panic!(
            "node {victim} was removed while down and is still running after its restart:\n{}",
            cluster.log(victim)
        )
    });
    assert_eq!(
        status.code(),
        Some(REMOVED_EXIT_STATUS),
        "{}",
        cluster.log(victim)
    );
    let log = cluster.log(victim);
    assert!(log.contains("was removed from cluster"), "{log}");
    assert!(log.contains("exit status 3"), "{log}");

    // The others carry on, and still know it as removed.
    put_retrying(&cluster.client(), "still", "fine").await;
    let members = cluster.client().members().await.unwrap();
    assert!(members.iter().all(|m| m.id != victim), "{members:?}");
    // Its id is not reused: a stale node with it would pass for the new one.
    let node = cluster.node(victim);
    let again = cluster
        .client()
        .member_add(victim, &node.peer, &node.client, None, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        again.contains("409") && again.contains("not reused"),
        "{again}"
    );
}
