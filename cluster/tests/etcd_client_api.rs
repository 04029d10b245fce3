//! etcd's KV API as behaviour checks, through the `etcd-client` crate (the
//! project's reference Rust client), against a real etcd 3.4.
//!
//! Each test asserts exact values: revisions, versions, counts, `more`,
//! error codes and messages, so that together they define what metcd's etcd
//! API must do. Every test gets its servers from [`targets`], one fresh
//! cluster per target, and runs the same checks on each; metcd becomes one
//! more entry there. Where etcd 3.4 behaves differently from its
//! documentation, these tests assert what etcd does.

mod common;

use common::etcd::{Running, Target};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue,
    MemberAddOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};

/// The fresh servers every check runs against, each in its own cluster.
///
/// METCD TARGET: add a fresh single-node metcd with its gRPC listener here,
/// as `Running { target: Target::from_member_list("metcd", &grpc_endpoints),
/// keep: Keep::Metcd(cluster) }`.
fn targets() -> Vec<Running> {
    vec![Running::etcd(1), Running::metcd(1, "memory")]
}

async fn connect(target: &Target) -> Client {
    Client::connect(target.endpoints(), None)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connecting to {} at {:?}: {e}",
                target.kind,
                target.endpoints()
            )
        })
}

/// The response header's revision.
fn rev(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.expect("every response has a header").revision()
}

/// (key, value, create_revision, mod_revision, version) of each pair.
fn kvs(kvs: &[KeyValue]) -> Vec<(String, String, i64, i64, i64)> {
    kvs.iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
            )
        })
        .collect()
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

fn kv(
    key: &str,
    value: &str,
    create: i64,
    modified: i64,
    version: i64,
) -> (String, String, i64, i64, i64) {
    (
        key.to_string(),
        value.to_string(),
        create,
        modified,
        version,
    )
}

/// The gRPC code (as tonic names it) and message of a request that must
/// fail.
fn status<T>(result: Result<T, etcd_client::Error>) -> (String, String) {
    match result {
        Ok(_) => panic!("the request succeeded; it must fail"),
        Err(etcd_client::Error::GRpcStatus(status)) => {
            (format!("{:?}", status.code()), status.message().to_string())
        }
        Err(other) => panic!("expected a gRPC status, got {other:?}"),
    }
}

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

