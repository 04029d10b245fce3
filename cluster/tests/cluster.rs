//! End-to-end tests: real `metcd` processes on loopback.
//!
//! Replication, leader failure, full-cluster crash and restart run for every
//! engine; the rest run on one engine each.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, eventually, put_retrying, wait_absent, wait_value};
use hyper::{Method, StatusCode};

/// Fast elections keep the suite short: 50 ms ticks, 10-20 ticks to elect.
const FAST: &[&str] = &["--tick-ms", "50"];
/// Fast ticks, a snapshot every 20 entries and only 5 kept behind it, so a
/// node that misses a few dozen writes must catch up through a snapshot.
const SNAPSHOT_OFTEN: &[&str] = &[
    "--tick-ms",
    "50",
    "--snapshot-every",
    "20",
    "--keep-entries",
    "5",
];

async fn replication_reaches_every_node(engine: &str) {
    let cluster = Cluster::start(3, engine, FAST).await;
    let client = cluster.client();
    for i in 0..30 {
        client
            .put(format!("key{i}").as_bytes(), format!("value{i}").as_bytes())
            .await
            .unwrap();
    }
    client.delete(b"key0").await.unwrap();
    for id in 1..=3 {
        // The delete is the last write: once a node no longer has key0 it
        // has applied everything (a follower applies in log order, but may
        // lag the leader's answer, so waiting for key29 alone is a race).
        wait_absent(&cluster, id, "key0").await;
        let node = cluster.client_of(id);
        for i in 1..30 {
            let got = node
                .get_serializable(format!("key{i}").as_bytes())
                .await
                .unwrap();
            assert_eq!(
                got,
                Some(format!("value{i}").into_bytes()),
                "node {id} key{i}"
            );
        }
        assert_eq!(
            node.get_serializable(b"key0").await.unwrap(),
            None,
            "node {id}"
        );
    }
}

async fn leader_killed_new_leader_keeps_every_write(engine: &str) {
    let mut cluster = Cluster::start(3, engine, FAST).await;
    let client = cluster.client();
    for i in 0..20 {
        client
            .put(format!("a{i}").as_bytes(), b"before")
            .await
            .unwrap();
    }
    let old_leader = cluster.wait_leader().await;
    cluster.kill(old_leader);
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, old_leader);
    let client = cluster.client();
    for i in 0..20 {
        put_retrying(&client, &format!("b{i}"), "after").await;
    }
    for i in 0..20 {
        assert_eq!(
            client.get(format!("a{i}").as_bytes()).await.unwrap(),
            Some(b"before".to_vec())
        );
        assert_eq!(
            client.get(format!("b{i}").as_bytes()).await.unwrap(),
            Some(b"after".to_vec())
        );
    }
    // The old leader comes back as a follower and catches up.
    cluster.restart(old_leader);
    wait_value(&cluster, old_leader, "b19", "after").await;
    wait_value(&cluster, old_leader, "a0", "before").await;
}

