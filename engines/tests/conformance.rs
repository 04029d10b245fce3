//! One conformance suite, run against all six engines with the same cases.
//!
//! The `conformance!` macro stamps out one module per engine, so the test
//! output names each engine (`memory::point_operations ... ok`,
//! `bitcask::reopen_persists ... ok`). Each case is a plain function taking
//! an [`EngineKind`]; adding a case means adding a function and one line in
//! the macro. A property test per engine runs random operation sequences
//! against a `BTreeMap` model, reopening the durable engines in between.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use engines::{Engine, EngineKind, EngineOptions, KeyRange, WriteBatch, WriteOptions};
use proptest::prelude::*;

fn options() -> EngineOptions {
    EngineOptions {
        cache_bytes: 8 << 20,
        // Small files so that bitcask rotates inside the tests.
        bitcask_max_file_bytes: 256 << 10,
    }
}

fn open(kind: EngineKind, dir: &Path) -> Box<dyn Engine> {
    engines::open(kind, dir, &options()).unwrap_or_else(|e| panic!("open {kind}: {e}"))
}

fn keys_of(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    pairs.iter().map(|(k, _)| k.clone()).collect()
}

mod cases {
    use super::*;

    pub fn point_operations(kind: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        assert_eq!(engine.kind(), kind);
        assert_eq!(engine.get(b"missing").unwrap(), None);
        engine.put(b"k1", b"v1", WriteOptions::BUFFERED).unwrap();
        engine.put(b"k2", b"v2", WriteOptions::SYNC).unwrap();
        assert_eq!(engine.get(b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
        let mut lent = Vec::new();
        engine
            .get_with(b"k1", &mut |v| lent.push(v.map(<[u8]>::to_vec)))
            .unwrap();
        engine
            .get_with(b"missing", &mut |v| lent.push(v.map(<[u8]>::to_vec)))
            .unwrap();
        assert_eq!(lent, vec![Some(b"v1".to_vec()), None], "{kind}: get_with");
        assert_eq!(engine.get(b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
        engine.delete(b"k1", WriteOptions::BUFFERED).unwrap();
        assert_eq!(engine.get(b"k1").unwrap(), None);
        // Deleting a missing key is not an error.
        engine.delete(b"never-there", WriteOptions::SYNC).unwrap();
        let status = engine.status().unwrap();
        assert_eq!(status.kind, kind);
        assert_eq!(status.keys, 1);
        assert_eq!(status.logical_bytes, 4);
        if kind.is_durable() {
            assert!(status.disk_bytes > 0, "{kind} reports no bytes on disk");
        }
    }

    pub fn key_limits(kind: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        let too_long = vec![b'k'; engines::MAX_KEY_BYTES + 1];
        let longest = vec![b'k'; engines::MAX_KEY_BYTES];
        for bad in [&b""[..], &too_long[..]] {
            let put = engine
                .put(bad, b"v", WriteOptions::SYNC)
                .unwrap_err()
                .to_string();
            assert!(put.contains("keys are 1 to"), "{kind}: {put}");
            assert!(engine.delete(bad, WriteOptions::SYNC).is_err());
            let mut batch = WriteBatch::new();
            batch.put("fine", "1").put(bad.to_vec(), "2");
            assert!(engine.write_batch(batch, WriteOptions::SYNC).is_err());
            assert_eq!(engine.get(bad).unwrap(), None);
        }
        // A refused batch writes nothing, not even its valid part.
        assert_eq!(engine.get(b"fine").unwrap(), None);
        engine.put(&longest, b"v", WriteOptions::SYNC).unwrap();
        assert_eq!(engine.get(&longest).unwrap(), Some(b"v".to_vec()));
    }

    pub fn overwrite(kind: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        for i in 0..50u32 {
            engine
                .put(b"same", &i.to_be_bytes(), WriteOptions::BUFFERED)
                .unwrap();
        }
        assert_eq!(
            engine.get(b"same").unwrap(),
            Some(49u32.to_be_bytes().to_vec())
        );
        assert_eq!(engine.status().unwrap().keys, 1);
    }

    pub fn empty_values(kind: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        engine.put(b"empty", b"", WriteOptions::SYNC).unwrap();
        assert_eq!(engine.get(b"empty").unwrap(), Some(Vec::new()));
        let all = engine.scan(&KeyRange::all(), 10).unwrap();
        assert_eq!(all, vec![(b"empty".to_vec(), Vec::new())]);
    }

    pub fn large_values(kind: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        // 4 MiB and a bit more, with a pattern so a misplaced chunk shows.
        let big: Vec<u8> = (0..(4 << 20) + 123).map(|i| (i % 251) as u8).collect();
        engine.put(b"big", &big, WriteOptions::SYNC).unwrap();
        engine.put(b"small", b"s", WriteOptions::BUFFERED).unwrap();
        assert_eq!(engine.get(b"big").unwrap().as_deref(), Some(big.as_slice()));
        let bigger: Vec<u8> = (0..(6 << 20)).map(|i| (i % 239) as u8).collect();
        engine.put(b"big", &bigger, WriteOptions::SYNC).unwrap();
        assert_eq!(
            engine.get(b"big").unwrap().as_deref(),
            Some(bigger.as_slice())
        );
    }

    pub fn binary_keys(kind: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        let keys: Vec<Vec<u8>> = vec![
            vec![0],
            vec![0, 0],
            vec![0, 0xff],
            vec![0xff],
            vec![0xff, 0xff, 0xff],
            vec![1, 2, 3, 0, 4],
            b"plain".to_vec(),
        ];
        for (i, key) in keys.iter().enumerate() {
            engine.put(key, &[i as u8], WriteOptions::BUFFERED).unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(engine.get(key).unwrap(), Some(vec![i as u8]), "key {key:?}");
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(
            keys_of(&engine.scan(&KeyRange::all(), 100).unwrap()),
            sorted
        );
    }

    pub fn scans_with_bounds_and_limits(kind: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        let mut batch = WriteBatch::new();
        for i in 0..100u32 {
            batch.put(format!("key{i:03}"), format!("v{i}"));
        }
        batch.put("other", "x");
        engine.write_batch(batch, WriteOptions::SYNC).unwrap();
        let k = |i: u32| format!("key{i:03}").into_bytes();

        let half_open = engine
            .scan(&KeyRange::half_open(k(10), k(20)), 1000)
            .unwrap();
        assert_eq!(keys_of(&half_open), (10..20).map(k).collect::<Vec<_>>());
        assert_eq!(half_open[0].1, b"v10");

        let inclusive = KeyRange {
            start: Bound::Excluded(k(10)),
            end: Bound::Included(k(20)),
        };
        assert_eq!(
            keys_of(&engine.scan(&inclusive, 1000).unwrap()),
            (11..=20).map(k).collect::<Vec<_>>()
        );

        let limited = engine.scan(&KeyRange::from(k(50)), 7).unwrap();
        assert_eq!(keys_of(&limited), (50..57).map(k).collect::<Vec<_>>());

        let prefix = engine.scan_prefix(b"key09", 1000).unwrap();
        assert_eq!(keys_of(&prefix), (90..100).map(k).collect::<Vec<_>>());

        assert!(engine.scan(&KeyRange::all(), 0).unwrap().is_empty());
        assert!(
            engine
                .scan(&KeyRange::half_open(k(30), k(20)), 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(engine.scan(&KeyRange::all(), 1000).unwrap().len(), 101);
        assert_eq!(
            engine.scan(&KeyRange::from(b"other".to_vec()), 10).unwrap(),
            vec![(b"other".to_vec(), b"x".to_vec())]
        );
    }

    pub fn batch_atomicity(kind: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        engine.put(b"a", b"old", WriteOptions::SYNC).unwrap();
        engine.put(b"gone", b"x", WriteOptions::SYNC).unwrap();
        let mut batch = WriteBatch::new();
        batch
            .put("a", "new")
            .put("b", "1")
            .delete("gone")
            .put("c", "first")
            .put("c", "second")
            .delete("b");
        engine.write_batch(batch, WriteOptions::SYNC).unwrap();
        let all = engine.scan(&KeyRange::all(), 10).unwrap();
        assert_eq!(
            all,
            vec![
                (b"a".to_vec(), b"new".to_vec()),
                (b"c".to_vec(), b"second".to_vec())
            ]
        );
        // Concurrent readers see a batch whole or not at all.
        let engine: std::sync::Arc<dyn Engine> = std::sync::Arc::from(engine);
        let writer = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for round in 0..200u32 {
                    let mut batch = WriteBatch::new();
                    for i in 0..10u32 {
                        batch.put(format!("atom{i}"), round.to_be_bytes().to_vec());
                    }
                    engine.write_batch(batch, WriteOptions::BUFFERED).unwrap();
                }
            })
        };
        for _ in 0..200 {
            let seen = engine.scan_prefix(b"atom", 100).unwrap();
            let values: std::collections::BTreeSet<_> = seen.iter().map(|(_, v)| v).collect();
            assert!(values.len() <= 1, "{kind}: a reader saw a torn batch");
        }
        writer.join().unwrap();
    }

    /// Scans see a batch whole or not at all even when the batch spans
    /// many leaves (pages, blocks, memtable entries): thousands of keys
    /// with values large enough that one generation fills many B+tree
    /// leaves, rewritten in whole-key-space batches while scanners run.
    /// The case counts the scans that provably overlapped a batch (one
    /// started before the scan ended and had not finished when it began)
    /// and fails if there were too few to mean anything.
    pub fn scans_are_atomic_across_many_leaves(kind: EngineKind) {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
        const KEYS: u32 = 2000;
        const VALUE_BYTES: usize = 200;
        const MIN_OVERLAPS: u64 = 20;
        const MAX_GENERATIONS: u32 = 300;
        let dir = tempfile::tempdir().unwrap();
        let engine: std::sync::Arc<dyn Engine> = std::sync::Arc::from(open(kind, dir.path()));
        let generation = |g: u32| {
            let mut batch = WriteBatch::new();
            for i in 0..KEYS {
                let mut value = g.to_be_bytes().to_vec();
                value.resize(VALUE_BYTES, g as u8);
                batch.put(format!("leaf{i:06}"), value);
            }
            batch
        };
        engine
            .write_batch(generation(0), WriteOptions::BUFFERED)
            .unwrap();
        let started = AtomicU64::new(0);
        let finished = AtomicU64::new(0);
        let overlaps = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let (scans, torn) = std::thread::scope(|s| {
            s.spawn(|| {
                for g in 1..=MAX_GENERATIONS {
                    if overlaps.load(SeqCst) >= MIN_OVERLAPS || stop.load(SeqCst) {
                        break;
                    }
                    let batch = generation(g);
                    started.fetch_add(1, SeqCst);
                    engine.write_batch(batch, WriteOptions::BUFFERED).unwrap();
                    finished.fetch_add(1, SeqCst);
                }
                done.store(true, SeqCst);
            });
            let mut scans = 0u64;
            while !done.load(SeqCst) {
                let finished_before = finished.load(SeqCst);
                let page = engine.scan_prefix(b"leaf", usize::MAX).unwrap();
                let started_by_end = started.load(SeqCst);
                if page.len() != KEYS as usize {
                    stop.store(true, SeqCst);
                    return (
                        scans,
                        Some(format!("a scan saw {} of {KEYS} keys", page.len())),
                    );
                }
                let generation_of = |v: &[u8]| u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                let first = generation_of(&page[0].1);
                if let Some((key, value)) = page.iter().find(|(_, v)| generation_of(v) != first) {
                    stop.store(true, SeqCst);
                    return (
                        scans,
                        Some(format!(
                            "one scan saw two generations: {} holds {first}, {} holds {}",
                            String::from_utf8_lossy(&page[0].0),
                            String::from_utf8_lossy(key),
                            generation_of(value)
                        )),
                    );
                }
                if started_by_end > finished_before {
                    overlaps.fetch_add(1, SeqCst);
                }
                scans += 1;
            }
            (scans, None)
        });
        if let Some(torn) = torn {
            panic!("{kind}: {torn} (after {scans} whole scans)");
        }
        let overlaps = overlaps.load(SeqCst);
        assert!(
            overlaps >= MIN_OVERLAPS,
            "{kind}: only {overlaps} of {scans} scans overlapped a batch in {} batches; \
             the case proved nothing",
            finished.load(SeqCst)
        );
    }

    pub fn export_import_round_trip(kind: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        let mut expected = BTreeMap::new();
        for i in 0..3000u32 {
            let key = format!("k{:05}", (i * 7919) % 3000).into_bytes();
            let value = vec![(i % 256) as u8; (i % 300) as usize];
            engine.put(&key, &value, WriteOptions::BUFFERED).unwrap();
            expected.insert(key, value);
        }
        let mut stream = Vec::new();
        assert_eq!(engine.export(&mut stream).unwrap(), 3000);

        // Into the same engine kind, holding other data that must vanish.
        let dir2 = tempfile::tempdir().unwrap();
        let target = open(kind, dir2.path());
        target.put(b"stale", b"x", WriteOptions::SYNC).unwrap();
        assert_eq!(target.import(&mut stream.as_slice()).unwrap(), 3000);
        let all = target.scan(&KeyRange::all(), 10_000).unwrap();
        assert_eq!(all, expected.clone().into_iter().collect::<Vec<_>>());

        // Into a different kind: the stream is engine-neutral.
        let memory = engines::open(EngineKind::Memory, dir2.path(), &options()).unwrap();
        memory.import(&mut stream.as_slice()).unwrap();
        assert_eq!(memory.scan(&KeyRange::all(), 10_000).unwrap().len(), 3000);

        // A truncated stream is refused and leaves the engine untouched.
        let cut = &stream[..stream.len() - 5];
        assert!(target.import(&mut &cut[..]).is_err());
        assert_eq!(target.scan(&KeyRange::all(), 10_000).unwrap().len(), 3000);
    }

    pub fn reopen_persists(kind: EngineKind) {
        if !kind.is_durable() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = open(kind, dir.path());
            for i in 0..500u32 {
                engine
                    .put(
                        format!("p{i:04}").as_bytes(),
                        &i.to_le_bytes(),
                        WriteOptions::BUFFERED,
                    )
                    .unwrap();
            }
            engine.delete(b"p0007", WriteOptions::BUFFERED).unwrap();
            let mut batch = WriteBatch::new();
            batch.put("batched", "yes").delete("p0008");
            engine.write_batch(batch, WriteOptions::SYNC).unwrap();
            engine.sync().unwrap();
        }
        let engine = open(kind, dir.path());
        assert_eq!(engine.get(b"p0007").unwrap(), None);
        assert_eq!(engine.get(b"p0008").unwrap(), None);
        assert_eq!(engine.get(b"batched").unwrap(), Some(b"yes".to_vec()));
        assert_eq!(
            engine.get(b"p0499").unwrap(),
            Some(499u32.to_le_bytes().to_vec())
        );
        assert_eq!(engine.status().unwrap().keys, 499);
    }

    pub fn directory_rules(kind: EngineKind) {
        if !kind.is_durable() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        // A second open while the first lives is refused by the lock.
        let second = engines::open(kind, dir.path(), &options());
        let message = second.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("locked"), "{kind}: {message}");
        drop(engine);
        // A different kind is refused, naming both.
        let other = if kind == EngineKind::Redb {
            EngineKind::Sled
        } else {
            EngineKind::Redb
        };
        let message = engines::open(other, dir.path(), &options())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains(kind.name()) && message.contains(other.name()),
            "{kind}: {message}"
        );
    }
}

/// Every regular file under `dir` except metcd's own marker and lock.
fn engine_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if !matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("ENGINE") | Some("LOCK")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

mod corruption {
    use super::*;

