//! Crash tests: SIGKILL a writer at random moments and check that nothing it
//! acknowledged is lost and that the batch it was writing is all or nothing.
//!
//! These are *process* crashes. After a SIGKILL the kernel still holds every
//! write the process made in its page cache, so these tests cannot see a
//! missing fsync: an engine that never syncs passes them. What they do see
//! is the engine's own recovery of whatever the process left half written.
//! Power loss, where unsynced writes vanish, is tested for our own durable
//! code (bitcask, the cluster's WAL) in `tests/power_loss.rs` on a
//! simulated file system; the library engines' fsyncs are their own.
//!
//! The test binary plays both parts. The parent re-executes itself with
//! `METCD_CRASH_CHILD=<kind>:<dir>:<first sequence number>`, which makes
//! the `child_writer` entry point write keys with `WriteOptions::SYNC`
//! (single puts and small batches) and print `ACK <seq>` on stdout after
//! each write returns; before each batch it prints `BATCH <first seq>`.
//! The parent kills the child with SIGKILL after a random delay (sometimes
//! while the engine is still opening), reads every line the child managed
//! to print, reopens the engine and checks that:
//!
//! * the engine opens without error;
//! * every acknowledged key is present with the value written for it;
//! * every key present holds a well-formed value (no torn or mixed data);
//! * every batch the child started, including the one the kill interrupted,
//!   is either wholly present or wholly absent.
//!
//! The same directory is reused across rounds, so each kill also lands on
//! an engine that has recovered from earlier kills. `METCD_CRASH_KILLS`
//! sets the number of kills per engine (default 20); the random seed is
//! printed so a failing run can be repeated with `METCD_CRASH_SEED`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use engines::{EngineKind, EngineOptions, KeyRange, WriteBatch, WriteOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

const CHILD_ENV: &str = "METCD_CRASH_CHILD";
/// Keys per batch the child writes.
const BATCH_LEN: u64 = 3;

fn key(seq: u64) -> Vec<u8> {
    format!("crash{seq:010}").into_bytes()
}

/// The value for a sequence number: its length varies so that records of
/// many sizes are cut by the kills, and its bytes are derived from the
/// sequence number so a misplaced or torn value is recognised.
fn value(seq: u64) -> Vec<u8> {
    let len = 1 + (seq.wrapping_mul(2654435761) % 3000) as usize;
    (0..len).map(|i| (seq as usize + i) as u8).collect()
}

fn options() -> EngineOptions {
    EngineOptions {
        cache_bytes: 8 << 20,
        bitcask_max_file_bytes: 512 << 10,
    }
}

/// The child side: never returns while the parent lets it live.
#[test]
fn child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // Run as an ordinary test: nothing to do.
    };
    let mut parts = spec.splitn(3, ':');
    let kind: EngineKind = parts.next().unwrap().parse().unwrap();
    let first: u64 = parts.next().unwrap().parse().unwrap();
    let dir = parts.next().unwrap();
    let engine = engines::open(kind, Path::new(dir), &options()).unwrap();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut seq = first;
    loop {
        if seq.is_multiple_of(5) {
            // A batch of three, announced before it is written (so the
            // parent knows about the one a kill interrupts) and
            // acknowledged together.
            writeln!(out, "BATCH {seq}").unwrap();
            out.flush().unwrap();
            let mut batch = WriteBatch::new();
            for s in seq..seq + BATCH_LEN {
                batch.put(key(s), value(s));
            }
            engine.write_batch(batch, WriteOptions::SYNC).unwrap();
            for s in seq..seq + BATCH_LEN {
                writeln!(out, "ACK {s}").unwrap();
            }
            seq += BATCH_LEN;
        } else {
            engine
                .put(&key(seq), &value(seq), WriteOptions::SYNC)
                .unwrap();
            writeln!(out, "ACK {seq}").unwrap();
            seq += 1;
        }
        out.flush().unwrap();
    }
}

fn crash_engine(kind: EngineKind) {
    let kills: usize = std::env::var("METCD_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("METCD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("crash {kind}: {kills} kills, METCD_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut batches: BTreeSet<u64> = BTreeSet::new();
    let mut next_seq = 0u64;

    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(
                CHILD_ENV,
                format!("{kind}:{next_seq}:{}", dir.path().display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => lines.push(line),
                    Err(_) => break,
                }
            }
            lines
        });
        // Most kills land while writing; some while the engine opens.
        let delay = if rng.random_bool(0.2) {
            rng.random_range(0..40)
        } else {
            rng.random_range(40..400)
        };
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        let lines = reader.join().unwrap();
        assert!(
            !status.success(),
            "{kind} round {round}: child exited by itself: {lines:?}"
        );
        let mut this_round = 0;
        for line in &lines {
            if let Some(first) = line.strip_prefix("BATCH ") {
                let first: u64 = first.parse().unwrap();
                batches.insert(first);
                next_seq = next_seq.max(first + BATCH_LEN);
            }
            if let Some(seq) = line.strip_prefix("ACK ") {
                let seq: u64 = seq.parse().unwrap();
                acked.insert(seq);
                next_seq = next_seq.max(seq + 1);
                this_round += 1;
            }
        }
        // Unacknowledged writes of the dead child may or may not exist;
        // start the next child past anything it could have written.
        next_seq += 10;

        let engine = engines::open(kind, dir.path(), &options())
            .unwrap_or_else(|e| panic!("{kind} round {round}: reopen after SIGKILL failed: {e}"));
        for &seq in &acked {
            let got = engine.get(&key(seq)).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(value(seq).as_slice()),
                "{kind} round {round}: acknowledged key {seq} lost or wrong (seed {seed})"
            );
        }
        let mut present = BTreeSet::new();
        for (k, v) in engine.scan(&KeyRange::all(), usize::MAX).unwrap() {
            let seq: u64 = std::str::from_utf8(&k[5..]).unwrap().parse().unwrap();
            assert_eq!(
                v,
                value(seq),
                "{kind} round {round}: key {seq} holds a torn value"
            );
            present.insert(seq);
        }
        for &first in &batches {
            let found: Vec<u64> = (first..first + BATCH_LEN)
                .filter(|s| present.contains(s))
                .collect();
            assert!(
                found.is_empty() || found.len() == BATCH_LEN as usize,
                "{kind} round {round}: batch {first}..{} is half applied, only {found:?} \
                 present (seed {seed})",
                first + BATCH_LEN
            );
        }
        println!(
            "crash {kind} round {round}: killed after {delay} ms, {this_round} new acks, {} total, all present; {} batches whole",
            acked.len(),
            batches.len()
        );
    }
    assert!(
        acked.len() > kills,
        "{kind}: children acknowledged only {} writes in {kills} rounds; the test did not exercise the engine",
        acked.len()
    );
}

#[test]
fn crash_redb() {
    crash_engine(EngineKind::Redb);
}

#[test]
fn crash_sled() {
    crash_engine(EngineKind::Sled);
}

#[test]
fn crash_rocksdb() {
    crash_engine(EngineKind::Rocksdb);
}

#[test]
fn crash_fjall() {
    crash_engine(EngineKind::Fjall);
}

#[cfg(feature = "student-lab")]
#[test]
fn crash_student() {
    crash_engine(EngineKind::Student);
}

#[test]
fn crash_bitcask() {
    crash_engine(EngineKind::Bitcask);
}
