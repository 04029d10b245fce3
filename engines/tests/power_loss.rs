//! Power-loss tests for bitcask: what a machine finds on its disk after the
//! power fails, not what a killed process leaves in the page cache.
//!
//! A SIGKILL (`tests/crash.rs`) cannot see a missing fsync: the kernel keeps
//! every write the process made. These tests run bitcask on the simulated
//! file system of [`engines::durable_io::SimIo`], which remembers what was
//! fsynced: random sequences of puts, deletes, batches, syncs, rotations and
//! merges, with tiny data files so that every path runs, the power cut at a
//! random file operation (inside a write, between a write and its fsync, in
//! the middle of a merge's renames...), and a random crash: synced data and
//! synced directory entries survive; of the rest, any prefix of each file's
//! writes and of each directory's name operations, the last page possibly
//! torn. Then bitcask must:
//!
//! * open (recovery accepts every state such a crash can leave, with a
//!   zero-filled torn page);
//! * hold exactly the state after some prefix of the operations that
//!   includes every operation acknowledged as durable (a `sync: true` write,
//!   `sync()`, a rotation): so no acknowledged write is lost, no batch is
//!   half applied (a half batch is no prefix's state), and nothing is
//!   invented;
//! * keep its recovery durable: a write synced after recovery survives the
//!   next crash, and so does everything recovery kept.
//!
//! With torn pages of random bytes (stale blocks, which ext4's default mode
//! never shows) bitcask may refuse to open with `Corrupt`; if it opens, the
//! same state rules hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use engines::bitcask::BitcaskEngine;
use engines::durable_io::{SimIo, TornTail};
use engines::{Engine, EngineError, EngineOptions, KeyRange, WriteBatch, WriteOptions};
use proptest::prelude::*;

type State = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        len: usize,
        sync: bool,
    },
    Delete {
        key: u8,
        sync: bool,
    },
    Batch {
        ops: Vec<(u8, Option<usize>)>,
        sync: bool,
    },
    Sync,
    Rotate,
    Merge,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..12;
    let len = 0usize..1500;
    prop_oneof![
        6 => (key.clone(), len.clone(), any::<bool>())
            .prop_map(|(key, len, sync)| Op::Put { key, len, sync }),
        2 => (key.clone(), any::<bool>()).prop_map(|(key, sync)| Op::Delete { key, sync }),
        3 => (
            prop::collection::vec((key, prop::option::weighted(0.8, len)), 2..6),
            any::<bool>()
        )
            .prop_map(|(ops, sync)| Op::Batch { ops, sync }),
        2 => Just(Op::Sync),
        1 => Just(Op::Rotate),
        1 => Just(Op::Merge),
    ]
}

const DIR: &str = "/sim/bitcask";

fn options() -> EngineOptions {
    EngineOptions {
        bitcask_max_file_bytes: 6000,
        ..EngineOptions::default()
    }
}

fn open(io: &SimIo) -> engines::Result<BitcaskEngine> {
    let engine = BitcaskEngine::open_with_io(Path::new(DIR), &options(), Arc::new(io.clone()))?;
    // Merges run only when the test asks, so the file operations (and the
    // power cut) are deterministic.
    engine.set_auto_merge(false);
    Ok(engine)
}

fn key(k: u8) -> Vec<u8> {
    format!("key{k:02}").into_bytes()
}

/// A value naming the operation that wrote it, so a value from the wrong
/// write is recognised.
fn value(step: usize, k: u8, len: usize) -> Vec<u8> {
    let mut v = format!("{step}:{k}:").into_bytes();
    v.resize(len.max(v.len()), (step as u8) ^ k);
    v
}

fn contents(engine: &BitcaskEngine) -> State {
    engine
        .scan(&KeyRange::all(), usize::MAX)
        .unwrap()
        .into_iter()
        .collect()
}

