//! The harness catches the book's "break it" bugs (`metcd --lab-break`).
//!
//! A safety check that has never failed proves nothing, so this test runs
//! the chaos harness against nodes that break a rule on purpose and
//! requires a failed run: `stale-reads` (linearizable reads served from
//! local state, without ReadIndex) must show up as a linearizability
//! violation, and `skip-flush` (WAL records left in the process's buffer
//! when acknowledged) as a node that cannot restart after a kill (raft-rs
//! finds its log shorter than the commit index it promised). Each is given
//! a few runs; both were caught in the first run when this was written.
//! `early-reads` needs a lagging follower and more runs, and `skip-fsync`
//! is invisible to process kills by design: the book's lab shows both
//! (`just lab-break NAME`).
//!
//! Kind: process kills and message faults on loopback, not a machine crash.

use chaos::nemesis::FaultKind;
use chaos::run::{RunConfig, run};

fn caught(lab_break: &str, faults: &[FaultKind], engine: &str) -> bool {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    for (i, fault) in faults.iter().cycle().take(4).enumerate() {
        let mut config = RunConfig::short(engine, *fault, 7 + i as u64).expect("metcd is built");
        config.keep_failed = false;
        config.lab_break = Some(lab_break.to_string());
        let outcome = runtime.block_on(run(&config)).expect("the run starts");
        println!("{lab_break}: {}", outcome.line());
        if outcome.failed() {
            return true;
        }
    }
    false
}

/// One test, so the two series never run at once on a 2-core machine.
#[test]
fn the_harness_catches_stale_reads_and_unflushed_wal_records() {
    assert!(
        caught(
            "stale-reads",
            &[FaultKind::IsolateLeader, FaultKind::Bridge],
            "memory"
        ),
        "stale reads went unnoticed in 4 runs"
    );
    assert!(
        caught("skip-flush", &[FaultKind::Kill], "redb"),
        "unflushed WAL records went unnoticed in 4 runs"
    );
}
