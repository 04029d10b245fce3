//! Installing a snapshot from the leader: isolated from client reads, and
//! atomic across a crash (issue 9, item 3).
//!
//! A follower that was down receives a snapshot of a few thousand keys.
//! The test-only hook `METCD_TEST_ONLY_INSTALL_PAUSE_MS` (read once at
//! start) makes the install pause after its first data batch, with the
//! engine cleared and partly rewritten: the window in which a read could
//! see a half-installed engine, and in which a crash leaves one behind.

mod common;

use common::{Cluster, eventually, put_many, put_retrying};

const ENGINE: &str = "redb";
/// Snapshots often, few entries kept: a node that misses a few hundred
/// writes catches up through a snapshot.
const ARGS: &[&str] = &[
    "--tick-ms",
    "50",
    "--snapshot-every",
    "200",
    "--keep-entries",
    "20",
];
/// More than one install batch (1024 pairs), so the pause falls inside.
const KEYS: usize = 1500;
const PAUSE_LINE: &str = "test-only pause in the middle of a snapshot install";

/// A 3-node cluster where one follower missed `KEYS` writes and a key that
/// sorts after all of them, `zz-stable`, exists from before it went down.
async fn lagging_follower() -> (Cluster, u64) {
    let mut cluster = Cluster::start(3, ENGINE, ARGS).await;
    let client = cluster.client();
    put_retrying(&client, "zz-stable", "here-before-and-after").await;
    let leader = cluster.wait_leader().await;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    common::wait_value(&cluster, lagging, "zz-stable", "here-before-and-after").await;
    cluster.kill(lagging);
    put_many(&cluster.client(), "k", KEYS, 16).await;
    let leader = cluster.wait_leader().await;
    eventually(
        "the leader's log to be compacted past the lagging node",
        200,
        || async {
            let status = cluster.status(leader).await?;
            (status.first_log_index > 1000).then_some(())
        },
    )
    .await;
    (cluster, lagging)
}

async fn wait_for_pause(cluster: &Cluster, id: u64, nth: usize) {
    for _ in 0..300 {
        if cluster.log(id).matches(PAUSE_LINE).count() >= nth {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "node {id}'s install never reached its test pause\n{}",
        cluster.log(id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_a_snapshot_install_never_see_it_half_done() {
    let (mut cluster, lagging) = lagging_follower().await;
    cluster.restart_with_env(lagging, &[("METCD_TEST_ONLY_INSTALL_PAUSE_MS", "2500")]);
    wait_for_pause(&cluster, lagging, 1).await;
    // The engine is cleared and only partly rewritten now. A read must see
    // the state before the install or after it; zz-stable is in both.
    let node = cluster.client_of(lagging);
    let got = node.get_serializable(b"zz-stable").await;
    assert_eq!(
        got.as_ref().ok().cloned().flatten(),
        Some(b"here-before-and-after".to_vec()),
        "a read during the install saw {got:?}\n{}",
        cluster.log(lagging)
    );
    let status = cluster.status(lagging).await.unwrap();
    assert!(status.snapshot_index > 1000, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_a_snapshot_install_restarts_with_the_full_state() {
    let (mut cluster, lagging) = lagging_follower().await;
    cluster.restart_with_env(lagging, &[("METCD_TEST_ONLY_INSTALL_PAUSE_MS", "5000")]);
    wait_for_pause(&cluster, lagging, 1).await;
    cluster.kill(lagging);
    // Restart without the hook: the node must find its install unfinished
    // and redo it from the snapshot file, not trust what the engine holds.
    cluster.restart_with_env(lagging, &[]);
    let leader = cluster.wait_leader().await;
    let leader_status = cluster.status(leader).await.unwrap();
    let status = eventually(
        "the restarted node to apply the leader's log",
        200,
        || async {
            let status = cluster.status(lagging).await?;
            (status.applied_index >= leader_status.applied_index).then_some(status)
        },
    )
    .await;
    let log = cluster.log(lagging);
    assert!(status.snapshot_index > 1000, "{status:?}");
    let node = cluster.client_of(lagging);
    for i in 0..KEYS {
        let key = format!("k{i:05}");
        assert_eq!(
            node.get_serializable(key.as_bytes()).await.unwrap(),
            Some(format!("v{i}").into_bytes()),
            "{key} after the restart\n{log}"
        );
    }
    assert_eq!(
        node.get(b"zz-stable").await.unwrap(),
        Some(b"here-before-and-after".to_vec())
    );
    assert!(
        log.contains("interrupted_install=true"),
        "the restart did not see the interrupted install:\n{log}"
    );
    // And it keeps applying: a new write reaches it.
    put_retrying(&cluster.client(), "after", "crash").await;
    common::wait_value(&cluster, lagging, "after", "crash").await;
}