async fn full_cluster_crash_loses_nothing_acknowledged(engine: &str) {
    let mut cluster = Cluster::start(3, engine, FAST).await;
    let client = cluster.client();
    // Concurrent writers: acknowledged writes share fsyncs.
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..25 {
                let key = format!("w{w}-{i}");
                client.put(key.as_bytes(), key.as_bytes()).await.unwrap();
                acknowledged.push(key);
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster.wait_leader().await;
    let client = cluster.client().with_timeout(Duration::from_secs(2));
    for key in &acknowledged {
        let got = eventually(&format!("reading {key}"), 50, || async {
            client.get(key.as_bytes()).await.ok()
        })
        .await;
        assert_eq!(got, Some(key.clone().into_bytes()), "{key} lost");
    }
    // And every node has every key locally.
    for id in 1..=3 {
        let last = acknowledged.last().unwrap();
        wait_value(&cluster, id, last, last).await;
    }
}

macro_rules! per_engine {
    ($($engine:ident),*) => {
        $(
            mod $engine {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn replication_reaches_every_node() {
                    super::replication_reaches_every_node(stringify!($engine)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn leader_killed_new_leader_keeps_every_write() {
                    super::leader_killed_new_leader_keeps_every_write(stringify!($engine)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn full_cluster_crash_loses_nothing_acknowledged() {
                    super::full_cluster_crash_loses_nothing_acknowledged(stringify!($engine)).await;
                }
            }
        )*
    };
}

per_engine!(memory, redb, bitcask, sled, rocksdb, fjall);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_through_a_snapshot() {
    let mut cluster = Cluster::start(3, "redb", SNAPSHOT_OFTEN).await;
    let leader = cluster.wait_leader().await;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(lagging);
    let client = cluster.client();
    for i in 0..150 {
        put_retrying(&client, &format!("s{i}"), &format!("v{i}")).await;
    }
    let leader_status = cluster.status(cluster.wait_leader().await).await.unwrap();
    assert!(
        leader_status.first_log_index > 100,
        "the leader's log should be compacted: {leader_status:?}"
    );
    cluster.restart(lagging);
    wait_value(&cluster, lagging, "s149", "v149").await;
    let status = cluster.status(lagging).await.unwrap();
    assert!(
        status.snapshot_index >= 100,
        "node {lagging} should have installed a snapshot: {status:?}\n{}",
        cluster.log(lagging)
    );
    let node = cluster.client_of(lagging);
    for i in 0..150 {
        assert_eq!(
            node.get_serializable(format!("s{i}").as_bytes())
                .await
                .unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_on_a_follower_sees_the_latest_write() {
    let cluster = Cluster::start(3, "memory", FAST).await;
    let leader = cluster.wait_leader().await;
    let leader_client = cluster.client_of(leader);
    let followers: Vec<_> = (1..=3).filter(|id| *id != leader).collect();
    for round in 0..20 {
        let value = format!("v{round}");
        leader_client
            .put(b"counter", value.as_bytes())
            .await
            .unwrap();
        for follower in &followers {
            let node = &cluster.node(*follower).client;
            let response = cluster
                .client_of(*follower)
                .request_to(node, Method::GET, "/counter", Bytes::new())
                .await
                .unwrap();
            assert_eq!(response.status, StatusCode::OK);
            assert_eq!(
                response.body,
                value.as_bytes(),
                "follower {follower} round {round}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_voter_then_remove_a_node() {
    let mut cluster = Cluster::start(3, "memory", FAST).await;
    let client = cluster.client();
    client.put(b"before", b"join").await.unwrap();
    let (peer, client_address) = cluster.add_joiner(4);
    client
        .member_add(4, &peer, &client_address, None, false)
        .await
        .unwrap();
    let index = cluster.nodes.len() - 1;
    cluster.spawn(index);
    wait_value(&cluster, 4, "before", "join").await;
    let status = cluster.status(4).await.unwrap();
    assert_eq!(status.voters, vec![1, 2, 3, 4]);

    // Remove a follower that is not node 4: it shuts itself down.
    let leader = cluster.wait_leader().await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    client.member_remove(victim).await.unwrap();
    let victim_index = cluster.nodes.iter().position(|n| n.id == victim).unwrap();
    eventually("the removed node to exit", 100, || {
        let exited = cluster.nodes[victim_index]
            .child
            .as_mut()
            .map(|c| c.try_wait().ok().flatten().is_some());
        async move { exited.filter(|e| *e) }
    })
    .await;
    cluster.nodes[victim_index].child = None;
    let members = cluster.client().members().await.unwrap();
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    assert!(!ids.contains(&victim), "{ids:?}");
    assert!(ids.contains(&4), "{ids:?}");
    let client = cluster.client();
    put_retrying(&client, "after", "remove").await;
    wait_value(&cluster, 4, "after", "remove").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_catches_up_through_a_snapshot_and_is_promoted() {
    // The log is compacted long before node 4 arrives: it must start from a
    // snapshot (bitcask export, imported into bitcask).
    let mut cluster = Cluster::start(3, "bitcask", SNAPSHOT_OFTEN).await;
    let client = cluster.client();
    for i in 0..50 {
        client.put(format!("l{i}").as_bytes(), b"x").await.unwrap();
    }
    let (peer, client_address) = cluster.add_joiner(4);
    client
        .member_add(4, &peer, &client_address, None, true)
        .await
        .unwrap();
    // A second change while... nothing is pending: adding 4 again is refused.
    let again = client
        .member_add(4, &peer, &client_address, None, true)
        .await;
    assert!(again.is_err(), "adding an existing member must fail");
    let index = cluster.nodes.len() - 1;
    cluster.spawn(index);
    wait_value(&cluster, 4, "l49", "x").await;
    let status = cluster.status(4).await.unwrap();
    assert_eq!(status.learners, vec![4], "{status:?}");
    assert_eq!(status.role, "learner");
    assert!(
        status.snapshot_index >= 20,
        "node 4 should start from a snapshot: {status:?}"
    );
    // As in etcd 3.4, a learner serves Status and serializable reads only;
    // everything else is Unavailable "etcdserver: rpc not supported for
    // learner", so a client balancer moves on to a voting member.
    let mut learner = etcd_client::Client::connect([cluster.node(4).grpc.clone()], None)
        .await
        .unwrap();
    let refused = |err: etcd_client::Error| match err {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
            assert_eq!(s.message(), "etcdserver: rpc not supported for learner");
        }
        other => panic!("expected a gRPC status, got {other:?}"),
    };
    let local = learner
        .get(
            "l49",
            Some(etcd_client::GetOptions::new().with_serializable()),
        )
        .await
        .unwrap();
    assert_eq!(local.kvs()[0].value(), b"x");
    learner.status().await.unwrap();
    refused(learner.get("l49", None).await.unwrap_err());
    refused(learner.put("k", "v", None).await.unwrap_err());
    refused(learner.member_list().await.unwrap_err());
    refused(learner.lease_grant(10, None).await.unwrap_err());
    match learner.watch("k", None).await {
        Err(err) => refused(err),
        Ok(mut stream) => refused(stream.message().await.unwrap_err()),
    }
    // etcd allows one learner at a time.
    let mut voter = etcd_client::Client::connect([cluster.node(1).grpc.clone()], None)
        .await
        .unwrap();
    let second = voter
        .member_add(
            ["http://127.0.0.1:1"],
            Some(etcd_client::MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap_err();
    match second {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
            assert_eq!(
                s.message(),
                "etcdserver: too many learner members in cluster"
            );
        }
        other => panic!("expected a gRPC status, got {other:?}"),
    }
    client.member_promote(4).await.unwrap();
    eventually("node 4 to become a voter everywhere", 100, || async {
        let status = cluster.status(4).await?;
        (status.voters == vec![1, 2, 3, 4] && status.learners.is_empty()).then_some(())
    })
    .await;
    // Promoting a voter is refused with a message.
    let err = client.member_promote(4).await.unwrap_err().to_string();
    assert!(err.contains("not a learner"), "{err}");
    // Promoted, the member serves everything.
    learner.get("l49", None).await.unwrap();
}

fn raw_http(address: &str, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_errors() {
    let mut cluster = Cluster::start(
        3,
        "memory",
        &[
            "--tick-ms",
            "50",
            "--body-timeout-ms",
            "500",
            "--request-timeout-ms",
            "1500",
        ],
    )
    .await;
    let leader = cluster.wait_leader().await;
    let client = cluster.client_of(leader);
    let address = cluster.node(leader).client.clone();
    let json_error = |response: &cluster::client::Response| {
        let value: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert!(
            value["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{value}"
        );
    };

    for path in ["/", "/kv/"] {
        let response = client
            .request_to(&address, Method::PUT, path, Bytes::from("v"))
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path}");
        json_error(&response);
    }
    let big = Bytes::from(vec![b'x'; cluster::api::MAX_VALUE_BYTES + 1]);
    let response = client
        .request_to(&address, Method::PUT, "/big", big)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
    json_error(&response);
    let exactly = Bytes::from(vec![b'x'; cluster::api::MAX_VALUE_BYTES]);
    let response = client
        .request_to(&address, Method::PUT, "/big", exactly)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::NO_CONTENT);

    let response = client
        .request_to(&address, Method::GET, "/missing", Bytes::new())
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    json_error(&response);
    let response = client
        .request_to(
            &address,
            Method::GET,
            "/x?consistency=sometimes",
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    json_error(&response);
    let response = client
        .request_to(&address, Method::PATCH, "/x", Bytes::new())
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    json_error(&response);

    // Reserved names stay reachable as keys through /kv/.
    client
        .request_to(&address, Method::PUT, "/kv/-/status", Bytes::from("mine"))
        .await
        .unwrap();
    let response = client
        .request_to(&address, Method::GET, "/kv/-/status", Bytes::new())
        .await
        .unwrap();
    assert_eq!(response.body, "mine");

    // A client that promises a body and never sends it is cut off.
    let slow = tokio::task::spawn_blocking(move || {
        raw_http(
            &address,
            b"PUT /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        )
    })
    .await
    .unwrap();
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    assert!(slow.contains("\"error\""), "{slow}");

    // HTTP sent to a peer port by mistake is turned away, not read as a frame.
    let peer = cluster.node(leader).peer.clone();
    let answer = tokio::task::spawn_blocking(move || {
        raw_http(&peer, b"GET /-/status HTTP/1.1\r\nHost: x\r\n\r\n")
    })
    .await
    .unwrap();
    assert!(answer.is_empty(), "{answer}");

    // Quorum lost: a bounded 503 with Retry-After, never a hang.
    let survivor = leader;
    for id in 1..=3 {
        if id != survivor {
            cluster.kill(id);
        }
    }
    let address = cluster.node(survivor).client.clone();
    for (method, path) in [(Method::PUT, "/k"), (Method::GET, "/k")] {
        // The client's own deadline (8 s) turns a hang into a failure.
        let response = client
            .request_to(&address, method.clone(), path, Bytes::from("v"))
            .await
            .unwrap();
        assert_eq!(
            response.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}"
        );
        assert!(response.headers.contains_key("retry-after"));
        json_error(&response);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_engine_rebuilds_from_snapshot_and_wal_after_a_full_crash() {
    let mut cluster = Cluster::start(3, "memory", SNAPSHOT_OFTEN).await;
    let client = cluster.client();
    for i in 0..100 {
        client
            .put(format!("m{i}").as_bytes(), format!("{i}").as_bytes())
            .await
            .unwrap();
    }
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster.wait_leader().await;
    for id in 1..=3 {
        wait_value(&cluster, id, "m99", "99").await;
        let node = cluster.client_of(id);
        for i in 0..100 {
            assert_eq!(
                node.get_serializable(format!("m{i}").as_bytes())
                    .await
                    .unwrap(),
                Some(format!("{i}").into_bytes()),
                "node {id} key m{i}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_wal_record_stops_the_node_with_a_clear_error() {
    let mut cluster = Cluster::start(1, "memory", FAST).await;
    let client = cluster.client();
    for i in 0..10 {
        client.put(format!("c{i}").as_bytes(), b"v").await.unwrap();
    }
    cluster.kill(1);
    let wal_dir = cluster.node(1).dir.join("wal");
    let segment = std::fs::read_dir(&wal_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&segment).unwrap();
    // Inside the first record (a bootstrap entry), with many records after it.
    bytes[20] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();
    cluster.restart(1);
    let index = 0;
    let status = eventually("the node to refuse to start", 100, || {
        let exited = cluster.nodes[index]
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        async move { exited }
    })
    .await;
    cluster.nodes[index].child = None;
    assert!(!status.success());
    let log = cluster.log(1);
    assert!(log.contains("WAL corrupt"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metcdctl_puts_gets_and_lists_members_through_any_endpoint() {
    let cluster = Cluster::start(3, "memory", FAST).await;
    let endpoints: Vec<String> = (1..=3).map(|id| cluster.node(id).client.clone()).collect();
    let endpoints = endpoints.join(",");
    let run = move |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_metcdctl"))
            .arg("--endpoints")
            .arg(&endpoints)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let put = run(&["put", "tool", "works"]);
        let get = run(&["get", "tool"]);
        let missing = run(&["get", "nothing-here"]);
        let members = run(&["member", "list"]);
        (put, get, missing, members)
    })
    .await
    .unwrap();
    let (put, get, missing, members) = outcome;
    assert!(put.0, "{put:?}");
    assert_eq!(get.1, "works\n", "{get:?}");
    assert!(
        !missing.0 && missing.2.contains("key not found"),
        "{missing:?}"
    );
    assert!(members.0 && members.1.contains("(leader)"), "{members:?}");
}

/// etcd's MemberAdd knows only the peer address; the member publishes where
/// its clients reach it once it runs (through Raft), and `member list` on
/// every node then shows it, as etcd's does after the member starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_by_its_peer_address_publishes_its_client_addresses() {
    let mut cluster = Cluster::start(3, "memory", &["--tick-ms", "50"]).await;
    cluster.wait_leader().await;
    let (peer, _client) = cluster.add_joiner(4);
    let mut etcd = etcd_client::Client::connect([cluster.node(1).grpc.clone()], None)
        .await
        .unwrap();
    let added = etcd
        .member_add(
            [format!("http://{peer}")],
            Some(etcd_client::MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap();
    let member = added.member().unwrap();
    assert_eq!(member.id(), 4);
    assert!(member.client_urls().is_empty(), "{member:?}");
    let index = cluster.nodes.len() - 1;
    cluster.spawn(index);
    let wanted = vec![format!("http://{}", cluster.node(4).grpc)];
    let endpoints: Vec<String> = (1..=3).map(|id| cluster.node(id).grpc.clone()).collect();
    for endpoint in endpoints {
        let wanted = wanted.clone();
        eventually("node 4's client address in every member list", 100, || {
            let endpoint = endpoint.clone();
            let wanted = wanted.clone();
            async move {
                let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
                let list = client.member_list().await.ok()?;
                list.members()
                    .iter()
                    .find(|m| m.id() == 4)
                    .filter(|m| m.client_urls() == wanted.as_slice())
                    .map(|_| ())
            }
        })
        .await;
    }
}
