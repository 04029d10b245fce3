//! Bitcask recovery, byte by byte: what a crash can leave at the end of the
//! newest data file (a cut, a zeroed or zero-extended tail) is recovered to
//! exactly the writes that were complete; damage before valid records is an
//! error naming the file and offset; a locked directory is refused.
//!
//! Every case works on its own copy of one directory written once, and
//! opens it through the factory, `engines::open`, like the rest of metcd.
//!
//! The last test kills a merge: the test binary re-executes itself with
//! `BITCASK_MERGE_CHILD=<dir>`, which makes `merge_child` run one merge,
//! and the parent SIGKILLs it after a delay that moves through the merge
//! from round to round; after each kill the engine must open with exactly
//! the data it held before the merge.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use engines::bitcask::BitcaskEngine;
use engines::{
    DataDir, Engine, EngineError, EngineKind, EngineOptions, KeyRange, Pair, WriteBatch,
    WriteOptions,
};

/// Single puts before the final batch.
const SINGLES: usize = 30;
/// Puts in the batch written last.
const BATCH: usize = 3;

fn options() -> EngineOptions {
    EngineOptions {
        bitcask_max_file_bytes: 1 << 20,
        ..EngineOptions::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

/// Values of varying length, so record boundaries fall at irregular offsets.
fn value(i: usize) -> Vec<u8> {
    (0..(i * 7) % 45 + 1).map(|j| (i * 31 + j) as u8).collect()
}

/// The directory written once, the newest data file, and the file length
/// after each single put and after the batch.
struct Written {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    data_file: PathBuf,
    ends: Vec<u64>,
}

impl Written {
    fn len(&self) -> u64 {
        *self.ends.last().unwrap()
    }

    /// The pairs a recovered engine must hold when the file keeps its first
    /// `len` bytes intact: every write whose records all end by then.
    fn expected(&self, len: u64) -> Vec<Pair> {
        let complete_singles = self.ends[..SINGLES]
            .iter()
            .filter(|end| **end <= len)
            .count();
        let mut count = complete_singles;
        if complete_singles == SINGLES && self.ends[SINGLES] <= len {
            count += BATCH;
        }
        (0..count).map(|i| (key(i), value(i))).collect()
    }

    /// A private copy of the directory, with its data file path.
    fn copy(&self) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        copy_dir(&self.dir, &dir);
        let data_file = dir.join(self.data_file.strip_prefix(&self.dir).unwrap());
        (tmp, dir, data_file)
    }
}

fn newest_data_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("bitcask"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .collect();
    files.sort();
    files.pop().expect("a data file")
}

fn write_reference() -> Written {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let engine = engines::open(EngineKind::Bitcask, &dir, &options()).unwrap();
    let data_file = newest_data_file(&dir);
    let mut ends = Vec::new();
    for i in 0..SINGLES {
        engine.put(&key(i), &value(i), WriteOptions::SYNC).unwrap();
        ends.push(fs::metadata(&data_file).unwrap().len());
    }
    let mut batch = WriteBatch::new();
    for i in SINGLES..SINGLES + BATCH {
        batch.put(key(i), value(i));
    }
    engine.write_batch(batch, WriteOptions::SYNC).unwrap();
    ends.push(fs::metadata(&data_file).unwrap().len());
    drop(engine);
    assert_eq!(
        newest_data_file(&dir),
        data_file,
        "everything fits one file"
    );
    Written {
        _tmp: tmp,
        dir,
        data_file,
        ends,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn contents(dir: &Path) -> engines::Result<Vec<Pair>> {
    let engine = engines::open(EngineKind::Bitcask, dir, &options())?;
    engine.scan(&KeyRange::all(), usize::MAX)
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Offsets from the start of the third-to-last single put to the end: every
/// byte of the last three single records, the batch and its commit record.
fn tail_offsets(written: &Written) -> std::ops::RangeInclusive<u64> {
    written.ends[SINGLES - 4]..=written.len()
}

#[test]
fn a_cut_at_every_offset_of_the_last_records_recovers_a_prefix() {
    let written = write_reference();
    let offsets = tail_offsets(&written);
    let cases = offsets.clone().count();
    for cut in offsets {
        let (_tmp, dir, data_file) = written.copy();
        set_len(&data_file, cut);
        let found = contents(&dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(found, written.expected(cut), "cut at {cut}");
    }
    assert!(cases > 100, "{cases} cases");
}

#[test]
fn the_cut_is_durable_and_writing_goes_on_after_it() {
    let written = write_reference();
    for cut in [
        written.ends[SINGLES - 2] + 5,
        written.ends[SINGLES - 1] + 30,
    ] {
        let (_tmp, dir, data_file) = written.copy();
        set_len(&data_file, cut);
        {
            let engine = engines::open(EngineKind::Bitcask, &dir, &options()).unwrap();
            engine.put(b"zz-after", b"new", WriteOptions::SYNC).unwrap();
        }
        let mut expected = written.expected(cut);
        expected.push((b"zz-after".to_vec(), b"new".to_vec()));
        assert_eq!(contents(&dir).unwrap(), expected, "cut at {cut}");
    }
}

#[test]
fn a_zeroed_tail_recovers_a_prefix() {
    let written = write_reference();
    let len = written.len();
    let original = fs::read(&written.data_file).unwrap();
    for zeroed in 1..=len - written.ends[SINGLES - 4] {
        let (_tmp, dir, data_file) = written.copy();
        let file = OpenOptions::new().write(true).open(&data_file).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &vec![0u8; zeroed as usize], len - zeroed)
            .unwrap();
        drop(file);
        // Zeroing a byte that was already zero damages nothing: the data
        // is intact up to the first byte that really changed.
        let intact = (len - zeroed..len)
            .find(|at| original[*at as usize] != 0)
            .unwrap_or(len);
        let found = contents(&dir).unwrap_or_else(|e| panic!("{zeroed} zeroed bytes: {e}"));
        assert_eq!(found, written.expected(intact), "{zeroed} zeroed bytes");
    }
}

#[test]
fn a_tail_extended_with_zeros_recovers_a_prefix() {
    let written = write_reference();
    let cuts = [
        written.len(),
        written.ends[SINGLES - 1],
        written.ends[SINGLES - 1] + 1,
        written.ends[SINGLES - 1] + 40,
        written.ends[SINGLES - 2] - 3,
    ];
    for cut in cuts {
        for zeros in [1usize, 24, 25, 26, 100, 4096, 70_000] {
            let (_tmp, dir, data_file) = written.copy();
            set_len(&data_file, cut);
            let mut file = OpenOptions::new().append(true).open(&data_file).unwrap();
            file.write_all(&vec![0u8; zeros]).unwrap();
            drop(file);
            let found = contents(&dir).unwrap_or_else(|e| panic!("cut {cut} + {zeros} zeros: {e}"));
            assert_eq!(found, written.expected(cut), "cut {cut} + {zeros} zeros");
            assert_eq!(fs::metadata(&data_file).unwrap().len(), {
                let kept = written.expected(cut).len();
                if kept == SINGLES + BATCH {
                    written.len()
                } else if kept == 0 {
                    0
                } else {
                    written.ends[kept - 1]
                }
            });
        }
    }
}

#[test]
fn a_flipped_byte_in_an_early_record_is_reported_with_file_and_offset() {
    let written = write_reference();
    let (start, end) = (written.ends[0], written.ends[1]);
    for at in start..end {
        let (_tmp, dir, data_file) = written.copy();
        let mut bytes = fs::read(&data_file).unwrap();
        bytes[at as usize] ^= 0x20;
        fs::write(&data_file, &bytes).unwrap();
        match contents(&dir) {
            Err(EngineError::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!(file, data_file, "byte {at}");
                assert_eq!(offset, start, "byte {at}: {reason}");
            }
            Err(other) => panic!("byte {at}: expected Corrupt, got {other}"),
            Ok(pairs) => panic!("byte {at}: opened with {} pairs", pairs.len()),
        }
    }
}

#[test]
fn a_locked_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let engine = engines::open(EngineKind::Bitcask, &dir, &options()).unwrap();
    let second = engines::open(EngineKind::Bitcask, &dir, &options());
    assert!(
        matches!(second, Err(EngineError::Locked { .. })),
        "{:?}",
        second.err()
    );
    // Bitcask's own lock holds even for an opener that skips the factory.
    let standalone = BitcaskEngine::open_standalone(&dir.join("bitcask"), &options());
    assert!(
        matches!(standalone, Err(EngineError::Locked { .. })),
        "{:?}",
        standalone.err()
    );
    drop(engine);
    engines::open(EngineKind::Bitcask, &dir, &options()).unwrap();
}

const MERGE_CHILD_ENV: &str = "BITCASK_MERGE_CHILD";

/// Small files, so a merge has many files to rewrite, each step of it
/// (temporary files, renames, directory fsyncs) many times over.
fn merge_options() -> EngineOptions {
    EngineOptions {
        bitcask_max_file_bytes: 2048,
        ..EngineOptions::default()
    }
}

/// Opens without the automatic merge, so only the merge we start runs.
fn open_for_merge(dir: &Path) -> BitcaskEngine {
    let data_dir = DataDir::prepare(dir, EngineKind::Bitcask).unwrap();
    let engine = BitcaskEngine::open(data_dir, &merge_options()).unwrap();
    engine.set_auto_merge(false);
    engine
}

/// The child side: one merge, reported on stdout as it starts and ends.
#[test]
fn merge_child() {
    let Ok(dir) = std::env::var(MERGE_CHILD_ENV) else {
        return; // Run as an ordinary test: nothing to do.
    };
    let engine = open_for_merge(Path::new(&dir));
    let mut out = std::io::stdout();
    writeln!(out, "MERGING").unwrap();
    out.flush().unwrap();
    engine.merge().unwrap();
    writeln!(out, "DONE").unwrap();
    out.flush().unwrap();
}

/// Overwrites, deletes and batches over 400 keys, then closes the active
/// file so that everything is mergeable. Returns what the engine holds.
fn write_mergeable(dir: &Path) -> Vec<Pair> {
    let engine = open_for_merge(dir);
    let mut model = BTreeMap::new();
    for round in 0..3u32 {
        for i in 0..400usize {
            if (i + round as usize).is_multiple_of(3) {
                continue;
            }
            let v = format!("{round}-{}", "v".repeat(i % 40)).into_bytes();
            engine.put(&key(i), &v, WriteOptions::BUFFERED).unwrap();
            model.insert(key(i), v);
        }
        let mut batch = WriteBatch::new();
        for i in (round as usize..400).step_by(7) {
            batch.delete(key(i));
            model.remove(&key(i));
        }
        engine.write_batch(batch, WriteOptions::BUFFERED).unwrap();
    }
    engine.sync().unwrap();
    engine.rotate().unwrap();
    model.into_iter().collect()
}

#[test]
fn a_merge_killed_at_any_moment_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let expected = write_mergeable(&reference);
    // One merge left alone measures how long a merge takes here; the kills
    // are then spread evenly over that time.
    let measure = tempfile::tempdir().unwrap();
    copy_dir(&reference, &measure.path().join("db"));
    let (started_at, mut child, _output) = spawn_merge_child(&measure.path().join("db"));
    child.wait().unwrap();
    let merge_time = started_at.elapsed();
    let (mut interrupted, rounds) = (0, 20u32);
    for round in 0..rounds {
        let case = tempfile::tempdir().unwrap();
        let dir = case.path().join("db");
        copy_dir(&reference, &dir);
        let (_, mut child, lines) = spawn_merge_child(&dir);
        std::thread::sleep(merge_time * round / rounds);
        let _ = child.kill(); // SIGKILL; an error means it already exited
        child.wait().unwrap();
        let finished = lines.map_while(Result::ok).any(|l| l.ends_with("DONE"));
        if !finished {
            interrupted += 1;
        }

        let engine = open_for_merge(&dir);
        assert_eq!(
            engine.scan(&KeyRange::all(), usize::MAX).unwrap(),
            expected,
            "round {round}: after a kill (merge finished: {finished})"
        );
        // The interrupted merge can be finished, and loses nothing either.
        engine.merge().unwrap();
        assert_eq!(engine.status().unwrap().reclaimable_bytes, Some(0));
        drop(engine);
        let engine = open_for_merge(&dir);
        assert_eq!(
            engine.scan(&KeyRange::all(), usize::MAX).unwrap(),
            expected,
            "round {round}: after finishing the merge"
        );
    }
    println!(
        "{interrupted} of {rounds} kills landed inside the merge (a merge takes {merge_time:?})"
    );
}

/// Starts `merge_child` on `dir` and returns once it reports that the merge
/// started, with that moment and the rest of its output.
fn spawn_merge_child(
    dir: &Path,
) -> (
    std::time::Instant,
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "merge_child", "--nocapture", "--test-threads=1"])
        .env(MERGE_CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The harness prints "test merge_child ... " on the same line.
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.ends_with("MERGING"));
    assert!(started, "the merge child did not start merging");
    (std::time::Instant::now(), child, lines)
}
