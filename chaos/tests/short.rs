//! The short form of the chaos harness, part of `just test`.
//!
//! Every engine meets four groups of faults, two runs each (48 runs): kills,
//! pauses, partitions (the leader isolated, then a bridge split) and a
//! degraded network (delay, then loss). Each test is one engine and one
//! group, so a combination that fails because of a known bug can be marked
//! `#[ignore]` alone. A run fails its test when its history is not
//! linearizable, when its replicas do not converge after healing, or when
//! the harness could not run it (no leader, a node that exits); the message
//! names the seed and the command that repeats the run's choices. A checker
//! that gives up is reported, not failed.
//!
//! The seeds are fixed (set `CHAOS_SEED` to explore others), so the test
//! always makes the same choices; what the machine's scheduling makes of
//! them varies, and any violation it exposes is real.
//!
//! Needs the `metcd` binary built in release mode next to this test's
//! executable (`cargo test --release --workspace` builds it).

use chaos::nemesis::FaultKind;
use chaos::run::{self, RunConfig};

fn base_seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c4a0_5000)
}

fn short(engine: &str, group: u64, faults: [FaultKind; 2]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine_index = engines::EngineKind::ALL
        .iter()
        .position(|k| k.name() == engine)
        .unwrap() as u64;
    let mut failures = Vec::new();
    for (i, fault) in faults.into_iter().enumerate() {
        let seed = base_seed() + engine_index * 1_000 + group * 10 + i as u64;
        let config = RunConfig::short(engine, fault, seed).unwrap();
        let outcome = runtime.block_on(run::run(&config)).unwrap();
        println!("{}", outcome.line());
        if !outcome.gave_up.is_empty() {
            println!(
                "  the checker gave up on keys {:?} (unknown, not a failure)",
                outcome.gave_up
            );
        }
        if outcome.failed() {
            failures.push(outcome.details());
        }
    }
    assert!(
        failures.is_empty(),
        "chaos found problems:\n{}",
        failures.join("\n")
    );
}

macro_rules! short_tests {
    ($($engine:ident),*) => {
        $(
            mod $engine {
                use super::*;

                #[test]
                fn kill() {
                    short(stringify!($engine), 0, [FaultKind::Kill, FaultKind::Kill]);
                }

                #[test]
                fn pause() {
                    short(stringify!($engine), 1, [FaultKind::Pause, FaultKind::Pause]);
                }

                #[test]
                fn partition() {
                    short(stringify!($engine), 2, [FaultKind::IsolateLeader, FaultKind::Bridge]);
                }

                #[test]
                fn network() {
                    short(stringify!($engine), 3, [FaultKind::Delay, FaultKind::Loss]);
                }
            }
        )*
    };
}

short_tests!(memory, redb, sled, rocksdb, fjall, bitcask);
