//! Micro-benchmarks of single engine operations through the `Engine` trait:
//! get, put (buffered and durable), and a 100-key scan, with 100-byte and
//! 4 KiB values, for every engine.
//!
//! Each engine is preloaded with 10,000 keys in a fresh temporary directory.
//! Durable puts measure one fsync-class operation each, so their numbers
//! depend on the disk more than on the engine; compare them with the
//! fdatasync latency that `workbench` calibrates. Run with
//! `just bench-micro` (optionally a filter: `just bench-micro redb/get`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use engines::{EngineKind, EngineOptions, KeyRange, WriteBatch, WriteOptions};

const PRELOADED: u64 = 10_000;

fn key(i: u64) -> Vec<u8> {
    format!("bench{i:08}").into_bytes()
}

fn engine_ops(c: &mut Criterion) {
    for kind in EngineKind::ALL {
        for value_size in [100usize, 4096] {
            let dir = tempfile::tempdir().expect("temporary directory");
            let engine = engines::open(kind, dir.path(), &EngineOptions::default())
                .unwrap_or_else(|e| panic!("opening {kind}: {e}"));
            let value = vec![0x5au8; value_size];
            for chunk in (0..PRELOADED).collect::<Vec<_>>().chunks(1000) {
                let mut batch = WriteBatch::new();
                for &i in chunk {
                    batch.put(key(i), value.clone());
                }
                engine
                    .write_batch(batch, WriteOptions::BUFFERED)
                    .expect("preload");
            }
            engine.sync().expect("sync");

            let mut group = c.benchmark_group(format!("{kind}/{value_size}B"));
            group.throughput(Throughput::Elements(1));
            let mut i = 0u64;
            group.bench_function(BenchmarkId::from_parameter("get"), |b| {
                b.iter(|| {
                    i = (i + 7919) % PRELOADED;
                    black_box(engine.get(&key(i)).expect("get"))
                })
            });
            group.bench_function(BenchmarkId::from_parameter("put"), |b| {
                b.iter(|| {
                    i = (i + 7919) % PRELOADED;
                    engine
                        .put(&key(i), &value, WriteOptions::BUFFERED)
                        .expect("put")
                })
            });
            group.throughput(Throughput::Elements(100));
            group.bench_function(BenchmarkId::from_parameter("scan100"), |b| {
                b.iter(|| {
                    i = (i + 7919) % (PRELOADED - 100);
                    black_box(engine.scan(&KeyRange::from(key(i)), 100).expect("scan"))
                })
            });
            group.finish();

            // Durable writes cost a disk flush each: fewer, longer samples.
            let mut group = c.benchmark_group(format!("{kind}/{value_size}B"));
            group.throughput(Throughput::Elements(1));
            group.sample_size(10);
            group.bench_function(BenchmarkId::from_parameter("put_durable"), |b| {
                b.iter(|| {
                    i = (i + 7919) % PRELOADED;
                    engine
                        .put(&key(i), &value, WriteOptions::SYNC)
                        .expect("put")
                })
            });
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = engine_ops
}
criterion_main!(benches);
