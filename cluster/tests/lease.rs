//! etcd's leases on a 3-node metcd, through the `etcd-client` crate (and
//! curl's HTTP shortcut): grant, revoke, keep-alive, time-to-live, list,
//! keys attached by puts and deleted by a revoke at one revision, expiry on
//! the leader only, and leases kept across restarts and snapshot installs.
//!
//! The nodes run with the default timing (100 ms ticks, an election
//! timeout of 10 ticks, randomised up to twice that), so the minimum TTL is
//! ceil(1.5 × 1 s) = 2 s and a 2 s lease is the shortest there is.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, eventually, followers};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions,
    Txn, TxnOp,
};

/// The cluster's election timeout (`--election-ticks` × `--tick-ms`).
const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// The minimum TTL that follows from it.
const MIN_TTL: i64 = 2;
/// What a member logs when it proposes the revoke of an expired lease.
const EXPIRY_LINE: &str = "lease expired; revoking it";

async fn connect(cluster: &Cluster, ids: &[u64]) -> Client {
    let endpoints: Vec<String> = ids
        .iter()
        .map(|id| cluster.node(*id).grpc.clone())
        .collect();
    Client::connect(endpoints, None).await.unwrap()
}

/// The gRPC status of a failed call: (code, message).
fn refusal<T: std::fmt::Debug>(result: Result<T, etcd_client::Error>) -> (tonic::Code, String) {
    match result {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            (status.code(), status.message().to_string())
        }
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

fn with_lease(id: i64) -> Option<PutOptions> {
    Some(PutOptions::new().with_lease(id))
}

async fn exists(client: &mut Client, key: &str) -> bool {
    !client.get(key, None).await.unwrap().kvs().is_empty()
}

async fn keys_of(client: &mut Client, lease: i64) -> Vec<String> {
    let answer = client
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    answer
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_ttl_list_revoke_and_keys_go_at_one_revision() {
    let cluster = Cluster::start(3, "memory", &[]).await;
    let leader = cluster.wait_leader().await;
    // Through a follower: every call is forwarded or served there.
    let follower = followers(&cluster, leader)[0];
    let mut client = connect(&cluster, &[follower]).await;

    let granted = client.lease_grant(60, None).await.unwrap();
    let a = granted.id();
    assert!(a > 0, "a server-chosen id is positive: {a}");
    assert_eq!(granted.ttl(), 60);
    let header = granted.header().unwrap();
    assert_eq!(header.member_id(), follower);
    assert!(header.cluster_id() != 0 && header.raft_term() > 0);

    // A client-chosen id is honoured, once.
    let chosen = client
        .lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .unwrap();
    assert_eq!(chosen.id(), 0x1234);
    let again = client
        .lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await;
    assert_eq!(
        refusal(again),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: lease already exists".into()
        )
    );
    // TTLs: raised to the minimum, refused above etcd's maximum.
    let short = client.lease_grant(1, None).await.unwrap();
    assert_eq!(short.ttl(), MIN_TTL);
    assert_eq!(
        refusal(client.lease_grant(9_000_000_001, None).await),
        (
            tonic::Code::OutOfRange,
            "etcdserver: too large lease TTL".into()
        )
    );
    let listed: Vec<i64> = client
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    for id in [a, 0x1234, short.id()] {
        assert!(listed.contains(&id), "{id:x} missing from {listed:?}");
    }

    // Keys attach by put, move with a put naming another lease.
    client.put("a1", "v", with_lease(a)).await.unwrap();
    client.put("a2", "v", with_lease(a)).await.unwrap();
    client.put("a3", "v", with_lease(a)).await.unwrap();
    client.put("plain", "v", None).await.unwrap();
    client.put("a3", "moved", with_lease(0x1234)).await.unwrap();
    let ttl = client
        .lease_time_to_live(a, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 60);
    assert!((55..=60).contains(&ttl.ttl()), "remaining {}", ttl.ttl());
    assert_eq!(keys_of(&mut client, a).await, vec!["a1", "a2"]);
    assert_eq!(keys_of(&mut client, 0x1234).await, vec!["a3"]);
    let got = client.get("a1", None).await.unwrap();
    assert_eq!(got.kvs()[0].lease(), a);

    // A transaction compares on the lease.
    let same = Txn::new()
        .when([Compare::lease("a1", CompareOp::Equal, a)])
        .and_then([TxnOp::get("a1", None)]);
    assert!(client.txn(same).await.unwrap().succeeded());
    let other = Txn::new().when([Compare::lease("a1", CompareOp::Equal, 0x1234)]);
    assert!(!client.txn(other).await.unwrap().succeeded());

    // Revoke: every attached key at one revision, nothing else.
    let before = client
        .get("plain", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let revoked = client.lease_revoke(a).await.unwrap();
    let at = revoked.header().unwrap().revision();
    assert_eq!(at, before + 1, "both keys deleted at one new revision");
    for key in ["a1", "a2"] {
        let then = client
            .get(key, Some(GetOptions::new().with_revision(at - 1)))
            .await
            .unwrap();
        assert_eq!(then.kvs().len(), 1, "{key} existed before the revoke");
        assert!(!exists(&mut client, key).await, "{key} is gone");
    }
    assert!(exists(&mut client, "plain").await);
    assert!(exists(&mut client, "a3").await, "a3 moved to another lease");
    let ttl = client.lease_time_to_live(a, None).await.unwrap();
    assert_eq!(
        ttl.ttl(),
        -1,
        "etcd answers TTL -1 for a lease it does not know"
    );
    assert_eq!(
        refusal(client.lease_revoke(a).await),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_with_an_unknown_lease_is_refused_as_etcd_refuses_it() {
    let cluster = Cluster::start(3, "memory", &[]).await;
    let leader = cluster.wait_leader().await;
    let mut at_leader = connect(&cluster, &[leader]).await;
    let mut at_follower = connect(&cluster, &[followers(&cluster, leader)[0]]).await;
    let not_found = (
        tonic::Code::NotFound,
        "etcdserver: requested lease not found".to_string(),
    );
    for client in [&mut at_leader, &mut at_follower] {
        assert_eq!(
            refusal(client.put("k", "v", with_lease(77)).await),
            not_found
        );
        let txn = Txn::new().and_then([TxnOp::put("k", "v", with_lease(77))]);
        assert_eq!(refusal(client.txn(txn).await), not_found);
        // Only the branch taken is checked, as in etcd.
        let untaken = Txn::new()
            .when([Compare::version("k", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("k", "v", None)])
            .or_else([TxnOp::put("k", "v", with_lease(77))]);
        assert!(client.txn(untaken).await.unwrap().succeeded());
        client.delete("k", None).await.unwrap();
    }
    assert!(!exists(&mut at_leader, "k").await);
}

/// Keeps `lease` alive through `client` every 500 ms for `for_how_long`;
/// every answer must give the lease's full TTL.
async fn keep_alive_for(client: &mut Client, lease: i64, ttl: i64, for_how_long: Duration) {
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await.unwrap();
    let until = Instant::now() + for_how_long;
    while Instant::now() < until {
        keeper.keep_alive().await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .expect("a keep-alive answer within 5 s")
            .unwrap()
            .expect("the keep-alive stream stays open");
        assert_eq!((answer.id(), answer.ttl()), (lease, ttl));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls (serializable reads on `id`) until `key` is gone; how long after
/// `since` that was, or `None` if it was still there at `limit`.
async fn gone_after(
    cluster: &Cluster,
    id: u64,
    key: &str,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let probe = cluster.probe_of(id);
    while since.elapsed() < limit {
        if let Ok(None) = probe.get_serializable(key.as_bytes()).await {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_through_a_follower_hold_a_lease_and_it_expires_when_they_stop() {
    let cluster = Cluster::start(3, "memory", &[]).await;
    let leader = cluster.wait_leader().await;
    let follower = followers(&cluster, leader)[0];
    let mut client = connect(&cluster, &[follower]).await;
    let lease = client.lease_grant(MIN_TTL, None).await.unwrap().id();
    client
        .put("svc/a", "10.0.0.1", with_lease(lease))
        .await
        .unwrap();
    // Twice the TTL: only keep-alives (forwarded to the leader) keep it.
    keep_alive_for(
        &mut client,
        lease,
        MIN_TTL,
        Duration::from_secs(2 * MIN_TTL as u64),
    )
    .await;
    let stopped = Instant::now();
    assert!(
        exists(&mut client, "svc/a").await,
        "kept alive past its TTL"
    );
    let ttl = Duration::from_secs(MIN_TTL as u64);
    let gone = gone_after(&cluster, follower, "svc/a", stopped, ttl + ELECTION_TIMEOUT)
        .await
        .unwrap_or_else(|| {
            panic!(
                "the key outlived TTL + one election timeout\n{}",
                cluster.log(leader)
            )
        });
    // Not before its TTL, less the 500 ms since the last keep-alive and a
    // margin for the keep-alive's own trip.
    assert!(gone >= ttl - Duration::from_secs(1), "gone after {gone:?}");
    // Only the leader expired it: no follower even tried.
    for id in followers(&cluster, leader) {
        assert!(
            !cluster.log(id).contains(EXPIRY_LINE),
            "follower {id} expired a lease:\n{}",
            cluster.log(id)
        );
    }
    assert!(cluster.log(leader).contains(EXPIRY_LINE));
    let answer = client.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(answer.ttl(), -1, "the expired lease is gone");
    // A keep-alive for a lease that does not exist is answered TTL 0,
    // which the client reports as "lease not found".
    match client.lease_keep_alive(lease).await {
        Err(etcd_client::Error::LeaseKeepAliveError(message)) => {
            assert_eq!(message, "lease not found")
        }
        other => panic!("expected TTL 0 for an expired lease, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_expires_the_leases_of_a_killed_one() {
    let mut cluster = Cluster::start(3, "memory", &[]).await;
    let leader = cluster.wait_leader().await;
    let follower = followers(&cluster, leader)[0];
    let mut client = connect(&cluster, &[follower]).await;
    let lease = client.lease_grant(MIN_TTL, None).await.unwrap().id();
    client
        .put("svc/b", "10.0.0.2", with_lease(lease))
        .await
        .unwrap();
    keep_alive_for(&mut client, lease, MIN_TTL, Duration::from_secs(3)).await;
    // The keep-alives stop and the leader dies with the lease's deadline.
    let stopped = Instant::now();
    cluster.kill(leader);
    // The new leader is elected within two election timeouts (randomised
    // between one and two) and gives the lease a full TTL from then
    // (etcd's promote), so the key may live that long, and no longer.
    let ttl = Duration::from_secs(MIN_TTL as u64);
    let bound = ttl + 2 * ELECTION_TIMEOUT + Duration::from_millis(500);
    let gone = gone_after(&cluster, follower, "svc/b", stopped, bound)
        .await
        .unwrap_or_else(|| {
            panic!(
                "the key outlived the bound {bound:?} after the leader was killed\n{}",
                cluster.log(follower)
            )
        });
    assert!(gone >= ttl - Duration::from_secs(1), "gone after {gone:?}");
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_hold_a_lease_across_a_leader_change() {
    let mut cluster = Cluster::start(3, "memory", &[]).await;
    let leader = cluster.wait_leader().await;
    let follower = followers(&cluster, leader)[0];
    let mut client = connect(&cluster, &[follower]).await;
    let lease = client.lease_grant(MIN_TTL, None).await.unwrap().id();
    client
        .put("svc/c", "10.0.0.4", with_lease(lease))
        .await
        .unwrap();
    keep_alive_for(&mut client, lease, MIN_TTL, Duration::from_secs(2)).await;
    cluster.kill(leader);
    // Keep-alives go on (answered once a new leader is known; the client
    // retries a refused one): the new leader must not expire the lease, as
    // it would if it used deadlines from before it led.
    let until = Instant::now() + Duration::from_secs(3 * MIN_TTL as u64);
    let mut renewed_after_the_kill = 0;
    while Instant::now() < until {
        if let Ok((mut keeper, mut answers)) = client.lease_keep_alive(lease).await
            && keeper.keep_alive().await.is_ok()
            && let Ok(Ok(Some(answer))) =
                tokio::time::timeout(Duration::from_secs(2), answers.message()).await
        {
            assert_eq!(answer.ttl(), MIN_TTL, "the lease was lost: {answer:?}");
            renewed_after_the_kill += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        renewed_after_the_kill > 3,
        "{renewed_after_the_kill} keep-alives answered"
    );
    assert!(
        exists(&mut client, "svc/c").await,
        "the key outlived the leader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_restarts_and_snapshot_installs() {
    // Snapshots every 20 entries, few kept: a follower that misses a few
    // dozen writes catches up through a snapshot.
    let args = ["--snapshot-every", "20", "--keep-entries", "5"];
    let mut cluster = Cluster::start(3, "redb", &args).await;
    let leader = cluster.wait_leader().await;
    let lagging = followers(&cluster, leader)[0];
    let others: Vec<u64> = (1..=3).filter(|id| *id != lagging).collect();
    let mut client = connect(&cluster, &others).await;
    let early = client.lease_grant(600, None).await.unwrap().id();
    client.put("early", "v", with_lease(early)).await.unwrap();
    common::wait_value(&cluster, lagging, "early", "v").await;
    cluster.kill(lagging);
    // While it is down: a new lease with two keys, and enough writes for
    // the log to be compacted past it.
    let late = client.lease_grant(600, None).await.unwrap().id();
    client.put("late1", "v", with_lease(late)).await.unwrap();
    client.put("late2", "v", with_lease(late)).await.unwrap();
    for i in 0..60 {
        client.put(format!("filler{i}"), "v", None).await.unwrap();
    }
    let leader = cluster.wait_leader().await;
    eventually("the leader's log to be compacted", 100, || async {
        let status = cluster.status(leader).await?;
        (status.first_log_index > 30).then_some(())
    })
    .await;
    cluster.restart(lagging);
    common::wait_value(&cluster, lagging, "filler59", "v").await;
    let status = cluster.status(lagging).await.unwrap();
    assert!(
        status.snapshot_index > 20,
        "caught up by a snapshot: {status:?}"
    );
    // The lagging node's own lessor (rebuilt after the install) now serves
    // time-to-live: make it the leader.
    let mut at_lagging = connect(&cluster, &[lagging]).await;
    eventually("leadership to move to the lagging node", 50, || {
        let mut to_leader = client.clone();
        async move {
            to_leader.move_leader(lagging).await.ok()?;
            Some(())
        }
    })
    .await;
    eventually("the lagging node to lead", 50, || async {
        (cluster.wait_leader().await == lagging).then_some(())
    })
    .await;
    assert_eq!(keys_of(&mut at_lagging, late).await, vec!["late1", "late2"]);
    assert_eq!(keys_of(&mut at_lagging, early).await, vec!["early"]);

    // Every node restarted: leases and attachments come back from the
    // engine (records and the keys' lease), not from memory.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster.wait_leader().await;
    let mut client = connect(&cluster, &[1, 2, 3]).await;
    let ttl = eventually("a time-to-live answer after the restart", 50, || {
        let mut client = client.clone();
        async move {
            client
                .lease_time_to_live(late, Some(LeaseTimeToLiveOptions::new().with_keys()))
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(ttl.granted_ttl(), 600);
    assert!(
        ttl.ttl() > 500,
        "a new leader gives the full TTL: {}",
        ttl.ttl()
    );
    assert_eq!(ttl.keys().len(), 2);
    client.lease_revoke(late).await.unwrap();
    assert!(!exists(&mut client, "late1").await);
    assert!(!exists(&mut client, "late2").await);
    assert!(exists(&mut client, "early").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_puts_a_key_with_a_ttl() {
    let cluster = Cluster::start(3, "memory", &[]).await;
    let leader = cluster.wait_leader().await;
    let http = cluster.probe_of(leader);
    let address = cluster.node(leader).client.clone();
    let put = |path: &'static str| {
        let http = http.clone();
        let address = address.clone();
        async move {
            let response = http
                .request_to(
                    &address,
                    hyper::Method::PUT,
                    path,
                    bytes::Bytes::from_static(b"10.0.0.3:80"),
                )
                .await
                .unwrap();
            (
                response.status.as_u16(),
                String::from_utf8_lossy(&response.body).into_owned(),
            )
        }
    };
    let (status, body) = put("/routes/web?ttl=60").await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let lease = answer["lease"].as_i64().unwrap();
    assert_eq!(answer["ttl"], 60);
    assert_eq!(answer["lease_hex"], format!("{lease:x}"));
    let mut client = connect(&cluster, &[leader]).await;
    assert_eq!(keys_of(&mut client, lease).await, vec!["routes/web"]);
    let got = client.get("routes/web", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"10.0.0.3:80");
    // A TTL below the minimum is raised to it, and the route expires.
    let (status, body) = put("/routes/short?ttl=1").await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ttl"], MIN_TTL);
    let since = Instant::now();
    let bound = Duration::from_secs(MIN_TTL as u64) + ELECTION_TIMEOUT;
    assert!(
        gone_after(&cluster, leader, "routes/short", since, bound)
            .await
            .is_some(),
        "the route outlived its TTL"
    );
    for bad in [
        "/routes/x?ttl=abc",
        "/routes/x?ttl=0",
        "/routes/x?ttl=9000000001",
        "/routes/x?tll=5",
    ] {
        let (status, body) = put(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("ttl"), "{bad}: {body}");
    }
}
