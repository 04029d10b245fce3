//! etcd's Lock and Election services through the `etcd-client` crate, the
//! same checks against a real etcd 3.4 and against metcd (3 members each).
//!
//! What is checked: a lock has one holder and passes to the next waiter in
//! create-revision order when the holder unlocks or its lease expires; a
//! lease that does not exist is refused with etcd's code and message;
//! election: leader, campaign, observe, proclaim, resign and the errors
//! for "no leader" and "not leader" with the code and message etcd sends.
//! The mutual-exclusion stress under leader kills is in
//! `lock_under_faults`, metcd only (it kills members).

mod common;

use std::time::{Duration, Instant};

use common::etcd::{Running, Target};
use etcd_client::{Client, LeaderKey, LockOptions, ProclaimOptions, ResignOptions};

fn targets() -> Vec<Running> {
    vec![Running::etcd(3), Running::metcd(3, "redb")]
}

async fn connect(target: &Target, member: usize) -> Client {
    Client::connect(target.endpoint(member), None)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", target.kind))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// (code, message) of a failed call.
fn status_of<T: std::fmt::Debug>(result: Result<T, etcd_client::Error>) -> (tonic::Code, String) {
    match result {
        Err(etcd_client::Error::GRpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

#[test]
fn a_lock_has_one_holder_and_passes_on_in_order() {
    for running in targets() {
        let target = &running.target;
        runtime().block_on(async {
            // Contenders on different members: the waiter's watch is
            // served by a follower in metcd.
            let mut a = connect(target, 0).await;
            let mut b = connect(target, 1).await;
            let lease_a = a.lease_grant(30, None).await.unwrap().id();
            let lease_b = b.lease_grant(30, None).await.unwrap().id();
            let held = a
                .lock("jobs", Some(LockOptions::new().with_lease(lease_a)))
                .await
                .unwrap();
            let key_a = held.key().to_vec();
            assert_eq!(
                key_a,
                format!("jobs/{lease_a:x}").into_bytes(),
                "{}",
                target.kind
            );

            let waiter = tokio::spawn(async move {
                let held = b
                    .lock("jobs", Some(LockOptions::new().with_lease(lease_b)))
                    .await
                    .unwrap();
                (held.key().to_vec(), Instant::now())
            });
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(
                !waiter.is_finished(),
                "{}: the second contender got a held lock",
                target.kind
            );
            let released = Instant::now();
            a.unlock(key_a.clone()).await.unwrap();
            let (key_b, acquired) = tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .unwrap_or_else(|_| panic!("{}: the waiter never got the lock", target.kind))
                .unwrap();
            assert!(acquired >= released);
            assert_eq!(key_b, format!("jobs/{lease_b:x}").into_bytes());
            // The fencing token grows from one holder to the next.
            let token = |kvs: &[etcd_client::KeyValue]| kvs[0].create_revision();
            let now = a.get(key_b.clone(), None).await.unwrap();
            assert!(token(now.kvs()) > 0);
        });
    }
}

#[test]
fn a_lock_passes_on_when_the_holders_lease_expires() {
    for running in targets() {
        let target = &running.target;
        runtime().block_on(async {
            let mut a = connect(target, 0).await;
            let mut b = connect(target, 2).await;
            // Nobody keeps lease A alive: the holder "crashed".
            let lease_a = a.lease_grant(2, None).await.unwrap().id();
            let lease_b = b.lease_grant(30, None).await.unwrap().id();
            a.lock("crash", Some(LockOptions::new().with_lease(lease_a)))
                .await
                .unwrap();
            let started = Instant::now();
            let held = tokio::time::timeout(
                Duration::from_secs(15),
                b.lock("crash", Some(LockOptions::new().with_lease(lease_b))),
            )
            .await
            .unwrap_or_else(|_| panic!("{}: the lock never passed on", target.kind))
            .unwrap();
            assert_eq!(held.key(), format!("crash/{lease_b:x}").as_bytes());
            assert!(
                started.elapsed() >= Duration::from_millis(1000),
                "{}: passed on before the holder's lease could expire",
                target.kind
            );
        });
    }
}

#[test]
fn lock_errors_match_etcd() {
    let mut seen = Vec::new();
    for running in targets() {
        let target = &running.target;
        let got = runtime().block_on(async {
            let mut client = connect(target, 0).await;
            status_of(
                client
                    .lock("x", Some(LockOptions::new().with_lease(0x7e57)))
                    .await,
            )
        });
        assert_eq!(
            got.1, "etcdserver: requested lease not found",
            "{}",
            target.kind
        );
        seen.push((target.kind, got));
    }
    eprintln!("lock errors: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].1 == w[1].1),
        "etcd and metcd answer differently: {seen:?}"
    );
}

#[test]
fn election_campaign_observe_proclaim_resign() {
    let mut errors = Vec::new();
    for running in targets() {
        let target = &running.target;
        let kind = target.kind;
        let found = runtime().block_on(async {
            let mut a = connect(target, 0).await;
            let mut b = connect(target, 1).await;
            let mut watcher = connect(target, 2).await;
            let no_leader = status_of(a.leader("svc").await);

            let lease_a = a.lease_grant(30, None).await.unwrap().id();
            let lease_b = b.lease_grant(30, None).await.unwrap().id();
            let won = a.campaign("svc", "a-1", lease_a).await.unwrap();
            let leader_a = won.leader().unwrap().clone();
            assert_eq!(
                leader_a.key(),
                format!("svc/{lease_a:x}").as_bytes(),
                "{kind}"
            );
            assert_eq!(leader_a.lease(), lease_a);
            let now = a.leader("svc").await.unwrap();
            assert_eq!(now.kv().unwrap().value(), b"a-1", "{kind}");

            let mut observed = watcher.observe("svc").await.unwrap();
            let first = observed.message().await.unwrap().unwrap();
            assert_eq!(first.kv().unwrap().value(), b"a-1", "{kind}");

            a.proclaim(
                "a-2",
                Some(ProclaimOptions::new().with_leader(leader_a.clone())),
            )
            .await
            .unwrap();
            let second = observed.message().await.unwrap().unwrap();
            assert_eq!(second.kv().unwrap().value(), b"a-2", "{kind}");

            // B waits behind A, then leads once A resigns.
            let campaign_b = tokio::spawn(async move {
                let won = b.campaign("svc", "b-1", lease_b).await.unwrap();
                (b, won.leader().unwrap().clone())
            });
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(!campaign_b.is_finished(), "{kind}: B led while A did");
            a.resign(Some(ResignOptions::new().with_leader(leader_a.clone())))
                .await
                .unwrap();
            let (_b, leader_b) = tokio::time::timeout(Duration::from_secs(10), campaign_b)
                .await
                .unwrap_or_else(|_| panic!("{kind}: B never led"))
                .unwrap();
            assert!(leader_b.rev() > leader_a.rev(), "{kind}");
            let third = tokio::time::timeout(Duration::from_secs(10), observed.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(third.kv().unwrap().value(), b"b-1", "{kind}");

            // A no longer leads: proclaiming with its old key is refused.
            let stale = status_of(
                a.proclaim("a-3", Some(ProclaimOptions::new().with_leader(leader_a)))
                    .await,
            );
            let fake = LeaderKey::new()
                .with_name("svc")
                .with_key("svc/0")
                .with_rev(1);
            let forged = status_of(
                a.proclaim("x", Some(ProclaimOptions::new().with_leader(fake)))
                    .await,
            );
            (no_leader, stale, forged)
        });
        errors.push((kind, found));
    }
    eprintln!("election errors: {errors:?}");
    assert!(
        errors.windows(2).all(|w| w[0].1 == w[1].1),
        "etcd and metcd answer differently: {errors:?}"
    );
}

/// What the lock protects: who is inside, and every hold in order.
#[derive(Default)]
struct Resource {
    inside: Option<usize>,
    /// (client, fencing token) of every hold, in the order they began.
    holds: Vec<(usize, i64)>,
    overlaps: Vec<String>,
}

async fn connect_any(endpoints: &[String]) -> Client {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(10));
    for _ in 0..100 {
        if let Ok(client) = Client::connect(endpoints, Some(options.clone())).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {endpoints:?}");
}

/// Keeps `lease` alive once a second through whichever member answers,
/// reconnecting after errors (the member it used may have been killed).
async fn keep_alive(endpoints: Vec<String>, lease: i64) {
    loop {
        let mut client = connect_any(&endpoints).await;
        if let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await {
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                    Ok(Ok(Some(_))) => {}
                    _ => break,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One client: `cycles` lock/unlock cycles; retries what failed (a lost
/// answer is retried with the same lease, so the same key: idempotent).
async fn contender(
    id: usize,
    endpoints: Vec<String>,
    cycles: usize,
    resource: std::sync::Arc<std::sync::Mutex<Resource>>,
    deadline: Instant,
) {
    let mut client = connect_any(&endpoints).await;
    let lease = loop {
        match client.lease_grant(10, None).await {
            Ok(granted) => break granted.id(),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let keeper = tokio::spawn(keep_alive(endpoints.clone(), lease));
    for _ in 0..cycles {
        let (key, token) = loop {
            assert!(Instant::now() < deadline, "client {id} starved");
            match client
                .lock("stress", Some(LockOptions::new().with_lease(lease)))
                .await
            {
                Ok(held) => {
                    let key = held.key().to_vec();
                    // The fencing token: the key's create revision.
                    match client.get(key.clone(), None).await {
                        Ok(found) if !found.kvs().is_empty() => {
                            break (key, found.kvs()[0].create_revision());
                        }
                        _ => continue,
                    }
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    client = connect_any(&endpoints).await;
                }
            }
        };
        {
            let mut r = resource.lock().unwrap();
            if let Some(other) = r.inside {
                let message = format!(
                    "client {id} (token {token}) entered while client {other} held the lock"
                );
                r.overlaps.push(message);
            }
            r.inside = Some(id);
            r.holds.push((id, token));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        resource.lock().unwrap().inside = None;
        loop {
            assert!(Instant::now() < deadline, "client {id} could not unlock");
            match client.unlock(key.clone()).await {
                Ok(_) => break,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    client = connect_any(&endpoints).await;
                }
            }
        }
    }
    keeper.abort();
}

/// 8 clients on 3 members, 1,000 lock/unlock cycles in all, the leader
/// killed (SIGKILL) and restarted twice meanwhile: the lock never has two
/// holders at once, and the fencing tokens grow from each hold to the
/// next. (A crash test that kills processes: it checks the recipes and the
/// lease and watch logic across leader changes, not fsync.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_under_faults() {
    let mut cluster = common::Cluster::start(3, "redb", &[]).await;
    let grpc: Vec<String> = cluster.nodes.iter().map(|n| n.grpc.clone()).collect();
    let resource = std::sync::Arc::new(std::sync::Mutex::new(Resource::default()));
    let deadline = Instant::now() + Duration::from_secs(240);
    let clients: Vec<_> = (0..8)
        .map(|id| {
            let mut endpoints = grpc.clone();
            endpoints.rotate_left(id % grpc.len());
            tokio::spawn(contender(id, endpoints, 125, resource.clone(), deadline))
        })
        .collect();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let leader = cluster.wait_leader().await;
        cluster.kill(leader);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.restart(leader);
    }
    for client in clients {
        client.await.unwrap();
    }
    let r = resource.lock().unwrap();
    assert!(
        r.overlaps.is_empty(),
        "two holders at once: {:?}",
        r.overlaps
    );
    assert_eq!(r.holds.len(), 1000);
    for pair in r.holds.windows(2) {
        assert!(
            pair[1].1 > pair[0].1,
            "fencing tokens must grow from one hold to the next: {pair:?}"
        );
    }
}