    /// Overwrites every engine file with pseudo-random bytes of the same
    /// length. Opening must then fail with a clear error: never a panic, and
    /// never a silent success that starts from an empty (or partial) store
    /// as if nothing had been written.
    pub fn garbage_files_are_errors(kind: EngineKind) {
        if !kind.is_durable() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = open(kind, dir.path());
            for i in 0..200u32 {
                engine
                    .put(
                        format!("c{i:04}").as_bytes(),
                        &[7u8; 100],
                        WriteOptions::BUFFERED,
                    )
                    .unwrap();
            }
            engine.sync().unwrap();
        }
        let mut state = 0x9e3779b97f4a7c15u64;
        for file in engine_files(dir.path()) {
            let len = std::fs::metadata(&file).unwrap().len() as usize;
            let garbage: Vec<u8> = (0..len.max(64))
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            std::fs::write(&file, garbage).unwrap();
        }
        let outcome =
            std::panic::catch_unwind(|| match engines::open(kind, dir.path(), &options()) {
                Err(e) => Err(e.to_string()),
                Ok(engine) => {
                    let reads = (0..200u32)
                        .map(|i| engine.get(format!("c{i:04}").as_bytes()))
                        .filter(|r| matches!(r, Ok(Some(v)) if v == &[7u8; 100]))
                        .count();
                    Ok(reads)
                }
            });
        match outcome {
            Err(_) => panic!("{kind}: a corrupt directory made the engine panic"),
            Ok(Err(message)) => {
                println!("{kind}: corrupt directory refused: {message}");
                assert!(!message.is_empty());
            }
            Ok(Ok(intact)) => panic!(
                "{kind}: opened a directory of garbage without an error (serving {intact} of the old values)"
            ),
        }
    }
}

