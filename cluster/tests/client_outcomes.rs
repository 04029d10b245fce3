//! Issue 9, items 2 and 7, with real processes: a write whose outcome is
//! unknown is reported as such and never sent twice; a panic on the Raft
//! thread makes `metcd` exit non-zero.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::client::ClientError;
use common::{Cluster, Paused, followers, free_port, put_retrying};

/// The leader's followers are stopped, so a put is proposed but cannot
/// commit; the leader answers "unknown" after its short request timeout.
/// The client must not retry it (the old client retried every 503 and
/// proposed it again every 200 ms). Once the followers resume, the one
/// proposal commits: it was applied although the client got a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_an_unknown_outcome_is_not_retried() {
    let cluster = Cluster::start(
        3,
        "memory",
        // Long election timeout: the leader keeps its role while its
        // followers are stopped for the length of the test.
        &["--request-timeout-ms", "300", "--election-ticks", "60"],
    )
    .await;
    let leader = cluster.wait_leader().await;
    put_retrying(&cluster.client(), "warm", "up").await;
    let before = cluster.status(leader).await.unwrap().last_log_index;

    let paused = Paused::pause(&cluster, followers(&cluster, leader));
    let client = cluster.client_of(leader).with_retry(Duration::from_secs(2));
    let result = client.put(b"k", b"once").await;
    assert!(
        matches!(result, Err(ClientError::Unknown(_))),
        "expected an unknown outcome, got {result:?}"
    );
    let after = cluster.status(leader).await.unwrap().last_log_index;
    assert_eq!(
        after - before,
        1,
        "the write was proposed {} times",
        after - before
    );

    // metcdctl says so plainly and exits with its own status.
    let output = Command::new(env!("CARGO_BIN_EXE_metcdctl"))
        .args(["--endpoints", &cluster.node(leader).client])
        .args(["put", "k2", "v2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "metcdctl: {stderr}");
    assert!(stderr.contains("outcome unknown"), "metcdctl: {stderr}");
    paused.resume();

    let reader = cluster.client_of(leader);
    let value = common::eventually("the write to commit after the resume", 100, || async {
        reader.get(b"k").await.ok().flatten()
    })
    .await;
    assert_eq!(value, b"once");
}

/// A panic on the Raft thread (triggered by the test-only variable) makes
/// the process exit with a failure status and log the panic message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_raft_thread_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let client_address = format!("127.0.0.1:{}", free_port());
    let peer_address = format!("127.0.0.1:{}", free_port());
    // Entry 1 is the bootstrap member, 2 the leader's no-op, 3 the put.
    let mut child = Command::new(env!("CARGO_BIN_EXE_metcd"))
        .args(["--id", "1", "--engine", "memory"])
        .arg("--data-dir")
        .arg(dir.path().join("n1"))
        .args(["--listen-client", &client_address])
        .args(["--listen-peer", &peer_address])
        .args(["--initial-cluster", &format!("1={peer_address}")])
        .args(["--initial-cluster-clients", &format!("1={client_address}")])
        .env("METCD_TEST_PANIC_AT_INDEX", "3")
        .env("RUST_LOG", "info,raft=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = cluster::Client::new(&[client_address.as_str()])
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let _ = common::eventually("the node to elect itself", 100, || async {
        client.status().await.ok().filter(|s| s.leader == 1)
    })
    .await;
    let _ = client.put(b"k", b"v").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("metcd did not exit after its raft thread panicked");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        !status.success(),
        "metcd exited {status} after a panic:\n{log}"
    );
    assert!(
        log.contains("METCD_TEST_PANIC_AT_INDEX=3 reached"),
        "the panic message is not in the log:\n{log}"
    );
}
