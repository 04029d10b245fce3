//! Kubernetes' way of using etcd, against a 3-node metcd whose leader is
//! killed in the middle: optimistic concurrency on one object.
//!
//! Kubernetes never locks. It reads an object with its `mod_revision` (the
//! object's `resourceVersion`), changes it, and writes it back in a
//! transaction that succeeds only if `mod_revision` is still the same;
//! if another writer got there first, it reads again and retries. Here
//! four clients, each on a different member (followers forward writes),
//! append their own tokens to one object that way, while the leader is
//! SIGKILLed and restarted. A write whose answer is lost (the member died,
//! a timeout) is not retried blindly: the client reads the object again,
//! and its token is either there (the write was applied) or the client
//! tries again, and the compare on `mod_revision` makes sure at most one
//! of the attempts can ever apply.
//!
//! No update may be lost or doubled: at the end, every token whose write
//! was acknowledged is in the object exactly once, and no token appears
//! twice. (A crash test that kills the process: it checks the cluster's
//! logic under a leader change, not fsync.)

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};

const OBJECT: &str = "/registry/pods/default/web";

async fn connect(endpoints: &[String]) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3));
    for _ in 0..50 {
        if let Ok(client) = Client::connect(endpoints, Some(options.clone())).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {endpoints:?}");
}

/// The object's tokens and its mod_revision (0 when absent).
async fn read(client: &mut Client) -> Result<(Vec<String>, i64), etcd_client::Error> {
    let response = client.get(OBJECT, None).await?;
    Ok(match response.kvs().first() {
        Some(kv) => (
            String::from_utf8_lossy(kv.value())
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            kv.mod_revision(),
        ),
        None => (Vec::new(), 0),
    })
}

/// One client: appends `count` tokens, each by read-modify-CAS. Returns
/// the tokens it knows were applied.
async fn appender(
    id: usize,
    endpoints: Vec<String>,
    count: usize,
    deadline: Instant,
) -> Vec<String> {
    let mut client = connect(&endpoints).await;
    let mut applied = Vec::new();
    for n in 0..count {
        let token = format!("c{id}-{n}");
        loop {
            assert!(
                Instant::now() < deadline,
                "client {id} could not append {token} in time"
            );
            let Ok((tokens, mod_revision)) = read(&mut client).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if tokens.contains(&token) {
                // An earlier attempt whose answer was lost was applied.
                applied.push(token.clone());
                break;
            }
            let mut next = tokens.clone();
            next.push(token.clone());
            // Create-if-absent for the first write, update-if-unchanged
            // after: Kubernetes' two compares.
            let guard = if mod_revision == 0 {
                Compare::create_revision(OBJECT, CompareOp::Equal, 0)
            } else {
                Compare::mod_revision(OBJECT, CompareOp::Equal, mod_revision)
            };
            let txn = Txn::new()
                .when([guard])
                .and_then([TxnOp::put(OBJECT, next.join(","), None)]);
            match client.txn(txn).await {
                Ok(response) if response.succeeded() => {
                    applied.push(token.clone());
                    break;
                }
                // Someone else wrote first: read again.
                Ok(_) => {}
                // Outcome unknown or refused: read again before deciding.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_update_is_lost_or_doubled_across_a_leader_kill() {
    let mut cluster = Cluster::start(3, "redb", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let grpc: Vec<String> = cluster.nodes.iter().map(|n| n.grpc.clone()).collect();
    let clients: Vec<_> = (0..4)
        .map(|id| {
            // Each client prefers a different member, and knows the others.
            let mut endpoints = grpc.clone();
            endpoints.rotate_left(id % grpc.len());
            tokio::spawn(appender(id, endpoints, 12, deadline))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let leader = cluster.wait_leader().await;
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.restart(leader);
    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    // The restarted member may still be starting: retry the read (bounded).
    let mut reader = connect(&grpc).await;
    let mut last = None;
    let mut tokens = None;
    for _ in 0..100 {
        match read(&mut reader).await {
            Ok((read, _)) => {
                tokens = Some(read);
                break;
            }
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tokens = tokens.unwrap_or_else(|| panic!("the final read failed: {last:?}"));
    let mut sorted = tokens.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        tokens.len(),
        "a token was applied twice: {tokens:?}"
    );
    for token in &acknowledged {
        assert!(
            tokens.contains(token),
            "lost update: {token} missing from {tokens:?}"
        );
    }
    assert_eq!(tokens.len(), 4 * 12, "{tokens:?}");
}
