//! The MVCC store against a model, on every engine.
//!
//! The model is the simplest thing that can be right: a vector with the whole
//! key space at every revision (`history[r]` is the store as of revision r).
//! Random sequences of puts, range deletes, compare-and-swap transactions,
//! compactions, reopens (the engine closed and opened again from its
//! directory, so the key index is rebuilt from history) and reads at random
//! revisions, with limits, run against both; every answer must match,
//! errors included.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cluster::mvcc::txn::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use cluster::mvcc::{KeyValue, MvccError, MvccStore, Staging};
use engines::{Engine, EngineKind, EngineOptions, WriteOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        value: u8,
    },
    /// Deletes keys `[from, from + width)`; width 0 means just `from`.
    Delete {
        from: u8,
        width: u8,
    },
    /// If `key`'s mod_revision equals `expect` (or, when `expect` is None, its
    /// current one), put `value`; else put `value` into `other`.
    Cas {
        key: u8,
        stale: bool,
        value: u8,
        other: u8,
    },
    /// Compacts at `current - back` (refused when not above the last point).
    Compact {
        back: u8,
    },
    Reopen,
    /// Reads a range at `current - back` with a limit (0: none).
    Read {
        from: u8,
        width: u8,
        back: u8,
        limit: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, any::<u8>()).prop_map(|(key, value)| Op::Put { key, value }),
        2 => (0u8..8, 0u8..4).prop_map(|(from, width)| Op::Delete { from, width }),
        2 => (0u8..8, any::<bool>(), any::<u8>(), 0u8..8)
            .prop_map(|(key, stale, value, other)| Op::Cas { key, stale, value, other }),
        1 => (0u8..6).prop_map(|back| Op::Compact { back }),
        1 => Just(Op::Reopen),
        5 => (0u8..8, 0u8..9, 0u8..10, 0u8..4)
            .prop_map(|(from, width, back, limit)| Op::Read { from, width, back, limit }),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key/{k}").into_bytes()
}

/// `[key(from), key(from + width))`, or the single key when width is 0.
fn range_end(from: u8, width: u8) -> Vec<u8> {
    if width == 0 {
        Vec::new()
    } else {
        key(from.saturating_add(width))
    }
}

struct Model {
    history: Vec<BTreeMap<Vec<u8>, KeyValue>>,
    compacted: i64,
}

impl Model {
    fn new() -> Self {
        // Revisions 0 and 1 are both the empty store.
        Model {
            history: vec![BTreeMap::new(), BTreeMap::new()],
            compacted: 0,
        }
    }

    fn current(&self) -> i64 {
        self.history.len() as i64 - 1
    }

    fn latest(&self) -> &BTreeMap<Vec<u8>, KeyValue> {
        &self.history[self.history.len() - 1]
    }

    fn put(&mut self, k: Vec<u8>, value: Vec<u8>) {
        let revision = self.current() + 1;
        let mut next = self.latest().clone();
        let kv = match next.get(&k) {
            Some(old) => KeyValue {
                key: k.clone(),
                create_revision: old.create_revision,
                mod_revision: revision,
                version: old.version + 1,
                value,
                lease: 0,
            },
            None => KeyValue {
                key: k.clone(),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                value,
                lease: 0,
            },
        };
        next.insert(k, kv);
        self.history.push(next);
    }

    fn in_range(k: &[u8], start: &[u8], end: &[u8]) -> bool {
        if end.is_empty() {
            k == start
        } else {
            k >= start && k < end
        }
    }

    fn delete(&mut self, start: &[u8], end: &[u8]) -> i64 {
        let mut next = self.latest().clone();
        let before = next.len();
        next.retain(|k, _| !Self::in_range(k, start, end));
        let deleted = (before - next.len()) as i64;
        if deleted > 0 {
            self.history.push(next);
        }
        deleted
    }

    fn read(
        &self,
        start: &[u8],
        end: &[u8],
        at: i64,
        limit: i64,
    ) -> Result<(Vec<KeyValue>, bool, i64), &'static str> {
        // etcd: a revision of 0 or less means the current one.
        let at = if at <= 0 { self.current() } else { at };
        if at > self.current() {
            return Err("future");
        }
        if at < self.compacted {
            return Err("compacted");
        }
        let all: Vec<KeyValue> = self.history[at as usize]
            .iter()
            .filter(|(k, _)| Self::in_range(k, start, end))
            .map(|(_, v)| v.clone())
            .collect();
        let count = all.len() as i64;
        let more = limit > 0 && all.len() > limit as usize;
        let kvs = if limit > 0 {
            all.into_iter().take(limit as usize).collect()
        } else {
            all
        };
        Ok((kvs, more, count))
    }
}

fn kind_of(error: &MvccError) -> &'static str {
    match error {
        MvccError::Compacted => "compacted",
        MvccError::FutureRevision => "future",
        _ => "other",
    }
}

fn open(kind: EngineKind, dir: &Path) -> Arc<dyn Engine> {
    engines::open_shared(kind, dir, &EngineOptions::default()).expect("engine opens")
}

