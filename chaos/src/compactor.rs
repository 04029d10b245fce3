//! Compaction during a run, and the compaction error checked when due.
//!
//! etcd's history is compacted while clients watch it: Kubernetes' API
//! server compacts every five minutes whatever its watchers are doing. A
//! chaos run does the same, faster. While the nemesis works, [`compact`]
//! compacts the store twice a second through a random node, up to the
//! lowest revision every per-node watcher has already received. That bound
//! is what keeps the watch check exact: a watcher resumes from the revision
//! after its last one, which is then never compacted, so any cancellation it
//! receives is still a violation, and every revision must still arrive with
//! the right `prev_kv` (the latest version of a key at or below the
//! compacted revision must survive compaction for that). It exercises what
//! a quiet test cannot: compaction entries applied by killed and restarted
//! nodes, carried in snapshots, and racing unsynced watchers' catch-up.
//!
//! After the run, [`probe`] compacts at the final revision and asks every
//! node for a watch that starts one revision below it: each must refuse it
//! with `compact_revision` set to the compacted revision (etcd's "required
//! revision has been compacted"), and accept a watch from the compacted
//! revision itself. A node that keeps serving the compacted history, or
//! refuses a revision it still holds, is a violation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, WatchOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Time between two compactions during a run.
const EVERY: Duration = Duration::from_millis(500);
/// How long a node may take, after healing, to apply the final compaction.
const PROBE_WAIT: Duration = Duration::from_secs(10);

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2))
}

/// Compacts up to the lowest revision in `seen` (one entry per watcher)
/// until `stop`; returns the revisions whose compaction was acknowledged.
pub async fn compact(
    nodes: Vec<SocketAddr>,
    seen: Vec<Arc<AtomicI64>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc0_4ac7);
    let mut done = Vec::new();
    let mut compacted = 1i64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(EVERY).await;
        let floor = seen
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        if floor <= compacted {
            continue;
        }
        let node = nodes[rng.random_range(0..nodes.len())];
        let Ok(Ok(mut client)) = tokio::time::timeout(
            Duration::from_secs(1),
            Client::connect([format!("http://{node}")], Some(options())),
        )
        .await
        else {
            continue;
        };
        // An error or a lost answer leaves the compaction maybe applied;
        // nothing depends on knowing, as the floor keeps every watcher safe.
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), client.compact(floor, None)).await
        {
            compacted = floor;
            done.push(floor);
        }
    }
    done
}

/// What a watch from `start` on `node` was answered.
enum Answer {
    /// Canceled with this compaction revision.
    Refused(i64),
    /// Created and not canceled (events may have come).
    Served,
    /// No answer (connection refused, deadline).
    Nothing,
}

async fn watch_from(node: SocketAddr, start: i64) -> Answer {
    let Ok(Ok(mut client)) = tokio::time::timeout(
        Duration::from_secs(1),
        Client::connect([format!("http://{node}")], Some(options())),
    )
    .await
    else {
        return Answer::Nothing;
    };
    let request = WatchOptions::new()
        .with_range(vec![0u8])
        .with_start_revision(start);
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_secs(1),
        client.watch(vec![0u8], Some(request)),
    )
    .await
    else {
        return Answer::Nothing;
    };
    // etcd answers "created", then the cancellation; a served watch
    // sends its events (or nothing) after "created".
    let until = Instant::now() + Duration::from_millis(250);
    let mut answered = false;
    while let Ok(Ok(Some(response))) = tokio::time::timeout_at(until.into(), stream.message()).await
    {
        answered = true;
        if response.canceled() {
            return Answer::Refused(response.compact_revision());
        }
    }
    if answered {
        Answer::Served
    } else {
        Answer::Nothing
    }
}

/// Compacts at `revision` (the store's final one, nothing written after),
/// then checks every node refuses a watch from `revision - 1` with that
/// compaction revision and serves one from `revision`. Returns violations.
pub async fn probe(nodes: &[SocketAddr], revision: i64) -> Vec<String> {
    let mut out = Vec::new();
    if revision < 3 {
        return out;
    }
    let mut acknowledged = false;
    for node in nodes {
        if let Ok(Ok(mut client)) = tokio::time::timeout(
            Duration::from_secs(1),
            Client::connect([format!("http://{node}")], Some(options())),
        )
        .await
        {
            match tokio::time::timeout(Duration::from_secs(3), client.compact(revision, None)).await
            {
                Ok(Ok(_)) => {
                    acknowledged = true;
                    break;
                }
                // Already compacted at this revision: a previous attempt
                // whose answer was lost did apply.
                Ok(Err(e))
                    if e.to_string()
                        .contains("required revision has been compacted") =>
                {
                    acknowledged = true;
                    break;
                }
                _ => {}
            }
        }
    }
    if !acknowledged {
        out.push(format!(
            "compaction: no node acknowledged the final compaction at revision {revision}"
        ));
        return out;
    }
    for node in nodes {
        let deadline = Instant::now() + PROBE_WAIT;
        let mut last = "no answer".to_string();
        let refused = loop {
            match watch_from(*node, revision - 1).await {
                Answer::Refused(at) if at == revision => break true,
                Answer::Refused(at) => last = format!("refused with compact_revision {at}"),
                Answer::Served => last = "served the compacted revision".into(),
                Answer::Nothing => last = "no answer".into(),
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if !refused {
            out.push(format!(
                "compaction: {node}, {:?} after compacting at {revision}, a watch from {}: {last} (expected refused with compact_revision {revision})",
                PROBE_WAIT,
                revision - 1
            ));
            continue;
        }
        match watch_from(*node, revision).await {
            Answer::Served => {}
            Answer::Refused(at) => out.push(format!(
                "compaction: {node} refused a watch from the compacted revision {revision} itself (compact_revision {at})"
            )),
            Answer::Nothing => out.push(format!(
                "compaction: {node} did not answer a watch from the compacted revision {revision}"
            )),
        }
    }
    out
}