/// One operation of the property test's random sequences.
#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Scan(Vec<u8>, Vec<u8>, usize),
    Reopen,
    /// `Engine::defragment` (a full compaction or a merge) must not change
    /// what the engine holds.
    Defragment,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Few distinct keys, so overwrites and deletes hit existing keys often.
    prop::collection::vec(
        prop_oneof![Just(0u8), Just(1), Just(0xff), any::<u8>()],
        1..4,
    )
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => key().prop_map(Op::Delete),
        2 => prop::collection::vec((key(), prop::option::of(value())), 0..6).prop_map(Op::Batch),
        2 => (key(), key(), 0usize..20).prop_map(|(a, b, n)| Op::Scan(a, b, n)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Defragment),
    ]
}

fn check_against_model(kind: EngineKind, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(kind, dir.path());
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                engine.put(&k, &v, WriteOptions::BUFFERED).unwrap();
                model.insert(k, v);
            }
            Op::Delete(k) => {
                engine.delete(&k, WriteOptions::BUFFERED).unwrap();
                model.remove(&k);
            }
            Op::Batch(items) => {
                let mut batch = WriteBatch::new();
                for (k, v) in items {
                    match v {
                        Some(v) => {
                            batch.put(k.clone(), v.clone());
                            model.insert(k, v);
                        }
                        None => {
                            batch.delete(k.clone());
                            model.remove(&k);
                        }
                    }
                }
                engine.write_batch(batch, WriteOptions::BUFFERED).unwrap();
            }
            Op::Scan(a, b, limit) => {
                let range = KeyRange::half_open(a.clone(), b.clone());
                let got = engine.scan(&range, limit).unwrap();
                let want: Vec<_> = if a < b {
                    model
                        .range(a..b)
                        .take(limit)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
                prop_assert_eq!(got, want);
            }
            Op::Defragment => {
                engine.defragment().unwrap();
            }
            Op::Reopen => {
                if kind.is_durable() {
                    engine.sync().unwrap();
                    drop(engine);
                    engine = open(kind, dir.path());
                }
            }
        }
    }
    let all = engine.scan(&KeyRange::all(), usize::MAX).unwrap();
    prop_assert_eq!(all, model.clone().into_iter().collect::<Vec<_>>());
    for (k, v) in &model {
        let got = engine.get(k).unwrap();
        prop_assert_eq!(got.as_ref(), Some(v));
    }
    let status = engine.status().unwrap();
    prop_assert_eq!(status.keys, model.len() as u64);
    Ok(())
}

