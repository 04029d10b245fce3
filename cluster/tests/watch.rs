//! etcd's Watch on a real 3-node metcd, through the `etcd-client` crate and
//! through the HTTP API's line stream.
//!
//! What each test proves:
//!
//! * `replay_then_live_under_concurrent_writers_loses_and_repeats_nothing`:
//!   a watcher created at an old revision gets history and then live
//!   events while 4 writers (puts, deletes, 3-put transactions, through
//!   all members) run: revisions strictly increase across responses, no
//!   revision is split across responses, and the events equal, revision
//!   by revision, what the writers were acknowledged; replaying them gives
//!   the Range at the last revision.
//! * `a_slow_watcher_neither_blocks_writes_nor_misses_events`: a watcher
//!   that reads nothing while 20,000 puts are acknowledged does not hold
//!   them up, and then receives every one of them, in order.
//! * `a_watcher_left_behind_by_compaction_is_canceled_after_what_it_was_sent`:
//!   a watcher set aside, then overtaken by a compaction, receives what it
//!   had been sent, gapless, and then `canceled` with the compaction
//!   revision.
//! * `watch_features_match_etcd`: a transaction's puts in one response,
//!   prev_kv, the NOPUT/NODELETE filters, cancel, progress requests and
//!   periodic progress notifications, client-chosen and duplicate ids, a
//!   compacted start revision, fragmentation, and a watch on a follower.
//! * `a_follower_that_installs_a_snapshot_keeps_its_watchers_whole`: a
//!   follower paused while the leader compacts its log catches up through
//!   a snapshot; a watcher on it still gets every event, once, in order.
//! * `http_watch_streams_json_lines`: `GET /<key>?watch=true&rev=N`
//!   replays and streams one JSON line per change, with prev_kv and
//!   prefixes, and ends with the compaction error when due.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::Cluster;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchFilterType,
    WatchOptions, WatchStream,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn connect(endpoint: &str) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(15));
    for _ in 0..50 {
        if let Ok(client) = Client::connect([endpoint], Some(options.clone())).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {endpoint}");
}

/// One event as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    revision: i64,
    put: bool,
    key: String,
    value: String,
    prev: Option<String>,
}