/// Runs `ops` until the power cut; returns the states after each prefix of
/// the operations, and the index of the first state a crash may show (the
/// one after the last operation acknowledged as durable).
fn run(io: &SimIo, ops: &[Op]) -> Result<(Vec<State>, usize), TestCaseError> {
    let engine = match open(io) {
        Ok(engine) => engine,
        // The power failed while the first open created its files.
        Err(_) if io.powered_off() => return Ok((vec![State::new()], 0)),
        Err(error) => return Err(TestCaseError::fail(format!("first open: {error}"))),
    };
    let mut model = State::new();
    let mut states = vec![model.clone()];
    let mut durable = 0;
    for (step, op) in ops.iter().enumerate() {
        let (result, is_durable) = match op {
            Op::Put { key: k, len, sync } => {
                let v = value(step, *k, *len);
                model.insert(key(*k), v.clone());
                let options = if *sync {
                    WriteOptions::SYNC
                } else {
                    WriteOptions::BUFFERED
                };
                (engine.put(&key(*k), &v, options), *sync)
            }
            Op::Delete { key: k, sync } => {
                model.remove(&key(*k));
                let options = if *sync {
                    WriteOptions::SYNC
                } else {
                    WriteOptions::BUFFERED
                };
                (engine.delete(&key(*k), options), *sync)
            }
            Op::Batch { ops, sync } => {
                let mut batch = WriteBatch::new();
                for (k, len) in ops {
                    match len {
                        Some(len) => {
                            let v = value(step, *k, *len);
                            model.insert(key(*k), v.clone());
                            batch.put(key(*k), v);
                        }
                        None => {
                            model.remove(&key(*k));
                            batch.delete(key(*k));
                        }
                    }
                }
                let options = if *sync {
                    WriteOptions::SYNC
                } else {
                    WriteOptions::BUFFERED
                };
                (engine.write_batch(batch, options), *sync)
            }
            Op::Sync => (engine.sync(), true),
            Op::Rotate => (engine.rotate(), true),
            Op::Merge => (engine.merge().map(|_| ()), false),
        };
        states.push(model.clone());
        match result {
            Ok(()) if is_durable => durable = states.len() - 1,
            Ok(()) => {}
            Err(error) => {
                prop_assert!(
                    io.powered_off(),
                    "step {step} failed without a power cut: {error}"
                );
                break;
            }
        }
    }
    Ok((states, durable))
}

fn check(ops: Vec<Op>, cut: Option<u64>, seed: u64, torn: TornTail) -> Result<(), TestCaseError> {
    let io = SimIo::new();
    if let Some(cut) = cut {
        io.power_off_after(cut);
    }
    let (states, durable) = run(&io, &ops)?;
    let after = io.crash(seed, torn);
    let engine = match open(&after) {
        Ok(engine) => engine,
        Err(EngineError::Corrupt { .. }) if torn == TornTail::Garbage => return Ok(()),
        Err(error) => {
            return Err(TestCaseError::fail(format!(
                "recovery refused a state a crash can leave: {error}"
            )));
        }
    };
    let recovered = contents(&engine);
    let prefix = (durable..states.len()).find(|i| states[*i] == recovered);
    prop_assert!(
        prefix.is_some(),
        "recovered {} keys, which is the state after no prefix of the {} operations run \
         from the last durable one ({durable}) on: an acknowledged write was lost, a batch \
         was split, or a value invented",
        recovered.len(),
        states.len() - 1
    );

    // Recovery's own writes (the cut of a torn tail, a first file) are
    // durable, and a write synced after recovery survives the next crash.
    engine
        .put(b"after-recovery", b"kept", WriteOptions::SYNC)
        .unwrap();
    drop(engine);
    let again = after.crash(seed.rotate_left(17), torn);
    let engine = open(&again).unwrap();
    let mut expected = recovered;
    expected.insert(b"after-recovery".to_vec(), b"kept".to_vec());
    prop_assert_eq!(contents(&engine), expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_writes_survive_power_loss_and_batches_stay_whole(
        ops in prop::collection::vec(op(), 1..40),
        cut in prop::option::weighted(0.8, 0u64..250),
        seed in any::<u64>(),
    ) {
        check(ops, cut, seed, TornTail::Zeros)?;
    }

    #[test]
    fn garbage_in_a_torn_page_is_refused_or_recovered_never_silently_wrong(
        ops in prop::collection::vec(op(), 1..40),
        cut in prop::option::weighted(0.8, 0u64..250),
        seed in any::<u64>(),
    ) {
        check(ops, cut, seed, TornTail::Garbage)?;
    }
}