macro_rules! conformance {
    ($($module:ident => $kind:expr, $cases:expr;)*) => {$(
        mod $module {
            use super::*;
            #[test] fn point_operations() { cases::point_operations($kind) }
            #[test] fn key_limits() { cases::key_limits($kind) }
            #[test] fn overwrite() { cases::overwrite($kind) }
            #[test] fn empty_values() { cases::empty_values($kind) }
            #[test] fn large_values() { cases::large_values($kind) }
            #[test] fn binary_keys() { cases::binary_keys($kind) }
            #[test] fn scans_with_bounds_and_limits() { cases::scans_with_bounds_and_limits($kind) }
            #[test] fn batch_atomicity() { cases::batch_atomicity($kind) }
            #[test] fn scans_are_atomic_across_many_leaves() { cases::scans_are_atomic_across_many_leaves($kind) }
            #[test] fn export_import_round_trip() { cases::export_import_round_trip($kind) }
            #[test] fn reopen_persists() { cases::reopen_persists($kind) }
            #[test] fn directory_rules() { cases::directory_rules($kind) }
            #[test] fn garbage_files_are_errors() { corruption::garbage_files_are_errors($kind) }
            proptest! {
                #![proptest_config(ProptestConfig { cases: $cases, ..ProptestConfig::default() })]
                #[test]
                fn matches_btreemap_model(ops in prop::collection::vec(op(), 1..60)) {
                    check_against_model($kind, ops)?;
                }
            }
        }
    )*};
}

// Engines that open slowly (rocksdb, sled, fjall start background threads)
// get fewer random cases: each reopen costs tens of milliseconds.
conformance! {
    memory => EngineKind::Memory, 256;
    redb => EngineKind::Redb, 64;
    sled => EngineKind::Sled, 32;
    rocksdb => EngineKind::Rocksdb, 32;
    fjall => EngineKind::Fjall, 32;
    bitcask => EngineKind::Bitcask, 64;
}

// The engine lab's engine, graded by `just lab engine`.
#[cfg(feature = "student-lab")]
conformance! {
    student => EngineKind::Student, 64;
}