fn run(kind: EngineKind, ops: &[Op]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("engine");
    let mut engine = open(kind, &dir);
    let (mut store, _) = MvccStore::open(Arc::clone(&engine)).expect("store opens");
    let mut model = Model::new();
    for (step, op) in ops.iter().enumerate() {
        let mut staging = Staging::new();
        match op {
            Op::Put { key: k, value } => {
                let response = store
                    .put(
                        &mut staging,
                        PutRequest {
                            key: key(*k),
                            value: vec![*value],
                            prev_kv: true,
                            ..Default::default()
                        },
                    )
                    .expect("put");
                let expected_prev = model.latest().get(&key(*k)).cloned();
                model.put(key(*k), vec![*value]);
                prop_assert_eq!(response.prev_kv, expected_prev, "step {}: prev_kv", step);
                prop_assert_eq!(
                    response.revision,
                    model.current(),
                    "step {}: put revision",
                    step
                );
            }
            Op::Delete { from, width } => {
                let end = range_end(*from, *width);
                let response = store
                    .delete_range(
                        &mut staging,
                        DeleteRangeRequest {
                            key: key(*from),
                            range_end: end.clone(),
                            prev_kv: false,
                        },
                    )
                    .expect("delete");
                let deleted = model.delete(&key(*from), &end);
                prop_assert_eq!(response.deleted, deleted, "step {}: deleted", step);
                prop_assert_eq!(
                    response.revision,
                    model.current(),
                    "step {}: delete revision",
                    step
                );
            }
            Op::Cas {
                key: k,
                stale,
                value,
                other,
            } => {
                let current_mod = model.latest().get(&key(*k)).map_or(0, |kv| kv.mod_revision);
                let expect = if *stale { current_mod + 1 } else { current_mod };
                let txn = TxnRequest {
                    compare: vec![Compare {
                        key: key(*k),
                        range_end: vec![],
                        target: CompareTarget::Mod(expect),
                        result: CompareResult::Equal,
                    }],
                    success: vec![RequestOp::Put(PutRequest {
                        key: key(*k),
                        value: vec![*value],
                        ..Default::default()
                    })],
                    failure: vec![RequestOp::Put(PutRequest {
                        key: key(*other),
                        value: vec![*value],
                        ..Default::default()
                    })],
                };
                let response = store.txn(&mut staging, &txn).expect("txn");
                prop_assert_eq!(response.succeeded, !*stale, "step {}: compare", step);
                model.put(if *stale { key(*other) } else { key(*k) }, vec![*value]);
                prop_assert_eq!(
                    response.revision,
                    model.current(),
                    "step {}: txn revision",
                    step
                );
            }
            Op::Compact { back } => {
                let at = (model.current() - i64::from(*back)).max(1);
                let outcome = store.compact(&mut staging, at);
                if at <= model.compacted {
                    prop_assert!(
                        matches!(outcome, Err(MvccError::Compacted)),
                        "step {}: {:?}",
                        step,
                        outcome
                    );
                } else {
                    prop_assert!(outcome.is_ok(), "step {}: {:?}", step, outcome);
                    model.compacted = at;
                }
            }
            Op::Reopen => {
                // The key index is rebuilt from history. A durable engine is
                // closed and opened again from its directory; the memory
                // engine has nothing to reopen from, so only the index is.
                drop(store);
                if kind != EngineKind::Memory {
                    drop(engine);
                    engine = open(kind, &dir);
                }
                store = MvccStore::open(Arc::clone(&engine))
                    .expect("store reopens")
                    .0;
            }
            Op::Read {
                from,
                width,
                back,
                limit,
            } => {
                let end = range_end(*from, *width);
                let at = model.current() - i64::from(*back) + 1;
                let request = RangeRequest {
                    key: key(*from),
                    range_end: end.clone(),
                    revision: at,
                    limit: i64::from(*limit),
                    ..Default::default()
                };
                let got = store.range(&request);
                let want = model.read(&key(*from), &end, at, i64::from(*limit));
                match (got, want) {
                    (Ok(got), Ok((kvs, more, count))) => {
                        prop_assert_eq!(got.kvs, kvs, "step {}: kvs at {}", step, at);
                        prop_assert_eq!(got.more, more, "step {}: more", step);
                        prop_assert_eq!(got.count, count, "step {}: count", step);
                        prop_assert_eq!(
                            got.revision,
                            model.current(),
                            "step {}: header revision",
                            step
                        );
                    }
                    (Err(got), Err(want)) => prop_assert_eq!(kind_of(&got), want, "step {}", step),
                    (got, want) => {
                        prop_assert!(false, "step {}: store {:?}, model {:?}", step, got, want)
                    }
                }
            }
        }
        if !staging.is_empty() {
            store
                .commit(&mut staging, WriteOptions::BUFFERED)
                .expect("commit");
        }
        prop_assert_eq!(
            store.current_revision(),
            model.current(),
            "step {}: current revision",
            step
        );
    }
    Ok(())
}

macro_rules! engine_cases {
    ($($name:ident => $kind:expr),* $(,)?) => {$(
        proptest! {
            #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
            #[test]
            fn $name(ops in proptest::collection::vec(op(), 1..60)) {
                run($kind, &ops)?;
            }
        }
    )*};
}

engine_cases! {
    memory_matches_the_model => EngineKind::Memory,
    redb_matches_the_model => EngineKind::Redb,
    sled_matches_the_model => EngineKind::Sled,
    rocksdb_matches_the_model => EngineKind::Rocksdb,
    fjall_matches_the_model => EngineKind::Fjall,
    bitcask_matches_the_model => EngineKind::Bitcask,
}
