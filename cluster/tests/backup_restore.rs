//! Backup and restore: a snapshot saved through etcd's Maintenance API from
//! a 3-node cluster under writes, restored with `metcdctl snapshot restore`
//! into the data directories of a new 3-node cluster, which then holds
//! every key exactly as the old cluster had it at the backup's revision.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Cluster;
use etcd_client::{Client, GetOptions};

async fn connect(endpoint: &str) -> Client {
    for _ in 0..50 {
        if let Ok(client) = Client::connect([endpoint], None).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {endpoint}");
}

/// Every key and value at revision `at` (0: the current one).
async fn all_at(client: &mut Client, at: i64) -> Vec<(Vec<u8>, Vec<u8>, i64, i64, i64)> {
    let options = GetOptions::new().with_all_keys().with_revision(at);
    client
        .get("", Some(options))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_writes_restores_into_a_new_cluster() {
    let old = Cluster::start(3, "redb", &[]).await;
    let leader = old.wait_leader().await;
    let mut client = connect(&old.node(leader).grpc).await;
    for i in 0..200 {
        client
            .put(format!("key{:03}", i % 50), format!("v{i}"), None)
            .await
            .unwrap();
    }
    client.delete("key007", None).await.unwrap();

    // Writes keep going while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut client = connect(&old.node(leader).grpc).await;
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client
                    .put(format!("busy{:02}", i % 20), format!("w{i}"), None)
                    .await
                    .unwrap();
                i += 1;
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let follower = common::followers(&old, leader)[0];
    let mut saver = connect(&old.node(follower).grpc).await;
    let mut stream = saver.snapshot().await.unwrap();
    let mut backup = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        backup.extend_from_slice(chunk.blob());
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0, "the writer wrote during the backup");
    // etcd's frame: a multiple of 512 bytes, then a SHA-256.
    assert_eq!((backup.len() - 32) % 512, 0, "{} bytes", backup.len());

    let file = old.tmp.path().join("backup.db");
    std::fs::write(&file, &backup).unwrap();
    let restore = |_: u64, dir: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_metcdctl"))
            .args(["snapshot", "restore"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir)
            .args(["--engine", "redb"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let new = Cluster::start_prepared(3, "redb", &[], &[], restore).await;
    let new_leader = new.wait_leader().await;
    let mut restored = connect(&new.node(new_leader).grpc).await;
    let at = restored
        .get("key000", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert!(at > 200, "the backup's revision: {at}");
    // Every key as the old cluster had it at that revision: values and
    // create/mod revisions and versions alike.
    let want = all_at(&mut client, at).await;
    let got = all_at(&mut restored, 0).await;
    assert!(want.len() >= 49, "{} keys", want.len());
    assert_eq!(got, want);
    assert!(
        !got.iter().any(|(k, ..)| k == b"key007"),
        "a deleted key stays deleted"
    );
    // Every member of the new cluster holds the same, and takes writes.
    for node in &new.nodes {
        let mut member = connect(&node.grpc).await;
        assert_eq!(all_at(&mut member, 0).await, want, "member {}", node.id);
    }
    let next = restored.put("after", "restore", None).await.unwrap();
    assert_eq!(next.header().unwrap().revision(), at + 1);
    // A damaged backup is refused, by its hash.
    let mut damaged = backup.clone();
    damaged[100] ^= 1;
    let bad = old.tmp.path().join("damaged.db");
    std::fs::write(&bad, &damaged).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metcdctl"))
        .args(["snapshot", "restore"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(old.tmp.path().join("never"))
        .args(["--engine", "redb"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SHA-256"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
