//! Snapshots are built off the Raft thread and streamed to followers
//! (issue 9, item 5).
//!
//! The test-only hook `METCD_TEST_ONLY_EXPORT_PAGE_DELAY_MS` (read once at
//! start) makes the leader's snapshot exports pause after each page of 1024
//! pairs, so a store of a few thousand keys takes longer to export than the
//! longest election timeout: if the export ran on the Raft thread,
//! heartbeats would stop and the followers, whose exports are fast, would
//! elect a new leader at every snapshot.

mod common;

use common::{Cluster, eventually, put_many, wait_value};

/// 100 ms ticks: elections after 1 to 2 s without a heartbeat. A snapshot
/// every 500 entries, 50 kept behind it.
const ARGS: &[&str] = &[
    "--tick-ms",
    "100",
    "--snapshot-every",
    "500",
    "--keep-entries",
    "50",
];
/// 1.5 s after each full page: an export of more than 2048 pairs has two
/// full pages and takes over 3 s, longer than the longest election timeout.
const SLOW_EXPORT: &[(&str, &str)] = &[("METCD_TEST_ONLY_EXPORT_PAGE_DELAY_MS", "1500")];
const KEYS: usize = 2400;
/// A snapshot at or above this index holds over 2048 pairs.
const BIG: u64 = 2100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_snapshots_under_write_load_keep_the_leader_and_catch_up_a_follower() {
    let mut cluster = Cluster::start_with_env(3, "redb", ARGS, SLOW_EXPORT).await;
    let leader = cluster.wait_leader().await;
    // Only the leader's exports are slow: the followers restart without the
    // hook, so their Raft threads would keep ticking while the leader's was
    // stuck in an export (were it run there).
    for follower in (1..=3).filter(|id| *id != leader) {
        cluster.kill(follower);
        cluster.restart_with_env(follower, &[]);
        eventually("the follower to rejoin", 100, || async {
            let status = cluster.status(follower).await?;
            (status.leader == leader).then_some(())
        })
        .await;
    }
    let term = cluster.status(leader).await.unwrap().term;

    // All three up: if a snapshot stopped the leader's heartbeats for longer
    // than an election timeout, the followers would elect a new leader.
    put_many(&cluster.client(), "k", KEYS, 16).await;
    let load = {
        let client = cluster.client();
        tokio::spawn(async move { put_many(&client, "more", 300, 4).await })
    };
    let built = eventually("a snapshot covering the store", 300, || async {
        let status = cluster.status(leader).await?;
        (status.snapshot_index >= BIG).then_some(status)
    })
    .await;
    load.await.unwrap();
    let after = cluster.status(leader).await.unwrap();
    assert_eq!(
        (after.term, after.leader),
        (term, leader),
        "leadership changed while snapshots were built: {built:?} -> {after:?}\n{}",
        cluster.log(leader)
    );

    // The test means something only if a snapshot took longer than the
    // longest election timeout (20 ticks of 100 ms).
    let log = cluster.log(leader);
    let slowest = log
        .lines()
        .filter(|line| line.contains("snapshot taken"))
        .filter_map(|line| {
            line.split("millis=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max();
    assert!(
        slowest.is_some_and(|ms| ms > 2000),
        "no snapshot took longer than an election timeout ({slowest:?} ms)\n{log}"
    );

    // A follower that misses more than the log keeps catches up through a
    // snapshot streamed from the leader's file.
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    let missed_from = cluster.status(lagging).await.unwrap().applied_index;
    cluster.kill(lagging);
    put_many(&cluster.client(), "late", 700, 8).await;
    eventually(
        "the leader's log to be compacted past the stopped follower",
        300,
        || async {
            let status = cluster.status(leader).await?;
            (status.first_log_index > missed_from + 1).then_some(())
        },
    )
    .await;
    cluster.restart_with_env(lagging, &[]);
    wait_value(&cluster, lagging, "late00699", "v699").await;
    let status = cluster.status(lagging).await.unwrap();
    assert!(status.snapshot_index > missed_from, "{status:?}");
    assert!(
        cluster.log(lagging).contains("snapshot received"),
        "{}",
        cluster.log(lagging)
    );
    let node = cluster.client_of(lagging);
    for i in (0..KEYS).step_by(97) {
        assert_eq!(
            node.get_serializable(format!("k{i:05}").as_bytes())
                .await
                .unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
    let end = cluster.status(leader).await.unwrap();
    assert_eq!((end.term, end.leader), (term, leader), "{end:?}");
}