/// One response: header revision, watch id, flags, events.
#[derive(Debug, Clone)]
struct Reply {
    revision: i64,
    watch_id: i64,
    created: bool,
    canceled: bool,
    compact_revision: i64,
    cancel_reason: String,
    fragment: bool,
    events: Vec<Seen>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The next response within `wait`; `None` if none came.
async fn next(stream: &mut WatchStream, wait: Duration) -> Option<Reply> {
    let response = tokio::time::timeout(wait, stream.message())
        .await
        .ok()?
        .expect("the watch stream failed")?;
    Some(Reply {
        revision: response.header().map_or(0, |h| h.revision()),
        watch_id: response.watch_id(),
        created: response.created(),
        canceled: response.canceled(),
        compact_revision: response.compact_revision(),
        cancel_reason: response.cancel_reason().to_string(),
        fragment: response.0.fragment,
        events: response
            .events()
            .iter()
            .map(|e| {
                let kv = e.kv().expect("an event has a kv");
                Seen {
                    revision: kv.mod_revision(),
                    put: e.event_type() == EventType::Put,
                    key: text(kv.key()),
                    value: text(kv.value()),
                    prev: e.prev_kv().map(|p| text(p.value())),
                }
            })
            .collect(),
    })
}

/// The created response, which must come first.
async fn created(stream: &mut WatchStream) -> Reply {
    let reply = next(stream, Duration::from_secs(10))
        .await
        .expect("no created response");
    assert!(reply.created, "first response is not `created`: {reply:?}");
    reply
}

/// Responses until the events reach `through` (or `wait` passes).
async fn until(stream: &mut WatchStream, through: i64, wait: Duration) -> Vec<Reply> {
    let deadline = Instant::now() + wait;
    let mut replies: Vec<Reply> = Vec::new();
    loop {
        let last = replies
            .iter()
            .flat_map(|r| r.events.iter())
            .map(|e| e.revision)
            .max()
            .unwrap_or(0);
        if last >= through {
            return replies;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match next(stream, left).await {
            Some(reply) => replies.push(reply),
            None => panic!(
                "events stopped at revision {last}, expected up to {through}; got {} responses",
                replies.len()
            ),
        }
    }
}

/// Checks the order rules and returns the events by revision: revisions
/// strictly increase across responses, one revision's events are in one
/// response, and a header revision is at least its events'.
fn by_revision(replies: &[Reply]) -> BTreeMap<i64, Vec<Seen>> {
    let mut out: BTreeMap<i64, Vec<Seen>> = BTreeMap::new();
    let mut last = 0;
    for reply in replies {
        let mut in_this: Vec<i64> = Vec::new();
        for event in &reply.events {
            assert!(
                event.revision > last || in_this.last() == Some(&event.revision),
                "revision {} after {last}: out of order, or one revision split over two responses",
                event.revision
            );
            assert!(reply.revision >= event.revision, "{reply:?}");
            if in_this.last() != Some(&event.revision) {
                in_this.push(event.revision);
            }
            last = event.revision;
            out.entry(event.revision).or_default().push(event.clone());
        }
    }
    out
}

/// Checks that `seen` holds exactly the revisions `from..=through`, naming
/// the first missing and extra ones if not.
fn assert_every_revision(seen: &BTreeMap<i64, Vec<Seen>>, from: i64, through: i64) {
    let missing: Vec<i64> = (from..=through)
        .filter(|r| !seen.contains_key(r))
        .take(10)
        .collect();
    let extra: Vec<i64> = seen
        .keys()
        .copied()
        .filter(|r| *r < from || *r > through)
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "revisions {from}..={through}: missing (first 10) {missing:?}, extra {extra:?}"
    );
}

/// What one writer did at one revision.
type Acked = BTreeMap<i64, Vec<Seen>>;

fn put_seen(revision: i64, key: &str, value: &str) -> Seen {
    Seen {
        revision,
        put: true,
        key: key.into(),
        value: value.into(),
        prev: None,
    }
}

/// A writer: puts, deletes of keys it wrote, and 3-put transactions, each
/// recorded with the revision it was acknowledged at.
async fn writer(endpoint: String, id: usize, ops: usize) -> Acked {
    let mut client = connect(&endpoint).await;
    let mut acked = Acked::new();
    for i in 0..ops {
        let key = format!("w/{id}/{}", i % 7);
        match i % 10 {
            3 => {
                let keys: Vec<String> = (0..3).map(|j| format!("w/{id}/t{j}")).collect();
                let value = format!("t{i}");
                let txn = Txn::new().and_then(
                    keys.iter()
                        .map(|k| TxnOp::put(k.as_str(), value.as_str(), None))
                        .collect::<Vec<_>>(),
                );
                let response = client.txn(txn).await.unwrap();
                let revision = response.header().unwrap().revision();
                acked.insert(
                    revision,
                    keys.iter().map(|k| put_seen(revision, k, &value)).collect(),
                );
            }
            7 => {
                let response = client.delete(key.as_str(), None).await.unwrap();
                if response.deleted() > 0 {
                    let revision = response.header().unwrap().revision();
                    acked.insert(
                        revision,
                        vec![Seen {
                            revision,
                            put: false,
                            key,
                            value: String::new(),
                            prev: None,
                        }],
                    );
                }
            }
            _ => {
                let value = format!("v{id}-{i}");
                let response = client
                    .put(key.as_str(), value.as_str(), None)
                    .await
                    .unwrap();
                let revision = response.header().unwrap().revision();
                acked.insert(revision, vec![put_seen(revision, &key, &value)]);
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_then_live_under_concurrent_writers_loses_and_repeats_nothing() {
    let cluster = Cluster::start(3, "redb", &[]).await;
    cluster.wait_leader().await;
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.grpc.clone()).collect();
    // History first: written before the watcher exists.
    let early = writer(endpoints[0].clone(), 9, 60).await;
    let start = *early.keys().next().unwrap();

    let mut client = connect(&endpoints[1]).await;
    let mut stream = client
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .unwrap();
    created(&mut stream).await;
    let writers: Vec<_> = (0..4)
        .map(|id| tokio::spawn(writer(endpoints[id % 3].clone(), id, 150)))
        .collect();
    let mut acked = early;
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let last = *acked.keys().last().unwrap();
    let replies = until(&mut stream, last, Duration::from_secs(60)).await;
    let seen = by_revision(&replies);

    // Every revision from the start on was one of the writers' (they are
    // the only ones), so the events must be exactly what was acknowledged.
    assert_every_revision(&seen, start, last);
    for (revision, mut expected) in acked {
        let mut got = seen[&revision].clone();
        got.sort_by(|a, b| a.key.cmp(&b.key));
        expected.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(got, expected, "revision {revision}");
    }
    // Replaying the events gives the store's state at the last revision.
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    for event in seen.values().flatten() {
        if event.put {
            state.insert(event.key.clone(), event.value.clone());
        } else {
            state.remove(&event.key);
        }
    }
    let range = client
        .get(
            "w/",
            Some(GetOptions::new().with_prefix().with_revision(last)),
        )
        .await
        .unwrap();
    let stored: BTreeMap<String, String> = range
        .kvs()
        .iter()
        .map(|kv| (text(kv.key()), text(kv.value())))
        .collect();
    assert_eq!(state, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_watcher_neither_blocks_writes_nor_misses_events() {
    const PUTS: usize = 20_000;
    const WRITERS: usize = 8;
    let cluster = Cluster::start(3, "memory", &[]).await;
    let leader = cluster.wait_leader().await;
    let endpoint = cluster.node(leader).grpc.clone();
    let mut watcher = connect(&endpoint).await;
    let mut slow = watcher
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let from = created(&mut slow).await.revision + 1;
    // 1 KiB values: far more than the stream's buffers and HTTP/2 windows
    // hold, so the server must set the watcher aside.
    let value = "x".repeat(1024);
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let endpoint = endpoint.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut client = connect(&endpoint).await;
                for i in (w..PUTS).step_by(WRITERS) {
                    client
                        .put(format!("s/{i:05}"), value.as_str(), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(240), all)
        .await
        .expect("writes stalled while a watcher did not read");
    let took = started.elapsed();
    let through = from + PUTS as i64 - 1;
    // etcd's watch gauges show the watcher, set aside while it does not read.
    let metrics = cluster
        .client()
        .metrics_of(&cluster.node(leader).client)
        .await
        .unwrap();
    let gauge = |name: &str| cluster::metrics::metric_value(&metrics, name).unwrap_or(-1.0);
    assert!(
        gauge("etcd_debugging_mvcc_watcher_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        gauge("etcd_debugging_mvcc_watch_stream_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        gauge("etcd_debugging_mvcc_current_revision") >= through as f64,
        "{metrics}"
    );
    assert!(
        gauge("etcd_debugging_mvcc_slow_watcher_total") >= 1.0,
        "{metrics}"
    );
    let replies = until(&mut slow, through, Duration::from_secs(120)).await;
    let seen = by_revision(&replies);
    assert_every_revision(&seen, from, through);
    let mut keys: Vec<&str> = seen.values().flatten().map(|e| e.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), PUTS);
    println!(
        "{PUTS} puts in {took:?} with a watcher that did not read; then {} responses delivered",
        replies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_left_behind_by_compaction_is_canceled_after_what_it_was_sent() {
    const PUTS: usize = 5_000;
    let cluster = Cluster::start(3, "memory", &[]).await;
    let leader = cluster.wait_leader().await;
    let endpoint = cluster.node(leader).grpc.clone();
    let mut watcher = connect(&endpoint).await;
    let mut behind = watcher
        .watch("z/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let from = created(&mut behind).await.revision + 1;
    // 4 KiB values, not read: the watcher is set aside long before the end.
    let value = "z".repeat(4096);
    let mut client = connect(&endpoint).await;
    let mut last = 0;
    for i in 0..PUTS {
        let r = client
            .put(format!("z/{}", i % 50), value.as_str(), None)
            .await
            .unwrap();
        last = r.header().unwrap().revision();
    }
    client.compact(last, None).await.unwrap();
    // What it was sent before the compaction arrives whole and in order;
    // then it is canceled with the compaction revision.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut replies = Vec::new();
    let canceled = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = next(&mut behind, left)
            .await
            .expect("the watcher was neither served nor canceled");
        if reply.canceled {
            break reply;
        }
        replies.push(reply);
    };
    assert_eq!(canceled.compact_revision, last, "{canceled:?}");
    let seen = by_revision(&replies);
    let through = seen.keys().last().copied().unwrap_or(from - 1);
    assert!(
        through < last,
        "it was behind: it got up to {through} of {last}"
    );
    assert_every_revision(&seen, from, through);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_features_match_etcd() {
    let cluster =
        Cluster::start(3, "memory", &["--watch-progress-notify-interval-ms", "300"]).await;
    let leader = cluster.wait_leader().await;
    let follower = common::followers(&cluster, leader)[0];
    let mut client = connect(&cluster.node(leader).grpc).await;

    // A transaction's three puts arrive in one response.
    let mut stream = client
        .watch("t/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let first = created(&mut stream).await;
    assert_eq!(first.watch_id, 0, "etcd numbers a stream's watchers from 0");
    let txn = Txn::new().and_then(vec![
        TxnOp::put("t/a", "1", None),
        TxnOp::put("t/b", "2", None),
        TxnOp::put("t/c", "3", None),
    ]);
    let revision = client.txn(txn).await.unwrap().header().unwrap().revision();
    let reply = next(&mut stream, Duration::from_secs(10)).await.unwrap();
    assert_eq!(reply.events.len(), 3, "{reply:?}");
    assert!(reply.events.iter().all(|e| e.revision == revision));
    assert_eq!(reply.revision, revision);

    // Progress request: answered with watch id -1 and the revision.
    stream.request_progress().await.unwrap();
    let progress = next(&mut stream, Duration::from_secs(10)).await.unwrap();
    assert_eq!(progress.watch_id, -1, "{progress:?}");
    assert!(progress.events.is_empty() && progress.revision >= revision);

    // Cancel: answered, and nothing more for that watcher.
    stream.cancel(0).await.unwrap();
    let canceled = next(&mut stream, Duration::from_secs(10)).await.unwrap();
    assert!(canceled.canceled && canceled.watch_id == 0, "{canceled:?}");
    client.put("t/d", "4", None).await.unwrap();
    assert!(
        next(&mut stream, Duration::from_millis(500))
            .await
            .is_none(),
        "an event after cancel"
    );

    // Client-chosen ids on the same stream; a duplicate is refused as
    // etcd refuses it.
    stream
        .watch(
            "p/",
            Some(WatchOptions::new().with_prefix().with_watch_id(7)),
        )
        .await
        .unwrap();
    assert_eq!(created(&mut stream).await.watch_id, 7);
    stream
        .watch("q", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    let duplicate = next(&mut stream, Duration::from_secs(10)).await.unwrap();
    assert!(duplicate.created && duplicate.canceled, "{duplicate:?}");
    assert_eq!(duplicate.watch_id, -1);
    assert_eq!(
        duplicate.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );

    // prev_kv and the filters, replayed from history.
    let a1 = client.put("p/a", "1", None).await.unwrap();
    let from = a1.header().unwrap().revision();
    client.put("p/a", "2", None).await.unwrap();
    let deleted = client.delete("p/a", None).await.unwrap();
    let last = deleted.header().unwrap().revision();
    let live = until(&mut stream, last, Duration::from_secs(10)).await;
    assert!(live.iter().all(|r| r.watch_id == 7));
    let watch = |options: WatchOptions| {
        let mut client = client.clone();
        async move {
            let mut stream = client
                .watch("p/a", Some(options.with_start_revision(from)))
                .await
                .unwrap();
            created(&mut stream).await;
            stream
        }
    };
    let mut with_prev = watch(WatchOptions::new().with_prev_key()).await;
    let seen: Vec<Seen> = until(&mut with_prev, last, Duration::from_secs(10))
        .await
        .into_iter()
        .flat_map(|r| r.events)
        .collect();
    let shape: Vec<(bool, String, Option<String>)> = seen
        .iter()
        .map(|e| (e.put, e.value.clone(), e.prev.clone()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (true, "1".into(), None),
            (true, "2".into(), Some("1".into())),
            (false, String::new(), Some("2".into())),
        ]
    );
    let mut no_put = watch(WatchOptions::new().with_filters([WatchFilterType::NoPut])).await;
    let only: Vec<Seen> = until(&mut no_put, last, Duration::from_secs(10))
        .await
        .into_iter()
        .flat_map(|r| r.events)
        .collect();
    assert!(only.len() == 1 && !only[0].put, "{only:?}");
    let mut no_delete = watch(WatchOptions::new().with_filters([WatchFilterType::NoDelete])).await;
    client.put("p/a", "3", None).await.unwrap();
    let only: Vec<Seen> = until(&mut no_delete, last + 1, Duration::from_secs(10))
        .await
        .into_iter()
        .flat_map(|r| r.events)
        .collect();
    assert_eq!(
        only.iter().map(|e| e.value.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );

    // Periodic progress notifications (every 300 ms here) to a watcher
    // that asked and got nothing meanwhile.
    let mut notified = client
        .watch("quiet", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    let made = created(&mut notified).await;
    let note = next(&mut notified, Duration::from_secs(5))
        .await
        .expect("no progress notification");
    assert!(note.events.is_empty() && !note.canceled, "{note:?}");
    assert_eq!(note.watch_id, made.watch_id);
    assert!(note.revision >= made.revision);

    // A start revision below the compaction point: created, then canceled
    // with the compaction revision.
    let now = client
        .put("c", "x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.compact(now, None).await.unwrap();
    let mut old = client
        .watch("p/a", Some(WatchOptions::new().with_start_revision(from)))
        .await
        .unwrap();
    created(&mut old).await;
    let gone = next(&mut old, Duration::from_secs(10)).await.unwrap();
    assert!(gone.canceled, "{gone:?}");
    assert_eq!(gone.compact_revision, now);
    // At the compaction point itself, the watch is served.
    let mut at = client
        .watch("c", Some(WatchOptions::new().with_start_revision(now)))
        .await
        .unwrap();
    created(&mut at).await;
    let served = next(&mut at, Duration::from_secs(10)).await.unwrap();
    assert_eq!(served.events[0].revision, now, "{served:?}");

    // Fragments: four 500 KB puts replayed in one catch-up message are
    // split (all but the last marked), every event in one of them.
    let big = "b".repeat(500 * 1024);
    let mut first_big = 0;
    for i in 0..4 {
        let r = client
            .put(format!("f/{i}"), big.as_str(), None)
            .await
            .unwrap();
        if i == 0 {
            first_big = r.header().unwrap().revision();
        }
    }
    let mut fragmented = client
        .watch(
            "f/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(first_big)
                    .with_fragment(),
            ),
        )
        .await
        .unwrap();
    created(&mut fragmented).await;
    let parts = until(&mut fragmented, first_big + 3, Duration::from_secs(10)).await;
    assert!(parts.len() > 1, "{} parts", parts.len());
    assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
    assert!(!parts[parts.len() - 1].fragment);
    assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 4);

    // A watch on a follower sees the writes made through the leader.
    let mut on_follower = connect(&cluster.node(follower).grpc).await;
    let mut remote = on_follower
        .watch("r", Some(WatchOptions::new().with_prev_key()))
        .await
        .unwrap();
    created(&mut remote).await;
    client.put("r", "1", None).await.unwrap();
    let second = client
        .put("r", "2", Some(PutOptions::new()))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let got: Vec<Seen> = until(&mut remote, second, Duration::from_secs(10))
        .await
        .into_iter()
        .flat_map(|r| r.events)
        .collect();
    assert_eq!(
        got.iter()
            .map(|e| (e.value.as_str(), e.prev.as_deref()))
            .collect::<Vec<_>>(),
        [("1", None), ("2", Some("1"))]
    );
}

/// The watcher on a follower that installs a snapshot is caught up from
/// history: every revision once, in order. Its catch-up (300 revisions of
/// 16 KiB) is larger than the 4 MiB a tonic client accepts in one message,
/// so this also checks that the member splits it between revisions (it
/// failed with "decoded message length too large" before it did).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_installs_a_snapshot_keeps_its_watchers_whole() {
    const PUTS: i64 = 300;
    let cluster = Cluster::start(
        3,
        "redb",
        &[
            "--tick-ms",
            "50",
            "--snapshot-every",
            "20",
            "--keep-entries",
            "5",
        ],
    )
    .await;
    let leader = cluster.wait_leader().await;
    let follower = common::followers(&cluster, leader)[0];
    let mut on_follower = connect(&cluster.node(follower).grpc).await;
    let mut stream = on_follower
        .watch("n/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let from = created(&mut stream).await.revision + 1;
    let mut client = connect(&cluster.node(leader).grpc).await;
    let mut acked: HashMap<i64, String> = HashMap::new();
    // 16 KiB values: more than the paused follower's socket buffers take,
    // so the leader's messages to it are dropped and it needs a snapshot.
    let value = "v".repeat(16 * 1024);
    {
        let _paused = common::Paused::pause(&cluster, vec![follower]);
        for i in 0..PUTS {
            let r = client
                .put(format!("n/{i}"), value.as_str(), None)
                .await
                .unwrap();
            acked.insert(r.header().unwrap().revision(), format!("n/{i}"));
        }
        let status = cluster.status(leader).await.unwrap();
        assert!(status.first_log_index > 100, "{status:?}");
    }
    let through = from + PUTS - 1;
    let replies = until(&mut stream, through, Duration::from_secs(30)).await;
    let seen = by_revision(&replies);
    assert_every_revision(&seen, from, through);
    for (revision, events) in seen {
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].key, acked[&revision]);
    }
    let status = cluster.status(follower).await.unwrap();
    assert!(
        status.snapshot_index >= 100,
        "the follower should have installed a snapshot: {status:?}"
    );
}

/// A raw HTTP/1.0 watch: the status line, then the body's lines as they
/// come (HTTP/1.0 bodies are not chunked: what curl -N prints).
struct HttpWatch {
    lines: tokio::io::Lines<BufReader<tokio::net::TcpStream>>,
}

impl HttpWatch {
    async fn open(address: &str, path: &str) -> (u16, HttpWatch) {
        let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
        socket
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut lines = BufReader::new(socket).lines();
        let status_line = lines.next_line().await.unwrap().unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.is_empty() {
                break;
            }
        }
        (status, HttpWatch { lines })
    }

    /// The next JSON line; `None` at the end of the body.
    async fn next(&mut self) -> Option<serde_json::Value> {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("no line within 10 s")
            .unwrap()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_watch_streams_json_lines() {
    let cluster = Cluster::start(3, "memory", &[]).await;
    let leader = cluster.wait_leader().await;
    let follower = common::followers(&cluster, leader)[0];
    let mut client = connect(&cluster.node(leader).grpc).await;
    let first = client.put("h/a", "1", None).await.unwrap();
    let from = first.header().unwrap().revision();
    client.put("h/a", "2", None).await.unwrap();
    client.put("h/b", "\u{e9}", None).await.unwrap();
    client.delete("h/a", None).await.unwrap();
    let address = cluster.node(follower).client.clone();

    let (status, mut watch) = HttpWatch::open(
        &address,
        &format!("/h/?watch=true&prefix=true&prev_kv=true&rev={from}"),
    )
    .await;
    assert_eq!(status, 200);
    let head = watch.next().await.unwrap();
    assert_eq!(head["created"], true, "{head}");
    let mut lines = Vec::new();
    for _ in 0..4 {
        lines.push(watch.next().await.unwrap());
    }
    let shape: Vec<(String, String, i64, String)> = lines
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap().to_string(),
                l["key"].as_str().unwrap().to_string(),
                l["mod_revision"].as_i64().unwrap(),
                l["prev_kv"]["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("PUT".into(), "h/a".into(), from, String::new()),
            ("PUT".into(), "h/a".into(), from + 1, "1".into()),
            ("PUT".into(), "h/b".into(), from + 2, String::new()),
            ("DELETE".into(), "h/a".into(), from + 3, "2".into()),
        ]
    );
    assert_eq!(lines[2]["value"], "\u{e9}");
    assert_eq!(lines[2]["version"], 1);
    assert_eq!(lines[2]["create_revision"], from + 2);
    // Live: a write after the replay comes down the same stream.
    client.put("h/c", "live", None).await.unwrap();
    let live = watch.next().await.unwrap();
    assert_eq!(
        (live["key"].as_str(), live["value"].as_str()),
        (Some("h/c"), Some("live"))
    );

    // A compacted start: the created line, then the error line, then the end.
    let now = client
        .put("x", "y", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.compact(now, None).await.unwrap();
    // A linearizable read on the follower: it has applied the compaction
    // too (a member that has not yet would serve the watch from history).
    let (status, _) = HttpWatch::open(&address, "/x").await;
    assert_eq!(status, 200);
    let (_, mut old) = HttpWatch::open(&address, &format!("/h/a?watch=true&rev={from}")).await;
    assert_eq!(old.next().await.unwrap()["created"], true);
    let end = old.next().await.unwrap();
    assert_eq!(
        end["error"],
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(end["compact_revision"], now);
    assert!(
        old.next().await.is_none(),
        "the stream ends after the error"
    );

    // Bad parameters are a 400 before any streaming.
    let (status, mut bad) = HttpWatch::open(&address, "/h/a?watch=true&limit=3").await;
    assert_eq!(status, 400);
    let body = bad.next().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("a watch accepts"),
        "{body}"
    );
}