#[tokio::test]
async fn revisions_start_at_2_and_grow_once_per_change() {
    for server in targets() {
        let mut c = connect(&server.target).await;
        let fresh = c.get("anything", None).await.unwrap();
        assert_eq!(rev(fresh.header()), 1, "a fresh store is at revision 1");
        let header = fresh.header().unwrap();
        assert_ne!(header.cluster_id(), 0);
        assert_eq!(header.member_id(), server.target.members[0].id);
        assert!(header.raft_term() >= 1);

        assert_eq!(rev(c.put("a", "1", None).await.unwrap().header()), 2);
        assert_eq!(rev(c.put("b", "1", None).await.unwrap().header()), 3);
        // Deleting nothing changes nothing, and says so.
        let none = c.delete("missing", None).await.unwrap();
        assert_eq!((none.deleted(), rev(none.header())), (0, 3));
        let none = c
            .delete("x/", Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!((none.deleted(), rev(none.header())), (0, 3));
        // A transaction that changes several keys is one revision, and its
        // puts all carry it.
        let txn = Txn::new().and_then([
            TxnOp::put("a", "2", None),
            TxnOp::put("c", "1", None),
            TxnOp::delete("b", None),
        ]);
        let resp = c.txn(txn).await.unwrap();
        assert!(resp.succeeded());
        assert_eq!(rev(resp.header()), 4);
        let all = c
            .get("", Some(GetOptions::new().with_from_key()))
            .await
            .unwrap();
        assert_eq!(
            kvs(all.kvs()),
            [kv("a", "2", 2, 4, 2), kv("c", "1", 4, 4, 1)]
        );
        // A read-only transaction, and one whose taken branch is empty,
        // change nothing.
        let resp = c
            .txn(Txn::new().and_then([TxnOp::get("a", None)]))
            .await
            .unwrap();
        assert_eq!(rev(resp.header()), 4);
        let resp = c
            .txn(
                Txn::new()
                    .when([Compare::value("a", CompareOp::Equal, "no")])
                    .and_then([TxnOp::put("a", "3", None)]),
            )
            .await
            .unwrap();
        assert!(!resp.succeeded());
        assert_eq!(rev(resp.header()), 4);
        // Putting the same value again is still a change.
        assert_eq!(rev(c.put("a", "2", None).await.unwrap().header()), 5);
    }
}

#[tokio::test]
async fn a_key_has_a_create_revision_mod_revision_and_version_per_generation() {
    for server in targets() {
        let mut c = connect(&server.target).await;
        c.put("k", "v1", None).await.unwrap(); // 2
        c.put("k", "v2", None).await.unwrap(); // 3
        let got = c.get("k", None).await.unwrap();
        assert_eq!(kvs(got.kvs()), [kv("k", "v2", 2, 3, 2)]);
        let deleted = c.delete("k", None).await.unwrap(); // 4
        assert_eq!((deleted.deleted(), rev(deleted.header())), (1, 4));
        let got = c.get("k", None).await.unwrap();
        assert!(got.kvs().is_empty());
        assert_eq!((got.count(), rev(got.header())), (0, 4));
        // History stays readable: each revision shows the key as it was.
        for (at, want) in [
            (1, vec![]),
            (2, vec![kv("k", "v1", 2, 2, 1)]),
            (3, vec![kv("k", "v2", 2, 3, 2)]),
            (4, vec![]),
        ] {
            let got = c
                .get("k", Some(GetOptions::new().with_revision(at)))
                .await
                .unwrap();
            assert_eq!(kvs(got.kvs()), want, "at revision {at}");
            assert_eq!(rev(got.header()), 4, "the header is the current revision");
        }
        // A new generation starts over at version 1.
        c.put("k", "v3", None).await.unwrap(); // 5
        let got = c.get("k", None).await.unwrap();
        assert_eq!(kvs(got.kvs()), [kv("k", "v3", 5, 5, 1)]);
    }
}

#[tokio::test]
async fn range_options() {
    for server in targets() {
        let mut c = connect(&server.target).await;
        // Revisions 2..=7.
        for (key, value) in [
            ("r/a", "5"),
            ("r/b", "4"),
            ("r/c", "3"),
            ("r/d", "2"),
            ("r/e", "1"),
            ("s/a", "0"),
        ] {
            c.put(key, value, None).await.unwrap();
        }
        c.put("r/b", "9", None).await.unwrap(); // 8
        let prefix = || GetOptions::new().with_prefix();

        let all = c.get("r/", Some(prefix())).await.unwrap();
        assert_eq!(keys(all.kvs()), ["r/a", "r/b", "r/c", "r/d", "r/e"]);
        assert_eq!((all.count(), all.more()), (5, false));

        let page = c.get("r/", Some(prefix().with_limit(2))).await.unwrap();
        assert_eq!(keys(page.kvs()), ["r/a", "r/b"]);
        assert_eq!((page.count(), page.more()), (5, true));
        let exact = c.get("r/", Some(prefix().with_limit(5))).await.unwrap();
        assert_eq!(
            (exact.kvs().len(), exact.count(), exact.more()),
            (5, 5, false)
        );

        let range = c
            .get("r/b", Some(GetOptions::new().with_range("r/d")))
            .await
            .unwrap();
        assert_eq!(keys(range.kvs()), ["r/b", "r/c"]);
        let from = c
            .get("r/d", Some(GetOptions::new().with_from_key()))
            .await
            .unwrap();
        assert_eq!(keys(from.kvs()), ["r/d", "r/e", "s/a"]);

        let old = c.get("r/", Some(prefix().with_revision(4))).await.unwrap();
        assert_eq!(
            kvs(old.kvs()),
            [
                kv("r/a", "5", 2, 2, 1),
                kv("r/b", "4", 3, 3, 1),
                kv("r/c", "3", 4, 4, 1)
            ]
        );
        assert_eq!((old.count(), rev(old.header())), (3, 8));

        let by_value = c
            .get(
                "r/",
                Some(prefix().with_sort(SortTarget::Value, SortOrder::Ascend)),
            )
            .await
            .unwrap();
        assert_eq!(keys(by_value.kvs()), ["r/e", "r/d", "r/c", "r/a", "r/b"]);
        let by_mod = c
            .get(
                "r/",
                Some(
                    prefix()
                        .with_sort(SortTarget::Mod, SortOrder::Descend)
                        .with_limit(2),
                ),
            )
            .await
            .unwrap();
        assert_eq!(keys(by_mod.kvs()), ["r/b", "r/e"]);
        assert_eq!((by_mod.count(), by_mod.more()), (5, true));
        let by_key = c
            .get(
                "r/",
                Some(prefix().with_sort(SortTarget::Key, SortOrder::Descend)),
            )
            .await
            .unwrap();
        assert_eq!(keys(by_key.kvs()), ["r/e", "r/d", "r/c", "r/b", "r/a"]);
        let by_version = c
            .get(
                "r/",
                Some(
                    prefix()
                        .with_sort(SortTarget::Version, SortOrder::Descend)
                        .with_limit(1),
                ),
            )
            .await
            .unwrap();
        assert_eq!(keys(by_version.kvs()), ["r/b"]);
        let by_create = c
            .get(
                "r/",
                Some(prefix().with_sort(SortTarget::Create, SortOrder::Descend)),
            )
            .await
            .unwrap();
        assert_eq!(keys(by_create.kvs()), ["r/e", "r/d", "r/c", "r/b", "r/a"]);

        let keys_only = c
            .get("r/a", Some(GetOptions::new().with_keys_only()))
            .await
            .unwrap();
        assert_eq!(kvs(keys_only.kvs()), [kv("r/a", "", 2, 2, 1)]);

        let count_only = c.get("r/", Some(prefix().with_count_only())).await.unwrap();
        assert!(count_only.kvs().is_empty());
        assert_eq!((count_only.count(), count_only.more()), (5, false));

        // Mod and create revision filters apply after the range is read:
        // `count` still counts the whole range.
        let modified = c
            .get(
                "r/",
                Some(prefix().with_min_mod_revision(4).with_max_mod_revision(6)),
            )
            .await
            .unwrap();
        assert_eq!(keys(modified.kvs()), ["r/c", "r/d", "r/e"]);
        assert_eq!(modified.count(), 5);
        let created = c
            .get("r/", Some(prefix().with_max_create_revision(3)))
            .await
            .unwrap();
        assert_eq!(keys(created.kvs()), ["r/a", "r/b"]);
        let created = c
            .get("r/", Some(prefix().with_min_create_revision(6)))
            .await
            .unwrap();
        assert_eq!(keys(created.kvs()), ["r/e"]);

        let serializable = c
            .get("r/a", Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        assert_eq!(kvs(serializable.kvs()), [kv("r/a", "5", 2, 2, 1)]);

        let everything = c
            .get("", Some(GetOptions::new().with_all_keys()))
            .await
            .unwrap();
        assert_eq!(everything.count(), 6);
    }
}

#[tokio::test]
async fn prev_kv_on_put_and_delete() {
    for server in targets() {
        let mut c = connect(&server.target).await;
        let first = c
            .put("p", "1", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert!(first.prev_key().is_none());
        let second = c
            .put("p", "2", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert_eq!(
            kvs(std::slice::from_ref(second.prev_key().unwrap())),
            [kv("p", "1", 2, 2, 1)]
        );
        // Without the flag, no previous pair.
        let plain = c.put("p", "3", None).await.unwrap();
        assert!(plain.prev_key().is_none());
        c.put("q", "x", None).await.unwrap(); // 5
        let deleted = c
            .delete(
                "",
                Some(DeleteOptions::new().with_from_key().with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(deleted.deleted(), 2);
        assert_eq!(
            kvs(deleted.prev_kvs()),
            [kv("p", "3", 2, 4, 3), kv("q", "x", 5, 5, 1)]
        );
        assert_eq!(rev(deleted.header()), 6);
        let without = c.put("p", "4", None).await.unwrap();
        assert_eq!(rev(without.header()), 7);
        let deleted = c.delete("p", None).await.unwrap();
        assert!(deleted.prev_kvs().is_empty());
        assert_eq!(deleted.deleted(), 1);
    }
}

#[tokio::test]
async fn txn_compares_branches_and_nesting() {
    for server in targets() {
        let mut c = connect(&server.target).await;
        c.put("t/a", "1", None).await.unwrap(); // 2
        c.put("t/b", "2", None).await.unwrap(); // 3
        c.put("t/a", "3", None).await.unwrap(); // 4
        // Each compare target, once true and once false.
        let cases = [
            (Compare::value("t/a", CompareOp::Equal, "3"), true),
            (Compare::value("t/a", CompareOp::Equal, "1"), false),
            (Compare::value("t/a", CompareOp::Greater, "2"), true),
            (Compare::value("t/a", CompareOp::Less, "2"), false),
            (Compare::value("t/a", CompareOp::NotEqual, "3"), false),
            (Compare::version("t/a", CompareOp::Equal, 2), true),
            (Compare::version("t/a", CompareOp::Greater, 2), false),
            (Compare::create_revision("t/a", CompareOp::Equal, 2), true),
            (Compare::create_revision("t/b", CompareOp::Less, 3), false),
            (Compare::mod_revision("t/a", CompareOp::Equal, 4), true),
            (Compare::mod_revision("t/a", CompareOp::NotEqual, 4), false),
            // An absent key has version, create and mod revision 0; a value
            // compare on it is false.
            (Compare::version("t/none", CompareOp::Equal, 0), true),
            (
                Compare::create_revision("t/none", CompareOp::Equal, 0),
                true,
            ),
            (Compare::mod_revision("t/none", CompareOp::Less, 1), true),
            (Compare::value("t/none", CompareOp::Equal, ""), false),
            (Compare::value("t/none", CompareOp::NotEqual, "x"), false),
            // A range compare holds only if it holds for every key in it.
            (
                Compare::version("t/", CompareOp::Equal, 1).with_prefix(),
                false,
            ),
            (
                Compare::version("t/", CompareOp::Greater, 0).with_prefix(),
                true,
            ),
            (
                Compare::mod_revision("t/a", CompareOp::Less, 5).with_range("t/c"),
                true,
            ),
            (
                Compare::value("t/", CompareOp::Less, "4").with_prefix(),
                true,
            ),
            // An empty range compares like an absent key.
            (
                Compare::version("u/", CompareOp::Equal, 0).with_prefix(),
                true,
            ),
            (
                Compare::value("u/", CompareOp::NotEqual, "x").with_prefix(),
                false,
            ),
        ];
        for (i, (compare, want)) in cases.into_iter().enumerate() {
            let text = format!("{compare:?}");
            let resp = c
                .txn(
                    Txn::new()
                        .when([compare])
                        .and_then([TxnOp::get("t/a", None)])
                        .or_else([TxnOp::get("t/b", None)]),
                )
                .await
                .unwrap();
            assert_eq!(resp.succeeded(), want, "case {i}: {text}");
            assert_eq!(rev(resp.header()), 4, "case {i}: reads only");
            let got = match &resp.op_responses()[..] {
                [TxnOpResponse::Get(get)] => keys(get.kvs()),
                other => panic!("case {i}: {other:?}"),
            };
            assert_eq!(got, [if want { "t/a" } else { "t/b" }], "case {i}");
        }
        // Several compares: all must hold.
        let resp = c
            .txn(
                Txn::new()
                    .when([
                        Compare::value("t/a", CompareOp::Equal, "3"),
                        Compare::value("t/b", CompareOp::Equal, "nope"),
                    ])
                    .and_then([TxnOp::put("t/x", "then", None)])
                    .or_else([
                        TxnOp::put("t/x", "else", Some(PutOptions::new().with_prev_key())),
                        TxnOp::delete("t/b", Some(DeleteOptions::new().with_prev_key())),
                        TxnOp::get("t/", Some(GetOptions::new().with_prefix())),
                    ]),
            )
            .await
            .unwrap();
        assert!(!resp.succeeded());
        assert_eq!(rev(resp.header()), 5);
        match &resp.op_responses()[..] {
            [
                TxnOpResponse::Put(put),
                TxnOpResponse::Delete(del),
                TxnOpResponse::Get(get),
            ] => {
                assert!(put.prev_key().is_none());
                assert_eq!(rev(put.header()), 5);
                assert_eq!(kvs(del.prev_kvs()), [kv("t/b", "2", 3, 3, 1)]);
                // A range later in the transaction sees its earlier writes.
                assert_eq!(
                    kvs(get.kvs()),
                    [kv("t/a", "3", 2, 4, 2), kv("t/x", "else", 5, 5, 1)]
                );
            }
            other => panic!("{other:?}"),
        }
        // A nested transaction is one more operation of the same revision.
        let inner = Txn::new()
            .when([Compare::value("t/x", CompareOp::Equal, "else")])
            .and_then([TxnOp::put("t/inner", "yes", None), TxnOp::get("t/x", None)])
            .or_else([TxnOp::put("t/inner", "no", None)]);
        let resp = c
            .txn(
                Txn::new()
                    .when([Compare::create_revision("t/inner", CompareOp::Equal, 0)])
                    .and_then([TxnOp::put("t/outer", "yes", None), TxnOp::txn(inner)]),
            )
            .await
            .unwrap();
        assert!(resp.succeeded());
        assert_eq!(rev(resp.header()), 6);
        match &resp.op_responses()[..] {
            [TxnOpResponse::Put(_), TxnOpResponse::Txn(nested)] => {
                assert!(nested.succeeded());
                match &nested.op_responses()[..] {
                    [TxnOpResponse::Put(_), TxnOpResponse::Get(get)] => {
                        assert_eq!(kvs(get.kvs()), [kv("t/x", "else", 5, 5, 1)]);
                    }
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        let got = c.get("t/inner", None).await.unwrap();
        assert_eq!(kvs(got.kvs()), [kv("t/inner", "yes", 6, 6, 1)]);
        let got = c.get("t/outer", None).await.unwrap();
        assert_eq!(kvs(got.kvs()), [kv("t/outer", "yes", 6, 6, 1)]);
    }
}

#[tokio::test]
async fn errors_have_etcds_codes_and_messages() {
    for server in targets() {
        let mut c = connect(&server.target).await;
        for i in 0..5 {
            c.put("e", format!("{i}"), None).await.unwrap(); // 2..=6
        }
        let err = c.get("e", Some(GetOptions::new().with_revision(7))).await;
        assert_eq!(status(err), ("OutOfRange".into(), FUTURE.into()));

        c.compact(4, None).await.unwrap();
        let err = c.get("e", Some(GetOptions::new().with_revision(3))).await;
        assert_eq!(status(err), ("OutOfRange".into(), COMPACTED.into()));
        let err = c.compact(4, None).await;
        assert_eq!(status(err), ("OutOfRange".into(), COMPACTED.into()));
        let err = c.compact(3, None).await;
        assert_eq!(status(err), ("OutOfRange".into(), COMPACTED.into()));
        let err = c.compact(100, None).await;
        assert_eq!(status(err), ("OutOfRange".into(), FUTURE.into()));
        // A compacted revision inside a transaction fails the transaction.
        let err = c
            .txn(Txn::new().and_then([TxnOp::get("e", Some(GetOptions::new().with_revision(2)))]))
            .await;
        assert_eq!(status(err), ("OutOfRange".into(), COMPACTED.into()));

        let err = c.put("", "v", None).await;
        assert_eq!(
            status(err),
            (
                "InvalidArgument".into(),
                "etcdserver: key is not provided".into()
            )
        );
        let err = c.get("", None).await;
        assert_eq!(
            status(err),
            (
                "InvalidArgument".into(),
                "etcdserver: key is not provided".into()
            )
        );
        let err = c.delete("", None).await;
        assert_eq!(
            status(err),
            (
                "InvalidArgument".into(),
                "etcdserver: key is not provided".into()
            )
        );

        let ops = |n: usize| -> Vec<TxnOp> {
            (0..n)
                .map(|i| TxnOp::put(format!("many/{i}"), "v", None))
                .collect()
        };
        let err = c.txn(Txn::new().and_then(ops(129))).await;
        assert_eq!(
            status(err),
            (
                "InvalidArgument".into(),
                "etcdserver: too many operations in txn request".into()
            )
        );
        // 128 is allowed, and is one revision.
        let resp = c.txn(Txn::new().and_then(ops(128))).await.unwrap();
        assert_eq!(rev(resp.header()), 7);
        // The limit counts each of compares, success and failure on its own.
        let compares: Vec<Compare> = (0..128)
            .map(|i| Compare::version(format!("many/{i}"), CompareOp::Equal, 1))
            .collect();
        let resp = c
            .txn(
                Txn::new()
                    .when(compares)
                    .and_then(ops(128))
                    .or_else(ops(128)),
            )
            .await
            .unwrap();
        assert!(resp.succeeded());

        let duplicate = "etcdserver: duplicate key given in txn request";
        let err = c
            .txn(Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
            .await;
        assert_eq!(status(err), ("InvalidArgument".into(), duplicate.into()));
        let err = c
            .txn(Txn::new().and_then([
                TxnOp::put("d/1", "1", None),
                TxnOp::delete("d/", Some(DeleteOptions::new().with_prefix())),
            ]))
            .await;
        assert_eq!(status(err), ("InvalidArgument".into(), duplicate.into()));
        // Writes to one key in the two branches are not duplicates, and
        // neither are reads.
        let resp = c
            .txn(
                Txn::new()
                    .and_then([TxnOp::put("d", "1", None), TxnOp::get("d", None)])
                    .or_else([TxnOp::put("d", "2", None)]),
            )
            .await
            .unwrap();
        assert!(resp.succeeded());
        // Nothing of the failed requests was applied.
        let got = c
            .get("d", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(kvs(got.kvs()), [kv("d", "1", 9, 9, 1)]);
    }
}

#[tokio::test]
async fn compaction_keeps_each_keys_latest_revision_at_or_below_it() {
    for server in targets() {
        let mut c = connect(&server.target).await;
        c.put("c/a", "1", None).await.unwrap(); // 2
        c.put("c/a", "2", None).await.unwrap(); // 3
        c.put("c/b", "1", None).await.unwrap(); // 4
        c.delete("c/b", None).await.unwrap(); // 5
        c.put("c/a", "3", None).await.unwrap(); // 6
        let resp = c
            .compact(5, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap();
        assert_eq!(rev(resp.header()), 6);
        let prefix = || GetOptions::new().with_prefix();
        let at5 = c.get("c/", Some(prefix().with_revision(5))).await.unwrap();
        assert_eq!(kvs(at5.kvs()), [kv("c/a", "2", 2, 3, 2)]);
        let at6 = c.get("c/", Some(prefix().with_revision(6))).await.unwrap();
        assert_eq!(kvs(at6.kvs()), [kv("c/a", "3", 2, 6, 3)]);
        let err = c.get("c/", Some(prefix().with_revision(4))).await;
        assert_eq!(status(err), ("OutOfRange".into(), COMPACTED.into()));
        // Compaction is not a change: the next write is revision 7.
        assert_eq!(rev(c.put("c/b", "2", None).await.unwrap().header()), 7);
        let got = c.get("c/b", None).await.unwrap();
        assert_eq!(kvs(got.kvs()), [kv("c/b", "2", 7, 7, 1)]);
        // Revision 0 and negative revisions read the current state.
        let now = c
            .get("c/a", Some(GetOptions::new().with_revision(0)))
            .await
            .unwrap();
        assert_eq!(kvs(now.kvs()), [kv("c/a", "3", 2, 6, 3)]);
    }
}

#[tokio::test]
async fn kubernetes_create_update_and_paged_list() {
    for server in targets() {
        let mut c = connect(&server.target).await;
        // Create if absent: create_revision == 0, else read what is there.
        let create = |key: &str, value: &str| {
            Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value, None)])
                .or_else([TxnOp::get(key, None)])
        };
        let made = c.txn(create("/registry/pods/a", "v1")).await.unwrap();
        assert!(made.succeeded());
        let resource_version = rev(made.header());
        assert_eq!(resource_version, 2);
        let again = c.txn(create("/registry/pods/a", "other")).await.unwrap();
        assert!(!again.succeeded());
        match &again.op_responses()[..] {
            [TxnOpResponse::Get(get)] => {
                assert_eq!(kvs(get.kvs()), [kv("/registry/pods/a", "v1", 2, 2, 1)])
            }
            other => panic!("{other:?}"),
        }
        // Update if unchanged: mod_revision == the resourceVersion read.
        let update = |key: &str, value: &str, rv: i64| {
            Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, rv)])
                .and_then([TxnOp::put(key, value, None)])
                .or_else([TxnOp::get(key, None)])
        };
        let updated = c
            .txn(update("/registry/pods/a", "v2", resource_version))
            .await
            .unwrap();
        assert!(updated.succeeded());
        assert_eq!(rev(updated.header()), 3);
        let stale = c
            .txn(update("/registry/pods/a", "v3", resource_version))
            .await
            .unwrap();
        assert!(!stale.succeeded(), "an update from a stale read must fail");
        match &stale.op_responses()[..] {
            [TxnOpResponse::Get(get)] => {
                assert_eq!(kvs(get.kvs()), [kv("/registry/pods/a", "v2", 2, 3, 2)])
            }
            other => panic!("{other:?}"),
        }
        // Delete if unchanged works the same way.
        let deleted = c
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        "/registry/pods/a",
                        CompareOp::Equal,
                        3,
                    )])
                    .and_then([TxnOp::delete("/registry/pods/a", None)]),
            )
            .await
            .unwrap();
        assert!(deleted.succeeded());
        assert_eq!(rev(deleted.header()), 4);

        // List with limit and continue, all pages at the first page's
        // revision, while writes go on.
        for i in 0..7 {
            c.put(format!("/registry/cm/{i}"), format!("{i}"), None)
                .await
                .unwrap(); // 5..=11
        }
        let prefix = "/registry/cm/";
        let end = "/registry/cm0"; // the prefix's range end
        let first = c
            .get(
                prefix,
                Some(GetOptions::new().with_range(end).with_limit(3)),
            )
            .await
            .unwrap();
        let at = rev(first.header());
        assert_eq!(at, 11);
        assert_eq!((first.count(), first.more()), (7, true));
        let mut listed = keys(first.kvs());
        let mut next = first.kvs().last().unwrap().key().to_vec();
        let mut pages = 1;
        // Writes after the list started must not show up in its pages.
        c.put("/registry/cm/00", "new", None).await.unwrap();
        c.delete("/registry/cm/6", None).await.unwrap();
        c.put("/registry/cm/9", "new", None).await.unwrap();
        loop {
            next.push(0); // continue from just after the last key
            let page = c
                .get(
                    next.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(end)
                            .with_limit(3)
                            .with_revision(at),
                    ),
                )
                .await
                .unwrap();
            pages += 1;
            listed.extend(keys(page.kvs()));
            assert_eq!(rev(page.header()), 14);
            if !page.more() {
                break;
            }
            next = page.kvs().last().unwrap().key().to_vec();
            assert!(pages < 10, "the list does not end");
        }
        assert_eq!(pages, 3);
        let want: Vec<String> = (0..7).map(|i| format!("/registry/cm/{i}")).collect();
        assert_eq!(listed, want);
    }
}

#[tokio::test]
async fn cluster_and_maintenance_on_one_member() {
    for server in targets() {
        let mut c = connect(&server.target).await;
        let me = &server.target.members[0];
        let list = c.member_list().await.unwrap();
        assert_eq!(list.header().unwrap().member_id(), me.id);
        let members: Vec<_> = list
            .members()
            .iter()
            .map(|m| (m.id(), m.client_urls().to_vec(), m.is_learner()))
            .collect();
        assert_eq!(
            members,
            [(me.id, vec![format!("http://{}", me.client)], false)]
        );

        let maintenance = c.status().await.unwrap();
        assert!(
            maintenance.version().starts_with("3."),
            "{}",
            maintenance.version()
        );
        assert_eq!(maintenance.leader(), me.id);
        assert!(maintenance.raft_term() >= 1 && maintenance.raft_index() >= 1);
        assert!(maintenance.db_size() > 0);
        assert_eq!(rev(maintenance.header()), 1);

        // A learner that never starts: added, not promotable, removed.
        let learner_url = format!("http://127.0.0.1:{}", common::free_port());
        let added = c
            .member_add(
                [learner_url.as_str()],
                Some(MemberAddOptions::new().with_is_learner()),
            )
            .await
            .unwrap();
        let learner = added.member().expect("the added member");
        assert!(learner.is_learner());
        assert_eq!(learner.peer_urls(), std::slice::from_ref(&learner_url));
        assert_eq!(added.member_list().len(), 2);
        let id = learner.id();
        assert_eq!(
            status(c.member_promote(id).await),
            (
                "FailedPrecondition".into(),
                "etcdserver: can only promote a learner member which is in sync with leader".into()
            )
        );
        // Leadership cannot go to a learner, nor to an unknown member.
        let bad = (
            "FailedPrecondition".to_string(),
            "etcdserver: bad leader transferee".to_string(),
        );
        assert_eq!(status(c.move_leader(id).await), bad);
        assert_eq!(status(c.move_leader(id ^ 1).await), bad);
        let removed = c.member_remove(id).await.unwrap();
        assert_eq!(removed.members().len(), 1);
        assert_eq!(
            status(c.member_remove(id).await),
            ("NotFound".into(), "etcdserver: member not found".into())
        );
    }
}
